//! Phase 2 of a run: deduplication against the store's event-id index.
//!
//! Valid rows arrive partitioned by event_id (the partitions of the id index). Partition by
//! partition, in read order, a row whose event_id is new is accepted; one whose event_id was
//! accepted before (in the store or earlier in this run) with the same content hash is a
//! duplicate, counted and dropped; one with another content hash is a `duplicate_conflict`
//! (quarantined with the event as normalised when the rows are routed, phase 4). The first
//! accepted row of an event_id always wins, so re-ingesting an export adds nothing.
//!
//! Phase 1 spills only the key columns of each row here ([`keys`]: ids, type, time, file and
//! the row's ordinal in the run); the whole rows stay in read order in a sequence spill. The
//! phase yields a verdict per ordinal ([`Verdicts`]), and routing reads the whole rows once,
//! in order, with them. Ids are compared as text: a partition's stored ids and the run's rows are
//! borrowed from their Arrow batches into one hash table, so there is no hash collision to
//! resolve (two ids are one only when their bytes are equal). The partition's new index is the
//! sorted union.
//!
//! Each accepted login links its user_id and account_id in the identity, in partition then
//! read order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimestampMillisecondType, UInt32Type, UInt64Type,
};
use funnel_core::{FileSum, IdFile, InputFile, RejectReason, StoreLayout};
use hashbrown::HashMap;

use crate::IngestError;
use crate::batch::{Cols, col, event_at, work_schema};
use crate::identity::{Identity, linked_account};
use crate::integrity::Inventory;
use crate::parallel::map_ordered;
use crate::read::{Format, InputSpec};
use crate::spill::read_spill;
use crate::store::{QuarantineRow, read_ids, write_ids};

/// The columns of a row phase 2 reads, by work-schema position, then the row's ordinal;
/// `key::*` are their positions in a key batch.
const KEY_COLUMNS: [usize; 7] = [
    col::EVENT_ID,
    col::USER_ID,
    col::EVENT_TYPE,
    col::TS,
    col::ACCOUNT_ID,
    col::CONTENT_HASH,
    col::FILE,
];

mod key {
    pub const EVENT_ID: usize = 0;
    pub const USER_ID: usize = 1;
    pub const EVENT_TYPE: usize = 2;
    pub const TS: usize = 3;
    pub const ACCOUNT_ID: usize = 4;
    pub const CONTENT_HASH: usize = 5;
    pub const FILE: usize = 6;
    pub const ORDINAL: usize = 7;
}

static KEY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let work = work_schema();
    let mut fields: Vec<Field> = KEY_COLUMNS.iter().map(|&c| work.field(c).clone()).collect();
    fields.push(Field::new("_ordinal", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
});

/// The schema of the key batches phase 1 spills for this phase.
pub(crate) fn key_schema() -> SchemaRef {
    KEY_SCHEMA.clone()
}

/// The key columns of a work batch whose rows have ordinals `first..`.
pub(crate) fn keys(batch: &RecordBatch, first: u64) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = KEY_COLUMNS
        .iter()
        .map(|&c| batch.column(c).clone())
        .collect();
    let n = batch.num_rows() as u64;
    cols.push(Arc::new(UInt64Array::from_iter_values(first..first + n)));
    RecordBatch::try_new(key_schema(), cols).expect("key columns of a work batch")
}

/// What phase 2 reads.
pub(crate) struct Dedup<'a> {
    pub generation: u64,
    pub gen_dir: &'a Path,
    /// The committed generation's id index, by partition.
    pub old_ids: &'a BTreeMap<u32, IdFile>,
    /// The keys of this run's valid rows, by partition (phase 1).
    pub spilled: &'a [Option<PathBuf>],
    /// Valid rows read (their ordinals are `0..rows`).
    pub rows: u64,
}

/// Where phase 2's outcomes go.
pub(crate) struct Outcomes<'a> {
    pub inventory: &'a mut Inventory,
    pub identity: &'a mut Identity,
    /// Per input file: its counts of stored, duplicate and conflicting rows grow.
    pub inputs: &'a mut [InputFile],
}

/// A row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    New = 0,
    Duplicate = 1,
    Conflict = 2,
}

/// Every row's verdict, by ordinal: two bits a row (25 MB for 100M rows).
#[derive(Debug)]
pub(crate) struct Verdicts {
    bits: Vec<u64>,
}

impl Verdicts {
    /// `rows` verdicts, all [`Verdict::New`].
    pub fn new(rows: u64) -> Verdicts {
        Verdicts {
            bits: vec![0; rows.div_ceil(32) as usize],
        }
    }

    fn set(&mut self, ord: u64, v: Verdict) {
        let (word, shift) = ((ord / 32) as usize, (ord % 32) * 2);
        self.bits[word] = self.bits[word] & !(3 << shift) | (v as u64) << shift;
    }

    pub fn get(&self, ord: u64) -> Verdict {
        match self.bits[(ord / 32) as usize] >> ((ord % 32) * 2) & 3 {
            0 => Verdict::New,
            1 => Verdict::Duplicate,
            _ => Verdict::Conflict,
        }
    }

    /// Whether any row of `first..first + rows` is not a duplicate (routing has work there).
    pub fn any_kept(&self, first: u64, rows: u64) -> bool {
        (first..first + rows).any(|ord| self.get(ord) != Verdict::Duplicate)
    }
}

/// The verdicts of a spilled partition's rows: one list per key batch, in order.
type PartVerdicts = Vec<Vec<Verdict>>;

/// What phase 2 found.
pub(crate) struct Deduplicated {
    /// The new generation's id index.
    pub id_files: Vec<IdFile>,
    /// Range of the accepted rows' timestamps (`MAX..MIN` when none).
    pub min_ts: i64,
    pub max_ts: i64,
    pub verdicts: Verdicts,
}

/// One partition, judged: its key batches with each row's verdict, and its new id index
/// (already written) when any row was new.
struct Judged {
    batches: Vec<RecordBatch>,
    verdicts: PartVerdicts,
    index: Option<(String, FileSum, u64)>,
}

/// Deduplicates every partition. Partitions are judged a few at a time on `threads` threads
/// (reading, the hash table and the new index are the work); their outcomes are then applied in
/// partition order, so counts and identity are as a sequential run makes them.
pub(crate) fn deduplicate(
    d: &Dedup<'_>,
    o: Outcomes<'_>,
    threads: usize,
) -> Result<Deduplicated, IngestError> {
    let mut id_files = Vec::new();
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let mut verdicts_of = Verdicts::new(d.rows);
    // Every ordinal must be judged once: an ordinal left unset would be routed as new.
    let mut judged_rows = 0u64;
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
            let Judged {
                batches,
                verdicts,
                index,
            } = judged?;
            for (b, verdicts) in batches.iter().zip(&verdicts) {
                let file = b.column(key::FILE).as_primitive::<UInt32Type>();
                let ts = b.column(key::TS).as_primitive::<TimestampMillisecondType>();
                let event_type = b.column(key::EVENT_TYPE).as_string::<i32>();
                let user = b.column(key::USER_ID).as_string::<i32>();
                let account = b.column(key::ACCOUNT_ID).as_string::<i32>();
                let ords = b.column(key::ORDINAL).as_primitive::<UInt64Type>();
                judged_rows += b.num_rows() as u64;
                for (i, &v) in verdicts.iter().enumerate() {
                    verdicts_of.set(ords.value(i), v);
                    let counts = &mut o.inputs[file.value(i) as usize].counts;
                    match v {
                        Verdict::Duplicate => counts.rows_duplicate += 1,
                        Verdict::Conflict => {
                            counts.reject(RejectReason::DuplicateConflict.as_str());
                        }
                        Verdict::New => {
                            counts.rows_stored += 1;
                            min_ts = min_ts.min(ts.value(i));
                            max_ts = max_ts.max(ts.value(i));
                            let account = account.is_valid(i).then(|| account.value(i));
                            if let Some(a) = linked_account(event_type.value(i), account) {
                                o.identity.link(user.value(i), a);
                            }
                        }
                    }
                }
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
    if judged_rows != d.rows {
        let at = d
            .spilled
            .iter()
            .flatten()
            .next()
            .map_or(d.gen_dir, |p| p.as_path());
        return Err(IngestError::store(
            at,
            format!("spill: {judged_rows} rows judged of {} read", d.rows),
        ));
    }
    id_files.sort_by_key(|f| f.partition);
    Ok(Deduplicated {
        id_files,
        min_ts,
        max_ts,
        verdicts: verdicts_of,
    })
}

/// Judges partition `p` (its rows spilled at `path`) against its stored index, in read order,
/// and writes its new index when any row is new.
fn judge(d: &Dedup<'_>, inventory: &Inventory, p: u32, path: &Path) -> Result<Judged, IngestError> {
    let stored_ids = match d.old_ids.get(&p) {
        Some(f) => read_ids(&inventory.reread(&f.path, Some(f.rows))?)?,
        None => Vec::new(),
    };
    let mut batches = Vec::new();
    read_spill(path, |b| {
        batches.push(b);
        Ok(())
    })?;
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
        let ids = b.column(key::EVENT_ID).as_string::<i32>();
        let hashes = b.column(key::CONTENT_HASH).as_primitive::<UInt64Type>();
        let v: Vec<Verdict> = (0..b.num_rows())
            .map(|i| {
                let (id, hash) = (ids.value(i), hashes.value(i));
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
        batches,
        verdicts,
        index,
    })
}

/// The quarantine row of a `duplicate_conflict`: row `i` of a whole work batch, as normalised.
pub(crate) fn conflict_row(
    run: u64,
    files: &[InputSpec],
    batch: &RecordBatch,
    i: usize,
) -> QuarantineRow {
    let c = Cols::of(batch);
    let file = c.file.value(i) as usize;
    QuarantineRow {
        run,
        source_file: Arc::from(c.source_file.value(i)),
        line: (files[file].format != Format::Parquet).then_some(c.source_line.value(i)),
        row: c.row.value(i),
        reason: RejectReason::DuplicateConflict.as_str(),
        field: Some(funnel_core::schema::EVENT_ID.to_string()),
        value: Some(c.event_id.value(i).to_string()),
        message: funnel_core::rules::CONFLICT_MESSAGE.into(),
        raw: event_at(batch, i).to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_keep_two_bits_per_ordinal() {
        let n = 1_000u64;
        let mut v = Verdicts::new(n);
        let of = |o: u64| match o % 7 {
            0 | 3 => Verdict::Conflict,
            1 | 4 | 5 => Verdict::Duplicate,
            _ => Verdict::New,
        };
        // Set twice, out of order, so that a later set overwrites both bits.
        for o in (0..n).rev() {
            v.set(o, Verdict::Conflict);
        }
        for o in 0..n {
            v.set(o, of(o));
        }
        assert!((0..n).all(|o| v.get(o) == of(o)));
        let mut d = Verdicts::new(100);
        (0..100).for_each(|o| d.set(o, Verdict::Duplicate));
        assert!(!d.any_kept(0, 100));
        d.set(63, Verdict::New);
        assert!(d.any_kept(32, 32) && !d.any_kept(0, 63) && !d.any_kept(64, 36));
    }
}
