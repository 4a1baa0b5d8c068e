//! The store's files written from another engine's rows: what a cluster ingest's workers write.
//!
//! A cluster ingest (`funnel ingest --engine spark`) decides on the cluster what each row
//! becomes: stored (with its person), rejected, or a duplicate. Its workers then write the new
//! generation's files with the writers of the embedded ingest, so that both engines write the
//! same bytes for the same content:
//!
//! - [`write_bucket_file`]: a bucket file, sorted by `(person_id, ts, event_id)`, in row groups
//!   that never split a person;
//! - [`write_id_file`]: a partition of the event-id index (event_id, content hash);
//! - [`RejectionWriter`]: a run's quarantine file (texts cut to the quarantine's limit here);
//! - [`LinkWriter`]: the identity file (id, person_id), in id order.
//!
//! Rows arrive as [`HandedEvent`]s and [`HandedRejection`]s (serde, from JSON lines). The
//! content hash is computed here ([`HandedEvent::content_hash`]), so the other engine never
//! needs the embedded ingest's hash function.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use funnel_core::schema::RejectReason;
use funnel_core::{EventFile, FileSum, IdFile, StoreLayout};
use serde::Deserialize;

use crate::IngestError;
use crate::batch::Builder;
use crate::event::Event;
use crate::store::{IdentityWriter, QuarantineRow, QuarantineWriter, write_ids};
use crate::write::sort_and_write;

/// A stored event as another engine hands it over: the normalised contract fields (the instant
/// in epoch milliseconds, the amount in units of 10^-4), its non-empty properties by store
/// column name, its person and its lineage. Absent optional fields are null or missing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedEvent {
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    pub ts_ms: i64,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub journey: Option<String>,
    #[serde(default)]
    pub chat_type: Option<String>,
    #[serde(default)]
    pub warning_action: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub amount_units: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub person_id: String,
    pub source_file: String,
    pub source_line: u64,
    pub run: u64,
}

impl HandedEvent {
    /// The event as the embedded ingest holds it; `Err` says which field breaks a rule of the
    /// store (an empty required text or property value, an empty person).
    fn event(&self) -> Result<Event<'_>, String> {
        fn optional(v: &Option<String>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        let required = [
            ("event_id", &self.event_id),
            ("user_id", &self.user_id),
            ("event_type", &self.event_type),
            ("person_id", &self.person_id),
        ];
        if let Some((name, _)) = required.iter().find(|(_, v)| v.is_empty()) {
            return Err(format!("{name} is empty"));
        }
        let optionals = [
            ("platform", &self.platform),
            ("journey", &self.journey),
            ("chat_type", &self.chat_type),
            ("warning_action", &self.warning_action),
            ("account_id", &self.account_id),
            ("order_id", &self.order_id),
            ("currency", &self.currency),
        ];
        if let Some((name, _)) = optionals.iter().find(|(_, v)| v.as_deref() == Some("")) {
            return Err(format!("{name} is empty (absent is null)"));
        }
        if let Some((k, _)) = self
            .properties
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            return Err(format!("property {k:?} has an empty name or value"));
        }
        let mut e = Event {
            event_id: Cow::Borrowed(&self.event_id),
            user_id: Cow::Borrowed(&self.user_id),
            event_type: Cow::Borrowed(&self.event_type),
            ts_ms: self.ts_ms,
            platform: optional(&self.platform),
            journey: optional(&self.journey),
            chat_type: optional(&self.chat_type),
            warning_action: optional(&self.warning_action),
            account_id: optional(&self.account_id),
            order_id: optional(&self.order_id),
            amount: self.amount_units,
            currency: optional(&self.currency),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            person_id: Cow::Borrowed(&self.person_id),
            content_hash: 0,
            source_file: Arc::from(self.source_file.as_str()),
            source_line: self.source_line,
            run: self.run,
            file: 0,
            row: 0,
        };
        e.content_hash = e.compute_content_hash();
        Ok(e)
    }

    /// The content hash the store keeps for the event (`_content_hash`, and the id index's).
    pub fn content_hash(&self) -> Result<u64, IngestError> {
        self.event()
            .map(|e| e.content_hash)
            .map_err(|m| handed(&self.event_id, m))
    }
}

fn handed(event_id: &str, message: String) -> IngestError {
    IngestError::InvalidOption {
        option: "handed event",
        value: event_id.to_string(),
        message,
    }
}

/// Writes `events` (every event of bucket `bucket`, in any order) as the bucket's file of
/// generation `generation` under `gen_dir`, with the property columns `properties` (sorted;
/// every property of an event must be among them) in row groups of about `row_group_rows`.
/// `None` when `events` is empty.
pub fn write_bucket_file(
    gen_dir: &Path,
    generation: u64,
    bucket: u32,
    properties: &[String],
    row_group_rows: usize,
    events: &[HandedEvent],
) -> Result<Option<(EventFile, FileSum)>, IngestError> {
    if !properties.is_sorted_by(|a, b| a < b) {
        return Err(IngestError::InvalidOption {
            option: "properties",
            value: format!("{properties:?}"),
            message: "must be sorted and distinct".into(),
        });
    }
    let mut builder = Builder::default();
    for h in events {
        let e = h.event().map_err(|m| handed(&h.event_id, m))?;
        if let Some(k) = e
            .properties
            .keys()
            .find(|k| properties.binary_search_by(|p| p.as_str().cmp(k)).is_err())
        {
            return Err(handed(
                &h.event_id,
                format!("property {k:?} is not a store column"),
            ));
        }
        builder.push(&e);
    }
    let batch = builder.finish();
    // The builder leaves person_id to routing; here every event has its own.
    let persons = arrow::array::StringArray::from_iter_values(events.iter().map(|e| &e.person_id));
    let batch: RecordBatch = crate::batch::with_persons(&batch, persons);
    sort_and_write(
        gen_dir,
        bucket,
        generation,
        batch,
        properties,
        row_group_rows.max(1),
    )
}

/// Writes partition `partition` of the event-id index of generation `generation` under
/// `gen_dir`: every `(event_id, content hash)` of the partition, in any order; an event_id
/// given twice is an error. `None` when `ids` is empty.
pub fn write_id_file(
    gen_dir: &Path,
    generation: u64,
    partition: u32,
    mut ids: Vec<(String, u64)>,
) -> Result<Option<(IdFile, FileSum)>, IngestError> {
    if ids.is_empty() {
        return Ok(None);
    }
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(handed(&w[0].0, "given twice to the id index".into()));
    }
    let rel = StoreLayout::id_file(partition, generation);
    let sum = write_ids(&gen_dir.join(&rel), &ids)?;
    Ok(Some((
        IdFile {
            partition,
            path: rel,
            rows: ids.len() as u64,
        },
        sum,
    )))
}

/// A quarantined row as another engine hands it over (the quarantine file's columns; `reason`
/// is one of the contract's rejection reasons).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedRejection {
    pub run: u64,
    pub source_file: String,
    pub line: Option<u64>,
    pub row: u64,
    pub reason: String,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
    pub raw: String,
}

/// Writes a run's quarantine file from rows in quarantine order; texts are cut to
/// [`crate::QUARANTINE_TEXT_BYTES`] as the embedded ingest's are.
pub struct RejectionWriter(QuarantineWriter);

impl std::fmt::Debug for RejectionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectionWriter").finish_non_exhaustive()
    }
}

impl RejectionWriter {
    pub fn new(path: PathBuf) -> RejectionWriter {
        RejectionWriter(QuarantineWriter::new(path))
    }

    pub fn push(&mut self, r: HandedRejection) -> Result<(), IngestError> {
        let Some(reason) = RejectReason::ALL.iter().find(|k| k.as_str() == r.reason) else {
            return Err(IngestError::InvalidOption {
                option: "handed rejection",
                value: r.reason,
                message: "is not a rejection reason".into(),
            });
        };
        self.0.push(QuarantineRow {
            run: r.run,
            source_file: Arc::from(r.source_file),
            line: r.line,
            row: r.row,
            reason: reason.as_str(),
            field: r.field,
            value: r.value,
            message: r.message,
            raw: r.raw,
        })
    }

    /// Closes the file: its size and sum, or `None` when no row was pushed (no file).
    pub fn finish(self) -> Result<Option<FileSum>, IngestError> {
        Ok(self.0.finish()?.map(|(_, sum)| sum))
    }
}

/// Writes the identity file from `(id, person_id)` links pushed in strictly increasing id
/// order (byte order).
pub struct LinkWriter {
    writer: IdentityWriter,
    last: Option<String>,
}

impl std::fmt::Debug for LinkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWriter")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl LinkWriter {
    pub fn new(path: PathBuf) -> LinkWriter {
        LinkWriter {
            writer: IdentityWriter::new(path),
            last: None,
        }
    }

    pub fn push(&mut self, id: &str, person_id: &str) -> Result<(), IngestError> {
        if self.last.as_deref().is_some_and(|l| l >= id) || id.is_empty() || person_id > id {
            return Err(IngestError::InvalidOption {
                option: "handed link",
                value: format!("{id:?} -> {person_id:?}"),
                message: "links come in increasing id order, each to a person no greater \
                          than its id"
                    .into(),
            });
        }
        self.last = Some(id.to_string());
        self.writer.push(id, person_id)
    }

    pub fn finish(self) -> Result<Option<FileSum>, IngestError> {
        Ok(self.writer.finish()?.map(|(_, sum)| sum))
    }
}
