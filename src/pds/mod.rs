//! The hold's embedded PDS: one ATProto repo (`did:web:<public host>`) holding the hold's
//! records (captain, crew, profile; later layers, stats, posts), stored in redb, exported as
//! CAR and streamed on the `com.atproto.sync.subscribeRepos` firehose.
//!
//! - [`store`]: the redb carstore (blocks, head, sequenced events), one write transaction per
//!   commit.
//! - the P-256 repo signing key on disk (`keys/hold-repo.key`, 0600) comes from
//!   [`crate::auth::keys`], the one key-file module.
//! - [`records`]: the bootstrap records and their sync from config.
//! - [`permissions`]: the captain/crew permission model, pure functions.
//! - [`xrpc`]: the HTTP surface (`/.well-known/*`, `com.atproto.*` read/sync endpoints, the
//!   websocket firehose).
//!
//! Concurrency: the in-memory [`Repo`] sits behind an `RwLock`; its write lock is the single
//! writer (one commit at a time), reads share the read lock. All repo and redb work runs on
//! the blocking pool.

pub mod export;
pub mod layer_index;
pub mod permissions;
pub mod records;
pub mod service_auth;
pub mod store;
pub mod xrpc;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Semaphore};

use crate::atproto::repo::dagcbor::{self, Ipld};
use crate::atproto::repo::datamodel::{ipld_to_json, record_from_json};
use crate::atproto::repo::{
    read_car_with_root, Blockstore, CarError, CarLimits, Cid, CommitResult, MemoryBlockstore, Mst,
    PublicKey, Repo, RepoError, SigningKey, Tid, UnsignedCommit, Write,
};
use crate::config::Config;
use store::{Head, HoldStore, HoldStoreError, StagedStore};

/// Most firehose subscribers served at once.
pub const MAX_SUBSCRIBERS: usize = 256;
/// Largest CAR `atcr hold import` accepts.
pub const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;
/// Events replayed per redb read when a subscriber catches up from a cursor.
pub const REPLAY_BATCH: usize = 256;
/// Firehose `#commit` limits from the lexicon: above them the commit is announced as
/// `#sync`.
const MAX_EVENT_OPS: usize = 200;
const MAX_EVENT_BLOCKS: usize = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Store(#[from] HoldStoreError),
    #[error(transparent)]
    Key(#[from] crate::auth::keys::KeyError),
    #[error("hold repo: {0}")]
    Repo(#[from] RepoError),
    #[error("CAR: {0}")]
    Car(#[from] CarError),
    #[error("cannot create {0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
    #[error("record: {0}")]
    Record(String),
    #[error("hold internal error: {0}")]
    Internal(String),
}

/// Who the hold is, derived from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `host[:port]`, lowercase.
    pub host: String,
    /// `did:web:<host with : as %3A>`.
    pub did: String,
    /// The host without port (the account's handle).
    pub handle: String,
    /// Configured public base URL; `None`: taken from each request's Host header.
    pub public_url: Option<String>,
}

impl Identity {
    pub fn from_config(config: &Config) -> Identity {
        let public_url = &config.server.public_url;
        let (host, url) = if !config.hold.public_host.is_empty() {
            let h = config.hold.public_host.to_ascii_lowercase();
            let url = if public_url.is_empty() {
                format!("https://{h}")
            } else {
                public_url.clone()
            };
            (h, Some(url))
        } else if !public_url.is_empty() {
            let authority = public_url
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches('/');
            (authority.to_ascii_lowercase(), Some(public_url.clone()))
        } else {
            let addr = config.listen_addr();
            let ip = addr.ip();
            let name = if ip.is_loopback() || ip.is_unspecified() || ip.is_ipv6() {
                "localhost".to_string()
            } else {
                ip.to_string()
            };
            let host = match addr.port() {
                0 => name,
                p => format!("{name}:{p}"),
            };
            (host, None)
        };
        let handle = host.split(':').next().unwrap_or_default().to_string();
        Identity {
            did: format!("did:web:{}", host.replace(':', "%3A")),
            host,
            handle,
            public_url: url,
        }
    }
}

/// What one commit did (for callers and tests).
#[derive(Debug, Clone)]
pub struct Committed {
    pub seq: u64,
    pub commit: Cid,
    pub rev: String,
    pub ops: Vec<crate::atproto::repo::RepoOp>,
}

/// A record as the XRPC API returns it.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub rkey: String,
    pub cid: Cid,
    pub value: serde_json::Value,
}

type SharedRepo = Arc<RwLock<Repo<StagedStore>>>;

pub struct HoldPds {
    ident: Identity,
    public_key: PublicKey,
    key: SigningKey,
    store: Arc<HoldStore>,
    repo: SharedRepo,
    /// (head, rev), updated after each commit: cheap to read on the async runtime.
    latest: Mutex<(Cid, String)>,
    events: broadcast::Sender<(u64, Bytes)>,
    subscribers: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for HoldPds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldPds")
            .field("did", &self.ident.did)
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> HoldError {
    HoldError::Internal("hold repo lock poisoned".into())
}

impl HoldPds {
    /// Opens (or creates) the hold repo under `config.server.data_dir` and syncs the
    /// bootstrap records with the config. Blocking: call at startup or from a blocking thread.
    pub fn open(config: &Config) -> Result<Arc<HoldPds>, HoldError> {
        let pds = Self::open_unsynced(config)?;
        let mut hold = config.hold.clone();
        hold.region = config.hold_region();
        pds.sync_records(&hold)?;
        Ok(pds)
    }

    /// Opens without syncing the records from config (`atcr hold export`).
    pub fn open_unsynced(config: &Config) -> Result<Arc<HoldPds>, HoldError> {
        let data = &config.server.data_dir;
        std::fs::create_dir_all(data).map_err(|e| HoldError::Io(data.clone(), e))?;
        let key = crate::auth::keys::hold_repo_key(&data.join("keys"))?;
        let store = HoldStore::open(&data.join("hold.redb"))?;
        Self::open_with(Identity::from_config(config), key, store)
    }

    /// Opens with an explicit identity, key and store (tests, `atcr hold export`).
    pub fn open_with(
        ident: Identity,
        key: SigningKey,
        store: Arc<HoldStore>,
    ) -> Result<Arc<HoldPds>, HoldError> {
        let (events, _) = broadcast::channel(1024);
        let repo = match store.head()? {
            None => {
                let (repo, result) =
                    Repo::create(&ident.did, key.clone(), StagedStore::new(store.clone()))?;
                // A new account: like the reference PDS, its identity and status, the first
                // commit and a #sync of it, in one transaction.
                let announce = [
                    Announce::identity(&ident),
                    Announce::active(&ident.did),
                    Announce::Commit,
                    Announce::Sync,
                ];
                persist(&store, repo.store(), &ident.did, &result, None, &announce)?;
                store.put_meta(ANNOUNCED, announced_value(&ident).as_bytes())?;
                tracing::info!(did = %ident.did, "created the hold repo");
                repo
            }
            Some(head) => {
                let repo = Repo::load(StagedStore::new(store.clone()), key.clone(), head.commit)?;
                if repo.did() == ident.did {
                    repo
                } else {
                    tracing::warn!(old = %repo.did(), new = %ident.did, "hold DID changed; re-signing the repo under the new DID");
                    reroot(&store, repo, &key, &ident)?
                }
            }
        };
        announce_identity(&store, &ident)?;
        if !store.blob_refs_ready()? {
            // A repo from before `record_blobs`: index the blobs its records name, once.
            let mut refs = Vec::new();
            for (path, cid) in repo.list_all()? {
                if let Some(bytes) = store.get_block(&cid)? {
                    let cids = blobs_in(&bytes);
                    if !cids.is_empty() {
                        refs.push(store::BlobRefs { path, cids });
                    }
                }
            }
            store.backfill_blob_refs(&refs, repo.rev())?;
        }
        if !store.layer_index_ready()? {
            // A repo from before the layer index: build it from the records, once.
            let started = std::time::Instant::now();
            let n = rebuild_layer_index(&store, &repo)?;
            tracing::info!(
                records = n,
                ms = started.elapsed().as_millis() as u64,
                "built the hold's layer index"
            );
        }
        let latest = Mutex::new((repo.head(), repo.rev().to_string()));
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(HoldPds {
            public_key: key.public_key(),
            key,
            ident,
            store,
            repo: Arc::new(RwLock::new(repo)),
            latest,
            events,
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            shutdown,
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.ident
    }
    pub fn did(&self) -> &str {
        &self.ident.did
    }
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The redb store (the hold API keeps its upload sessions there).
    pub fn store(&self) -> &Arc<HoldStore> {
        &self.store
    }

    /// (head commit CID, rev).
    pub fn latest_commit(&self) -> (Cid, String) {
        self.latest
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Applies writes computed from the current repo state as one commit, under the single
    /// writer lock. An empty write list commits nothing and returns `None`. Blocking.
    pub fn write_blocking(
        &self,
        plan: impl FnOnce(&Repo<StagedStore>) -> Result<Vec<Write>, HoldError>,
    ) -> Result<Option<Committed>, HoldError> {
        let mut repo = self.repo.write().map_err(poisoned)?;
        let writes = plan(&repo)?;
        if writes.is_empty() {
            return Ok(None);
        }
        let old_head = repo.head();
        repo.store().take_pending();
        let result = match repo.apply_writes(&writes) {
            Ok(r) => r,
            Err(e) => {
                repo.store().take_pending();
                return Err(e.into());
            }
        };
        match persist(
            &self.store,
            repo.store(),
            &self.ident.did,
            &result,
            Some(&self.events),
            &[Announce::Commit],
        ) {
            Ok(seq) => {
                if let Ok(mut l) = self.latest.lock() {
                    *l = (result.commit_cid, result.rev.clone());
                }
                Ok(Some(Committed {
                    seq,
                    commit: result.commit_cid,
                    rev: result.rev,
                    ops: result.ops,
                }))
            }
            Err(e) => {
                // The commit never reached disk: forget it in memory too.
                *repo = Repo::load(
                    StagedStore::new(self.store.clone()),
                    self.key.clone(),
                    old_head,
                )?;
                Err(e)
            }
        }
    }

    /// [`HoldPds::write_blocking`] on the blocking pool.
    pub async fn write_async(
        self: Arc<Self>,
        plan: impl FnOnce(&Repo<StagedStore>) -> Result<Vec<Write>, HoldError> + Send + 'static,
    ) -> Result<Option<Committed>, HoldError> {
        run_blocking(move || self.write_blocking(plan)).await
    }

    /// `apply_writes` on the blocking pool.
    pub async fn apply_writes(
        self: &Arc<Self>,
        writes: Vec<Write>,
    ) -> Result<Option<Committed>, HoldError> {
        let this = self.clone();
        run_blocking(move || this.write_blocking(move |_| Ok(writes))).await
    }

    /// Runs a read against the current repo state on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Repo<StagedStore>) -> Result<T, HoldError> + Send + 'static,
    ) -> Result<T, HoldError> {
        let repo = self.repo.clone();
        run_blocking(move || {
            let r = repo.read().map_err(poisoned)?;
            f(&r)
        })
        .await
    }

    pub async fn get_record(
        &self,
        collection: &str,
        rkey: &str,
    ) -> Result<Option<RecordView>, HoldError> {
        let (c, k) = (collection.to_string(), rkey.to_string());
        self.read(move |r| match r.get_record(&c, &k)? {
            None => Ok(None),
            Some((cid, bytes)) => Ok(Some(RecordView {
                rkey: k,
                cid,
                value: record_json(&bytes)?,
            })),
        })
        .await
    }

    pub async fn list_records(
        &self,
        collection: &str,
        limit: usize,
        cursor: Option<&str>,
        reverse: bool,
    ) -> Result<Vec<RecordView>, HoldError> {
        let (c, cur) = (collection.to_string(), cursor.map(str::to_string));
        self.read(move |r| {
            r.list_records(&c, limit, cur.as_deref(), reverse)?
                .into_iter()
                .map(|e| {
                    Ok(RecordView {
                        value: record_json(&e.value)?,
                        rkey: e.rkey,
                        cid: e.cid,
                    })
                })
                .collect()
        })
        .await
    }

    /// The captain record (`None` only if it was deleted by hand).
    pub async fn captain(&self) -> Result<Option<permissions::Captain>, HoldError> {
        Ok(self
            .get_record(records::CAPTAIN, records::SELF)
            .await?
            .and_then(|r| permissions::Captain::from_record(&r.value)))
    }

    /// The crew record of `member` (at its deterministic rkey).
    pub async fn crew_member(
        &self,
        member: &str,
    ) -> Result<Option<permissions::CrewMember>, HoldError> {
        Ok(self
            .get_record(records::CREW, &records::crew_rkey(member))
            .await?
            .and_then(|r| permissions::CrewMember::from_record(&r.value))
            .filter(|c| c.member == member))
    }

    /// [`permissions::decide`] with the current records.
    pub async fn authorize(
        &self,
        caller: Option<&str>,
        action: permissions::Action,
    ) -> Result<permissions::Decision, HoldError> {
        let captain = self
            .captain()
            .await?
            .ok_or_else(|| HoldError::Internal("the captain record is missing".into()))?;
        let crew = match caller {
            Some(did) => self.crew_member(did).await?,
            None => None,
        };
        Ok(permissions::decide(&captain, crew.as_ref(), caller, action))
    }

    /// Distinct collections in the repo (a full key walk; the hold repo is small).
    pub async fn collections(&self) -> Result<Vec<String>, HoldError> {
        self.read(|r| {
            let mut out: Vec<String> = Vec::new();
            for (path, _) in r.list_all()? {
                let c = path.split('/').next().unwrap_or_default();
                if out.last().map(String::as_str) != Some(c) {
                    out.push(c.to_string());
                }
            }
            Ok(out)
        })
        .await
    }

    /// `com.atproto.sync.getRepo`: the whole repo as a CAR (built in memory).
    pub async fn export_car(&self) -> Result<Vec<u8>, HoldError> {
        self.read(|r| Ok(r.export_car()?)).await
    }

    /// `com.atproto.sync.getRepo` streamed: the repo at the current head, walked on a
    /// blocking thread with bounded memory (see [`export`]).
    pub fn export_car_stream(&self) -> crate::blob::ChunkStream {
        export::car_stream(self.store.clone(), self.latest_commit().0)
    }

    /// The whole repo as a CAR, built in memory on the calling thread (tests; the CLI
    /// streams with [`HoldPds::write_car_blocking`]).
    pub fn export_car_blocking(&self) -> Result<Vec<u8>, HoldError> {
        let r = self.repo.read().map_err(poisoned)?;
        Ok(r.export_car()?)
    }

    /// The repo at the current head as a CAR written to `w` block by block (the walk of
    /// `getRepo`, bounded memory). Returns the bytes written. Blocking.
    pub fn write_car_blocking(&self, w: &mut dyn std::io::Write) -> Result<u64, HoldError> {
        export::write_car_to(&self.store, self.latest_commit().0, w)
    }

    /// `com.atproto.sync.getRecord`: the proof CAR for one record (or its absence).
    pub async fn record_proof_car(
        &self,
        collection: &str,
        rkey: &str,
    ) -> Result<Vec<u8>, HoldError> {
        let (c, k) = (collection.to_string(), rkey.to_string());
        self.read(move |r| Ok(r.record_proof_car(&c, &k)?)).await
    }

    /// `com.atproto.sync.listBlobs`: blob CIDs the repo's records reference (written after
    /// rev `since`), CID order, after `cursor`, at most `limit`.
    pub async fn list_blobs(
        &self,
        since: Option<String>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Vec<String>, HoldError> {
        Ok(self
            .store
            .run(move |s| s.list_blobs(since.as_deref(), cursor.as_deref(), limit))
            .await?)
    }

    /// Upserts every record of a repo CAR (ours or another repo's) in one commit.
    /// Returns the number of records written (unchanged records are skipped).
    pub fn import_car_blocking(&self, car: &[u8]) -> Result<(usize, Option<Committed>), HoldError> {
        if car.len() as u64 > MAX_IMPORT_BYTES {
            return Err(CarError::TooLarge(MAX_IMPORT_BYTES).into());
        }
        let limits = CarLimits {
            max_total_bytes: MAX_IMPORT_BYTES,
            ..CarLimits::default()
        };
        let (root, blocks) = read_car_with_root(car, limits)?;
        let commit_bytes = blocks.get(&root).ok_or(RepoError::MissingBlock(root))?;
        let commit = crate::atproto::repo::Commit::decode(commit_bytes).map_err(RepoError::from)?;
        let mem = MemoryBlockstore::from_blocks(blocks);
        let entries = Mst::load(&mem, commit.data)
            .map_err(RepoError::from)?
            .entries(&mem)
            .map_err(RepoError::from)?;
        let mut records = Vec::with_capacity(entries.len());
        for (path, cid) in entries {
            let bytes = mem
                .get(&cid)
                .map_err(RepoError::from)?
                .ok_or(RepoError::MissingBlock(cid))?;
            let (c, k) = path
                .split_once('/')
                .ok_or_else(|| HoldError::Record(format!("bad record path {path}")))?;
            records.push((c.to_string(), k.to_string(), cid, bytes));
        }
        let mut written = 0;
        let committed = self.write_blocking(|repo| {
            let mut writes = Vec::new();
            for (collection, rkey, cid, record) in records {
                let existing = repo.get_record(&collection, &rkey)?;
                match existing {
                    Some((old, _)) if old == cid => continue,
                    Some(_) => writes.push(Write::Update {
                        collection,
                        rkey,
                        record,
                    }),
                    None => writes.push(Write::Create {
                        collection,
                        rkey,
                        record,
                    }),
                }
            }
            written = writes.len();
            Ok(writes)
        })?;
        Ok((written, committed))
    }

    /// Events with seq > `after` (at most `limit`), as encoded frames.
    pub async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, HoldError> {
        let evs = self
            .store
            .run(move |s| s.events_after(after, limit))
            .await?;
        Ok(evs.into_iter().map(|(s, b)| (s, Bytes::from(b))).collect())
    }

    pub async fn last_seq(&self) -> Result<u64, HoldError> {
        Ok(self.store.run(|s| s.last_seq()).await?)
    }

    /// A firehose subscription: live events from now on. Replay from a cursor is done by
    /// the caller with [`HoldPds::events_after`] *after* subscribing, skipping duplicates.
    pub fn subscribe(&self) -> Option<Subscription> {
        let permit = self.subscribers.clone().try_acquire_owned().ok()?;
        Some(Subscription {
            live: self.events.subscribe(),
            shutdown: self.shutdown.subscribe(),
            _permit: permit,
        })
    }

    /// Ends every firehose subscription and waits (up to 5 s) until they are gone, so the
    /// database can be reopened (restart in tests).
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let all = u32::try_from(MAX_SUBSCRIBERS).unwrap_or(u32::MAX);
        let wait = self.subscribers.acquire_many(all);
        if let Ok(Ok(p)) = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await {
            drop(p);
        }
    }

    /// Writes the captain/crew/profile bootstrap records, or updates the captain when the
    /// config changed. Blocking.
    pub fn sync_records(
        &self,
        cfg: &crate::config::HoldConfig,
    ) -> Result<Option<Committed>, HoldError> {
        const APPLIED: &str = "captain_settings_from_config";
        let now = now_rfc3339();
        let last_applied = self
            .store
            .get_meta(APPLIED)?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let committed = self.write_blocking(|repo| {
            records::bootstrap_writes(repo, &self.ident, cfg, last_applied.as_ref(), &now)
        })?;
        if let Some(c) = &committed {
            tracing::info!(rev = %c.rev, ops = c.ops.len(), "hold records synced with the config");
        }
        // Written after the commit: a crash in between only means the next start compares
        // against older settings, and re-applies values the record already has.
        let applied = records::captain_settings(&self.ident, cfg).to_string();
        self.store.put_meta(APPLIED, applied.as_bytes())?;
        Ok(committed)
    }
}

/// A live firehose subscription; holds a subscriber slot until dropped.
pub struct Subscription {
    pub live: broadcast::Receiver<(u64, Bytes)>,
    pub shutdown: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HoldError> + Send + 'static,
) -> Result<T, HoldError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HoldError::Internal(format!("blocking task failed: {e}")))?
}

/// Every record of `collection` in the repo for which `keep` holds, paged through in rkey
/// order.
pub fn collection_where<S: crate::atproto::repo::Blockstore>(
    repo: &crate::atproto::repo::Repo<S>,
    collection: &str,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<Vec<(String, serde_json::Value)>, HoldError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = repo.list_records(collection, 500, cursor.as_deref(), false)?;
        let done = page.len() < 500;
        for e in page {
            cursor = Some(e.rkey.clone());
            let v = record_json(&e.value)?;
            if keep(&v) {
                out.push((e.rkey, v));
            }
        }
        if done {
            return Ok(out);
        }
    }
}

/// A record's DAG-CBOR bytes as ATProto JSON.
pub fn record_json(bytes: &[u8]) -> Result<serde_json::Value, HoldError> {
    let v: Ipld = dagcbor::decode(bytes).map_err(|e| HoldError::Record(e.to_string()))?;
    Ok(ipld_to_json(&v))
}

/// ATProto JSON to canonical DAG-CBOR record bytes.
pub fn record_cbor(value: &serde_json::Value) -> Result<Bytes, HoldError> {
    let ipld = record_from_json(value).map_err(|e| HoldError::Record(e.to_string()))?;
    Ok(dagcbor::encode(&ipld)
        .map_err(|e| HoldError::Record(e.to_string()))?
        .into())
}

/// What a commit is sequenced with on the firehose (in this order, consecutive seqs).
#[derive(Debug, Clone)]
pub enum Announce {
    /// `#identity` of a DID (its handle when it is a valid one).
    Identity { did: String, handle: Option<String> },
    /// `#account`: hosting status of a DID.
    Account {
        did: String,
        active: bool,
        status: Option<String>,
    },
    /// The commit as `#commit`; a commit above the lexicon's limits (200 ops, 2,000,000
    /// bytes of blocks) is announced as `#sync` instead (sync v1.1: `tooBig` is replaced by
    /// `#sync`, and consumers fetch the repo).
    Commit,
    /// `#sync`: the commit block alone, declaring the repo's current state.
    Sync,
}

impl Announce {
    fn identity(ident: &Identity) -> Announce {
        let handle = crate::atproto::repo::syntax::validate_handle(&ident.handle)
            .is_ok()
            .then(|| ident.handle.clone());
        Announce::Identity {
            did: ident.did.clone(),
            handle,
        }
    }

    fn active(did: &str) -> Announce {
        Announce::Account {
            did: did.to_string(),
            active: true,
            status: None,
        }
    }
}

/// Meta key: the identity last announced on the firehose (`did handle`).
const ANNOUNCED: &str = "announced_identity";

fn announced_value(ident: &Identity) -> String {
    format!("{} {}", ident.did, ident.handle)
}

/// Announces the hold's `#identity` and `#account` when they were never announced, or the
/// handle changed since (a repo created before these events existed, a new public host).
fn announce_identity(store: &HoldStore, ident: &Identity) -> Result<(), HoldError> {
    let want = announced_value(ident);
    if store.get_meta(ANNOUNCED)?.as_deref() == Some(want.as_bytes()) {
        return Ok(());
    }
    let time = now_rfc3339();
    let events = [Announce::identity(ident), Announce::active(&ident.did)];
    let makers = frame_makers(&events, None, &time);
    let refs: Vec<store::EventMaker<'_>> = makers.iter().map(|m| m.as_ref()).collect();
    store.append_events(&refs, Some((ANNOUNCED, want.as_bytes())))?;
    tracing::info!(did = %ident.did, handle = %ident.handle, "announced the hold's identity on the firehose");
    Ok(())
}

/// Writes one commit (pending blocks + head + its events) in one redb transaction, then
/// broadcasts the events. Returns the seq of the last event.
fn persist(
    store: &HoldStore,
    staged: &StagedStore,
    did: &str,
    result: &CommitResult,
    live: Option<&broadcast::Sender<(u64, Bytes)>>,
    announce: &[Announce],
) -> Result<u64, HoldError> {
    let blocks = staged.take_pending();
    let head = Head {
        did: did.to_string(),
        commit: result.commit_cid,
        rev: result.rev.clone(),
    };
    let time = now_rfc3339();
    let makers = frame_makers(announce, Some((did, result)), &time);
    let refs: Vec<store::EventMaker<'_>> = makers.iter().map(|m| m.as_ref()).collect();
    let blob_refs = blob_refs_of(store, &blocks, result)?;
    let layers = layer_changes_of(store, &blocks, result)?;
    let events = store.commit_change(&blocks, &head, &blob_refs, &layers, &refs)?;
    let last = events
        .last()
        .map(|(seq, _)| *seq)
        .ok_or_else(|| HoldError::Internal("no event sequenced".into()))?;
    if let Some(tx) = live {
        for (seq, frame) in events {
            // No receivers is fine.
            let _ = tx.send((seq, Bytes::from(frame)));
        }
    }
    Ok(last)
}

/// The blob CIDs a record (DAG-CBOR) references: every `{"$type": "blob", "ref": <link>}`.
fn blobs_in(record: &[u8]) -> Vec<String> {
    fn walk(v: &Ipld, out: &mut Vec<String>, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Ipld::Map(m) => {
                if m.get("$type") == Some(&Ipld::String("blob".into())) {
                    if let Some(Ipld::Link(cid)) = m.get("ref") {
                        out.push(cid.to_string());
                    }
                }
                for x in m.values() {
                    walk(x, out, depth + 1);
                }
            }
            Ipld::List(l) => l.iter().for_each(|x| walk(x, out, depth + 1)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = dagcbor::decode::<Ipld>(record) {
        walk(&v, &mut out, 0);
    }
    out.sort();
    out.dedup();
    out
}

/// What each record a commit touched references now (for `sync.listBlobs`).
fn blob_refs_of(
    store: &HoldStore,
    pending: &crate::atproto::repo::BlockMap,
    result: &CommitResult,
) -> Result<Vec<store::BlobRefs>, HoldError> {
    let mut out = Vec::with_capacity(result.ops.len());
    for op in &result.ops {
        let cids = match op.cid {
            None => Vec::new(),
            Some(cid) => {
                let bytes = match pending.get(&cid).or_else(|| result.new_blocks.get(&cid)) {
                    Some(b) => b.clone(),
                    None => store.get_block(&cid)?.unwrap_or_default(),
                };
                blobs_in(&bytes)
            }
        };
        out.push(store::BlobRefs {
            path: op.path.clone(),
            cids,
        });
    }
    Ok(out)
}

/// The layer index rows of the `io.atcr.hold.layer` records a commit touched.
fn layer_changes_of(
    store: &HoldStore,
    pending: &crate::atproto::repo::BlockMap,
    result: &CommitResult,
) -> Result<Vec<layer_index::LayerChange>, HoldError> {
    let prefix = concat!("io.atcr.hold.layer", "/");
    let mut out = Vec::new();
    for op in &result.ops {
        let Some(rkey) = op.path.strip_prefix(prefix) else {
            continue;
        };
        let now = match op.cid {
            None => None,
            Some(cid) => {
                let bytes = match pending.get(&cid).or_else(|| result.new_blocks.get(&cid)) {
                    Some(b) => b.clone(),
                    None => store.get_block(&cid)?.unwrap_or_default(),
                };
                record_json(&bytes)
                    .ok()
                    .and_then(|v| layer_index::LayerFields::from_json(&v))
            }
        };
        out.push(layer_index::LayerChange {
            rkey: rkey.to_string(),
            now,
        });
    }
    Ok(out)
}

/// Fills the layer index from every layer record of `repo` (a hold from before it).
fn rebuild_layer_index<S: crate::atproto::repo::Blockstore>(
    store: &HoldStore,
    repo: &Repo<S>,
) -> Result<u64, HoldError> {
    let collection = "io.atcr.hold.layer";
    let mut cursor: Option<String> = None;
    let mut pages = std::iter::from_fn(move || -> Option<Result<Vec<_>, HoldError>> {
        let page = match repo.list_records(collection, 1000, cursor.as_deref(), false) {
            Ok(p) => p,
            Err(e) => return Some(Err(e.into())),
        };
        if page.is_empty() {
            return None;
        }
        cursor = page.last().map(|e| e.rkey.clone());
        Some(Ok(page
            .into_iter()
            .map(|e| {
                let fields = record_json(&e.value)
                    .ok()
                    .and_then(|v| layer_index::LayerFields::from_json(&v));
                (e.rkey, fields)
            })
            .collect()))
    });
    let mut failed = None;
    let records = std::iter::from_fn(|| match pages.next() {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            failed = Some(e);
            None
        }
        None => None,
    })
    .flatten()
    .map(Ok);
    let n = store.rebuild_layer_index(records)?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(n)
}

/// A frame builder borrowing what its events describe.
type BoxedMaker<'a> = Box<dyn Fn(u64) -> Result<Vec<u8>, HoldStoreError> + 'a>;

/// One frame builder per announcement, each given its seq by the store.
fn frame_makers<'a>(
    announce: &'a [Announce],
    commit: Option<(&'a str, &'a CommitResult)>,
    time: &'a str,
) -> Vec<BoxedMaker<'a>> {
    announce
        .iter()
        .map(|a| {
            Box::new(move |seq: u64| {
                encode_announcement(seq, a, commit, time).map_err(|e| HoldStoreError(e.to_string()))
            }) as BoxedMaker<'a>
        })
        .collect()
}

/// One frame for `a`; `commit` is the (repo DID, commit) the commit-bound events describe.
fn encode_announcement(
    seq: u64,
    a: &Announce,
    commit: Option<(&str, &CommitResult)>,
    time: &str,
) -> Result<Vec<u8>, dagcbor::DagCborError> {
    let no_commit = || dagcbor::DagCborError::Encode("an event needs its commit".into());
    match a {
        Announce::Identity { did, handle } => {
            encode_identity_frame(seq, did, handle.as_deref(), time)
        }
        Announce::Account {
            did,
            active,
            status,
        } => encode_account_frame(seq, did, *active, status.as_deref(), time),
        Announce::Commit => {
            let (did, r) = commit.ok_or_else(no_commit)?;
            if r.ops.len() > MAX_EVENT_OPS || r.car.len() > MAX_EVENT_BLOCKS {
                encode_sync_frame(seq, did, r, time)
            } else {
                encode_commit_frame(seq, did, r, time)
            }
        }
        Announce::Sync => {
            let (did, r) = commit.ok_or_else(no_commit)?;
            encode_sync_frame(seq, did, r, time)
        }
    }
}

/// Re-signs the current data root under a new DID (the configured host changed).
fn reroot(
    store: &Arc<HoldStore>,
    repo: Repo<StagedStore>,
    key: &SigningKey,
    ident: &Identity,
) -> Result<Repo<StagedStore>, HoldError> {
    let did = ident.did.as_str();
    let now = Tid::now();
    let rev = match Tid::parse(repo.rev()) {
        Ok(prev) if now <= prev => prev.successor(),
        _ => now,
    };
    let commit = UnsignedCommit::new(did, repo.data_root(), rev.as_str(), None)
        .map_err(RepoError::from)?
        .sign(key)
        .map_err(RepoError::from)?;
    let (cid, bytes) = commit.to_block().map_err(RepoError::from)?;
    let mut blocks = crate::atproto::repo::BlockMap::new();
    blocks.insert(cid, Bytes::from(bytes));
    let car = crate::atproto::repo::write_car(cid, &blocks)?;
    repo.store().put_many(&blocks).map_err(RepoError::from)?;
    let result = CommitResult {
        commit_cid: cid,
        rev: rev.to_string(),
        since: Some(repo.rev().to_string()),
        prev_data: Some(repo.data_root()),
        data: repo.data_root(),
        new_blocks: blocks,
        ops: Vec::new(),
        car,
    };
    // A new account for the new DID (its identity, status and state as a #sync), and the
    // old DID is no longer hosted here.
    let old = Announce::Account {
        did: repo.did().to_string(),
        active: false,
        status: Some("deleted".into()),
    };
    let announce = [
        old,
        Announce::identity(ident),
        Announce::active(did),
        Announce::Sync,
    ];
    persist(store, repo.store(), did, &result, None, &announce)?;
    store.put_meta(ANNOUNCED, announced_value(ident).as_bytes())?;
    Ok(Repo::load(
        StagedStore::new(store.clone()),
        key.clone(),
        cid,
    )?)
}

#[derive(Serialize)]
struct FrameHeader<'a> {
    op: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a str>,
}

#[derive(Serialize)]
struct OpOut<'a> {
    action: &'a str,
    path: &'a str,
    cid: Option<Cid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<Cid>,
}

#[derive(Serialize)]
struct CommitEvent<'a> {
    seq: i64,
    rebase: bool,
    #[serde(rename = "tooBig")]
    too_big: bool,
    repo: &'a str,
    commit: Cid,
    rev: &'a str,
    since: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    ops: Vec<OpOut<'a>>,
    blobs: Vec<Cid>,
    time: &'a str,
    #[serde(rename = "prevData", skip_serializing_if = "Option::is_none")]
    prev_data: Option<Cid>,
}

/// One firehose frame: DAG-CBOR header `{op: 1, t: "#commit"}` then the `#commit` body.
/// Commits over the lexicon limits (200 ops, 2,000,000 bytes of blocks) are marked `tooBig`
/// without blocks or ops here; the hold itself announces those as `#sync` instead
/// ([`Announce::Commit`]).
pub fn encode_commit_frame(
    seq: u64,
    did: &str,
    r: &CommitResult,
    time: &str,
) -> Result<Vec<u8>, dagcbor::DagCborError> {
    let too_big = r.ops.len() > MAX_EVENT_OPS || r.car.len() > MAX_EVENT_BLOCKS;
    let ops = if too_big {
        Vec::new()
    } else {
        r.ops
            .iter()
            .map(|op| OpOut {
                action: op.action.as_str(),
                path: &op.path,
                cid: op.cid,
                prev: op.prev,
            })
            .collect()
    };
    let body = CommitEvent {
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        rebase: false,
        too_big,
        repo: did,
        commit: r.commit_cid,
        rev: &r.rev,
        since: r.since.as_deref(),
        blocks: if too_big { &[] } else { &r.car },
        ops,
        blobs: Vec::new(),
        time,
        prev_data: r.prev_data,
    };
    let mut out = dagcbor::encode(&FrameHeader {
        op: 1,
        t: Some("#commit"),
    })?;
    out.extend(dagcbor::encode(&body)?);
    Ok(out)
}

#[derive(Serialize)]
struct SyncEvent<'a> {
    seq: i64,
    did: &'a str,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    rev: &'a str,
    time: &'a str,
}

#[derive(Serialize)]
struct IdentityEvent<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
}

#[derive(Serialize)]
struct AccountEvent<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

fn frame<T: Serialize>(t: &str, body: &T) -> Result<Vec<u8>, dagcbor::DagCborError> {
    let mut out = dagcbor::encode(&FrameHeader { op: 1, t: Some(t) })?;
    out.extend(dagcbor::encode(body)?);
    Ok(out)
}

/// `#sync`: the repo's current commit, as a CAR holding only the commit block (the reference
/// PDS sends it for a new account and whenever a repo's state cannot be given as a diff).
pub fn encode_sync_frame(
    seq: u64,
    did: &str,
    r: &CommitResult,
    time: &str,
) -> Result<Vec<u8>, dagcbor::DagCborError> {
    let block = r
        .new_blocks
        .get(&r.commit_cid)
        .ok_or_else(|| dagcbor::DagCborError::Encode("the commit block is missing".into()))?;
    let mut blocks = crate::atproto::repo::BlockMap::new();
    blocks.insert(r.commit_cid, block.clone());
    let car = crate::atproto::repo::write_car(r.commit_cid, &blocks)
        .map_err(|e| dagcbor::DagCborError::Encode(e.to_string()))?;
    frame(
        "#sync",
        &SyncEvent {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            did,
            blocks: &car,
            rev: &r.rev,
            time,
        },
    )
}

/// `#identity`: the DID's identity (handle, keys, endpoint) may have changed.
pub fn encode_identity_frame(
    seq: u64,
    did: &str,
    handle: Option<&str>,
    time: &str,
) -> Result<Vec<u8>, dagcbor::DagCborError> {
    frame(
        "#identity",
        &IdentityEvent {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            did,
            time,
            handle,
        },
    )
}

/// `#account`: the DID's hosting status here.
pub fn encode_account_frame(
    seq: u64,
    did: &str,
    active: bool,
    status: Option<&str>,
    time: &str,
) -> Result<Vec<u8>, dagcbor::DagCborError> {
    frame(
        "#account",
        &AccountEvent {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            did,
            time,
            active,
            status,
        },
    )
}

/// An error frame: header `{op: -1}` then `{error, message}`.
pub fn encode_error_frame(error: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrBody<'a> {
        error: &'a str,
        message: &'a str,
    }
    let mut out = dagcbor::encode(&FrameHeader { op: -1, t: None }).unwrap_or_default();
    out.extend(dagcbor::encode(&ErrBody { error, message }).unwrap_or_default());
    out
}

/// RFC 3339 (`2026-01-02T03:04:05.123Z`, offsets allowed) to seconds since the epoch; 0 when
/// it does not parse (then no age is shown).
pub fn unix_of(ts: &str) -> u64 {
    fn num(s: &str) -> Option<i64> {
        s.parse().ok()
    }
    let parse = || -> Option<u64> {
        let (date, rest) = ts.split_once('T')?;
        let mut d = date.split('-');
        let (y, m, dd) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
        let time = rest.get(..8)?;
        let mut t = time.split(':');
        let (hh, mm, ss) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
        let tail = &rest[8..];
        let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
        let offset = match tail {
            "Z" | "z" | "" => 0,
            o => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let (oh, om) = o.get(1..)?.split_once(':')?;
                sign * (num(oh)? * 3600 + num(om)? * 60)
            }
        };
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss - offset).ok()
    };
    parse().unwrap_or(0)
}

/// The current time as an RFC 3339 UTC timestamp with milliseconds.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(d.as_secs(), d.subsec_millis())
}

pub fn format_rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Reads a file for import, refusing more than [`MAX_IMPORT_BYTES`].
pub fn read_import_file(path: &Path) -> Result<Vec<u8>, HoldError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| HoldError::Io(path.to_path_buf(), e))?;
    let mut buf = Vec::new();
    f.take(MAX_IMPORT_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| HoldError::Io(path.to_path_buf(), e))?;
    if buf.len() as u64 > MAX_IMPORT_BYTES {
        return Err(CarError::TooLarge(MAX_IMPORT_BYTES).into());
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_rfc3339(1_763_856_000, 999),
            "2025-11-23T00:00:00.999Z"
        );
    }

    #[test]
    fn identity_derivation() {
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:5000".into();
        let i = Identity::from_config(&c);
        assert_eq!(i.did, "did:web:localhost%3A5000");
        assert_eq!(i.handle, "localhost");
        assert_eq!(i.public_url, None);
        c.server.public_url = "https://Registry.Example.com".into();
        let i = Identity::from_config(&c);
        assert_eq!(i.did, "did:web:registry.example.com");
        assert_eq!(
            i.public_url.as_deref(),
            Some("https://Registry.Example.com")
        );
        c.hold.public_host = "hold.example.com:8443".into();
        let i = Identity::from_config(&c);
        assert_eq!(i.did, "did:web:hold.example.com%3A8443");
        assert_eq!(i.handle, "hold.example.com");
        c.server.listen = "127.0.0.1:0".into();
        c.server.public_url.clear();
        c.hold.public_host.clear();
        assert_eq!(Identity::from_config(&c).did, "did:web:localhost");
    }

    /// (header type, body) of every event in the log after `after`.
    fn frames(store: &HoldStore, after: u64) -> Vec<(u64, String, Ipld)> {
        store
            .events_after(after, 1000)
            .unwrap()
            .into_iter()
            .map(|(seq, f)| {
                let n = dagcbor::scan_item(&f, 64).unwrap();
                let header = dagcbor::decode_ipld(&f[..n]).unwrap();
                let body = dagcbor::decode_ipld(&f[n..]).unwrap();
                let Ipld::Map(h) = header else {
                    panic!("header")
                };
                let Some(Ipld::String(t)) = h.get("t") else {
                    panic!("t")
                };
                (seq, t.clone(), body)
            })
            .collect()
    }

    fn get<'a>(v: &'a Ipld, k: &str) -> &'a Ipld {
        match v {
            Ipld::Map(m) => m.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}")),
            _ => panic!("not a map"),
        }
    }

    fn ident(host: &str) -> Identity {
        Identity {
            host: host.into(),
            did: format!("did:web:{}", host.replace(':', "%3A")),
            handle: host.split(':').next().unwrap().into(),
            public_url: None,
        }
    }

    /// A new hold account is announced like the reference PDS announces one (#identity,
    /// #account, #commit, #sync); a new public host (new did:web) announces the new account
    /// and retires the old DID; a commit over the #commit limits goes out as #sync; an old
    /// repo that never announced its identity does so once at start.
    #[test]
    fn firehose_identity_account_and_sync_events() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate_p256();
        let store = HoldStore::open(&dir.path().join("h.redb")).unwrap();
        let pds =
            HoldPds::open_with(ident("hold.example.com"), key.clone(), store.clone()).unwrap();
        let evs = frames(&store, 0);
        let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(kinds, ["#identity", "#account", "#commit", "#sync"]);
        assert_eq!(evs.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let did = Ipld::String("did:web:hold.example.com".into());
        assert_eq!(get(&evs[0].2, "did"), &did);
        assert_eq!(
            get(&evs[0].2, "handle"),
            &Ipld::String("hold.example.com".into())
        );
        assert_eq!(get(&evs[1].2, "active"), &Ipld::Bool(true));
        // The #sync carries the first commit's block alone, signed by the repo key.
        let Ipld::Bytes(car) = get(&evs[3].2, "blocks") else {
            panic!("blocks")
        };
        let (root, blocks) = read_car_with_root(car, CarLimits::default()).unwrap();
        assert_eq!(get(&evs[2].2, "commit"), &Ipld::Link(root));
        assert_eq!(blocks.len(), 1);
        let commit = crate::atproto::repo::Commit::decode(&blocks[&root]).unwrap();
        commit.verify(&key.public_key()).unwrap();
        assert_eq!(get(&evs[3].2, "rev"), &Ipld::String(commit.rev.clone()));

        // 201 records in one commit: over the #commit limit, announced as #sync.
        let writes = (0..201)
            .map(|i| Write::Create {
                collection: "io.atcr.hold.layer".into(),
                rkey: Tid::from_parts(1_700_000_000_000_000 + i, 0).to_string(),
                record: record_cbor(&serde_json::json!({"$type": "io.atcr.hold.layer", "n": i}))
                    .unwrap(),
            })
            .collect();
        let big = pds.write_blocking(|_| Ok(writes)).unwrap().unwrap();
        let evs = frames(&store, 4);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].1, "#sync");
        assert_eq!(get(&evs[0].2, "rev"), &Ipld::String(big.rev.clone()));
        drop(pds);

        // Reopened unchanged: nothing new is announced.
        let pds =
            HoldPds::open_with(ident("hold.example.com"), key.clone(), store.clone()).unwrap();
        assert!(frames(&store, 5).is_empty());
        drop(pds);
        // A new public host: the old DID is gone, the new account is announced with a #sync.
        let pds =
            HoldPds::open_with(ident("hold2.example.com"), key.clone(), store.clone()).unwrap();
        let evs = frames(&store, 5);
        let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(kinds, ["#account", "#identity", "#account", "#sync"]);
        assert_eq!(get(&evs[0].2, "did"), &did);
        assert_eq!(get(&evs[0].2, "active"), &Ipld::Bool(false));
        assert_eq!(get(&evs[0].2, "status"), &Ipld::String("deleted".into()));
        let new = Ipld::String("did:web:hold2.example.com".into());
        assert!(evs[1..].iter().all(|e| get(&e.2, "did") == &new));
        assert_eq!(pds.did(), "did:web:hold2.example.com");
        drop(pds);

        // A repo from before these events: its identity is announced once at start.
        store.append_events(&[], Some((ANNOUNCED, b"old"))).unwrap();
        let pds =
            HoldPds::open_with(ident("hold2.example.com"), key.clone(), store.clone()).unwrap();
        let last = store.last_seq().unwrap();
        let evs = frames(&store, last - 2);
        let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(kinds, ["#identity", "#account"]);
        drop(pds);
        let _pds =
            HoldPds::open_with(ident("hold2.example.com"), key.clone(), store.clone()).unwrap();
        assert_eq!(store.last_seq().unwrap(), last);

        // A handle that is no valid handle (`localhost`) is left out of #identity.
        let dir = tempfile::tempdir().unwrap();
        let store = HoldStore::open(&dir.path().join("h.redb")).unwrap();
        let _pds = HoldPds::open_with(ident("localhost:5000"), key, store.clone()).unwrap();
        let evs = frames(&store, 0);
        assert_eq!(evs[0].1, "#identity");
        let Ipld::Map(m) = &evs[0].2 else { panic!() };
        assert!(!m.contains_key("handle"), "{m:?}");
    }

    /// The captain publishes `region` (the S3 region unless `hold.region` says otherwise)
    /// and `successor` from the config, under the same latest-change-wins rule; the owner's
    /// crew record names the default tier.
    #[tokio::test]
    async fn captain_region_successor_and_owner_tier() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.hold.owner_did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into();
        config.hold.successor = "did:web:next.example.com".into();
        config.storage.backend = "s3".into();
        config.storage.s3.region = "eu-central-1".into();
        let reopen = |config: Config| async move {
            tokio::task::spawn_blocking(move || HoldPds::open(&config).unwrap())
                .await
                .unwrap()
        };
        let captain = |pds: Arc<HoldPds>| async move {
            pds.get_record(records::CAPTAIN, records::SELF)
                .await
                .unwrap()
                .unwrap()
                .value
        };
        let pds = reopen(config.clone()).await;
        let c = captain(pds.clone()).await;
        assert_eq!(c["region"], "eu-central-1");
        assert_eq!(c["successor"], "did:web:next.example.com");
        let crew = pds
            .get_record(records::CREW, &records::crew_rkey(&config.hold.owner_did))
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(crew["tier"], "deckhand");
        // The panel names another successor: a restart keeps it.
        let mut rec = c.clone();
        rec["successor"] = "did:web:other.example.com".into();
        pds.apply_writes(vec![Write::Update {
            collection: records::CAPTAIN.into(),
            rkey: records::SELF.into(),
            record: record_cbor(&rec).unwrap(),
        }])
        .await
        .unwrap();
        drop(pds);
        let pds = reopen(config.clone()).await;
        assert_eq!(
            captain(pds.clone()).await["successor"],
            "did:web:other.example.com"
        );
        drop(pds);
        // The config drops its successor and sets a region: both follow the file.
        config.hold.successor.clear();
        config.hold.region = "fsn1".into();
        let pds = reopen(config.clone()).await;
        let c = captain(pds.clone()).await;
        assert!(c.get("successor").is_none(), "{c}");
        assert_eq!(c["region"], "fsn1");
    }

    /// A toggle made in the admin panel (a captain-record write) survives a restart with an
    /// unchanged config file; a value changed in the config file wins at the next start.
    #[tokio::test]
    async fn captain_settings_latest_change_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.hold.owner_did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into();
        config.hold.public = false;
        let captain = |pds: Arc<HoldPds>| async move { pds.captain().await.unwrap().unwrap() };
        let reopen = |config: Config| async move {
            tokio::task::spawn_blocking(move || HoldPds::open(&config).unwrap())
                .await
                .unwrap()
        };

        let pds = reopen(config.clone()).await;
        assert!(!captain(pds.clone()).await.public);
        // The panel flips `public` on.
        let mut rec = pds
            .get_record(records::CAPTAIN, records::SELF)
            .await
            .unwrap()
            .unwrap()
            .value;
        rec["public"] = true.into();
        pds.apply_writes(vec![Write::Update {
            collection: records::CAPTAIN.into(),
            rkey: records::SELF.into(),
            record: record_cbor(&rec).unwrap(),
        }])
        .await
        .unwrap();
        drop(pds);

        // Restart, config untouched: the panel's choice stays.
        let pds = reopen(config.clone()).await;
        let c = captain(pds.clone()).await;
        assert!(c.public, "a restart undid the admin panel's toggle");
        assert!(!c.allow_all_crew);
        drop(pds);

        // The operator edits the file: that newer change wins, for that key only.
        config.hold.allow_all_crew = true;
        let pds = reopen(config.clone()).await;
        let c = captain(pds.clone()).await;
        assert!(c.allow_all_crew && c.public);
        drop(pds);
        let pds = reopen(config.clone()).await;
        assert!(
            captain(pds).await.public,
            "an unchanged config value overrode the record"
        );
    }
}
