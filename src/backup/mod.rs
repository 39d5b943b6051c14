//! `atcr backup` and `atcr restore`.
//!
//! A backup is a directory `atcr-backup-<UTC time>` (0700, files 0600) in a target directory
//! or under an S3 prefix, holding a consistent snapshot of the data dir's state without the
//! blobs:
//! ```text
//! registry.redb, hold.redb, <any other>.redb   redb files (redb_file::snapshot)
//! index.db                                      the local index (VACUUM INTO); not for a replica
//! keys/hold-repo.key, registry-token.key, session-seal.key   what nothing can recreate
//! config.toml                                   the config file in use
//! blobs.txt                                     `<digest> <size>` of every blob on disk (filesystem store)
//! SHA256SUMS                                    `sha256sum -c` format
//! manifest.json                                 format, time, versions, files with sizes and SHA-256
//! ```
//! The databases are copied by the process that has them open: a running `atcr serve` is
//! asked over its control socket ([`control`]); with no server, `atcr backup` takes the
//! data-dir lock ([`lock`]) and copies them itself. Blobs are never copied: the manifest says
//! where they live (the bucket, or the blob directory and its list), and the operator backs
//! those up (after the backup, so that every blob it names is there).
//!
//! `atcr restore` ([`restore`]) copies a backup into a staging directory, checks every size
//! and checksum, opens the redb copies and checks their integrity (and the index's), and only
//! then, holding the data-dir lock (so never under a running server), moves the files it
//! replaces aside into `before-restore-<time>/` and puts the new ones in place.

pub mod control;
pub mod lock;
pub mod manifest;
mod restore;
pub mod snapshot;
pub mod target;

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use crate::blob::BlobStore;
use crate::config::Config;
pub use lock::DataDirLock;
use manifest::{BlobsInfo, FileEntry, Manifest};
pub use restore::{restore, RestoreOptions, RestoreReport};
use target::{Listed, Target, NAME_PREFIX};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SUMS_FILE: &str = "SHA256SUMS";
pub const INDEX_FILE: &str = "index.db";
pub const KEYS_DIR: &str = "keys";
pub const CONFIG_FILE: &str = "config.toml";
pub const BLOBS_FILE: &str = "blobs.txt";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    /// The command line or the configuration asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The backup read back is damaged, incomplete or not a backup.
    #[error("{0}")]
    Invalid(String),
    /// Refused to protect data: a server runs, or there is data a restore would replace.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Snapshot(#[from] crate::redb_file::SnapshotError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("{0}")]
    Other(String),
}

impl BackupError {
    pub fn io(path: &Path, e: io::Error) -> BackupError {
        BackupError::Io(path.to_path_buf(), e)
    }
}

/// What one `atcr backup` did.
#[derive(Debug)]
pub struct BackupReport {
    pub name: String,
    /// The backup's directory or `s3://` URL.
    pub location: String,
    pub manifest: Manifest,
    /// Older backups deleted by the retention rule (and abandoned partial ones).
    pub removed: Vec<String>,
    pub seconds: f64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "backup {} written to {} ({} snapshot, {:.1} s)",
            self.name,
            self.location,
            if m.online { "online" } else { "offline" },
            self.seconds
        )?;
        for file in &m.files {
            writeln!(
                f,
                "  {:<28} {:>12} bytes  sha256:{}",
                file.path, file.size, file.sha256
            )?;
        }
        let b = &m.blobs;
        match (b.count, b.bytes) {
            (Some(n), Some(bytes)) => writeln!(
                f,
                "blobs: NOT copied: {n} blob(s), {bytes} bytes in {} (listed in {}): back that \
                 directory up too, after this backup",
                b.location,
                b.list.as_deref().unwrap_or("-")
            )?,
            _ => writeln!(
                f,
                "blobs: NOT copied: they stay in {} (back up or version the bucket)",
                b.location
            )?,
        }
        if !m.not_included.is_empty() {
            writeln!(
                f,
                "not in the backup (data dir): {}",
                m.not_included.join(", ")
            )?;
        }
        for name in &self.removed {
            writeln!(f, "removed old backup {name} (backup.keep)")?;
        }
        Ok(())
    }
}

/// Back up the data dir of `config` (and `config_file`) to `target`, then apply retention
/// (`backup.keep`).
pub async fn backup(
    config: &Config,
    config_file: Option<&Path>,
    target: &str,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let data_dir = &config.server.data_dir;
    if !data_dir.is_dir() {
        return Err(BackupError::Usage(format!(
            "data dir {} does not exist: nothing to back up",
            data_dir.display()
        )));
    }
    let target = Target::open(config, target)?;
    let created = crate::pds::now_rfc3339();
    let name = format!("{NAME_PREFIX}{}", compact_time(&created));
    let work = target.work_dir(&name)?;
    let result = async {
        let online = snapshot_into(config, &work).await?;
        if let Some(path) = config_file {
            copy_private(path, &work.join(CONFIG_FILE))?;
        }
        let blobs = blob_info(config, &work).await?;
        let mut files = Vec::new();
        for rel in list_files(&work)? {
            let (size, sha256) = hash_file(&work.join(&rel))?;
            files.push(FileEntry {
                path: rel,
                size,
                sha256,
            });
        }
        let manifest = Manifest {
            format: manifest::FORMAT.into(),
            name: name.clone(),
            created,
            atcr_version: env!("CARGO_PKG_VERSION").into(),
            hostname: hostname(),
            data_dir: data_dir.clone(),
            online,
            files,
            blobs,
            not_included: not_included(config)?,
        };
        let mut sums = String::new();
        for f in &manifest.files {
            sums.push_str(&format!("{}  {}\n", f.sha256, f.path));
        }
        write_private(&work.join(SUMS_FILE), sums.as_bytes())?;
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Other(e.to_string()))?;
        write_private(&work.join(MANIFEST_FILE), &json)?;
        sync_tree(&work)?;
        let mut all: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        all.push(SUMS_FILE.into());
        all.push(MANIFEST_FILE.into());
        let location = target.finish(&name, &work, &all).await?;
        Ok::<_, BackupError>((manifest, location))
    }
    .await;
    let (manifest, location) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    let removed = prune(&target, &name, config.backup.keep).await?;
    Ok(BackupReport {
        name,
        location,
        manifest,
        removed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The backups at `target`, oldest first.
pub async fn list(config: &Config, target: &str) -> Result<Vec<Listed>, BackupError> {
    Target::open(config, target)?.list().await
}

/// Snapshot the databases and keys into `work`: through the running server when there is
/// one (true), else directly under the data-dir lock (false).
async fn snapshot_into(config: &Config, work: &Path) -> Result<bool, BackupError> {
    let data_dir = &config.server.data_dir;
    if let Some((staging, files)) = control::request_snapshot(data_dir).await? {
        // The server names a directory it created under its staging dir; never trust more.
        let expected = data_dir.join(control::STAGING_DIR);
        let inside = staging.parent() == Some(expected.as_path())
            && staging.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
            });
        if !inside {
            return Err(BackupError::Other(format!(
                "the server answered with an unexpected directory {}",
                staging.display()
            )));
        }
        let copied = (|| {
            for f in &files {
                if !manifest::allowed_path(&f.path) {
                    return Err(BackupError::Other(format!(
                        "unexpected snapshot file {}",
                        f.path
                    )));
                }
                let dest = work.join(&f.path);
                if let Some(parent) = dest.parent().filter(|p| !p.exists()) {
                    create_private_dir(parent)?;
                }
                copy_private(&staging.join(&f.path), &dest)?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&staging);
        copied?;
        return Ok(true);
    }
    let _lock = DataDirLock::acquire(data_dir, "atcr backup").map_err(|e| match e {
        lock::LockError::Busy { holder, .. } => BackupError::Refused(format!(
            "{} is in use by {holder}, which does not answer on {}: a server that old cannot \
             be backed up online; stop it and run atcr backup again",
            data_dir.display(),
            control::SOCKET_FILE
        )),
        e => e.into(),
    })?;
    snapshot::take(config, work).await?;
    Ok(false)
}

/// Where the blobs are; on a filesystem store also `blobs.txt` with every blob and its size.
async fn blob_info(config: &Config, work: &Path) -> Result<BlobsInfo, BackupError> {
    if config.storage.backend == "s3" {
        let s3 = &config.storage.s3;
        return Ok(BlobsInfo {
            backend: "s3".into(),
            location: format!("s3://{}/{}", s3.bucket, s3.prefix.trim_matches('/')),
            count: None,
            bytes: None,
            list: None,
        });
    }
    let root = config.blob_root();
    let mut lines = String::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    // Opening the store creates its directories: only look when they are there.
    if root.join("blobs").is_dir() && root.join("uploads").is_dir() {
        let store =
            crate::blob::fs::FsBlobStore::open(&root).map_err(|e| BackupError::io(&root, e))?;
        let digests = store
            .list()
            .await
            .map_err(|e| BackupError::Other(format!("listing blobs: {e}")))?;
        for d in digests {
            // A blob deleted since the listing (GC) is simply not listed.
            if let Ok(Some(size)) = store.stat(&d).await {
                lines.push_str(&format!("{d} {size}\n"));
                count += 1;
                bytes += size;
            }
        }
    }
    write_private(&work.join(BLOBS_FILE), lines.as_bytes())?;
    Ok(BlobsInfo {
        backend: "filesystem".into(),
        location: root.display().to_string(),
        count: Some(count),
        bytes: Some(bytes),
        list: Some(BLOBS_FILE.into()),
    })
}

/// Data-dir entries a backup does not hold (besides our own lock, socket and staging).
fn not_included(config: &Config) -> Result<Vec<String>, BackupError> {
    let dir = &config.server.data_dir;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| BackupError::io(dir, e))? {
        let name = e.map_err(|e| BackupError::io(dir, e))?.file_name();
        let name = name.to_string_lossy().into_owned();
        let ours = name.ends_with(".redb")
            || name.starts_with(INDEX_FILE)
            || name == KEYS_DIR
            || name == lock::LOCK_FILE
            || name == control::SOCKET_FILE
            || name == control::STAGING_DIR
            || name == restore::STAGING_DIR
            || name.starts_with(restore::ASIDE_PREFIX);
        if !ours {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Delete complete backups beyond the newest `keep` (0: keep all) and partial ones more than
/// a day older than `current`. Never deletes `current`.
async fn prune(target: &Target, current: &str, keep: u32) -> Result<Vec<String>, BackupError> {
    let listed = target.list().await?;
    let complete: Vec<&Listed> = listed.iter().filter(|l| l.complete).collect();
    let mut doomed: Vec<String> = Vec::new();
    if keep > 0 && complete.len() > keep as usize {
        doomed.extend(
            complete[..complete.len() - keep as usize]
                .iter()
                .map(|l| l.name.clone()),
        );
    }
    let day_before = name_secs(current).map(|s| s.saturating_sub(86_400));
    for l in listed.iter().filter(|l| !l.complete) {
        if let (Some(t), Some(limit)) = (name_secs(&l.name), day_before) {
            if t < limit {
                doomed.push(l.name.clone());
            }
        }
    }
    doomed.retain(|n| n != current);
    for name in &doomed {
        target.remove(name).await?;
    }
    Ok(doomed)
}

/// `2026-12-03T14:06:18.651Z` -> `20261203T140618Z`.
fn compact_time(rfc3339: &str) -> String {
    let secs = rfc3339.split('.').next().unwrap_or(rfc3339);
    let mut s: String = secs.chars().filter(|c| *c != '-' && *c != ':').collect();
    s.push('Z');
    s
}

/// Seconds since the epoch of a backup name's time (`atcr-backup-20261203T140618Z`).
fn name_secs(name: &str) -> Option<u64> {
    let t = name.strip_prefix(NAME_PREFIX)?;
    if t.len() != 16 || t.as_bytes()[8] != b'T' || !t.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil (Howard Hinnant), the inverse of pds::format_rfc3339.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every file below `dir`, relative, sorted (`keys/...` included).
fn list_files(dir: &Path) -> Result<Vec<String>, BackupError> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BackupError> {
        for e in std::fs::read_dir(dir).map_err(|e| BackupError::io(dir, e))? {
            let e = e.map_err(|e| BackupError::io(dir, e))?;
            let path = e.path();
            if e.file_type()
                .map_err(|e| BackupError::io(&path, e))?
                .is_dir()
            {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base).unwrap_or(&path);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Size and lowercase hex SHA-256 of a file.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = std::fs::File::open(path).map_err(|e| BackupError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| BackupError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

pub(crate) fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(BackupError::io(path, e)),
    }
}

pub(crate) fn create_private_dir_all(path: &Path) -> Result<(), BackupError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .map_err(|e| BackupError::io(path, e))
}

/// A new file, 0600 whatever the umask.
pub(crate) fn create_private_file(path: &Path) -> Result<std::fs::File, BackupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackupError::io(path, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = create_private_file(path)?;
    f.write_all(bytes).map_err(|e| BackupError::io(path, e))?;
    f.sync_all().map_err(|e| BackupError::io(path, e))
}

/// Copy `src` to the new file `dest`, 0600, fsynced.
pub(crate) fn copy_private(src: &Path, dest: &Path) -> Result<u64, BackupError> {
    let mut from = std::fs::File::open(src).map_err(|e| BackupError::io(src, e))?;
    let mut to = create_private_file(dest)?;
    let n = io::copy(&mut from, &mut to).map_err(|e| BackupError::io(dest, e))?;
    to.sync_all().map_err(|e| BackupError::io(dest, e))?;
    Ok(n)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackupError::io(dir, e))
}

/// fsync every directory of a tree (files were synced when written).
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    for e in std::fs::read_dir(dir).map_err(|e| BackupError::io(dir, e))? {
        let p = e.map_err(|e| BackupError::io(dir, e))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_carry_their_time() {
        let created = crate::pds::format_rfc3339(1_796_306_778, 651);
        let name = format!("{NAME_PREFIX}{}", compact_time(&created));
        assert_eq!(name, "atcr-backup-20261203T140618Z");
        assert_eq!(name_secs(&name), Some(1_796_306_778));
        assert_eq!(name_secs("atcr-backup-19700101T000000Z"), Some(0));
        assert_eq!(name_secs("atcr-backup-2026"), None);
        assert_eq!(name_secs("other"), None);
    }
}
