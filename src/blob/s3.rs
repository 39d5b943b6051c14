//! S3 blob backend (rust-s3), with a distribution-compatible key layout:
//! ```text
//! <prefix>/blobs/sha256/<2 hex>/<hex>/data     committed blobs
//! <prefix>/uploads/<upload id>/data            multipart uploads in progress
//! ```
//! Uploads stream into multipart parts: each upload holds at most one part being filled and
//! one part in flight (`2 x part_size` bytes), never the whole blob. Bytes smaller than a part
//! at the end of a request (the "tail") are spilled to a local file, and the part list plus
//! the serialized hash state are checkpointed locally after every request, so an upload
//! survives a restart without re-reading parts (S3 cannot read an unfinished multipart
//! upload). Blobs smaller than one part skip multipart and land with one PutObject.
//!
//! Pulls never stream through us: [`BlobStore::redirect_url`] presigns a GET, cached per
//! digest for half its lifetime, with the optional CDN host swapped in.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
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
}

pub struct S3BlobStore {
    bucket: Box<Bucket>,
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
        Ok(S3BlobStore {
            bucket,
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

    /// Atomically replace the checkpoint (and the tail when given).
    async fn save(
        &self,
        id: &str,
        cp: &UploadCheckpoint,
        tail: Option<Bytes>,
    ) -> Result<(), BlobError> {
        let dir = self.spill(id)?;
        let json =
            serde_json::to_vec(cp).map_err(|e| BlobError::Io(io::Error::other(e.to_string())))?;
        blocking(move || {
            use std::io::Write;
            if let Some(tail) = tail {
                let tmp = dir.join("tail.tmp");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&tail)?;
                f.sync_data()?;
                std::fs::rename(&tmp, dir.join("tail"))?;
            }
            let tmp = dir.join("state.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_data()?;
            std::fs::rename(&tmp, dir.join("state.json"))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
    }

    async fn read_tail(&self, id: &str) -> Result<BytesMut, BlobError> {
        let path = self.spill(id)?.join("tail");
        match tokio::fs::read(path).await {
            Ok(b) => Ok(BytesMut::from(&b[..])),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BytesMut::new()),
            Err(e) => Err(e.into()),
        }
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
        };
        self.save(id, &cp, Some(Bytes::new())).await
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
        let part_size = self.settings.part_size;
        let mut buf = self.read_tail(id).await?;
        buf.reserve(part_size.saturating_sub(buf.len()));
        let key = self.upload_key(id);
        // At most one part in flight while the next one fills: memory stays at 2 x part_size.
        let mut in_flight: Option<tokio::task::JoinHandle<Result<Part, BlobError>>> = None;
        let mut client_error = None;
        let mut len = cp.len;
        while let Some(item) = chunks.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    client_error = Some(e);
                    break;
                }
            };
            hasher.update(&chunk);
            len += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = rest.len().min(part_size - buf.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == part_size {
                    if let Some(prev) = in_flight.take() {
                        let part = prev.await.map_err(|e| s3err(e.to_string()))??;
                        cp.parts.push((part.part_number, part.etag));
                    }
                    let upload_id = self.ensure_multipart(id, &mut cp).await?;
                    let number = cp.parts.len() as u32 + 1;
                    // Hand the full buffer over without copying it (rust-s3 takes a Vec).
                    let full = std::mem::replace(&mut buf, BytesMut::with_capacity(part_size));
                    let data: Vec<u8> = full.into();
                    let (bucket, key) = (self.bucket.clone(), key.clone());
                    in_flight = Some(tokio::spawn(async move {
                        bucket
                            .put_multipart_chunk(data, &key, number, &upload_id, CONTENT_TYPE)
                            .await
                            .map_err(s3err)
                    }));
                }
            }
        }
        if let Some(prev) = in_flight.take() {
            let part = prev.await.map_err(|e| s3err(e.to_string()))??;
            cp.parts.push((part.part_number, part.etag));
        }
        cp.len = len;
        cp.hasher = Some(hex::encode(hasher.to_state()));
        self.save(id, &cp, Some(buf.freeze())).await?;
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
        let tail = self.read_tail(id).await?.freeze();
        if self.stat(digest).await?.is_some() {
            // Content-addressed: the stored copy is byte-identical.
            self.upload_abort(id).await?;
            return Ok(cp.len);
        }
        match &cp.s3_upload_id {
            None => {
                // Smaller than one part: a single PUT straight to the final key.
                self.bucket
                    .put_object_with_content_type(&target, &tail, CONTENT_TYPE)
                    .await
                    .map_err(s3err)?;
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
                if !tail.is_empty() {
                    let n = parts.len() as u32 + 1;
                    let p = self
                        .bucket
                        .put_multipart_chunk(tail.to_vec(), &key, n, upload_id, CONTENT_TYPE)
                        .await
                        .map_err(s3err)?;
                    parts.push(p);
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
