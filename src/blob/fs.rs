//! Filesystem blob backend.
//!
//! Layout under the root (distribution-compatible below `blobs/`):
//! ```text
//! <root>/blobs/sha256/<first 2 hex>/<hex>/data   committed blobs
//! <root>/uploads/<upload id>/data                staged uploads (same filesystem: rename is atomic)
//! ```
//! A blob becomes visible only by `rename` after its data is fsynced, and the directory is
//! fsynced after the rename, so a crash never leaves a half-written blob under a digest.
//!
//! All file work runs on blocking threads: one per append (hash + write, pipelined with the
//! network through a bounded channel) and one per read (1 MiB chunks), never on the runtime.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Appended, BlobError, BlobRead, BlobStore, ChunkStream};
use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest, Hasher};

const READ_CHUNK: usize = 1 << 20;
/// Start writeback every this many bytes so the final fsync has little left to flush.
const WRITEBACK_EVERY: u64 = 16 << 20;
/// Chunks in flight between the network task and the writer thread.
const PIPELINE_DEPTH: usize = 32;

/// How often a running upload re-checks the free-space watermark.
const WATERMARK_CHECK_EVERY: u64 = 32 << 20;

pub struct FsBlobStore {
    root: PathBuf,
    /// Uploads are refused while less than this is free (0: only ENOSPC stops them).
    min_free: u64,
}

impl FsBlobStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobStore { root, min_free: 0 })
    }

    /// Refuse uploads (new ones, and running ones as they grow) while less than `bytes`
    /// is free on the filesystem, so the disk never fills up under the databases.
    pub fn with_min_free(mut self, bytes: u64) -> Self {
        self.min_free = bytes;
        self
    }

    fn blob_dir(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blob_dir(d).join("data")
    }

    fn upload_dir(&self, id: &str) -> Result<PathBuf, BlobError> {
        // Ids come from us (UUIDs), but they travel through URLs: never let one escape the root.
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(BlobError::UploadNotFound(id.chars().take(64).collect()));
        }
        Ok(self.root.join("uploads").join(id))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(io::Error::other(format!("blocking task failed: {e}"))))?
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Ask the kernel to start writing back a range without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: plain syscall on a valid fd; failure only loses the optimisation.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// `StorageFull` when less than `min_free` bytes are free where `dir` lives.
fn check_watermark(dir: &Path, min_free: u64) -> Result<(), BlobError> {
    if min_free == 0 {
        return Ok(());
    }
    match free_bytes(dir) {
        Some(free) if free < min_free => Err(BlobError::StorageFull(format!(
            "only {} MiB free on the registry's disk, under the {} MiB it keeps free \
             (storage.min_free_mib); uploads are refused until space is freed",
            free >> 20,
            min_free >> 20
        ))),
        _ => Ok(()),
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Appended> {
    let mut f = File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Appended { len, hasher })
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead, BlobError> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        let (mut file, size) = blocking(move || match File::open(&path) {
            Ok(f) => {
                let size = f.metadata()?.len();
                Ok((f, size))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound(d)),
            Err(e) => Err(e.into()),
        })
        .await?;
        let (start, len) = match range {
            Some(r) => (r.start, r.len().min(size.saturating_sub(r.start))),
            None => (0, size),
        };
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
        tokio::task::spawn_blocking(move || {
            let result = (|| -> io::Result<()> {
                file.seek(SeekFrom::Start(start))?;
                let mut left = len;
                while left > 0 {
                    let want = left.min(READ_CHUNK as u64);
                    // read_to_end on a Take reads straight into spare capacity: no memset.
                    let mut buf = Vec::with_capacity(want as usize);
                    (&mut file).take(want).read_to_end(&mut buf)?;
                    if buf.len() as u64 != want {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "blob shrank while being read",
                        ));
                    }
                    left -= want;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return Ok(()); // client went away
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(BlobRead {
            len,
            stream: Box::pin(stream),
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let dir = self.blob_dir(digest);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in fs::read_dir(&root)? {
                let alg = alg?;
                let alg_name = alg.file_name().to_string_lossy().into_owned();
                for prefix in fs::read_dir(alg.path())? {
                    for blob in fs::read_dir(prefix?.path())? {
                        let blob = blob?;
                        let s = format!("{alg_name}:{}", blob.file_name().to_string_lossy());
                        if let Ok(d) = s.parse::<Digest>() {
                            if blob.path().join("data").exists() {
                                out.push(d);
                            }
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn upload_create(&self, id: &str) -> Result<(), BlobError> {
        let dir = self.upload_dir(id)?;
        let (uploads, min_free) = (self.root.join("uploads"), self.min_free);
        blocking(move || {
            check_watermark(&uploads, min_free)?;
            fs::create_dir_all(&dir)?;
            File::create(dir.join("data"))?;
            Ok(())
        })
        .await
    }

    async fn upload_len(&self, id: &str) -> Result<Option<u64>, BlobError> {
        let path = self.upload_dir(id)?.join("data");
        match tokio::fs::metadata(path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        mut chunks: ChunkStream,
    ) -> Result<Appended, BlobError> {
        let path = self.upload_dir(id)?.join("data");
        let id_owned = id.to_string();
        let (uploads, min_free) = (self.root.join("uploads"), self.min_free);
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        // The writer thread owns the file and the hasher: hashing and disk writes overlap with
        // reading the next chunks from the socket.
        let writer = tokio::task::spawn_blocking(move || -> Result<Appended, BlobError> {
            let mut file = match OpenOptions::new().append(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BlobError::UploadNotFound(id_owned))
                }
                Err(e) => return Err(e.into()),
            };
            let len = file.metadata()?.len();
            if len != offset {
                return Err(BlobError::OffsetMismatch {
                    expected: len,
                    given: offset,
                });
            }
            check_watermark(&uploads, min_free)?;
            let mut hasher = hasher;
            let mut written = len;
            let mut since_writeback = 0u64;
            let mut since_check = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                if since_check >= WATERMARK_CHECK_EVERY {
                    check_watermark(&uploads, min_free)?;
                    since_check = 0;
                }
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
                since_check += chunk.len() as u64;
                since_writeback += chunk.len() as u64;
                if since_writeback >= WRITEBACK_EVERY {
                    start_writeback(&file, written - since_writeback, since_writeback);
                    since_writeback = 0;
                }
            }
            Ok(Appended {
                len: written,
                hasher,
            })
        });
        let mut client_error = None;
        while let Some(item) = chunks.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    client_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let appended = writer
            .await
            .map_err(|e| BlobError::Io(io::Error::other(format!("writer task failed: {e}"))))??;
        match client_error {
            Some(e) => Err(BlobError::Client(e)),
            None => Ok(appended),
        }
    }

    async fn upload_rehash(&self, id: &str, algorithm: Algorithm) -> Result<Appended, BlobError> {
        let path = self.upload_dir(id)?.join("data");
        let id = id.to_string();
        blocking(move || match hash_file(&path, algorithm) {
            Ok(a) => Ok(a),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::UploadNotFound(id)),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, BlobError> {
        let upload_dir = self.upload_dir(id)?;
        let blob_dir = self.blob_dir(digest);
        let id = id.to_string();
        blocking(move || {
            let staged = upload_dir.join("data");
            let file = match File::open(&staged) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BlobError::UploadNotFound(id))
                }
                Err(e) => return Err(e.into()),
            };
            let size = file.metadata()?.len();
            let target = blob_dir.join("data");
            if target.exists() {
                // Content-addressed: the existing copy is byte-identical.
                drop(file);
                fs::remove_dir_all(&upload_dir)?;
                return Ok(size);
            }
            file.sync_data()?;
            drop(file);
            fs::create_dir_all(&blob_dir)?;
            fs::rename(&staged, &target)?;
            fsync_dir(&blob_dir)?;
            if let Some(parent) = blob_dir.parent() {
                fsync_dir(parent)?;
            }
            fs::remove_dir_all(&upload_dir)?;
            Ok(size)
        })
        .await
    }

    async fn upload_abort(&self, id: &str) -> Result<(), BlobError> {
        let dir = self.upload_dir(id)?;
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn upload_list(&self) -> Result<Vec<String>, BlobError> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir)? {
                out.push(entry?.file_name().to_string_lossy().into_owned());
            }
            Ok(out)
        })
        .await
    }
}
