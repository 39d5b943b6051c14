//! S3 blob backend (rust-s3), with a distribution-compatible key layout:
//! ```text
//! <prefix>/blobs/sha256/<2 hex>/<hex>/data     committed blobs
//! <prefix>/uploads/<upload id>/data            multipart uploads in progress
//! ```
//! Uploads stream into multipart parts through local spool files, never through memory: the
//! request's bytes are appended to a spool file in the spill dir; when it holds a whole part
//! it is sent as that part (a presigned `UploadPart`, streamed from the file) while the next
//! part fills a new spool file; at most one part is in flight. Memory per upload is a few
//! hundred KiB whatever the part size (rust-s3 sends parts from whole `Vec`s: 16 MiB parts
//! cost 50 MiB per upload in flight). Bytes smaller than a part at the end of a request (the
//! "tail") stay in their spool file, and the part list, the tail's name and length and the
//! serialized hash state are checkpointed locally after every request, so an upload survives
//! a restart without re-reading parts (S3 cannot read an unfinished multipart upload). A
//! checkpointed tail is never modified: a request copies it into a new spool file, and the
//! new checkpoint names its successor. Blobs smaller than one part skip multipart and land
//! with one (presigned, streamed) PUT.
//!
//! Pulls never stream through us: [`BlobStore::redirect_url`] presigns a GET, cached per
//! digest for half its lifetime, with the optional CDN host swapped in.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use s3::creds::Credentials;
use s3::serde_types::Part;
use s3::{Bucket, Region};
use serde::{Deserialize, Serialize};

use super::{Appended, BlobError, BlobRead, BlobStore, ChunkStream};
use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest, Hasher};

/// S3's smallest allowed non-final part.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const CONTENT_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix; distribution uses `docker/registry/v2`.
    pub prefix: String,
    /// Host (and optional scheme) that replaces the S3 host in presigned URLs.
    pub cdn_host: String,
    pub presign_secs: u32,
    pub part_size: usize,
    /// Local directory for upload checkpoints and tails.
    pub spill_dir: PathBuf,
}

/// Checkpoint of a multipart upload, written after every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadCheckpoint {
    s3_upload_id: Option<String>,
    parts: Vec<(u32, String)>,
    /// Bytes appended so far (parts + tail).
    len: u64,
    /// Serialized hash state covering `len` bytes (hex).
    hasher: Option<String>,
    /// Set once the multipart upload is completed into the staging object.
    completed: bool,
    /// The spill file holding the bytes after the last part.
    #[serde(default = "legacy_tail_file")]
    tail_file: String,
    /// How many bytes of `tail_file` belong to the upload (the file can be longer after a
    /// crash mid-request). Older checkpoints: the whole file (it was replaced atomically).
    #[serde(default)]
    tail_len: Option<u64>,
}

fn legacy_tail_file() -> String {
    "tail".to_string()
}

/// Bytes of a request gathered before one write to the spool file.
const SPOOL_BATCH: usize = 256 * 1024;
/// Lifetime of the presigned URL of one part or object PUT (it is used at once).
const PUT_URL_SECS: u32 = 3600;

/// The spool file a request appends to, written in batches on a blocking thread.
struct Spool {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Bytes in the file plus `pending`.
    len: u64,
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

impl Spool {
    /// A new spool file at `path` starting with the first `tail_len` bytes of `tail`
    /// (copied in the kernel; the tail itself is left untouched).
    async fn start(path: PathBuf, tail: PathBuf, tail_len: u64) -> Result<Spool, BlobError> {
        let p = path.clone();
        let file = blocking(move || {
            use std::io::{Read, Seek};
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&p)?;
            if tail_len > 0 {
                let mut src = std::fs::File::open(&tail)?.take(tail_len);
                let copied = io::copy(&mut src, &mut out)?;
                if copied != tail_len {
                    return Err(io::Error::other(format!(
                        "upload tail {} holds {copied} bytes, the checkpoint says {tail_len}",
                        tail.display()
                    )));
                }
            }
            out.seek(io::SeekFrom::End(0))?;
            Ok(out)
        })
        .await?;
        Ok(Spool {
            path,
            file: Some(file),
            len: tail_len,
            pending: Vec::new(),
            pending_bytes: 0,
        })
    }

    async fn push(&mut self, piece: Bytes) -> Result<(), BlobError> {
        self.len += piece.len() as u64;
        self.pending_bytes += piece.len();
        self.pending.push(piece);
        if self.pending_bytes >= SPOOL_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut file = self.file.take().expect("spool file present");
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let file = blocking(move || {
            use std::io::Write;
            for b in &batch {
                file.write_all(b)?;
            }
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    /// Flush and make the file durable (it is about to be named by a checkpoint).
    async fn sync(&mut self) -> Result<(), BlobError> {
        self.flush().await?;
        let file = self.file.take().expect("spool file present");
        self.file = Some(
            blocking(move || {
                file.sync_data()?;
                Ok(file)
            })
            .await?,
        );
        Ok(())
    }
}

/// PUT the first `len` bytes of `path` to a presigned URL, streamed from the file; one retry
/// (S3 answers 5xx now and then). Returns the ETag.
async fn put_file(
    http: &reqwest::Client,
    url: &str,
    path: &std::path::Path,
    len: u64,
) -> Result<String, BlobError> {
    let mut last = None;
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path).await?.take(len);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            64 * 1024,
        ));
        let sent = http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                return Ok(r
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string());
            }
            Ok(r) => {
                let status = r.status();
                let text: String = r
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                last = Some(s3err(format!("PUT answered {status}: {text}")));
                if !status.is_server_error() {
                    break;
                }
            }
            Err(e) => last = Some(s3err(e)),
        }
    }
    Err(last.expect("one attempt ran"))
}

pub struct S3BlobStore {
    bucket: Box<Bucket>,
    /// Streams parts and small objects from spool files to presigned URLs.
    http: reqwest::Client,
    settings: S3Settings,
    presigned: Mutex<HashMap<Digest, (String, Instant)>>,
}

fn s3err(e: impl std::fmt::Display) -> BlobError {
    BlobError::Io(io::Error::other(format!("S3: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, BlobError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(io::Error::other(e.to_string())))??)
}

/// A handle on `bucket` at an S3-compatible `endpoint` (also used by `atcr backup`'s
/// `s3://` targets). Makes no request.
pub fn bucket_handle(
    endpoint: &str,
    region: &str,
    bucket: &str,
    path_style: bool,
    access_key: &str,
    secret_key: &str,
) -> Result<Box<Bucket>, BlobError> {
    let region = Region::Custom {
        region: region.to_string(),
        endpoint: endpoint.to_string(),
    };
    let creds =
        Credentials::new(Some(access_key), Some(secret_key), None, None, None).map_err(s3err)?;
    bucket_with(bucket, region, creds, path_style)
}

fn bucket_with(
    bucket: &str,
    region: Region,
    creds: Credentials,
    path_style: bool,
) -> Result<Box<Bucket>, BlobError> {
    let bucket = Bucket::new(bucket, region, creds).map_err(s3err)?;
    Ok(if path_style {
        bucket.with_path_style()
    } else {
        bucket
    })
}

impl S3BlobStore {
    pub async fn open(settings: S3Settings, create_bucket: bool) -> Result<Self, BlobError> {
        let region = Region::Custom {
            region: settings.region.clone(),
            endpoint: settings.endpoint.clone(),
        };
        let creds = Credentials::new(
            Some(&settings.access_key),
            Some(&settings.secret_key),
            None,
            None,
            None,
        )
        .map_err(s3err)?;
        if create_bucket {
            let config = s3::BucketConfiguration::default();
            let created = if settings.path_style {
                Bucket::create_with_path_style(
                    &settings.bucket,
                    region.clone(),
                    creds.clone(),
                    config,
                )
                .await
            } else {
                Bucket::create(&settings.bucket, region.clone(), creds.clone(), config).await
            };
            // An existing bucket is fine; anything else shows up on first use.
            if let Err(e) = created {
                tracing::debug!(error = %e, "bucket create (may already exist)");
            }
        }
        let bucket = bucket_with(&settings.bucket, region, creds, settings.path_style)?;
        std::fs::create_dir_all(&settings.spill_dir)?;
        // The endpoint is the operator's own object store, so no SSRF guard; every phase
        // has a deadline (a part is at most 512 MiB; a stalled read fails in a minute).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(s3err)?;
        Ok(S3BlobStore {
            bucket,
            http,
            settings,
            presigned: Mutex::new(HashMap::new()),
        })
    }

    fn blob_key(&self, d: &Digest) -> String {
        format!(
            "{}/blobs/{}/{}/{}/data",
            self.settings.prefix,
            d.algorithm().as_str(),
            &d.hex()[..2],
            d.hex()
        )
    }

    fn upload_key(&self, id: &str) -> String {
        format!("{}/uploads/{id}/data", self.settings.prefix)
    }

    fn spill(&self, id: &str) -> Result<PathBuf, BlobError> {
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(BlobError::UploadNotFound(id.chars().take(64).collect()));
        }
        Ok(self.settings.spill_dir.join(id))
    }

    async fn load(&self, id: &str) -> Result<UploadCheckpoint, BlobError> {
        let path = self.spill(id)?.join("state.json");
        let id = id.to_string();
        match tokio::fs::read(&path).await {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| BlobError::Io(io::Error::other(e.to_string()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::UploadNotFound(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Atomically replace the checkpoint.
    async fn save(&self, id: &str, cp: &UploadCheckpoint) -> Result<(), BlobError> {
        let dir = self.spill(id)?;
        let json =
            serde_json::to_vec(cp).map_err(|e| BlobError::Io(io::Error::other(e.to_string())))?;
        blocking(move || {
            use std::io::Write;
            let tmp = dir.join("state.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_data()?;
            std::fs::rename(&tmp, dir.join("state.json"))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
    }

    /// The checkpointed tail: its path and how many of its bytes count.
    async fn tail(&self, id: &str, cp: &UploadCheckpoint) -> Result<(PathBuf, u64), BlobError> {
        let name = &cp.tail_file;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(s3err(format!(
                "upload checkpoint names a bad tail file {name:?}"
            )));
        }
        let path = self.spill(id)?.join(name);
        let len = match cp.tail_len {
            Some(n) => n,
            None => match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e.into()),
            },
        };
        Ok((path, len))
    }

    /// A presigned PUT of an object key, or of one part of a multipart upload.
    async fn presign_put(&self, key: &str, part: Option<(u32, &str)>) -> Result<String, BlobError> {
        let queries = part.map(|(number, upload_id)| {
            HashMap::from([
                ("partNumber".to_string(), number.to_string()),
                ("uploadId".to_string(), upload_id.to_string()),
            ])
        });
        self.bucket
            .presign_put(key, PUT_URL_SECS, None, queries)
            .await
            .map_err(s3err)
    }

    async fn ensure_multipart(
        &self,
        id: &str,
        cp: &mut UploadCheckpoint,
    ) -> Result<String, BlobError> {
        if let Some(u) = &cp.s3_upload_id {
            return Ok(u.clone());
        }
        let r = self
            .bucket
            .initiate_multipart_upload(&self.upload_key(id), CONTENT_TYPE)
            .await
            .map_err(s3err)?;
        cp.s3_upload_id = Some(r.upload_id.clone());
        Ok(r.upload_id)
    }

    fn presign_cached(&self, d: &Digest) -> Option<String> {
        let cache = self.presigned.lock().expect("presign cache lock");
        cache
            .get(d)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(u, _)| u.clone())
    }

    fn swap_host(&self, url: String) -> String {
        let cdn = &self.settings.cdn_host;
        if cdn.is_empty() {
            return url;
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return url;
        };
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        if cdn.contains("://") {
            format!("{}{path}", cdn.trim_end_matches('/'))
        } else {
            format!("{scheme}://{cdn}{path}")
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match self.bucket.head_object(self.blob_key(digest)).await {
            Ok((head, 200)) => Ok(Some(head.content_length.unwrap_or(0).max(0) as u64)),
            Ok((_, 404)) => Ok(None),
            Ok((_, code)) => Err(s3err(format!("HEAD answered {code}"))),
            Err(s3::error::S3Error::HttpFailWithBody(404, _)) => Ok(None),
            Err(e) => Err(s3err(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead, BlobError> {
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        let key = self.blob_key(digest);
        let (start, len) = match range {
            Some(r) => (r.start, r.len().min(size.saturating_sub(r.start))),
            None => (0, size),
        };
        if len == 0 {
            return Ok(BlobRead {
                len: 0,
                stream: Box::pin(futures_util::stream::empty()),
            });
        }
        // rust-s3 writes ranged GETs into an AsyncWrite; a duplex pipe turns that into a
        // stream with a bounded buffer.
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let bucket = self.bucket.clone();
        tokio::spawn(async move {
            let end = start + len - 1;
            if let Err(e) = bucket
                .get_object_range_to_writer(&key, start, Some(end), &mut writer)
                .await
            {
                tracing::warn!(error = %e, "S3 ranged read failed");
            }
        });
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        Ok(BlobRead {
            len,
            stream: Box::pin(stream),
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let existed = self.stat(digest).await?.is_some();
        if existed {
            self.bucket
                .delete_object(self.blob_key(digest))
                .await
                .map_err(s3err)?;
            self.presigned
                .lock()
                .expect("presign cache lock")
                .remove(digest);
        }
        Ok(existed)
    }

    async fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let prefix = format!("{}/blobs/", self.settings.prefix);
        let pages = self
            .bucket
            .list(prefix.clone(), None)
            .await
            .map_err(s3err)?;
        let mut out = Vec::new();
        for page in pages {
            for obj in page.contents {
                // <prefix>/blobs/<alg>/<2>/<hex>/data
                let parts: Vec<&str> = obj.key.trim_start_matches(&prefix).split('/').collect();
                if let [alg, _, hex, "data"] = parts.as_slice() {
                    if let Ok(d) = format!("{alg}:{hex}").parse() {
                        out.push(d);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn upload_create(&self, id: &str) -> Result<(), BlobError> {
        let dir = self.spill(id)?;
        tokio::fs::create_dir_all(&dir).await?;
        // The multipart upload starts lazily with the first full part: small blobs never need one.
        let cp = UploadCheckpoint {
            s3_upload_id: None,
            parts: Vec::new(),
            len: 0,
            hasher: None,
            completed: false,
            tail_file: legacy_tail_file(),
            tail_len: Some(0),
        };
        tokio::fs::File::create(dir.join(&cp.tail_file)).await?;
        self.save(id, &cp).await
    }

    async fn upload_len(&self, id: &str) -> Result<Option<u64>, BlobError> {
        self.spill(id)?;
        match self.load(id).await {
            Ok(cp) => Ok(Some(cp.len)),
            Err(BlobError::UploadNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        mut hasher: Hasher,
        mut chunks: ChunkStream,
    ) -> Result<Appended, BlobError> {
        let mut cp = self.load(id).await?;
        if cp.len != offset {
            return Err(BlobError::OffsetMismatch {
                expected: cp.len,
                given: offset,
            });
        }
        if cp.completed {
            return Err(BlobError::Io(io::Error::other("upload already completed")));
        }
        let part_size = self.settings.part_size as u64;
        let dir = self.spill(id)?;
        let (old_tail, old_tail_len) = self.tail(id, &cp).await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let base_len = cp.len;
        let spool_name = |what: &str| format!("{what}-{base_len}-{stamp}");
        let mut spool = Spool::start(
            dir.join(spool_name("spool")),
            old_tail.clone(),
            old_tail_len,
        )
        .await?;
        let key = self.upload_key(id);
        // At most one part in flight (streamed from its own file) while the next one fills.
        let mut in_flight: Option<tokio::task::JoinHandle<Result<(u32, String), BlobError>>> = None;
        let mut client_error = None;
        let mut len = cp.len;
        let mut failed = None;
        'read: while let Some(item) = chunks.next().await {
            let mut chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    client_error = Some(e);
                    break;
                }
            };
            hasher.update(&chunk);
            len += chunk.len() as u64;
            while !chunk.is_empty() {
                let take = (chunk.len() as u64).min(part_size - spool.len) as usize;
                if let Err(e) = spool.push(chunk.split_to(take)).await {
                    failed = Some(e);
                    break 'read;
                }
                if spool.len < part_size {
                    continue;
                }
                let sent = async {
                    if let Some(prev) = in_flight.take() {
                        let done = prev.await.map_err(|e| s3err(e.to_string()))??;
                        cp.parts.push(done);
                    }
                    spool.flush().await?;
                    let upload_id = self.ensure_multipart(id, &mut cp).await?;
                    let number = cp.parts.len() as u32 + 1;
                    let url = self.presign_put(&key, Some((number, &upload_id))).await?;
                    let next = Spool::start(
                        dir.join(spool_name(&format!("spool{number}"))),
                        PathBuf::new(),
                        0,
                    )
                    .await?;
                    let full = std::mem::replace(&mut spool, next);
                    let http = self.http.clone();
                    in_flight = Some(tokio::spawn(async move {
                        drop(full.file);
                        let etag = put_file(&http, &url, &full.path, part_size).await;
                        let _ = tokio::fs::remove_file(&full.path).await;
                        Ok((number, etag?))
                    }));
                    Ok::<(), BlobError>(())
                }
                .await;
                if let Err(e) = sent {
                    failed = Some(e);
                    break 'read;
                }
            }
        }
        if let Some(prev) = in_flight.take() {
            match prev.await.map_err(|e| s3err(e.to_string())) {
                Ok(Ok(done)) => cp.parts.push(done),
                Ok(Err(e)) | Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            // Nothing of this request is checkpointed: the upload stays where it was (parts
            // sent meanwhile are overwritten by the next request's parts of the same numbers).
            let _ = tokio::fs::remove_file(&spool.path).await;
            return Err(e);
        }
        // The spool becomes the tail: durable first, then the checkpoint that names it, then
        // the old tail goes (a crash in between leaves a consistent checkpoint either way).
        spool.sync().await?;
        cp.len = len;
        cp.hasher = Some(hex::encode(hasher.to_state()));
        cp.tail_file = spool
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cp.tail_len = Some(spool.len);
        self.save(id, &cp).await?;
        if old_tail != spool.path {
            let _ = tokio::fs::remove_file(&old_tail).await;
        }
        match client_error {
            Some(e) => Err(BlobError::Client(e)),
            None => Ok(Appended { len, hasher }),
        }
    }

    async fn upload_rehash(&self, id: &str, algorithm: Algorithm) -> Result<Appended, BlobError> {
        let cp = self.load(id).await?;
        let checkpointed = cp
            .hasher
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| Hasher::from_state(&b));
        match checkpointed {
            Some(h) if h.algorithm() == algorithm => Ok(Appended { len: cp.len, hasher: h }),
            None if cp.len == 0 => Ok(Appended { len: 0, hasher: algorithm.hasher() }),
                        // Unfinished multipart parts cannot be read back to hash them another way.
            Some(h) => Err(BlobError::Unsupported(format!(
                "this upload was hashed with {}; for a {} digest on object storage, give ?digest= when the upload starts",
                h.algorithm().as_str(),
                algorithm.as_str()
            ))),
            None => Err(BlobError::Io(io::Error::other("upload checkpoint has no hash state"))),
        }
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, BlobError> {
        let cp = self.load(id).await?;
        let target = self.blob_key(digest);
        let (tail, tail_len) = self.tail(id, &cp).await?;
        if self.stat(digest).await?.is_some() {
            // Content-addressed: the stored copy is byte-identical.
            self.upload_abort(id).await?;
            return Ok(cp.len);
        }
        match &cp.s3_upload_id {
            None => {
                // Smaller than one part: a single PUT straight to the final key.
                let url = self.presign_put(&target, None).await?;
                put_file(&self.http, &url, &tail, tail_len).await?;
            }
            Some(upload_id) => {
                let key = self.upload_key(id);
                let mut parts: Vec<Part> = cp
                    .parts
                    .iter()
                    .map(|(n, e)| Part {
                        part_number: *n,
                        etag: e.clone(),
                    })
                    .collect();
                if tail_len > 0 {
                    let n = parts.len() as u32 + 1;
                    let url = self.presign_put(&key, Some((n, upload_id))).await?;
                    let etag = put_file(&self.http, &url, &tail, tail_len).await?;
                    parts.push(Part {
                        part_number: n,
                        etag,
                    });
                }
                self.bucket
                    .complete_multipart_upload(&key, upload_id, parts)
                    .await
                    .map_err(s3err)?;
                // The final key depends on the digest, known only now: a server-side copy.
                self.bucket
                    .copy_object_internal(&key, &target)
                    .await
                    .map_err(s3err)?;
                self.bucket.delete_object(&key).await.map_err(s3err)?;
            }
        }
        let dir = self.spill(id)?;
        let _ = tokio::fs::remove_dir_all(dir).await;
        Ok(cp.len)
    }

    async fn upload_abort(&self, id: &str) -> Result<(), BlobError> {
        let cp = match self.load(id).await {
            Ok(cp) => Some(cp),
            Err(BlobError::UploadNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(upload_id) = cp.and_then(|c| c.s3_upload_id) {
            if let Err(e) = self
                .bucket
                .abort_upload(&self.upload_key(id), &upload_id)
                .await
            {
                tracing::warn!(upload = id, error = %e, "could not abort S3 multipart upload");
            }
        }
        match tokio::fs::remove_dir_all(self.spill(id)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_list(&self) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.settings.spill_dir).await?;
        while let Some(e) = dir.next_entry().await? {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    async fn cleanup_orphans(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> Result<usize, BlobError> {
        // Multipart uploads in the bucket that no local session owns (a lost spill dir, or
        // another process's crash) would be billed forever: abort them.
        let prefix = format!("{}/uploads/", self.settings.prefix);
        let mut aborted = 0;
        let listing = match self
            .bucket
            .list_multiparts_uploads(Some(&prefix), None)
            .await
        {
            Ok(l) => l,
            // Some S3-compatible servers (s3s-fs among them) cannot list multipart uploads;
            // then only the bucket's own lifecycle rules can reclaim abandoned ones.
            Err(s3::error::S3Error::HttpFailWithBody(501, _)) => {
                tracing::debug!(
                    "object store cannot list multipart uploads; skipping orphan cleanup"
                );
                return Ok(0);
            }
            Err(e) => return Err(s3err(e)),
        };
        for page in listing {
            for u in page.uploads {
                let id = u
                    .key
                    .trim_start_matches(&prefix)
                    .trim_end_matches("/data")
                    .to_string();
                // A local checkpoint means a live session (possibly newer than `keep`).
                let local = self.spill(&id).map(|d| d.exists()).unwrap_or(false);
                if !keep.contains(&id) && !local {
                    let _ = self.bucket.abort_upload(&u.key, &u.id).await;
                    aborted += 1;
                }
            }
        }
        Ok(aborted)
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>, BlobError> {
        if let Some(url) = self.presign_cached(digest) {
            return Ok(Some(url));
        }
        let secs = self.settings.presign_secs;
        let url = self
            .bucket
            .presign_get(self.blob_key(digest), secs, None)
            .await
            .map_err(s3err)?;
        let url = self.swap_host(url);
        // Reuse a URL for half its lifetime, so every client gets at least half of it.
        let until = Instant::now() + Duration::from_secs(u64::from(secs) / 2);
        self.presigned
            .lock()
            .expect("presign cache lock")
            .insert(digest.clone(), (url.clone(), until));
        Ok(Some(url))
    }
}
