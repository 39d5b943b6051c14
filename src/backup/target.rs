//! Where backups live: a local directory or an S3 prefix. A backup is a directory (or key
//! prefix) named `atcr-backup-<UTC time>`; it is complete once its `manifest.json` is there:
//! a directory is written as `<name>.partial` and renamed, S3 objects are uploaded with the
//! manifest last.

use std::path::{Path, PathBuf};

use s3::Bucket;

use super::{BackupError, MANIFEST_FILE};
use crate::config::Config;

pub const NAME_PREFIX: &str = "atcr-backup-";
const PARTIAL_SUFFIX: &str = ".partial";

pub enum Target {
    Dir(PathBuf),
    S3 {
        bucket: Box<Bucket>,
        /// Key prefix without leading or trailing `/` (may be empty).
        prefix: String,
        /// `s3://bucket/prefix`, for messages.
        url: String,
    },
}

/// One backup found at a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// Its manifest is there (else it was cut short, or is being written).
    pub complete: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Dir(d) => write!(f, "{}", d.display()),
            Target::S3 { url, .. } => f.write_str(url),
        }
    }
}

impl Target {
    /// A target from `atcr backup`'s argument or `backup.target`.
    pub fn open(config: &Config, target: &str) -> Result<Target, BackupError> {
        config
            .backup_target_checked(target)
            .map_err(BackupError::Usage)?;
        let Some(rest) = target.strip_prefix("s3://") else {
            return Ok(Target::Dir(PathBuf::from(target)));
        };
        let (bucket_name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let own = &config.backup.s3;
        let (endpoint, region, path_style, access, secret) = if own.endpoint.is_empty() {
            let s3 = &config.storage.s3;
            let secret = config
                .s3_secret_key()
                .map_err(|e| BackupError::Usage(e.to_string()))?;
            (
                s3.endpoint.clone(),
                s3.region.clone(),
                s3.path_style,
                s3.access_key.clone(),
                secret,
            )
        } else {
            let secret = if own.secret_key.0.is_empty() {
                std::fs::read_to_string(&own.secret_key_file)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        BackupError::Usage(format!(
                            "backup.s3.secret_key_file {}: {e}",
                            own.secret_key_file.display()
                        ))
                    })?
            } else {
                own.secret_key.0.clone()
            };
            (
                own.endpoint.clone(),
                own.region.clone(),
                own.path_style,
                own.access_key.clone(),
                secret,
            )
        };
        let bucket = crate::blob::s3::bucket_handle(
            &endpoint,
            &region,
            bucket_name,
            path_style,
            &access,
            &secret,
        )
        .map_err(|e| BackupError::Other(e.to_string()))?;
        let prefix = prefix.trim_matches('/').to_string();
        Ok(Target::S3 {
            bucket,
            url: format!("s3://{bucket_name}/{prefix}"),
            prefix,
        })
    }

    fn key(prefix: &str, rest: &str) -> String {
        if prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{prefix}/{rest}")
        }
    }

    /// The backups at this target, oldest first (names sort by time).
    pub async fn list(&self) -> Result<Vec<Listed>, BackupError> {
        let mut found: std::collections::BTreeMap<String, bool> = Default::default();
        match self {
            Target::Dir(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(BackupError::io(dir, e)),
                };
                for e in entries {
                    let e = e.map_err(|e| BackupError::io(dir, e))?;
                    let file_name = e.file_name().to_string_lossy().into_owned();
                    if !file_name.starts_with(NAME_PREFIX) || !e.path().is_dir() {
                        continue;
                    }
                    match file_name.strip_suffix(PARTIAL_SUFFIX) {
                        Some(name) => {
                            found.entry(name.to_string()).or_insert(false);
                        }
                        None => {
                            let complete = e.path().join(MANIFEST_FILE).is_file();
                            found.insert(file_name, complete);
                        }
                    }
                }
            }
            Target::S3 { bucket, prefix, .. } => {
                let list_prefix = Self::key(prefix, NAME_PREFIX);
                let pages = bucket.list(list_prefix, None).await.map_err(s3_err)?;
                for page in pages {
                    for object in page.contents {
                        let rest = object
                            .key
                            .strip_prefix(prefix.as_str())
                            .unwrap_or(&object.key)
                            .trim_start_matches('/');
                        let Some((name, file)) = rest.split_once('/') else {
                            continue;
                        };
                        let complete = found.entry(name.to_string()).or_insert(false);
                        *complete |= file == MANIFEST_FILE;
                    }
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(name, complete)| Listed { name, complete })
            .collect())
    }

    /// Where the files of backup `name` are put together before [`Target::finish`]: the
    /// `.partial` directory itself for a directory target, a private temporary directory
    /// for S3. Created empty, 0700.
    pub fn work_dir(&self, name: &str) -> Result<PathBuf, BackupError> {
        let dir = match self {
            Target::Dir(dir) => {
                if !dir.exists() {
                    super::create_private_dir_all(dir)?;
                }
                dir.join(format!("{name}{PARTIAL_SUFFIX}"))
            }
            Target::S3 { .. } => std::env::temp_dir().join(format!("{name}{PARTIAL_SUFFIX}")),
        };
        super::create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Make the backup in `work` (with its manifest, listing `files`) the complete backup
    /// `name`; returns where it is.
    pub async fn finish(
        &self,
        name: &str,
        work: &Path,
        files: &[String],
    ) -> Result<String, BackupError> {
        match self {
            Target::Dir(dir) => {
                let dest = dir.join(name);
                std::fs::rename(work, &dest).map_err(|e| BackupError::io(&dest, e))?;
                super::sync_dir(dir)?;
                Ok(dest.display().to_string())
            }
            Target::S3 {
                bucket,
                prefix,
                url,
            } => {
                // Data first, the manifest last: a backup without its manifest is incomplete.
                let mut order: Vec<&String> =
                    files.iter().filter(|f| *f != MANIFEST_FILE).collect();
                let manifest = MANIFEST_FILE.to_string();
                order.push(&manifest);
                for file in order {
                    let path = work.join(file);
                    let mut reader = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| BackupError::io(&path, e))?;
                    bucket
                        .put_object_stream(
                            &mut reader,
                            Self::key(prefix, &format!("{name}/{file}")),
                        )
                        .await
                        .map_err(s3_err)?;
                }
                std::fs::remove_dir_all(work).map_err(|e| BackupError::io(work, e))?;
                Ok(format!("{}/{name}", url.trim_end_matches('/')))
            }
        }
    }

    /// Delete backup `name` (complete or not).
    pub async fn remove(&self, name: &str) -> Result<(), BackupError> {
        match self {
            Target::Dir(dir) => {
                for path in [dir.join(name), dir.join(format!("{name}{PARTIAL_SUFFIX}"))] {
                    match std::fs::remove_dir_all(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(BackupError::io(&path, e))
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            Target::S3 { bucket, prefix, .. } => {
                let pages = bucket
                    .list(Self::key(prefix, &format!("{name}/")), None)
                    .await
                    .map_err(s3_err)?;
                for object in pages.into_iter().flat_map(|p| p.contents) {
                    bucket.delete_object(&object.key).await.map_err(s3_err)?;
                }
                Ok(())
            }
        }
    }

    /// Read the backup `name` from this target: a local directory is read in place; from S3
    /// every object is downloaded into `download` (created, 0700) first.
    pub async fn fetch(&self, name: &str, download: &Path) -> Result<PathBuf, BackupError> {
        match self {
            Target::Dir(dir) => Ok(dir.join(name)),
            Target::S3 {
                bucket,
                prefix,
                url,
            } => {
                let base = Self::key(prefix, &format!("{name}/"));
                let pages = bucket.list(base.clone(), None).await.map_err(s3_err)?;
                let objects: Vec<_> = pages.into_iter().flat_map(|p| p.contents).collect();
                if !objects
                    .iter()
                    .any(|o| o.key == format!("{base}{MANIFEST_FILE}"))
                {
                    return Err(BackupError::Invalid(format!(
                        "{}/{name} has no {MANIFEST_FILE} (not a complete backup)",
                        url.trim_end_matches('/')
                    )));
                }
                super::create_private_dir(download)?;
                for object in objects {
                    let rel = &object.key[base.len()..];
                    // Only the names a backup holds (checked again against its manifest).
                    if !super::manifest::allowed_path(rel)
                        && rel != MANIFEST_FILE
                        && rel != super::SUMS_FILE
                    {
                        return Err(BackupError::Invalid(format!(
                            "unexpected object {} in the backup",
                            object.key
                        )));
                    }
                    let dest = download.join(rel);
                    if let Some(parent) = dest.parent() {
                        if !parent.exists() {
                            super::create_private_dir(parent)?;
                        }
                    }
                    let mut file = super::create_private_file(&dest)?;
                    let mut writer = tokio::fs::File::from_std(
                        file.try_clone().map_err(|e| BackupError::io(&dest, e))?,
                    );
                    bucket
                        .get_object_to_writer(&object.key, &mut writer)
                        .await
                        .map_err(s3_err)?;
                    tokio::io::AsyncWriteExt::flush(&mut writer)
                        .await
                        .map_err(|e| BackupError::io(&dest, e))?;
                    drop(writer);
                    file.sync_all().map_err(|e| BackupError::io(&dest, e))?;
                    std::io::Write::flush(&mut file).map_err(|e| BackupError::io(&dest, e))?;
                }
                Ok(download.to_path_buf())
            }
        }
    }
}

fn s3_err(e: s3::error::S3Error) -> BackupError {
    BackupError::Other(format!("S3: {e}"))
}
