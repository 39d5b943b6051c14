//! Multipart uploads of the hold API (`initiateUpload`, `getPartUploadUrl`, `uploadPart`,
//! `completeUpload`, `abortUpload`) on the [`crate::blob::BlobStore`] staged uploads.
//!
//! Parts stream through the blob store's writer (S3: its own bounded multipart upload;
//! filesystem: the staged file), hashed as they are written, so `completeUpload` verifies
//! the digest without re-reading and nothing is visible under the digest before that.
//! Because the hash runs over the bytes in order, parts must arrive in order (1, 2, 3...);
//! `getPartUploadUrl` therefore always names our own `uploadPart` endpoint, also for S3: a
//! presigned S3 part URL would send the bytes around the hasher and cost a full re-read of
//! the object to verify the digest.
//!
//! Sessions (owner DID, digest, length, serialized hash state, parts) are kept in memory
//! and in the hold's redb (`uploads` table), written after every part, so an upload goes on
//! after a restart ([`super::HoldService::restore_uploads`]). They expire when idle for
//! `registry.upload_idle_minutes` or older than [`SESSION_TTL`] (swept by the server's
//! housekeeping timer, [`super::HoldService::expire_uploads`]); staged data without a
//! session is removed at start. Each caller DID and each client address may hold
//! `registry.max_uploads_per_identity` / `max_uploads_per_address` sessions. A failed part
//! (the body broke off or was too slow, the disk is full) removes the upload at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HoldApiError, HoldService, Result};
use crate::blob::ChunkStream;
use crate::oci::types::{Digest, Hasher};
use crate::pds::permissions::Action;

pub use crate::blob::HOLD_UPLOAD_ID_PREFIX as UPLOAD_ID_PREFIX;
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most open upload sessions at once (all users).
pub const MAX_SESSIONS: usize = 1024;

/// Upload caps and idle expiry (the same `[registry]` keys as the OCI uploads).
#[derive(Debug, Clone)]
pub struct UploadLimits {
    pub idle: Duration,
    pub per_identity: usize,
    pub per_address: usize,
}

impl UploadLimits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        UploadLimits {
            idle: Duration::from_secs(c.registry.upload_idle_minutes * 60),
            per_identity: c.registry.max_uploads_per_identity,
            per_address: c.registry.max_uploads_per_address,
        }
    }
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits::from_config(&crate::config::Config::default())
    }
}
/// Most parts of one upload (S3's own limit).
pub const MAX_PARTS: u32 = 10_000;
/// Largest part (S3's own limit); a longer body is cut off with `UploadFailed`.
pub const MAX_PART_BYTES: u64 = 5 << 30;

struct Session {
    owner: String,
    address: Option<String>,
    /// `None`: started under a temporary name; `completeUpload` names the digest.
    digest: Option<Digest>,
    len: u64,
    /// `None` after a failed part: the stream state is unknown, the upload must be aborted.
    hasher: Option<Hasher>,
    parts: Vec<(u32, String)>,
    created_unix: u64,
}

/// The persisted form of a [`Session`].
#[derive(Serialize, Deserialize)]
struct SavedSession {
    owner: String,
    #[serde(default)]
    address: Option<String>,
    digest: String,
    len: u64,
    /// Hex of [`Hasher::to_state`]; empty when the hash state is lost.
    hasher: String,
    parts: Vec<(u32, String)>,
    created_unix: u64,
}

impl Session {
    fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&SavedSession {
            owner: self.owner.clone(),
            address: self.address.clone(),
            digest: self
                .digest
                .as_ref()
                .map(Digest::to_string)
                .unwrap_or_default(),
            len: self.len,
            hasher: self
                .hasher
                .as_ref()
                .map(|h| hex::encode(h.to_state()))
                .unwrap_or_default(),
            parts: self.parts.clone(),
            created_unix: self.created_unix,
        })
        .unwrap_or_default()
    }

    fn load(bytes: &[u8]) -> Option<Session> {
        let s: SavedSession = serde_json::from_slice(bytes).ok()?;
        Some(Session {
            owner: s.owner,
            address: s.address,
            digest: if s.digest.is_empty() {
                None
            } else {
                Some(s.digest.parse().ok()?)
            },
            len: s.len,
            hasher: hex::decode(&s.hasher)
                .ok()
                .and_then(|b| Hasher::from_state(&b)),
            parts: s.parts,
            created_unix: s.created_unix,
        })
    }
}

pub(super) fn unix_now() -> u64 {
    crate::pds::service_auth::unix_now()
}

/// One open upload: who holds it (readable without its lock, for the caps) and its state.
struct Open {
    owner: String,
    address: Option<String>,
    created_unix: u64,
    last_active_unix: std::sync::atomic::AtomicU64,
    state: tokio::sync::Mutex<Session>,
}

impl Open {
    fn new(s: Session) -> Arc<Open> {
        Arc::new(Open {
            owner: s.owner.clone(),
            address: s.address.clone(),
            created_unix: s.created_unix,
            last_active_unix: std::sync::atomic::AtomicU64::new(unix_now()),
            state: tokio::sync::Mutex::new(s),
        })
    }

    fn touch(&self) {
        self.last_active_unix
            .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Uploads {
    sessions: Mutex<HashMap<String, Arc<Open>>>,
}

impl Uploads {
    fn get(&self, id: &str) -> Option<Arc<Open>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartRef {
    #[serde(rename = "partNumber")]
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartUrl {
    pub url: String,
    pub method: &'static str,
    pub headers: HashMap<String, String>,
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse::<Digest>()
        .map_err(|e| HoldApiError::InvalidDigest(format!("{s:?}: {e}")))
}

/// Prefix of the temporary name an AppView gives `initiateUpload` when the digest is not
/// known yet (an OCI chunked upload learns it at the end, as atcr.io's AppView does).
pub const TEMP_UPLOAD_PREFIX: &str = "uploads/temp-";

/// `initiateUpload`'s digest: a digest, or a temporary name (`None`; hashed as sha256).
fn parse_initial_digest(s: &str) -> Result<Option<Digest>> {
    match s.strip_prefix(TEMP_UPLOAD_PREFIX) {
        Some(rest)
            if !rest.is_empty()
                && s.len() <= 128
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(None)
        }
        _ => parse_digest(s).map(Some),
    }
}

impl HoldService {
    async fn session(&self, caller: &str, id: &str) -> Result<Arc<Open>> {
        let cell = self.uploads.get(id).ok_or(HoldApiError::InvalidUploadId)?;
        // Someone else's upload id is as unknown as a made-up one.
        if cell.owner == caller {
            cell.touch();
            Ok(cell)
        } else {
            Err(HoldApiError::InvalidUploadId)
        }
    }

    /// `initiateUpload {digest}` -> upload id. `address` is the client's (per-address
    /// cap), `None` when exempt.
    pub async fn initiate_upload(
        &self,
        caller: Option<&str>,
        digest: &str,
        address: Option<&str>,
    ) -> Result<String> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        let digest = parse_initial_digest(digest)?;
        self.expire_uploads().await;
        let id = format!("{UPLOAD_ID_PREFIX}{}", uuid::Uuid::new_v4());
        let limits = &self.upload_limits;
        {
            let mut map = self
                .uploads
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mine = map.values().filter(|o| o.owner == caller).count();
            let here = map
                .values()
                .filter(|o| address.is_some() && o.address.as_deref() == address)
                .count();
            let idle_minutes = limits.idle.as_secs() / 60;
            if mine >= limits.per_identity {
                return Err(HoldApiError::TooManyUploads(format!(
                    "{caller} already has {mine} uploads open on this hold; finish or abort \
                     some (abandoned ones expire after {idle_minutes} minutes)"
                )));
            }
            if here >= limits.per_address {
                return Err(HoldApiError::TooManyUploads(format!(
                    "your address already has {here} uploads open on this hold; finish or \
                     abort some (abandoned ones expire after {idle_minutes} minutes)"
                )));
            }
            if map.len() >= MAX_SESSIONS {
                return Err(HoldApiError::TooManyUploads(
                    "too many uploads in progress on this hold; retry later".into(),
                ));
            }
            map.insert(
                id.clone(),
                Open::new(Session {
                    owner: caller.to_string(),
                    address: address.map(str::to_string),
                    hasher: Some(
                        digest
                            .as_ref()
                            .map_or(crate::oci::types::Algorithm::Sha256, Digest::algorithm)
                            .hasher(),
                    ),
                    digest,
                    len: 0,
                    parts: Vec::new(),
                    created_unix: unix_now(),
                }),
            );
        }
        if let Err(e) = self.blobs.upload_create(&id).await {
            self.uploads.remove(&id);
            let _ = self.blobs.upload_abort(&id).await;
            return Err(e.into());
        }
        if let Some(cell) = self.uploads.get(&id) {
            let state = cell.state.lock().await.save();
            self.persist(&id, Some(state)).await?;
        }
        Ok(id)
    }

    /// `getPartUploadUrl {uploadId, partNumber}`: where to PUT the part (our `uploadPart`).
    pub async fn part_upload_url(
        &self,
        caller: Option<&str>,
        id: &str,
        part: u32,
        base_url: &str,
    ) -> Result<PartUrl> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        let cell = self.session(caller, id).await?;
        let s = cell.state.lock().await;
        check_next_part(&s, part)?;
        let mut headers = HashMap::new();
        headers.insert("X-Upload-Id".to_string(), id.to_string());
        headers.insert("X-Part-Number".to_string(), part.to_string());
        Ok(PartUrl {
            url: format!(
                "{}/xrpc/io.atcr.hold.uploadPart?uploadId={id}&partNumber={part}",
                base_url.trim_end_matches('/')
            ),
            method: "PUT",
            headers,
        })
    }

    /// `uploadPart`: streams the body into the staged upload. Returns the part's etag.
    pub async fn upload_part(
        &self,
        caller: Option<&str>,
        id: &str,
        part: u32,
        body: ChunkStream,
    ) -> Result<String> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        let cell = self.session(caller, id).await?;
        let mut s = cell.state.lock().await;
        check_next_part(&s, part)?;
        let hasher = s.hasher.take().ok_or_else(|| {
            HoldApiError::UploadFailed("an earlier part failed; abort this upload".into())
        })?;
        let before = s.len;
        let body = capped(body, MAX_PART_BYTES);
        let appended = match self.blobs.upload_append(id, before, hasher, body).await {
            Ok(a) => a,
            Err(e) => {
                // The hash state is gone: the upload is removed at once, staged bytes and all.
                self.discard(id).await;
                return Err(match e {
                    full @ crate::blob::BlobError::StorageFull(_) => HoldApiError::Blob(full),
                    other => HoldApiError::UploadFailed(format!(
                        "part {part}: {other}; the upload was removed, start it again"
                    )),
                });
            }
        };
        s.len = appended.len;
        s.hasher = Some(appended.hasher);
        // Opaque to the client; tells parts apart and binds the list sent to completeUpload
        // to what was actually written.
        let etag = format!("{part}-{before:x}-{:x}", appended.len - before);
        s.parts.push((part, etag.clone()));
        self.persist(id, Some(s.save())).await?;
        cell.touch();
        Ok(etag)
    }

    /// `completeUpload {uploadId, digest, parts}`: checks the part list and the digest, then
    /// makes the blob visible. A digest mismatch drops the staged bytes.
    pub async fn complete_upload(
        &self,
        caller: Option<&str>,
        id: &str,
        digest: &str,
        parts: &[PartRef],
    ) -> Result<Digest> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        let claimed = parse_digest(digest)?;
        let cell = self.session(caller, id).await?;
        let mut s = cell.state.lock().await;
        match &s.digest {
            Some(started) if *started != claimed => {
                return Err(HoldApiError::InvalidDigest(format!(
                    "upload was started for {started}, completed as {claimed}"
                )));
            }
            Some(_) => {}
            None if s
                .hasher
                .as_ref()
                .is_some_and(|h| h.algorithm() != claimed.algorithm()) =>
            {
                return Err(HoldApiError::InvalidDigest(format!(
                    "an upload started under a temporary name is hashed as sha256, not {}",
                    claimed.algorithm().as_str()
                )));
            }
            None => {}
        }
        let written: Vec<PartRef> = s
            .parts
            .iter()
            .map(|(n, e)| PartRef {
                part_number: *n,
                etag: e.clone(),
            })
            .collect();
        let mut sent = parts.to_vec();
        sent.sort_by_key(|p| p.part_number);
        if sent != written {
            return Err(HoldApiError::MissingParts(format!(
                "the part list does not match the {} part(s) uploaded",
                written.len()
            )));
        }
        let hasher = s.hasher.take().ok_or_else(|| {
            HoldApiError::CompletionFailed("an earlier part failed; abort this upload".into())
        })?;
        let actual = hasher.finish();
        if actual != claimed {
            let _ = self.blobs.upload_abort(id).await;
            self.uploads.remove(id);
            self.persist(id, None).await?;
            return Err(HoldApiError::InvalidDigest(format!(
                "content digest is {actual}, not {claimed}; the upload was discarded"
            )));
        }
        let digest = claimed;
        // Noted before the commit, so a GC gathering its keep-list after this cannot miss it.
        self.note_completed(&digest).await?;
        if let Err(e) = self.blobs.upload_commit(id, &digest).await {
            self.discard(id).await;
            return Err(match e {
                full @ crate::blob::BlobError::StorageFull(_) => HoldApiError::Blob(full),
                other => HoldApiError::CompletionFailed(other.to_string()),
            });
        }
        self.uploads.remove(id);
        self.persist(id, None).await?;
        Ok(digest)
    }

    /// `abortUpload {uploadId}`.
    pub async fn abort_upload(&self, caller: Option<&str>, id: &str) -> Result<()> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        let cell = self.session(caller, id).await?;
        let _s = cell.state.lock().await;
        self.blobs.upload_abort(id).await?;
        self.uploads.remove(id);
        self.persist(id, None).await?;
        Ok(())
    }

    /// Remove an upload everywhere (staged bytes, memory, redb), logging what fails.
    async fn discard(&self, id: &str) {
        if let Err(e) = self.blobs.upload_abort(id).await {
            tracing::warn!(upload = id, error = %e, "could not remove a hold upload's bytes");
        }
        self.uploads.remove(id);
        if let Err(e) = self.persist(id, None).await {
            tracing::warn!(upload = id, error = %e, "could not forget a hold upload");
        }
    }

    /// Abort sessions idle past `registry.upload_idle_minutes` or older than
    /// [`SESSION_TTL`]; those a request is using right now stay. Returns how many went.
    pub async fn expire_uploads(&self) -> usize {
        self.expire_uploads_at(unix_now()).await
    }

    /// [`HoldService::expire_uploads`] as if the clock said `now` (unix seconds).
    pub async fn expire_uploads_at(&self, now: u64) -> usize {
        let idle = self.upload_limits.idle.as_secs();
        let stale: Vec<(String, Arc<Open>)> = self
            .uploads
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, o)| {
                let last = o
                    .last_active_unix
                    .load(std::sync::atomic::Ordering::Relaxed);
                now.saturating_sub(last) > idle
                    || now.saturating_sub(o.created_unix) > SESSION_TTL.as_secs()
            })
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect();
        let mut n = 0;
        for (id, open) in stale {
            let Ok(_busy) = open.state.try_lock() else {
                continue; // a part is streaming in: that is activity
            };
            self.discard(&id).await;
            n += 1;
        }
        n
    }

    /// Writes (`Some`) or forgets (`None`) a session's persisted state.
    async fn persist(&self, id: &str, state: Option<Vec<u8>>) -> Result<()> {
        let id = id.to_string();
        self.pds
            .store()
            .run(move |st| match state {
                Some(b) => st.put_upload(&id, &b),
                None => st.delete_upload(&id),
            })
            .await
            .map_err(|e| HoldApiError::Hold(e.into()))
    }

    /// At start: sessions saved by the last run come back when their staged data is still
    /// there with the saved length (otherwise the hash state cannot be trusted: the client
    /// must abort). Staged data of the hold without a session is removed. Returns
    /// (restored, removed).
    pub async fn restore_uploads(&self) -> Result<(usize, usize)> {
        let saved = self
            .pds
            .store()
            .run(|st| st.list_uploads())
            .await
            .map_err(|e| HoldApiError::Hold(e.into()))?;
        let mut restored = 0;
        for (id, bytes) in saved {
            let Some(mut session) = Session::load(&bytes) else {
                self.persist(&id, None).await?;
                continue;
            };
            match self.blobs.upload_len(&id).await? {
                None => {
                    self.persist(&id, None).await?;
                    continue;
                }
                Some(len) if len != session.len => session.hasher = None,
                Some(_) => {}
            }
            self.uploads
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Open::new(session));
            restored += 1;
        }
        let removed = self.drop_stale_uploads().await?;
        Ok((restored, removed))
    }

    /// Staged uploads of the hold left by an earlier process (their sessions were in
    /// memory): removed at start. Returns how many.
    pub async fn drop_stale_uploads(&self) -> Result<usize> {
        let mut n = 0;
        for id in self.blobs.upload_list().await? {
            if id.starts_with(UPLOAD_ID_PREFIX) && self.uploads.get(&id).is_none() {
                self.blobs.upload_abort(&id).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Ends the stream with an error once more than `max` bytes went through.
fn capped(body: ChunkStream, max: u64) -> ChunkStream {
    use futures_util::StreamExt;
    let mut seen = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > max {
            return Err(std::io::Error::other(format!(
                "part is larger than {max} bytes"
            )));
        }
        Ok(chunk)
    }))
}

fn check_next_part(s: &Session, part: u32) -> Result<()> {
    let next = s.parts.last().map(|(n, _)| n + 1).unwrap_or(1);
    if part == 0 || part > MAX_PARTS {
        return Err(HoldApiError::InvalidPartNumber(format!(
            "part numbers run from 1 to {MAX_PARTS}"
        )));
    }
    if part != next {
        return Err(HoldApiError::InvalidPartNumber(format!(
            "parts must be uploaded in order: expected part {next}, got {part}"
        )));
    }
    Ok(())
}
