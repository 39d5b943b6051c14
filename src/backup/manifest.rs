//! `manifest.json`: what a backup holds (every file with its size and SHA-256), where it came
//! from, and where the blobs are. Read back with limits: it is outside data to `atcr restore`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BackupError, BLOBS_FILE, CONFIG_FILE, INDEX_FILE, KEYS_DIR};

pub const FORMAT: &str = "atcr-backup/1";
/// Largest manifest read back.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most files one backup may list.
const MAX_FILES: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub atcr_version: String,
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Taken from a running server (its control socket) rather than from stopped files.
    pub online: bool,
    pub files: Vec<FileEntry>,
    pub blobs: BlobsInfo,
    /// Entries of the data dir this backup does not hold (the blob store, uploads in flight).
    #[serde(default)]
    pub not_included: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup directory.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Blobs are never in a backup; this says where they are and, on a filesystem, lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobsInfo {
    /// `filesystem` or `s3`.
    pub backend: String,
    /// The blob directory, or `s3://bucket/prefix`.
    pub location: String,
    /// Number and total size of the blobs on disk at backup time (filesystem only).
    pub count: Option<u64>,
    pub bytes: Option<u64>,
    /// The file listing them (`<digest> <size>` per line), filesystem only.
    pub list: Option<String>,
}

/// The relative paths a backup may hold (besides `manifest.json` and `SHA256SUMS`): top-level
/// `*.redb` files, the index, the config, the blob list, and files in `keys/`.
pub fn allowed_path(path: &str) -> bool {
    let plain = |name: &str| {
        !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    match path.split_once('/') {
        None => {
            [INDEX_FILE, CONFIG_FILE, BLOBS_FILE].contains(&path)
                || (plain(path) && path.ends_with(".redb"))
        }
        Some((dir, name)) => dir == KEYS_DIR && plain(name),
    }
}

impl Manifest {
    /// Read and check `<dir>/manifest.json`: format, sizes, names (no path escapes the
    /// backup), no duplicates.
    pub fn read(dir: &Path) -> Result<Manifest, BackupError> {
        use std::io::Read;
        let path = dir.join(super::MANIFEST_FILE);
        let file = std::fs::File::open(&path).map_err(|e| BackupError::io(&path, e))?;
        let mut text = String::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| BackupError::io(&path, e))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(BackupError::Invalid(format!(
                "{} is larger than {MAX_MANIFEST_BYTES} bytes",
                path.display()
            )));
        }
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| BackupError::Invalid(format!("{}: {e}", path.display())))?;
        if m.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "{}: format {:?}, this atcr reads {FORMAT:?}",
                path.display(),
                m.format
            )));
        }
        if m.files.len() > MAX_FILES {
            return Err(BackupError::Invalid(format!(
                "{}: more than {MAX_FILES} files",
                path.display()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &m.files {
            if !allowed_path(&f.path) {
                return Err(BackupError::Invalid(format!(
                    "{}: {:?} is not a file a backup holds",
                    path.display(),
                    f.path
                )));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(BackupError::Invalid(format!(
                    "{}: {:?} is listed twice",
                    path.display(),
                    f.path
                )));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BackupError::Invalid(format!(
                    "{}: bad sha256 for {:?}",
                    path.display(),
                    f.path
                )));
            }
        }
        Ok(m)
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backup_files_are_allowed() {
        for ok in [
            "registry.redb",
            "hold.redb",
            "outbox.redb",
            "index.db",
            "config.toml",
            "blobs.txt",
            "keys/hold-repo.key",
        ] {
            assert!(allowed_path(ok), "{ok}");
        }
        for bad in [
            "../registry.redb",
            "/etc/passwd",
            "keys/../x",
            "keys/.hidden",
            "keys/a/b",
            "blobs/sha256/ab",
            "x.db",
            ".redb",
            "a b.redb",
            "keys/",
            "",
        ] {
            assert!(!allowed_path(bad), "{bad}");
        }
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_backup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = serde_json::json!({
            "format": FORMAT, "name": "atcr-backup-20260101T000000Z", "created": "x",
            "atcr_version": "0", "hostname": "h", "data_dir": "/d", "online": true,
            "files": [{"path": "registry.redb", "size": 1, "sha256": "a".repeat(64)}],
            "blobs": {"backend": "s3", "location": "s3://b/p", "count": null, "bytes": null, "list": null}
        });
        let write = |m: &serde_json::Value| {
            std::fs::write(dir.path().join("manifest.json"), m.to_string()).unwrap()
        };
        write(&m);
        assert!(Manifest::read(dir.path()).is_ok());
        m["files"][0]["path"] = "../../etc/shadow".into();
        write(&m);
        let e = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a file a backup holds"), "{e}");
        m["files"][0]["path"] = "registry.redb".into();
        m["format"] = "atcr-backup/9".into();
        write(&m);
        assert!(Manifest::read(dir.path()).is_err());
    }
}
