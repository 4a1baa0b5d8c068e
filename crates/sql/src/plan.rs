//! What a cluster query computes, checked against what SQL can express exactly.
//!
//! A [`Plan`] is the validated funnel spec plus the analysis scope (`--from`, `--to`,
//! `--cutoff`). Both dialects render the same plan, and the embedded engine reads the same spec,
//! so the three cannot drift apart in what they accept.

use funnel_core::{Attribution, FunnelSpec, Interval, MAX_STEPS, ModeSet};

use crate::SqlError;

/// The analysis scope a query applies (the embedded engine's `AnalyzeOptions` that SQL covers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Only step-1 events at or after this instant (ms since the epoch) start chains.
    pub from_ms: Option<i64>,
    /// Only step-1 events before this instant start chains.
    pub to_ms: Option<i64>,
    /// Events after this instant are ignored; windows open at it are pending. `None`: the
    /// latest event of the source, computed by the query.
    pub cutoff_ms: Option<i64>,
    /// ClickHouse: take the level from the fold (`arrayFold`) even where `windowFunnel` could
    /// give it (always so beyond 32 steps). For servers whose `windowFunnel` lacks a mode, and
    /// for checking the fold against `windowFunnel`.
    pub fold_level: bool,
    /// Trends: also the groups of each calendar period of the step-1 events (alone and with
    /// each breakdown value), as the embedded engine's `--interval` gives them.
    pub interval: Option<Interval>,
    /// IANA time zone of the periods (`UTC` when empty).
    pub timezone: String,
    /// The instant (epoch ms) of the derived [`funnel_core::schema::SPLIT`] breakdown column.
    pub split_at_ms: Option<i64>,
    /// The fold also keeps the event ids of the chains, for the audit table
    /// ([`crate::audit_query`]).
    pub audit: bool,
    /// Where the dropped went (`--dropped-next`): `Some(None)` for the next event's type,
    /// `Some(Some(column))` for its type and value of `column`.
    pub next_by: Option<Option<String>>,
}

/// The cluster dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Spark,
    ClickHouse,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Spark => "spark",
            Dialect::ClickHouse => "clickhouse",
        }
    }
}

/// A funnel as a cluster query computes it.
#[derive(Debug, Clone)]
pub struct Plan<'s> {
    pub spec: &'s FunnelSpec,
    pub options: PlanOptions,
    pub(crate) modes: ModeSet,
    /// `top`: the breakdown values kept (one breakdown column); every other value, null
    /// included unless kept, is read as `"(other)"` ([`funnel_core::schema::OTHER`]).
    pub(crate) kept: Option<Vec<Option<String>>>,
}

impl<'s> Plan<'s> {
    /// Checks that `spec` can be computed exactly in SQL; the error names the option that cannot.
    pub fn new(spec: &'s FunnelSpec, options: PlanOptions) -> Result<Plan<'s>, SqlError> {
        let unsupported = |option: &str, reason: &str| SqlError::Unsupported {
            source_name: spec.source.clone(),
            option: option.to_string(),
            reason: reason.to_string(),
        };
        let chain_search = "the chain is found by an exhaustive search, which a SQL fold over \
                            the events cannot reproduce exactly; use --engine embedded";
        if let Some(option) = spec.extension() {
            return Err(unsupported(&option, chain_search));
        }
        if spec.attribution != Attribution::Step1 {
            return Err(unsupported(
                "attribution",
                "only the step-1 breakdown rule is compiled; use --engine embedded",
            ));
        }
        if spec
            .breakdown
            .iter()
            .any(|c| c == funnel_core::schema::SPLIT)
            && options.split_at_ms.is_none()
        {
            return Err(unsupported(
                "breakdown",
                "the derived (split) column needs the instant of the split",
            ));
        }
        if spec.steps.len() > MAX_STEPS {
            return Err(unsupported("steps", &format!("at most {MAX_STEPS} steps")));
        }
        Ok(Plan {
            spec,
            options,
            modes: spec.mode_set(),
            kept: None,
        })
    }

    /// The plan with its one breakdown column folded to the `kept` values and `"(other)"` (the
    /// second pass of a `top = N` funnel; the values come from the first).
    pub fn keeping(mut self, kept: Vec<Option<String>>) -> Plan<'s> {
        debug_assert_eq!(
            self.spec.breakdown.len(),
            1,
            "top needs one breakdown column"
        );
        self.kept = Some(kept);
        self
    }

    pub fn steps(&self) -> usize {
        self.spec.steps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str, step2: &str) -> FunnelSpec {
        funnel_core::parse_funnel(
            &format!(
                "name = \"x\"\nwindow = \"1h\"\n{extra}\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"purchase\"\n{step2}\n"
            ),
            "f.toml",
        )
        .unwrap()
    }

    #[test]
    fn extensions_are_refused_by_name() {
        for (extra, step2, named) in [
            ("", "optional = true", "optional"),
            ("", "within = \"5m\"", "within"),
            ("order = \"any\"", "", "order"),
            ("count = \"attempts\"", "", "count"),
            ("hold_constant = \"item_id\"", "", "hold_constant"),
            (
                "attribution = \"first_touch\"\nbreakdown = \"journey\"",
                "",
                "attribution",
            ),
        ] {
            let s = spec(extra, step2);
            let e = Plan::new(&s, PlanOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(named) && e.contains("f.toml"), "{e}");
        }
        let s = spec("mode = [\"strict_once\", \"strict_order\"]", "");
        assert!(Plan::new(&s, PlanOptions::default()).is_ok());
    }
}
