//! The data-dir lock (`<data_dir>/atcr.lock`): `atcr serve` holds it while it runs, `atcr
//! restore` and an offline `atcr backup` hold it while they work, so a restore can never
//! replace files under a running server and a server cannot start in the middle of a restore.
//! It is an `flock`, so it goes away with its process, however that ends.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "atcr.lock";

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is in use by {holder} (stop it first)")]
    Busy { path: PathBuf, holder: String },
    #[error("cannot lock {0}: {1}")]
    Io(PathBuf, io::Error),
}

impl DataDirLock {
    /// Take the lock of `data_dir` (created when missing) for `what` (written into the file
    /// with our pid, so the next one to try can say who holds it). Never waits.
    pub fn acquire(data_dir: &Path, what: &str) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io_err = |e| LockError::Io(path.clone(), e);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        own_like(&path, data_dir).map_err(io_err)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(e));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Busy {
                path: data_dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "another atcr process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{what} (pid {})", std::process::id()).map_err(io_err)?;
        Ok(DataDirLock { _file: file })
    }
}

/// Give `path` the owner and group of `reference` when we are root and they differ: files
/// that `atcr restore` or an offline `atcr backup` (run as root) create in the data dir must
/// stay usable by the service's user.
pub fn own_like(path: &Path, reference: &Path) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let want = std::fs::metadata(reference)?;
    let have = std::fs::symlink_metadata(path)?;
    if have.uid() != want.uid() || have.gid() != want.gid() {
        std::os::unix::fs::lchown(path, Some(want.uid()), Some(want.gid()))?;
    }
    Ok(())
}

/// [`own_like`] for `path` and everything below it.
pub fn own_like_tree(path: &Path, reference: &Path) -> io::Result<()> {
    own_like(path, reference)?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            own_like_tree(&entry?.path(), reference)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path(), "atcr serve").unwrap();
        let err = DataDirLock::acquire(dir.path(), "atcr restore").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{msg}");
        assert!(
            msg.contains(&format!("atcr serve (pid {})", std::process::id())),
            "{msg}"
        );
        drop(held);
        DataDirLock::acquire(dir.path(), "atcr restore").unwrap();
    }
}
