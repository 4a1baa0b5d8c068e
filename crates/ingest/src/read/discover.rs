//! Which files an ingest reads: inputs expanded into files, in sorted path order.
//!
//! - A directory is walked recursively; symlinks are followed, but every directory is walked at
//!   most once (by device and inode), so a symlink loop is reported once and never hangs.
//! - Every file is read at most once, whatever paths name it (`x`, `./x`, an absolute path, a
//!   symlink or a hard link): the first path in sorted order is kept.
//! - Only regular files are read: a FIFO or a device named `*.csv` is skipped in a directory
//!   and refused when named.
//! - Nothing inside a funnel store is input: the target store, and any directory that is a
//!   store or a store generation, is skipped in a directory and refused when named.
//! - Hidden names and unsupported extensions are skipped in directories; an unsupported file
//!   named directly is an error.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use funnel_core::StoreLayout;

use crate::IngestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    /// The format of a [`Format::name`].
    pub fn from_name(name: &str) -> Option<Format> {
        [Format::Csv, Format::Jsonl, Format::Parquet]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InputSpec {
    pub path: PathBuf,
    pub format: Format,
    pub gzip: bool,
}

/// A path met in an input directory (or named twice) that is not read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: String,
}

/// The files to read, in sorted path order, and what was passed over.
#[derive(Debug, Default)]
pub(crate) struct Discovered {
    pub files: Vec<InputSpec>,
    pub skipped: Vec<Skipped>,
}

/// The format of a file by its extension (CONTRACT §1), or `None` if unsupported.
pub(crate) fn classify(path: &Path) -> Option<(Format, bool)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, gzip) = match name.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (name.as_str(), false),
    };
    let format = if stem.ends_with(".csv") {
        Format::Csv
    } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else if stem.ends_with(".parquet") && !gzip {
        Format::Parquet
    } else {
        return None;
    };
    Some((format, gzip))
}

/// A file or directory identity: device and inode.
type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

struct Walk {
    /// The target store's root, if it exists already.
    store: Option<FileId>,
    dirs: HashSet<FileId>,
    found: Vec<(PathBuf, FileId, Format, bool)>,
    skipped: Vec<Skipped>,
}

impl Walk {
    fn skip(&mut self, path: PathBuf, why: impl Into<String>) {
        self.skipped.push(Skipped {
            path,
            why: why.into(),
        });
    }

    /// Whether `dir` is the target store, or any funnel store or store generation.
    fn is_store(&self, dir: &Path, id: FileId) -> bool {
        Some(id) == self.store || StoreLayout::looks_like_store(dir)
    }

    fn dir(&mut self, dir: &Path, id: FileId) -> Result<(), IngestError> {
        if !self.dirs.insert(id) {
            self.skip(
                dir.to_path_buf(),
                "directory already walked (a symlink loop or a second link to it)",
            );
            return Ok(());
        }
        if self.is_store(dir, id) {
            self.skip(dir.to_path_buf(), "a funnel store (never read as input)");
            return Ok(());
        }
        let entries = std::fs::read_dir(dir).map_err(|e| IngestError::unreadable(dir, None, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IngestError::unreadable(dir, None, e))?;
            paths.push((
                entry.path(),
                entry.file_name().to_string_lossy().starts_with('.'),
            ));
        }
        paths.sort();
        for (path, hidden) in paths {
            if hidden {
                self.skip(path, "hidden name");
                continue;
            }
            // Follows symlinks; a dangling one cannot be read.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.skip(path, format!("cannot be opened: {e}"));
                    continue;
                }
            };
            if meta.is_dir() {
                self.dir(&path, file_id(&meta))?;
            } else {
                match classify(&path) {
                    None => self.skip(path, "unsupported file type"),
                    Some(_) if !meta.is_file() => {
                        self.skip(path, "not a regular file (a FIFO, socket or device)")
                    }
                    Some((format, gzip)) => {
                        self.found.push((path, file_id(&meta), format, gzip));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Expands `inputs` into the files to read (see the module docs); `store` is the target store,
/// whose contents are never input.
pub(crate) fn discover(inputs: &[PathBuf], store: &Path) -> Result<Discovered, IngestError> {
    let mut walk = Walk {
        store: std::fs::metadata(store).ok().map(|m| file_id(&m)),
        dirs: HashSet::new(),
        found: Vec::new(),
        skipped: Vec::new(),
    };
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IngestError::InputNotFound {
                path: input.clone(),
            },
            _ => IngestError::unreadable(input, None, e),
        })?;
        if let Some(store_dir) = enclosing_store(input, walk.store)? {
            return Err(IngestError::InsideStore {
                path: input.clone(),
                store: store_dir,
            });
        }
        if meta.is_dir() {
            walk.dir(input, file_id(&meta))?;
            continue;
        }
        let (format, gzip) = classify(input).ok_or_else(|| IngestError::UnsupportedInput {
            path: input.clone(),
        })?;
        if !meta.is_file() {
            return Err(IngestError::unreadable(
                input,
                None,
                "not a regular file (a FIFO, socket or device cannot be ingested)",
            ));
        }
        walk.found
            .push((input.clone(), file_id(&meta), format, gzip));
    }
    let Walk {
        mut found,
        mut skipped,
        ..
    } = walk;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    // The first path (in sorted order) of each file.
    let mut first: HashMap<FileId, PathBuf> = HashMap::new();
    let mut files = Vec::new();
    for (path, id, format, gzip) in found {
        match first.get(&id) {
            Some(kept) => skipped.push(Skipped {
                why: format!("the same file as {} (read once)", kept.display()),
                path,
            }),
            None => {
                first.insert(id, path.clone());
                files.push(InputSpec { path, format, gzip });
            }
        }
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Discovered { files, skipped })
}

/// The store directory `path` is in (or is), if any: the target store (by identity) or any
/// directory that looks like a store or a store generation.
fn enclosing_store(path: &Path, store: Option<FileId>) -> Result<Option<PathBuf>, IngestError> {
    let full = std::fs::canonicalize(path).map_err(|e| IngestError::unreadable(path, None, e))?;
    for dir in full.ancestors() {
        let is_target =
            store.is_some() && std::fs::metadata(dir).ok().map(|m| file_id(&m)) == store;
        if is_target || dir.is_dir() && StoreLayout::looks_like_store(dir) {
            return Ok(Some(dir.to_path_buf()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        let c = |p: &str| classify(Path::new(p));
        assert_eq!(c("a/b.csv"), Some((Format::Csv, false)));
        assert_eq!(c("b.CSV.GZ"), Some((Format::Csv, true)));
        assert_eq!(c("b.jsonl.gz"), Some((Format::Jsonl, true)));
        assert_eq!(c("b.ndjson"), Some((Format::Jsonl, false)));
        assert_eq!(c("b.parquet"), Some((Format::Parquet, false)));
        assert_eq!(c("b.parquet.gz"), None);
        assert_eq!(c("b.json"), None);
        assert_eq!(c("b.txt"), None);
        assert_eq!(c("csv"), None);
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "event_id\n").unwrap();
    }

    fn names(d: &Discovered, root: &Path) -> Vec<String> {
        d.files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn symlink_loops_are_walked_once_and_reported_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        touch(&d.join("sub/a.csv"));
        std::os::unix::fs::symlink(".", d.join("self")).unwrap();
        std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
        let found = discover(std::slice::from_ref(&d), &tmp.path().join("s")).unwrap();
        assert_eq!(names(&found, &d), ["sub/a.csv"]);
        let loops: Vec<_> = found
            .skipped
            .iter()
            .filter(|s| s.why.contains("already walked"))
            .map(|s| s.path.strip_prefix(&d).unwrap().display().to_string())
            .collect();
        assert_eq!(loops, ["self", "sub/up"]);
    }

    #[test]
    fn a_file_is_read_once_whatever_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let x = tmp.path().join("x.csv");
        touch(&x);
        std::fs::hard_link(&x, tmp.path().join("y.csv")).unwrap();
        std::os::unix::fs::symlink("x.csv", tmp.path().join("z.csv")).unwrap();
        let dotted = tmp.path().join(".").join("x.csv");
        let inputs = [x.clone(), dotted, tmp.path().to_path_buf()];
        let found = discover(&inputs, &tmp.path().join("store")).unwrap();
        assert_eq!(found.files.len(), 1, "{found:?}");
        assert_eq!(
            found
                .skipped
                .iter()
                .filter(|s| s.why.starts_with("the same file as"))
                .count(),
            4
        );
    }

    #[test]
    fn fifos_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("pipe.csv");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let found = discover(&[tmp.path().to_path_buf()], &tmp.path().join("s")).unwrap();
        assert!(found.files.is_empty());
        assert!(found.skipped[0].why.contains("not a regular file"));
        let err = discover(&[fifo], &tmp.path().join("s")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
