//! Interval estimates and tests for comparing conversion rates.
//!
//! Wilson score intervals for a proportion; Newcombe's hybrid score interval (method 10 of
//! Newcombe 1998) for a difference of proportions; the pooled two-proportion z-test; Fisher's
//! exact test (two-sided, summing the tables no more likely than the observed one); Holm's
//! step-down adjustment. Distributions come from `statrs`. Pooled estimates over strata and
//! the difference-in-differences: `stratified.rs`.

mod stratified;

pub use stratified::{Estimate, Pooled, Side, Table, chi2_sf, did, mantel_haenszel, pooled_did};

use statrs::distribution::{ContinuousCDF, Discrete, Hypergeometric, Normal};

/// 97.5th percentile of the standard normal: 95% two-sided intervals.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `x` successes in `n` trials; (0, 1) when `n` is 0.
pub fn wilson(x: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (x, n) = (x as f64, n as f64);
    let p = x / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Newcombe's hybrid score interval for p1 - p2.
pub fn newcombe(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> (f64, f64) {
    let p = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let (p1, p2) = (p(x1, n1), p(x2, n2));
    let (l1, u1) = wilson(x1, n1, z);
    let (l2, u2) = wilson(x2, n2, z);
    let d = p1 - p2;
    let lo = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let hi = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (lo.max(-1.0), hi.min(1.0))
}

/// Two-sided p-value of the pooled two-proportion z-test (1 when the pooled rate is 0 or 1).
pub fn z_test(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    let z = (x1 as f64 / n1f - x2 as f64 / n2f) / se;
    let normal = Normal::standard();
    (2.0 * normal.sf(z.abs())).min(1.0)
}

/// Two-sided p-value of Fisher's exact test on [[x1, n1 - x1], [x2, n2 - x2]].
pub fn fisher_exact(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let total = n1 + n2;
    let successes = x1 + x2;
    if n1 == 0 || n2 == 0 || successes == 0 || successes == total {
        return 1.0;
    }
    let h = Hypergeometric::new(total, successes, n1).expect("valid margins");
    let observed = h.pmf(x1);
    let lo = successes.saturating_sub(n2);
    let hi = successes.min(n1);
    // Relative tolerance as R and scipy use, so equally likely tables are counted.
    let p: f64 = (lo..=hi)
        .map(|k| h.pmf(k))
        .filter(|q| *q <= observed * (1.0 + 1e-7))
        .sum();
    p.min(1.0)
}

/// Holm's step-down adjusted p-values, in the input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]).then(a.cmp(b)));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn published_figures() {
        // Newcombe (1998), Statistics in Medicine 17: Wilson interval for 81/263 is
        // 0.2553 to 0.3662; the hybrid score interval for 56/70 - 48/80 is 0.0524 to 0.3339.
        let (l, u) = wilson(81, 263, Z95);
        assert!(close(l, 0.2553, 5e-5) && close(u, 0.3662, 5e-5), "{l} {u}");
        let (l, u) = newcombe(56, 70, 48, 80, Z95);
        assert!(close(l, 0.0524, 5e-5) && close(u, 0.3339, 5e-5), "{l} {u}");
        // Fisher's lady tasting tea: 3 of 4 right each way, two-sided p = 0.4857.
        assert!(close(fisher_exact(3, 4, 1, 4), 0.485_714_285_714, 1e-9));
        // Holm: (0.01, 0.04, 0.03) -> (0.03, 0.06, 0.06).
        let h = holm(&[0.01, 0.04, 0.03]);
        assert!(close(h[0], 0.03, 1e-12) && close(h[1], 0.06, 1e-12) && close(h[2], 0.06, 1e-12));
    }

    #[test]
    fn edges() {
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
        let (l, u) = wilson(0, 10, Z95);
        assert_eq!(l, 0.0);
        assert!(u > 0.0 && u < 0.35);
        assert_eq!(z_test(5, 10, 0, 0), 1.0);
        assert_eq!(z_test(0, 10, 0, 10), 1.0);
        assert_eq!(fisher_exact(0, 5, 0, 5), 1.0);
        // Symmetric in the groups.
        assert!(close(
            z_test(30, 100, 45, 100),
            z_test(45, 100, 30, 100),
            1e-15
        ));
        assert!(close(
            fisher_exact(2, 9, 7, 8),
            fisher_exact(7, 8, 2, 9),
            1e-12
        ));
        // A z-test of 30/100 vs 45/100: z = -2.191, p = 0.02846.
        assert!(close(z_test(30, 100, 45, 100), 0.028_459, 1e-5));
    }
}
