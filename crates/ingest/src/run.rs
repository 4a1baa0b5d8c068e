//! One ingest run: read, validate, deduplicate, stitch, and commit a new store generation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use funnel_core::{
    Counts, EventFile, InputFile, MANIFEST_FILE, Manifest, RejectReason, RunRecord, StoreLayout,
    TOOL_VERSION, bucket_of,
};
use sha2::{Digest, Sha256};

use crate::IngestError;
use crate::event::Event;
use crate::identity::Identity;
use crate::normalize::{Lineage, Rejection, normalize};
use crate::source::{InputSpec, Item, discover, read_file};
use crate::store::{
    QuarantineRow, read_event_ids, read_events, read_identity, write_events, write_identity,
    write_quarantine,
};
use crate::timestamp::{format_ms, parse_timezone};

/// Options of `funnel ingest`.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub store: PathBuf,
    /// IANA zone in which timestamps without an offset are read.
    pub timezone: String,
    /// Largest accepted share of rejected rows (0..=1); above it nothing is committed.
    pub max_reject_rate: f64,
    /// Number of person buckets of a new store (an existing store keeps its own).
    pub buckets: u32,
}

impl IngestOptions {
    pub fn new(store: impl Into<PathBuf>) -> IngestOptions {
        IngestOptions {
            store: store.into(),
            timezone: "Asia/Shanghai".into(),
            max_reject_rate: 1.0,
            buckets: 64,
        }
    }
}

/// Progress notifications, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
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
    /// Files inside input directories that were not read (unsupported extension or hidden).
    pub skipped: Vec<PathBuf>,
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
    if !(1..=65_536).contains(&opts.buckets) {
        return Err(IngestError::InvalidOption {
            option: "--buckets",
            value: opts.buckets.to_string(),
            message: "must be between 1 and 65536".into(),
        });
    }
    let (files, skipped) = discover(inputs)?;

    let layout = StoreLayout::new(&opts.store);
    std::fs::create_dir_all(layout.root()).map_err(|e| IngestError::store(layout.root(), e))?;
    let _lock = lock(&layout)?;
    let current = layout.open_current()?;
    collect_garbage(&layout, current.as_ref().map(|(_, m)| m.generation))?;
    let (prev_dir, mut manifest) = match current {
        Some((dir, m)) => (Some(dir), m),
        None => (None, Manifest::empty(opts.buckets, &opts.timezone)),
    };
    let run_no = manifest.runs.last().map_or(1, |r| r.run + 1);

    // Every event_id already accepted, with its content hash.
    let mut seen: HashMap<String, u64> = HashMap::new();
    if let Some(dir) = &prev_dir {
        for f in &manifest.event_files {
            read_event_ids(&dir.join(&f.path), &mut seen)?;
        }
    }

    let mut new_events: Vec<Event> = Vec::new();
    let mut quarantine: Vec<QuarantineRow> = Vec::new();
    let mut input_records = Vec::with_capacity(files.len());
    let mut rows_total = 0u64;
    for (index, spec) in files.iter().enumerate() {
        let (bytes, sha256) = hash_file(&spec.path)?;
        progress(Progress::File {
            path: &spec.path,
            index,
            total: files.len(),
            bytes,
        });
        let counts = read_one(
            spec,
            run_no,
            &tz,
            &mut seen,
            &mut new_events,
            &mut quarantine,
            &mut || {
                rows_total += 1;
                if rows_total.is_multiple_of(65_536) {
                    progress(Progress::Rows(rows_total));
                }
            },
        )?;
        input_records.push(InputFile {
            path: spec.path.display().to_string(),
            format: spec.format.name().to_string(),
            gzip: spec.gzip,
            bytes,
            sha256,
            counts,
        });
    }
    progress(Progress::Rows(rows_total));

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
        min_ts: new_events.iter().map(|e| e.ts_ms).min().map(format_ms),
        max_ts: new_events.iter().map(|e| e.ts_ms).max().map(format_ms),
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

    if report.rejected_share() > opts.max_reject_rate {
        let dir = failed_dir(&layout, run_no);
        let path = dir.join("quarantine.parquet");
        write_quarantine(&path, &quarantine)?;
        let run_json = serde_json::to_string_pretty(&run).expect("run record serialises");
        std::fs::write(dir.join("run.json"), run_json).map_err(|e| IngestError::store(&dir, e))?;
        report.quarantine_path = Some(path);
        return Err(IngestError::RejectRateExceeded {
            max: opts.max_reject_rate,
            report: Box::new(report),
        });
    }

    progress(Progress::Committing);
    let generation = manifest.generation + 1;
    let gen_dir = layout.generation_dir(generation);
    if gen_dir.exists() {
        std::fs::remove_dir_all(&gen_dir).map_err(|e| IngestError::store(&gen_dir, e))?;
    }
    std::fs::create_dir_all(&gen_dir).map_err(|e| IngestError::store(&gen_dir, e))?;

    // Quarantine: earlier runs' files carry over, this run's is added.
    let mut quarantine_files = Vec::new();
    for q in &manifest.quarantine_files {
        link_or_copy(
            &prev_dir
                .as_ref()
                .expect("files imply a previous generation")
                .join(q),
            &gen_dir.join(q),
        )?;
        quarantine_files.push(q.clone());
    }
    if !quarantine.is_empty() {
        let rel = StoreLayout::quarantine_file(run_no);
        write_quarantine(&gen_dir.join(&rel), &quarantine)?;
        report.quarantine_path = Some(layout.current_link().join(&rel));
        run.quarantine_file = Some(rel.clone());
        quarantine_files.push(rel);
    }

    // Identity: stored links plus this run's logins.
    let mut identity = Identity::default();
    if let (Some(dir), Some(f)) = (&prev_dir, &manifest.identity_file) {
        for (id, person) in read_identity(&dir.join(f))? {
            identity.load(&id, &person);
        }
    }
    for e in &new_events {
        if e.event_type == "login"
            && let Some(account) = &e.account_id
        {
            identity.link(&e.user_id, account);
        }
    }
    let merges = identity.merges();
    let buckets = manifest.buckets;
    let mut new_by_bucket: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    let mut properties: BTreeSet<String> = manifest.properties.iter().cloned().collect();
    for mut e in new_events {
        e.person_id = identity.person_of(&e.user_id);
        properties.extend(e.properties.keys().cloned());
        new_by_bucket
            .entry(bucket_of(&e.person_id, buckets))
            .or_default()
            .push(e);
    }
    let properties: Vec<String> = properties.into_iter().collect();

    let old_files: BTreeMap<u32, EventFile> = manifest
        .event_files
        .iter()
        .map(|f| (f.bucket, f.clone()))
        .collect();
    let source_buckets: BTreeSet<u32> = merges
        .keys()
        .map(|p| bucket_of(p, buckets))
        .filter(|b| old_files.contains_key(b))
        .collect();
    let mut touched: BTreeSet<u32> = new_by_bucket.keys().copied().collect();
    touched.extend(source_buckets.iter().copied());
    touched.extend(merges.values().map(|p| bucket_of(p, buckets)));

    // Phase A: events of merged persons that move to another bucket.
    let mut moved_in: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    let prev = |f: &EventFile| {
        prev_dir
            .as_ref()
            .expect("files imply a previous generation")
            .join(&f.path)
    };
    for b in &source_buckets {
        for mut e in read_events(&prev(&old_files[b]))? {
            if let Some(np) = merges.get(&e.person_id) {
                let nb = bucket_of(np, buckets);
                if nb != *b {
                    e.person_id = np.clone();
                    moved_in.entry(nb).or_default().push(e);
                }
            }
        }
    }

    // Phase B: rewrite touched buckets; carry the others over as hard links.
    let mut merged_persons: BTreeSet<String> = BTreeSet::new();
    let mut event_files = Vec::new();
    for b in 0..buckets {
        if !touched.contains(&b) {
            if let Some(f) = old_files.get(&b) {
                link_or_copy(&prev(f), &gen_dir.join(&f.path))?;
                event_files.push(f.clone());
            }
            continue;
        }
        let mut events = Vec::new();
        if let Some(f) = old_files.get(&b) {
            for mut e in read_events(&prev(f))? {
                if let Some(np) = merges.get(&e.person_id) {
                    merged_persons.insert(e.person_id.clone());
                    if bucket_of(np, buckets) != b {
                        continue; // moved in phase A
                    }
                    e.person_id = np.clone();
                }
                events.push(e);
            }
        }
        events.extend(moved_in.remove(&b).unwrap_or_default());
        events.extend(new_by_bucket.remove(&b).unwrap_or_default());
        if events.is_empty() {
            continue;
        }
        events.sort_by(|x, y| {
            (&x.person_id, x.ts_ms, &x.event_id).cmp(&(&y.person_id, y.ts_ms, &y.event_id))
        });
        let rel = StoreLayout::bucket_file(b, generation);
        write_events(&gen_dir.join(&rel), &properties, &events)?;
        let persons = 1 + events
            .windows(2)
            .filter(|w| w[0].person_id != w[1].person_id)
            .count() as u64;
        event_files.push(EventFile {
            bucket: b,
            path: rel,
            rows: events.len() as u64,
            persons,
            min_ts_ms: events.iter().map(|e| e.ts_ms).min().unwrap_or_default(),
            max_ts_ms: events.iter().map(|e| e.ts_ms).max().unwrap_or_default(),
        });
    }
    run.persons_merged = merged_persons.len() as u64;

    let pairs = identity.linked_pairs();
    let identity_file = if pairs.is_empty() {
        None
    } else {
        write_identity(&gen_dir.join(StoreLayout::IDENTITY_FILE), &pairs)?;
        Some(StoreLayout::IDENTITY_FILE.to_string())
    };

    manifest.generation = generation;
    manifest.properties = properties;
    manifest.events = event_files.iter().map(|f| f.rows).sum();
    manifest.persons = event_files.iter().map(|f| f.persons).sum();
    manifest.min_ts = event_files.iter().map(|f| f.min_ts_ms).min().map(format_ms);
    manifest.max_ts = event_files.iter().map(|f| f.max_ts_ms).max().map(format_ms);
    manifest.event_files = event_files;
    manifest.identity_file = identity_file;
    manifest.quarantine_files = quarantine_files;
    manifest.totals.add(&run.counts);
    manifest.runs.push(run.clone());
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    let mpath = gen_dir.join(MANIFEST_FILE);
    write_synced(&mpath, text.as_bytes())?;
    sync_tree(&gen_dir)?;
    switch_current(&layout, generation)?;
    collect_garbage(&layout, Some(generation))?;

    report.committed = true;
    report.generation = generation;
    report.run = run;
    report.events_in_store = manifest.events;
    report.persons_in_store = manifest.persons;
    Ok(report)
}

/// Reads one file's rows into `new_events` / `quarantine`, returning the file's counts.
#[allow(clippy::too_many_arguments)]
fn read_one(
    spec: &InputSpec,
    run: u64,
    tz: &chrono_tz::Tz,
    seen: &mut HashMap<String, u64>,
    new_events: &mut Vec<Event>,
    quarantine: &mut Vec<QuarantineRow>,
    tick: &mut dyn FnMut(),
) -> Result<Counts, IngestError> {
    let source: Arc<str> = Arc::from(spec.path.display().to_string());
    let mut counts = Counts::default();
    let mut reject =
        |counts: &mut Counts, line: Option<u64>, row: u64, rej: Rejection, raw: String| {
            counts.rows_rejected += 1;
            *counts
                .rejected_by_reason
                .entry(rej.reason.as_str().to_string())
                .or_default() += 1;
            quarantine.push(QuarantineRow {
                run,
                source_file: source.clone(),
                line,
                row,
                reason: rej.reason.as_str(),
                field: rej.field,
                value: rej.value,
                message: rej.message,
                raw,
            });
        };
    read_file(spec, &mut |item| {
        tick();
        counts.rows_read += 1;
        match item {
            Item::Malformed {
                line,
                row,
                raw,
                message,
            } => {
                let rej = Rejection {
                    reason: RejectReason::MalformedRecord,
                    field: None,
                    value: None,
                    message,
                };
                reject(&mut counts, line, row, rej, raw);
            }
            Item::Record(rec) => {
                let lineage = Lineage {
                    source_file: source.clone(),
                    line: rec.line.unwrap_or(rec.row),
                    run,
                };
                match normalize(&rec.cells, tz, &lineage) {
                    Err(rej) => reject(&mut counts, rec.line, rec.row, rej, rec.raw_text()),
                    Ok(ev) => match seen.get(&ev.event_id) {
                        Some(&h) if h == ev.content_hash => counts.rows_duplicate += 1,
                        Some(_) => {
                            let rej = Rejection {
                                reason: RejectReason::DuplicateConflict,
                                field: Some(funnel_core::schema::EVENT_ID.to_string()),
                                value: Some(ev.event_id.clone()),
                                message: "event_id was already accepted with different content"
                                    .into(),
                            };
                            reject(&mut counts, rec.line, rec.row, rej, rec.raw_text());
                        }
                        None => {
                            seen.insert(ev.event_id.clone(), ev.content_hash);
                            counts.rows_stored += 1;
                            new_events.push(ev);
                        }
                    },
                }
            }
        }
        Ok(())
    })?;
    Ok(counts)
}

fn hash_file(path: &Path) -> Result<(u64, String), IngestError> {
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

fn lock(layout: &StoreLayout) -> Result<File, IngestError> {
    let path = layout.lock_file();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| IngestError::store(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IngestError::Locked {
            path: layout.root().to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(IngestError::store(&path, e)),
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
/// superseded by a commit) and a stale temporary link.
fn collect_garbage(layout: &StoreLayout, keep: Option<u64>) -> Result<(), IngestError> {
    let root = layout.root();
    let _ = std::fs::remove_file(root.join(".current.tmp"));
    let keep = keep.map(StoreLayout::generation_name);
    let entries = std::fs::read_dir(root).map_err(|e| IngestError::store(root, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_generation = name.len() == 7
            && name.starts_with('g')
            && name[1..].bytes().all(|b| b.is_ascii_digit());
        if is_generation && Some(&name) != keep.as_ref() {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| IngestError::store(entry.path(), e))?;
        }
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), IngestError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| IngestError::store(parent, e))?;
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| IngestError::store(from, e))?;
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
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(|e| IngestError::store(root, e))
}
