//! The hold's repo signing key: P-256, generated on first start into
//! `<data_dir>/keys/hold-repo.key` (mode 0600, directory 0700) and loaded afterwards.
//!
//! File format: one line `p256:<64 hex chars>` (the private scalar). A key file readable by
//! group or others is refused, as ssh does. The key is never logged ([`SigningKey`]'s
//! `Debug` prints only the public did:key).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atproto::repo::{KeyAlgorithm, SigningKey};

pub const REPO_KEY_FILE: &str = "hold-repo.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is not valid (expected `p256:<64 hex>`)")]
    Format(PathBuf),
    #[error("key file {0} has mode {1:o}; it must not be readable by group or others (chmod 600)")]
    Permissions(PathBuf, u32),
}

/// Loads the repo key from `keys_dir`, generating it if the file does not exist.
pub fn load_or_generate(keys_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = keys_dir.join(REPO_KEY_FILE);
    match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions(path, mode));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| KeyError::Io(path.clone(), e))?;
            parse(&text).ok_or(KeyError::Format(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate_p256();
            write_new(keys_dir, &path, &key)?;
            tracing::info!(public = %key.public_key().did_key(), "generated the hold repo signing key");
            Ok(key)
        }
        Err(e) => Err(KeyError::Io(path, e)),
    }
}

fn parse(text: &str) -> Option<SigningKey> {
    let hex_part = text.trim().strip_prefix("p256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    SigningKey::from_bytes(KeyAlgorithm::P256, &bytes).ok()
}

/// Writes to a 0600 temp file, fsyncs, renames into place and fsyncs the directory.
fn write_new(dir: &Path, path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let io = |e| KeyError::Io(path.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let tmp = dir.join(format!("{REPO_KEY_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    writeln!(f, "p256:{}", hex::encode(key.to_bytes())).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_loaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = load_or_generate(&keys).unwrap();
        let mode = std::fs::metadata(keys.join(REPO_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_generate(&keys).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::set_permissions(
            keys.join(REPO_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            load_or_generate(&keys),
            Err(KeyError::Permissions(..))
        ));
        std::fs::set_permissions(
            keys.join(REPO_KEY_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(keys.join(REPO_KEY_FILE), "garbage").unwrap();
        assert!(matches!(load_or_generate(&keys), Err(KeyError::Format(_))));
    }
}
