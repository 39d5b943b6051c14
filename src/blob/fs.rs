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
//! All file work runs on blocking threads, never on the runtime: an append hashes and
//! writes batches of up to 1 MiB there while the next batch is read from the socket, so a
//! blocking thread is held only while it writes, never while a slow client sends (a
//! thousand slow uploads must not starve the blocking pool); a read reads 1 MiB chunks there,
//! one ahead of the socket.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Appended, BlobError, BlobRead, BlobStore, ChunkStream};
use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest, Hasher};

const READ_CHUNK: usize = 1 << 20;
/// Start writeback every this many bytes so the final fsync has little left to flush.
const WRITEBACK_EVERY: u64 = 16 << 20;
/// Bytes read from the socket while the previous batch is written (and the most one write
/// takes): memory per upload stays about twice this.
const BATCH_BYTES: usize = 512 << 10;

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

/// After a refusal (disk full), read and drop what the client is still sending, for a
/// moment: closing a socket with unread data resets it, and the reset can destroy our
/// answer in the client's receive buffer before it reads it.
async fn discard_rest(chunks: &mut ChunkStream) {
    let mut left: u64 = 64 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = chunks.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// The staged file and its hash state, moved to a blocking thread for each batch.
struct Writer {
    file: File,
    hasher: Hasher,
    written: u64,
    since_writeback: u64,
    since_check: u64,
}

impl Writer {
    fn write_batch(
        &mut self,
        chunks: &[Bytes],
        uploads: &Path,
        min_free: u64,
    ) -> Result<(), BlobError> {
        for chunk in chunks {
            if self.since_check >= WATERMARK_CHECK_EVERY {
                check_watermark(uploads, min_free)?;
                self.since_check = 0;
            }
            self.hasher.update(chunk);
            self.file.write_all(chunk)?;
            self.written += chunk.len() as u64;
            self.since_check += chunk.len() as u64;
            self.since_writeback += chunk.len() as u64;
            if self.since_writeback >= WRITEBACK_EVERY {
                start_writeback(
                    &self.file,
                    self.written - self.since_writeback,
                    self.since_writeback,
                );
                self.since_writeback = 0;
            }
        }
        Ok(())
    }
}

/// Read the next `want` bytes (after seeking to `seek`, if given) on a blocking thread.
fn read_chunk(
    mut file: File,
    seek: Option<u64>,
    want: u64,
) -> tokio::task::JoinHandle<io::Result<(File, Vec<u8>)>> {
    tokio::task::spawn_blocking(move || {
        if let Some(at) = seek {
            file.seek(SeekFrom::Start(at))?;
        }
        // read_to_end on a Take reads straight into spare capacity: no memset.
        let mut buf = Vec::with_capacity(want as usize);
        (&mut file).take(want).read_to_end(&mut buf)?;
        if buf.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shrank while being read",
            ));
        }
        Ok((file, buf))
    })
}

/// `StorageFull` when less than `min_free` bytes are free where `dir` lives.
fn check_watermark(dir: &Path, min_free: u64) -> Result<(), BlobError> {
    if min_free == 0 {
        return Ok(());
    }
    match free_bytes(dir) {
        Some(free) if free < min_free => Err(BlobError::StorageFull(format!(
            "only {:.1} MiB free on the registry's disk, under the {} MiB it keeps free \
             (storage.min_free_mib); uploads are refused until space is freed",
            free as f64 / (1u64 << 20) as f64,
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
        let (file, size) = blocking(move || match File::open(&path) {
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
        // One 1 MiB chunk is read ahead on a blocking thread while the previous one is sent;
        // no thread waits for a client that is slow to read.
        let first = (start > 0).then_some(start);
        let ahead = (len > 0).then(|| read_chunk(file, first, len.min(READ_CHUNK as u64)));
        let stream = futures_util::stream::unfold((ahead, len), |(ahead, left)| async move {
            let job = ahead?;
            let item = job
                .await
                .map_err(|e| io::Error::other(format!("read task failed: {e}")))
                .and_then(|r| r);
            match item {
                Ok((file, buf)) => {
                    let left = left - buf.len() as u64;
                    let next =
                        (left > 0).then(|| read_chunk(file, None, left.min(READ_CHUNK as u64)));
                    Some((Ok(Bytes::from(buf)), (next, left)))
                }
                Err(e) => Some((Err(e), (None, 0))),
            }
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
        let opened = {
            let uploads = uploads.clone();
            blocking(move || {
                let file = match OpenOptions::new().append(true).open(&path) {
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
                Ok(Writer {
                    file,
                    hasher,
                    written: len,
                    since_writeback: 0,
                    since_check: 0,
                })
            })
            .await
        };
        let opened = match opened {
            Ok(w) => w,
            Err(e) => {
                if matches!(e, BlobError::StorageFull(_)) {
                    discard_rest(&mut chunks).await;
                }
                return Err(e);
            }
        };
        // Hashing and disk writes of one batch run on a blocking thread while the next batch
        // is read from the socket; no thread is held while the client is slow to send.
        let mut idle_writer = Some(opened);
        let mut writing: Option<tokio::task::JoinHandle<Result<Writer, BlobError>>> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut ended = false;
        let mut client_error = None;
        loop {
            if writing.is_none() && !batch.is_empty() {
                let mut w = idle_writer.take().expect("the writer is idle");
                let (chunks_now, uploads, min_free) =
                    (std::mem::take(&mut batch), uploads.clone(), min_free);
                batch_bytes = 0;
                writing = Some(tokio::task::spawn_blocking(move || {
                    w.write_batch(&chunks_now, &uploads, min_free)?;
                    Ok(w)
                }));
            }
            if ended && writing.is_none() {
                break;
            }
            let room = !ended && batch_bytes < BATCH_BYTES;
            tokio::select! {
                item = chunks.next(), if room => match item {
                    Some(Ok(chunk)) if chunk.is_empty() => {}
                    Some(Ok(chunk)) => {
                        batch_bytes += chunk.len();
                        batch.push(chunk);
                    }
                    Some(Err(e)) => {
                        client_error = Some(e);
                        ended = true;
                        batch.clear(); // the upload failed: no point writing the rest
                    }
                    None => ended = true,
                },
                done = async { writing.as_mut().expect("checked").await }, if writing.is_some() => {
                    writing = None;
                    match done {
                        Ok(Ok(w)) => idle_writer = Some(w),
                        // The writer failed (disk full...): stop writing, report it.
                        Ok(Err(e)) => {
                            discard_rest(&mut chunks).await;
                            return Err(e);
                        }
                        Err(e) => {
                            return Err(BlobError::Io(io::Error::other(format!(
                                "writer task failed: {e}"
                            ))))
                        }
                    }
                }
            }
        }
        let w = idle_writer.expect("the last write finished");
        match client_error {
            Some(e) => Err(BlobError::Client(e)),
            None => Ok(Appended {
                len: w.written,
                hasher: w.hasher,
            }),
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
