//! The index: a libSQL database behind the web UI and search (users, repositories,
//! manifests, layers, platforms, tags, annotations, repo pages, stars, pull/push counts,
//! hold captain records, the firehose cursor), and the only module with SQL.
//!
//! - [`schema`]: versioned migrations (`schema_migrations` tracks what ran).
//! - [`read`]: the typed read API the UI uses ([`Index::repository`], [`Index::tags`],
//!   [`Index::search`], ...).
//! - [`apply`]: turns `io.atcr.*` records into rows. Every source goes through it: direct
//!   writes after a push ([`Index::note_manifest_put`] and friends, queued so they never
//!   fail or slow a push), the firehose consumer ([`firehose`]) and the backfill
//!   ([`backfill`]), so a record echoed back by the network is an idempotent upsert.
//! - Write plumbing: [`outbox`] (a durable redb queue of this appliance's own writes: direct
//!   writes and pull-count deltas), [`drain`] (applies it in order, exactly once),
//!   [`write`] (one transaction = one request to a primary), [`replica`] (start without the
//!   primary, background sync with backoff, token reload, state changes logged once),
//!   [`status`] (what `/_health` shows; error causes naming the key) and [`libsql_log`].
//! - Pull counting: [`Index::note_pull`] only bumps an in-memory counter; every few seconds
//!   the counters become one outbox entry.
//!
//! Storage: `<data_dir>/index.db` (local libSQL), or with `index.primary_url` an embedded
//! replica of a Turso / libsql-server primary (reads are local, writes go to the primary;
//! the start never waits for the primary). The outbox is `<index>.outbox.redb` beside it.
//! Everything here can be rebuilt from the network except pull counts; PDS sessions and
//! other secrets never enter this database.

pub mod apply;
pub mod backfill;
mod drain;
pub mod firehose;
pub mod libsql_log;
pub mod outbox;
pub mod platform;
pub mod read;
mod replica;
pub mod scans;
mod schema;
pub mod status;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::atproto::identity::{IdentityConfig, Resolver};
use crate::atproto::xrpc::XrpcClient;
use crate::config::Config;

pub use platform::ConfigSource;
pub use read::*;
use replica::PRIMARY_TIMEOUT;
pub use status::{Cause, IndexStatus, OutboxStatus};

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
    /// The index does not take writes now (the message names the key and the cause).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Connections used for reads; each has its own lock, so reads run side by side (WAL).
const READERS: usize = 4;
/// How often pull counters move from memory to the outbox.
const PULL_FLUSH: Duration = Duration::from_secs(2);
/// How long a start waits for the primary when there is no local copy to serve yet.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);

/// A handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    db: libsql::Database,
    path: PathBuf,
    /// `index.primary_url` (empty for a local index).
    primary_url: String,
    /// One writer: statements of different transactions never interleave, and a replica
    /// never syncs in the middle of a planned transaction.
    writer: tokio::sync::Mutex<write::Writers>,
    readers: Vec<tokio::sync::Mutex<libsql::Connection>>,
    next_reader: AtomicUsize,
    resolver: Arc<Resolver>,
    /// (identity as pushed/pulled, repository) -> pulls not yet in the outbox.
    pulls: std::sync::Mutex<HashMap<(String, String), u64>>,
    replica: bool,
    outbox: outbox::Outbox,
    /// Wakes the drainer: an entry was queued, the primary is back, or the index closes.
    drain_wake: Arc<tokio::sync::Notify>,
    /// Cuts a failing drainer's backoff short: a new token, or the primary is back.
    retry_now: Arc<tokio::sync::Notify>,
    /// Every outbox entry up to this sequence number has been applied (or dropped).
    applied: tokio::sync::watch::Sender<u64>,
    health: Arc<status::Health>,
    /// Replica: the token sent to the primary.
    creds: Option<Arc<replica::Credentials>>,
    /// Replica: a write reached the primary but the local copy has not synced it yet.
    unsynced: AtomicBool,
    /// The migrations of this build have run.
    migrated: AtomicBool,
    /// [`Index::close`] ran: background tasks end.
    closed: AtomicBool,
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

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the drainer see that the index is gone.
        self.drain_wake.notify_one();
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

/// How to open the index (tests).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Plan transactions on a second connection and ship them as one batch, as a replica
    /// does, even for a local file (tests the statements sent to a primary).
    pub plan_writes: bool,
    /// Leave the outbox alone (a command such as `atcr index backfill` that runs beside
    /// the server, which holds the outbox file; it makes no direct writes).
    pub without_outbox: bool,
}

/// Per-connection settings of the local writer (set again on a reconnect).
pub(super) async fn tune_local_writer(conn: &libsql::Connection) {
    let _ = conn.execute("PRAGMA synchronous=NORMAL", ()).await;
    // 16 MiB of page cache (SQLite's default is 2 MiB): a firehose batch touches many
    // repositories' pages, and re-reading them through read(2) showed in its profile. The
    // cache only grows as pages are used.
    let _ = conn.query("PRAGMA cache_size=-16384", ()).await;
    // The WAL is checkpointed by [`Index::spawn_checkpointer`], off the writer's path; the
    // writer itself only at 8192 pages (32 MiB), should that fall behind. At SQLite's 1000,
    // every firehose batch (thousands of pages) paid a checkpoint and its fsync: a fifth of
    // its CPU and more of its time on a big index.
    let _ = conn.query("PRAGMA wal_autocheckpoint=8192", ()).await;
}

/// How often the checkpointer looks for new writes.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A plain connection to the local file (a replica's planner).
async fn plain_connection(path: &Path) -> Result<(libsql::Database, libsql::Connection)> {
    let db = libsql::Builder::new_local(path).build().await?;
    let c = db.connect()?;
    c.busy_timeout(Duration::from_secs(5))?;
    // A planned transaction is always rolled back: its pages must never reach the WAL.
    let _ = c.query("PRAGMA cache_spill = OFF", ()).await;
    Ok((db, c))
}

/// Whether the file holds the index schema (a replica may have no local copy yet).
async fn has_schema(conn: &libsql::Connection) -> bool {
    let Ok(mut rows) = conn
        .query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'repositories'",
            (),
        )
        .await
    else {
        return false;
    };
    matches!(rows.next().await, Ok(Some(r)) if r.get::<i64>(0).unwrap_or(0) > 0)
}

impl Index {
    /// Open (and migrate) the index named by the configuration. Starts the drainer, the
    /// pull-counter flusher and, for a replica, the background sync; they end when the last
    /// handle drops. A replica whose primary does not answer still opens (reads come from
    /// the local copy, writes are queued); so does a local file that cannot be written.
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

    /// [`Index::open`] for a command run beside the server (`atcr index backfill`): no
    /// outbox (the server holds it).
    pub async fn open_beside_server(config: &Config) -> Result<Index> {
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
        let options = OpenOptions {
            without_outbox: true,
            ..OpenOptions::default()
        };
        Self::open_with_options(config, resolver, options).await
    }

    /// [`Index::open`] with an existing identity resolver (shares its cache).
    pub async fn open_with(config: &Config, resolver: Arc<Resolver>) -> Result<Index> {
        Self::open_with_options(config, resolver, OpenOptions::default()).await
    }

    #[doc(hidden)]
    pub async fn open_with_options(
        config: &Config,
        resolver: Arc<Resolver>,
        options: OpenOptions,
    ) -> Result<Index> {
        let path = config.index_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IndexError::Dir(dir.to_path_buf(), e))?;
        }
        let outbox = if options.without_outbox {
            outbox::Outbox::detached()
        } else {
            let outbox_path = outbox_path(&path);
            tokio::task::spawn_blocking(move || outbox::Outbox::open(&outbox_path))
                .await
                .map_err(|e| IndexError::Network(format!("outbox task: {e}")))??
        };
        let ix = &config.index;
        let replica = !ix.primary_url.is_empty();
        let health = Arc::new(status::Health::default());
        let creds = if replica {
            Some(Arc::new(replica::Credentials::from_config(ix)?))
        } else {
            None
        };
        if replica {
            set_aside_local_index(&path);
        }
        let db = match &creds {
            Some(c) => {
                replica::open_replica(&path, &ix.primary_url, c.clone(), health.clone()).await?
            }
            None => libsql::Builder::new_local(&path).build().await?,
        };
        let ship = db.connect()?;
        if !replica {
            // WAL: readers never wait for the writer. The pragma returns a row: query it.
            // (A file that cannot be written keeps its mode; writes are queued.)
            let _ = ship.query("PRAGMA journal_mode=WAL", ()).await;
            tune_local_writer(&ship).await;
        }
        ship.busy_timeout(Duration::from_secs(5))?;
        let (planner_db, planner) = if replica || options.plan_writes {
            let (d, c) = plain_connection(&path).await?;
            (Some(d), Some(c))
        } else {
            (None, None)
        };
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = db.connect()?;
            c.busy_timeout(Duration::from_secs(5))?;
            readers.push(tokio::sync::Mutex::new(c));
        }
        let local_copy = has_schema(&readers[0].lock().await.clone()).await;
        health.update(|s| {
            s.local_copy = local_copy;
            s.primary_reachable = !replica;
            s.writable = true;
            s.since = crate::pds::now_rfc3339();
        });
        let index = Index {
            inner: Arc::new(Inner {
                db,
                path: path.clone(),
                primary_url: ix.primary_url.clone(),
                writer: tokio::sync::Mutex::new(write::Writers {
                    ship,
                    planner,
                    planner_db,
                    full_sync: std::sync::atomic::AtomicBool::new(false),
                }),
                readers,
                next_reader: AtomicUsize::new(0),
                resolver,
                pulls: std::sync::Mutex::new(HashMap::new()),
                replica,
                outbox,
                drain_wake: Arc::new(tokio::sync::Notify::new()),
                retry_now: Arc::new(tokio::sync::Notify::new()),
                applied: tokio::sync::watch::Sender::new(0),
                health,
                creds,
                unsynced: AtomicBool::new(false),
                migrated: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                tasks: std::sync::Mutex::new(Vec::new()),
                connected: std::sync::Mutex::new(Default::default()),
                local_hold: std::sync::OnceLock::new(),
                local_owners: config.local_mode(),
                config_source: std::sync::OnceLock::new(),
            }),
        };
        if replica {
            if !local_copy {
                // Nothing to serve yet: give the primary a moment to deliver the schema.
                match tokio::time::timeout(FIRST_SYNC_WAIT, index.ensure_ready()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "index replica not ready at start"),
                    Err(_) => tracing::debug!("index replica not ready at start: timed out"),
                }
            }
            index.spawn_lifecycle(Duration::from_secs(ix.sync_interval_secs.max(1)));
        } else if let Err(e) = index.ensure_ready().await {
            // Logged once by the state change; reads of what exists still work.
            tracing::debug!(error = %e, "index not writable at start");
        }
        if !index.inner.outbox.is_empty() {
            tracing::info!(
                entries = index.inner.outbox.len(),
                "index outbox holds writes from the last run; applying them"
            );
        }
        index.spawn_drainer();
        index.spawn_pull_flusher();
        if !index.is_replica() {
            index.spawn_checkpointer();
        }
        Ok(index)
    }

    /// A local index's WAL checkpoints, in the background: every [`CHECKPOINT_EVERY`] with
    /// new writes, a PASSIVE checkpoint on a reader connection (on the blocking pool: it
    /// writes pages and fsyncs the file). PASSIVE never waits for the writer or readers; the
    /// writer goes on committing to the WAL meanwhile, and the WAL starts over once all of
    /// it is in the file.
    fn spawn_checkpointer(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut seen = u64::MAX;
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let index = Index { inner };
                if index.inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                let writes = index
                    .inner
                    .health
                    .counters
                    .write_transactions
                    .load(Ordering::Relaxed);
                if writes == seen {
                    continue;
                }
                seen = writes;
                let handle = tokio::runtime::Handle::current();
                let result = tokio::task::spawn_blocking(move || {
                    handle.block_on(async {
                        let conn = index.reader().await;
                        let mut rows = conn.query("PRAGMA wal_checkpoint(PASSIVE)", ()).await?;
                        while rows.next().await?.is_some() {}
                        Ok::<(), libsql::Error>(())
                    })
                })
                .await;
                if let Ok(Err(e)) = result {
                    tracing::debug!(error = %e, "index WAL checkpoint failed; the writer checkpoints");
                }
            }
        });
    }

    /// Local mode: owners are names' first segments, not network identities.
    pub fn local_owners(&self) -> bool {
        self.inner.local_owners
    }

    /// Whether this index is an embedded replica of a remote primary.
    pub fn is_replica(&self) -> bool {
        self.inner.replica
    }

    /// What the index can do right now (for `/_health` and metrics).
    pub fn status(&self) -> IndexStatus {
        let s = self.inner.health.state();
        let c = &self.inner.health.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let state = if !s.local_copy {
            "unavailable"
        } else if s.writable && (!self.is_replica() || s.primary_reachable) {
            "ok"
        } else {
            "degraded"
        };
        IndexStatus {
            mode: if self.is_replica() {
                "replica"
            } else {
                "local"
            },
            state,
            writable: s.writable && (!self.is_replica() || s.primary_reachable),
            primary_reachable: self.is_replica().then_some(s.primary_reachable),
            error: s.cause.as_ref().map(|c| self.explain(c)),
            cause: s.cause.clone(),
            since: s.since.clone(),
            last_sync: s.last_sync.clone(),
            outbox: OutboxStatus {
                entries: self.inner.outbox.len(),
                bytes: self.inner.outbox.bytes(),
                max_entries: self.inner.outbox.max_entries(),
                max_bytes: self.inner.outbox.max_bytes(),
                applied: get(&c.outbox_applied),
                dropped: get(&c.outbox_dropped),
                rejected: get(&c.outbox_rejected),
            },
            pending_pulls: self.pending_pulls(),
            write_transactions: get(&c.write_transactions),
            syncs: get(&c.syncs),
            sync_failures: get(&c.sync_failures),
            primary_requests: get(&c.primary_requests),
        }
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

/// libSQL keeps a replica's replication position in `<index>-client_wal_index`; a file
/// without it is a local index, which libSQL refuses to turn into a replica. Such a file is
/// moved aside (`<index>.local-<unix time>`, with its `-wal`/`-shm`) so the replica starts
/// fresh from the primary (writes still queued in the outbox go to the primary).
fn set_aside_local_index(path: &Path) {
    let meta = PathBuf::from(format!("{}-client_wal_index", path.display()));
    if !path.exists() || meta.exists() {
        return;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.local-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        if from.exists() {
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::warn!(from = %from.display(), error = %e, "cannot move the local index aside");
            }
        }
    }
    tracing::warn!(
        kept = %aside.display(),
        "index.primary_url is set but index.path held a local index (not a replica): moved it aside; the replica is rebuilt from the primary"
    );
}

/// The outbox file beside the index file: `index.db` -> `index.outbox.redb`.
pub fn outbox_path(index_path: &Path) -> PathBuf {
    index_path.with_extension("outbox.redb")
}

/// Write a consistent copy of the local index file `path` to the new file `dest` and check
/// it (`atcr backup`). `VACUUM INTO` reads in one transaction, so the server's writers go on.
/// Not for an embedded replica: its rows live in the primary.
pub async fn snapshot_file(path: &std::path::Path, dest: &std::path::Path) -> Result<()> {
    let db = libsql::Builder::new_local(path).build().await?;
    let conn = db.connect()?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [dest.to_string_lossy().into_owned()])
        .await?;
    drop(conn);
    check_file(dest).await
}

/// `PRAGMA integrity_check` of an index file no server uses (a backup or a restored copy).
pub async fn check_file(path: &std::path::Path) -> Result<()> {
    let db = libsql::Builder::new_local(path).build().await?;
    let conn = db.connect()?;
    let mut rows = conn.query("PRAGMA integrity_check", ()).await?;
    let mut problems = Vec::new();
    while let Some(row) = rows.next().await? {
        let line: String = row.get(0)?;
        if line != "ok" {
            problems.push(line);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IndexError::InvalidRecord(format!(
            "{}: integrity check failed: {}",
            path.display(),
            problems.join("; ")
        )))
    }
}

async fn migrate(conn: &libsql::Connection) -> Result<()> {
    // Read first: a current schema needs no write (a read-only file, or a replica whose
    // primary is away, still counts as migrated).
    let current: i64 = match conn
        .query(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            (),
        )
        .await
    {
        Ok(mut rows) => match rows.next().await? {
            Some(r) => r.get(0)?,
            None => 0,
        },
        Err(_) => 0,
    };
    if current >= schema::MIGRATIONS.last().map_or(0, |m| m.0) {
        return Ok(());
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        (),
    )
    .await?;
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

#[cfg(test)]
mod resilience_tests;
