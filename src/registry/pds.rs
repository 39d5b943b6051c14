//! [`ManifestRecords`] on the owner's PDS: writes use the owner's PDS session (kept sealed
//! on this host by [`crate::auth::sessions`], refreshed on `ExpiredToken`); reads are
//! public XRPC calls (`getRecord`, `listRecords`, `sync.getBlob`).
//!
//! Manifest records have TID keys, one per (repository, digest). Their keys are remembered
//! in the registry's store (`manifest_rkeys`), so a re-push reuses its record without a
//! lookup; readers that do not know a key find the record by its fields: the remembered
//! key, then the index (records other AppViews wrote, seen on the firehose), then the old
//! digest-hex key, then a bounded `listRecords` scan.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::records::{
    at_uri, description_annotation, legacy_digest_of_rkey, manifest_record, now_datetime,
    oci_client_of, page_record, page_rkey, parse_at_uri, profile_record, tag_record, tag_rkey,
    Fetched, ManifestRecords, RecordsError, Written, MANIFEST_NSID, PAGE_NSID, PROFILE_NSID,
    TAG_NSID,
};
use super::store::MetaStore;
use crate::atproto::identity::{Identity, Resolver};
use crate::atproto::repo::Tid;
use crate::atproto::xrpc::{Record, XrpcClient, XrpcError};
use crate::auth::sessions::{PdsAgent, SessionError, SessionStore};
use crate::oci::types::{Digest, Name, Reference};

/// Lookups by fields scan at most this many `listRecords` pages (of 100).
const MAX_SCAN_PAGES: usize = 10;

pub struct PdsRecords {
    resolver: Arc<Resolver>,
    sessions: Arc<SessionStore>,
    store: Arc<MetaStore>,
    hold_did: String,
    /// This registry's host (`registryDomain` of the sailor profiles it creates).
    registry_domain: String,
    /// Record keys of manifests written through other AppViews (firehose, backfill).
    index: OnceLock<crate::index::Index>,
    /// DID -> the client (`ociClient`, or "" for none known) whose login last brought the
    /// sailor profile up to date, so repeated logins (Docker asks for a token per push)
    /// do not read the profile from the PDS each time.
    profiles_checked: crate::ttl_map::TtlMap<String>,
}

fn unavailable(did: &str, e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Unavailable(format!("the PDS of {did} failed: {e}"))
}

fn session_err(did: &str, e: SessionError) -> RecordsError {
    match e {
        SessionError::Missing(_) | SessionError::Corrupt(_) | SessionError::Revoked(_) => {
            RecordsError::NoSession(format!(
                "no usable PDS session for {did} on this registry: log in again (docker login, \
                 docker-credential-atcr login, or sign in on the web)"
            ))
        }
        SessionError::Xrpc(x) => unavailable(did, x),
        SessionError::Store(s) => RecordsError::Unavailable(s.to_string()),
    }
}

fn store_err(e: super::store::StoreError) -> RecordsError {
    RecordsError::Unavailable(e.to_string())
}

/// The rkey of a record's AT-URI.
fn rkey_of(r: &Record) -> Option<String> {
    parse_at_uri(&r.uri).map(|(_, _, k)| k.to_string())
}

fn is_manifest(v: &Value, repository: &str, digest: &str) -> bool {
    v["repository"] == repository && v["digest"] == digest
}

/// What this registry last saw of a repository page (`repo_pages` in the store).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PageState {
    #[serde(rename = "userEdited")]
    user_edited: bool,
    /// sha256 hex of the description last written or seen.
    #[serde(rename = "descriptionSha256")]
    description_sha256: String,
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

impl PdsRecords {
    pub fn new(
        resolver: Arc<Resolver>,
        sessions: Arc<SessionStore>,
        store: Arc<MetaStore>,
        hold_did: String,
        registry_domain: String,
    ) -> Self {
        PdsRecords {
            resolver,
            sessions,
            store,
            hold_did,
            registry_domain,
            index: OnceLock::new(),
            profiles_checked: crate::ttl_map::TtlMap::new(
                std::time::Duration::from_secs(3600),
                10_000,
            ),
        }
    }

    /// Install the index (a second source of manifest record keys); done once at start.
    pub fn set_index(&self, index: crate::index::Index) {
        let _ = self.index.set(index);
    }

    async fn owner(&self, name: &Name) -> Result<Identity, RecordsError> {
        self.resolver.resolve(name.identity()).await.map_err(|e| {
            RecordsError::Unavailable(format!("cannot resolve {}: {e}", name.identity()))
        })
    }

    /// Creates `io.atcr.sailor.profile/self` with this registry's hold if it is missing; an
    /// existing profile gets `registryDomain` when it has none and `ociClient` when the
    /// login came from a known client other than the one it names. Written only on change.
    pub async fn ensure_profile(
        &self,
        s: &PdsAgent,
        user_agent: Option<&str>,
    ) -> Result<(), XrpcError> {
        let xrpc = self.resolver.xrpc();
        let did = &s.did;
        let client = user_agent.and_then(oci_client_of);
        let now = now_datetime();
        let Some(existing) = xrpc.get_record(&s.pds, did, PROFILE_NSID, "self").await? else {
            let rec = profile_record(&self.hold_did, &self.registry_domain, client, &now);
            xrpc.put_record(&s.pds, &s.auth, did, PROFILE_NSID, "self", &rec)
                .await?;
            return Ok(());
        };
        let mut rec = existing.value.clone();
        let mut changed = false;
        if rec.get("registryDomain").is_none() && !self.registry_domain.is_empty() {
            rec["registryDomain"] = Value::String(self.registry_domain.clone());
            changed = true;
        }
        if let Some(c) = client {
            if rec["ociClient"] != c {
                rec["ociClient"] = Value::String(c.into());
                changed = true;
            }
        }
        if !changed || !rec.is_object() {
            return Ok(());
        }
        rec["updatedAt"] = Value::String(now);
        let swap = existing.cid.unwrap_or_default();
        let put = if swap.is_empty() {
            xrpc.put_record(&s.pds, &s.auth, did, PROFILE_NSID, "self", &rec)
                .await
        } else {
            xrpc.put_record_swap(&s.pds, &s.auth, did, PROFILE_NSID, "self", &rec, &swap)
                .await
        };
        match put {
            Ok(_) => Ok(()),
            // Changed meanwhile (another login or AppView): that write wins.
            Err(e) if e.error_name() == Some("InvalidSwap") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tag record of (repository, tag): our deterministic key first, else a scan
    /// matching the fields (records written by another AppView). `(rkey, value)`.
    async fn find_tag(
        &self,
        pds: &str,
        did: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Option<(String, Value)>, XrpcError> {
        let xrpc = self.resolver.xrpc();
        let key = tag_rkey(repository, tag);
        if let Some(r) = xrpc.get_record(pds, did, TAG_NSID, &key).await? {
            if r.value["repository"] == repository && r.value["tag"] == tag {
                return Ok(Some((key, r.value)));
            }
        }
        let found = scan(xrpc, pds, did, TAG_NSID, |v| {
            v["repository"] == repository && v["tag"] == tag
        })
        .await?;
        Ok(found.and_then(|r| Some((rkey_of(&r)?, r.value))))
    }

    /// The `io.atcr.manifest` record of (repository, digest), found by its fields: the
    /// remembered key, the index's, the old digest-hex key, then a bounded scan.
    async fn find_manifest(
        &self,
        pds: &str,
        did: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<(String, Value)>, RecordsError> {
        let xrpc = self.resolver.xrpc();
        let d = digest.to_string();
        let mut candidates: Vec<String> = Vec::new();
        let (did2, repo2, d2) = (did.to_string(), repository.to_string(), d.clone());
        if let Some(k) = self
            .store
            .run(move |s| s.manifest_rkey(&did2, &repo2, &d2))
            .await
            .map_err(store_err)?
        {
            candidates.push(k);
        }
        if let Some(ix) = self.index.get() {
            match ix.manifest_rkey(did, repository, &d).await {
                Ok(Some(k)) if !candidates.contains(&k) => candidates.push(k),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "index lookup of a manifest record key failed")
                }
            }
        }
        let legacy = digest.hex().to_string();
        if !candidates.contains(&legacy) {
            candidates.push(legacy);
        }
        for key in candidates {
            if let Some(r) = xrpc
                .get_record(pds, did, MANIFEST_NSID, &key)
                .await
                .map_err(|e| unavailable(did, e))?
            {
                if is_manifest(&r.value, repository, &d) {
                    return Ok(Some((key, r.value)));
                }
            }
        }
        let found = scan(xrpc, pds, did, MANIFEST_NSID, |v| {
            is_manifest(v, repository, &d)
        })
        .await
        .map_err(|e| unavailable(did, e))?;
        Ok(found.and_then(|r| Some((rkey_of(&r)?, r.value))))
    }

    async fn remember(&self, did: &str, repository: &str, digest: &Digest, rkey: &str) {
        let (did, repo, d, k) = (
            did.to_string(),
            repository.to_string(),
            digest.to_string(),
            rkey.to_string(),
        );
        if let Err(e) = self
            .store
            .run(move |s| s.set_manifest_rkey(&did, &repo, &d, &k))
            .await
        {
            tracing::warn!(error = %e, "cannot remember a manifest record key");
        }
    }

    async fn forget(&self, did: &str, repository: &str, digest: &Digest) {
        let (did, repo, d) = (did.to_string(), repository.to_string(), digest.to_string());
        if let Err(e) = self
            .store
            .run(move |s| s.forget_manifest_rkey(&did, &repo, &d))
            .await
        {
            tracing::warn!(error = %e, "cannot forget a manifest record key");
        }
    }

    /// The repository's `io.atcr.repo.page`: created on its first push (description from
    /// the manifest's `org.opencontainers.image.description` annotation); a later push with
    /// another description annotation updates it unless its owner edited the page
    /// (`userEdited`). The PDS is read only when the local memory of the page cannot rule
    /// the write out, and every update is a compare-and-swap on the CID just read, so an
    /// edit made meanwhile is never overwritten. Failures are logged: the push stands.
    async fn ensure_page(&self, s: &PdsAgent, repository: &str, description: Option<&str>) {
        let did = s.did.clone();
        let (did2, repo2) = (did.clone(), repository.to_string());
        let known: Option<PageState> = self
            .store
            .run(move |st| st.repo_page_state(&did2, &repo2))
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let wanted = description.map(|d| {
            super::records::truncate_utf8(d, super::records::MAX_PAGE_DESCRIPTION).to_string()
        });
        if let Some(k) = &known {
            let same = match &wanted {
                None => true,
                Some(d) => k.user_edited || k.description_sha256 == sha256_hex(d),
            };
            if same {
                return;
            }
        }
        match self.write_page(s, repository, wanted.as_deref()).await {
            Ok(state) => {
                let (did2, repo2) = (did.clone(), repository.to_string());
                let bytes = serde_json::to_vec(&state).unwrap_or_default();
                if let Err(e) = self
                    .store
                    .run(move |st| st.set_repo_page_state(&did2, &repo2, &bytes))
                    .await
                {
                    tracing::warn!(error = %e, "cannot remember a repository page");
                }
            }
            Err(e) => {
                tracing::warn!(%did, %repository, error = %e, "cannot write the repository page; the push is stored")
            }
        }
    }

    async fn write_page(
        &self,
        s: &PdsAgent,
        repository: &str,
        description: Option<&str>,
    ) -> Result<PageState, XrpcError> {
        let xrpc = self.resolver.xrpc();
        let did = &s.did;
        let Some(rkey) = page_rkey(repository) else {
            // A nested name is no record key: such a repository has no page.
            return Ok(PageState {
                user_edited: true,
                description_sha256: String::new(),
            });
        };
        let now = now_datetime();
        let Some(existing) = xrpc.get_record(&s.pds, did, PAGE_NSID, &rkey).await? else {
            let rec = page_record(repository, description, &now);
            match xrpc
                .create_record(&s.pds, &s.auth, did, PAGE_NSID, &rkey, &rec)
                .await
            {
                Ok(_) => tracing::info!(%did, %repository, "repository page created"),
                // Created meanwhile by a concurrent push: that one stands.
                Err(XrpcError::Remote { status: 400, .. }) => {}
                Err(e) => return Err(e),
            }
            return Ok(PageState {
                user_edited: false,
                description_sha256: sha256_hex(description.unwrap_or_default()),
            });
        };
        let v = &existing.value;
        let user_edited = v["userEdited"].as_bool().unwrap_or(false);
        let current = v["description"].as_str().unwrap_or_default().to_string();
        let seen = |d: &str| PageState {
            user_edited,
            description_sha256: sha256_hex(d),
        };
        let Some(wanted) = description else {
            return Ok(seen(&current));
        };
        if user_edited || wanted == current || !v.is_object() {
            return Ok(seen(&current));
        }
        let mut rec = v.clone();
        rec["description"] = Value::String(wanted.to_string());
        rec["updatedAt"] = Value::String(now);
        let swap = existing.cid.clone().unwrap_or_default();
        match xrpc
            .put_record_swap(&s.pds, &s.auth, did, PAGE_NSID, &rkey, &rec, &swap)
            .await
        {
            Ok(_) => {
                tracing::info!(%did, %repository, "repository page description updated from the image");
                Ok(seen(wanted))
            }
            // The owner (or another push) changed it since we read it: theirs stands, and
            // the next push reads it again.
            Err(e) if e.error_name() == Some("InvalidSwap") => Ok(PageState::default()),
            Err(e) => Err(e),
        }
    }
}

/// The first record of `collection` (newest first) for which `keep` holds, scanning at
/// most [`MAX_SCAN_PAGES`] pages.
async fn scan(
    xrpc: &XrpcClient,
    pds: &str,
    did: &str,
    collection: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Option<Record>, XrpcError> {
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_SCAN_PAGES {
        let page = xrpc
            .list_records(pds, did, collection, 100, cursor.as_deref())
            .await?;
        let empty = page.records.is_empty();
        if let Some(r) = page.records.into_iter().find(|r| keep(&r.value)) {
            return Ok(Some(r));
        }
        match page.cursor {
            Some(c) if !c.is_empty() && !empty => cursor = Some(c),
            _ => break,
        }
    }
    Ok(None)
}

#[async_trait::async_trait]
impl crate::auth::LoginHook for PdsRecords {
    async fn after_login(&self, did: &str, user_agent: Option<&str>) {
        let client = user_agent.and_then(oci_client_of).unwrap_or("");
        if self.profiles_checked.get(did).as_deref() == Some(client) {
            return;
        }
        let r = self
            .sessions
            .with_agent(
                did,
                |a| async move { self.ensure_profile(&a, user_agent).await },
            )
            .await;
        match r {
            Ok(()) => self.profiles_checked.put(did, client.to_string()),
            Err(e) => tracing::warn!(%did, error = %e, "cannot create the sailor profile"),
        }
    }
}

#[async_trait::async_trait]
impl ManifestRecords for PdsRecords {
    async fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
        hold_did: &str,
    ) -> Result<Written, RecordsError> {
        let owner = self.owner(name).await?;
        let did = owner.did.clone();
        let repository = name.repository().to_string();
        // One record per (repository, digest): a re-push reuses the key this registry (or,
        // for records written elsewhere, the index) knows; otherwise a new TID.
        let (did2, repo2, d2) = (did.clone(), repository.clone(), digest.to_string());
        let mut rkey = self
            .store
            .run(move |s| s.manifest_rkey(&did2, &repo2, &d2))
            .await
            .map_err(store_err)?;
        if rkey.is_none() {
            if let Some(ix) = self.index.get() {
                rkey = ix
                    .manifest_rkey(&did, &repository, &digest.to_string())
                    .await
                    .ok()
                    .flatten();
            }
        }
        // A record written before TID keys (digest-hex key) is left as it was (it may be
        // shared by several repositories' tags): this push gets a TID-keyed record.
        let rkey = rkey
            .filter(|k| Tid::parse(k).is_ok())
            .unwrap_or_else(|| Tid::now().to_string());
        // Empty: this registry's default hold.
        let hold = if hold_did.is_empty() {
            self.hold_did.clone()
        } else {
            hold_did.to_string()
        };
        let body = bytes.to_vec();
        let xrpc = self.resolver.xrpc().clone();
        let description = description_annotation(bytes);
        let session = self
            .sessions
            .with_agent(&did, |s| {
                let (xrpc, body, repository, rkey, hold) = (
                    xrpc.clone(),
                    body.clone(),
                    repository.clone(),
                    rkey.clone(),
                    hold.clone(),
                );
                let digest = digest.clone();
                async move {
                    let len = body.len() as u64;
                    let blob = xrpc
                        .upload_blob(&s.pds, &s.auth, media_type, body.clone(), Some(len))
                        .await?;
                    let blob = serde_json::to_value(&blob).unwrap_or(Value::Null);
                    let now = now_datetime();
                    let rec = manifest_record(
                        &repository,
                        &digest,
                        media_type,
                        &body,
                        &blob,
                        &hold,
                        &now,
                    );
                    let did = &s.did;
                    xrpc.put_record(&s.pds, &s.auth, did, MANIFEST_NSID, &rkey, &rec)
                        .await?;
                    if let Some(t) = tag {
                        let uri = at_uri(did, MANIFEST_NSID, &rkey);
                        let rec = tag_record(&repository, t, &uri, media_type, &now);
                        xrpc.put_record(
                            &s.pds,
                            &s.auth,
                            did,
                            TAG_NSID,
                            &tag_rkey(&repository, t),
                            &rec,
                        )
                        .await?;
                    }
                    Ok(s)
                }
            })
            .await
            .map_err(|e| session_err(&did, e))?;
        self.remember(&did, &repository, digest, &rkey).await;
        // The page a star names: created on the repository's first push.
        self.ensure_page(&session, &repository, description.as_deref())
            .await;
        Ok(Written { did, rkey })
    }

    async fn delete_tag(&self, name: &Name, tag: &str) -> Result<(), RecordsError> {
        let owner = self.owner(name).await?;
        let did = owner.did.clone();
        let Some((rkey, _)) = self
            .find_tag(&owner.pds, &did, name.repository(), tag)
            .await
            .map_err(|e| unavailable(&did, e))?
        else {
            return Ok(());
        };
        let xrpc = self.resolver.xrpc().clone();
        self.sessions
            .with_agent(&did, |s| {
                let (xrpc, rkey) = (xrpc.clone(), rkey.clone());
                async move {
                    xrpc.delete_record(&s.pds, &s.auth, &s.did, TAG_NSID, &rkey)
                        .await
                }
            })
            .await
            .map_err(|e| session_err(&did, e))
    }

    async fn delete_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        tags: &[String],
    ) -> Result<(), RecordsError> {
        let owner = self.owner(name).await?;
        let did = owner.did.clone();
        let repository = name.repository().to_string();
        let mut doomed: Vec<(&str, String)> = Vec::new();
        for t in tags {
            if let Some((rkey, _)) = self
                .find_tag(&owner.pds, &did, &repository, t)
                .await
                .map_err(|e| unavailable(&did, e))?
            {
                doomed.push((TAG_NSID, rkey));
            }
        }
        if let Some((rkey, _)) = self
            .find_manifest(&owner.pds, &did, &repository, digest)
            .await?
        {
            doomed.push((MANIFEST_NSID, rkey));
        }
        let xrpc = self.resolver.xrpc().clone();
        self.sessions
            .with_agent(&did, |s| {
                let (xrpc, doomed) = (xrpc.clone(), doomed.clone());
                async move {
                    for (collection, rkey) in doomed {
                        xrpc.delete_record(&s.pds, &s.auth, &s.did, collection, &rkey)
                            .await?;
                    }
                    Ok(())
                }
            })
            .await
            .map_err(|e| session_err(&did, e))?;
        self.forget(&did, &repository, digest).await;
        Ok(())
    }

    async fn fetch(
        &self,
        name: &Name,
        reference: &Reference,
        limit: usize,
    ) -> Result<Option<Fetched>, RecordsError> {
        let owner = self.owner(name).await?;
        let (did, pds) = (owner.did.as_str(), owner.pds.as_str());
        let repository = name.repository();
        let xrpc = self.resolver.xrpc();
        let (rkey, v) = match reference {
            Reference::Digest(d) => match self.find_manifest(pds, did, repository, d).await? {
                Some(found) => found,
                None => return Ok(None),
            },
            Reference::Tag(t) => {
                let Some((_, tag)) = self
                    .find_tag(pds, did, repository, t.as_str())
                    .await
                    .map_err(|e| unavailable(did, e))?
                else {
                    return Ok(None);
                };
                let uri = tag["manifest"].as_str().unwrap_or_default();
                match parse_at_uri(uri) {
                    Some((a, c, r)) if a == did && c == MANIFEST_NSID => {
                        match xrpc
                            .get_record(pds, did, MANIFEST_NSID, r)
                            .await
                            .map_err(|e| unavailable(did, e))?
                        {
                            Some(rec) => (r.to_string(), rec.value),
                            None => return Ok(None),
                        }
                    }
                    _ => match tag["manifestDigest"].as_str().and_then(|d| d.parse().ok()) {
                        // Older tag records carry only the digest.
                        Some(d) => match self.find_manifest(pds, did, repository, &d).await? {
                            Some(found) => found,
                            None => return Ok(None),
                        },
                        None => {
                            return Err(RecordsError::Invalid(format!(
                                "tag record {repository}:{t} of {did} has no manifest reference"
                            )))
                        }
                    },
                }
            }
        };
        if v["repository"] != repository {
            return Ok(None);
        }
        let invalid =
            |m: &str| RecordsError::Invalid(format!("manifest record {rkey} of {did}: {m}"));
        let digest: Digest = v["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| invalid("bad digest"))?;
        // An old-style key is the digest itself: it must agree with the record.
        if let Some(d) = legacy_digest_of_rkey(&rkey) {
            if d != digest.to_string() {
                return Err(invalid("digest does not match the record key"));
            }
        }
        if let Reference::Digest(want) = reference {
            if &digest != want {
                return Ok(None);
            }
        }
        let media_type = v["mediaType"]
            .as_str()
            .filter(|m| m.len() <= 255)
            .ok_or_else(|| invalid("no mediaType"))?
            .to_string();
        let cid = v["manifestBlob"]["ref"]["$link"]
            .as_str()
            .ok_or_else(|| invalid("no manifestBlob"))?;
        let bytes = xrpc
            .get_blob(pds, did, cid, limit)
            .await
            .map_err(|e| unavailable(did, e))?
            .to_vec();
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != digest {
            return Err(invalid(&format!("manifestBlob hashes to {actual}")));
        }
        self.remember(did, repository, &digest, &rkey).await;
        let hold_did = v["holdDid"]
            .as_str()
            .filter(|d| crate::atproto::repo::syntax::validate_did(d).is_ok())
            .map(str::to_string)
            .or_else(|| {
                v["holdEndpoint"]
                    .as_str()
                    .and_then(super::federation::hold_ref_to_did)
            });
        Ok(Some(Fetched {
            digest,
            media_type,
            bytes,
            hold_did,
        }))
    }
}
