//! The platform (os / architecture / variant) of single-platform images. An image index
//! names its children's platforms itself; a single image says its platform only in its
//! image config blob, which no record carries. So after a manifest row is written, the
//! config is read through a [`ConfigSource`] (the blob store this server keeps, set by the
//! composition root) and the three columns of `manifests` are filled. Configs this server
//! does not store leave them NULL: the UI then shows no platform rather than a wrong one.
//!
//! Runs off the write path (spawned), and once at start over rows not read yet, so an index
//! made before this existed catches up.

use std::sync::Arc;

use serde_json::Value;

use super::{Index, Platform, Result};

/// Image configs larger than this are not read for their platform.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Rows the start-up catch-up reads at most (a stat per row; configs are small).
const CATCH_UP_ROWS: i64 = 10_000;

/// Reads image config blobs for the index (the registry's blob store).
#[async_trait::async_trait]
pub trait ConfigSource: Send + Sync {
    /// The blob's bytes when this server stores it and it is at most `max` bytes.
    async fn config_bytes(&self, digest: &str, max: u64) -> Option<Vec<u8>>;
}

/// A manifest row whose platform is to be read from its config.
#[derive(Debug, Clone)]
pub(super) struct PendingPlatform {
    pub did: String,
    pub repository: String,
    pub digest: String,
    pub config_digest: String,
}

/// `os`, `architecture` and `variant` of an image config (each at most 32 characters, the
/// lexicon's `#platform` limits); `None` when it is not a JSON object naming both.
pub fn platform_of_config(config: &[u8]) -> Option<Platform> {
    let v: Value = serde_json::from_slice(config).ok()?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 32)
            .map(str::to_string)
    };
    let (os, architecture) = (field("os")?, field("architecture")?);
    Some(Platform {
        os: Some(os),
        architecture: Some(architecture),
        variant: field("variant"),
    })
}

impl Index {
    /// Where image configs are read from (set once, at start).
    pub fn set_config_source(&self, source: Arc<dyn ConfigSource>) {
        let _ = self.inner.config_source.set(source);
    }

    /// Read the configs of `pending` and store their platforms, in the background.
    pub(super) fn spawn_platform_fill(&self, pending: Vec<PendingPlatform>) {
        if pending.is_empty() || self.inner.config_source.get().is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for p in pending {
                if let Err(e) = me.fill_platform(&p).await {
                    tracing::warn!(digest = %p.digest, error = %e, "index: storing an image's platform failed");
                }
            }
        });
    }

    /// Read one config and store its platform; false when the config is not here.
    async fn fill_platform(&self, p: &PendingPlatform) -> Result<bool> {
        let Some(source) = self.inner.config_source.get() else {
            return Ok(false);
        };
        let Some(bytes) = source
            .config_bytes(&p.config_digest, MAX_CONFIG_BYTES)
            .await
        else {
            return Ok(false);
        };
        let Some(platform) = platform_of_config(&bytes) else {
            return Ok(false);
        };
        let conn = self.writer().await;
        conn.execute(
            "UPDATE manifests SET os = ?4, architecture = ?5, variant = ?6
             WHERE did = ?1 AND repository = ?2 AND digest = ?3",
            libsql::params![
                p.did.as_str(),
                p.repository.as_str(),
                p.digest.as_str(),
                platform.os,
                platform.architecture,
                platform.variant
            ],
        )
        .await?;
        Ok(true)
    }

    /// Fill the platform of manifests indexed before it was read (or whose config arrived
    /// later), at most [`CATCH_UP_ROWS`] per start. Spawned by the composition root.
    pub fn spawn_platform_catch_up(&self) {
        if self.inner.config_source.get().is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            match me.platform_catch_up().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(images = n, "index: platforms read from image configs"),
                Err(e) => tracing::warn!(error = %e, "index: platform catch-up failed"),
            }
        });
    }

    async fn platform_catch_up(&self) -> Result<usize> {
        let pending = {
            let conn = self.reader().await;
            let mut rows = conn
                .query(
                    "SELECT did, repository, digest, config_digest FROM manifests
                     WHERE config_digest IS NOT NULL AND architecture IS NULL
                       AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                           WHERE mr.did = manifests.did AND mr.repository = manifests.repository
                             AND mr.manifest_digest = manifests.digest)
                     LIMIT ?1",
                    [CATCH_UP_ROWS],
                )
                .await?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().await? {
                out.push(PendingPlatform {
                    did: r.get(0)?,
                    repository: r.get(1)?,
                    digest: r.get(2)?,
                    config_digest: r.get(3)?,
                });
            }
            out
        };
        let mut filled = 0;
        for p in &pending {
            if self.fill_platform(p).await? {
                filled += 1;
            }
        }
        Ok(filled)
    }
}

/// The manifests of a batch of record changes whose platform comes from their config:
/// `io.atcr.manifest` upserts with a config and no child manifests.
pub(super) fn pending_of(
    did: &str,
    changes: &[super::apply::RecordChange],
) -> Vec<PendingPlatform> {
    changes
        .iter()
        .filter_map(|c| match c {
            super::apply::RecordChange::Upsert {
                collection, value, ..
            } if collection == super::apply::MANIFEST_NSID => {
                let has_children = value
                    .get("manifests")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if has_children {
                    return None;
                }
                let text = |v: Option<&Value>| {
                    v.and_then(Value::as_str)
                        .filter(|s| s.len() <= 255)
                        .map(str::to_string)
                };
                Some(PendingPlatform {
                    did: did.to_string(),
                    repository: text(value.get("repository"))?,
                    digest: text(value.get("digest"))?,
                    config_digest: text(value.get("config").and_then(|c| c.get("digest")))?,
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_from_config() {
        let p =
            platform_of_config(br#"{"os":"linux","architecture":"arm64","variant":"v8"}"#).unwrap();
        assert_eq!(p.os.as_deref(), Some("linux"));
        assert_eq!(p.architecture.as_deref(), Some("arm64"));
        assert_eq!(p.variant.as_deref(), Some("v8"));
        let p = platform_of_config(br#"{"os":"linux","architecture":"amd64"}"#).unwrap();
        assert_eq!(p.variant, None);
        assert!(platform_of_config(br#"{"os":"linux"}"#).is_none());
        assert!(platform_of_config(b"not json").is_none());
        let long = format!(r#"{{"os":"linux","architecture":"{}"}}"#, "x".repeat(33));
        assert!(platform_of_config(long.as_bytes()).is_none());
    }
}
