//! One consistent copy of the data dir's state (everything except blobs) into a directory:
//! every `*.redb` file of the data dir ([`crate::redb_file::snapshot`], through the handle
//! this process has open, else opened exclusively), the local index (`VACUUM INTO`) and the
//! key files. Run inside `atcr serve` (asked over the control socket) or by `atcr backup`
//! itself when no server runs.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::redb_file;

use super::{BackupError, INDEX_FILE, KEYS_DIR};

/// A file written by [`take`]: its path relative to the snapshot directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Taken {
    pub path: String,
    pub size: u64,
}

/// The `*.redb` files directly in `data_dir`, sorted.
pub fn redb_files(data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(data_dir) {
        Ok(entries) => {
            for e in entries {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "redb") && p.is_file() {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Write the snapshot into the existing, empty directory `into`.
pub async fn take(config: &Config, into: &Path) -> Result<Vec<Taken>, BackupError> {
    let data_dir = config.server.data_dir.clone();
    let mut taken = Vec::new();
    // redb files, one at a time: each holds only its own database's write lock.
    let open = redb_file::open_under(&data_dir);
    for path in redb_files(&data_dir).map_err(|e| BackupError::io(&data_dir, e))? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = into.join(&name);
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let handle = open
            .iter()
            .find(|(p, _)| *p == canonical)
            .map(|(_, db)| db.clone());
        let size = tokio::task::spawn_blocking(move || match handle {
            Some(db) => redb_file::snapshot(&db, &path, &dest),
            None => redb_file::snapshot_closed(&path, &dest),
        })
        .await
        .map_err(|e| BackupError::Other(format!("snapshot task: {e}")))??;
        taken.push(Taken { path: name, size });
    }
    // The index, unless it is an embedded replica (its primary holds the rows).
    let index = config.index_path();
    if config.index.primary_url.is_empty() && index.exists() {
        let dest = into.join(INDEX_FILE);
        crate::index::snapshot_file(&index, &dest)
            .await
            .map_err(|e| BackupError::Other(format!("index {}: {e}", index.display())))?;
        taken.push(Taken {
            path: INDEX_FILE.into(),
            size: private_size(&dest)?,
        });
    }
    // Keys: written once, never rewritten (auth/keys.rs), so a plain copy is consistent.
    let keys = data_dir.join(KEYS_DIR);
    if keys.is_dir() {
        let dest_dir = into.join(KEYS_DIR);
        super::create_private_dir(&dest_dir)?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(&keys).map_err(|e| BackupError::io(&keys, e))? {
            let e = e.map_err(|e| BackupError::io(&keys, e))?;
            if e.file_type()
                .map_err(|e| BackupError::io(&keys, e))?
                .is_file()
            {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for name in names {
            let dest = dest_dir.join(&name);
            super::copy_private(&keys.join(&name), &dest)?;
            taken.push(Taken {
                path: format!("{KEYS_DIR}/{name}"),
                size: private_size(&dest)?,
            });
        }
    }
    Ok(taken)
}

/// Make `path` 0600 and return its size.
fn private_size(path: &Path) -> Result<u64, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| BackupError::io(path, e))?;
    Ok(std::fs::metadata(path)
        .map_err(|e| BackupError::io(path, e))?
        .len())
}
