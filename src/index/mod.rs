//! The index: a libSQL database behind the web UI and search (users, repositories,
//! manifests, layers, platforms, tags, annotations, repo pages, stars, pull/push counts,
//! hold captain records, the firehose cursor), and the only module with SQL.
//!
//! - [`schema`]: versioned migrations (`schema_migrations` tracks what ran).
//! - [`read`]: the typed read API the UI uses ([`Index::repository`], [`Index::tags`],
//!   [`Index::search`], ...).
//! - [`apply`]: turns `io.atcr.*` records into rows. Every source goes through it: direct
//!   writes after a push ([`Index::note_manifest_put`] and friends, spawned so they never
//!   fail or slow a push), the firehose consumer ([`firehose`]) and the backfill
//!   ([`backfill`]), so a record echoed back by the network is an idempotent upsert.
//! - Pull counting: [`Index::note_pull`] only bumps an in-memory counter; a background task
//!   flushes the counters every few seconds in one transaction.
//!
//! Storage: `<data_dir>/index.db` (local libSQL), or with `index.primary_url` an embedded
//! replica of a Turso / libsql-server primary (synced at start and every
//! `sync_interval_secs`; reads are local, writes go to the primary). Everything here can be
//! rebuilt from the network; PDS sessions and other secrets never enter this database.

pub mod apply;
pub mod backfill;
pub mod firehose;
pub mod platform;
pub mod read;
mod schema;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::atproto::identity::{IdentityConfig, Resolver};
use crate::atproto::xrpc::XrpcClient;
use crate::config::Config;

pub use platform::ConfigSource;
pub use read::*;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database: {0}")]
    Db(#[from] libsql::Error),
    #[error("index migration {version}: {source}")]
    Migration { version: i64, source: libsql::Error },
    #[error("cannot create the index directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("{0}")]
    Network(String),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Connections used for reads; each has its own lock, so reads run side by side (WAL).
const READERS: usize = 4;
/// How often pull counters reach the database.
const PULL_FLUSH: Duration = Duration::from_secs(2);

/// A handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    db: libsql::Database,
    /// One writer: statements of different transactions never interleave.
    writer: tokio::sync::Mutex<libsql::Connection>,
    readers: Vec<tokio::sync::Mutex<libsql::Connection>>,
    next_reader: AtomicUsize,
    resolver: Arc<Resolver>,
    /// (identity as pushed/pulled, repository) -> pulls not yet flushed.
    pulls: std::sync::Mutex<HashMap<(String, String), u64>>,
    replica: bool,
    /// Firehose consumers and the start-up backfill ([`Index::start_ingest`]).
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Firehose endpoints with an open websocket right now.
    connected: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The hold this appliance's pushes name (`holdDid` of the manifest records it writes),
    /// so direct writes carry it before the firehose echo arrives.
    local_hold: std::sync::OnceLock<String>,
    /// Local mode (`auth.mode = "local"`): a name's first segment is its owner as it stands,
    /// nothing is resolved on the network.
    local_owners: bool,
    /// Where image configs are read (platforms of single-platform images).
    config_source: std::sync::OnceLock<Arc<dyn ConfigSource>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Open (and migrate) the index named by the configuration. Starts the pull-counter
    /// flusher and, for a replica, the periodic sync; both end when the last handle drops.
    pub async fn open(config: &Config) -> Result<Index> {
        let resolver = Resolver::new(
            IdentityConfig {
                plc_url: config.identity.plc_url.clone(),
                handle_resolver: (!config.identity.handle_resolver.is_empty())
                    .then(|| config.identity.handle_resolver.clone()),
                cache_ttl: Duration::from_secs(config.identity.cache_ttl_secs),
                dns: true,
            },
            XrpcClient::default(),
        );
        Self::open_with(config, resolver).await
    }

    /// [`Index::open`] with an existing identity resolver (shares its cache).
    pub async fn open_with(config: &Config, resolver: Arc<Resolver>) -> Result<Index> {
        let path = config.index_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IndexError::Dir(dir.to_path_buf(), e))?;
        }
        let ix = &config.index;
        let replica = !ix.primary_url.is_empty();
        let db = if replica {
            let db = libsql::Builder::new_remote_replica(
                &path,
                ix.primary_url.clone(),
                ix.auth_token.0.clone(),
            )
            .read_your_writes(true)
            .build()
            .await?;
            // One sync at start, so a fresh replica has the primary's rows before it serves.
            db.sync().await?;
            db
        } else {
            libsql::Builder::new_local(&path).build().await?
        };
        let writer = db.connect()?;
        if !replica {
            // WAL: readers never wait for the writer. The pragma returns a row: query it.
            let _ = writer.query("PRAGMA journal_mode=WAL", ()).await?;
            writer.execute("PRAGMA synchronous=NORMAL", ()).await?;
        }
        writer.busy_timeout(Duration::from_secs(5))?;
        migrate(&writer).await?;
        if replica {
            // Migrations ran on the primary; pull them before the first read.
            db.sync().await?;
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = db.connect()?;
            c.busy_timeout(Duration::from_secs(5))?;
            readers.push(tokio::sync::Mutex::new(c));
        }
        let index = Index {
            inner: Arc::new(Inner {
                db,
                writer: tokio::sync::Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                resolver,
                pulls: std::sync::Mutex::new(HashMap::new()),
                replica,
                tasks: std::sync::Mutex::new(Vec::new()),
                connected: std::sync::Mutex::new(Default::default()),
                local_hold: std::sync::OnceLock::new(),
                local_owners: config.local_mode(),
                config_source: std::sync::OnceLock::new(),
            }),
        };
        index.spawn_pull_flusher();
        if replica {
            index.spawn_replica_sync(Duration::from_secs(ix.sync_interval_secs.max(1)));
        }
        Ok(index)
    }

    /// Local mode: owners are names' first segments, not network identities.
    pub fn local_owners(&self) -> bool {
        self.inner.local_owners
    }

    /// Whether this index is an embedded replica of a remote primary.
    pub fn is_replica(&self) -> bool {
        self.inner.replica
    }

    /// Pull the primary's latest frames now (no-op for a local index).
    pub async fn sync(&self) -> Result<()> {
        if self.inner.replica {
            self.inner.db.sync().await?;
        }
        Ok(())
    }

    /// Whether the consumer of this `index.firehose` endpoint is connected now.
    pub fn firehose_connected(&self, endpoint: &str) -> bool {
        self.inner
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(endpoint)
    }

    pub(crate) fn set_connected(&self, endpoint: &str, up: bool) {
        let mut c = self
            .inner
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if up {
            c.insert(endpoint.to_string());
        } else {
            c.remove(endpoint);
        }
    }

    pub(crate) fn resolver(&self) -> &Arc<Resolver> {
        &self.inner.resolver
    }

    pub(crate) async fn reader(&self) -> tokio::sync::MutexGuard<'_, libsql::Connection> {
        let i = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        self.inner.readers[i].lock().await
    }

    pub(crate) async fn writer(&self) -> tokio::sync::MutexGuard<'_, libsql::Connection> {
        self.inner.writer.lock().await
    }

    fn spawn_pull_flusher(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PULL_FLUSH);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let index = Index { inner };
                if let Err(e) = index.flush_pulls().await {
                    tracing::warn!(error = %e, "flushing pull counts to the index failed");
                }
            }
        });
    }

    fn spawn_replica_sync(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.db.sync().await {
                    tracing::warn!(error = %e, "index replica sync failed");
                }
            }
        });
    }

    /// Count one manifest pull (GET by tag or digest). Only an in-memory counter is touched;
    /// the flusher writes it within [`PULL_FLUSH`].
    pub fn note_pull(&self, identity: &str, repository: &str) {
        let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        *p.entry((identity.to_string(), repository.to_string()))
            .or_insert(0) += 1;
    }

    /// Write the pending pull counters now (also done every [`PULL_FLUSH`]).
    pub async fn flush_pulls(&self) -> Result<()> {
        let pending: Vec<((String, String), u64)> = {
            let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
            p.drain().collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut resolved = Vec::with_capacity(pending.len());
        for ((identity, repo), n) in pending {
            match self.did_of(&identity).await {
                Some(did) => resolved.push((did, repo, n)),
                None => tracing::debug!(%identity, "pull not counted: identity does not resolve"),
            }
        }
        let now = crate::pds::now_rfc3339();
        let conn = self.writer().await;
        let tx = conn.transaction().await?;
        for (did, repo, n) in resolved {
            apply::add_pulls(&tx, &did, &repo, n as i64, &now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The DID behind a name's identity segment (a DID is taken as is; a handle is resolved
    /// through the index first, then the network).
    pub(crate) async fn did_of(&self, identity: &str) -> Option<String> {
        use crate::atproto::repo::syntax::{validate_did, validate_handle};
        if self.inner.local_owners {
            // Local mode: `alice/app` belongs to the local owner `alice` (no network).
            return (!identity.is_empty()).then(|| identity.to_string());
        }
        if identity.starts_with("did:") {
            return validate_did(identity).ok().map(|()| identity.to_string());
        }
        // Names like `library/x` (auth.mode = "none") have no owner on the network.
        validate_handle(identity).ok()?;
        if let Ok(Some(u)) = self.user_by_handle_or_did(identity).await {
            return Some(u.did);
        }
        self.inner.resolver.resolve_did_of(identity).await.ok()
    }
}

async fn migrate(conn: &libsql::Connection) -> Result<()> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        (),
    )
    .await?;
    let mut rows = conn
        .query(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            (),
        )
        .await?;
    let current: i64 = match rows.next().await? {
        Some(r) => r.get(0)?,
        None => 0,
    };
    drop(rows);
    for (version, sql) in schema::MIGRATIONS {
        if *version <= current {
            continue;
        }
        let run = async {
            let tx = conn.transaction().await?;
            tx.execute_batch(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                (*version, crate::pds::now_rfc3339()),
            )
            .await?;
            tx.commit().await
        };
        run.await.map_err(|source| IndexError::Migration {
            version: *version,
            source,
        })?;
        tracing::info!(version, "index migration applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
