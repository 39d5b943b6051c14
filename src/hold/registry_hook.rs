//! The hold side of the registry's [`PushHook`]: the in-process push path (`/v2/` uploads and
//! manifest PUT) meets the same rules as atcr.io's AppView calling `io.atcr.hold.*` with a
//! service token, without the token (the OCI auth already checked that the pusher owns the
//! name):
//! - **Crew**: a pusher who is not the captain or a crew member with `blob:write` is
//!   refused before any byte is stored, with a message naming the hold and how to get
//!   access; with `allowAllCrew` their first push enrols them (what `requestCrew` does).
//! - **Quota**: a push over the user's tier is refused before anything is visible. With
//!   tiers on, manifest pushes of one user run one at a time from the quota check to the
//!   layer records.
//! - **Reads**: a private hold (`public = false`) serves blobs to its crew (`blob:read`)
//!   only.
//!
//! Crew and read rules apply with ATProto auth only (`auth.mode = "none"` has no users).

use std::collections::HashMap;
use std::sync::Arc;

use super::manifest::{Descriptor, ManifestSummary, NotifyManifest};
use super::users::RequestCrew;
use super::{HoldApiError, HoldService};
use crate::atproto::identity::Resolver;
use crate::oci::types::manifest::ParsedManifest;
use crate::oci::types::{Digest, Name};
use crate::pds::permissions::{Action, Decision, Deny};
use crate::registry::push_hook::{PushHook, PushPermit, ReadRefusal};

pub struct HoldPushHook {
    svc: Arc<HoldService>,
    /// One lock per pushing user, held from the quota check to the layer records, so
    /// concurrent pushes of one user cannot each pass the check and together overrun it.
    user_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Handle -> DID for names like `alice.test/app`; `None` (auth off): only DID names count.
    resolver: Option<Arc<Resolver>>,
    /// Public base URL for post links and the admin panel.
    base_url: String,
    /// Crew and read rules (ATProto auth); off when there are no authenticated users.
    enforce_crew: bool,
}

impl HoldPushHook {
    /// `resolver` is `Some` with ATProto auth, which also turns the crew rules on.
    pub fn new(svc: Arc<HoldService>, resolver: Option<Arc<Resolver>>, base_url: String) -> Self {
        HoldPushHook {
            svc,
            user_locks: Default::default(),
            enforce_crew: resolver.is_some(),
            resolver,
            base_url,
        }
    }

    /// The crew rule for a push by `did`: captain or `blob:write`; on a hold with
    /// `allowAllCrew` a newcomer is enrolled (as `requestCrew` would).
    async fn require_writer(&self, did: &str) -> Result<(), String> {
        let pds = self.svc.pds();
        let hold = pds.did().to_string();
        match pds.authorize(Some(did), Action::WriteBlob).await {
            Ok(Decision::Allow | Decision::AlreadyMember) => return Ok(()),
            Ok(Decision::Deny(_)) => {}
            Err(e) => return Err(format!("hold {hold} cannot check its crew: {e}")),
        }
        match self
            .svc
            .request_crew(Some(did), RequestCrew::default())
            .await
        {
            Ok(v) if v["status"] == "created" => {
                tracing::info!(member = %did, "push enrolled a new crew member (allowAllCrew)");
                return Ok(());
            }
            Ok(_) | Err(HoldApiError::RegistrationDisabled) => {}
            Err(e) => return Err(format!("hold {hold} cannot enrol {did}: {e}")),
        }
        let captain = pds.captain().await.ok().flatten();
        let admin = format!("{}/admin", self.base_url.trim_end_matches('/'));
        Err(match captain {
            Some(c) if c.owner != hold => format!(
                "{did} may not push to hold {hold}: pushes need its captain or a crew member with blob:write. \
                 Ask the captain ({}) to add you in the hold's admin panel ({admin}), or set defaultHold in your \
                 io.atcr.sailor.profile to a hold you belong to",
                c.owner
            ),
            _ => format!(
                "{did} may not push to hold {hold}: the hold has no captain yet. Its operator sets \
                 [hold] owner_did (or allow_all_crew = true) in the configuration"
            ),
        })
    }

    async fn lock_user(&self, did: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.user_locks.lock().unwrap_or_else(|p| p.into_inner());
            // Locks nobody holds or waits for are dropped (the map holds the only reference).
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(did.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The pushing user's DID: the name's identity segment (the OCI auth checked that it
    /// resolves to the token's subject). `None` for names that are no identity (auth off).
    async fn user_did(&self, name: &Name) -> Option<String> {
        let id = name.identity();
        if id.starts_with("did:") {
            return Some(id.to_string());
        }
        self.resolver.as_ref()?.resolve_did_of(id).await.ok()
    }
}

fn layers(m: &ParsedManifest) -> Vec<Descriptor> {
    m.layers
        .iter()
        .map(|d| Descriptor {
            digest: d.digest.to_string(),
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect()
}

#[async_trait::async_trait]
impl PushHook for HoldPushHook {
    async fn before_upload(&self, name: &Name) -> Result<(), String> {
        if !self.enforce_crew {
            return Ok(());
        }
        match self.user_did(name).await {
            Some(did) => self.require_writer(&did).await,
            None => Err(format!(
                "cannot resolve {} to check the crew of hold {}",
                name.identity(),
                self.svc.pds().did()
            )),
        }
    }

    async fn may_read(&self, reader: Option<&str>) -> Result<(), ReadRefusal> {
        if !self.enforce_crew {
            return Ok(());
        }
        let pds = self.svc.pds();
        let hold = pds.did();
        match pds.authorize(reader, Action::ReadBlob).await {
            Ok(Decision::Allow | Decision::AlreadyMember) => Ok(()),
            Ok(Decision::Deny(Deny::AuthRequired)) => Err(ReadRefusal::AuthRequired(format!(
                "hold {hold} is private: log in (docker login) as a member of its crew to pull"
            ))),
            Ok(Decision::Deny(_)) => Err(ReadRefusal::Denied(format!(
                "{} may not pull from hold {hold}: it is private and serves crew members with blob:read; ask its captain to add you",
                reader.unwrap_or("anonymous")
            ))),
            Err(e) => Err(ReadRefusal::Denied(format!(
                "hold {hold} cannot check its crew: {e}"
            ))),
        }
    }

    async fn before_push(
        &self,
        name: &Name,
        manifest: &ParsedManifest,
    ) -> Result<Option<PushPermit>, String> {
        // A manifest whose blobs were all mounted uploads nothing: the crew rule runs here too.
        self.before_upload(name).await?;
        if !self.svc.tiers().enabled() {
            return Ok(None);
        }
        let Some(did) = self.user_did(name).await else {
            return Ok(None);
        };
        let guard = self.lock_user(&did).await;
        match self.svc.check_quota(&did, &layers(manifest)).await {
            Ok(()) => Ok(Some(Box::new(guard))),
            Err(HoldApiError::QuotaExceeded(m)) => Err(m),
            Err(e) => {
                // The quota could not be read: let the push through rather than fail it
                // on a hold-side fault; record_push checks again.
                tracing::warn!(error = %e, "hold quota check failed");
                Ok(Some(Box::new(guard)))
            }
        }
    }

    async fn after_push(
        &self,
        name: &Name,
        digest: &Digest,
        manifest: &ParsedManifest,
        tag: Option<&str>,
        manifest_uri: Option<&str>,
    ) {
        let Some(did) = self.user_did(name).await else {
            return;
        };
        let req = NotifyManifest {
            repository: name.repository().to_string(),
            user_did: did,
            manifest_digest: digest.to_string(),
            manifest: ManifestSummary {
                media_type: manifest.media_type.clone(),
                config: manifest.config.as_ref().map(|d| Descriptor {
                    digest: d.digest.to_string(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                }),
                layers: layers(manifest),
                // The children of an index: the stats count them as parts of this push.
                manifests: manifest
                    .manifests
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "digest": d.digest.to_string(),
                            "size": d.size,
                            "mediaType": d.media_type,
                        })
                    })
                    .collect(),
            },
            tag: tag.map(str::to_string),
            operation: Some("push".into()),
            manifest_uri: manifest_uri.map(str::to_string),
        };
        if let Err(e) = self.svc.record_push(req, &self.base_url).await {
            tracing::warn!(error = %e, name = %name, "hold notifyManifest failed; the push is stored");
        }
    }

    fn pulled(&self, name: &Name) {
        use super::stats::StatsSink;
        let (svc, resolver, name) = (self.svc.clone(), self.resolver.clone(), name.clone());
        // Resolving a handle may ask the network (cached); the pull is answered meanwhile.
        tokio::spawn(async move {
            let id = name.identity();
            let did = if id.starts_with("did:") {
                Some(id.to_string())
            } else {
                match resolver {
                    Some(r) => r.resolve_did_of(id).await.ok(),
                    None => None,
                }
            };
            if let Some(did) = did {
                svc.stats().pull(&did, name.repository());
            }
        });
    }
}
