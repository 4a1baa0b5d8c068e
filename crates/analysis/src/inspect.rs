//! A summary of a store: what was ingested, and events and persons by type and journey.

use std::path::Path;

use funnel_core::{Counts, Generation, Manifest, schema};
use polars::prelude::*;
use serde::Serialize;

use crate::AnalysisError;

/// Events and distinct persons for one value of a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountRow {
    /// `None` where the column is absent on the events.
    pub value: Option<String>,
    pub events: u64,
    pub persons: u64,
}

/// What a store holds.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    pub store: String,
    pub generation: u64,
    pub runs: usize,
    pub buckets: u32,
    pub events: u64,
    pub persons: u64,
    pub min_ts: Option<String>,
    pub max_ts: Option<String>,
    /// Row outcomes over all ingest runs.
    pub ingested: Counts,
    pub by_event_type: Vec<CountRow>,
    /// Click events and clicking persons by journey.
    pub clicks_by_journey: Vec<CountRow>,
    /// Click events and clicking persons by chat surface.
    pub clicks_by_chat_type: Vec<CountRow>,
    /// Warning-page events by action.
    pub warnings_by_action: Vec<CountRow>,
}

/// Summarises one generation of a store.
pub fn inspect(store: &Generation) -> Result<StoreSummary, AnalysisError> {
    let (dir, manifest) = (store.dir(), store.manifest());
    let name = store.root().display().to_string();
    let polars_err = |source| AnalysisError::Polars {
        store: name.clone(),
        source,
    };
    let (by_event_type, clicks_by_journey, clicks_by_chat_type, warnings_by_action) =
        if manifest.event_files.is_empty() {
            Default::default()
        } else {
            let lf = scan_events(dir, manifest).map_err(polars_err)?;
            let events = lf.select([
                col(schema::EVENT_TYPE),
                col(schema::PERSON_ID),
                col(schema::JOURNEY),
                col(schema::CHAT_TYPE),
                col(schema::WARNING_ACTION),
            ]);
            let of_type = |t: &str| {
                events
                    .clone()
                    .filter(col(schema::EVENT_TYPE).eq(lit(t.to_string())))
            };
            (
                count_by(events.clone(), schema::EVENT_TYPE).map_err(polars_err)?,
                count_by(of_type("click"), schema::JOURNEY).map_err(polars_err)?,
                count_by(of_type("click"), schema::CHAT_TYPE).map_err(polars_err)?,
                count_by(of_type("warning"), schema::WARNING_ACTION).map_err(polars_err)?,
            )
        };
    Ok(StoreSummary {
        store: name,
        generation: manifest.generation,
        runs: manifest.runs.len(),
        buckets: manifest.buckets,
        events: manifest.events,
        persons: manifest.persons,
        min_ts: manifest.min_ts.clone(),
        max_ts: manifest.max_ts.clone(),
        ingested: manifest.totals.clone(),
        by_event_type,
        clicks_by_journey,
        clicks_by_chat_type,
        warnings_by_action,
    })
}

/// All bucket files of the generation, as one lazy frame.
fn scan_events(dir: &Path, manifest: &Manifest) -> PolarsResult<LazyFrame> {
    let paths: Vec<PlRefPath> = manifest
        .event_files
        .iter()
        .map(|f| PlRefPath::new(dir.join(&f.path).to_string_lossy().as_ref()))
        .collect();
    let args = ScanArgsParquet {
        allow_missing_columns: true,
        hive_options: HiveOptions::new_disabled(),
        ..Default::default()
    };
    LazyFrame::scan_parquet_files(paths.into(), args)
}

fn count_by(lf: LazyFrame, column: &str) -> PolarsResult<Vec<CountRow>> {
    let df = lf
        .group_by([col(column)])
        .agg([
            len().alias("events"),
            col(schema::PERSON_ID).n_unique().alias("persons"),
        ])
        .sort(
            [column],
            SortMultipleOptions::default().with_nulls_last(true),
        )
        .collect()?;
    let values = df.column(column)?.str()?.clone();
    let events = df.column("events")?.cast(&DataType::UInt64)?;
    let persons = df.column("persons")?.cast(&DataType::UInt64)?;
    let (events, persons) = (events.u64()?, persons.u64()?);
    Ok((0..df.height())
        .map(|i| CountRow {
            value: values.get(i).map(str::to_string),
            events: events.get(i).unwrap_or(0),
            persons: persons.get(i).unwrap_or(0),
        })
        .collect())
}
