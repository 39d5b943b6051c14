//! `atcr restore`: verify a backup completely before touching the data dir, then swap it in
//! under the data-dir lock.

use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::target::{Target, NAME_PREFIX};
use super::{
    copy_private, create_private_dir, hash_file, lock, BackupError, DataDirLock, BLOBS_FILE,
    CONFIG_FILE, INDEX_FILE, KEYS_DIR, MANIFEST_FILE,
};
use crate::blob::BlobStore;
use crate::config::Config;

/// Where a restore stages the verified files inside the data dir.
pub const STAGING_DIR: &str = "restore-staging";
/// Replaced files are moved to `<data_dir>/before-restore-<time>/`.
pub const ASIDE_PREFIX: &str = "before-restore-";

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace a data dir that already holds data (it is moved aside, not deleted).
    pub force: bool,
    /// Also write the backup's config file over `--config` (the old one is kept beside it).
    pub with_config: bool,
    /// Check the backup (checksums, redb and index integrity) and change nothing.
    pub verify_only: bool,
}

#[derive(Debug)]
pub struct RestoreReport {
    pub verify_only: bool,
    /// The blob directory (filesystem stores).
    pub blob_root: PathBuf,
    pub manifest: Manifest,
    /// Files put into place (data-dir paths).
    pub installed: Vec<PathBuf>,
    /// Where the replaced files went.
    pub aside: Option<PathBuf>,
    /// Blobs listed in the backup that the blob store lacks: (missing, listed). Filesystem
    /// stores only.
    pub missing_blobs: Option<(u64, u64)>,
    pub config_written: Option<PathBuf>,
    /// The backup's config differs from the one in use (and was not written).
    pub config_differs: bool,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "backup {} (taken {} on {}, atcr {}): {} file(s), sizes and SHA-256 match; redb \
             and index integrity ok",
            m.name,
            m.created,
            m.hostname,
            m.atcr_version,
            m.files.len()
        )?;
        if self.verify_only {
            return writeln!(f, "verify only: nothing was changed");
        }
        if let Some(aside) = &self.aside {
            writeln!(f, "the replaced files were moved to {}", aside.display())?;
        }
        for p in &self.installed {
            writeln!(f, "  restored {}", p.display())?;
        }
        if let Some(path) = &self.config_written {
            writeln!(
                f,
                "  restored {} (the previous one is kept beside it)",
                path.display()
            )?;
        } else if self.config_differs {
            writeln!(
                f,
                "note: the backup's config.toml differs from the one in use (kept as is; \
                 --with-config restores it)"
            )?;
        }
        let root = self.blob_root.display();
        match self.missing_blobs {
            Some((0, n)) => writeln!(
                f,
                "blobs: all {n} blob(s) listed in the backup are in {root}"
            )?,
            Some((missing, n)) => writeln!(
                f,
                "WARNING: {missing} of {n} blob(s) listed in the backup are missing from {root}: \
                 restore that directory from your blob backup"
            )?,
            None => writeln!(f, "blobs: not checked (they live in {})", m.blobs.location)?,
        }
        writeln!(f, "start the server again (systemctl start atcr)")
    }
}

/// Restore the backup named by `source` (a backup directory, or `s3://bucket/prefix/<name>`)
/// into the data dir of `config`.
pub async fn restore(
    config: &Config,
    config_file: Option<&Path>,
    source: &str,
    opts: RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let data_dir = config.server.data_dir.clone();
    if opts.with_config && config_file.is_none() {
        return Err(BackupError::Usage(
            "--with-config needs --config (the file to write)".into(),
        ));
    }
    // Refuse early: not one backup, a running server, or data in the way.
    precheck_source(config, source).await?;
    let _lock = if opts.verify_only {
        None
    } else {
        std::fs::create_dir_all(&data_dir).map_err(|e| BackupError::io(&data_dir, e))?;
        let lock = DataDirLock::acquire(&data_dir, "atcr restore").map_err(|e| match e {
            lock::LockError::Busy { path, holder } => BackupError::Refused(format!(
                "{} is in use by {holder}: stop it first (systemctl stop atcr)",
                path.display()
            )),
            e => e.into(),
        })?;
        let existing = existing_state(config);
        if !existing.is_empty() && !opts.force {
            return Err(BackupError::Refused(format!(
                "{} already holds data ({}); pass --force to replace it (the current files are \
                 moved to {}/{ASIDE_PREFIX}<time>/, not deleted)",
                data_dir.display(),
                existing
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", "),
                data_dir.display()
            )));
        }
        Some(lock)
    };
    let staging = if opts.verify_only {
        std::env::temp_dir().join(format!("atcr-restore-{}", std::process::id()))
    } else {
        data_dir.join(STAGING_DIR)
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| BackupError::io(&staging, e))?;
    }
    let result = stage_and_install(config, config_file, source, opts, &staging).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn stage_and_install(
    config: &Config,
    config_file: Option<&Path>,
    source: &str,
    opts: RestoreOptions,
    staging: &Path,
) -> Result<RestoreReport, BackupError> {
    // 1. A verified copy of every file in `staging`.
    let manifest = stage(config, source, staging).await?;
    let redbs: Vec<PathBuf> = manifest
        .files
        .iter()
        .filter(|f| f.path.ends_with(".redb"))
        .map(|f| staging.join(&f.path))
        .collect();
    tokio::task::spawn_blocking(move || redbs.iter().try_for_each(|p| crate::redb_file::verify(p)))
        .await
        .map_err(|e| BackupError::Other(e.to_string()))??;
    if manifest.file(INDEX_FILE).is_some() {
        crate::index::check_file(&staging.join(INDEX_FILE))
            .await
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
    }
    let differs = match (config_file, manifest.file(CONFIG_FILE)) {
        (Some(current), Some(_)) => {
            std::fs::read(current).ok() != std::fs::read(staging.join(CONFIG_FILE)).ok()
        }
        _ => false,
    };
    let mut report = RestoreReport {
        verify_only: opts.verify_only,
        blob_root: config.blob_root(),
        manifest,
        installed: Vec::new(),
        aside: None,
        missing_blobs: None,
        config_written: None,
        config_differs: differs,
    };
    if opts.verify_only {
        return Ok(report);
    }

    // 2. Move what is there aside, put the backup in place.
    let data_dir = &config.server.data_dir;
    let time = super::compact_time(&crate::pds::now_rfc3339());
    let existing = existing_state(config);
    if !existing.is_empty() {
        let aside = data_dir.join(format!("{ASIDE_PREFIX}{time}"));
        create_private_dir(&aside)?;
        for path in existing {
            let dest = aside.join(path.file_name().unwrap_or_default());
            move_file(&path, &dest)?;
        }
        lock::own_like_tree(&aside, data_dir).map_err(|e| BackupError::io(&aside, e))?;
        report.aside = Some(aside);
    }
    for f in &report.manifest.files {
        let dest = match f.path.as_str() {
            INDEX_FILE => config.index_path(),
            CONFIG_FILE | BLOBS_FILE => continue,
            p => data_dir.join(p),
        };
        if let Some(parent) = dest.parent() {
            if parent.file_name().is_some_and(|n| n == KEYS_DIR) {
                create_private_dir(parent)?;
                lock::own_like(parent, data_dir).map_err(|e| BackupError::io(parent, e))?;
            } else {
                std::fs::create_dir_all(parent).map_err(|e| BackupError::io(parent, e))?;
            }
        }
        move_file(&staging.join(&f.path), &dest)?;
        lock::own_like(&dest, data_dir).map_err(|e| BackupError::io(&dest, e))?;
        report.installed.push(dest);
    }
    for dir in [data_dir.clone(), data_dir.join(KEYS_DIR)] {
        if dir.is_dir() {
            super::sync_dir(&dir)?;
        }
    }

    // 3. The config, when asked; the blobs, checked.
    if opts.with_config && report.manifest.file(CONFIG_FILE).is_some() {
        let dest = config_file.expect("checked above");
        if dest.exists() {
            let old = PathBuf::from(format!("{}.{ASIDE_PREFIX}{time}", dest.display()));
            std::fs::rename(dest, &old).map_err(|e| BackupError::io(dest, e))?;
        }
        copy_private(&staging.join(CONFIG_FILE), dest)?;
        report.config_written = Some(dest.to_path_buf());
        report.config_differs = false;
    }
    if report.manifest.blobs.backend == "filesystem" && config.storage.backend == "filesystem" {
        report.missing_blobs = Some(missing_blobs(config, &staging.join(BLOBS_FILE)).await?);
    }
    Ok(report)
}

/// A source that cannot be one backup (a target holding several, a missing directory).
async fn precheck_source(config: &Config, source: &str) -> Result<(), BackupError> {
    if source.starts_with("s3://") {
        let (target, name) = split_s3(source)?;
        if !name.starts_with(NAME_PREFIX) {
            return Err(not_one_backup(&Target::open(config, &target)?, source).await);
        }
        return Ok(());
    }
    let dir = Path::new(source);
    if dir.join(MANIFEST_FILE).is_file() {
        Ok(())
    } else if dir.is_dir() {
        Err(not_one_backup(&Target::Dir(dir.to_path_buf()), source).await)
    } else {
        Err(BackupError::Usage(format!(
            "{source} is not a backup directory"
        )))
    }
}

/// Copy (or download) the backup into `staging` and check every file against its manifest.
async fn stage(config: &Config, source: &str, staging: &Path) -> Result<Manifest, BackupError> {
    let manifest = if source.starts_with("s3://") {
        let (target, name) = split_s3(source)?;
        Target::open(config, &target)?.fetch(&name, staging).await?;
        Manifest::read(staging)?
    } else {
        let dir = Path::new(source);
        let manifest = Manifest::read(dir)?;
        create_private_dir(staging)?;
        for f in &manifest.files {
            let dest = staging.join(&f.path);
            if let Some(parent) = dest.parent().filter(|p| !p.exists()) {
                create_private_dir(parent)?;
            }
            copy_private(&dir.join(&f.path), &dest).map_err(|e| match e {
                BackupError::Io(p, e) if e.kind() == std::io::ErrorKind::NotFound => {
                    BackupError::Invalid(format!("{} is missing from the backup", p.display()))
                }
                e => e,
            })?;
        }
        manifest
    };
    for f in &manifest.files {
        let path = staging.join(&f.path);
        if !path.is_file() {
            return Err(BackupError::Invalid(format!(
                "{} is missing from the backup",
                f.path
            )));
        }
        let (size, sha256) = hash_file(&path)?;
        if size != f.size || sha256 != f.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: checksum mismatch (manifest {} bytes sha256 {}, file {size} bytes sha256 {sha256}): the backup is damaged",
                f.path, f.size, f.sha256
            )));
        }
    }
    Ok(manifest)
}

/// `s3://bucket/prefix/name` -> (`s3://bucket/prefix`, `name`).
fn split_s3(source: &str) -> Result<(String, String), BackupError> {
    let trimmed = source.trim_end_matches('/');
    match trimmed["s3://".len()..].split_once('/') {
        Some(_) => {
            let (parent, name) = trimmed.rsplit_once('/').expect("has a slash");
            Ok((parent.to_string(), name.to_string()))
        }
        None => Ok((trimmed.to_string(), String::new())),
    }
}

/// The error for a target given where one backup was expected: it names the backups there.
async fn not_one_backup(target: &Target, source: &str) -> BackupError {
    match target.list().await {
        Ok(found) if found.iter().any(|l| l.complete) => BackupError::Usage(format!(
            "{source} holds backups, not one; name one of:\n{}",
            found
                .iter()
                .filter(|l| l.complete)
                .map(|l| format!("  {}/{}", source.trim_end_matches('/'), l.name))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Ok(_) => BackupError::Usage(format!("{source} holds no complete backup")),
        Err(e) => e,
    }
}

/// What a restore would replace: redb files, the index (with its WAL), the keys.
fn existing_state(config: &Config) -> Vec<PathBuf> {
    let data_dir = &config.server.data_dir;
    let mut out = super::snapshot::redb_files(data_dir).unwrap_or_default();
    let index = config.index_path();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", index.display()));
        if p.exists() {
            out.push(p);
        }
    }
    let keys = data_dir.join(KEYS_DIR);
    if keys.is_dir() {
        out.push(keys);
    }
    out
}

/// Rename, or copy and remove when `dest` is on another filesystem.
fn move_file(src: &Path, dest: &Path) -> Result<(), BackupError> {
    match std::fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) && src.is_file() => {
            copy_private(src, dest)?;
            std::fs::remove_file(src).map_err(|e| BackupError::io(src, e))
        }
        Err(e) => Err(BackupError::io(dest, e)),
    }
}

/// (missing, listed) blobs of `blobs.txt` in the filesystem store of `config`.
async fn missing_blobs(config: &Config, list: &Path) -> Result<(u64, u64), BackupError> {
    let text = std::fs::read_to_string(list).map_err(|e| BackupError::io(list, e))?;
    let root = config.blob_root();
    let store = if root.join("blobs").is_dir() && root.join("uploads").is_dir() {
        Some(crate::blob::fs::FsBlobStore::open(&root).map_err(|e| BackupError::io(&root, e))?)
    } else {
        None
    };
    let (mut missing, mut listed) = (0u64, 0u64);
    for line in text.lines().filter(|l| !l.is_empty()) {
        listed += 1;
        let (digest, size) = line.split_once(' ').unwrap_or((line, ""));
        let Ok(digest) = digest.parse::<crate::oci::types::Digest>() else {
            return Err(BackupError::Invalid(format!(
                "{BLOBS_FILE}: bad line {line:?}"
            )));
        };
        let have = match &store {
            Some(s) => s.stat(&digest).await.ok().flatten(),
            None => None,
        };
        if have.map(|n| n.to_string()) != Some(size.to_string()) {
            missing += 1;
        }
    }
    Ok((missing, listed))
}
