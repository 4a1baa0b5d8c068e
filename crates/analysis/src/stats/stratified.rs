//! Pooled estimates over strata of 2x2 tables, and the difference-in-differences.
//!
//! A [`Table`] is one stratum: `x1` of `n1` persons of the group reached the milestone, `x0` of
//! `n0` of the baseline. Over the strata (every one with persons on both sides):
//! - the Mantel-Haenszel risk difference, weights `n1 n0 / N`, with Sato's (1989) variance,
//!   which holds both for many small strata and for few large ones (the dually consistent
//!   form of Greenland and Robins' estimator);
//! - the Mantel-Haenszel odds ratio with the Robins-Breslow-Greenland (1986) variance of its
//!   logarithm (as statsmodels' `StratifiedTable.logodds_pooled_se`);
//! - the Cochran-Mantel-Haenszel test of a common odds ratio of 1, without continuity
//!   correction (statsmodels' `test_null_odds()`), one degree of freedom;
//! - the Breslow-Day test of equal odds ratios with Tarone's correction (statsmodels'
//!   `test_equal_odds(adjust=True)`), over the strata whose reached/not-reached margins are
//!   both positive (the others carry no information on an odds ratio), K - 1 degrees of
//!   freedom. A stratum whose own term exceeds the 95% point of chi-square(1) is flagged when
//!   the test rejects: it is one of the strata that disagree.
//!
//! [`did`]: the group's change minus the control's, with the Wald variance of four independent
//! proportions; [`pooled_did`] pools per-stratum estimates by inverse variance.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// The 95% point of chi-square with one degree of freedom (`Z95` squared).
const CHI2_1_95: f64 = super::Z95 * super::Z95;

/// One stratum's 2x2 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub x1: u64,
    pub n1: u64,
    pub x0: u64,
    pub n0: u64,
}

/// The pooled figures of [`mantel_haenszel`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pooled {
    pub risk_difference: f64,
    pub risk_difference_ci: (f64, f64),
    /// `None` when no stratum has a discordant pair that makes it finite and positive
    /// (every `b c` or every `a d` is 0).
    pub odds_ratio: Option<f64>,
    pub odds_ratio_ci: Option<(f64, f64)>,
    /// Two-sided; 1 when the test has no variance (nobody, or everybody, reached).
    pub cmh_p: f64,
    /// `None` with fewer than two informative strata or without a finite odds ratio.
    pub homogeneity_p: Option<f64>,
    /// Per input table: its Breslow-Day term is large and the test rejects at 5%.
    pub disagrees: Vec<bool>,
}

/// Two-sided p-value of a chi-square statistic with `df` degrees of freedom.
pub fn chi2_sf(statistic: f64, df: f64) -> f64 {
    if statistic.is_nan() {
        return 1.0;
    }
    if statistic <= 0.0 {
        return 1.0;
    }
    if df == 1.0 {
        // Exact in the far tail, where 1 - cdf would round to 0.
        return (2.0 * Normal::standard().sf(statistic.sqrt())).min(1.0);
    }
    ChiSquared::new(df).expect("df > 0").sf(statistic)
}

/// The pooled figures over `tables` (each with `n1 > 0` and `n0 > 0`); `None` without tables.
pub fn mantel_haenszel(tables: &[Table], z: f64) -> Option<Pooled> {
    if tables.is_empty() {
        return None;
    }
    let f = |t: &Table| {
        let (a, n1, c, n0) = (t.x1 as f64, t.n1 as f64, t.x0 as f64, t.n0 as f64);
        (a, n1 - a, c, n0 - c, n1, n0, n1 + n0)
    };
    // Risk difference, Sato's variance.
    let (mut num, mut w, mut p, mut q) = (0.0, 0.0, 0.0, 0.0);
    for t in tables {
        let (a, _, c, _, n1, n0, n) = f(t);
        num += (a * n0 - c * n1) / n;
        w += n1 * n0 / n;
        p += (n1 * n1 * c - n0 * n0 * a + n1 * n0 * (n0 - n1) / 2.0) / (n * n);
        q += (a * (n0 - c) + c * (n1 - a)) / (2.0 * n);
    }
    let rd = num / w;
    let half = z * ((rd * p + q).max(0.0)).sqrt() / w;
    // Odds ratio, Robins-Breslow-Greenland variance of its log.
    let (mut r, mut s) = (0.0, 0.0);
    let (mut pr, mut ps_qr, mut qs) = (0.0, 0.0, 0.0);
    for t in tables {
        let (a, b, c, d, _, _, n) = f(t);
        let (ad, bc, apd) = (a * d / n, b * c / n, (a + d) / n);
        r += ad;
        s += bc;
        pr += apd * ad;
        ps_qr += apd * bc + (1.0 - apd) * ad;
        qs += (1.0 - apd) * bc;
    }
    let (odds_ratio, odds_ratio_ci) = if r > 0.0 && s > 0.0 {
        let or = r / s;
        let var = (pr / (r * r) + ps_qr / (r * s) + qs / (s * s)) / 2.0;
        let h = z * var.sqrt();
        (Some(or), Some(((or.ln() - h).exp(), (or.ln() + h).exp())))
    } else {
        (None, None)
    };
    // Cochran-Mantel-Haenszel.
    let (mut dev, mut var) = (0.0, 0.0);
    for t in tables {
        let (a, _, c, _, n1, n0, n) = f(t);
        let (m1, m0) = (a + c, n - a - c);
        dev += a - n1 * m1 / n;
        var += n1 * n0 * m1 * m0 / (n * n * (n - 1.0));
    }
    let cmh_p = if var > 0.0 {
        chi2_sf(dev * dev / var, 1.0)
    } else {
        1.0
    };
    // Breslow-Day with Tarone's correction.
    let mut disagrees = vec![false; tables.len()];
    let homogeneity_p = odds_ratio.and_then(|or| {
        let mut terms = Vec::new();
        let (mut sum_a, mut sum_e, mut sum_v) = (0.0, 0.0, 0.0);
        for (i, t) in tables.iter().enumerate() {
            let (a, _, c, d, n1, _, n) = f(t);
            let m1 = a + c;
            if m1 == 0.0 || m1 == n {
                continue;
            }
            // The expected first cell under the common odds ratio: the root of
            // (1 - or) e^2 + (or (n1 + m1) + d - a) e - or n1 m1 in the table's range, in
            // the form that stays exact where or is near 1.
            let qb = or * (n1 + m1) + d - a;
            let qc = -or * n1 * m1;
            let disc = qb * qb - 4.0 * (1.0 - or) * qc;
            let e = 2.0 * qc / (-qb - disc.max(0.0).sqrt());
            let v = 1.0 / (1.0 / e + 1.0 / (m1 - e) + 1.0 / (n1 - e) + 1.0 / (d - a + e));
            terms.push((i, (a - e) * (a - e) / v));
            sum_a += a;
            sum_e += e;
            sum_v += v;
        }
        if terms.len() < 2 {
            return None;
        }
        let statistic = terms.iter().map(|(_, x)| x).sum::<f64>() - (sum_a - sum_e).powi(2) / sum_v;
        let p = chi2_sf(statistic, (terms.len() - 1) as f64);
        if p < 0.05 {
            for (i, x) in terms {
                disagrees[i] = x > CHI2_1_95;
            }
        }
        Some(p)
    });
    Some(Pooled {
        risk_difference: rd,
        risk_difference_ci: (rd - half, rd + half),
        odds_ratio,
        odds_ratio_ci,
        cmh_p,
        homogeneity_p,
        disagrees,
    })
}

/// Persons and reached persons of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Side {
    pub persons: u64,
    pub reached: u64,
}

impl Side {
    /// reached / persons (the caller makes sure there are persons).
    pub fn rate(self) -> f64 {
        self.reached as f64 / self.persons as f64
    }

    fn variance(self) -> f64 {
        let p = self.rate();
        p * (1.0 - p) / self.persons as f64
    }
}

/// An estimate with its standard error, interval and two-sided p-value (normal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub estimate: f64,
    pub se: f64,
    pub ci: (f64, f64),
    pub p: f64,
}

impl Estimate {
    pub fn normal(estimate: f64, se: f64, z: f64) -> Estimate {
        let p = if se > 0.0 {
            (2.0 * Normal::standard().sf((estimate / se).abs())).min(1.0)
        } else {
            1.0
        };
        Estimate {
            estimate,
            se,
            ci: (estimate - z * se, estimate + z * se),
            p,
        }
    }
}

/// `(after - before)` of the group minus that of the control; every side has persons.
pub fn did(group: [Side; 2], control: [Side; 2], z: f64) -> Estimate {
    let [gb, ga] = group;
    let [cb, ca] = control;
    let estimate = (ga.rate() - gb.rate()) - (ca.rate() - cb.rate());
    let se = (ga.variance() + gb.variance() + ca.variance() + cb.variance()).sqrt();
    Estimate::normal(estimate, se, z)
}

/// Per-stratum estimates pooled by inverse variance; strata with no variance carry no weight
/// (the caller lists them as left out). `None` when no stratum has a variance.
pub fn pooled_did(strata: &[Estimate], z: f64) -> Option<Estimate> {
    let (mut sw, mut swd) = (0.0, 0.0);
    for s in strata.iter().filter(|s| s.se > 0.0) {
        let w = 1.0 / (s.se * s.se);
        sw += w;
        swd += w * s.estimate;
    }
    (sw > 0.0).then(|| Estimate::normal(swd / sw, 1.0 / sw.sqrt(), z))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Z95;

    fn t(x1: u64, n1: u64, x0: u64, n0: u64) -> Table {
        Table { x1, n1, x0, n0 }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn one_stratum_is_the_crude_table() {
        // One stratum: the MH odds ratio is the table's, the CMH test is the uncorrected
        // chi-square times (N-1)/N, the risk difference is the crude one.
        let p = mantel_haenszel(&[t(30, 100, 45, 100)], Z95).unwrap();
        assert!(close(p.risk_difference, -0.15));
        assert!(close(p.odds_ratio.unwrap(), (30.0 * 55.0) / (70.0 * 45.0)));
        assert_eq!(p.homogeneity_p, None);
        // Sato's variance of one stratum is p1 q1 / n1 + p0 q0 / n0 only in the limit; here
        // it is its own formula: check against the written-out sum.
        let (a, n1, c, n0) = (30.0f64, 100.0f64, 45.0f64, 100.0f64);
        let n = n1 + n0;
        let w = n1 * n0 / n;
        let pp = (n1 * n1 * c - n0 * n0 * a + n1 * n0 * (n0 - n1) / 2.0) / (n * n);
        let qq = (a * (n0 - c) + c * (n1 - a)) / (2.0 * n);
        let se = ((-0.15 * pp + qq) / (w * w)).sqrt();
        assert!(close(p.risk_difference_ci.1 - p.risk_difference, Z95 * se));
    }

    #[test]
    fn published_figures() {
        // Two strata; the odds ratio, its interval and both tests as statsmodels 0.15.0 gives
        // them (StratifiedTable; test_equal_odds(adjust=True)). The risk difference is the
        // mean of the strata's differences weighted by n1 n0 / N.
        let p = mantel_haenszel(&[t(8, 98, 5, 115), t(22, 106, 16, 85)], Z95).unwrap();
        let (w1, w2) = (98.0 * 115.0 / 213.0, 106.0 * 85.0 / 191.0);
        let rd = (w1 * (8.0 / 98.0 - 5.0 / 115.0) + w2 * (22.0 / 106.0 - 16.0 / 85.0)) / (w1 + w2);
        assert!(close(p.risk_difference, rd), "{}", p.risk_difference);
        assert!(close(p.odds_ratio.unwrap(), 1.320_217_504_607_465_3));
        let (lo, hi) = p.odds_ratio_ci.unwrap();
        assert!(close(lo, 0.719_122_410_568_007_3) && close(hi, 2.423_751_831_201_108));
        assert!(close(p.cmh_p, chi2_sf(0.809_463_586_241_203_7, 1.0)));
        assert!(close(p.homogeneity_p.unwrap(), 0.426_123_587_506_328_06));
        assert!(!p.disagrees.iter().any(|d| *d));
        // UC Berkeley admissions by department (admitted of male, of female applicants):
        // statsmodels' Breslow-Day (Tarone) p = 0.0020648, against DescTools in R; the
        // department that disagrees is A, where women were admitted far more often.
        let ucb = [
            t(512, 825, 89, 108),
            t(353, 560, 17, 25),
            t(120, 325, 202, 593),
            t(139, 417, 131, 375),
            t(53, 191, 94, 393),
            t(22, 373, 24, 341),
        ];
        let p = mantel_haenszel(&ucb, Z95).unwrap();
        assert!((p.homogeneity_p.unwrap() - 0.002_064_797_337_452_24).abs() < 1e-9);
        assert_eq!(p.disagrees, [true, false, false, false, false, false]);
    }

    #[test]
    fn degenerate_strata() {
        // Nobody reached anywhere: no odds ratio, no test variance.
        let p = mantel_haenszel(&[t(0, 10, 0, 12), t(0, 3, 0, 4)], Z95).unwrap();
        assert_eq!(p.risk_difference, 0.0);
        assert_eq!(p.odds_ratio, None);
        assert_eq!(p.cmh_p, 1.0);
        assert_eq!(p.homogeneity_p, None);
        assert!(mantel_haenszel(&[], Z95).is_none());
        // An odds ratio of exactly 1: the Breslow-Day root is n1 m1 / N.
        let p = mantel_haenszel(&[t(5, 10, 5, 10), t(2, 4, 3, 6)], Z95).unwrap();
        assert!(close(p.odds_ratio.unwrap(), 1.0));
        assert!(p.homogeneity_p.unwrap() > 0.99);
    }

    #[test]
    fn did_of_equal_changes_is_zero() {
        let s = |reached, persons| Side { persons, reached };
        let e = did([s(20, 100), s(40, 100)], [s(10, 50), s(20, 50)], Z95);
        assert!(close(e.estimate, 0.0) || e.estimate.abs() < 1e-15);
        assert!(e.p > 0.99);
        let pooled = pooled_did(&[e, e], Z95).unwrap();
        assert!(close(pooled.se, e.se / 2f64.sqrt()));
    }
}
