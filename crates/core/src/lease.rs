//! Reader leases: a generation stays on disk while a reader uses it.
//!
//! Every committed generation has a lease file, `gNNNNNN/.lease`, created by the ingest that
//! commits it (a reader of a store written before leases creates it). A reader holds a shared
//! advisory lock on it ([`Lease`], taken by [`crate::StoreLayout::open_current`]) for as long as
//! it reads the generation. An ingest removes a superseded generation only if it can take the
//! exclusive lock without waiting ([`remove_unleased`]), and leaves it for a later run
//! otherwise.
//!
//! The removal deletes the manifest first, under the exclusive lock, and a reader checks the
//! manifest only after taking its lock; so a reader either holds its lock before the removal
//! starts (and the removal is skipped) or finds the manifest gone and opens `current` again.

use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

use crate::{CoreError, MANIFEST_FILE};

/// The lease file of a generation directory.
pub const LEASE_FILE: &str = ".lease";

/// A reader's shared lock on one generation's lease file: while it lives, no ingest removes
/// the generation. Released on drop.
#[derive(Debug)]
pub struct Lease {
    /// `None`: the store is read-only and has no lease file, so nothing can remove the
    /// generation either; it is read unleased.
    file: Option<File>,
}

/// What [`Lease::take`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    Held(Lease),
    /// The generation is gone or being removed: open `current` again.
    Vanished,
}

impl Lease {
    /// Takes a shared lease on the generation in `dir`, creating its lease file if a store
    /// written before leases lacks it (or reading unleased if the store is read-only).
    pub(crate) fn take(dir: &Path) -> Result<Taken, CoreError> {
        let path = dir.join(LEASE_FILE);
        let io = |source| CoreError::Io {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                {
                    Ok(f) => f,
                    // The directory itself is gone.
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Taken::Vanished),
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
                        ) =>
                    {
                        return Ok(Taken::Held(Lease { file: None }));
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Taken::Held(Lease { file: Some(file) })),
            // An ingest holds it exclusively: it is removing the generation.
            Err(TryLockError::WouldBlock) => Ok(Taken::Vanished),
            Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {
                Ok(Taken::Held(Lease { file: None }))
            }
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// False when the generation is read unleased (a read-only store without lease file).
    pub fn is_held(&self) -> bool {
        self.file.is_some()
    }
}

/// Creates the lease file of a new generation directory (before it is committed).
pub fn create_lease_file(dir: &Path) -> Result<(), CoreError> {
    let path = dir.join(LEASE_FILE);
    File::create(&path)
        .and_then(|f| f.sync_all())
        .map_err(|source| CoreError::Io { path, source })
}

/// Removes the generation directory `dir` unless a reader holds its lease (taking the lease
/// file's exclusive lock without waiting). Returns whether it is gone.
pub fn remove_unleased(dir: &Path) -> Result<bool, CoreError> {
    let path = dir.join(LEASE_FILE);
    let io = |path: &Path, source| CoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(!dir.exists()),
        Err(e) => return Err(io(&path, e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => return Err(io(&path, e)),
    }
    // The manifest first: a reader that takes a lease from now on finds it gone.
    let manifest = dir.join(MANIFEST_FILE);
    match std::fs::remove_file(&manifest) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(&manifest, e)),
    }
    std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    drop(file);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(root: &Path) -> std::path::PathBuf {
        let dir = root.join("g000001");
        std::fs::create_dir_all(dir.join("events")).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), "{}").unwrap();
        std::fs::write(dir.join("events/part.parquet"), "x").unwrap();
        dir
    }

    #[test]
    fn a_leased_generation_is_removed_only_once_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = generation(tmp.path());
        create_lease_file(&dir).unwrap();
        let Taken::Held(lease) = Lease::take(&dir).unwrap() else {
            panic!("a committed generation can be leased");
        };
        assert!(lease.is_held());
        assert!(!remove_unleased(&dir).unwrap());
        assert!(dir.join("events/part.parquet").exists());
        // A second reader shares the lease.
        assert!(matches!(Lease::take(&dir).unwrap(), Taken::Held(_)));
        drop(lease);
        assert!(remove_unleased(&dir).unwrap());
        assert!(!dir.exists());
        assert!(matches!(Lease::take(&dir).unwrap(), Taken::Vanished));
        assert!(remove_unleased(&dir).unwrap());
    }

    #[test]
    fn a_generation_under_removal_has_vanished_for_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = generation(tmp.path());
        create_lease_file(&dir).unwrap();
        let remover = File::options()
            .write(true)
            .open(dir.join(LEASE_FILE))
            .unwrap();
        remover.lock().unwrap();
        assert!(matches!(Lease::take(&dir).unwrap(), Taken::Vanished));
    }

    #[test]
    fn a_store_from_before_leases_gets_its_lease_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = generation(tmp.path());
        assert!(matches!(Lease::take(&dir).unwrap(), Taken::Held(l) if l.is_held()));
        assert!(dir.join(LEASE_FILE).is_file());
    }
}
