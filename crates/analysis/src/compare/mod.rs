//! Journey comparison: every group on the same denominator (its step-1 persons, i.e. clicks),
//! conversion to each milestone with Wilson intervals, the difference to a baseline group with
//! Newcombe intervals and a test (z, or Fisher's exact where a cell is under 5), Holm-adjusted
//! across all comparisons of the run, and what each step the baseline does not have costs.
//! Optionally the same differences adjusted for strata (`adjusted.rs`) and the changes before
//! and after an instant, with a control group's (`split.rs`).

mod adjusted;
mod split;

use funnel_core::{Attribution, FunnelSpec, Generation, schema};
use serde::Serialize;

use crate::stats::{Side, Z95, fisher_exact, holm, newcombe, wilson, z_test};
use crate::{AnalysisError, AnalyzeOptions, FunnelReport, analyze};

pub use adjusted::{Adjusted, SplitStratum, Stratum, StratumValue};
pub use split::{AdjustedDid, BeforeAfter, Did, DidStratum, Split};

/// Below this many step-1 persons a group is flagged as an insufficient sample.
pub const MIN_SAMPLE: u64 = 30;

#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The column whose values are compared (the breakdown).
    pub by: String,
    /// The value of the baseline group.
    pub baseline: String,
    /// How persons are assigned to groups. With `Step1` (the breakdown semantics of CONTRACT §5)
    /// a person is in every group their step-1 events name; first and last touch put each
    /// person in exactly one group, so the groups are independent samples.
    pub attribution: Attribution,
    pub analyze: AnalyzeOptions,
    /// Columns whose value tuples (on the step-1 event that puts a person in the group) are
    /// the strata of the adjusted differences; none: no adjustment.
    pub adjust_for: Vec<String>,
    /// Before/after an instant, optionally against a control group.
    pub split: Option<Split>,
    /// Groups with fewer step-1 persons are suppressed (CONTRACT §9); 0: none.
    pub min_persons: u64,
}

/// A rate with its 95% Wilson interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub step: String,
    pub persons: u64,
    pub rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Serialised as its fields; a [`suppressed`](Self::suppressed) group has `null` for its clicks
/// and every rate and interval, and `"suppressed": true`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub value: Option<String>,
    /// Step-1 persons: the common denominator.
    pub clicks: u64,
    pub insufficient_sample: bool,
    /// Conversion from step 1 to each later step.
    pub rates: Vec<Rate>,
    /// Fewer clicks than `--min-persons`: nothing of it is shown or compared.
    pub suppressed: bool,
}

impl Serialize for Group {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("Group", 4 + usize::from(self.suppressed))?;
        st.serialize_field("value", &self.value)?;
        if self.suppressed {
            let hidden: Vec<serde_json::Value> = self
                .rates
                .iter()
                .map(|r| {
                    serde_json::json!({"step": r.step, "persons": null, "rate": null,
                        "ci_low": null, "ci_high": null})
                })
                .collect();
            st.serialize_field("clicks", &None::<u64>)?;
            st.serialize_field("insufficient_sample", &None::<bool>)?;
            st.serialize_field("rates", &hidden)?;
            st.serialize_field("suppressed", &true)?;
        } else {
            st.serialize_field("clicks", &self.clicks)?;
            st.serialize_field("insufficient_sample", &self.insufficient_sample)?;
            st.serialize_field("rates", &self.rates)?;
        }
        st.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub group: Option<String>,
    pub step: String,
    pub rate: f64,
    pub baseline_rate: f64,
    /// rate - baseline_rate, with its 95% Newcombe interval.
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// rate / baseline_rate - 1 (`None` when the baseline rate is 0).
    pub relative_lift: Option<f64>,
    /// `z` (pooled two-proportion) or `fisher` (exact, when a cell is under 5).
    pub test: String,
    pub p_value: f64,
    /// Holm-adjusted over every difference of this comparison.
    pub p_holm: f64,
    pub significant: bool,
    /// Either group has fewer than 30 step-1 persons.
    pub insufficient_sample: bool,
    /// The difference within strata, pooled (`--adjust-for`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted: Option<Adjusted<Stratum>>,
}

impl Difference {
    /// How to read the difference: `insufficient sample`, `significant` (Holm p < 0.05) or
    /// `not significant`.
    pub fn verdict(&self) -> &'static str {
        if self.insufficient_sample {
            "insufficient sample"
        } else if self.significant {
            "significant"
        } else {
            "not significant"
        }
    }
}

/// A step a group has and the baseline does not (no baseline person goes through it), and
/// the share of the group's clicks lost there: persons whose chain ended just before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCost {
    pub group: Option<String>,
    pub step: String,
    /// Persons whose chain went through the step.
    pub persons_through: u64,
    /// Persons whose chain ended at the step before it.
    pub lost: u64,
    pub share_of_clicks_lost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub funnel: String,
    pub by: String,
    pub baseline: String,
    pub attribution: Attribution,
    /// Sum of the groups' step-1 persons minus all step-1 persons: how much the groups overlap.
    pub persons_in_several_groups: u64,
    pub groups: Vec<Group>,
    pub differences: Vec<Difference>,
    pub extra_steps: Vec<StepCost>,
    /// The split instant (RFC 3339), with `--split-at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_after: Option<Vec<BeforeAfter>>,
    /// Groups without persons on one side of the split (no before/after change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_after_left_out: Option<Vec<Option<String>>>,
    /// The control group of the differences-in-differences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<Vec<Did>>,
    /// The funnel as computed (breakdown by `by`), for reference.
    pub report: FunnelReport,
}

impl Comparison {
    /// The stratum columns of the adjusted differences (`--adjust-for`), if any.
    pub fn adjusted_by(&self) -> Option<&[String]> {
        self.differences
            .iter()
            .find_map(|d| d.adjusted.as_ref().map(|a| a.by.as_slice()))
    }

    /// How many tests Holm's adjustment runs over (every p-value of the comparison).
    pub fn tests(&self) -> usize {
        self.p_values().len()
    }

    /// Every p-value of the comparison, in the order Holm's adjustment hands them back: the
    /// differences (each followed by its CMH test), the before/after changes (each followed
    /// by its CMH test), the differences-in-differences (each followed by its pooled one).
    fn p_values(&self) -> Vec<f64> {
        let mut p = Vec::new();
        for d in &self.differences {
            p.push(d.p_value);
            p.extend(d.adjusted.as_ref().and_then(|a| a.cmh_p));
        }
        for b in self.before_after.iter().flatten() {
            p.push(b.p);
            p.extend(b.adjusted.as_ref().and_then(|a| a.cmh_p));
        }
        for d in self.did.iter().flatten() {
            p.push(d.p);
            p.extend(d.adjusted.as_ref().and_then(|a| a.p));
        }
        p
    }
}

/// The test of two proportions: Fisher's exact where a cell is under 5, else the z-test.
pub(crate) fn test(a: Side, b: Side) -> (&'static str, f64) {
    let (x1, n1, x2, n2) = (a.reached, a.persons, b.reached, b.persons);
    if [x1, n1 - x1, x2, n2 - x2].iter().any(|c| *c < 5) {
        ("fisher", fisher_exact(x1, n1, x2, n2))
    } else {
        ("z", z_test(x1, n1, x2, n2))
    }
}

/// Compares the groups of `spec` broken down by `opts.by` against the baseline value.
pub fn compare(
    store: &Generation,
    spec: &FunnelSpec,
    opts: &CompareOptions,
) -> Result<Comparison, AnalysisError> {
    let specs = comparison_specs(spec, opts);
    let analysis = analyze(store, &specs, &analyze_options(opts))?;
    compare_reports(&specs, analysis.reports, opts)
}

/// The analysis options of a comparison: `opts.analyze` with the split instant.
pub fn analyze_options(opts: &CompareOptions) -> AnalyzeOptions {
    let mut a = opts.analyze.clone();
    if let Some(s) = &opts.split {
        a.split_at_ms = Some(s.at_ms);
    }
    a
}

/// The funnels a comparison computes, all with `opts.attribution`: broken down by `opts.by`;
/// with strata also by `[by, adjust_for...]`; with a split by `[by, SPLIT]` and, with strata,
/// `[by, SPLIT, adjust_for...]`. Add them to the funnels of an [`analyze`] run (with
/// [`analyze_options`]) and pass their reports to [`compare_reports`] to compare without a
/// second pass over the store.
pub fn comparison_specs(spec: &FunnelSpec, opts: &CompareOptions) -> Vec<FunnelSpec> {
    let with = |columns: Vec<String>| {
        let mut s = spec.clone();
        s.breakdown = columns;
        // Every group is compared: a funnel file's `top` shapes `analyze` output only.
        s.top = None;
        s.attribution = opts.attribution;
        s
    };
    let by = vec![opts.by.clone()];
    let split = vec![opts.by.clone(), schema::SPLIT.to_string()];
    let adjusted = !opts.adjust_for.is_empty();
    let mut specs = vec![with(by.clone())];
    if adjusted {
        specs.push(with([by.clone(), opts.adjust_for.clone()].concat()));
    }
    if opts.split.is_some() {
        specs.push(with(split.clone()));
        if adjusted {
            specs.push(with([split, opts.adjust_for.clone()].concat()));
        }
    }
    specs
}

/// The comparison from the reports of [`comparison_specs`], in their order.
pub fn compare_reports(
    specs: &[FunnelSpec],
    reports: Vec<FunnelReport>,
    opts: &CompareOptions,
) -> Result<Comparison, AnalysisError> {
    if let Some(c) = opts.adjust_for.iter().find(|c| **c == opts.by) {
        return Err(AnalysisError::Option {
            option: "--adjust-for",
            value: format!("{c} (the compared column itself)"),
        });
    }
    let adjusted = !opts.adjust_for.is_empty();
    let mut reports = reports.into_iter();
    let mut next = || reports.next().expect("one report per comparison funnel");
    let report = next();
    let strata = adjusted.then(&mut next);
    let split_reports = opts
        .split
        .as_ref()
        .map(|_| (next(), adjusted.then(&mut next)));
    let mut c = compare_report(&specs[0], report, opts)?;
    if let Some(strata) = &strata {
        let groups = &strata.groups[1..];
        let base = adjusted::cells(
            groups,
            &[(&opts.by, Some(&opts.baseline))],
            &opts.adjust_for,
        );
        for d in &mut c.differences {
            let one = adjusted::cells(groups, &[(&opts.by, d.group.as_deref())], &opts.adjust_for);
            let k = specs[0]
                .steps
                .iter()
                .position(|s| s.name == d.step)
                .expect("a difference is at a step of the funnel");
            d.adjusted = Some(adjusted::adjust(
                &opts.adjust_for,
                &one,
                &base,
                k,
                |value, group, baseline, risk_difference, disagrees| Stratum {
                    value,
                    group,
                    baseline,
                    risk_difference,
                    disagrees,
                },
            ));
        }
    }
    if let (Some(s), Some((plain, strata))) = (&opts.split, &split_reports) {
        let control = s.control.as_deref();
        if let Some(v) = control
            && !c.groups.iter().any(|g| g.value.as_deref() == Some(v))
        {
            return Err(AnalysisError::Option {
                option: "--control",
                value: format!("{v} (values of {}: {})", opts.by, values(&c.groups)),
            });
        }
        let groups: Vec<(Option<String>, u64)> = c
            .groups
            .iter()
            .filter(|g| !g.suppressed)
            .map(|g| (g.value.clone(), g.clicks))
            .collect();
        let r = split::split(
            &specs[0],
            &opts.by,
            &opts.adjust_for,
            control,
            &groups,
            plain,
            strata.as_ref(),
        );
        c.split_at = Some(s.label.clone());
        c.before_after = Some(r.before_after);
        c.before_after_left_out = Some(r.left_out);
        c.control = s.control.clone();
        c.did = control.map(|_| r.did);
    }
    holm_over_the_run(&mut c);
    crate::suppress(&mut c.report, opts.min_persons);
    Ok(c)
}

fn values(groups: &[Group]) -> String {
    groups
        .iter()
        .map(|g| g.value.clone().unwrap_or_else(|| "null".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Holm's adjustment over every test of the comparison: the differences, their CMH tests, the
/// before/after changes and the differences-in-differences (plain and pooled). Without
/// `--adjust-for` and `--split-at` the family is the differences, as it always was.
fn holm_over_the_run(c: &mut Comparison) {
    let mut adjusted = holm(&c.p_values()).into_iter();
    let mut next = || adjusted.next().expect("one adjusted p per test");
    for d in &mut c.differences {
        d.p_holm = next();
        d.significant = d.p_holm < 0.05 && !d.insufficient_sample;
        if let Some(a) = d.adjusted.as_mut().filter(|a| a.cmh_p.is_some()) {
            a.cmh_p_holm = Some(next());
        }
    }
    for b in c.before_after.iter_mut().flatten() {
        b.p_holm = next();
        if let Some(a) = b.adjusted.as_mut().filter(|a| a.cmh_p.is_some()) {
            a.cmh_p_holm = Some(next());
        }
    }
    for d in c.did.iter_mut().flatten() {
        d.p_holm = next();
        if let Some(a) = d.adjusted.as_mut().filter(|a| a.p.is_some()) {
            a.p_holm = Some(next());
        }
    }
}

/// The unadjusted comparison from the report of the first of [`comparison_specs`] (Holm's
/// adjustment is left to [`compare_reports`]).
fn compare_report(
    spec: &FunnelSpec,
    report: FunnelReport,
    opts: &CompareOptions,
) -> Result<Comparison, AnalysisError> {
    let value_of = |g: &crate::GroupReport| g.key.get(&opts.by).cloned().flatten();
    let groups: Vec<Group> = report.groups[1..]
        .iter()
        .map(|g| {
            let clicks = g.steps[0].persons;
            Group {
                value: value_of(g),
                clicks,
                insufficient_sample: clicks < MIN_SAMPLE,
                suppressed: clicks < opts.min_persons,
                rates: g.steps[1..]
                    .iter()
                    .map(|s| {
                        let (ci_low, ci_high) = wilson(s.persons, clicks, Z95);
                        Rate {
                            step: s.name.clone(),
                            persons: s.persons,
                            rate: s.conversion_from_first,
                            ci_low,
                            ci_high,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let Some(base) = groups
        .iter()
        .find(|g| g.value.as_deref() == Some(opts.baseline.as_str()))
    else {
        return Err(AnalysisError::Option {
            option: "--baseline",
            value: format!(
                "{} (values of {}: {})",
                opts.baseline,
                opts.by,
                values(&groups)
            ),
        });
    };
    let mut differences = Vec::new();
    let mut extra_steps = Vec::new();
    let report_group = |v: &Option<String>| {
        report.groups[1..]
            .iter()
            .find(|g| &value_of(g) == v)
            .expect("every group comes from the report")
    };
    let n = spec.steps.len();
    // A comparison with a suppressed side is not computed.
    let compared = groups
        .iter()
        .filter(|g| g.value != base.value && !g.suppressed && !base.suppressed);
    for g in compared {
        // Persons lost at each step: a chain that ended at step L failed at the next step this
        // group has (a required step, or an optional one some of its persons went through).
        let st = &report_group(&g.value).steps;
        let has = |j: usize| !spec.steps[j].optional || st[j].persons > 0;
        let mut lost_at = vec![0u64; n];
        for (level, step) in st.iter().enumerate().skip(1) {
            if let Some(j) = (level..n).find(|&j| has(j)) {
                lost_at[j] += step.stopped_before;
            }
        }
        for (k, (r, b)) in g.rates.iter().zip(&base.rates).enumerate() {
            if b.persons == 0 {
                // A step the baseline does not have: what it costs this group.
                if r.persons > 0 {
                    let lost = lost_at[k + 1];
                    extra_steps.push(StepCost {
                        group: g.value.clone(),
                        step: r.step.clone(),
                        persons_through: r.persons,
                        lost,
                        share_of_clicks_lost: if g.clicks == 0 {
                            0.0
                        } else {
                            lost as f64 / g.clicks as f64
                        },
                    });
                }
                continue;
            }
            let (x1, n1, x2, n2) = (r.persons, g.clicks, b.persons, base.clicks);
            let (test, p_value) = test(
                Side {
                    persons: n1,
                    reached: x1,
                },
                Side {
                    persons: n2,
                    reached: x2,
                },
            );
            let (ci_low, ci_high) = newcombe(x1, n1, x2, n2, Z95);
            differences.push(Difference {
                group: g.value.clone(),
                step: r.step.clone(),
                rate: r.rate,
                baseline_rate: b.rate,
                difference: r.rate - b.rate,
                ci_low,
                ci_high,
                relative_lift: (b.rate > 0.0).then(|| r.rate / b.rate - 1.0),
                test: test.to_string(),
                p_value,
                p_holm: 0.0,
                significant: false,
                insufficient_sample: n1 < MIN_SAMPLE || n2 < MIN_SAMPLE,
                adjusted: None,
            });
        }
    }
    let in_groups: u64 = groups.iter().map(|g| g.clicks).sum();
    Ok(Comparison {
        funnel: spec.name.clone(),
        by: opts.by.clone(),
        baseline: opts.baseline.clone(),
        attribution: opts.attribution,
        persons_in_several_groups: in_groups.saturating_sub(report.groups[0].steps[0].persons),
        groups,
        differences,
        extra_steps,
        split_at: None,
        before_after: None,
        before_after_left_out: None,
        control: None,
        did: None,
        report,
    })
}
