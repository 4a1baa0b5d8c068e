//! The store on disk.
//!
//! ```text
//! STORE/
//!   current -> g000003             symlink, switched atomically at the end of each ingest run
//!   g000003/
//!     manifest.json                what this generation holds (the only file readers trust)
//!     events/bucket=0007/part-g000002.parquet   one file per non-empty bucket, sorted by
//!                                  (person_id, ts, event_id); unchanged buckets are hard links
//!     ids/part=0007/ids-g000002.parquet  event_id and content hash of every stored event,
//!                                  partitioned by event_id (deduplication index)
//!     identity.parquet             id -> person_id for every id linked to another one
//!     quarantine/run-000001.parquet  rejected rows of each run, with reasons
//!     .lease                       readers' shared locks keep the generation on disk (`lease`)
//!   failed/run-000004/quarantine.parquet   quarantine of a run refused by --max-reject-rate
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::checksum::FileSum;
use crate::lease::{Lease, Taken};

pub const STORE_FORMAT: &str = "funnel-store";
pub const STORE_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// The bucket a person's events live in: `xxh3_64(person_id) mod buckets`. The same function
/// partitions the event-id index by event_id.
pub fn bucket_of(person_id: &str, buckets: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(person_id.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// Row counts by outcome. `rows_read = rows_stored + rows_rejected + rows_duplicate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub rows_read: u64,
    pub rows_stored: u64,
    pub rows_rejected: u64,
    pub rows_duplicate: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.rows_read += other.rows_read;
        self.rows_stored += other.rows_stored;
        self.rows_rejected += other.rows_rejected;
        self.rows_duplicate += other.rows_duplicate;
        for (k, v) in &other.rejected_by_reason {
            *self.rejected_by_reason.entry(k.clone()).or_default() += v;
        }
    }

    /// Counts one rejected row with its reason.
    pub fn reject(&mut self, reason: &str) {
        self.rows_rejected += 1;
        *self
            .rejected_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub fn reconciles(&self) -> bool {
        self.rows_read == self.rows_stored + self.rows_rejected + self.rows_duplicate
            && self.rejected_by_reason.values().sum::<u64>() == self.rows_rejected
    }
}

/// One input file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    /// `csv`, `jsonl` or `parquet`.
    pub format: String,
    pub gzip: bool,
    pub bytes: u64,
    pub sha256: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// What one ingest run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: u64,
    pub tool_version: String,
    pub timezone: String,
    pub inputs: Vec<InputFile>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Persons whose events were re-keyed because this run linked them to another person.
    pub persons_merged: u64,
    /// Earliest and latest `ts` of the rows this run stored (RFC 3339, UTC).
    pub min_ts: Option<String>,
    pub max_ts: Option<String>,
    /// Relative path (in the generation directory) of this run's quarantine file, if any row was rejected.
    pub quarantine_file: Option<String>,
}

/// One bucket file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFile {
    pub bucket: u32,
    /// Relative to the generation directory.
    pub path: String,
    pub rows: u64,
    pub persons: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
}

/// One partition of the event-id index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdFile {
    pub partition: u32,
    /// Relative to the generation directory.
    pub path: String,
    pub rows: u64,
}

/// The manifest of one store generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub generation: u64,
    pub buckets: u32,
    /// Time zone used for calendar grouping (trends); the first run's `--timezone`.
    pub timezone: String,
    /// Property columns (export columns beyond the contract's), sorted. A bucket file written
    /// before a property first appeared lacks that column; readers treat it as null.
    pub properties: Vec<String>,
    pub event_files: Vec<EventFile>,
    /// The event-id index, partitioned by `xxh3_64(event_id) mod buckets`: the event_id and
    /// content hash of every stored event, for deduplication one partition at a time.
    pub id_files: Vec<IdFile>,
    pub identity_file: Option<String>,
    pub quarantine_files: Vec<String>,
    pub runs: Vec<RunRecord>,
    /// Sum over all runs.
    pub totals: Counts,
    pub events: u64,
    pub persons: u64,
    pub min_ts: Option<String>,
    pub max_ts: Option<String>,
    /// Size and checksum of every file of the generation (bucket files, id index files,
    /// identity, quarantine files), by path relative to the generation directory. Empty in
    /// manifests written before it existed; the next ingest computes what it carries over.
    #[serde(default)]
    pub files: BTreeMap<String, FileSum>,
}

impl Manifest {
    /// The latest event in the store (`None` for an empty store): the default cutoff.
    pub fn max_ts_ms(&self) -> Option<i64> {
        self.event_files.iter().map(|f| f.max_ts_ms).max()
    }

    pub fn empty(buckets: u32, timezone: &str) -> Manifest {
        Manifest {
            format: STORE_FORMAT.to_string(),
            format_version: STORE_FORMAT_VERSION,
            generation: 0,
            buckets,
            timezone: timezone.to_string(),
            properties: Vec::new(),
            event_files: Vec::new(),
            id_files: Vec::new(),
            identity_file: None,
            quarantine_files: Vec::new(),
            runs: Vec::new(),
            totals: Counts::default(),
            events: 0,
            persons: 0,
            min_ts: None,
            max_ts: None,
            files: BTreeMap::new(),
        }
    }

    /// Every file the manifest lists, with the row count it records where it records one
    /// (bucket and id index files).
    pub fn listed_files(&self) -> BTreeMap<&str, Option<u64>> {
        let mut out: BTreeMap<&str, Option<u64>> =
            self.files.keys().map(|k| (k.as_str(), None)).collect();
        for f in &self.event_files {
            out.insert(&f.path, Some(f.rows));
        }
        for f in &self.id_files {
            out.insert(&f.path, Some(f.rows));
        }
        out.extend(self.identity_file.iter().map(|f| (f.as_str(), None)));
        out.extend(self.quarantine_files.iter().map(|f| (f.as_str(), None)));
        out
    }
}

/// Paths of a store directory.
#[derive(Debug, Clone)]
pub struct StoreLayout {
    root: PathBuf,
}

impl StoreLayout {
    pub fn new(root: impl Into<PathBuf>) -> StoreLayout {
        StoreLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// `STORE/events`: the live generation's events for tools that glob a directory
    /// (`read_parquet('STORE/events/**/*.parquet')`), a link through `current` that never
    /// needs switching.
    pub fn events_link(&self) -> PathBuf {
        self.root.join("events")
    }

    /// What [`events_link`](Self::events_link) points at, relative to the store root.
    pub const EVENTS_LINK_TARGET: &'static str = "current/events";

    pub fn generation_name(generation: u64) -> String {
        format!("g{generation:06}")
    }

    pub fn generation_dir(&self, generation: u64) -> PathBuf {
        self.root.join(Self::generation_name(generation))
    }

    pub fn failed_dir(&self, run: u64) -> PathBuf {
        self.root.join("failed").join(format!("run-{run:06}"))
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }

    pub fn bucket_file(bucket: u32, generation: u64) -> String {
        format!("events/bucket={bucket:04}/part-g{generation:06}.parquet")
    }

    pub fn id_file(partition: u32, generation: u64) -> String {
        format!("ids/part={partition:04}/ids-g{generation:06}.parquet")
    }

    /// Scratch space of a running ingest (removed at its end, or by the next run after a kill).
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join(".scratch")
    }

    pub fn quarantine_file(run: u64) -> String {
        format!("quarantine/run-{run:06}.parquet")
    }

    pub const IDENTITY_FILE: &'static str = "identity.parquet";

    /// Whether `name` is a generation directory's name (`g` and six or more digits).
    pub fn is_generation_name(name: &str) -> bool {
        name.len() >= 7 && name.starts_with('g') && name[1..].bytes().all(|b| b.is_ascii_digit())
    }

    /// Whether `dir` is a funnel store or one of its generations: a root whose `current` link
    /// names a generation, a root with the lock file beside a generation or scratch directory
    /// (a store whose first run has not committed), or a directory whose `manifest.json` is a
    /// store manifest. Ingest never reads such a directory as input.
    pub fn looks_like_store(dir: &Path) -> bool {
        let layout = StoreLayout::new(dir);
        let current = std::fs::read_link(layout.current_link())
            .is_ok_and(|t| t.to_str().is_some_and(Self::is_generation_name));
        let locked_root = layout.lock_file().is_file()
            && (layout.scratch_dir().is_dir()
                || std::fs::read_dir(dir).is_ok_and(|entries| {
                    entries.flatten().any(|e| {
                        e.file_name().to_str().is_some_and(Self::is_generation_name)
                            && e.path().is_dir()
                    })
                }));
        let generation = std::fs::File::open(dir.join(MANIFEST_FILE)).is_ok_and(|f| {
            use std::io::Read;
            let mut head = Vec::with_capacity(512);
            f.take(512).read_to_end(&mut head).is_ok()
                && String::from_utf8_lossy(&head).contains(&format!("\"{STORE_FORMAT}\""))
        });
        current || locked_root || generation
    }

    /// The current generation, leased (see [`crate::lease`]): it stays on disk, exactly as its
    /// manifest describes it, for as long as the returned value lives, even when later ingests
    /// commit newer generations. `None` for a store with no committed run (or no directory).
    pub fn open_current(&self) -> Result<Option<Generation>, CoreError> {
        let link = self.current_link();
        for attempt in 0..OPEN_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
            }
            let target = match std::fs::read_link(&link) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(CoreError::Io { path: link, source }),
            };
            let dir = self.root.join(target);
            let lease = match Lease::take(&dir)? {
                Taken::Held(lease) => lease,
                Taken::Vanished => continue,
            };
            // Read only under the lease: a generation whose manifest is gone is being removed.
            let Some(manifest) = read_manifest(&dir.join(MANIFEST_FILE))? else {
                continue;
            };
            return Ok(Some(Generation {
                root: self.root.clone(),
                dir,
                manifest,
                _lease: lease,
            }));
        }
        Err(CoreError::GenerationMissing {
            path: link,
            attempts: OPEN_ATTEMPTS,
        })
    }

    /// Like [`StoreLayout::open_current`], but a missing store is an error.
    pub fn open_existing(&self) -> Result<Generation, CoreError> {
        self.open_current()?.ok_or_else(|| CoreError::NoStore {
            path: self.root.clone(),
        })
    }
}

/// How often [`StoreLayout::open_current`] reads `current` again when the generation it names
/// is removed before it can be leased (each commit retires the generation before it).
const OPEN_ATTEMPTS: u64 = 10;

/// The manifest at `path`, or `None` if there is none.
fn read_manifest(path: &Path) -> Result<Option<Manifest>, CoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|source| CoreError::BadManifest {
            path: path.to_path_buf(),
            source,
        })?;
    if manifest.format != STORE_FORMAT || manifest.format_version != STORE_FORMAT_VERSION {
        return Err(CoreError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: manifest.format,
            version: manifest.format_version,
            expected: STORE_FORMAT,
            expected_version: STORE_FORMAT_VERSION,
        });
    }
    Ok(Some(manifest))
}

/// One committed generation of a store, open for reading: its directory and manifest, and the
/// reader's [`Lease`] that keeps the directory on disk for as long as this value lives. Every
/// reader of a store holds one for the whole time it reads ([`StoreLayout::open_existing`]).
#[derive(Debug)]
pub struct Generation {
    root: PathBuf,
    dir: PathBuf,
    manifest: Manifest,
    _lease: Lease,
}

impl Generation {
    /// The store directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The generation's directory (`STORE/gNNNNNN`); the manifest's paths are relative to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable_and_in_range() {
        // Pinned values, computed with the Python `xxhash` package (xxh3_64, seed 0): changing
        // the hash would silently re-bucket every existing store.
        assert_eq!(
            bucket_of("wx_000001", 64),
            (3_722_237_488_030_346_918u64 % 64) as u32
        );
        assert_eq!(bucket_of("acct_0000017", 1000), 990);
        assert_eq!(bucket_of("", 1000), 138);
        for id in ["a", "b", "wx_1", "acct_9", ""] {
            assert!(bucket_of(id, 16) < 16);
        }
        assert_eq!(bucket_of("anything", 1), 0);
    }

    #[test]
    fn counts_reconcile() {
        let mut c = Counts {
            rows_read: 5,
            rows_stored: 3,
            rows_rejected: 1,
            rows_duplicate: 1,
            ..Counts::default()
        };
        c.rejected_by_reason.insert("bad_amount".into(), 1);
        assert!(c.reconciles());
        let mut d = c.clone();
        d.add(&c);
        assert_eq!(d.rows_read, 10);
        assert!(d.reconciles());
        d.rows_stored += 1;
        assert!(!d.reconciles());
    }

    #[test]
    fn stores_and_generations_are_recognised_and_other_folders_are_not() {
        let tmp = std::env::temp_dir().join(format!("funnel-looks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let (root, export) = (tmp.join("store"), tmp.join("export"));
        let generation = root.join("g000001");
        std::fs::create_dir_all(&generation).unwrap();
        std::fs::create_dir_all(&export).unwrap();
        // An export folder with a manifest of its own is not a store.
        std::fs::write(export.join(MANIFEST_FILE), r#"{"files": 3}"#).unwrap();
        assert!(!StoreLayout::looks_like_store(&export));
        assert!(!StoreLayout::looks_like_store(&root));
        let m = serde_json::to_string_pretty(&Manifest::empty(4, "UTC")).unwrap();
        std::fs::write(generation.join(MANIFEST_FILE), m).unwrap();
        assert!(StoreLayout::looks_like_store(&generation));
        // A root: the lock beside a generation, or the current link.
        std::fs::write(root.join(".lock"), "").unwrap();
        assert!(StoreLayout::looks_like_store(&root));
        std::fs::remove_file(root.join(".lock")).unwrap();
        std::os::unix::fs::symlink("g000001", root.join("current")).unwrap();
        assert!(StoreLayout::looks_like_store(&root));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn missing_store_is_none() {
        let layout = StoreLayout::new("/nonexistent/store/dir");
        assert!(layout.open_current().unwrap().is_none());
        assert!(matches!(
            layout.open_existing(),
            Err(CoreError::NoStore { .. })
        ));
    }
}
