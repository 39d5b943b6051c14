//! Key files in `<data_dir>/keys/`, generated on first start, one module for all of them:
//! - `registry-token.key` (P-256 scalar, hex) signs registry JWTs;
//! - `session-seal.key` (32 random bytes, hex) encrypts PDS sessions at rest;
//! - `hold-repo.key` (`p256:<hex>`) signs the hold's repo commits.
//!
//! The same rules for each (the stricter of the two modules this replaced): the directory
//! is 0700; a file is written 0600 to a temp file, fsynced, hard-linked into place (which
//! never overwrites, so two processes starting at once agree on one key) and the directory
//! fsynced; a file readable by group or others is refused, as ssh does. Key bytes are never
//! logged ([`SigningKey`]'s `Debug` prints only the public did:key).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atproto::repo::crypto::{KeyAlgorithm, SigningKey};

pub const TOKEN_KEY_FILE: &str = "registry-token.key";
pub const SEAL_KEY_FILE: &str = "session-seal.key";
pub const REPO_KEY_FILE: &str = "hold-repo.key";
pub const OAUTH_KEY_FILE: &str = "oauth-client.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is corrupt (expected {1})")]
    Corrupt(PathBuf, &'static str),
    #[error("key file {0} has mode {1:o}; it must not be readable by group or others (chmod 600)")]
    Permissions(PathBuf, u32),
}

/// How a 32-byte secret is written: optional prefix (`p256:`) + hex.
#[derive(Clone, Copy)]
struct Format {
    prefix: &'static str,
    expected: &'static str,
}

const HEX: Format = Format {
    prefix: "",
    expected: "64 hex characters",
};
const P256: Format = Format {
    prefix: "p256:",
    expected: "`p256:<64 hex>`",
};

fn read_secret(path: &Path, format: Format) -> Result<Option<[u8; 32]>, KeyError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::Io(path.into(), e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions(path.into(), mode));
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.into(), e))?;
    let corrupt = || KeyError::Corrupt(path.into(), format.expected);
    let hex_part = text
        .trim()
        .strip_prefix(format.prefix)
        .ok_or_else(corrupt)?;
    let bytes = hex::decode(hex_part).map_err(|_| corrupt())?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| corrupt())?;
    Ok(Some(arr))
}

/// Temp file (0600) + fsync, then a hard link to `path` (fails if it exists), then the
/// directory fsync.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |e| KeyError::Io(path.to_path_buf(), e);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let written = f.write_all(contents).and_then(|_| f.sync_all());
    drop(f);
    let linked = written.and_then(|_| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Reads a 32-byte secret, creating it with `generate` when missing.
fn load_or_create(
    path: &Path,
    format: Format,
    generate: impl FnOnce() -> [u8; 32],
) -> Result<[u8; 32], KeyError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| KeyError::Io(dir.into(), e))?;
    }
    if let Some(s) = read_secret(path, format)? {
        return Ok(s);
    }
    let secret = generate();
    let text = format!("{}{}\n", format.prefix, hex::encode(secret));
    match write_new(path, text.as_bytes()) {
        Ok(()) => Ok(secret),
        // Lost a race with another starter: use theirs.
        Err(KeyError::Io(_, e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path, format)?
                .ok_or_else(|| KeyError::Corrupt(path.into(), format.expected))
        }
        Err(e) => Err(e),
    }
}

fn p256_key(path: PathBuf, format: Format) -> Result<SigningKey, KeyError> {
    let bytes = load_or_create(&path, format, || SigningKey::generate_p256().to_bytes())?;
    SigningKey::from_bytes(KeyAlgorithm::P256, &bytes)
        .map_err(|_| KeyError::Corrupt(path, format.expected))
}

pub fn token_signing_key(keys_dir: &Path) -> Result<SigningKey, KeyError> {
    p256_key(keys_dir.join(TOKEN_KEY_FILE), HEX)
}

pub fn session_seal_key(keys_dir: &Path) -> Result<[u8; 32], KeyError> {
    load_or_create(&keys_dir.join(SEAL_KEY_FILE), HEX, || {
        let mut k = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        k
    })
}

/// The OAuth client's ES256 key (`private_key_jwt`; its public half is served as the JWKS).
pub fn oauth_client_key(keys_dir: &Path) -> Result<crate::atproto::dpop::Es256Key, KeyError> {
    let path = keys_dir.join(OAUTH_KEY_FILE);
    let key = p256_key(path.clone(), HEX)?;
    crate::atproto::dpop::Es256Key::from_bytes(&key.to_bytes())
        .map_err(|_| KeyError::Corrupt(path, HEX.expected))
}

/// The hold's repo signing key (P-256).
pub fn hold_repo_key(keys_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = keys_dir.join(REPO_KEY_FILE);
    let existed = path.exists();
    let key = p256_key(path, P256)?;
    if !existed {
        tracing::info!(public = %key.public_key().did_key(), "generated the hold repo signing key");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_created_once_with_0600_in_a_0700_dir() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = token_signing_key(&keys).unwrap();
        let b = token_signing_key(&keys).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(mode(&keys.join(TOKEN_KEY_FILE)), 0o600);
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(
            session_seal_key(&keys).unwrap(),
            session_seal_key(&keys).unwrap()
        );
        let h = hold_repo_key(&keys).unwrap();
        assert_eq!(h.public_key(), hold_repo_key(&keys).unwrap().public_key());
        assert!(std::fs::read_to_string(keys.join(REPO_KEY_FILE))
            .unwrap()
            .starts_with("p256:"));
        // No temp files are left behind.
        assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 3);
    }

    #[test]
    fn corrupt_and_exposed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        session_seal_key(&keys).unwrap();
        hold_repo_key(&keys).unwrap();
        let seal = keys.join(SEAL_KEY_FILE);
        std::fs::write(&seal, "zz").unwrap();
        assert!(matches!(
            session_seal_key(&keys),
            Err(KeyError::Corrupt(..))
        ));
        let repo = keys.join(REPO_KEY_FILE);
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            hold_repo_key(&keys),
            Err(KeyError::Permissions(..))
        ));
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&repo, "garbage").unwrap();
        assert!(matches!(hold_repo_key(&keys), Err(KeyError::Corrupt(..))));
    }

    #[test]
    fn concurrent_starters_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let k = keys.clone();
                std::thread::spawn(move || token_signing_key(&k).unwrap().to_bytes())
            })
            .collect();
        let all: Vec<[u8; 32]> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(all.iter().all(|k| *k == all[0]));
    }
}
