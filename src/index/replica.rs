//! The index's life against its storage: opening the embedded replica without waiting for
//! the primary, syncing in the background with backoff, telling an operator once (log and
//! `/_health`) when the primary or the local file stops taking writes and when it is back,
//! the token (re-read from `index.auth_token_file` on an auth failure and on SIGHUP, and
//! sent with every request to the primary, so a rotated token needs no restart), and
//! migrations that wait until the index can be written.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::status::{classify, Cause, Counters};
use super::{Index, IndexError, Result};
use crate::config::IndexConfig;

/// Longest wait for one request to the primary (a sync or a write).
pub(super) const PRIMARY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The token sent to the primary; replaceable while running. (No `Debug`: it is a secret.)
pub(super) struct Credentials {
    token: RwLock<String>,
    file: Option<PathBuf>,
}

impl Credentials {
    /// `index.auth_token`, else the content of `index.auth_token_file`.
    pub fn from_config(ix: &IndexConfig) -> Result<Credentials> {
        let file = (!ix.auth_token_file.as_os_str().is_empty()).then(|| ix.auth_token_file.clone());
        let token = match (&file, ix.auth_token.0.is_empty()) {
            (Some(f), true) => read_token(f)?,
            _ => ix.auth_token.0.clone(),
        };
        Ok(Credentials {
            token: RwLock::new(token),
            file,
        })
    }

    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-read the token file; true when the token changed.
    pub fn reload(&self) -> Result<bool> {
        let Some(f) = &self.file else {
            return Ok(false);
        };
        let new = read_token(f)?;
        let mut t = self.token.write().unwrap_or_else(|e| e.into_inner());
        if *t == new {
            return Ok(false);
        }
        *t = new;
        Ok(true)
    }
}

fn read_token(f: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(f)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            IndexError::Unavailable(format!(
                "cannot read index.auth_token_file {}: {e}",
                f.display()
            ))
        })
}

/// Build the embedded replica. No request is made here: opening never waits for the
/// primary. Every request carries the current token and is counted.
pub(super) async fn open_replica(
    path: &std::path::Path,
    url: &str,
    creds: Arc<Credentials>,
    health: Arc<super::status::Health>,
) -> Result<libsql::Database> {
    let callback = move |req: &mut http02::Request<()>| {
        Counters::bump(&health.counters.primary_requests);
        if let Ok(mut v) = http02::HeaderValue::from_str(&format!("Bearer {}", creds.token())) {
            v.set_sensitive(true);
            req.headers_mut().insert("x-authorization", v);
        }
    };
    Ok(
        libsql::Builder::new_remote_replica(path, url.to_string(), String::new())
            // Read-your-writes comes from one sync per write transaction ([`super::write`]),
            // not one per statement.
            .read_your_writes(false)
            .http_request_callback(callback)
            .build()
            .await?,
    )
}

impl Index {
    /// Pull the primary's latest frames now (a no-op for a local index).
    pub async fn sync(&self) -> Result<()> {
        if !self.is_replica() {
            return Ok(());
        }
        let _w = self.writer().await;
        self.sync_locked().await
    }

    /// [`Index::sync`] for a caller that holds the writer lock (a sync never overlaps a
    /// planned transaction on the same file).
    pub(super) async fn sync_locked(&self) -> Result<()> {
        let counters = &self.inner.health.counters;
        let r = tokio::time::timeout(PRIMARY_TIMEOUT, self.inner.db.sync()).await;
        let err = match r {
            Ok(Ok(_)) => {
                Counters::bump(&counters.syncs);
                self.inner.unsynced.store(false, Ordering::SeqCst);
                let now = crate::pds::now_rfc3339();
                self.inner.health.update(|s| s.last_sync = Some(now));
                self.set_reachable();
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => libsql::Error::Replication("sync timed out".into()),
        };
        Counters::bump(&counters.sync_failures);
        let mut cause = classify(&err, false);
        if matches!(cause, Cause::Unreachable(_) | Cause::Other(_)) {
            // libSQL retries the handshake and reports only a timeout: find the real cause.
            if let Some(c) = self.probe().await {
                cause = c;
            }
        }
        self.set_unreachable(cause.clone());
        Err(IndexError::Unavailable(self.explain(&cause)))
    }

    /// Make the index ready for writes: a replica syncs, then (either mode) pending
    /// migrations run. Cheap once done.
    pub(super) async fn ensure_ready(&self) -> Result<()> {
        if self.is_replica() && !self.inner.health.state().primary_reachable {
            self.sync().await?;
        }
        if self.inner.migrated.load(Ordering::SeqCst) {
            return Ok(());
        }
        let w = self.writer().await;
        let ready = async {
            super::migrate(w.ship()).await?;
            if !self.is_replica() {
                // A schema that needs no migration took no write: check that the file takes
                // one (a read-only file is reported now, not at the first push).
                // (BEGIN IMMEDIATE alone succeeds on a read-only file: write a row, roll back.)
                let tx = w.ship().transaction().await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (-1, 'probe')",
                    (),
                )
                .await?;
                tx.rollback().await?;
            }
            Ok::<(), IndexError>(())
        };
        match ready.await {
            Ok(()) => {}
            Err(e) => {
                let cause = self.cause_of(&e);
                drop(w);
                self.set_unwritable(cause.clone());
                return Err(IndexError::Unavailable(self.explain(&cause)));
            }
        }
        if self.is_replica() {
            // Bring the primary's schema into the local copy before it is read.
            self.sync_locked().await?;
        }
        drop(w);
        self.inner.migrated.store(true, Ordering::SeqCst);
        self.inner.health.update(|s| s.local_copy = true);
        Ok(())
    }

    /// The replica's background task: sync every `sync_interval_secs` while the primary
    /// answers, with backoff (1 s doubling to 60 s) while it does not; a refused token makes
    /// it re-read the token file. Ends with the last handle.
    pub(super) fn spawn_lifecycle(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            // The first attempt at once: a start never waited for the primary.
            let mut wait = Duration::ZERO;
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let ix = Index { inner };
                if ix.inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                let was_reachable = ix.inner.health.state().primary_reachable;
                let r = async {
                    ix.sync().await?;
                    ix.ensure_ready().await
                }
                .await;
                match r {
                    Ok(()) => {
                        backoff = Duration::from_secs(1);
                        wait = every;
                        if !was_reachable {
                            ix.inner.drain_wake.notify_one();
                            ix.inner.retry_now.notify_one();
                        }
                    }
                    Err(_) => {
                        let cause = ix.inner.health.state().cause;
                        if cause.as_ref().is_some_and(Cause::is_auth) && ix.reload_credentials() {
                            wait = Duration::ZERO;
                            continue;
                        }
                        wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// Re-read `index.auth_token_file` (on SIGHUP, and after the primary refused the
    /// token). True when the token changed; the next request uses it.
    pub fn reload_credentials(&self) -> bool {
        let Some(c) = &self.inner.creds else {
            return false;
        };
        match c.reload() {
            Ok(true) => {
                tracing::info!("index: token re-read from index.auth_token_file");
                self.inner.drain_wake.notify_one();
                self.inner.retry_now.notify_one();
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "index: token file not re-read");
                false
            }
        }
    }

    /// The cause behind an index error.
    pub(super) fn cause_of(&self, e: &IndexError) -> Cause {
        match e {
            IndexError::Db(e) => classify(e, true),
            IndexError::Migration { source, .. } => classify(source, true),
            IndexError::Unavailable(_) => self
                .inner
                .health
                .state()
                .cause
                .unwrap_or_else(|| Cause::Other(e.to_string())),
            other => Cause::Other(other.to_string()),
        }
    }

    pub(super) fn explain(&self, cause: &Cause) -> String {
        cause.explain(
            &self.inner.primary_url,
            &self.inner.path.display().to_string(),
        )
    }

    /// The primary answered a sync.
    fn set_reachable(&self) {
        let recovered = self.inner.health.update(|s| {
            let recovered = !s.primary_reachable && s.cause.is_some();
            if !s.primary_reachable {
                s.since = crate::pds::now_rfc3339();
            }
            s.primary_reachable = true;
            s.local_copy = true;
            if matches!(s.cause, Some(Cause::Unreachable(_)) | Some(Cause::Other(_))) {
                s.cause = None;
                s.writable = true;
            }
            recovered
        });
        if recovered {
            tracing::info!(
                primary = %self.inner.primary_url,
                queued = self.inner.outbox.len(),
                "index primary reachable again; queued writes are being applied"
            );
        }
    }

    fn set_unreachable(&self, cause: Cause) {
        let changed = self.inner.health.update(|s| {
            let changed = s.primary_reachable || !same_kind(s.cause.as_ref(), &cause);
            s.primary_reachable = false;
            s.writable = false;
            if changed {
                s.since = crate::pds::now_rfc3339();
            }
            s.cause = Some(cause.clone());
            changed
        });
        if changed {
            tracing::warn!(
                local_copy = self.inner.health.state().local_copy,
                "{}",
                self.explain(&cause)
            );
        }
    }

    /// A write (or a migration) failed for `cause`.
    pub(super) fn set_unwritable(&self, cause: Cause) {
        if self.is_replica() && matches!(cause, Cause::Unreachable(_)) {
            return self.set_unreachable(cause);
        }
        let changed = self.inner.health.update(|s| {
            let changed = s.writable || !same_kind(s.cause.as_ref(), &cause);
            s.writable = false;
            if changed {
                s.since = crate::pds::now_rfc3339();
            }
            s.cause = Some(cause.clone());
            changed
        });
        if changed {
            tracing::warn!("{}", self.explain(&cause));
        }
    }

    /// A write succeeded.
    pub(super) fn set_writable(&self) {
        let was = self.inner.health.update(|s| {
            let was = s.writable;
            if !was {
                s.since = crate::pds::now_rfc3339();
            }
            s.writable = true;
            s.cause = None;
            was
        });
        if !was {
            tracing::info!(
                queued = self.inner.outbox.len(),
                "index takes writes again; queued writes are being applied"
            );
        }
    }

    /// Why the last handshake failed: whether the primary's address takes a TCP connection
    /// at all, and if it does, what libSQL logged about the handshake (when its log layer
    /// runs, see [`super::libsql_log`]).
    async fn probe(&self) -> Option<Cause> {
        let uri: http::Uri = self
            .inner
            .primary_url
            .replacen("libsql://", "https://", 1)
            .parse()
            .ok()?;
        let host = uri
            .host()?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Err(_) => {
                return Some(Cause::Unreachable(format!(
                    "{host}:{port}: connect timed out"
                )))
            }
            Ok(Err(e)) => return Some(Cause::Unreachable(format!("{host}:{port}: {e}"))),
            Ok(Ok(_)) => {}
        }
        if let Some(msg) = super::libsql_log::recent_primary_error(Duration::from_secs(60)) {
            let c = classify(&libsql::Error::Replication(msg.into()), false);
            if !matches!(c, Cause::Other(_)) {
                return Some(c);
            }
        }
        Some(Cause::Other(format!(
            "{host}:{port} accepts connections but the replication handshake failed (check index.auth_token and that index.primary_url is a libSQL primary)"
        )))
    }
}

fn same_kind(a: Option<&Cause>, b: &Cause) -> bool {
    a.is_some_and(|a| std::mem::discriminant(a) == std::mem::discriminant(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_read_and_re_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "first\n").unwrap();
        let ix = IndexConfig {
            auth_token_file: f.clone(),
            ..IndexConfig::default()
        };
        let c = Credentials::from_config(&ix).unwrap();
        assert_eq!(c.token(), "first");
        assert!(!c.reload().unwrap(), "unchanged");
        std::fs::write(&f, "second").unwrap();
        assert!(c.reload().unwrap());
        assert_eq!(c.token(), "second");
        std::fs::remove_file(&f).unwrap();
        let e = c.reload().unwrap_err().to_string();
        assert!(e.contains("index.auth_token_file"), "{e}");
        assert_eq!(c.token(), "second", "a failed re-read keeps the token");
        let missing = IndexConfig {
            auth_token_file: dir.path().join("nope"),
            ..IndexConfig::default()
        };
        assert!(Credentials::from_config(&missing).is_err());
    }
}
