//! [`ManifestRecords`] on the owner's PDS: writes use the owner's PDS session (kept sealed
//! on this host by [`crate::auth::sessions`], refreshed on `ExpiredToken`); reads are
//! public XRPC calls (`getRecord`, `listRecords`, `sync.getBlob`).

use std::sync::Arc;

use serde_json::Value;

use super::records::{
    at_uri, manifest_record, now_datetime, parse_at_uri, profile_record, tag_record, tag_rkey,
    Fetched, ManifestRecords, RecordsError, MANIFEST_NSID, PROFILE_NSID, TAG_NSID,
};
use crate::atproto::identity::{Identity, Resolver};
use crate::atproto::xrpc::XrpcError;
use crate::auth::sessions::{PdsSession, SessionError, SessionStore};
use crate::oci::types::{Digest, Name, Reference};

/// Tag lookups that miss the deterministic rkey scan this many `listRecords` pages.
const MAX_TAG_SCAN_PAGES: usize = 10;

pub struct PdsRecords {
    resolver: Arc<Resolver>,
    sessions: Arc<SessionStore>,
    hold_did: String,
}

fn unavailable(did: &str, e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Unavailable(format!("the PDS of {did} failed: {e}"))
}

fn session_err(did: &str, e: SessionError) -> RecordsError {
    match e {
        SessionError::Missing(_) | SessionError::Corrupt(_) => RecordsError::NoSession(format!(
            "no usable PDS session for {did} on this registry: log in again (docker login)"
        )),
        SessionError::Xrpc(x) => unavailable(did, x),
        SessionError::Store(s) => RecordsError::Unavailable(s.to_string()),
    }
}

impl PdsRecords {
    pub fn new(resolver: Arc<Resolver>, sessions: Arc<SessionStore>, hold_did: String) -> Self {
        PdsRecords {
            resolver,
            sessions,
            hold_did,
        }
    }

    async fn owner(&self, name: &Name) -> Result<Identity, RecordsError> {
        self.resolver.resolve(name.identity()).await.map_err(|e| {
            RecordsError::Unavailable(format!("cannot resolve {}: {e}", name.identity()))
        })
    }

    /// Creates `io.atcr.sailor.profile/self` with this registry's hold if it is missing.
    pub async fn ensure_profile(&self, s: &PdsSession) -> Result<(), XrpcError> {
        let xrpc = self.resolver.xrpc();
        let did = &s.session.did;
        if xrpc
            .get_record(&s.pds, did, PROFILE_NSID, "self")
            .await?
            .is_some()
        {
            return Ok(());
        }
        let rec = profile_record(&self.hold_did, &now_datetime());
        xrpc.put_record(
            &s.pds,
            &s.session.access_jwt,
            did,
            PROFILE_NSID,
            "self",
            &rec,
        )
        .await?;
        Ok(())
    }

    async fn find_tag(
        &self,
        pds: &str,
        did: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Option<Value>, XrpcError> {
        let xrpc = self.resolver.xrpc();
        if let Some(r) = xrpc
            .get_record(pds, did, TAG_NSID, &tag_rkey(repository, tag))
            .await?
        {
            if r.value["repository"] == repository && r.value["tag"] == tag {
                return Ok(Some(r.value));
            }
        }
        // Written by another AppView with another rkey scheme: match by fields.
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TAG_SCAN_PAGES {
            let page = xrpc
                .list_records(pds, did, TAG_NSID, 100, cursor.as_deref())
                .await?;
            if let Some(r) = page
                .records
                .into_iter()
                .find(|r| r.value["repository"] == repository && r.value["tag"] == tag)
            {
                return Ok(Some(r.value));
            }
            match page.cursor {
                Some(c) if !c.is_empty() => cursor = Some(c),
                _ => break,
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl crate::auth::LoginHook for PdsRecords {
    async fn after_login(&self, session: &PdsSession) {
        if let Err(e) = self.ensure_profile(session).await {
            tracing::warn!(did = %session.session.did, error = %e, "cannot create the sailor profile");
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
    ) -> Result<(), RecordsError> {
        let owner = self.owner(name).await?;
        let did = owner.did.clone();
        let repository = name.repository().to_string();
        let rkey = digest.hex().to_string();
        let hold = if hold_did.is_empty() {
            self.hold_did.clone()
        } else {
            hold_did.to_string()
        };
        let body = bytes.to_vec();
        let xrpc = self.resolver.xrpc().clone();
        self.sessions
            .with_session(&did, |s| {
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
                        .upload_blob(
                            &s.pds,
                            &s.session.access_jwt,
                            media_type,
                            body.clone(),
                            Some(len),
                        )
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
                    let did = &s.session.did;
                    xrpc.put_record(
                        &s.pds,
                        &s.session.access_jwt,
                        did,
                        MANIFEST_NSID,
                        &rkey,
                        &rec,
                    )
                    .await?;
                    if let Some(t) = tag {
                        let uri = at_uri(did, MANIFEST_NSID, &rkey);
                        let rec = tag_record(&repository, t, &uri, &now);
                        xrpc.put_record(
                            &s.pds,
                            &s.session.access_jwt,
                            did,
                            TAG_NSID,
                            &tag_rkey(&repository, t),
                            &rec,
                        )
                        .await?;
                    }
                    Ok(())
                }
            })
            .await
            .map_err(|e| session_err(&did, e))
    }

    async fn delete_tag(&self, name: &Name, tag: &str) -> Result<(), RecordsError> {
        let owner = self.owner(name).await?;
        let did = owner.did.clone();
        let rkey = tag_rkey(name.repository(), tag);
        let xrpc = self.resolver.xrpc().clone();
        self.sessions
            .with_session(&did, |s| {
                let (xrpc, rkey) = (xrpc.clone(), rkey.clone());
                async move {
                    xrpc.delete_record(
                        &s.pds,
                        &s.session.access_jwt,
                        &s.session.did,
                        TAG_NSID,
                        &rkey,
                    )
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
        let rkey = digest.hex().to_string();
        let xrpc = self.resolver.xrpc().clone();
        self.sessions
            .with_session(&did, |s| {
                let (xrpc, rkey, repository) = (xrpc.clone(), rkey.clone(), repository.clone());
                async move {
                    for t in tags {
                        xrpc.delete_record(
                            &s.pds,
                            &s.session.access_jwt,
                            &s.session.did,
                            TAG_NSID,
                            &tag_rkey(&repository, t),
                        )
                        .await?;
                    }
                    xrpc.delete_record(
                        &s.pds,
                        &s.session.access_jwt,
                        &s.session.did,
                        MANIFEST_NSID,
                        &rkey,
                    )
                    .await
                }
            })
            .await
            .map_err(|e| session_err(&did, e))
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
        let rkey = match reference {
            Reference::Digest(d) => d.hex().to_string(),
            Reference::Tag(t) => {
                let Some(tag) = self
                    .find_tag(pds, did, repository, t.as_str())
                    .await
                    .map_err(|e| unavailable(did, e))?
                else {
                    return Ok(None);
                };
                let uri = tag["manifest"].as_str().unwrap_or_default();
                match parse_at_uri(uri) {
                    Some((a, c, r)) if a == did && c == MANIFEST_NSID => r.to_string(),
                    _ => match tag["manifestDigest"].as_str() {
                        // Legacy tag records carry only the digest.
                        Some(d) => d.split_once(':').map(|(_, h)| h).unwrap_or(d).to_string(),
                        None => {
                            return Err(RecordsError::Invalid(format!(
                                "tag record {repository}:{t} of {did} has no manifest reference"
                            )))
                        }
                    },
                }
            }
        };
        let Some(rec) = xrpc
            .get_record(pds, did, MANIFEST_NSID, &rkey)
            .await
            .map_err(|e| unavailable(did, e))?
        else {
            return Ok(None);
        };
        let v = &rec.value;
        if v["repository"] != repository {
            return Ok(None);
        }
        let invalid =
            |m: &str| RecordsError::Invalid(format!("manifest record {rkey} of {did}: {m}"));
        let digest: Digest = v["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| invalid("bad digest"))?;
        if digest.hex() != rkey {
            return Err(invalid("digest does not match the record key"));
        }
        if let Reference::Digest(want) = reference {
            if &digest != want {
                return Ok(None);
            }
        }
        let media_type = v["mediaType"]
            .as_str()
            .filter(|m| m.len() <= 128)
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
