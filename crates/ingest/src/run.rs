//! One ingest run: read, validate, deduplicate, stitch, and commit a new store generation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use funnel_core::{
    Counts, EventFile, IdFile, InputFile, MANIFEST_FILE, Manifest, RunRecord, StoreLayout,
    TOOL_VERSION, bucket_of,
};
use sha2::{Digest, Sha256};

use arrow::array::RecordBatch;

use crate::IngestError;
use crate::batch::Builder;
use crate::batch::work_schema;
use crate::dedup::{Dedup, Deduplicated, Outcomes, deduplicate, key_schema, keys};
use crate::identity::{Identity, RunIds, id_hash, linked_account};
use crate::integrity::Inventory;
use crate::normalize::{Lineage, Rejection, normalize};
use crate::parallel::threads;
use crate::parse_timezone;
use crate::read::{Discovered, Format, InputSpec, Item, Skipped, discover, read_file};
use crate::route::{Route, route};
use crate::spill::{Sequence, Spill};
use crate::store::{IdentityWriter, QuarantineRow, QuarantineWriter, ROW_GROUP_ROWS};
use crate::write::{Buckets, Written, write_buckets};
use funnel_core::time::format_ms;

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
}

/// Rows a bucket of a new store is sized for: a bucket is sorted and written in memory (and is
/// one spill partition), so this bounds ingest memory whatever the size of the input.
const ROWS_PER_BUCKET: u64 = 250_000;

/// Most buckets a store may have (`--buckets`).
const MAX_BUCKETS: u32 = 65_536;

/// Rows between two progress reports.
const PROGRESS_ROWS: u64 = 65_536;

/// Bucket count of a new store when none is asked for: 64, or the power of two that keeps
/// about [`ROWS_PER_BUCKET`] rows per bucket, estimating rows from the input sizes (150 bytes a
/// row as text, 8 times that much when gzip or Parquet compressed).
fn auto_buckets(input_bytes: impl IntoIterator<Item = (u64, bool)>) -> u32 {
    let rows: u64 = input_bytes
        .into_iter()
        .map(|(bytes, compressed)| bytes.saturating_mul(if compressed { 8 } else { 1 }) / 150)
        .fold(0, u64::saturating_add);
    let wanted = rows
        .div_ceil(ROWS_PER_BUCKET)
        .clamp(64, u64::from(MAX_BUCKETS));
    wanted.next_power_of_two() as u32
}

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
    let tz = parse_timezone(&opts.timezone)?;
    if !(0.0..=1.0).contains(&opts.max_reject_rate) {
        return Err(IngestError::InvalidOption {
            option: "--max-reject-rate",
            value: opts.max_reject_rate.to_string(),
            message: "must be between 0 and 1".into(),
        });
    }
    if opts.row_group_rows == 0 {
        return Err(IngestError::InvalidOption {
            option: "--row-group-rows",
            value: "0".into(),
            message: "must be at least 1".into(),
        });
    }
    if let Some(b) = opts.buckets.filter(|b| !(1..=MAX_BUCKETS).contains(b)) {
        return Err(IngestError::InvalidOption {
            option: "--buckets",
            value: b.to_string(),
            message: format!("must be between 1 and {MAX_BUCKETS}"),
        });
    }
    let trace = Trace::new();
    let tr = |what: &str| trace.mark(what);
    let Discovered { files, skipped } = discover(inputs, &opts.store)?;

    let layout = StoreLayout::new(&opts.store);
    std::fs::create_dir_all(layout.root()).map_err(|e| IngestError::store(layout.root(), e))?;
    let _lock = lock(&layout, opts.lock_timeout, progress)?;
    // Leased like any reader's, until the commit below retires it.
    let current = layout.open_current()?;
    collect_garbage(&layout, current.as_ref().map(|g| g.manifest().generation))?;
    let (prev_dir, mut manifest) = match &current {
        Some(g) => (Some(g.dir().to_path_buf()), g.manifest().clone()),
        None => {
            let buckets = opts.buckets.unwrap_or_else(|| {
                auto_buckets(files.iter().map(|f| {
                    let bytes = std::fs::metadata(&f.path).map_or(0, |m| m.len());
                    (bytes, f.gzip || f.format == Format::Parquet)
                }))
            });
            (None, Manifest::empty(buckets, &opts.timezone))
        }
    };
    let run_no = manifest.runs.last().map_or(1, |r| r.run + 1);
    let buckets = manifest.buckets;
    let scratch = layout.scratch_dir();
    // From here on, whatever ends the run removes what it began (before the lock is released).
    let mut uncommitted = Uncommitted {
        layout: &layout,
        generation: None,
    };
    std::fs::create_dir_all(&scratch).map_err(|e| IngestError::store(&scratch, e))?;
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
    let generation = manifest.generation + 1;
    let gen_dir = layout.generation_dir(generation);
    uncommitted.generation = Some(generation);
    if gen_dir.exists() {
        std::fs::remove_dir_all(&gen_dir).map_err(|e| IngestError::store(&gen_dir, e))?;
    }
    std::fs::create_dir_all(&gen_dir).map_err(|e| IngestError::store(&gen_dir, e))?;
    // Every file taken from the committed generation is checked against its manifest first.
    let mut inventory = Inventory::new(
        prev_dir.as_deref(),
        std::mem::take(&mut manifest.files),
        &gen_dir,
    );
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
            inventory: &mut inventory,
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

    let mut counts = Counts::default();
    for f in &input_records {
        counts.add(&f.counts);
    }
    debug_assert!(counts.reconciles());
    let mut run = RunRecord {
        run: run_no,
        tool_version: TOOL_VERSION.to_string(),
        timezone: opts.timezone.clone(),
        inputs: input_records,
        counts,
        persons_merged: 0,
        min_ts: (min_ts <= max_ts).then(|| format_ms(min_ts)),
        max_ts: (min_ts <= max_ts).then(|| format_ms(max_ts)),
        quarantine_file: None,
    };
    let mut report = IngestReport {
        store: opts.store.clone(),
        committed: false,
        generation: manifest.generation,
        run: run.clone(),
        skipped,
        quarantine_path: None,
        events_in_store: manifest.events,
        persons_in_store: manifest.persons,
    };
    let quarantined = quarantine.finish()?;

    if report.rejected_share() > opts.max_reject_rate {
        let dir = failed_dir(&layout, run_no);
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::store(&dir, e))?;
        if let Some((q, _)) = &quarantined {
            let path = dir.join("quarantine.parquet");
            std::fs::rename(q, &path).map_err(|e| IngestError::store(&path, e))?;
            report.quarantine_path = Some(path);
        }
        let run_json = serde_json::to_string_pretty(&run).expect("run record serialises");
        std::fs::write(dir.join("run.json"), run_json).map_err(|e| IngestError::store(&dir, e))?;
        return Err(IngestError::RejectRateExceeded {
            max: opts.max_reject_rate,
            report: Box::new(report),
        });
    }

    // Quarantine: earlier runs' files carry over, this run's is added.
    let mut quarantine_files = Vec::new();
    for q in &manifest.quarantine_files {
        inventory.carry(q, None)?;
        quarantine_files.push(q.clone());
    }
    if let Some((q, sum)) = quarantined {
        let rel = StoreLayout::quarantine_file(run_no);
        let path = gen_dir.join(&rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .map_err(|e| IngestError::store(&path, e))?;
        std::fs::rename(q, &path).map_err(|e| IngestError::store(&path, e))?;
        inventory.wrote(&rel, sum);
        report.quarantine_path = Some(layout.current_link().join(&rel));
        run.quarantine_file = Some(rel.clone());
        quarantine_files.push(rel);
    }

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
        &mut inventory,
    )?;
    run.persons_merged = merged_persons.len() as u64;
    tr("phase 5 write");

    let mut writer = IdentityWriter::new(gen_dir.join(StoreLayout::IDENTITY_FILE));
    identity.write_with_stored(&merges, partly_loaded.as_deref(), &mut writer)?;
    let identity_file = writer.finish()?.map(|(_, sum)| {
        inventory.wrote(StoreLayout::IDENTITY_FILE, sum);
        StoreLayout::IDENTITY_FILE.to_string()
    });

    manifest.generation = generation;
    manifest.properties = properties;
    manifest.events = event_files.iter().map(|f| f.rows).sum();
    manifest.persons = event_files.iter().map(|f| f.persons).sum();
    manifest.min_ts = event_files.iter().map(|f| f.min_ts_ms).min().map(format_ms);
    manifest.max_ts = event_files.iter().map(|f| f.max_ts_ms).max().map(format_ms);
    manifest.event_files = event_files;
    manifest.id_files = id_files;
    manifest.identity_file = identity_file;
    manifest.quarantine_files = quarantine_files;
    manifest.files = inventory.into_files();
    manifest.totals.add(&run.counts);
    manifest.runs.push(run.clone());
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write_synced(&gen_dir.join(MANIFEST_FILE), text.as_bytes())?;
    funnel_core::lease::create_lease_file(&gen_dir)?;
    sync_tree(&gen_dir)?;
    switch_current(&layout, generation)?;
    tr("commit");
    drop(current);
    // Also removes the scratch directory.
    collect_garbage(&layout, Some(generation))?;

    report.committed = true;
    report.generation = generation;
    report.run = run;
    report.events_in_store = manifest.events;
    report.persons_in_store = manifest.persons;
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

/// How often a waiting ingest tries the store's lock again.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Takes the store's lock, waiting up to `timeout` for another ingest to release it.
fn lock(
    layout: &StoreLayout,
    timeout: Duration,
    progress: &dyn Fn(Progress<'_>),
) -> Result<File, IngestError> {
    let path = layout.lock_file();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| IngestError::store(&path, e))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(IngestError::store(&path, e)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(IngestError::LockTimeout {
                path: layout.root().to_path_buf(),
                timeout,
            });
        }
        if !told {
            progress(Progress::WaitingForLock {
                store: layout.root(),
                timeout,
            });
            told = true;
        }
        std::thread::sleep(LOCK_POLL.min(timeout - waited));
    }
}

/// What a run has begun and not committed: its scratch space and the new generation's
/// directory, removed when the run ends, however it ends (a refused run's `failed/` directory
/// stays). A generation that `current` names was committed and stays.
struct Uncommitted<'a> {
    layout: &'a StoreLayout,
    generation: Option<u64>,
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.layout.scratch_dir());
        if let Some(generation) = self.generation {
            let name = StoreLayout::generation_name(generation);
            let current = std::fs::read_link(self.layout.current_link());
            if !current.is_ok_and(|c| c == Path::new(&name)) {
                let _ = std::fs::remove_dir_all(self.layout.generation_dir(generation));
            }
        }
    }
}

fn failed_dir(layout: &StoreLayout, run: u64) -> PathBuf {
    let base = layout.failed_dir(run);
    (1..)
        .map(|k| {
            if k == 1 {
                base.clone()
            } else {
                PathBuf::from(format!("{}-{k}", base.display()))
            }
        })
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

/// Removes generation directories other than the current one (left by a killed run or
/// superseded by a commit) and a stale temporary link. A generation a reader holds a lease on
/// stays, for a later run to remove.
fn collect_garbage(layout: &StoreLayout, keep: Option<u64>) -> Result<(), IngestError> {
    let root = layout.root();
    let _ = std::fs::remove_file(root.join(".current.tmp"));
    let _ = std::fs::remove_dir_all(layout.scratch_dir());
    let keep = keep.map(StoreLayout::generation_name);
    let entries = std::fs::read_dir(root).map_err(|e| IngestError::store(root, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if StoreLayout::is_generation_name(&name) && Some(&name) != keep.as_ref() {
            funnel_core::lease::remove_unleased(&entry.path())?;
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| IngestError::store(path, e))?;
    f.write_all(bytes)
        .map_err(|e| IngestError::store(path, e))?;
    f.sync_all().map_err(|e| IngestError::store(path, e))
}

fn sync_tree(dir: &Path) -> Result<(), IngestError> {
    for entry in std::fs::read_dir(dir)
        .map_err(|e| IngestError::store(dir, e))?
        .flatten()
    {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&entry.path())?;
        }
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| IngestError::store(dir, e))
}

/// Points `current` at the new generation: a new symlink renamed over the old one (atomic).
fn switch_current(layout: &StoreLayout, generation: u64) -> Result<(), IngestError> {
    let root = layout.root();
    let tmp = root.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(StoreLayout::generation_name(generation), &tmp)
        .map_err(|e| IngestError::store(&tmp, e))?;
    #[cfg(not(unix))]
    compile_error!("the store's atomic switch needs symlinks (unix)");
    std::fs::rename(&tmp, layout.current_link()).map_err(|e| IngestError::store(root, e))?;
    ensure_events_link(layout)?;
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(|e| IngestError::store(root, e))
}

/// Adds `STORE/events -> current/events` where it is missing (stores written before it); an
/// entry of that name that is not this link is left alone.
fn ensure_events_link(layout: &StoreLayout) -> Result<(), IngestError> {
    let link = layout.events_link();
    if std::fs::symlink_metadata(&link).is_ok() {
        return Ok(());
    }
    let tmp = layout.root().join(".events.tmp");
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(StoreLayout::EVENTS_LINK_TARGET, &tmp)
        .map_err(|e| IngestError::store(&tmp, e))?;
    std::fs::rename(&tmp, &link).map_err(|e| IngestError::store(&link, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bucket_count_follows_input_size() {
        // Small inputs keep the old default.
        assert_eq!(auto_buckets([]), 64);
        assert_eq!(auto_buckets([(1_100_000_000, false)]), 64);
        // 11 GB of CSV (about 73M rows) -> 293 buckets wanted -> 512.
        assert_eq!(auto_buckets([(11_000_000_000, false)]), 512);
        // Compressed inputs count 8 times their size, summed over files.
        assert_eq!(
            auto_buckets([(1_000_000_000, true), (1_000_000_000, true)]),
            512
        );
        assert_eq!(auto_buckets([(u64::MAX, false), (u64::MAX, true)]), 65_536);
    }
}
