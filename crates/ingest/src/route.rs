//! Phase 4 of a run: each accepted row to its person's bucket.
//!
//! Once every accepted login has been linked (phase 2), the identity gives each row's person:
//! the smallest id of its group of linked ids, or its user_id when it was never linked. The
//! valid rows are read back whole, once, segment by segment in read order, with their phase-2
//! verdicts: new rows go to the spill partition of their person's bucket, with person_id filled
//! in; conflicting rows go to the quarantine (in read order); duplicates are gone, and a
//! segment of duplicates only (a re-ingest) is not read at all. The property names met join the
//! store's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::array::{BooleanArray, RecordBatch, StringArray, StringBuilder};
use arrow::compute::{concat_batches, filter_record_batch};
use funnel_core::bucket_of;

use crate::IngestError;
use crate::batch::{Cols, property_keys, with_persons, work_schema};
use crate::dedup::{Verdict, Verdicts, conflict_row};
use crate::identity::Identity;
use crate::parallel::map_ordered;
use crate::read::InputSpec;
use crate::spill::{Segment, Spill, read_spill};
use crate::store::{QuarantineRow, QuarantineWriter};

/// What phase 4 reads.
pub(crate) struct Route<'a> {
    pub run: u64,
    pub files: &'a [InputSpec],
    pub scratch: &'a Path,
    pub buckets: u32,
    /// The run's valid rows in read order (phase 1), and their verdicts (phase 2).
    pub spilled: &'a [Segment],
    pub verdicts: &'a Verdicts,
    pub identity: &'a Identity,
    pub threads: usize,
}

/// A segment routed.
struct Routed {
    /// Its conflicts' quarantine rows, in read order.
    conflicts: Vec<QuarantineRow>,
    /// Its new rows, person_id filled in, and the bucket of each.
    batch: RecordBatch,
    parts: Vec<u32>,
    /// The property names of its new rows (found on the routing thread, not the consumer's).
    keys: BTreeSet<String>,
}

/// Routes the new rows into one spill partition per bucket; returns the partitions' paths.
pub(crate) fn route(
    r: Route<'_>,
    quarantine: &mut QuarantineWriter,
    properties: &mut BTreeSet<String>,
) -> Result<Vec<Option<PathBuf>>, IngestError> {
    let mut by_bucket = Spill::new(r.scratch, "by-bucket", r.buckets as usize, work_schema())?;
    let threads = r.threads.max(1);
    for chunk in r.spilled.chunks(threads) {
        let routed = map_ordered(chunk.iter().collect(), threads, |s| route_segment(&r, s));
        for segment in routed {
            let Some(Routed {
                conflicts,
                batch,
                parts,
                keys,
            }) = segment?
            else {
                continue;
            };
            for q in conflicts {
                quarantine.push(q)?;
            }
            properties.extend(keys);
            by_bucket.push_rows(&batch, &parts)?;
        }
    }
    by_bucket.finish()
}

/// Reads one segment (deleting it) and routes its rows by their verdicts; `None` when it holds
/// only duplicates.
fn route_segment(r: &Route<'_>, s: &Segment) -> Result<Option<Routed>, IngestError> {
    if !r.verdicts.any_kept(s.first, s.rows) {
        std::fs::remove_file(&s.path)
            .map_err(|e| IngestError::store(&s.path, format!("spill: {e}")))?;
        return Ok(None);
    }
    let err = |e: arrow::error::ArrowError| IngestError::store(&s.path, format!("spill: {e}"));
    let mut conflicts = Vec::new();
    let mut new = Vec::new();
    let mut ord = s.first;
    // Each batch is dropped once filtered: a segment is in memory about twice at most.
    read_spill(&s.path, |batch| {
        let verdicts: Vec<Verdict> = (ord..ord + batch.num_rows() as u64)
            .map(|o| r.verdicts.get(o))
            .collect();
        ord += batch.num_rows() as u64;
        conflicts.extend(
            verdicts
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == Verdict::Conflict)
                .map(|(i, _)| conflict_row(r.run, r.files, &batch, i)),
        );
        let keep: BooleanArray = verdicts.iter().map(|v| Some(*v == Verdict::New)).collect();
        new.push(filter_record_batch(&batch, &keep).map_err(err)?);
        Ok(())
    })?;
    if ord != s.first + s.rows {
        return Err(IngestError::store(
            &s.path,
            "spill: read back other rows than written",
        ));
    }
    // The segment's new rows as one batch: split among the buckets, a spilled batch is cut
    // into one slice per bucket, so small batches would make slices of a row or two.
    let new = concat_batches(&work_schema(), &new).map_err(err)?;
    let (persons, parts) = persons(&new, r.identity, r.buckets);
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    property_keys(&new, |k| {
        keys.insert(k);
    });
    let keys = keys.into_iter().map(str::to_string).collect();
    Ok(Some(Routed {
        conflicts,
        batch: with_persons(&new, persons),
        parts,
        keys,
    }))
}

/// The person of each row of a batch, and its bucket. Rows of one user often follow each
/// other, so the last answer is kept.
fn persons(batch: &RecordBatch, identity: &Identity, buckets: u32) -> (StringArray, Vec<u32>) {
    let users = Cols::of(batch).user_id;
    let mut persons = StringBuilder::with_capacity(batch.num_rows(), users.value_data().len());
    let mut parts = Vec::with_capacity(batch.num_rows());
    let mut last: Option<(&str, &str, u32)> = None;
    for i in 0..batch.num_rows() {
        let user = users.value(i);
        let (person, bucket) = match last {
            Some((u, p, b)) if u == user => (p, b),
            _ => {
                let p = identity.person_of(user);
                let b = bucket_of(p, buckets);
                last = Some((user, p, b));
                (p, b)
            }
        };
        parts.push(bucket);
        persons.append_value(person);
    }
    (persons.finish(), parts)
}
