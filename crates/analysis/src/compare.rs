//! Journey comparison: every group on the same denominator (its step-1 persons, i.e. clicks),
//! conversion to each milestone with Wilson intervals, the difference to a baseline group with
//! Newcombe intervals and a test (z, or Fisher's exact where a cell is under 5), Holm-adjusted
//! across all comparisons of the run, and what each step the baseline does not have costs.

use funnel_core::{Attribution, FunnelSpec, Generation};
use serde::Serialize;

use crate::stats::{Z95, fisher_exact, holm, newcombe, wilson, z_test};
use crate::{AnalysisError, AnalyzeOptions, FunnelReport, analyze};

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub value: Option<String>,
    /// Step-1 persons: the common denominator.
    pub clicks: u64,
    pub insufficient_sample: bool,
    /// Conversion from step 1 to each later step.
    pub rates: Vec<Rate>,
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
    /// The funnel as computed (breakdown by `by`), for reference.
    pub report: FunnelReport,
}

/// Compares the groups of `spec` broken down by `opts.by` against the baseline value.
pub fn compare(
    store: &Generation,
    spec: &FunnelSpec,
    opts: &CompareOptions,
) -> Result<Comparison, AnalysisError> {
    let spec = comparison_spec(spec, opts);
    let analysis = analyze(store, std::slice::from_ref(&spec), &opts.analyze)?;
    let report = analysis
        .reports
        .into_iter()
        .next()
        .expect("one funnel in, one report out");
    compare_report(&spec, report, opts)
}

/// The funnel as the comparison computes it: broken down by `opts.by` with `opts.attribution`.
/// Add it to the funnels of an [`analyze`] run and pass its report to [`compare_report`] to
/// compare without a second pass over the store.
pub fn comparison_spec(spec: &FunnelSpec, opts: &CompareOptions) -> FunnelSpec {
    let mut spec = spec.clone();
    spec.breakdown = vec![opts.by.clone()];
    spec.attribution = opts.attribution;
    spec
}

/// The comparison from the report of [`comparison_spec`].
pub fn compare_report(
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
        let values: Vec<String> = groups
            .iter()
            .map(|g| g.value.clone().unwrap_or_else(|| "null".into()))
            .collect();
        return Err(AnalysisError::Option {
            option: "--baseline",
            value: format!(
                "{} (values of {}: {})",
                opts.baseline,
                opts.by,
                values.join(", ")
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
    for g in groups.iter().filter(|g| g.value != base.value) {
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
            let small = [x1, n1 - x1, x2, n2 - x2].iter().any(|c| *c < 5);
            let (test, p_value) = if small {
                ("fisher", fisher_exact(x1, n1, x2, n2))
            } else {
                ("z", z_test(x1, n1, x2, n2))
            };
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
            });
        }
    }
    let adjusted = holm(&differences.iter().map(|d| d.p_value).collect::<Vec<_>>());
    for (d, p) in differences.iter_mut().zip(adjusted) {
        d.p_holm = p;
        d.significant = p < 0.05 && !d.insufficient_sample;
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
        report,
    })
}
