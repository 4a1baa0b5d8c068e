//! Store integrity: every file of a generation against what its manifest records (size,
//! xxh3-128 checksum, a readable Parquet footer, row counts).
//!
//! An ingest checks every file it takes from the committed generation before it commits a new
//! one ([`Inventory`]): a file it reads back is checked whole first, a file it carries over
//! unchanged (a hard link) by size, footer and rows. [`verify`] checks them all, whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use funnel_core::{FileSum, Generation};
use parquet::file::metadata::ParquetMetaDataReader;

use crate::IngestError;

/// Checks the file at `path` against its recorded sum (if any) and row count (if any): it
/// exists, has the recorded size, a readable Parquet footer with the recorded rows, and, when
/// `whole`, the recorded checksum. The problem found first, in words, if any.
fn check_file(
    path: &Path,
    sum: Option<&FileSum>,
    rows: Option<u64>,
    whole: bool,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "missing".to_string(),
        _ => format!("cannot be opened: {e}"),
    })?;
    let bytes = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    if let Some(sum) = sum.filter(|s| s.bytes != bytes) {
        return Err(format!(
            "is {bytes} bytes, the manifest records {}",
            sum.bytes
        ));
    }
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| format!("its Parquet footer cannot be read: {e}"))?;
    crate::footer::check(&meta)?;
    let found = meta.file_metadata().num_rows();
    if let Some(rows) = rows.filter(|r| i64::try_from(*r) != Ok(found)) {
        return Err(format!("holds {found} rows, the manifest records {rows}"));
    }
    if let Some(sum) = sum.filter(|_| whole) {
        let actual = FileSum::of_file(path).map_err(|e| format!("cannot be read: {e}"))?;
        if actual.xxh3_128 != sum.xxh3_128 {
            return Err(format!(
                "its content changed: xxh3-128 {}, the manifest records {}",
                actual.xxh3_128, sum.xxh3_128
            ));
        }
    }
    Ok(())
}

/// The files of the generation an ingest writes, with their sums, and the checks of the files
/// it takes from the committed generation.
pub(crate) struct Inventory {
    /// The committed generation the run started from (`None` for a new store).
    prev_dir: Option<PathBuf>,
    /// Its recorded sums.
    prev: BTreeMap<String, FileSum>,
    gen_dir: PathBuf,
    files: BTreeMap<String, FileSum>,
}

impl Inventory {
    pub fn new(
        prev_dir: Option<PathBuf>,
        prev: BTreeMap<String, FileSum>,
        gen_dir: PathBuf,
    ) -> Inventory {
        Inventory {
            prev_dir,
            prev,
            gen_dir,
            files: BTreeMap::new(),
        }
    }

    fn prev_path(&self, rel: &str) -> PathBuf {
        self.prev_dir
            .as_deref()
            .expect("files imply a previous generation")
            .join(rel)
    }

    /// The path of a file of the committed generation that the run reads back, checked whole
    /// first (`rows`: the row count the manifest records for it).
    pub fn reread(&self, rel: &str, rows: Option<u64>) -> Result<PathBuf, IngestError> {
        let path = self.prev_path(rel);
        check_file(&path, self.prev.get(rel), rows, true)
            .map_err(|problem| IngestError::damaged(&path, problem))?;
        Ok(path)
    }

    /// Carries a file of the committed generation into the new one unchanged (a hard link, or
    /// a copy), with its recorded sum, after checking its size, footer and `rows`; a file of a
    /// store written before sums were recorded is summed now.
    pub fn carry(&mut self, rel: &str, rows: Option<u64>) -> Result<(), IngestError> {
        let from = self.prev_path(rel);
        let recorded = self.prev.get(rel);
        check_file(&from, recorded, rows, false)
            .map_err(|problem| IngestError::damaged(&from, problem))?;
        let sum = match recorded {
            Some(sum) => sum.clone(),
            None => FileSum::of_file(&from).map_err(|e| IngestError::damaged(&from, e))?,
        };
        let to = self.gen_dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| IngestError::store(parent, e))?;
        }
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| IngestError::store(&from, e))?;
        }
        self.files.insert(rel.to_string(), sum);
        Ok(())
    }

    /// A file the run wrote into the new generation.
    pub fn wrote(&mut self, rel: &str, sum: FileSum) {
        self.files.insert(rel.to_string(), sum);
    }

    /// The new generation's files with their sums ([`funnel_core::Manifest::files`]).
    pub fn into_files(self) -> BTreeMap<String, FileSum> {
        self.files
    }
}

/// One problem `funnel verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the generation directory, as the manifest lists it.
    pub file: String,
    pub path: PathBuf,
    pub problem: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub store: PathBuf,
    pub generation: u64,
    /// Files the manifest lists.
    pub files: u64,
    /// Their recorded size in all.
    pub bytes: u64,
    /// Files without a recorded checksum (a store written before checksums were recorded;
    /// its next ingest records them): checked by footer and rows only.
    pub unsummed: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// The damage found, as the error the CLI exits with (the first problem, and how many
    /// more there are), or `None` for a sound store.
    pub fn damage(&self) -> Option<IngestError> {
        let first = self.problems.first()?;
        let more = match self.problems.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more problem(s))"),
        };
        Some(IngestError::damaged(
            &first.path,
            format!("{}{more}", first.problem),
        ))
    }
}

/// Checks every file the generation's manifest lists, whole: it exists, has the recorded size
/// and checksum (where recorded), and a readable Parquet footer with the recorded rows.
pub fn verify(store: &Generation) -> VerifyReport {
    let manifest = store.manifest();
    let mut report = VerifyReport {
        store: store.root().to_path_buf(),
        generation: manifest.generation,
        files: 0,
        bytes: 0,
        unsummed: 0,
        problems: Vec::new(),
    };
    for (rel, rows) in manifest.listed_files() {
        let sum = manifest.files.get(rel);
        report.files += 1;
        match sum {
            Some(sum) => report.bytes += sum.bytes,
            None => report.unsummed += 1,
        }
        let path = store.dir().join(rel);
        if let Err(problem) = check_file(&path, sum, rows, true) {
            report.problems.push(Problem {
                file: rel.to_string(),
                path,
                problem,
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_by_size_footer_rows_and_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ids.parquet");
        let ids: Vec<(String, u64)> = (0..1000).map(|i| (format!("e{i:04}"), i)).collect();
        let sum = crate::store::write_ids(&path, &ids).unwrap();
        let check = |sum: Option<&FileSum>, rows, whole| check_file(&path, sum, rows, whole);
        assert_eq!(check(Some(&sum), Some(1000), true), Ok(()));
        assert_eq!(check(None, None, true), Ok(()));
        let rows = check(Some(&sum), Some(999), false).unwrap_err();
        assert_eq!(rows, "holds 1000 rows, the manifest records 999");
        let other = FileSum {
            xxh3_128: "0".repeat(32),
            ..sum.clone()
        };
        // Only a whole check reads the content.
        assert_eq!(check(Some(&other), Some(1000), false), Ok(()));
        assert!(
            check(Some(&other), None, true)
                .unwrap_err()
                .contains("content changed")
        );

        // Not Parquet at all: without a recorded sum the footer tells.
        std::fs::write(&path, b"event_id,user_id\n").unwrap();
        let footer = check(None, None, false).unwrap_err();
        assert!(footer.contains("Parquet footer"), "{footer}");
        let size = check(Some(&sum), None, false).unwrap_err();
        assert!(
            size.starts_with("is 17 bytes, the manifest records"),
            "{size}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(check(None, None, false).unwrap_err(), "missing");
    }
}
