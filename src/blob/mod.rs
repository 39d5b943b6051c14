//! Blob storage backends behind one trait: staged uploads that are hashed while written and
//! committed under their digest, ranged reads, stat and delete.
//!
//! Backends know nothing of repositories, manifests or ATProto: a blob is bytes under a digest.
//! Every backend must pass [`suite`], the shared conformance suite.

pub mod fs;
pub mod s3;
pub mod suite;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest, Hasher};

/// Staged-upload ids of the hold API start with this, so the registry's upload cleanup
/// (which shares the blob store) leaves them alone.
pub const HOLD_UPLOAD_ID_PREFIX: &str = "hold-";

/// Incoming upload bytes, as the HTTP layer hands them over.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// Outgoing blob bytes with the length that will be sent.
pub struct BlobRead {
    pub len: u64,
    pub stream: ChunkStream,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("upload {0} does not exist")]
    UploadNotFound(String),
    #[error("upload offset {expected} expected, got {given}")]
    OffsetMismatch { expected: u64, given: u64 },
    #[error("blob {0} does not exist")]
    NotFound(Digest),
    #[error("client body failed: {0}")]
    Client(io::Error),
    #[error("{0}")]
    Unsupported(String),
    /// The disk (or quota) is full: `ENOSPC`/`EDQUOT`, or free space under the watermark.
    #[error("{0}")]
    StorageFull(String),
    #[error("storage I/O failed: {0}")]
    Io(io::Error),
}

/// Whether an I/O error says the disk or the quota is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

impl From<io::Error> for BlobError {
    fn from(e: io::Error) -> Self {
        if is_no_space(&e) {
            BlobError::StorageFull(format!("the registry's storage is full ({e})"))
        } else {
            BlobError::Io(e)
        }
    }
}

/// Result of appending to an upload: the new total length and the hash state after it.
pub struct Appended {
    pub len: u64,
    pub hasher: Hasher,
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or None. Must not open the blob's content.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Stream a committed blob, whole or one inclusive byte range.
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead, BlobError>;

    /// Remove a committed blob. Returns whether it existed.
    async fn delete(&self, digest: &Digest) -> Result<bool, BlobError>;

    /// Every committed blob (for garbage collection).
    async fn list(&self) -> Result<Vec<Digest>, BlobError>;

    /// Start an empty staged upload under `id`.
    async fn upload_create(&self, id: &str) -> Result<(), BlobError>;

    /// Current length of a staged upload, or None if it does not exist.
    async fn upload_len(&self, id: &str) -> Result<Option<u64>, BlobError>;

    /// Append the stream at `offset` (which must equal the current length), hashing every
    /// byte with `hasher` as it is written. On a client error the bytes already written stay
    /// (the returned error says so) and the caller must re-derive the hash state.
    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        chunks: ChunkStream,
    ) -> Result<Appended, BlobError>;

    /// Hash the staged bytes from the start: restart recovery, or a final digest whose
    /// algorithm differs from the streaming one.
    async fn upload_rehash(&self, id: &str, algorithm: Algorithm) -> Result<Appended, BlobError>;

    /// Make the staged upload durable and visible under `digest` (already verified by the
    /// caller). If the blob already exists the staged copy is dropped. Returns the size.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, BlobError>;

    /// Drop a staged upload. Missing uploads are not an error.
    async fn upload_abort(&self, id: &str) -> Result<(), BlobError>;

    /// Ids of every staged upload (restart recovery and cleanup).
    async fn upload_list(&self) -> Result<Vec<String>, BlobError>;

    /// Remove backend-side leftovers of uploads not in `keep` (S3: abandoned multipart
    /// uploads). Returns how many were removed.
    async fn cleanup_orphans(
        &self,
        _keep: &std::collections::HashSet<String>,
    ) -> Result<usize, BlobError> {
        Ok(0)
    }

    /// A URL the client can fetch the blob from directly (S3 presigned GET), if the backend
    /// offers one. Pulls then answer 307 and the bytes never pass through this process.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>, BlobError> {
        Ok(None)
    }
}
