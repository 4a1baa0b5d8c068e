//! A store run: the store's lock, the new generation's directory, the files it carries over or
//! writes, and the commit: the manifest, then the atomic switch of `current`.
//!
//! The embedded ingest (`run.rs`) and a cluster ingest (`funnel ingest --engine spark`, whose
//! workers write the files) both begin and commit a generation through [`StoreRun`], so a store
//! holds the same manifest, figures and guarantees whichever engine wrote it:
//! - one run at a time (the lock file), waiting up to the lock timeout;
//! - the committed generation is leased while the run reads it, and every file taken from it
//!   is checked against its manifest first;
//! - a generation is current only when complete: its files and manifest are synced before
//!   `current` is switched (a new symlink renamed over the old one);
//! - a run that ends without committing, however it ends, removes what it began (its scratch
//!   space and its generation directory); a refused run's `failed/` directory stays.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use funnel_core::time::format_ms;
use funnel_core::{
    Counts, EventFile, FileSum, Generation, IdFile, InputFile, MANIFEST_FILE, Manifest, RunRecord,
    StoreLayout, TOOL_VERSION,
};

use crate::IngestError;
use crate::integrity::Inventory;
use crate::read::Skipped;
use crate::run::{IngestOptions, IngestReport, Progress};

/// Rows a bucket of a new store is sized for: a bucket is sorted and written in memory (and is
/// one spill partition), so this bounds ingest memory whatever the size of the input.
const ROWS_PER_BUCKET: u64 = 250_000;

/// Most buckets a store may have (`--buckets`).
pub(crate) const MAX_BUCKETS: u32 = 65_536;

/// Bucket count of a new store when none is asked for: 64, or the power of two that keeps
/// about [`ROWS_PER_BUCKET`] rows per bucket, estimating rows from the input sizes (150 bytes a
/// row as text, 8 times that much when gzip or Parquet compressed).
pub(crate) fn auto_buckets(input_bytes: impl IntoIterator<Item = (u64, bool)>) -> u32 {
    let rows: u64 = input_bytes
        .into_iter()
        .map(|(bytes, compressed)| bytes.saturating_mul(if compressed { 8 } else { 1 }) / 150)
        .fold(0, u64::saturating_add);
    let wanted = rows
        .div_ceil(ROWS_PER_BUCKET)
        .clamp(64, u64::from(MAX_BUCKETS));
    wanted.next_power_of_two() as u32
}

/// One run's hold on a store, from its lock to its commit. Dropped without
/// [`StoreRun::commit`], it removes what the run began and releases the lock.
pub struct StoreRun {
    layout: StoreLayout,
    /// The committed generation the run started from, leased until the commit retires it.
    current: Option<Generation>,
    /// The committed manifest (an empty one for a new store).
    manifest: Manifest,
    run: u64,
    generation: u64,
    gen_dir: PathBuf,
    inventory: Inventory,
    // Last: released after the cleanup in `drop`.
    _lock: File,
}

impl std::fmt::Debug for StoreRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRun")
            .field("store", &self.layout.root())
            .field("run", &self.run)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What a run adds to the store, for [`StoreRun::commit`].
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// The run's record; its `quarantine_file` is set by the commit.
    pub run: RunRecord,
    /// Property columns of the new generation (sorted).
    pub properties: Vec<String>,
    /// Every bucket file of the new generation (each written or carried into it).
    pub event_files: Vec<EventFile>,
    /// Every partition file of the event-id index (each written or carried into it).
    pub id_files: Vec<IdFile>,
    /// The sum of the identity file written at [`StoreLayout::IDENTITY_FILE`] in the
    /// generation directory; `None`: the store has no linked ids.
    pub identity: Option<FileSum>,
    /// This run's quarantine file (anywhere on the store's file system: it is moved into the
    /// generation) and its sum; `None` when the run rejected nothing.
    pub quarantine: Option<(PathBuf, FileSum)>,
}

impl StoreRun {
    /// Takes the lock of the store `opts.store` (created if missing), waiting up to
    /// `opts.lock_timeout`; opens its committed generation and removes generations left by
    /// killed runs; creates the run's scratch space and generation directory. A new store gets
    /// `opts.buckets` buckets, or a number sized from the sizes of `inputs` (each input's path and
    /// whether it is compressed).
    pub fn begin(
        opts: &IngestOptions,
        inputs: &[(&Path, bool)],
        progress: &dyn Fn(Progress<'_>),
    ) -> Result<StoreRun, IngestError> {
        let layout = StoreLayout::new(&opts.store);
        std::fs::create_dir_all(layout.root()).map_err(|e| IngestError::store(layout.root(), e))?;
        let lock = lock(&layout, opts.lock_timeout, progress)?;
        let current = layout.open_current()?;
        collect_garbage(&layout, current.as_ref().map(|g| g.manifest().generation))?;
        let (prev_dir, manifest) = match &current {
            Some(g) => (Some(g.dir().to_path_buf()), g.manifest().clone()),
            None => {
                let buckets = opts.buckets.unwrap_or_else(|| {
                    auto_buckets(inputs.iter().map(|(path, compressed)| {
                        (std::fs::metadata(path).map_or(0, |m| m.len()), *compressed)
                    }))
                });
                (None, Manifest::empty(buckets, &opts.timezone))
            }
        };
        let run = manifest.runs.last().map_or(1, |r| r.run + 1);
        let generation = manifest.generation + 1;
        let gen_dir = layout.generation_dir(generation);
        let inventory = Inventory::new(prev_dir, manifest.files.clone(), gen_dir.clone());
        let begun = StoreRun {
            layout,
            current,
            manifest,
            run,
            generation,
            gen_dir,
            inventory,
            _lock: lock,
        };
        // From here on, dropping `begun` removes what it began.
        let scratch = begun.layout.scratch_dir();
        std::fs::create_dir_all(&scratch).map_err(|e| IngestError::store(&scratch, e))?;
        if begun.gen_dir.exists() {
            std::fs::remove_dir_all(&begun.gen_dir)
                .map_err(|e| IngestError::store(&begun.gen_dir, e))?;
        }
        std::fs::create_dir_all(&begun.gen_dir)
            .map_err(|e| IngestError::store(&begun.gen_dir, e))?;
        Ok(begun)
    }

    /// The committed manifest the run starts from (an empty one, generation 0, for a new store).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The committed generation's directory (`None` for a new store).
    pub fn committed_dir(&self) -> Option<&Path> {
        self.current.as_ref().map(Generation::dir)
    }

    /// This run's number.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The generation this run writes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The directory of the generation this run writes.
    pub fn gen_dir(&self) -> &Path {
        &self.gen_dir
    }

    /// The run's scratch space (on the store's file system; removed when the run ends).
    pub fn scratch_dir(&self) -> PathBuf {
        self.layout.scratch_dir()
    }

    /// The checks and sums of the files the run takes from the committed generation or writes.
    pub(crate) fn inventory(&mut self) -> &mut Inventory {
        &mut self.inventory
    }

    /// The path of a file of the committed generation that the run reads, checked whole first
    /// against its manifest (`rows`: the row count recorded for it).
    pub fn reread(&self, rel: &str, rows: Option<u64>) -> Result<PathBuf, IngestError> {
        self.inventory.reread(rel, rows)
    }

    /// Carries a file of the committed generation into the new one unchanged (a hard link or a
    /// copy), after checking it against its manifest.
    pub fn carry(&mut self, rel: &str, rows: Option<u64>) -> Result<(), IngestError> {
        self.inventory.carry(rel, rows)
    }

    /// Records a file written into the new generation (`rel`: its path in the generation).
    pub fn wrote(&mut self, rel: &str, sum: FileSum) {
        self.inventory.wrote(rel, sum);
    }

    /// This run's record: its inputs (with their counts), the counts summed, and the range of
    /// the stored rows' `ts` in epoch milliseconds (`None`: no row stored).
    pub fn record(
        &self,
        opts: &IngestOptions,
        inputs: Vec<InputFile>,
        ts_range: Option<(i64, i64)>,
    ) -> RunRecord {
        let mut counts = Counts::default();
        for f in &inputs {
            counts.add(&f.counts);
        }
        RunRecord {
            run: self.run,
            tool_version: TOOL_VERSION.to_string(),
            timezone: opts.timezone.clone(),
            inputs,
            counts,
            persons_merged: 0,
            min_ts: ts_range.map(|(min, _)| format_ms(min)),
            max_ts: ts_range.map(|(_, max)| format_ms(max)),
            quarantine_file: None,
        }
    }

    /// The report of `run` before its commit, or, when its rejected share is over
    /// `opts.max_reject_rate`, the refusal: the run's record and quarantine (`quarantine`, if
    /// any row was rejected) are kept in the store's `failed/` directory, nothing is committed,
    /// and the error carries the report.
    pub fn admit(
        &self,
        opts: &IngestOptions,
        run: &RunRecord,
        skipped: Vec<Skipped>,
        quarantine: Option<&Path>,
    ) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport {
            store: opts.store.clone(),
            committed: false,
            generation: self.manifest.generation,
            run: run.clone(),
            skipped,
            quarantine_path: None,
            events_in_store: self.manifest.events,
            persons_in_store: self.manifest.persons,
        };
        if report.rejected_share() > opts.max_reject_rate {
            report.quarantine_path = self.set_aside(run, quarantine)?;
            return Err(IngestError::RejectRateExceeded {
                max: opts.max_reject_rate,
                report: Box::new(report),
            });
        }
        Ok(report)
    }

    /// Keeps a refused run's record and quarantine (moved from `quarantine`) in the store's
    /// `failed/` directory; returns where the quarantine went. Nothing is committed.
    fn set_aside(
        &self,
        run: &RunRecord,
        quarantine: Option<&Path>,
    ) -> Result<Option<PathBuf>, IngestError> {
        let dir = failed_dir(&self.layout, self.run);
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::store(&dir, e))?;
        let mut kept = None;
        if let Some(q) = quarantine {
            let path = dir.join("quarantine.parquet");
            std::fs::rename(q, &path).map_err(|e| IngestError::store(&path, e))?;
            kept = Some(path);
        }
        let run_json = serde_json::to_string_pretty(run).expect("run record serialises");
        std::fs::write(dir.join("run.json"), run_json).map_err(|e| IngestError::store(&dir, e))?;
        Ok(kept)
    }

    /// Commits the new generation: carries the earlier runs' quarantine files, moves this
    /// run's in, writes the manifest (figures from `new`), syncs the generation and switches
    /// `current` to it. Returns `report` (from [`StoreRun::admit`]) as committed: the new
    /// generation, the run's record, where its quarantine can be read (through `current`) and
    /// the store's figures.
    pub fn commit(
        mut self,
        new: NewGeneration,
        mut report: IngestReport,
    ) -> Result<IngestReport, IngestError> {
        let NewGeneration {
            mut run,
            properties,
            event_files,
            id_files,
            identity,
            quarantine,
        } = new;
        let mut manifest = std::mem::replace(&mut self.manifest, Manifest::empty(0, ""));
        let mut quarantine_files = Vec::new();
        for q in &manifest.quarantine_files {
            self.inventory.carry(q, None)?;
            quarantine_files.push(q.clone());
        }
        let mut quarantine_path = None;
        if let Some((q, sum)) = quarantine {
            let rel = StoreLayout::quarantine_file(run.run);
            let path = self.gen_dir.join(&rel);
            std::fs::create_dir_all(path.parent().expect("has a parent"))
                .map_err(|e| IngestError::store(&path, e))?;
            std::fs::rename(&q, &path).map_err(|e| IngestError::store(&path, e))?;
            self.inventory.wrote(&rel, sum);
            quarantine_path = Some(self.layout.current_link().join(&rel));
            run.quarantine_file = Some(rel.clone());
            quarantine_files.push(rel);
        }
        let identity_file = identity.map(|sum| {
            self.inventory.wrote(StoreLayout::IDENTITY_FILE, sum);
            StoreLayout::IDENTITY_FILE.to_string()
        });
        manifest.generation = self.generation;
        manifest.properties = properties;
        manifest.events = event_files.iter().map(|f| f.rows).sum();
        manifest.persons = event_files.iter().map(|f| f.persons).sum();
        manifest.min_ts = event_files.iter().map(|f| f.min_ts_ms).min().map(format_ms);
        manifest.max_ts = event_files.iter().map(|f| f.max_ts_ms).max().map(format_ms);
        manifest.event_files = event_files;
        manifest.id_files = id_files;
        manifest.identity_file = identity_file;
        manifest.quarantine_files = quarantine_files;
        let inventory = std::mem::replace(
            &mut self.inventory,
            Inventory::new(None, BTreeMap::new(), PathBuf::new()),
        );
        manifest.files = inventory.into_files();
        manifest.totals.add(&run.counts);
        report.run = run.clone();
        manifest.runs.push(run);
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        write_synced(&self.gen_dir.join(MANIFEST_FILE), text.as_bytes())?;
        funnel_core::lease::create_lease_file(&self.gen_dir)?;
        sync_tree(&self.gen_dir)?;
        switch_current(&self.layout, self.generation)?;
        // The old generation's lease goes; the collection in `drop` removes it (and the
        // scratch space) unless a reader still holds it.
        self.current = None;
        report.committed = true;
        report.generation = self.generation;
        report.quarantine_path = quarantine_path;
        report.events_in_store = manifest.events;
        report.persons_in_store = manifest.persons;
        Ok(report)
    }
}

impl Drop for StoreRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.layout.scratch_dir());
        let name = StoreLayout::generation_name(self.generation);
        let current = std::fs::read_link(self.layout.current_link());
        if current.is_ok_and(|c| c == Path::new(&name)) {
            self.current = None;
            let _ = collect_garbage(&self.layout, Some(self.generation));
        } else {
            let _ = std::fs::remove_dir_all(&self.gen_dir);
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
pub(crate) fn collect_garbage(layout: &StoreLayout, keep: Option<u64>) -> Result<(), IngestError> {
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
