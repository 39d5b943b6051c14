//! Registry domain logic, free of HTTP: upload sessions (hash while writing, resumable after a
//! restart), per-repository blob links, manifest verification and storage, tags, referrers.
//!
//! Handlers in [`crate::oci::handlers`] call these methods; storage goes through
//! [`crate::blob::BlobStore`] for bytes and [`store::MetaStore`] for metadata.

pub mod federation;
pub mod misses;
pub mod pds;
pub mod pulls;
pub mod push_hook;
pub mod records;
pub mod remote;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::blob::{BlobError, BlobRead, BlobStore, ChunkStream};
use crate::oci::types::manifest::{self, Descriptor, ManifestKind, ParsedManifest};
use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest, Hasher, Name, Reference};
use store::{now_unix, MetaStore, StoreError, StoredManifest, UploadRecord};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    #[error("upload session is unknown or has expired")]
    UploadUnknown,
    #[error("chunk starts at {given}, but the upload has {expected} bytes")]
    UploadOutOfOrder { expected: u64, given: u64 },
    #[error("upload invalid: {0}")]
    UploadInvalid(String),
    #[error("content digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("length {actual} does not match the declared {declared}")]
    SizeMismatch { declared: u64, actual: u64 },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: usize },
    #[error("repository is not known to this registry")]
    NameUnknown,
    #[error("{0}")]
    Unsupported(String),
    #[error("blob storage: {0}")]
    Storage(BlobError),
    #[error("{0}")]
    Database(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The owner's PDS could not store or serve the records; nothing was stored locally.
    #[error("{0}")]
    Records(#[from] records::RecordsError),
    /// Refused by the hold before anything was stored (quota, crew rules).
    #[error("{0}")]
    Denied(String),
    /// The disk is full or under the free-space watermark; the upload was removed.
    #[error("{0}")]
    StorageFull(String),
    /// The client holds as many upload sessions as it may.
    #[error("{0}")]
    TooManyUploads(String),
    /// The request body came slower than the minimum rate; the upload was removed.
    #[error("{0}; the upload was removed")]
    BodyTimeout(String),
    /// A remote hold refused the call, failed, or could not be reached.
    #[error("{0}")]
    Hold(#[from] crate::hold_client::HoldCallError),
    /// No service token for a hold call (the user's PDS session on this host).
    #[error("{0}")]
    ServiceToken(#[from] crate::auth::service_token::ServiceTokenError),
    /// Reading needs a login (a blob on a private hold).
    #[error("{0}")]
    AuthRequired(String),
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(d) => RegistryError::BlobUnknown(d),
            BlobError::UploadNotFound(_) => RegistryError::UploadUnknown,
            BlobError::OffsetMismatch { expected, given } => {
                RegistryError::UploadOutOfOrder { expected, given }
            }
            // The connection's body guard (`app/conn.rs`) ends slow bodies with TimedOut.
            BlobError::Client(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                RegistryError::BodyTimeout(e.to_string())
            }
            BlobError::Client(e) => {
                RegistryError::UploadInvalid(format!("request body failed: {e}"))
            }
            BlobError::Unsupported(m) => RegistryError::Unsupported(m),
            BlobError::StorageFull(m) => RegistryError::StorageFull(m),
            other => {
                crate::metrics::blob_store_error("registry");
                RegistryError::Storage(other)
            }
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_manifest_bytes: usize,
    /// Sessions older than this go, however active.
    pub upload_ttl: Duration,
    /// Sessions no request touched for this long go.
    pub upload_idle: Duration,
    pub max_uploads_per_identity: usize,
    pub max_uploads_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&crate::config::Config::default())
    }
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Limits {
            max_manifest_bytes: c.registry.max_manifest_bytes,
            upload_ttl: Duration::from_secs(c.registry.upload_ttl_secs),
            upload_idle: Duration::from_secs(c.registry.upload_idle_minutes * 60),
            max_uploads_per_identity: c.registry.max_uploads_per_identity,
            max_uploads_per_address: c.registry.max_uploads_per_address,
        }
    }
}

/// Who opens an upload session: the caps count sessions per identity and per address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uploader {
    /// The pushing DID (or, without authentication, the repository's first segment).
    pub identity: String,
    /// The client address (an IPv6 /64); `None` for addresses exempt from per-address caps.
    pub address: Option<String>,
}

impl Uploader {
    /// The caps of `limits` for this uploader, given the sessions open now.
    fn check_caps<'a>(
        &self,
        limits: &Limits,
        open: impl Iterator<Item = &'a Uploader>,
    ) -> Result<()> {
        let (mut mine, mut here) = (0, 0);
        for u in open {
            mine += usize::from(u.identity == self.identity);
            here += usize::from(self.address.is_some() && u.address == self.address);
        }
        if mine >= limits.max_uploads_per_identity {
            return Err(RegistryError::TooManyUploads(format!(
                "{} already has {mine} uploads open (registry.max_uploads_per_identity); \
                 finish or cancel some (abandoned ones expire after {} minutes)",
                self.identity,
                limits.upload_idle.as_secs() / 60
            )));
        }
        if here >= limits.max_uploads_per_address {
            return Err(RegistryError::TooManyUploads(format!(
                "your address already has {here} uploads open (registry.max_uploads_per_address); \
                 finish or cancel some (abandoned ones expire after {} minutes)",
                limits.upload_idle.as_secs() / 60
            )));
        }
        Ok(())
    }
}

/// An open session's owner and last activity (every open session is here, also those not
/// touched since a restart): the caps and the idle expiry read this.
#[derive(Debug, Clone)]
struct OpenUpload {
    who: Uploader,
    created_unix: u64,
    last_active_unix: u64,
}

/// In-memory state of an upload session. `hasher` is None when it must be rebuilt from the
/// staged bytes (after a restart, or after a client dropped mid-chunk).
struct Session {
    repo: String,
    len: u64,
    hasher: Option<Hasher>,
}

impl Session {
    fn check_start(&self, start: Option<u64>) -> Result<()> {
        check_chunk_start(self.len, start)
    }
}

/// A chunk must start exactly where the upload stands (`len`, the Content-Range start), else
/// 416; shared by local sessions and sessions streamed to a remote hold.
fn check_chunk_start(len: u64, start: Option<u64>) -> Result<()> {
    match start {
        Some(given) if given != len => Err(RegistryError::UploadOutOfOrder {
            expected: len,
            given,
        }),
        _ => Ok(()),
    }
}

type SessionCell = Arc<tokio::sync::Mutex<Session>>;

/// The in-memory book of upload sessions, shared with the cleanup a dropped request leaves
/// behind ([`AbortOnDrop`]).
#[derive(Default)]
struct UploadBook {
    /// Sessions touched since start; a PATCH holds its session's lock, so chunks of one
    /// upload are applied strictly in order while different uploads run in parallel.
    cells: std::sync::Mutex<HashMap<String, SessionCell>>,
    /// Every open session (see [`OpenUpload`]).
    open: std::sync::Mutex<HashMap<String, OpenUpload>>,
}

impl UploadBook {
    fn cell(&self, id: &str) -> Option<SessionCell> {
        self.cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn touch(&self, id: &str) {
        if let Some(o) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            o.last_active_unix = now_unix();
        }
    }

    fn forget(&self, id: &str) {
        self.cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// Remove a session everywhere: staged bytes, its record, the book.
async fn drop_session(blobs: &dyn BlobStore, store: &Arc<MetaStore>, book: &UploadBook, id: &str) {
    if let Err(e) = blobs.upload_abort(id).await {
        tracing::warn!(upload = id, error = %e, "could not remove staged upload");
    }
    let id2 = id.to_string();
    if let Err(e) = store.run(move |s| s.delete_upload(&id2)).await {
        tracing::warn!(upload = id, error = %e, "could not forget upload session");
    }
    book.forget(id);
}

/// Armed while a request writes into a session: if the request is dropped half-way (the
/// server cut the connection), the session and its staged bytes are removed in the
/// background instead of waiting for the idle expiry.
struct AbortOnDrop {
    armed: Option<Armed>,
}

/// What the background cleanup of [`AbortOnDrop`] needs (owned: it outlives the request).
type Armed = (Arc<dyn BlobStore>, Arc<MetaStore>, Arc<UploadBook>, String);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some((blobs, store, book, id)) = self.armed.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tracing::debug!(upload = %id, "request dropped mid-upload; removing it");
                    drop_session(&*blobs, &store, &book, &id).await;
                });
            }
        }
    }
}

pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    store: Arc<MetaStore>,
    limits: Limits,
    uploads: Arc<UploadBook>,
    /// Where manifests and tags are written besides the local copy (the owner's PDS);
    /// `None` in local mode (`auth.mode = "none"`).
    records: std::sync::RwLock<Option<Arc<dyn records::ManifestRecords>>>,
    /// Readers: paths that make a stored blob reachable (commit or stat, then link). The
    /// writer: garbage collection re-checking and deleting one blob, so it never deletes a
    /// blob between its commit and its link.
    gc_guard: tokio::sync::RwLock<()>,
    push_hook: std::sync::RwLock<Option<Arc<dyn push_hook::PushHook>>>,
    /// The UI/search index, told about pushes and deletes once they succeeded.
    index: std::sync::OnceLock<crate::index::Index>,
    /// Recent "not in the PDS either" answers, so polling clients do not hammer PDSes.
    misses: misses::Misses,
    /// Which manifest reads are pulls (one per `GET` by tag).
    pulls: pulls::PullCounter,
    /// Hold selection and remote holds (`auth.mode = "atproto"`); unset: everything local.
    federation: std::sync::OnceLock<Arc<federation::Federation>>,
    /// Upload sessions streaming to remote holds.
    remote: remote::RemoteSessions,
}

/// Where an upload stands, for the `Range` and `Location` headers.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub id: String,
    pub len: u64,
}

/// The result of a manifest PUT.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    pub fn new(blobs: Arc<dyn BlobStore>, store: Arc<MetaStore>, limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            blobs,
            store,
            limits,
            uploads: Arc::new(UploadBook::default()),
            records: std::sync::RwLock::new(None),
            gc_guard: tokio::sync::RwLock::new(()),
            push_hook: std::sync::RwLock::new(None),
            index: std::sync::OnceLock::new(),
            misses: misses::Misses::new(misses::MISS_TTL),
            pulls: pulls::PullCounter::default(),
            federation: std::sync::OnceLock::new(),
            remote: remote::RemoteSessions::default(),
        })
    }

    /// Install hold selection and the remote-hold client; done once at start.
    pub fn set_federation(&self, f: Arc<federation::Federation>) {
        let _ = self.federation.set(f);
    }

    /// Install the index (direct writes after pushes and deletes); done once at start.
    pub fn set_index(&self, index: crate::index::Index) {
        let _ = self.index.set(index);
    }

    /// Install the record store (the PDS writer); done once at start.
    pub fn set_records(&self, r: Arc<dyn records::ManifestRecords>) {
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    pub fn set_push_hook(&self, h: Arc<dyn push_hook::PushHook>) {
        *self.push_hook.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    fn push_hook(&self) -> Option<Arc<dyn push_hook::PushHook>> {
        self.push_hook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The in-process hold's crew rules for a push into `name` (without a hold: none).
    async fn check_local_writer(&self, name: &Name) -> Result<()> {
        if let Some(h) = self.push_hook() {
            h.before_upload(name).await.map_err(RegistryError::Denied)?;
        }
        Ok(())
    }

    fn records(&self) -> Option<Arc<dyn records::ManifestRecords>> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    // ---- blobs --------------------------------------------------------------------------------

    /// Size of a blob linked into the repository (HEAD answers from metadata alone).
    pub async fn blob_size(&self, name: &Name, digest: &Digest) -> Result<u64> {
        let (repo, d) = (name.to_string(), digest.clone());
        self.store
            .run(move |s| s.blob_link(&repo, &d))
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// A direct URL for the blob when the backend offers one (S3 presigned GET).
    pub async fn blob_redirect(&self, name: &Name, digest: &Digest) -> Result<Option<String>> {
        self.blob_size(name, digest).await?;
        Ok(self.blobs.redirect_url(digest).await?)
    }

    pub async fn blob_read(
        &self,
        name: &Name,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        self.blob_size(name, digest).await?;
        Ok(self.blobs.read(digest, range).await?)
    }

    /// Remove the repository's link; the bytes go when garbage collection finds no link left.
    pub async fn blob_delete(&self, name: &Name, digest: &Digest) -> Result<()> {
        let (repo, d) = (name.to_string(), digest.clone());
        let unlinked = self
            .store
            .run(move |s| Ok(s.unlink_blob(&repo, &d)? | s.unlink_remote_blob(&repo, &d)?))
            .await?;
        if unlinked {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Cross-repository mount. With `from`, the blob must be linked there; without, any blob
    /// this registry holds is mounted (content-addressed, so the digest is the proof).
    pub async fn blob_mount(
        &self,
        name: &Name,
        digest: &Digest,
        from: Option<&Name>,
    ) -> Result<bool> {
        let (target, pusher) = self.push_target(name).await?;
        if let (federation::HoldTarget::Remote(hold), Some(pusher)) = (&target, &pusher) {
            return self.remote_mount(name, digest, from, pusher, hold).await;
        }
        self.check_local_writer(name).await?;
        let size = match from {
            Some(from) => {
                let (repo, d) = (from.to_string(), digest.clone());
                self.store.run(move |s| s.blob_link(&repo, &d)).await?
            }
            None => None,
        };
        let size = match size {
            Some(s) => Some(s),
            None if from.is_none() => self.blobs.stat(digest).await?,
            None => None,
        };
        let Some(size) = size else { return Ok(false) };
        let _reachable = self.gc_guard.read().await;
        // The bytes must really be there: a link can outlive a blob only through corruption.
        if self.blobs.stat(digest).await?.is_none() {
            return Ok(false);
        }
        let (repo, d) = (name.to_string(), digest.clone());
        self.store
            .run(move |s| s.link_blob(&repo, &d, size))
            .await?;
        Ok(true)
    }

    // ---- uploads ------------------------------------------------------------------------------

    /// Open an upload session hashing with `algorithm` (the client's `?digest=` algorithm when
    /// it gave one up front, else sha256), within the uploader's caps.
    pub async fn upload_start(
        &self,
        name: &Name,
        algorithm: Algorithm,
        who: &Uploader,
    ) -> Result<UploadState> {
        let (target, pusher) = self.push_target(name).await?;
        if let (federation::HoldTarget::Remote(hold), Some(pusher)) = (&target, &pusher) {
            return self
                .remote_upload_start(name, pusher, hold, algorithm)
                .await;
        }
        self.check_local_writer(name).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_unix();
        {
            let mut open = self.uploads.open.lock().unwrap_or_else(|p| p.into_inner());
            who.check_caps(&self.limits, open.values().map(|o| &o.who))?;
            open.insert(
                id.clone(),
                OpenUpload {
                    who: who.clone(),
                    created_unix: now,
                    last_active_unix: now,
                },
            );
        }
        // The session record goes first: cleanup treats staged data without a record as an
        // orphan, and it lists staged data before records, so a new upload is never one.
        let rec = UploadRecord {
            repo: name.to_string(),
            created_unix: now,
            identity: who.identity.clone(),
            address: who.address.clone(),
        };
        let id2 = id.clone();
        if let Err(e) = self.store.run(move |s| s.put_upload(&id2, &rec)).await {
            self.uploads.forget(&id);
            return Err(e.into());
        }
        if let Err(e) = self.blobs.upload_create(&id).await {
            drop_session(&*self.blobs, &self.store, &self.uploads, &id).await;
            return Err(e.into());
        }
        let cell = Arc::new(tokio::sync::Mutex::new(Session {
            repo: name.to_string(),
            len: 0,
            hasher: Some(algorithm.hasher()),
        }));
        self.uploads
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cell);
        Ok(UploadState { id, len: 0 })
    }

    /// `POST ?digest=` with the body: a session that lives for this request only. Any
    /// failure removes it (the client never learns its id, so nothing else could).
    pub async fn upload_monolithic(
        &self,
        name: &Name,
        digest: &Digest,
        declared_len: Option<u64>,
        body: ChunkStream,
        who: &Uploader,
    ) -> Result<u64> {
        let s = self.upload_start(name, digest.algorithm(), who).await?;
        let guard = self.abort_on_drop(&s.id);
        let result = self
            .upload_finish(name, &s.id, digest, None, declared_len, Some(body))
            .await;
        guard.disarm();
        if result.is_err() {
            self.drop_session(&s.id).await;
        }
        result
    }

    fn abort_on_drop(&self, id: &str) -> AbortOnDrop {
        AbortOnDrop {
            armed: Some((
                self.blobs.clone(),
                self.store.clone(),
                self.uploads.clone(),
                id.to_string(),
            )),
        }
    }

    /// Find a session, reloading it from the store after a restart.
    async fn session(&self, name: &Name, id: &str) -> Result<SessionCell> {
        let cell = match self.uploads.cell(id) {
            Some(c) => c,
            None => {
                let id2 = id.to_string();
                let rec = self
                    .store
                    .run(move |s| s.get_upload(&id2))
                    .await?
                    .ok_or(RegistryError::UploadUnknown)?;
                let len = self
                    .blobs
                    .upload_len(id)
                    .await?
                    .ok_or(RegistryError::UploadUnknown)?;
                let cell = Arc::new(tokio::sync::Mutex::new(Session {
                    repo: rec.repo.clone(),
                    len,
                    hasher: None,
                }));
                self.note_open(id, &rec);
                self.uploads
                    .cells
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id.to_string())
                    .or_insert(cell)
                    .clone()
            }
        };
        if cell.lock().await.repo != name.as_str() {
            return Err(RegistryError::UploadUnknown);
        }
        self.uploads.touch(id);
        Ok(cell)
    }

    /// A session of an earlier run joins the book (its idle time starts now).
    fn note_open(&self, id: &str, rec: &UploadRecord) {
        self.uploads
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| OpenUpload {
                who: Uploader {
                    identity: rec.identity.clone(),
                    address: rec.address.clone(),
                },
                created_unix: rec.created_unix,
                last_active_unix: now_unix(),
            });
    }

    pub async fn upload_status(&self, name: &Name, id: &str) -> Result<UploadState> {
        if remote::is_remote_upload(id) {
            return self.remote_upload_status(name, id).await;
        }
        let cell = self.session(name, id).await?;
        let len = cell.lock().await.len;
        Ok(UploadState {
            id: id.to_string(),
            len,
        })
    }

    /// Append a chunk. `start` is the Content-Range start when the client sent one.
    pub async fn upload_append(
        &self,
        name: &Name,
        id: &str,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: ChunkStream,
    ) -> Result<UploadState> {
        if remote::is_remote_upload(id) {
            return self
                .remote_upload_append(name, id, start, declared_len, body)
                .await;
        }
        let cell = self.session(name, id).await?;
        let mut session = cell.lock().await;
        session.check_start(start)?;
        self.append_locked(id, &mut session, declared_len, body)
            .await?;
        self.uploads.touch(id);
        Ok(UploadState {
            id: id.to_string(),
            len: session.len,
        })
    }

    /// Append under the session's lock. A failed append (the body broke off or came too
    /// slowly, the disk is full, the length is wrong) removes the whole upload at once: its
    /// staged bytes are freed and the client starts over.
    async fn append_locked(
        &self,
        id: &str,
        session: &mut Session,
        declared_len: Option<u64>,
        body: ChunkStream,
    ) -> Result<()> {
        let guard = self.abort_on_drop(id);
        let result = self.append_inner(id, session, declared_len, body).await;
        guard.disarm();
        match result {
            Err(RegistryError::UploadOutOfOrder { .. } | RegistryError::UploadUnknown) => result,
            Err(e) => {
                self.drop_session(id).await;
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    async fn append_inner(
        &self,
        id: &str,
        session: &mut Session,
        declared_len: Option<u64>,
        body: ChunkStream,
    ) -> Result<()> {
        let hasher = match session.hasher.take() {
            Some(h) => h,
            None => {
                let re = self.blobs.upload_rehash(id, Algorithm::Sha256).await?;
                session.len = re.len;
                re.hasher
            }
        };
        let before = session.len;
        match self.blobs.upload_append(id, before, hasher, body).await {
            Ok(appended) => {
                session.len = appended.len;
                session.hasher = Some(appended.hasher);
                if let Some(declared) = declared_len {
                    let actual = appended.len - before;
                    if actual != declared {
                        return Err(RegistryError::SizeMismatch { declared, actual });
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Part of the chunk may be on disk: the next request re-derives the state.
                session.hasher = None;
                if let Ok(Some(len)) = self.blobs.upload_len(id).await {
                    session.len = len;
                }
                Err(e.into())
            }
        }
    }

    /// Finish an upload: append the optional last chunk, verify the digest, commit, link.
    pub async fn upload_finish(
        &self,
        name: &Name,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: Option<ChunkStream>,
    ) -> Result<u64> {
        if remote::is_remote_upload(id) {
            return self
                .remote_upload_finish(name, id, digest, start, declared_len, body)
                .await;
        }
        let cell = self.session(name, id).await?;
        let mut session = cell.lock().await;
        session.check_start(start)?;
        if let Some(body) = body {
            self.append_locked(id, &mut session, declared_len, body)
                .await?;
        }
        let actual = match session.hasher.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            // Restart recovery, or a sha512 digest for a sha256-streamed upload: one re-read.
            _ => self
                .blobs
                .upload_rehash(id, digest.algorithm())
                .await?
                .hasher
                .finish(),
        };
        if &actual != digest {
            self.drop_session(id).await;
            return Err(RegistryError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let _reachable = self.gc_guard.read().await;
        let size = match self.blobs.upload_commit(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                drop(_reachable);
                self.drop_session(id).await;
                return Err(e.into());
            }
        };
        let (id2, repo, d) = (id.to_string(), name.to_string(), digest.clone());
        self.store
            .run(move |s| s.finish_upload(&id2, &repo, &d, size))
            .await?;
        drop(session);
        self.uploads.forget(id);
        Ok(size)
    }

    pub async fn upload_cancel(&self, name: &Name, id: &str) -> Result<()> {
        if remote::is_remote_upload(id) {
            return self.remote_upload_cancel(name, id).await;
        }
        let cell = self.session(name, id).await?;
        let _guard = cell.lock().await;
        self.drop_session(id).await;
        Ok(())
    }

    async fn drop_session(&self, id: &str) {
        drop_session(&*self.blobs, &self.store, &self.uploads, id).await;
    }

    /// How many upload sessions are open (all of them, also those of an earlier run once
    /// [`Registry::cleanup_uploads`] has seen them).
    pub fn open_uploads(&self) -> usize {
        self.uploads
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Abort sessions idle longer than `upload_idle` (or older than `upload_ttl`) and staged
    /// data no session owns; sessions a request is using right now are left alone. Returns
    /// how many were removed.
    pub async fn cleanup_uploads(&self) -> Result<usize> {
        self.cleanup_uploads_at(now_unix()).await
    }

    /// [`Registry::cleanup_uploads`] as if the clock said `now` (unix seconds).
    pub async fn cleanup_uploads_at(&self, now: u64) -> Result<usize> {
        // Staged data is listed before the records: every upload_start writes its record
        // before its staged data, so anything listed here without a record is an orphan.
        let staged = self.blobs.upload_list().await?;
        let records = self.store.run(|s| s.list_uploads()).await?;
        for (id, rec) in &records {
            self.note_open(id, rec);
        }
        let idle_cutoff = now.saturating_sub(self.limits.upload_idle.as_secs());
        let age_cutoff = now.saturating_sub(self.limits.upload_ttl.as_secs());
        let expired: Vec<String> = self
            .uploads
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, o)| o.last_active_unix < idle_cutoff || o.created_unix < age_cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        let known: std::collections::HashSet<String> =
            records.iter().map(|(id, _)| id.clone()).collect();
        let mut removed = 0;
        for id in expired {
            let cell = self.uploads.cell(&id);
            // A request holding the session is activity: leave it for the next sweep.
            let _busy = match &cell {
                Some(c) => match c.clone().try_lock_owned() {
                    Ok(g) => Some(g),
                    Err(_) => continue,
                },
                None => None,
            };
            self.drop_session(&id).await;
            removed += 1;
        }
        for id in staged {
            // The hold's own uploads (io.atcr.hold.initiateUpload) are the hold's to expire.
            if !known.contains(&id) && !id.starts_with(crate::blob::HOLD_UPLOAD_ID_PREFIX) {
                self.blobs.upload_abort(&id).await?;
                removed += 1;
            }
        }
        let live: std::collections::HashSet<String> = self
            .store
            .run(|s| s.list_uploads())
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        removed += self.blobs.cleanup_orphans(&live).await?;
        removed += self.cleanup_remote_uploads().await?;
        Ok(removed)
    }

    // ---- manifests ----------------------------------------------------------------------------

    pub async fn manifest_get(&self, name: &Name, reference: &Reference) -> Result<StoredManifest> {
        // A point read of two small keys, run on this thread: redb serves hot pages from its
        // own cache in microseconds, less than the two thread handoffs of `store.run` cost a
        // pull under load (manifest GET at 32 connections: benches/manifest-get.sh).
        let local = self
            .store
            .get_manifest_by_reference(name.as_str(), reference)?;
        if let Some(m) = local {
            return Ok(m);
        }
        let Some(r) = self.records() else {
            return Err(RegistryError::ManifestUnknown);
        };
        let (n, rf) = (name.to_string(), reference.to_string());
        if self.misses.is_recent_miss(&n, &rf) {
            return Err(RegistryError::ManifestUnknown);
        }
        let fetched = self.fetch_remote(r, name, reference).await;
        if let Err(RegistryError::ManifestUnknown) = fetched {
            self.misses.note(&n, &rf);
        }
        fetched
    }

    /// A manifest read was served to `client`: when it is a pull ([`pulls`]: one per `GET`
    /// by tag), the index's and the hold's counters are bumped (in memory; both write in
    /// batches).
    pub fn note_manifest_read(
        &self,
        client: &str,
        name: &Name,
        reference: &Reference,
        digest: &Digest,
        get: bool,
    ) {
        if !self
            .pulls
            .read(client, name.as_str(), reference, digest, get)
        {
            return;
        }
        if let Some(ix) = self.index.get() {
            ix.note_pull(name.identity(), name.repository());
        }
        if let Some(h) = self.push_hook() {
            h.pulled(name);
        }
    }

    /// A local miss: fetch from the owner's PDS (digest-checked there), cache, serve.
    async fn fetch_remote(
        &self,
        r: Arc<dyn records::ManifestRecords>,
        name: &Name,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let f = r
            .fetch(name, reference, self.limits.max_manifest_bytes)
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        let parsed = manifest::parse_manifest(&f.media_type, &f.bytes)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let (n, d, bytes, p) = (
            name.clone(),
            f.digest.clone(),
            f.bytes.clone(),
            parsed.clone(),
        );
        self.store
            .run(move |s| s.put_manifest(&n, &d, &p, &bytes, tag.as_deref()))
            .await?;
        self.note_manifest_hold(name, &parsed, f.hold_did.as_deref())
            .await?;
        tracing::info!(name = %name, digest = %f.digest, hold = ?f.hold_did, "cached a manifest from the PDS");
        let (repo, d) = (name.to_string(), f.digest);
        self.store
            .run(move |s| s.get_manifest(&repo, &d))
            .await?
            .ok_or(RegistryError::ManifestUnknown)
    }

    pub async fn manifest_put(
        &self,
        name: &Name,
        reference: &Reference,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<PutManifest> {
        if bytes.len() > self.limits.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                limit: self.limits.max_manifest_bytes,
            });
        }
        let parsed = manifest::parse_manifest(content_type, &bytes)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let (digest, tag) = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(RegistryError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                (actual, None)
            }
            Reference::Tag(t) => (Digest::sha256_of(&bytes), Some(t.to_string())),
        };
        // Where the blobs are decides the record's holdDid and who hears of the push.
        let (target, pusher) = self.push_target(name).await?;
        let hold = match self.fed() {
            Some(_) => {
                self.check_children(name, &parsed).await?;
                self.blobs_hold(name, &parsed, &target).await?
            }
            None => {
                self.check_references(name, &parsed).await?;
                federation::HoldTarget::Local
            }
        };
        let hook = match hold {
            federation::HoldTarget::Local => self.push_hook(),
            federation::HoldTarget::Remote(_) => None,
        };
        // Held to the end of this function, after `after_push` (or the error that ends the push).
        let _permit = match &hook {
            Some(h) => h
                .before_push(name, &parsed)
                .await
                .map_err(RegistryError::Denied)?,
            None => None,
        };
        // A remote hold hears of the push after the PDS write, or before it when its quota
        // could refuse the push (a refusal then leaves nothing anywhere).
        let remote = match (&hold, &pusher) {
            (federation::HoldTarget::Remote(h), Some(p)) => {
                let body = remote::notify_body(name, p, &digest, &parsed, tag.as_deref());
                let first = self.remote_notify_first(p, h, &parsed).await?;
                if first {
                    self.remote_notify(p, h, &body).await?;
                }
                Some((p.clone(), h.clone(), body, first))
            }
            _ => None,
        };
        // The PDS is the source of truth: write it first; on failure nothing is stored here
        // (the blobs stay).
        // The hold that keeps the blobs (the manifest record's `holdDid`).
        let hold_did = self
            .fed()
            .map(|f| f.did_of(&hold).to_string())
            .unwrap_or_default();
        let written = match self.records() {
            Some(r) => {
                // sha512 (and over-long media types) cannot be described by a valid record.
                records::check_describable(&digest, &parsed)
                    .map_err(RegistryError::ManifestInvalid)?;
                Some(
                    r.put_manifest(
                        name,
                        &digest,
                        &parsed.media_type,
                        &bytes,
                        tag.as_deref(),
                        &hold_did,
                    )
                        .await
                        .map_err(|e| match e {
                            records::RecordsError::Unavailable(m) => {
                                records::RecordsError::Unavailable(format!(
                                "{m}; the manifest was not stored (uploaded blobs are kept), retry the push"
                            ))
                            }
                            other => other,
                        })?,
                )
            }
            None => None,
        };
        if let Some((p, h, body, false)) = &remote {
            self.remote_notify(p, h, body).await.map_err(|e| match e {
                RegistryError::Hold(crate::hold_client::HoldCallError::Unavailable {
                    hold,
                    method,
                    detail,
                }) => RegistryError::Hold(crate::hold_client::HoldCallError::Unavailable {
                    hold,
                    method,
                    detail: format!(
                        "{detail}; the manifest record is in the PDS but the hold has not recorded its layers: push again"
                    ),
                }),
                other => other,
            })?;
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let (n, d, p, mt) = (
            name.clone(),
            digest.clone(),
            parsed.clone(),
            parsed.media_type.clone(),
        );
        let (bytes, tag) = self
            .store
            .run(move |s| {
                s.put_manifest(&n, &d, &p, &bytes, tag.as_deref())
                    .map(|()| (bytes, tag))
            })
            .await?;
        if let Some(ix) = self.index.get() {
            let hold_did = self.fed().map(|f| f.did_of(&hold).to_string());
            ix.note_manifest_put(
                name,
                &digest,
                &mt,
                &bytes,
                tag.as_deref(),
                written.as_ref().map(|w| w.rkey.as_str()),
                hold_did.as_deref(),
            );
        }
        if let Some(h) = hook {
            let uri = written.as_ref().map(records::Written::uri);
            h.after_push(name, &digest, &parsed, tag.as_deref(), uri.as_deref())
                .await;
        }
        Ok(PutManifest { digest, subject })
    }

    /// Every child of an index must be a manifest of the repository.
    async fn check_children(&self, name: &Name, parsed: &ParsedManifest) -> Result<()> {
        let repo = name.to_string();
        let children: Vec<Digest> = match parsed.kind {
            ManifestKind::Index => parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
            ManifestKind::Image => return Ok(()),
        };
        let missing = self
            .store
            .run(move |s| {
                for d in children {
                    if !s.has_manifest(&repo, &d)? {
                        return Ok(Some(d));
                    }
                }
                Ok(None)
            })
            .await?;
        match missing {
            Some(d) => Err(RegistryError::ManifestBlobUnknown(d)),
            None => Ok(()),
        }
    }

    /// Every blob an image manifest needs, and every child of an index, must be in the repo.
    async fn check_references(&self, name: &Name, parsed: &ParsedManifest) -> Result<()> {
        let repo = name.to_string();
        let blobs: Vec<Digest> = parsed.required_blobs().map(|d| d.digest.clone()).collect();
        let children: Vec<Digest> = match parsed.kind {
            ManifestKind::Index => parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
            ManifestKind::Image => Vec::new(),
        };
        let missing = self
            .store
            .run(move |s| {
                for d in blobs {
                    if s.blob_link(&repo, &d)?.is_none() {
                        return Ok(Some(d));
                    }
                }
                for d in children {
                    if !s.has_manifest(&repo, &d)? {
                        return Ok(Some(d));
                    }
                }
                Ok(None)
            })
            .await?;
        match missing {
            Some(d) => Err(RegistryError::ManifestBlobUnknown(d)),
            None => Ok(()),
        }
    }

    pub async fn manifest_delete(&self, name: &Name, reference: &Reference) -> Result<()> {
        if let Some(r) = self.records() {
            // PDS first (the source of truth); only what exists locally is deleted there.
            let repo = name.to_string();
            match reference {
                Reference::Tag(t) => {
                    let tag = t.to_string();
                    let known = self
                        .store
                        .run(move |s| s.resolve_tag(&repo, &tag))
                        .await?
                        .is_some();
                    if !known {
                        return Err(RegistryError::ManifestUnknown);
                    }
                    r.delete_tag(name, t.as_str()).await?;
                }
                Reference::Digest(d) => {
                    let d2 = d.clone();
                    let (exists, tags) = self
                        .store
                        .run(move |s| {
                            let exists = s.has_manifest(&repo, &d2)?;
                            let tags = s
                                .tags_with_digests(&repo)?
                                .into_iter()
                                .filter(|(_, dg)| *dg == d2.to_string())
                                .map(|(t, _)| t)
                                .collect::<Vec<_>>();
                            Ok((exists, tags))
                        })
                        .await?;
                    if !exists {
                        return Err(RegistryError::ManifestUnknown);
                    }
                    r.delete_manifest(name, d, &tags).await?;
                }
            }
        }
        let repo = name.to_string();
        match reference {
            Reference::Tag(t) => {
                let tag = t.to_string();
                if self.store.run(move |s| s.delete_tag(&repo, &tag)).await? {
                    if let Some(ix) = self.index.get() {
                        ix.note_tag_delete(name, t.as_str());
                    }
                    Ok(())
                } else {
                    Err(RegistryError::ManifestUnknown)
                }
            }
            Reference::Digest(d) => {
                let d2 = d.clone();
                let deleted = self
                    .store
                    .run(move |s| s.delete_manifest(&repo, &d2))
                    .await?;
                if deleted.manifest {
                    if let Some(ix) = self.index.get() {
                        ix.note_manifest_delete(name, d);
                    }
                    Ok(())
                } else {
                    Err(RegistryError::ManifestUnknown)
                }
            }
        }
    }

    // ---- listings -----------------------------------------------------------------------------

    /// Up to `n` tags after `last`, and whether more follow.
    pub async fn tags(
        &self,
        name: &Name,
        n: Option<usize>,
        last: Option<String>,
    ) -> Result<(Vec<String>, bool)> {
        let repo = name.to_string();
        let limit = n.unwrap_or(usize::MAX - 1);
        let (exists, mut tags) = self
            .store
            .run(move |s| {
                Ok((
                    s.repo_exists(&repo)?,
                    s.list_tags(&repo, last.as_deref(), limit.saturating_add(1))?,
                ))
            })
            .await?;
        if !exists {
            return Err(RegistryError::NameUnknown);
        }
        let more = tags.len() > limit;
        tags.truncate(limit);
        Ok((tags, more))
    }

    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<String>,
    ) -> Result<(Vec<String>, bool)> {
        let limit = n.unwrap_or(usize::MAX - 1);
        let mut repos = self
            .store
            .run(move |s| s.list_repos(last.as_deref(), limit.saturating_add(1)))
            .await?;
        let more = repos.len() > limit;
        repos.truncate(limit);
        Ok((repos, more))
    }

    pub async fn referrers(
        &self,
        name: &Name,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let (repo, s) = (name.to_string(), subject.clone());
        let mut all = self.store.run(move |st| st.referrers(&repo, &s)).await?;
        if let Some(at) = artifact_type {
            all.retain(|d| d.artifact_type.as_deref() == Some(at));
        }
        Ok(all)
    }

    /// Blob count and total bytes in storage (a full listing: the admin page, not a hot path).
    pub async fn storage_totals(&self) -> Result<(u64, u64)> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for d in self.blobs.list().await? {
            if let Some(size) = self.blobs.stat(&d).await? {
                count += 1;
                bytes += size;
            }
        }
        Ok((count, bytes))
    }

    /// Distinct blobs and bytes linked per identity (first name segment).
    pub async fn usage_by_identity(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        Ok(self.store.run(|s| s.usage_by_identity()).await?)
    }

    /// Size of a stored blob, whether or not any repository links it.
    pub async fn blob_stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.blobs.stat(digest).await?)
    }

    /// Garbage collection: blobs in storage that no repository links and `keep` (the digests
    /// the hold's layer records name) does not hold. With `dry_run` nothing is deleted.
    /// Returns the digests (that would be) removed. Callers go through
    /// `gc::collect_garbage`, which gathers `keep`: a sweep without it would delete blobs
    /// uploaded through the hold API.
    ///
    /// With `only`, blobs outside that set are left alone (the admin panel deletes exactly
    /// what its preview listed, minus what became referenced since).
    pub async fn gc_keeping(
        &self,
        dry_run: bool,
        keep: &std::collections::HashSet<String>,
        only: Option<&std::collections::HashSet<String>>,
    ) -> Result<Vec<Digest>> {
        let referenced = self.store.run(|s| s.referenced_digests()).await?;
        let mut swept = Vec::new();
        for d in self.blobs.list().await? {
            let key = d.to_string();
            if referenced.contains(&key)
                || keep.contains(&key)
                || only.is_some_and(|o| !o.contains(&key))
            {
                continue;
            }
            if !dry_run {
                // The snapshot may be stale: a push may have linked this blob since. Re-check
                // under the guard that push and mount hold from commit to link.
                let _exclusive = self.gc_guard.write().await;
                let d2 = d.clone();
                if self.store.run(move |s| s.is_linked_anywhere(&d2)).await? {
                    continue;
                }
                self.blobs.delete(&d).await?;
            }
            swept.push(d);
        }
        Ok(swept)
    }
}
