//! The scanner as a service of the hold: a bounded queue of scan requests, worker threads
//! at low CPU and I/O priority, the `io.atcr.hold.scan` records with their SBOM and report
//! blobs, the database watcher and URL refresh, and re-matching after a database update.
//!
//! Flow: `notifyManifest` (or the registry's in-process push hook) ->
//! [`Scanner::enqueue`] (a full queue writes a `skipped` record instead) -> a worker reads
//! each layer from the blob store as a stream ([`super::engine::scan_image`]) -> the SBOM
//! and report go into the blob store (addressed by the sha256 CID ATProto uses for blobs,
//! served by `com.atproto.sync.getBlob`) -> one hold commit upserts
//! `io.atcr.hold.scan/<digest hex>` -> the sink (the index) hears about it.
//!
//! The database watcher checks `vulndb/CURRENT` every [`WATCH_SECS`]; on a new generation
//! every stored SBOM is matched again (a rematch reads no layer), between scans. The last
//! generation matched is kept in `hold.redb` (meta `scan_matched_generation`), so a
//! restart after an import while the server was down still re-matches.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::engine::{self, Outcome, Status};
use super::report::Summary;
use super::sbom::ImageRef;
use super::vulndb::VulnDb;
use super::walk::Limits;
use crate::atproto::records::{HoldScan, LexiconRecord};
use crate::atproto::repo::Write;
use crate::blob::{BlobError, BlobStore, ChunkStream};
use crate::oci::types::{Algorithm, Digest};
use crate::pds::{record_cbor, HoldPds};

pub const SCAN: &str = "io.atcr.hold.scan";
/// How often the database directory is checked for a new generation.
pub const WATCH_SECS: u64 = 30;
const MATCHED_META: &str = "scan_matched_generation";

/// Image config media types; manifests with another config are not container images.
pub const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Whether a layer media type is a file system (tar, compressed or not); unknown (empty)
/// types are tried.
pub fn is_tar_layer(media_type: &str) -> bool {
    media_type.is_empty()
        || media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// A manifest to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    pub user_did: String,
    pub repository: String,
    pub manifest_digest: String,
    /// AT-URI of the user's manifest record.
    pub manifest_uri: String,
    pub config_media_type: Option<String>,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// Their media types (same order; may be empty when unknown).
    pub layer_types: Vec<String>,
    /// Scan even when a record for this digest is already `ok`.
    pub force: bool,
}

/// Settings from `[scan]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub queue_size: usize,
    pub limits: Limits,
    pub vulndb_dir: PathBuf,
    pub vulndb_urls: Vec<String>,
    pub refresh_hours: u64,
    /// Registry host for SBOM namespaces and `pkg:oci` URLs.
    pub host: String,
}

/// Told after every record write (the index keeps badges and the search filter from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEvent {
    pub user_did: String,
    pub repository: String,
    pub digest: String,
    pub status: String,
    pub summary: Summary,
    pub scanned_at: String,
}

pub type Sink = Arc<dyn Fn(ScanEvent) + Send + Sync>;

/// A scan record as the UI and the CLI read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    pub rkey: String,
    pub digest: String,
    pub manifest: String,
    pub repository: String,
    pub user_did: String,
    pub status: String,
    pub reason: String,
    pub summary: Summary,
    pub scanner_version: String,
    pub scanned_at: String,
    /// Blob store digests of the SBOM and the report.
    pub sbom: Option<Digest>,
    pub report: Option<Digest>,
}

impl ScanRecord {
    pub fn from_value(rkey: &str, v: &Value) -> ScanRecord {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let total = n("total");
        let known = n("critical") + n("high") + n("medium") + n("low");
        ScanRecord {
            rkey: rkey.to_string(),
            digest: digest_of_rkey(rkey),
            manifest: s("manifest"),
            repository: s("repository"),
            user_did: s("userDid"),
            status: v["status"].as_str().unwrap_or("ok").to_string(),
            reason: s("reason"),
            summary: Summary {
                critical: n("critical"),
                high: n("high"),
                medium: n("medium"),
                low: n("low"),
                unknown: total.saturating_sub(known),
                total,
            },
            scanner_version: s("scannerVersion"),
            scanned_at: s("scannedAt"),
            sbom: blob_digest(&v["sbomBlob"]),
            report: blob_digest(&v["vulnReportBlob"]),
        }
    }

    pub fn event(&self) -> ScanEvent {
        ScanEvent {
            user_did: self.user_did.clone(),
            repository: self.repository.clone(),
            digest: self.digest.clone(),
            status: self.status.clone(),
            summary: self.summary,
            scanned_at: self.scanned_at.clone(),
        }
    }
}

/// The record key of a manifest digest: its hex (atcr.io's convention).
pub fn rkey_of(digest: &str) -> String {
    digest
        .split_once(':')
        .map(|(_, h)| h)
        .unwrap_or(digest)
        .to_string()
}

/// Back from a record key (64 hex: sha256, 128: sha512).
pub fn digest_of_rkey(rkey: &str) -> String {
    match rkey.len() {
        128 => format!("sha512:{rkey}"),
        _ => format!("sha256:{rkey}"),
    }
}

/// The blob store digest behind a blob reference (`{"$type":"blob","ref":{"$link":cid}}`).
pub fn blob_digest(v: &Value) -> Option<Digest> {
    let cid = v["ref"]["$link"].as_str()?;
    digest_of_cid(cid)
}

/// A raw sha2-256 CID as the OCI digest of the same bytes.
pub fn digest_of_cid(cid: &str) -> Option<Digest> {
    let cid = crate::atproto::repo::cid::parse_cid(cid).ok()?;
    if cid.codec() != crate::atproto::repo::cid::RAW {
        return None;
    }
    format!("sha256:{}", hex::encode(cid.hash().digest()))
        .parse()
        .ok()
}

/// The raw sha2-256 CID of a sha256 digest (how blob references name it).
pub fn cid_string(digest: &Digest) -> Option<String> {
    if digest.algorithm() != Algorithm::Sha256 {
        return None;
    }
    let bytes = hex::decode(digest.hex()).ok()?;
    let mh = ::cid::multihash::Multihash::<64>::wrap(crate::atproto::repo::cid::SHA2_256, &bytes)
        .ok()?;
    Some(::cid::Cid::new_v1(crate::atproto::repo::cid::RAW, mh).to_string())
}

/// Stores `bytes` as a blob (hashed while written) and returns its digest.
pub async fn put_blob(blobs: &dyn BlobStore, bytes: Vec<u8>) -> Result<Digest, BlobError> {
    let digest = Digest::sha256_of(&bytes);
    if blobs.stat(&digest).await?.is_some() {
        return Ok(digest);
    }
    let id = format!("scan-{}", uuid::Uuid::new_v4());
    blobs.upload_create(&id).await?;
    let stream: ChunkStream =
        Box::pin(futures_util::stream::once(
            async move { Ok(Bytes::from(bytes)) },
        ));
    let appended = match blobs
        .upload_append(&id, 0, Algorithm::Sha256.hasher(), stream)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let _ = blobs.upload_abort(&id).await;
            return Err(e);
        }
    };
    if appended.hasher.finish() != digest {
        let _ = blobs.upload_abort(&id).await;
        return Err(BlobError::Unsupported("blob changed while stored".into()));
    }
    blobs.upload_commit(&id, &digest).await?;
    Ok(digest)
}

/// Reads a blob whole, up to `cap` bytes.
pub async fn get_blob(
    blobs: &dyn BlobStore,
    digest: &Digest,
    cap: usize,
) -> Result<Vec<u8>, String> {
    let read = blobs.read(digest, None).await.map_err(|e| e.to_string())?;
    if read.len > cap as u64 {
        return Err(format!("{digest} is {} bytes (limit {cap})", read.len));
    }
    let mut out = Vec::with_capacity(read.len as usize);
    let mut s = read.stream;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > cap {
            return Err(format!("{digest} is over {cap} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Queued,
    Running,
}

struct Inner {
    pds: Arc<HoldPds>,
    blobs: Arc<dyn BlobStore>,
    vulndb: VulnDb,
    settings: Settings,
    rt: tokio::runtime::Handle,
    pending: Mutex<HashMap<String, Pending>>,
    rematch: Mutex<VecDeque<String>>,
    sink: OnceLock<Sink>,
    stop: AtomicBool,
}

pub struct Scanner {
    inner: Arc<Inner>,
    tx: Mutex<Option<SyncSender<ScanRequest>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").finish_non_exhaustive()
    }
}

/// Lowers the calling thread to nice 10 and the idle I/O class (Linux; best effort).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; failures are ignored.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        const IOPRIO_CLASS_IDLE: libc::c_int = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// A blob stream read synchronously by a worker thread; stops when the scanner stops.
struct BlobReader {
    rt: tokio::runtime::Handle,
    stream: ChunkStream,
    buf: Bytes,
    inner: Arc<Inner>,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            if self.inner.stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("the scanner is stopping"));
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

impl Scanner {
    /// Starts the workers, the database watcher and (with URLs) the refresh task. Must be
    /// called inside the tokio runtime.
    pub fn start(pds: Arc<HoldPds>, blobs: Arc<dyn BlobStore>, settings: Settings) -> Arc<Scanner> {
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue_size.max(1));
        let inner = Arc::new(Inner {
            vulndb: VulnDb::new(&settings.vulndb_dir),
            pds,
            blobs,
            settings,
            rt: tokio::runtime::Handle::current(),
            pending: Mutex::new(HashMap::new()),
            rematch: Mutex::new(VecDeque::new()),
            sink: OnceLock::new(),
            stop: AtomicBool::new(false),
        });
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..inner.settings.workers.max(1) {
            let (inner, rx) = (inner.clone(), rx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("atcr-scan-{i}"))
                .spawn(move || worker(inner, rx));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => tracing::warn!(error = %e, "cannot start a scan worker"),
            }
        }
        let scanner = Arc::new(Scanner {
            inner: inner.clone(),
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![tokio::spawn(watch(inner.clone()))];
        if !inner.settings.vulndb_urls.is_empty() && inner.settings.refresh_hours > 0 {
            tasks.push(tokio::spawn(refresh(inner.clone())));
        }
        *scanner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        scanner
    }

    pub fn set_sink(&self, sink: Sink) {
        let _ = self.inner.sink.set(sink);
    }

    pub fn vulndb(&self) -> &VulnDb {
        &self.inner.vulndb
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// Queues a scan. Index manifests are not scanned (their platforms are, as they are
    /// pushed); when the queue is full a `skipped` record says so.
    pub fn enqueue(&self, req: ScanRequest) {
        if req.layers.is_empty() && req.config_media_type.is_none() {
            return; // an index
        }
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.contains_key(&req.manifest_digest) {
                return;
            }
            pending.insert(req.manifest_digest.clone(), Pending::Queued);
        }
        let sent = match &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.try_send(req),
            None => return,
        };
        if let Err(TrySendError::Full(req) | TrySendError::Disconnected(req)) = sent {
            self.inner.forget(&req.manifest_digest);
            tracing::warn!(digest = %req.manifest_digest, "scan queue full; the scan is skipped");
            let inner = self.inner.clone();
            std::thread::spawn(move || {
                let out = Outcome::skipped("the scan queue was full; use Rescan to scan it");
                inner.store(&req, out);
            });
        }
    }

    /// Whether a scan of `digest` is queued or running.
    pub fn pending(&self, digest: &str) -> Option<Pending> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .copied()
    }

    /// Scans now on the calling thread and writes the record (`atcr scan`). Blocking; must
    /// not run on a runtime thread.
    pub fn scan_blocking(&self, req: &ScanRequest) -> Option<ScanRecord> {
        self.inner.run(req)
    }

    /// Every scan record.
    pub async fn records(&self) -> Result<Vec<ScanRecord>, crate::pds::HoldError> {
        list_records(&self.inner.pds).await
    }

    /// Queues a rematch of every stored SBOM (after a database update).
    pub async fn rematch_all(&self) -> usize {
        queue_rematch_all(&self.inner).await
    }

    /// Looks for a new database generation now (the watcher does it every [`WATCH_SECS`]);
    /// returns how many records were queued for a rematch.
    pub async fn check_database(&self) -> usize {
        check_database(&self.inner).await
    }

    /// Stops the workers (a running scan is abandoned without a record) and the tasks.
    pub async fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let workers: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

/// Every `io.atcr.hold.scan` record of the hold.
pub async fn list_records(pds: &Arc<HoldPds>) -> Result<Vec<ScanRecord>, crate::pds::HoldError> {
    let rows = pds
        .read(|repo| crate::pds::collection_where(repo, SCAN, |_| true))
        .await?;
    Ok(rows
        .iter()
        .map(|(k, v)| ScanRecord::from_value(k, v))
        .collect())
}

/// The scan record of a manifest digest.
pub async fn record_of(
    pds: &HoldPds,
    digest: &str,
) -> Result<Option<ScanRecord>, crate::pds::HoldError> {
    let rkey = rkey_of(digest);
    Ok(pds
        .get_record(SCAN, &rkey)
        .await?
        .map(|r| ScanRecord::from_value(&rkey, &r.value)))
}

async fn queue_rematch_all(inner: &Arc<Inner>) -> usize {
    match list_records(&inner.pds).await {
        Ok(records) => {
            let mut q = inner.rematch.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            for r in records.into_iter().filter(|r| r.sbom.is_some()) {
                if !q.contains(&r.rkey) {
                    q.push_back(r.rkey);
                    n += 1;
                }
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list scan records for a rematch");
            0
        }
    }
}

fn worker(inner: Arc<Inner>, rx: Arc<Mutex<Receiver<ScanRequest>>>) {
    lower_priority();
    loop {
        if inner.stop.load(Ordering::Relaxed) {
            return;
        }
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv_timeout(Duration::from_millis(250))
        };
        match job {
            Ok(req) => {
                inner.run(&req);
            }
            Err(RecvTimeoutError::Timeout) => {
                let next = inner
                    .rematch
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                if let Some(rkey) = next {
                    inner.rematch_one(&rkey);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Checks for a new database generation now and then (see [`check_database`]).
async fn watch(inner: Arc<Inner>) {
    loop {
        check_database(&inner).await;
        tokio::time::sleep(Duration::from_secs(WATCH_SECS)).await;
    }
}

/// Switches to the live database generation and, when it is not the one the records were
/// last matched against, queues a rematch of every stored SBOM. Returns how many.
async fn check_database(inner: &Arc<Inner>) -> usize {
    let vdb = inner.clone();
    match tokio::task::spawn_blocking(move || vdb.vulndb.reload()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot open the new vulnerability database");
            return 0;
        }
        Err(_) => return 0,
    }
    let Some(live) = super::vulndb::live_generation(inner.vulndb.dir()) else {
        return 0;
    };
    let matched = inner
        .pds
        .store()
        .get_meta(MATCHED_META)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok());
    if matched == Some(live) {
        return 0;
    }
    let n = queue_rematch_all(inner).await;
    tracing::info!(
        generation = live,
        records = n,
        "vulnerability database changed; re-matching stored SBOMs"
    );
    let _ = inner
        .pds
        .store()
        .put_meta(MATCHED_META, live.to_string().as_bytes());
    n
}

/// Downloads the configured OSV archives every `refresh_hours` (the first time at start
/// when the database is older than that), backing off after failures.
async fn refresh(inner: Arc<Inner>) {
    let period = Duration::from_secs(inner.settings.refresh_hours.max(1) * 3600);
    let mut wait = Duration::from_secs(60);
    loop {
        let age_ok = inner
            .vulndb
            .reader()
            .map(|r| {
                let t = crate::pds::unix_of(&r.meta.updated_at);
                crate::registry::store::now_unix().saturating_sub(t) < period.as_secs()
            })
            .unwrap_or(false);
        if !age_ok {
            let started = Instant::now();
            match super::vulndb::refresh_from_urls(
                &inner.settings.vulndb_dir,
                &inner.settings.vulndb_urls,
            )
            .await
            {
                Ok(r) => {
                    tracing::info!(
                        generation = r.generation,
                        advisories = r.advisories,
                        secs = started.elapsed().as_secs(),
                        "vulnerability database refreshed"
                    );
                    wait = Duration::from_secs(60);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_secs = wait.as_secs(), "vulnerability database refresh failed; keeping the current one");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(period);
                    continue;
                }
            }
        }
        tokio::time::sleep(period.min(Duration::from_secs(3600))).await;
    }
}

impl Inner {
    fn forget(&self, digest: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }

    fn image(&self, req: &ScanRequest) -> ImageRef {
        ImageRef {
            repository: req.repository.clone(),
            digest: req.manifest_digest.clone(),
            user_did: req.user_did.clone(),
            host: self.settings.host.clone(),
        }
    }

    /// Scans and writes the record; `None` when stopped or the record could not be written.
    fn run(self: &Arc<Self>, req: &ScanRequest) -> Option<ScanRecord> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.manifest_digest.clone(), Pending::Running);
        let started = Instant::now();
        let out = self.scan(req);
        let rec = if self.stop.load(Ordering::Relaxed) {
            None
        } else {
            let r = self.store(req, out.clone());
            tracing::info!(
                digest = %req.manifest_digest,
                repository = %req.repository,
                status = out.status.as_str(),
                packages = out.packages,
                vulnerabilities = out.summary.total,
                critical = out.summary.critical,
                ms = started.elapsed().as_millis() as u64,
                "scanned"
            );
            r
        };
        self.forget(&req.manifest_digest);
        rec
    }

    fn scan(self: &Arc<Self>, req: &ScanRequest) -> Outcome {
        if !req.force {
            if let Ok(Some(existing)) = self.rt.block_on(record_of(&self.pds, &req.manifest_digest))
            {
                if existing.status == "ok"
                    && existing.scanner_version == engine::SCANNER_VERSION
                    && existing.sbom.is_some()
                {
                    // Same bytes, same scanner: the record stands (a rematch keeps it current).
                    return Outcome::skipped("already scanned");
                }
            }
        }
        match req.config_media_type.as_deref() {
            Some(c) if IMAGE_CONFIGS.contains(&c) => {}
            Some(c) => return Outcome::skipped(format!("not a container image (config {c})")),
            None => {}
        }
        if req.layers.is_empty() {
            return Outcome::skipped("the image has no layers");
        }
        // Signatures (cosign's simplesigning payloads), attestations and other artifacts
        // use the image config type with layers that are no file systems.
        if let Some(t) = req.layer_types.iter().find(|t| !is_tar_layer(t)) {
            return Outcome::skipped(format!("not a container image (layer {t})"));
        }
        let db = self.vulndb.reader();
        let layers = req.layers.iter().map(|d| -> engine::LayerSource<'static> {
            let digest: Digest = d.parse().map_err(|e| format!("{d}: {e}"))?;
            let read = self
                .rt
                .block_on(self.blobs.read(&digest, None))
                .map_err(|e| match e {
                    BlobError::NotFound(_) => format!("{d} is not stored in this hold"),
                    other => format!("{d}: {other}"),
                })?;
            Ok(Box::new(BlobReader {
                rt: self.rt.clone(),
                stream: read.stream,
                buf: Bytes::new(),
                inner: self.clone(),
            }))
        });
        engine::scan_image(
            &self.image(req),
            layers,
            &self.settings.limits,
            db.as_ref(),
            &crate::pds::now_rfc3339(),
        )
    }

    /// Writes the blobs and upserts the record. "already scanned" outcomes write nothing.
    fn store(&self, req: &ScanRequest, out: Outcome) -> Option<ScanRecord> {
        if out.status == Status::Skipped && out.reason.as_deref() == Some("already scanned") {
            return self
                .rt
                .block_on(record_of(&self.pds, &req.manifest_digest))
                .ok()
                .flatten();
        }
        let now = crate::pds::now_rfc3339();
        let blob_ref = |bytes: Option<Vec<u8>>, mime: &str| -> Option<Value> {
            let bytes = bytes?;
            let size = bytes.len();
            match self.rt.block_on(put_blob(self.blobs.as_ref(), bytes)) {
                Ok(d) => Some(
                    json!({"$type": "blob", "ref": {"$link": cid_string(&d)?}, "mimeType": mime, "size": size}),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store a scan blob");
                    None
                }
            }
        };
        let sbom = blob_ref(out.sbom.clone(), super::sbom::MEDIA_TYPE);
        let report = blob_ref(out.report.clone(), super::report::MEDIA_TYPE);
        let s = out.summary;
        let rec = HoldScan {
            manifest: req.manifest_uri.clone(),
            repository: crate::scan::inventory::clip(&req.repository, 256),
            user_did: req.user_did.clone(),
            critical: s.critical,
            high: s.high,
            medium: s.medium,
            low: s.low,
            total: s.total,
            scanner_version: engine::SCANNER_VERSION.to_string(),
            scanned_at: now,
            sbom_blob: sbom,
            vuln_report_blob: report,
            status: Some(out.status.as_str().to_string()),
            reason: out
                .reason
                .as_deref()
                .map(|r| crate::scan::inventory::clip(r, 256)),
        }
        .to_value();
        let rkey = rkey_of(&req.manifest_digest);
        let cbor = match record_cbor(&rec) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "scan record does not encode");
                return None;
            }
        };
        let k = rkey.clone();
        let written = self.pds.write_blocking(move |repo| {
            let exists = repo.get_record(SCAN, &k)?.is_some();
            Ok(vec![if exists {
                Write::Update {
                    collection: SCAN.into(),
                    rkey: k,
                    record: cbor,
                }
            } else {
                Write::Create {
                    collection: SCAN.into(),
                    rkey: k,
                    record: cbor,
                }
            }])
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, digest = %req.manifest_digest, "cannot write the scan record");
            return None;
        }
        let record = ScanRecord::from_value(&rkey, &rec);
        if let Some(sink) = self.sink.get() {
            sink(record.event());
        }
        Some(record)
    }

    fn rematch_one(&self, rkey: &str) {
        let Ok(Some(rec)) = self.rt.block_on(self.pds.get_record(SCAN, rkey)) else {
            return;
        };
        let old = ScanRecord::from_value(rkey, &rec.value);
        let Some(sbom_digest) = old.sbom.clone() else {
            return;
        };
        let sbom = match self.rt.block_on(get_blob(
            self.blobs.as_ref(),
            &sbom_digest,
            super::sbom::MAX_SBOM_BYTES,
        )) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, rkey, "cannot read a stored SBOM for a rematch");
                return;
            }
        };
        let req = ScanRequest {
            user_did: old.user_did.clone(),
            repository: old.repository.clone(),
            manifest_digest: old.digest.clone(),
            manifest_uri: old.manifest.clone(),
            config_media_type: None,
            layers: Vec::new(),
            layer_types: Vec::new(),
            force: true,
        };
        let db = self.vulndb.reader();
        let mut out = engine::rematch(
            &self.image(&req),
            sbom,
            db.as_ref(),
            &crate::pds::now_rfc3339(),
        );
        if out.status == Status::Ok && old.reason.contains("file(s) not read") {
            out.reason = Some(old.reason.clone()); // the walk's notes are not in the SBOM
        }
        // Unchanged results keep their record (and the firehose stays quiet).
        if out.status == Status::Ok {
            if let (Some(new), Some(old_report)) = (&out.report, &old.report) {
                let old_bytes = self.rt.block_on(get_blob(
                    self.blobs.as_ref(),
                    old_report,
                    super::report::MAX_REPORT_BYTES,
                ));
                let same = old_bytes.ok().is_some_and(|b| same_matches(&b, new));
                if same && out.reason.as_deref().unwrap_or("") == old.reason {
                    return;
                }
            }
        }
        self.store(&req, out);
    }
}

/// Whether two reports list the same matches (ignoring timestamps and the database).
fn same_matches(a: &[u8], b: &[u8]) -> bool {
    let pick = |x: &[u8]| {
        serde_json::from_slice::<Value>(x)
            .ok()
            .map(|v| v["matches"].clone())
    };
    matches!((pick(a), pick(b)), (Some(x), Some(y)) if x == y)
}

/// The scans of a manifest in the local registry: itself, or each platform of an index.
/// The user is the name's identity (a DID, or a handle resolved with `resolver`).
pub async fn requests_for(
    registry: &crate::registry::Registry,
    resolver: Option<&crate::atproto::identity::Resolver>,
    name: &crate::oci::types::Name,
    reference: &crate::oci::types::Reference,
    force: bool,
) -> Result<Vec<ScanRequest>, String> {
    use crate::oci::types::manifest::{parse_manifest, ManifestKind};
    let id = name.identity();
    let user_did = if id.starts_with("did:") {
        id.to_string()
    } else {
        match resolver {
            Some(r) => r
                .resolve_did_of(id)
                .await
                .map_err(|e| format!("cannot resolve {id}: {e}"))?,
            None => return Err(format!("{id} is not a DID and no resolver is configured")),
        }
    };
    let top = registry
        .manifest_get(name, reference)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    let mut todo = vec![top];
    while let Some(m) = todo.pop() {
        let parsed = parse_manifest(&m.meta.media_type, &m.bytes).map_err(|e| e.to_string())?;
        if parsed.kind == ManifestKind::Index {
            if !out.is_empty() || todo.len() > 64 {
                continue; // nested indexes are not followed
            }
            for child in &parsed.manifests {
                let r = crate::oci::types::Reference::Digest(child.digest.clone());
                if let Ok(c) = registry.manifest_get(name, &r).await {
                    todo.push(c);
                }
            }
            continue;
        }
        out.push(ScanRequest {
            user_did: user_did.clone(),
            repository: name.repository().to_string(),
            manifest_digest: m.digest.to_string(),
            // The digest-keyed URI (what `NotifyManifest::manifest_uri` falls back to).
            manifest_uri: format!("at://{user_did}/io.atcr.manifest/{}", m.digest.hex()),
            config_media_type: parsed.config.as_ref().map(|c| c.media_type.clone()),
            layers: parsed.layers.iter().map(|l| l.digest.to_string()).collect(),
            layer_types: parsed.layers.iter().map(|l| l.media_type.clone()).collect(),
            force,
        });
    }
    Ok(out)
}
