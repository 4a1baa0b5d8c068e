//! Phase 2 of a run: deduplication against the store's event-id index.
//!
//! Valid rows arrive partitioned by event_id (the partitions of the id index). Partition by
//! partition, in read order, a row whose event_id is new is accepted; one whose event_id was
//! accepted before (in the store or earlier in this run) with the same content hash is a
//! duplicate, counted and dropped; one with another content hash is a `duplicate_conflict`,
//! quarantined with the event as normalised. The first accepted row of an event_id always wins,
//! so re-ingesting an export adds nothing.
//!
//! Ids are compared as text: a partition's stored ids and the run's rows are borrowed from
//! their Arrow batches into one hash table, so there is no hash collision to resolve (two ids
//! are one only when their bytes are equal). The partition's new index is the sorted union.
//!
//! Each accepted login links its user_id and account_id in the identity as it is accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::UInt64Type;
use funnel_core::{FileSum, IdFile, InputFile, RejectReason, StoreLayout};
use hashbrown::HashMap;

use crate::IngestError;
use crate::batch::{Cols, event_at};
use crate::identity::Identity;
use crate::integrity::Inventory;
use crate::parallel::map_ordered;
use crate::read::{Format, InputSpec};
use crate::spill::{Spill, read_spill_all};
use crate::store::{QuarantineRow, QuarantineWriter, read_ids, write_ids};

/// What phase 2 reads.
pub(crate) struct Dedup<'a> {
    pub run: u64,
    pub generation: u64,
    pub gen_dir: &'a Path,
    /// The committed generation's id index, by partition.
    pub old_ids: &'a BTreeMap<u32, IdFile>,
    /// This run's valid rows, by partition (phase 1).
    pub spilled: &'a [Option<PathBuf>],
    /// This run's input files, by index.
    pub files: &'a [InputSpec],
}

/// Where phase 2's outcomes go.
pub(crate) struct Outcomes<'a, 'b> {
    pub inventory: &'a mut Inventory<'b>,
    pub identity: &'a mut Identity,
    pub quarantine: &'a mut QuarantineWriter,
    /// Per input file: its counts of stored, duplicate and conflicting rows grow.
    pub inputs: &'a mut [InputFile],
    /// The accepted rows, in partition then read order.
    pub accepted: &'a mut Spill,
}

/// What phase 2 found.
pub(crate) struct Deduplicated {
    /// The new generation's id index.
    pub id_files: Vec<IdFile>,
    /// Range of the accepted rows' timestamps (`MAX..MIN` when none).
    pub min_ts: i64,
    pub max_ts: i64,
}

/// A row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    New,
    Duplicate,
    Conflict,
}

/// One partition, judged: its batches with each row's verdict, and its new id index (already
/// written) when any row was new.
struct Judged {
    batches: Vec<(RecordBatch, Vec<Verdict>)>,
    index: Option<(String, FileSum, u64)>,
}

/// Deduplicates every partition. Partitions are judged a few at a time on `threads` threads
/// (reading, the hash table and the new index are the work); their outcomes are then applied in
/// partition order, so counts, quarantine and identity are as a sequential run makes them.
pub(crate) fn deduplicate(
    d: &Dedup<'_>,
    o: Outcomes<'_, '_>,
    threads: usize,
) -> Result<Deduplicated, IngestError> {
    let mut id_files = Vec::new();
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let mut todo = Vec::new();
    for (p, spilled) in d.spilled.iter().enumerate() {
        let p = p as u32;
        match spilled {
            Some(path) => todo.push((p, path.as_path())),
            None => {
                if let Some(f) = d.old_ids.get(&p) {
                    o.inventory.carry(&f.path, Some(f.rows))?;
                    id_files.push(f.clone());
                }
            }
        }
    }
    for chunk in todo.chunks(threads.max(1)) {
        let inventory = &*o.inventory;
        let judged = map_ordered(chunk.to_vec(), threads, |(p, path)| {
            judge(d, inventory, p, path)
        });
        for (&(p, _), judged) in chunk.iter().zip(judged) {
            let Judged { batches, index } = judged?;
            for (b, verdicts) in &batches {
                let c = Cols::of(b);
                let mut keep = BooleanBufferBuilder::new(b.num_rows());
                for (i, v) in verdicts.iter().enumerate() {
                    let file = c.file.value(i) as usize;
                    let counts = &mut o.inputs[file].counts;
                    keep.append(*v == Verdict::New);
                    match v {
                        Verdict::Duplicate => counts.rows_duplicate += 1,
                        Verdict::Conflict => {
                            counts.reject(RejectReason::DuplicateConflict.as_str());
                            o.quarantine.push(QuarantineRow {
                                run: d.run,
                                source_file: Arc::from(c.source_file.value(i)),
                                line: (d.files[file].format != Format::Parquet)
                                    .then_some(c.source_line.value(i)),
                                row: c.row.value(i),
                                reason: RejectReason::DuplicateConflict.as_str(),
                                field: Some(funnel_core::schema::EVENT_ID.to_string()),
                                value: Some(c.event_id.value(i).to_string()),
                                message: "event_id was already accepted with different content"
                                    .into(),
                                raw: event_at(b, i).to_json(),
                            })?;
                        }
                        Verdict::New => {
                            counts.rows_stored += 1;
                            let ts = c.ts.value(i);
                            min_ts = min_ts.min(ts);
                            max_ts = max_ts.max(ts);
                            if c.event_type.value(i) == "login" && c.account_id.is_valid(i) {
                                o.identity.link(c.user_id.value(i), c.account_id.value(i));
                            }
                        }
                    }
                }
                let keep = BooleanArray::new(keep.finish(), None);
                let kept = filter_record_batch(b, &keep)
                    .map_err(|e| IngestError::store(d.gen_dir, format!("spill: {e}")))?;
                o.accepted.push(0, kept)?;
            }
            match (index, d.old_ids.get(&p)) {
                (None, Some(f)) => {
                    o.inventory.carry(&f.path, Some(f.rows))?;
                    id_files.push(f.clone());
                }
                (None, None) => {}
                (Some((rel, sum, rows)), _) => {
                    o.inventory.wrote(&rel, sum);
                    id_files.push(IdFile {
                        partition: p,
                        path: rel,
                        rows,
                    });
                }
            }
        }
    }
    id_files.sort_by_key(|f| f.partition);
    Ok(Deduplicated {
        id_files,
        min_ts,
        max_ts,
    })
}

/// Judges partition `p` (its rows spilled at `path`) against its stored index, in read order,
/// and writes its new index when any row is new.
fn judge(
    d: &Dedup<'_>,
    inventory: &Inventory<'_>,
    p: u32,
    path: &Path,
) -> Result<Judged, IngestError> {
    let stored_ids = match d.old_ids.get(&p) {
        Some(f) => read_ids(&inventory.reread(&f.path, Some(f.rows))?)?,
        None => Vec::new(),
    };
    let batches = read_spill_all(path)?;
    let mut seen: HashMap<&str, u64> = HashMap::with_capacity_and_hasher(
        stored_ids
            .iter()
            .chain(&batches)
            .map(RecordBatch::num_rows)
            .sum(),
        Default::default(),
    );
    for b in &stored_ids {
        let (ids, hashes) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<UInt64Type>(),
        );
        for i in 0..b.num_rows() {
            seen.insert(ids.value(i), hashes.value(i));
        }
    }
    let mut added = false;
    let mut verdicts = Vec::with_capacity(batches.len());
    for b in &batches {
        let c = Cols::of(b);
        let v: Vec<Verdict> = (0..b.num_rows())
            .map(|i| {
                let (id, hash) = (c.event_id.value(i), c.content_hash.value(i));
                match seen.get(id) {
                    Some(&h) if h == hash => Verdict::Duplicate,
                    Some(_) => Verdict::Conflict,
                    None => {
                        seen.insert(id, hash);
                        added = true;
                        Verdict::New
                    }
                }
            })
            .collect();
        verdicts.push(v);
    }
    let index = if added {
        let mut ids: Vec<(&str, u64)> = seen.into_iter().collect();
        ids.sort_unstable();
        let rel = StoreLayout::id_file(p, d.generation);
        let sum = write_ids(&d.gen_dir.join(&rel), &ids)?;
        Some((rel, sum, ids.len() as u64))
    } else {
        drop(seen);
        None
    };
    Ok(Judged {
        batches: batches.into_iter().zip(verdicts).collect(),
        index,
    })
}
