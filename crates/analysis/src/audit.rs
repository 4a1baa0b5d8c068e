//! The `--persons-out` audit table: one row per person, group and funnel, with the reported
//! chain, so that every count of a report can be re-derived person by person.

use std::path::Path;

use funnel_core::FunnelSpec;
use polars::prelude::*;

use crate::AnalysisError;

/// One person in one group of one funnel, with the reported chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub funnel: usize,
    /// The group key as JSON (`{}` for all persons).
    pub group: String,
    pub person_id: String,
    pub level: u32,
    /// The chain's window had not closed by the cutoff.
    pub window_open: bool,
    /// (ts ms, event_id) of each step of the reported chain up to the level (`None` for a
    /// skipped optional step).
    pub chain: Vec<Option<(i64, String)>>,
}

/// Writes audit rows as Parquet: funnel, group, person_id, level, window_open, then per step
/// `step_K_ts` (timestamp, UTC) and `step_K_event_id` (null beyond the level).
pub fn write_audit(
    path: &Path,
    specs: &[FunnelSpec],
    rows: &[AuditRow],
) -> Result<(), AnalysisError> {
    let err = |source| AnalysisError::Polars {
        store: path.display().to_string(),
        source,
    };
    let steps = specs.iter().map(|s| s.steps.len()).max().unwrap_or(0);
    let mut cols: Vec<Column> = vec![
        Column::new(
            "funnel".into(),
            rows.iter()
                .map(|r| specs[r.funnel].name.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "group".into(),
            rows.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "person_id".into(),
            rows.iter()
                .map(|r| r.person_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "level".into(),
            rows.iter().map(|r| r.level).collect::<Vec<_>>(),
        ),
        Column::new(
            "window_open".into(),
            rows.iter().map(|r| r.window_open).collect::<Vec<_>>(),
        ),
    ];
    for k in 0..steps {
        let ts: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.chain.get(k).and_then(|c| c.as_ref()).map(|c| c.0))
            .collect();
        let ts = Column::new(format!("step_{}_ts", k + 1).into(), ts)
            .cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(polars::prelude::TimeZone::UTC),
            ))
            .map_err(err)?;
        cols.push(ts);
        let ids: Vec<Option<&str>> = rows
            .iter()
            .map(|r| {
                r.chain
                    .get(k)
                    .and_then(|c| c.as_ref())
                    .map(|c| c.1.as_str())
            })
            .collect();
        cols.push(Column::new(format!("step_{}_event_id", k + 1).into(), ids));
    }
    let mut df = DataFrame::new_infer_height(cols).map_err(err)?;
    let file = std::fs::File::create(path).map_err(|e| AnalysisError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    ParquetWriter::new(file).finish(&mut df).map_err(err)?;
    Ok(())
}
