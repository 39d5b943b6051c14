//! Key files in `<data_dir>/keys/` (directory 0700, files 0600), generated on first start:
//! `registry-token.key` (P-256 scalar, hex) signs registry JWTs; `session-seal.key`
//! (32 random bytes, hex) encrypts PDS sessions at rest.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atproto::repo::crypto::{KeyAlgorithm, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is corrupt")]
    Corrupt(PathBuf),
}

fn create_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KeyError::Io(path.into(), e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyError::Io(path.into(), e))
}

fn read_secret(path: &Path) -> Result<Option<[u8; 32]>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Corrupt(path.into()))?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| KeyError::Corrupt(path.into()))?;
            Ok(Some(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::Io(path.into(), e)),
    }
}

/// Reads a hex-encoded 32-byte secret, creating it with `generate` when missing.
fn load_or_create(path: &Path, generate: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32], KeyError> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| KeyError::Io(dir.into(), e))?;
    }
    if let Some(s) = read_secret(path)? {
        return Ok(s);
    }
    let secret = generate();
    match create_private(path, hex::encode(secret).as_bytes()) {
        Ok(()) => Ok(secret),
        // Lost a race with another starter: use theirs.
        Err(KeyError::Io(_, e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path)?.ok_or_else(|| KeyError::Corrupt(path.into()))
        }
        Err(e) => Err(e),
    }
}

pub fn token_signing_key(keys_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = keys_dir.join("registry-token.key");
    let bytes = load_or_create(&path, || SigningKey::generate_p256().to_bytes())?;
    SigningKey::from_bytes(KeyAlgorithm::P256, &bytes).map_err(|_| KeyError::Corrupt(path))
}

pub fn session_seal_key(keys_dir: &Path) -> Result<[u8; 32], KeyError> {
    load_or_create(&keys_dir.join("session-seal.key"), || {
        let mut k = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        k
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_created_once_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = token_signing_key(&keys).unwrap();
        let b = token_signing_key(&keys).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        let mode = std::fs::metadata(keys.join("registry-token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            session_seal_key(&keys).unwrap(),
            session_seal_key(&keys).unwrap()
        );
        std::fs::write(keys.join("session-seal.key"), "zz").unwrap();
        assert!(session_seal_key(&keys).is_err());
    }
}
