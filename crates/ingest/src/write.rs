//! Phase 5 of a run: the new generation's bucket files.
//!
//! A bucket is *touched* when this run routed events to it, or when it holds events of a person
//! the run merged into another (their person_id changes, and they may move to the merged
//! person's bucket), or when it is the bucket of such a merged person. A touched bucket is
//! rewritten whole: its stored events (re-keyed to their merged person, less those that moved
//! away), the events that moved in, and the run's new events, sorted by
//! `(person_id, ts, event_id)` and written in row groups that never split a person. Untouched
//! buckets are carried over unchanged (hard links).
//!
//! Buckets are independent, so they are sorted and written on several threads at once; the
//! results are recorded in bucket order, so the outcome does not depend on the thread count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::{BooleanArray, RecordBatch, StringBuilder, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use funnel_core::{EventFile, FileSum, StoreLayout, bucket_of};

use crate::IngestError;
use crate::batch::{Cols, with_persons, work_schema};
use crate::identity::Merges;
use crate::integrity::Inventory;
use crate::parallel::map_ordered;
use crate::spill::read_spill_all;
use crate::store::{read_events, write_events};

/// Most buckets sorted and written at once: each holds about two copies of a bucket in memory
/// (its rows, then sorted), so this, not the core count, bounds the phase's memory.
const MAX_WRITERS: usize = 8;

/// What phase 5 needs from the run.
pub(crate) struct Buckets<'a> {
    pub buckets: u32,
    pub generation: u64,
    pub gen_dir: &'a Path,
    /// Old person_id -> new person_id, for every person this run merged into another.
    pub merges: &'a Merges<'a>,
    /// The committed generation's bucket files.
    pub old_files: &'a BTreeMap<u32, EventFile>,
    /// Each bucket's spill of this run's new events (routed by person).
    pub spilled: &'a [Option<PathBuf>],
    /// Property columns of the new generation (sorted).
    pub properties: &'a [String],
    pub row_group_rows: usize,
    /// Threads that sort and write buckets.
    pub threads: usize,
}

/// What phase 5 wrote.
pub(crate) struct Written {
    /// Every bucket file of the new generation, in bucket order.
    pub event_files: Vec<EventFile>,
    /// Stored persons whose person_id changed.
    pub merged_persons: BTreeSet<String>,
}

/// One touched bucket's inputs.
struct Job {
    bucket: u32,
    stored: Option<PathBuf>,
    moved_in: Vec<RecordBatch>,
    spilled: Option<PathBuf>,
}

/// A rewritten bucket: its file (none when it ended up empty) and the stored persons it
/// re-keyed.
type Done = (Option<(EventFile, FileSum)>, BTreeSet<String>);

/// Writes the touched buckets and carries the others into `inventory`.
pub(crate) fn write_buckets(
    b: &Buckets<'_>,
    inventory: &mut Inventory,
) -> Result<Written, IngestError> {
    let source_buckets: BTreeSet<u32> = b
        .merges
        .iter()
        .map(|(p, _)| bucket_of(p, b.buckets))
        .filter(|k| b.old_files.contains_key(k))
        .collect();
    let mut touched: BTreeSet<u32> = (0..b.buckets)
        .filter(|k| b.spilled[*k as usize].is_some())
        .collect();
    touched.extend(source_buckets.iter().copied());
    touched.extend(b.merges.iter().map(|(_, p)| bucket_of(p, b.buckets)));

    // Events of merged persons that move to another bucket.
    let mut moved_in: BTreeMap<u32, Vec<RecordBatch>> = BTreeMap::new();
    // A stored file is checked whole once, however often it is read.
    let mut checked: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for k in &source_buckets {
        let f = &b.old_files[k];
        let path = inventory.reread(&f.path, Some(f.rows))?;
        for batch in read_events(&path)? {
            for (to, moved) in rekey(b, &batch, *k)?.1 {
                moved_in.entry(to).or_default().push(moved);
            }
        }
        checked.insert(*k, path);
    }
    let mut jobs = Vec::new();
    let mut event_files = Vec::new();
    for k in 0..b.buckets {
        let old = b.old_files.get(&k);
        if !touched.contains(&k) {
            if let Some(f) = old {
                inventory.carry(&f.path, Some(f.rows))?;
                event_files.push(f.clone());
            }
            continue;
        }
        jobs.push(Job {
            bucket: k,
            stored: match (checked.remove(&k), old) {
                (Some(path), _) => Some(path),
                (None, Some(f)) => Some(inventory.reread(&f.path, Some(f.rows))?),
                (None, None) => None,
            },
            moved_in: moved_in.remove(&k).unwrap_or_default(),
            spilled: b.spilled[k as usize].clone(),
        });
    }

    let results = map_ordered(jobs, b.threads.clamp(1, MAX_WRITERS), |job| {
        write_bucket(b, job)
    });
    let mut merged_persons = BTreeSet::new();
    for result in results {
        let (file, merged) = result?;
        merged_persons.extend(merged);
        if let Some((file, sum)) = file {
            inventory.wrote(&file.path, sum);
            event_files.push(file);
        }
    }
    event_files.sort_by_key(|f| f.bucket);
    Ok(Written {
        event_files,
        merged_persons,
    })
}

fn store_err(path: &Path) -> impl Fn(arrow::error::ArrowError) -> IngestError + '_ {
    move |e| IngestError::store(path, e)
}

/// Sorts and writes one touched bucket.
fn write_bucket(b: &Buckets<'_>, job: Job) -> Result<Done, IngestError> {
    let path = b
        .gen_dir
        .join(StoreLayout::bucket_file(job.bucket, b.generation));
    let mut merged = BTreeSet::new();
    let mut parts = Vec::new();
    if let Some(stored) = &job.stored {
        for batch in read_events(stored)? {
            for p in Cols::of(&batch).person_id.iter().flatten() {
                if b.merges.contains_key(p) && !merged.contains(p) {
                    merged.insert(p.to_string());
                }
            }
            parts.push(rekey(b, &batch, job.bucket)?.0);
        }
    }
    parts.extend(job.moved_in);
    if let Some(spilled) = &job.spilled {
        parts.extend(read_spill_all(spilled)?);
    }
    let all = concat_batches(&work_schema(), &parts).map_err(store_err(&path))?;
    drop(parts);
    let file = sort_and_write(
        b.gen_dir,
        job.bucket,
        b.generation,
        all,
        b.properties,
        b.row_group_rows,
    )?;
    Ok((file, merged))
}

/// Sorts the events of bucket `bucket` (a work batch) by `(person_id, ts, event_id)` and writes
/// them as the bucket's file of generation `generation` under `gen_dir`; `None` when there are
/// none. Also the writer of the bucket files a cluster ingest's workers write (`handoff.rs`).
pub(crate) fn sort_and_write(
    gen_dir: &Path,
    bucket: u32,
    generation: u64,
    all: RecordBatch,
    properties: &[String],
    row_group_rows: usize,
) -> Result<Option<(EventFile, FileSum)>, IngestError> {
    let rel = StoreLayout::bucket_file(bucket, generation);
    let path = gen_dir.join(&rel);
    if all.num_rows() == 0 {
        return Ok(None);
    }
    // Sorted by index, then gathered once: (person_id, ts, event_id) is unique.
    let c = Cols::of(&all);
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    order.sort_unstable_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        (c.person_id.value(x), c.ts.value(x), c.event_id.value(x)).cmp(&(
            c.person_id.value(y),
            c.ts.value(y),
            c.event_id.value(y),
        ))
    });
    let sorted = take_record_batch(&all, &UInt32Array::from(order)).map_err(store_err(&path))?;
    drop(all);
    let sum = write_events(&path, properties, &sorted, row_group_rows)?;
    let c = Cols::of(&sorted);
    let n = sorted.num_rows();
    let persons = 1
        + (1..n)
            .filter(|&i| c.person_id.value(i) != c.person_id.value(i - 1))
            .count() as u64;
    let file = EventFile {
        bucket,
        path: rel,
        rows: n as u64,
        persons,
        min_ts_ms: arrow::compute::min(c.ts).unwrap_or_default(),
        max_ts_ms: arrow::compute::max(c.ts).unwrap_or_default(),
    };
    Ok(Some((file, sum)))
}

/// Stored events of bucket `bucket` re-keyed to their merged person: those staying in the
/// bucket, and those moving to another (with their new bucket).
fn rekey(
    b: &Buckets<'_>,
    batch: &RecordBatch,
    bucket: u32,
) -> Result<(RecordBatch, Vec<(u32, RecordBatch)>), IngestError> {
    let persons = Cols::of(batch).person_id;
    if b.merges.is_empty() || !persons.iter().flatten().any(|p| b.merges.contains_key(p)) {
        return Ok((batch.clone(), Vec::new()));
    }
    let mut new_persons = StringBuilder::new();
    let mut dest = Vec::with_capacity(batch.num_rows());
    for p in persons.iter().flatten() {
        let np = b.merges.get(p).unwrap_or(p);
        new_persons.append_value(np);
        dest.push(if np == p {
            bucket
        } else {
            bucket_of(np, b.buckets)
        });
    }
    let rekeyed = with_persons(batch, new_persons.finish());
    let err = store_err(b.gen_dir);
    let keep = |to: u32| -> Result<RecordBatch, IngestError> {
        let mask: BooleanArray = dest.iter().map(|d| Some(*d == to)).collect();
        filter_record_batch(&rekeyed, &mask).map_err(&err)
    };
    let others: BTreeSet<u32> = dest.iter().copied().filter(|d| *d != bucket).collect();
    let moved = others
        .into_iter()
        .map(|to| Ok((to, keep(to)?)))
        .collect::<Result<_, IngestError>>()?;
    Ok((keep(bucket)?, moved))
}
