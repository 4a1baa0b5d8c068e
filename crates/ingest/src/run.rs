//! One ingest run: read, validate, deduplicate, stitch, and commit a new store generation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use funnel_core::{Counts, EventFile, IdFile, InputFile, RunRecord, StoreLayout, bucket_of};
use sha2::{Digest, Sha256};

use arrow::array::RecordBatch;

use crate::IngestError;
use crate::batch::Builder;
use crate::batch::work_schema;
use crate::commit::{MAX_BUCKETS, NewGeneration, StoreRun};
use crate::dedup::{Dedup, Deduplicated, Outcomes, deduplicate, key_schema, keys};
use crate::identity::{Identity, RunIds, id_hash, linked_account};
use crate::normalize::{Lineage, Rejection, normalize};
use crate::parallel::threads;
use crate::parse_timezone;
use crate::read::{Discovered, Format, InputSpec, Item, Skipped, discover, read_file};
use crate::route::{Route, route};
use crate::spill::{Sequence, Spill};
use crate::store::{IdentityWriter, QuarantineRow, QuarantineWriter, ROW_GROUP_ROWS};
use crate::write::{Buckets, Written, write_buckets};

/// Options of `funnel ingest`.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub store: PathBuf,
    /// IANA zone in which timestamps without an offset are read.
    pub timezone: String,
    /// Largest accepted share of rejected rows (0..=1); above it nothing is committed.
    pub max_reject_rate: f64,
    /// Number of person buckets of a new store (an existing store keeps its own); `None`:
    /// 64, or more for large inputs, about one bucket per 250,000 rows.
    pub buckets: Option<u32>,
    /// Target rows of a row group of the bucket files written (row groups end where the person
    /// changes): the unit of work, and of memory, of the analysis.
    pub row_group_rows: usize,
    /// How long to wait for another ingest to release the store's lock.
    pub lock_timeout: Duration,
}

impl IngestOptions {
    pub fn new(store: impl Into<PathBuf>) -> IngestOptions {
        IngestOptions {
            store: store.into(),
            timezone: funnel_core::time::DEFAULT_TIMEZONE.into(),
            max_reject_rate: 1.0,
            buckets: None,
            row_group_rows: ROW_GROUP_ROWS,
            lock_timeout: Duration::from_secs(300),
        }
    }

    /// Checks the options (the same for every engine): the zone, which it returns, the reject
    /// rate, the row-group size and the bucket count.
    pub fn check(&self) -> Result<chrono_tz::Tz, IngestError> {
        let tz = parse_timezone(&self.timezone)?;
        if !(0.0..=1.0).contains(&self.max_reject_rate) {
            return Err(IngestError::InvalidOption {
                option: "--max-reject-rate",
                value: self.max_reject_rate.to_string(),
                message: "must be between 0 and 1".into(),
            });
        }
        if self.row_group_rows == 0 {
            return Err(IngestError::InvalidOption {
                option: "--row-group-rows",
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(b) = self.buckets.filter(|b| !(1..=MAX_BUCKETS).contains(b)) {
            return Err(IngestError::InvalidOption {
                option: "--buckets",
                value: b.to_string(),
                message: format!("must be between 1 and {MAX_BUCKETS}"),
            });
        }
        Ok(tz)
    }
}

/// Rows between two progress reports.
const PROGRESS_ROWS: u64 = 65_536;

/// Progress notifications, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Another ingest holds the store's lock; this one waits for it, up to `timeout`.
    WaitingForLock { store: &'a Path, timeout: Duration },
    /// Reading of file `index` (0-based) of `total` starts.
    File {
        path: &'a Path,
        index: usize,
        total: usize,
        bytes: u64,
    },
    /// Rows read so far in the run.
    Rows(u64),
    /// All input read; writing the new generation.
    Committing,
    /// A step of a cluster ingest is done (`funnel ingest --engine spark`: "read", "dedup", ...).
    Step(&'a str),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub store: PathBuf,
    pub committed: bool,
    /// The store generation now current (unchanged when nothing was committed).
    pub generation: u64,
    pub run: RunRecord,
    /// Paths met in the inputs that were not read, and why (unsupported extension, hidden,
    /// not a regular file, a symlink loop, a store, the same file named again).
    pub skipped: Vec<Skipped>,
    /// Where this run's rejected rows can be inspected.
    pub quarantine_path: Option<PathBuf>,
    pub events_in_store: u64,
    pub persons_in_store: u64,
}

impl IngestReport {
    pub fn rejected_share(&self) -> f64 {
        let c = &self.run.counts;
        if c.rows_read == 0 {
            0.0
        } else {
            c.rows_rejected as f64 / c.rows_read as f64
        }
    }
}

/// Loads `inputs` into the store. See the crate docs for what happens to each row.
///
/// The run goes in phases (rows travel between them as Arrow work batches, `batch.rs`), each
/// holding at most a few partitions or segments in memory (plus the identity map of linked ids
/// and two bits of verdict per row):
/// 1. read and validate every row, in sorted path then file order (several files at once on
///    worker threads); rejected rows stream to the quarantine; valid ones are spilled whole in
///    read order (a sequence, each row known by its ordinal), and their key columns to spill
///    partitions by event_id;
/// 2. dedup (`dedup.rs`): per event_id partition, a verdict per row against the store's id
///    index and the run so far, in read order; the partition's new id index; the links of
///    accepted logins join the stored links in the identity map;
/// 3. identity: which persons this run merges;
/// 4. route (`route.rs`): the whole rows once more, in read order: new rows to their person's
///    bucket spill, conflicts to the quarantine;
/// 5. write (`write.rs`): per touched bucket, stored events (re-keyed where persons merged) plus
///    new ones, sorted, written; untouched buckets are hard links; then the manifest, and the
///    switch of `current`.
pub fn ingest(
    opts: &IngestOptions,
    inputs: &[PathBuf],
    progress: &dyn Fn(Progress<'_>),
) -> Result<IngestReport, IngestError> {
    let tz = opts.check()?;
    let trace = Trace::new();
    let tr = |what: &str| trace.mark(what);
    let Discovered { files, skipped } = discover(inputs, &opts.store)?;

    // Locks the store, opens (and leases) its committed generation, creates the scratch space
    // and the new generation's directory; whatever ends the run removes what it began.
    let sized: Vec<(&Path, bool)> = files
        .iter()
        .map(|f| (f.path.as_path(), f.gzip || f.format == Format::Parquet))
        .collect();
    let mut store = StoreRun::begin(opts, &sized, progress)?;
    let manifest = store.manifest().clone();
    let run_no = store.run();
    let buckets = manifest.buckets;
    let scratch = store.scratch_dir();
    let mut quarantine = QuarantineWriter::new(scratch.join("quarantine.parquet"));

    // Phase 1: read and validate. Files are parsed and validated on worker threads (several
    // files at once), and their rows consumed here strictly in file order, so the outcome is
    // the same as reading one file after another.
    // The valid rows whole, in read order; their keys by event_id partition, for phase 2.
    let mut rows = Sequence::new(&scratch, "rows", work_schema())?;
    let mut by_id = Spill::new(&scratch, "keys-by-id", buckets as usize, key_schema())?;
    let mut input_records = Vec::with_capacity(files.len());
    let mut rows_total = 0u64;
    // The ids this run meets, to load only their part of a stored identity; more distinct ids
    // than a quarter of the stored persons, and every stored link is loaded.
    let mut run_ids = RunIds::new(
        manifest.identity_file.is_some(),
        (manifest.persons / 4) as usize,
    );
    let want_ids = AtomicBool::new(manifest.identity_file.is_some());
    let workers = threads().clamp(1, 4).min(files.len().max(1));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..files.len())
        .map(|_| std::sync::mpsc::sync_channel::<Parsed>(PIPELINE_DEPTH))
        .unzip();
    // Workers take files from this queue in order, each with the sender of its channel.
    let queue = std::sync::Mutex::new(files.iter().zip(senders).enumerate());
    std::thread::scope(|scope| -> Result<(), IngestError> {
        // The receivers live in this closure: if it returns early, they are dropped before the
        // workers are joined, and a worker blocked on a full channel stops.
        let receivers = receivers;
        let (queue, tz, want_ids) = (&queue, &tz, &want_ids);
        for _ in 0..workers {
            scope.spawn(move || {
                loop {
                    let next = queue.lock().expect("file queue").next();
                    let Some((i, (spec, tx))) = next else { break };
                    parse_one(spec, i as u32, run_no, tz, buckets, want_ids, &tx);
                }
            });
        }
        for (index, (spec, rx)) in files.iter().zip(receivers).enumerate() {
            let mut counts = Counts::default();
            let mut size = (0, String::new());
            for parsed in rx {
                match parsed {
                    Parsed::Hashed(bytes, sha256) => {
                        progress(Progress::File {
                            path: &spec.path,
                            index,
                            total: files.len(),
                            bytes,
                        });
                        size = (bytes, sha256);
                    }
                    Parsed::Rows {
                        read,
                        events,
                        rejected,
                        ids,
                    } => {
                        if !run_ids.extend(&ids) {
                            want_ids.store(false, Ordering::Relaxed);
                        }
                        if (rows_total + read) / PROGRESS_ROWS != rows_total / PROGRESS_ROWS {
                            progress(Progress::Rows(rows_total + read));
                        }
                        rows_total += read;
                        counts.rows_read += read;
                        for q in rejected {
                            counts.reject(q.reason);
                            quarantine.push(q)?;
                        }
                        if let Some((batch, parts)) = events {
                            let first = rows.push(&batch)?;
                            by_id.push_rows(&keys(&batch, first), &parts)?;
                        }
                    }
                    Parsed::Failed(e) => return Err(e),
                }
            }
            input_records.push(InputFile {
                path: spec.path.display().to_string(),
                format: spec.format.name().to_string(),
                gzip: spec.gzip,
                bytes: size.0,
                sha256: size.1,
                counts,
            });
        }
        Ok(())
    })?;
    progress(Progress::Rows(rows_total));
    progress(Progress::Committing);
    let valid_rows = rows.rows();
    let rows = rows.finish()?;
    let by_id = by_id.finish()?;
    tr("phase 1 read");

    // Phase 2: deduplicate, partition by partition; the new id index goes to the new generation.
    let generation = store.generation();
    let gen_dir = store.gen_dir().to_path_buf();
    // Every file taken from the committed generation is checked against its manifest first.
    let inventory = store.inventory();
    let old_ids: BTreeMap<u32, IdFile> = manifest
        .id_files
        .iter()
        .map(|f| (f.partition, f.clone()))
        .collect();
    // Identity: the stored links of the ids this run meets, then each accepted login's link as
    // it is accepted.
    let mut identity = Identity::default();
    // The stored file is merged into the new identity only where the run held part of it.
    let partly_loaded = match &manifest.identity_file {
        Some(f) => {
            let path = inventory.reread(f, None)?;
            let wanted = run_ids.finish();
            identity.load_stored(&path, wanted.as_ref())?;
            wanted.is_some().then_some(path)
        }
        None => None,
    };
    let Deduplicated {
        id_files,
        min_ts,
        max_ts,
        verdicts,
    } = deduplicate(
        &Dedup {
            generation,
            gen_dir: &gen_dir,
            old_ids: &old_ids,
            spilled: &by_id,
            rows: valid_rows,
        },
        Outcomes {
            inventory: &mut *inventory,
            identity: &mut identity,
            inputs: &mut input_records,
        },
        threads(),
    )?;
    tr(&format!(
        "phase 2 dedup (identity: {} linked ids, {:.1} MiB)",
        identity.len(),
        identity.heap_bytes() as f64 / (1 << 20) as f64
    ));

    // Phase 3: identity (loaded, and linked in phase 2): which persons this run merges.
    identity.settle();
    let merges = identity.merges();

    // Phase 4: new rows to their person's bucket, conflicts to the quarantine.
    let mut properties: BTreeSet<String> = manifest.properties.iter().cloned().collect();
    let by_bucket = route(
        Route {
            run: run_no,
            files: &files,
            scratch: &scratch,
            buckets,
            spilled: &rows,
            verdicts: &verdicts,
            identity: &identity,
            threads: threads(),
        },
        &mut quarantine,
        &mut properties,
    )?;
    tr("phase 4 route");
    let properties: Vec<String> = properties.into_iter().collect();

    let mut run = store.record(
        opts,
        input_records,
        (min_ts <= max_ts).then_some((min_ts, max_ts)),
    );
    debug_assert!(run.counts.reconciles());
    let quarantined = quarantine.finish()?;
    let report = store.admit(
        opts,
        &run,
        skipped,
        quarantined.as_ref().map(|(q, _)| q.as_path()),
    )?;

    // Phase 5: rewrite touched buckets.
    let old_files: BTreeMap<u32, EventFile> = manifest
        .event_files
        .iter()
        .map(|f| (f.bucket, f.clone()))
        .collect();
    let Written {
        event_files,
        merged_persons,
    } = write_buckets(
        &Buckets {
            buckets,
            generation,
            gen_dir: &gen_dir,
            merges: &merges,
            old_files: &old_files,
            spilled: &by_bucket,
            properties: &properties,
            row_group_rows: opts.row_group_rows,
            threads: threads(),
        },
        store.inventory(),
    )?;
    run.persons_merged = merged_persons.len() as u64;
    tr("phase 5 write");

    let mut writer = IdentityWriter::new(gen_dir.join(StoreLayout::IDENTITY_FILE));
    identity.write_with_stored(&merges, partly_loaded.as_deref(), &mut writer)?;
    let identity_sum = writer.finish()?.map(|(_, sum)| sum);
    let report = store.commit(
        NewGeneration {
            run,
            properties,
            event_files,
            id_files,
            identity: identity_sum,
            quarantine: quarantined,
        },
        report,
    )?;
    tr("commit");
    Ok(report)
}

/// Rows per message from a parsing worker, and messages a file may have in flight.
const PIPELINE_BATCH: usize = 8192;
const PIPELINE_DEPTH: usize = 4;

/// What a parsing worker sends for one file, in order: its size and hash, rows, and at the end
/// nothing (the channel closes) or the error that stopped it.
enum Parsed {
    Hashed(u64, String),
    /// `read` rows: the valid ones as a work batch with each row's event_id partition (phase 2
    /// may still find a row a duplicate or a conflict), the rejected ones for the quarantine.
    Rows {
        read: u64,
        events: Option<(RecordBatch, Vec<u32>)>,
        rejected: Vec<QuarantineRow>,
        /// The [`id_hash`] of the valid rows' user ids and logins' account ids (sorted, no
        /// repeats), when the store has an identity to load them from.
        ids: Vec<u64>,
    },
    Failed(IngestError),
}

/// The rows a parsing worker has not sent yet.
#[derive(Default)]
struct Pending {
    read: u64,
    events: Builder,
    parts: Vec<u32>,
    rejected: Vec<QuarantineRow>,
    ids: Vec<u64>,
}

impl Pending {
    fn take(&mut self) -> Parsed {
        let events = (self.events.len() > 0)
            .then(|| (self.events.finish(), std::mem::take(&mut self.parts)));
        let mut ids = std::mem::take(&mut self.ids);
        ids.sort_unstable();
        ids.dedup();
        Parsed::Rows {
            read: std::mem::take(&mut self.read),
            events,
            rejected: std::mem::take(&mut self.rejected),
            ids,
        }
    }

    /// Sends the rows once there are enough; `Cancelled` when the consumer has gone.
    fn flush(&mut self, tx: &std::sync::mpsc::SyncSender<Parsed>) -> Result<(), IngestError> {
        if self.read as usize >= PIPELINE_BATCH {
            tx.send(self.take()).map_err(|_| IngestError::Cancelled)?;
        }
        Ok(())
    }
}

/// Parses and validates one file into `tx`. Stops quietly when the receiver is gone.
fn parse_one(
    spec: &InputSpec,
    file: u32,
    run: u64,
    tz: &chrono_tz::Tz,
    partitions: u32,
    want_ids: &AtomicBool,
    tx: &std::sync::mpsc::SyncSender<Parsed>,
) {
    match hash_file(&spec.path) {
        Ok((bytes, sha256)) => {
            if tx.send(Parsed::Hashed(bytes, sha256)).is_err() {
                return;
            }
        }
        Err(e) => {
            let _ = tx.send(Parsed::Failed(e));
            return;
        }
    }
    let source: Arc<str> = Arc::from(spec.path.display().to_string());
    let mut pending = Pending::default();
    let result = read_file(spec, &mut |item| {
        pending.read += 1;
        let (line, row, rejection, raw) = match item {
            Item::Rejected(r) => {
                let rej = Rejection {
                    reason: r.reason,
                    field: r.field,
                    value: r.value,
                    message: r.message,
                };
                (r.line, r.row, rej, r.raw)
            }
            Item::Record(rec) => {
                let lineage = Lineage {
                    source_file: source.clone(),
                    line: rec.line.unwrap_or(rec.row),
                    run,
                    file,
                    row: rec.row,
                };
                match normalize(&rec.cells, tz, &lineage) {
                    Ok(ev) => {
                        pending.parts.push(bucket_of(&ev.event_id, partitions));
                        if want_ids.load(Ordering::Relaxed) {
                            pending.ids.push(id_hash(&ev.user_id));
                            if let Some(a) =
                                linked_account(&ev.event_type, ev.account_id.as_deref())
                            {
                                pending.ids.push(id_hash(a));
                            }
                        }
                        pending.events.push(&ev);
                        return pending.flush(tx);
                    }
                    Err(rej) => (rec.line, rec.row, rej, rec.raw_text()),
                }
            }
        };
        pending.rejected.push(QuarantineRow {
            run,
            source_file: source.clone(),
            line,
            row,
            reason: rejection.reason.as_str(),
            field: rejection.field,
            value: rejection.value,
            message: rejection.message,
            raw,
        });
        pending.flush(tx)
    });
    let _ = match result {
        Ok(()) => tx.send(pending.take()),
        // The consumer has gone: nothing more to do.
        Err(IngestError::Cancelled) => Ok(()),
        // Rows read before the error are delivered first, as a sequential read would.
        Err(e) => tx
            .send(pending.take())
            .and_then(|()| tx.send(Parsed::Failed(e))),
    };
}

pub(crate) fn hash_file(path: &Path) -> Result<(u64, String), IngestError> {
    let mut file = File::open(path).map_err(|e| IngestError::unreadable(path, None, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| IngestError::unreadable(path, None, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// With `FUNNEL_TRACE` set in the environment, the time at the end of each phase goes to
/// stderr: a diagnostic for benchmarks and profiles, not an interface.
struct Trace {
    start: Instant,
    on: bool,
}

impl Trace {
    fn new() -> Trace {
        Trace {
            start: Instant::now(),
            on: std::env::var_os("FUNNEL_TRACE").is_some(),
        }
    }

    fn mark(&self, what: &str) {
        if self.on {
            eprintln!("{:>8.3} s  {what}", self.start.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::collect_garbage;
    use funnel_core::MANIFEST_FILE;

    /// Ingests one CSV row (event `id`) into the store at `store`.
    fn ingest_row(store: &Path, id: &str) -> IngestReport {
        let input = store.with_file_name(format!("{id}.csv"));
        let row = format!("event_id,user_id,event_type,ts\n{id},u_{id},click,1600000000000\n");
        std::fs::write(&input, row).unwrap();
        ingest(&IngestOptions::new(store), &[input], &|_| {}).unwrap()
    }

    #[test]
    fn garbage_collection_spares_a_leased_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let layout = StoreLayout::new(&store);
        ingest_row(&store, "e1");
        let reader = layout.open_existing().unwrap();
        assert_eq!(reader.manifest().generation, 1);
        // The commit of generation 2 leaves generation 1 to its reader.
        assert_eq!(ingest_row(&store, "e2").generation, 2);
        let first = layout.generation_dir(1);
        assert!(first.join(MANIFEST_FILE).is_file());
        let bucket = &reader.manifest().event_files[0].path;
        assert!(reader.dir().join(bucket).is_file());
        collect_garbage(&layout, Some(2)).unwrap();
        assert!(first.is_dir());
        // Once the reader is done, the next collection removes it.
        drop(reader);
        collect_garbage(&layout, Some(2)).unwrap();
        assert!(!first.exists());
        assert!(layout.generation_dir(2).join(MANIFEST_FILE).is_file());
    }
}
