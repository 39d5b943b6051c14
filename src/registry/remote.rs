//! The registry's work with remote holds, without HTTP types (the handlers shape responses
//! from [`BlobSource`] and [`RemoteBlob`]):
//!
//! - **Uploads** whose hold is remote (ids start with [`REMOTE_UPLOAD_PREFIX`]): the POST
//!   opens a hold upload (`initiateUpload` with a temporary name, the digest comes at the
//!   end); every PATCH body, and the final PUT body, streams to the hold as the next part
//!   (`uploadPart`) while the registry hashes it too; the PUT compares the digest and only
//!   then asks the hold to `completeUpload` (a mismatch aborts the hold's upload: nothing
//!   becomes visible anywhere). Memory per upload is one chunk in flight; the session (hold,
//!   hold upload id, parts, length, hash state) is kept in redb after every part, so an
//!   upload survives a restart of this process. A failed part ends the upload (the hold
//!   cannot resume it): the client starts the blob again.
//! - **Blobs on a hold**: HEAD asks the hold (HEAD getBlob) and answers the size; GET answers
//!   a redirect to the presigned URL the hold redirects to, or to the hold's own getBlob
//!   when it serves bytes itself and is public; a private hold's bytes are fetched with the
//!   puller's service token and streamed through.
//! - **Manifests**: `notifyManifest` after the PDS write (before it when the hold's quota
//!   could refuse the push, so a refusal leaves nothing behind), and the hold of a manifest
//!   fetched from a PDS recorded for its blobs.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::federation::{Federation, HoldTarget};
use super::store::now_unix;
use super::{Registry, RegistryError, Result, UploadState};
use crate::blob::ChunkStream;
use crate::hold_client::{self as hc, BlobAt, BlobFetch, HoldCallError, UploadedPart};
use crate::oci::types::manifest::ParsedManifest;
use crate::oci::types::{Algorithm, Digest, Hasher, Name};

/// Upload ids of sessions that stream to a remote hold.
pub const REMOTE_UPLOAD_PREFIX: &str = "fed-";

pub fn is_remote_upload(id: &str) -> bool {
    id.starts_with(REMOTE_UPLOAD_PREFIX)
}

pub(super) struct RemoteSession {
    repo: String,
    pusher: String,
    hold: String,
    upload_id: String,
    len: u64,
    /// `None` once a part failed: the upload cannot go on.
    hasher: Option<Hasher>,
    parts: Vec<UploadedPart>,
    created_unix: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedSession {
    repo: String,
    pusher: String,
    hold: String,
    upload_id: String,
    len: u64,
    /// Hex of [`Hasher::to_state`].
    hasher: String,
    parts: Vec<UploadedPart>,
    created_unix: u64,
}

impl RemoteSession {
    fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&SavedSession {
            repo: self.repo.clone(),
            pusher: self.pusher.clone(),
            hold: self.hold.clone(),
            upload_id: self.upload_id.clone(),
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

    fn load(bytes: &[u8]) -> Option<RemoteSession> {
        let s: SavedSession = serde_json::from_slice(bytes).ok()?;
        Some(RemoteSession {
            repo: s.repo,
            pusher: s.pusher,
            hold: s.hold,
            upload_id: s.upload_id,
            len: s.len,
            hasher: hex::decode(&s.hasher)
                .ok()
                .and_then(|b| Hasher::from_state(&b)),
            parts: s.parts,
            created_unix: s.created_unix,
        })
    }

    fn check_start(&self, start: Option<u64>) -> Result<()> {
        super::check_chunk_start(self.len, start)
    }
}

type Cell = Arc<tokio::sync::Mutex<RemoteSession>>;

/// Remote upload sessions touched since start (the rest are in redb).
#[derive(Default)]
pub(super) struct RemoteSessions(std::sync::Mutex<HashMap<String, Cell>>);

impl RemoteSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cell>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a repository's blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// In the local blob store.
    Local { size: u64 },
    /// On a remote hold.
    Remote { hold: String, size: u64 },
}

/// What to answer for a blob on a remote hold.
pub enum RemoteBlob {
    /// Send the client there (presigned storage URL, or the hold's public getBlob).
    Redirect(String),
    /// The bytes of a private hold, fetched with the puller's token.
    Stream { len: u64, stream: ChunkStream },
    /// HEAD: it is there, this big.
    Present { size: u64 },
}

/// The `notifyManifest` input (atcr-spec 5.1) for a push.
pub fn notify_body(
    name: &Name,
    user: &str,
    digest: &Digest,
    parsed: &ParsedManifest,
    tag: Option<&str>,
) -> Value {
    let desc = |d: &crate::oci::types::manifest::Descriptor| json!({"digest": d.digest.to_string(), "size": d.size, "mediaType": d.media_type});
    let mut manifest = json!({
        "mediaType": parsed.media_type,
        "layers": parsed.layers.iter().filter(|l| !l.is_foreign()).map(desc).collect::<Vec<_>>(),
        "manifests": parsed.manifests.iter().map(|m| {
            let mut v = desc(m);
            if let Some(p) = &m.platform {
                v["platform"] = json!({"os": p.os, "architecture": p.architecture});
            }
            v
        }).collect::<Vec<_>>(),
    });
    if let Some(c) = &parsed.config {
        manifest["config"] = desc(c);
    }
    let mut body = json!({
        "repository": name.repository(),
        "userDid": user,
        "manifestDigest": digest.to_string(),
        "manifest": manifest,
        "operation": "push",
    });
    if let Some(t) = tag {
        body["tag"] = json!(t);
    }
    body
}

/// Bytes a push adds at most to its user's usage on a hold (no dedup: an upper bound).
fn push_bytes(parsed: &ParsedManifest) -> u64 {
    parsed
        .layers
        .iter()
        .filter(|l| !l.is_foreign())
        .map(|l| l.size)
        .sum()
}

impl Registry {
    pub(super) fn fed(&self) -> Option<&Arc<Federation>> {
        self.federation.get()
    }

    fn fed_required(&self) -> Result<&Arc<Federation>> {
        self.fed()
            .ok_or_else(|| RegistryError::Unsupported("federation is off on this registry".into()))
    }

    /// Where a push into `name` goes, and the pusher's DID (the name's identity; the OCI
    /// auth checked that it is the token's subject). Without federation: local, unknown.
    pub async fn push_target(&self, name: &Name) -> Result<(HoldTarget, Option<String>)> {
        let Some(fed) = self.fed() else {
            return Ok((HoldTarget::Local, None));
        };
        let pusher = fed
            .resolver()
            .resolve_did_of(name.identity())
            .await
            .map_err(|e| {
                RegistryError::Records(super::records::RecordsError::Unavailable(format!(
                    "cannot resolve {}: {e}",
                    name.identity()
                )))
            })?;
        let target = fed.target_for(&pusher).await?;
        Ok((target, Some(pusher)))
    }

    // ---- uploads ------------------------------------------------------------------------

    /// Opens an upload on `hold` for `pusher`: `initiateUpload`; a hold that refuses a
    /// non-member is asked once to enrol them (`requestCrew`, allowed on holds with
    /// `allowAllCrew`), then the upload is tried again.
    pub(super) async fn remote_upload_start(
        &self,
        name: &Name,
        pusher: &str,
        hold: &str,
        algorithm: Algorithm,
    ) -> Result<UploadState> {
        if algorithm != Algorithm::Sha256 {
            return Err(RegistryError::Unsupported(format!(
                "{} blobs cannot be pushed to a remote hold ({hold}); use sha256",
                algorithm.as_str()
            )));
        }
        let fed = self.fed_required()?;
        let ep = fed.endpoint(hold).await?;
        let temp = format!("uploads/temp-{}", uuid::Uuid::new_v4());
        let token = fed.token(pusher, hold, hc::INITIATE_UPLOAD).await?;
        let upload_id = match fed.client().initiate_upload(&ep, &token, &temp).await {
            Ok(id) => id,
            Err(e) if e.is_forbidden() => {
                let t = fed.token(pusher, hold, hc::REQUEST_CREW).await?;
                match fed.client().request_crew(&ep, &t).await {
                    Ok(v) if v["status"] == "created" => {
                        tracing::info!(%pusher, %hold, "joined the crew of the selected hold (requestCrew)");
                        fed.client().initiate_upload(&ep, &token, &temp).await?
                    }
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let id = format!("{REMOTE_UPLOAD_PREFIX}{}", uuid::Uuid::new_v4());
        let session = RemoteSession {
            repo: name.to_string(),
            pusher: pusher.to_string(),
            hold: hold.to_string(),
            upload_id,
            len: 0,
            hasher: Some(algorithm.hasher()),
            parts: Vec::new(),
            created_unix: now_unix(),
        };
        let (id2, saved) = (id.clone(), session.save());
        self.store
            .run(move |s| s.put_remote_upload(&id2, &saved))
            .await?;
        self.remote
            .map()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
        Ok(UploadState { id, len: 0 })
    }

    async fn remote_session(&self, name: &Name, id: &str) -> Result<Cell> {
        let cached = self.remote.map().get(id).cloned();
        let cell = match cached {
            Some(c) => c,
            None => {
                let id2 = id.to_string();
                let bytes = self
                    .store
                    .run(move |s| s.get_remote_upload(&id2))
                    .await?
                    .ok_or(RegistryError::UploadUnknown)?;
                let s = RemoteSession::load(&bytes).ok_or(RegistryError::UploadUnknown)?;
                self.remote
                    .map()
                    .entry(id.to_string())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(s)))
                    .clone()
            }
        };
        if cell.lock().await.repo != name.as_str() {
            return Err(RegistryError::UploadUnknown);
        }
        Ok(cell)
    }

    pub(super) async fn remote_upload_status(&self, name: &Name, id: &str) -> Result<UploadState> {
        let cell = self.remote_session(name, id).await?;
        let len = cell.lock().await.len;
        Ok(UploadState {
            id: id.to_string(),
            len,
        })
    }

    pub(super) async fn remote_upload_append(
        &self,
        name: &Name,
        id: &str,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: ChunkStream,
    ) -> Result<UploadState> {
        let cell = self.remote_session(name, id).await?;
        let mut s = cell.lock().await;
        s.check_start(start)?;
        self.remote_part(id, &mut s, declared_len, body).await?;
        Ok(UploadState {
            id: id.to_string(),
            len: s.len,
        })
    }

    /// Streams `body` to the hold as the next part, hashing it on the way.
    async fn remote_part(
        &self,
        id: &str,
        s: &mut RemoteSession,
        declared_len: Option<u64>,
        body: ChunkStream,
    ) -> Result<()> {
        if declared_len == Some(0) {
            return Ok(());
        }
        let fed = self.fed_required()?;
        let ep = fed.endpoint(&s.hold).await?;
        let token = fed.token(&s.pusher, &s.hold, hc::UPLOAD_PART).await?;
        let Some(hasher) = s.hasher.take() else {
            self.drop_remote_session(id, s, true).await;
            return Err(RegistryError::UploadUnknown);
        };
        // The hasher rides along with the bytes; `client_failed` tells a client that went
        // away from a hold that did.
        struct Tally {
            hasher: Option<Hasher>,
            sent: u64,
            client_failed: bool,
        }
        let tally = Arc::new(std::sync::Mutex::new(Tally {
            hasher: Some(hasher),
            sent: 0,
            client_failed: false,
        }));
        let t2 = tally.clone();
        let counted: ChunkStream = Box::pin(body.map(move |chunk| {
            let mut t = t2.lock().unwrap_or_else(|p| p.into_inner());
            match &chunk {
                Ok(b) => {
                    if let Some(h) = t.hasher.as_mut() {
                        h.update(b);
                    }
                    t.sent += b.len() as u64;
                }
                Err(_) => t.client_failed = true,
            }
            chunk
        }));
        let part = s.parts.len() as u32 + 1;
        let result = fed
            .client()
            .upload_part(&ep, &token, &s.upload_id, part, counted, declared_len)
            .await;
        let (hasher, sent, client_failed) = {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            (t.hasher.take(), t.sent, t.client_failed)
        };
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => {
                // The hold's upload cannot go on after a failed part: give it up.
                self.drop_remote_session(id, s, true).await;
                return Err(if client_failed {
                    RegistryError::UploadInvalid(
                        "the request body failed before the part reached the hold".into(),
                    )
                } else {
                    e.into()
                });
            }
        };
        if let Some(declared) = declared_len {
            if declared != sent {
                self.drop_remote_session(id, s, true).await;
                return Err(RegistryError::SizeMismatch {
                    declared,
                    actual: sent,
                });
            }
        }
        s.len += sent;
        s.hasher = hasher;
        s.parts.push(UploadedPart {
            part_number: part,
            etag,
        });
        let (id2, saved) = (id.to_string(), s.save());
        self.store
            .run(move |st| st.put_remote_upload(&id2, &saved))
            .await?;
        Ok(())
    }

    pub(super) async fn remote_upload_finish(
        &self,
        name: &Name,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: Option<ChunkStream>,
    ) -> Result<u64> {
        let cell = self.remote_session(name, id).await?;
        let mut s = cell.lock().await;
        s.check_start(start)?;
        if let Some(body) = body {
            self.remote_part(id, &mut s, declared_len, body).await?;
        }
        let Some(hasher) = s.hasher.take() else {
            self.drop_remote_session(id, &s, true).await;
            return Err(RegistryError::UploadUnknown);
        };
        if hasher.algorithm() != digest.algorithm() {
            self.drop_remote_session(id, &s, true).await;
            return Err(RegistryError::Unsupported(format!(
                "{} blobs cannot be pushed to a remote hold ({}); use sha256",
                digest.algorithm().as_str(),
                s.hold
            )));
        }
        let actual = hasher.finish();
        if &actual != digest {
            // Nothing was completed on the hold: its staged bytes go with the abort.
            self.drop_remote_session(id, &s, true).await;
            return Err(RegistryError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let fed = self.fed_required()?;
        let done = async {
            let ep = fed.endpoint(&s.hold).await?;
            let token = fed.token(&s.pusher, &s.hold, hc::COMPLETE_UPLOAD).await?;
            fed.client()
                .complete_upload(&ep, &token, &s.upload_id, &digest.to_string(), &s.parts)
                .await?;
            Ok::<(), RegistryError>(())
        }
        .await;
        if let Err(e) = done {
            self.drop_remote_session(id, &s, true).await;
            return Err(e);
        }
        let (id2, repo, d, hold, len) = (
            id.to_string(),
            s.repo.clone(),
            digest.clone(),
            s.hold.clone(),
            s.len,
        );
        self.store
            .run(move |st| st.finish_remote_upload(&id2, &repo, &d, &hold, len))
            .await?;
        self.remote.map().remove(id);
        Ok(s.len)
    }

    pub(super) async fn remote_upload_cancel(&self, name: &Name, id: &str) -> Result<()> {
        let cell = self.remote_session(name, id).await?;
        let s = cell.lock().await;
        self.drop_remote_session(id, &s, true).await;
        Ok(())
    }

    /// Forgets a session; with `abort`, tells the hold first (best effort: its own expiry
    /// removes what an unreachable hold keeps).
    async fn drop_remote_session(&self, id: &str, s: &RemoteSession, abort: bool) {
        if abort {
            if let Some(fed) = self.fed() {
                let r = async {
                    let ep = fed.endpoint(&s.hold).await?;
                    let token = fed.token(&s.pusher, &s.hold, hc::ABORT_UPLOAD).await?;
                    fed.client().abort_upload(&ep, &token, &s.upload_id).await?;
                    Ok::<(), RegistryError>(())
                }
                .await;
                if let Err(e) = r {
                    tracing::warn!(upload = id, hold = %s.hold, error = %e, "could not abort the hold's upload");
                }
            }
        }
        let id2 = id.to_string();
        if let Err(e) = self
            .store
            .run(move |st| st.delete_remote_upload(&id2))
            .await
        {
            tracing::warn!(upload = id, error = %e, "could not forget a remote upload session");
        }
        self.remote.map().remove(id);
    }

    /// Remote sessions older than the upload TTL are aborted. Returns how many.
    pub(super) async fn cleanup_remote_uploads(&self) -> Result<usize> {
        let cutoff = now_unix().saturating_sub(self.limits.upload_ttl.as_secs());
        let rows = self.store.run(|s| s.list_remote_uploads()).await?;
        let mut removed = 0;
        for (id, bytes) in rows {
            match RemoteSession::load(&bytes) {
                Some(s) if s.created_unix >= cutoff => {}
                Some(s) => {
                    self.drop_remote_session(&id, &s, true).await;
                    removed += 1;
                }
                None => {
                    let id2 = id.clone();
                    self.store
                        .run(move |st| st.delete_remote_upload(&id2))
                        .await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    // ---- blobs --------------------------------------------------------------------------

    /// Where `name`'s blob is: linked locally (checked against the local hold's read rules
    /// for `puller`), or on the remote hold the repository's manifests or uploads named.
    pub async fn blob_source(
        &self,
        name: &Name,
        digest: &Digest,
        puller: Option<&str>,
    ) -> Result<BlobSource> {
        let (repo, d) = (name.to_string(), digest.clone());
        let (local, remote) = self
            .store
            .run(move |s| Ok((s.blob_link(&repo, &d)?, s.blob_hold(&repo, &d)?)))
            .await?;
        if let Some(size) = local {
            if let Some(h) = self.push_hook() {
                h.may_read(puller).await.map_err(|r| match r {
                    super::push_hook::ReadRefusal::AuthRequired(m) => {
                        RegistryError::AuthRequired(m)
                    }
                    super::push_hook::ReadRefusal::Denied(m) => RegistryError::Denied(m),
                })?;
            }
            return Ok(BlobSource::Local { size });
        }
        match remote {
            Some((hold, size)) if self.fed().is_some() => Ok(BlobSource::Remote { hold, size }),
            _ => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// A blob on remote hold `hold`: its size (HEAD) or where to get it (GET).
    pub async fn remote_blob(
        &self,
        digest: &Digest,
        hold: &str,
        size: u64,
        puller: Option<&str>,
        head: bool,
    ) -> Result<RemoteBlob> {
        let fed = self.fed_required()?;
        let ep = fed.endpoint(hold).await?;
        let d = digest.to_string();
        let client = fed.client();
        // A hold known to be private is asked with the puller's token right away; any other
        // first anonymously (public holds need none, and no PDS is asked for one).
        let mut token = match puller {
            Some(p) if fed.known_private(hold) => Some(fed.token(p, hold, hc::GET_BLOB).await?),
            _ => None,
        };
        let needs_token = |e: &HoldCallError| e.is_auth_required() || e.is_forbidden();
        let missing = || RegistryError::BlobUnknown(digest.clone());
        if head {
            let at = match client.blob_at(&ep, token.as_deref(), &d).await {
                Err(e) if needs_token(&e) && token.is_none() => {
                    fed.note_private(hold);
                    token = Some(self.pull_token(fed, puller, hold).await?);
                    client.blob_at(&ep, token.as_deref(), &d).await?
                }
                other => other?,
            };
            return match at {
                BlobAt::Missing => Err(missing()),
                BlobAt::Here { size: Some(s) } => Ok(RemoteBlob::Present { size: s }),
                _ => Ok(RemoteBlob::Present { size }),
            };
        }
        if token.is_none() && fed.known_streaming(hold) {
            // A public hold that serves bytes itself: a HEAD tells presence, and the client
            // is sent there (no GET started here only to be dropped).
            match client.blob_at(&ep, None, &d).await {
                Ok(BlobAt::Here { .. }) => {
                    return Ok(RemoteBlob::Redirect(client.blob_url(&ep, &d)?))
                }
                Ok(BlobAt::Redirect(u)) => return Ok(RemoteBlob::Redirect(u)),
                Ok(BlobAt::Missing) => return Err(missing()),
                Err(e) if needs_token(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let fetched = match client.get_blob(&ep, token.as_deref(), &d).await {
            Err(e) if needs_token(&e) && token.is_none() => {
                fed.note_private(hold);
                token = Some(self.pull_token(fed, puller, hold).await?);
                client.get_blob(&ep, token.as_deref(), &d).await?
            }
            other => other?,
        };
        match fetched {
            BlobFetch::Missing => Err(missing()),
            BlobFetch::Redirect(u) => Ok(RemoteBlob::Redirect(u)),
            // A public hold serving bytes itself: the client fetches them there (this
            // answer's body is dropped unread, which closes that connection).
            BlobFetch::Stream { .. } if token.is_none() => {
                fed.note_streaming(hold);
                Ok(RemoteBlob::Redirect(client.blob_url(&ep, &d)?))
            }
            BlobFetch::Stream { len, stream } => Ok(RemoteBlob::Stream {
                len: len.unwrap_or(size),
                stream,
            }),
        }
    }

    async fn pull_token(
        &self,
        fed: &Federation,
        puller: Option<&str>,
        hold: &str,
    ) -> Result<String> {
        let Some(p) = puller else {
            return Err(RegistryError::AuthRequired(format!(
                "hold {hold} is private: log in (docker login) as a member of its crew to pull"
            )));
        };
        fed.token(p, hold, hc::GET_BLOB).await
    }

    /// Mount on a remote hold: the blob is known there for `from` (or the hold has it, the
    /// digest being the proof, as for local mounts without `from`).
    pub(super) async fn remote_mount(
        &self,
        name: &Name,
        digest: &Digest,
        from: Option<&Name>,
        pusher: &str,
        hold: &str,
    ) -> Result<bool> {
        let fed = self.fed_required()?;
        let from_row = match from {
            Some(f) => {
                let (repo, d) = (f.to_string(), digest.clone());
                self.store.run(move |s| s.blob_hold(&repo, &d)).await?
            }
            None => None,
        };
        let known = from_row.filter(|(h, _)| h == hold).map(|(_, s)| s);
        let ep = fed.endpoint(hold).await?;
        let token = fed.token(pusher, hold, hc::GET_BLOB).await?;
        let size = match fed
            .client()
            .blob_at(&ep, Some(&token), &digest.to_string())
            .await?
        {
            BlobAt::Missing => None,
            BlobAt::Here { size: Some(s) } => Some(s),
            BlobAt::Here { size: None } | BlobAt::Redirect(_) => known,
        };
        let Some(size) = size else { return Ok(false) };
        let (repo, blobs, h) = (
            name.to_string(),
            vec![(digest.clone(), size)],
            hold.to_string(),
        );
        self.store
            .run(move |s| s.link_remote_blobs(&repo, &blobs, &h))
            .await?;
        Ok(true)
    }

    // ---- manifests ----------------------------------------------------------------------

    /// Whether `hold` must hear of the push before the PDS write: only when its quota could
    /// refuse it (used + every layer's size > limit). A hold that cannot say is asked after.
    pub(super) async fn remote_notify_first(
        &self,
        pusher: &str,
        hold: &str,
        parsed: &ParsedManifest,
    ) -> Result<bool> {
        let fed = self.fed_required()?;
        let ep = fed.endpoint(hold).await?;
        let token = fed.token(pusher, hold, hc::GET_QUOTA).await?;
        match fed.client().get_quota(&ep, &token, pusher).await {
            Ok(q) => Ok(q
                .limit
                .is_some_and(|limit| q.total_size.saturating_add(push_bytes(parsed)) > limit)),
            Err(e) => {
                tracing::debug!(%hold, error = %e, "no quota answer; notifying after the PDS write");
                Ok(false)
            }
        }
    }

    /// `notifyManifest` on the remote hold (layer records, stats, quota).
    pub(super) async fn remote_notify(&self, pusher: &str, hold: &str, body: &Value) -> Result<()> {
        let fed = self.fed_required()?;
        let ep = fed.endpoint(hold).await?;
        let token = fed.token(pusher, hold, hc::NOTIFY_MANIFEST).await?;
        fed.client().notify_manifest(&ep, &token, body).await?;
        Ok(())
    }

    /// A manifest fetched from a PDS: its blobs are where its `holdDid` says. A remote hold
    /// gets a `blob_holds` row per config/layer blob; the local hold (or no `holdDid`: an
    /// older record) links the blobs the local store has (pushed through another AppView).
    pub(super) async fn note_manifest_hold(
        &self,
        name: &Name,
        parsed: &ParsedManifest,
        hold_did: Option<&str>,
    ) -> Result<()> {
        let blobs: Vec<(Digest, u64)> = parsed
            .required_blobs()
            .map(|d| (d.digest.clone(), d.size))
            .collect();
        if blobs.is_empty() {
            return Ok(());
        }
        let repo = name.to_string();
        match (self.fed(), hold_did) {
            (Some(fed), Some(h)) if h != fed.local_did() => {
                let h = h.to_string();
                self.store
                    .run(move |s| {
                        let unlinked: Vec<(Digest, u64)> = blobs
                            .into_iter()
                            .filter(|(d, _)| matches!(s.blob_link(&repo, d), Ok(None)))
                            .collect();
                        s.link_remote_blobs(&repo, &unlinked, &h)
                    })
                    .await?;
            }
            _ => {
                for (d, _) in blobs {
                    let (r, d2) = (repo.clone(), d.clone());
                    if self
                        .store
                        .run(move |s| s.blob_link(&r, &d2))
                        .await?
                        .is_some()
                    {
                        continue;
                    }
                    let _reachable = self.gc_guard.read().await;
                    if let Some(size) = self.blobs.stat(&d).await? {
                        let r = repo.clone();
                        self.store.run(move |s| s.link_blob(&r, &d, size)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Which hold a manifest's blobs are on: the push's `target` when every config/layer blob
    /// is there; else the one place holding all of them (an image stays where its blobs
    /// are, e.g. a new tag for layers pushed before the user changed holds); else the first
    /// blob missing on the target is unknown.
    pub(super) async fn blobs_hold(
        &self,
        name: &Name,
        parsed: &ParsedManifest,
        target: &HoldTarget,
    ) -> Result<HoldTarget> {
        let repo = name.to_string();
        let blobs: Vec<Digest> = parsed.required_blobs().map(|d| d.digest.clone()).collect();
        let places: Vec<(Digest, bool, Option<String>)> = self
            .store
            .run(move |s| {
                blobs
                    .into_iter()
                    .map(|d| {
                        let local = s.blob_link(&repo, &d)?.is_some();
                        let remote = s.blob_hold(&repo, &d)?.map(|(h, _)| h);
                        Ok((d, local, remote))
                    })
                    .collect()
            })
            .await?;
        choose_blobs_hold(&places, target)
    }
}

/// The pure rule behind [`Registry::blobs_hold`]: `places` lists each blob with whether it
/// is linked locally and which remote hold keeps it.
pub fn choose_blobs_hold(
    places: &[(Digest, bool, Option<String>)],
    target: &HoldTarget,
) -> Result<HoldTarget> {
    let on = |t: &HoldTarget, (_, local, remote): &(Digest, bool, Option<String>)| match t {
        HoldTarget::Local => *local,
        HoldTarget::Remote(h) => remote.as_deref() == Some(h.as_str()),
    };
    if places.iter().all(|p| on(target, p)) {
        return Ok(target.clone());
    }
    let mut candidates = vec![HoldTarget::Local];
    if let Some(h) = places.first().and_then(|p| p.2.clone()) {
        candidates.push(HoldTarget::Remote(h));
    }
    for c in candidates {
        if c != *target && places.iter().all(|p| on(&c, p)) {
            return Ok(c);
        }
    }
    let first_missing = places
        .iter()
        .find(|p| !on(target, p))
        .map(|p| p.0.clone())
        .expect("some blob is not on the target");
    Err(RegistryError::ManifestBlobUnknown(first_missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn a_manifest_lives_where_its_blobs_are() {
        let b = HoldTarget::Remote("did:web:b".into());
        let c = HoldTarget::Remote("did:web:c".into());
        let on_b = |x| (d(x), false, Some("did:web:b".to_string()));
        let local = |x| (d(x), true, None);
        // All on the target.
        assert_eq!(choose_blobs_hold(&[on_b("1"), on_b("2")], &b).unwrap(), b);
        assert_eq!(choose_blobs_hold(&[], &b).unwrap(), b);
        // All on another single place: that place.
        assert_eq!(
            choose_blobs_hold(&[local("1"), local("2")], &b).unwrap(),
            HoldTarget::Local
        );
        assert_eq!(
            choose_blobs_hold(&[on_b("1")], &HoldTarget::Local).unwrap(),
            b
        );
        // Split across places: the first blob missing on the target is unknown.
        let e = choose_blobs_hold(&[on_b("1"), local("2")], &c).unwrap_err();
        assert!(matches!(e, RegistryError::ManifestBlobUnknown(x) if x == d("1")));
        let e = choose_blobs_hold(&[on_b("1"), local("2")], &b).unwrap_err();
        assert!(matches!(e, RegistryError::ManifestBlobUnknown(x) if x == d("2")));
        // A blob both local and on b counts for both.
        let both = (d("3"), true, Some("did:web:b".to_string()));
        assert_eq!(
            choose_blobs_hold(&[both.clone(), on_b("1")], &b).unwrap(),
            b
        );
        assert_eq!(
            choose_blobs_hold(&[both, local("1")], &b).unwrap(),
            HoldTarget::Local
        );
    }

    #[test]
    fn notify_bodies() {
        let (da, db, dc) = (d("a"), d("b"), d("c"));
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
          "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"{da}"}},
          "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":3,"digest":"{db}"}},
                    {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","size":4,"digest":"{dc}"}}]}}"#
        );
        let bytes = text.as_bytes();
        let parsed = crate::oci::types::manifest::parse_manifest(
            "application/vnd.oci.image.manifest.v1+json",
            bytes,
        )
        .unwrap();
        let name: Name = "alice.test/tools/app".parse().unwrap();
        let digest = Digest::sha256_of(bytes);
        let b = notify_body(&name, "did:plc:alice", &digest, &parsed, Some("v1"));
        assert_eq!(b["repository"], "tools/app");
        assert_eq!(b["userDid"], "did:plc:alice");
        assert_eq!(b["manifestDigest"], digest.to_string());
        assert_eq!(b["operation"], "push");
        assert_eq!(b["tag"], "v1");
        assert_eq!(b["manifest"]["config"]["digest"], da.to_string());
        // Foreign/non-distributable layers are not the hold's to keep.
        assert_eq!(b["manifest"]["layers"].as_array().unwrap().len(), 1);
        assert_eq!(push_bytes(&parsed), 3);
        assert!(notify_body(&name, "did:plc:alice", &digest, &parsed, None)
            .get("tag")
            .is_none());
    }

    #[test]
    fn sessions_round_trip() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"abc");
        let s = RemoteSession {
            repo: "alice.test/app".into(),
            pusher: "did:plc:alice".into(),
            hold: "did:web:b".into(),
            upload_id: "hold-1".into(),
            len: 3,
            hasher: Some(h),
            parts: vec![UploadedPart {
                part_number: 1,
                etag: "1-0-3".into(),
            }],
            created_unix: 7,
        };
        let back = RemoteSession::load(&s.save()).unwrap();
        assert_eq!(back.len, 3);
        assert_eq!(back.parts, s.parts);
        assert!(back.check_start(Some(3)).is_ok());
        assert!(back.check_start(Some(2)).is_err());
        assert_eq!(back.hasher.unwrap().finish(), Digest::sha256_of(b"abc"));
        assert!(is_remote_upload("fed-123") && !is_remote_upload("123"));
    }
}
