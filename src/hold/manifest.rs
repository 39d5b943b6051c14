//! `io.atcr.hold.notifyManifest`: after a manifest is pushed, the hold records one
//! `io.atcr.hold.layer` per layer (quota and GC read them) in one commit, and counts the
//! push (or, for `operation: "pull"`, the pull) in the repository's `io.atcr.hold.stats`
//! through the batching [`super::stats`] (no commit per pull); the quota of the user's tier
//! is checked inside the writer lock, so two concurrent pushes cannot both slip under the
//! limit. When
//! the captain enables it, a tagged push is announced as an `app.bsky.feed.post` (text +
//! link facet) in a separate commit whose failure is only logged.
//!
//! [`PushHook`] is the same logic for the registry's own push path (in-process, no token).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::quota::Usage;
use super::{HoldApiError, HoldService, Result, LAYER, POST, STATS};
use crate::atproto::records::{HoldLayer, HoldStats, LexiconRecord};
use crate::atproto::repo::{Blockstore, Repo, Tid, Write};
use crate::pds::permissions::{Action, Captain, CrewMember};
use crate::pds::records::{crew_rkey, stats_rkey, CAPTAIN, CREW, SELF};
use crate::pds::store::StagedStore;
use crate::pds::{now_rfc3339, record_cbor, record_json, HoldError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Descriptor {
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ManifestSummary {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotifyManifest {
    pub repository: String,
    #[serde(rename = "userDid")]
    pub user_did: String,
    #[serde(rename = "manifestDigest")]
    pub manifest_digest: String,
    #[serde(default)]
    pub manifest: ManifestSummary,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    /// AT-URI of the user's `io.atcr.manifest` record (TID-keyed, so it cannot be derived
    /// from the digest). An extension of atcr.io's request: without it the layer records
    /// name the digest-keyed URI atcr.io's AppView uses.
    #[serde(
        rename = "manifestUri",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub manifest_uri: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotifyOutcome {
    pub success: bool,
    pub operation: String,
    #[serde(rename = "statsUpdated")]
    pub stats_updated: bool,
    #[serde(rename = "postCreated", skip_serializing_if = "Option::is_none")]
    pub post_created: Option<bool>,
    #[serde(rename = "postUri", skip_serializing_if = "Option::is_none")]
    pub post_uri: Option<String>,
    #[serde(rename = "layersCreated", skip_serializing_if = "Option::is_none")]
    pub layers_created: Option<usize>,
}

const MAX_LAYERS: usize = 1000;

impl NotifyManifest {
    fn validate(&self) -> Result<bool> {
        let push = match self.operation.as_deref().unwrap_or("push") {
            "push" => true,
            "pull" => false,
            other => {
                return Err(HoldApiError::InvalidOperation(format!(
                    "operation must be push or pull, not {other:?}"
                )))
            }
        };
        if !super::check_did(&self.user_did) {
            return Err(HoldApiError::InvalidUserDid(format!(
                "{:?} is not a DID",
                self.user_did
            )));
        }
        if self.repository.is_empty() || self.repository.len() > 256 {
            return Err(HoldApiError::InvalidRepository(
                "repository must be 1-256 characters".into(),
            ));
        }
        if self.manifest.layers.len() > MAX_LAYERS {
            return Err(HoldApiError::InvalidRequest(format!(
                "more than {MAX_LAYERS} layers"
            )));
        }
        for d in self.manifest.layers.iter().chain(&self.manifest.config) {
            d.digest
                .parse::<crate::oci::types::Digest>()
                .map_err(|e| HoldApiError::InvalidDigest(format!("{:?}: {e}", d.digest)))?;
        }
        self.manifest_digest
            .parse::<crate::oci::types::Digest>()
            .map_err(|e| HoldApiError::InvalidDigest(format!("{:?}: {e}", self.manifest_digest)))?;
        if let Some(uri) = &self.manifest_uri {
            let ok = crate::registry::records::parse_at_uri(uri).is_some_and(|(a, c, r)| {
                a == self.user_did
                    && c == crate::registry::records::MANIFEST_NSID
                    && crate::atproto::repo::syntax::validate_record_key(r).is_ok()
            });
            if !ok {
                return Err(HoldApiError::InvalidRequest(format!(
                    "manifestUri {uri:?} is not an io.atcr.manifest record of {}",
                    self.user_did
                )));
            }
        }
        Ok(push)
    }

    /// The scan of this push (an index has no layers and no config: not scanned itself).
    pub fn scan_request(&self) -> crate::scan::service::ScanRequest {
        crate::scan::service::ScanRequest {
            user_did: self.user_did.clone(),
            repository: self.repository.clone(),
            manifest_digest: self.manifest_digest.clone(),
            manifest_uri: self.manifest_uri(),
            config_media_type: self.manifest.config.as_ref().map(|c| c.media_type.clone()),
            layers: self
                .manifest
                .layers
                .iter()
                .map(|l| l.digest.clone())
                .collect(),
            layer_types: self
                .manifest
                .layers
                .iter()
                .map(|l| l.media_type.clone())
                .collect(),
            force: false,
        }
    }

    /// AT-URI of the user's manifest record: `manifestUri` when given, else the
    /// digest-keyed URI of atcr.io's AppView.
    pub fn manifest_uri(&self) -> String {
        if let Some(uri) = &self.manifest_uri {
            return uri.clone();
        }
        let hex = self
            .manifest_digest
            .split_once(':')
            .map(|(_, h)| h)
            .unwrap_or(&self.manifest_digest);
        format!("at://{}/io.atcr.manifest/{hex}", self.user_did)
    }
}

/// Every `io.atcr.hold.layer` record of `user` as JSON, in rkey order: found through the
/// layer index (`pds::layer_index`), O(the user's records), not a walk of the collection.
pub fn user_layers(
    repo: &Repo<StagedStore>,
    user: &str,
) -> Result<Vec<(String, Value)>, HoldError> {
    let rkeys = repo.store().inner().layer_rkeys_of_user(user)?;
    layer_records(repo, rkeys)
}

/// The layer records with these keys (those still in the repo), as JSON.
pub fn layer_records(
    repo: &Repo<StagedStore>,
    rkeys: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, Value)>, HoldError> {
    let mut out = Vec::new();
    for rkey in rkeys {
        if let Some((_, bytes)) = repo.get_record(LAYER, &rkey)? {
            out.push((rkey, record_json(&bytes)?));
        }
    }
    Ok(out)
}

pub use crate::pds::collection_where;

/// Usage computed from records (the definition the layer index keeps incrementally; tests
/// compare the two).
pub fn usage_of(layers: &[(String, Value)]) -> Usage {
    let mut u = Usage::default();
    for (_, v) in layers {
        if let Some(d) = v["digest"].as_str() {
            u.add(d, v["size"].as_u64().unwrap_or(0));
        }
    }
    u
}

/// (used bytes, bytes `layers` would add) of `user`, from the layer index: O(layers).
fn quota_figures(
    repo: &Repo<StagedStore>,
    user: &str,
    layers: &[(String, u64)],
) -> Result<(u64, u64), HoldError> {
    let store = repo.store().inner();
    let (_, used) = store.layer_usage(user)?;
    let adding = store.layer_bytes_added(user, layers.iter().map(|(d, s)| (d.as_str(), *s)))?;
    Ok((used, adding))
}

fn quota_error(user: &str, tier: &str, used: u64, adding: u64, limit: u64) -> HoldApiError {
    HoldApiError::QuotaExceeded(format!(
        "storage quota exceeded for {user}: tier {tier} allows {limit} bytes, {used} used, this push adds {adding}"
    ))
}

impl HoldService {
    /// Refuses a push that would take `user` over their tier's quota (the registry calls it
    /// before anything of the push becomes visible). Racy on its own; `record_push`
    /// checks again under the writer lock.
    pub async fn check_quota(&self, user: &str, layers: &[Descriptor]) -> Result<()> {
        if !self.tiers.enabled() {
            return Ok(());
        }
        let this_user = user.to_string();
        let layers: Vec<(String, u64)> =
            layers.iter().map(|d| (d.digest.clone(), d.size)).collect();
        let svc_tiers = self.tiers.clone();
        let verdict = self
            .pds
            .read(move |repo| {
                let shim = TiersOnly(&svc_tiers);
                let Some((tier, limit)) = shim.limit(repo, &this_user)? else {
                    return Ok(None);
                };
                let (used, adding) = quota_figures(repo, &this_user, &layers)?;
                Ok((used + adding > limit).then_some((tier, used, adding, limit)))
            })
            .await?;
        match verdict {
            Some((tier, used, adding, limit)) => Err(quota_error(user, &tier, used, adding, limit)),
            None => Ok(()),
        }
    }

    /// `notifyManifest` from a service-token caller: crew `blob:write`, and the caller must
    /// be the user named in the request.
    pub async fn notify_manifest(
        &self,
        caller: Option<&str>,
        req: NotifyManifest,
        base_url: &str,
    ) -> Result<NotifyOutcome> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        if caller != req.user_did {
            return Err(HoldApiError::UserMismatch(format!(
                "the token is {caller}'s, the request names {}",
                req.user_did
            )));
        }
        let mut req = req;
        // Quota is counted from sizes: take them from the blob store where it has the
        // blob, not from the caller's word.
        for layer in &mut req.manifest.layers {
            if let Ok(d) = layer.digest.parse::<crate::oci::types::Digest>() {
                if let Ok(Some(size)) = self.blobs.stat(&d).await {
                    layer.size = size;
                }
            }
        }
        self.record_push(req, base_url).await
    }

    /// The domain operation behind `notifyManifest` (callers have authorized it).
    pub async fn record_push(&self, req: NotifyManifest, base_url: &str) -> Result<NotifyOutcome> {
        let push = req.validate()?;
        let now = now_rfc3339();
        let pds = self.pds.clone();
        let (req2, now2) = (req.clone(), now.clone());
        let tiers = self.tiers.clone();
        let (committed, quota_refusal, layers_created) = tokio::task::spawn_blocking(move || {
            let mut refusal = None;
            let mut created = 0usize;
            let r = pds.write_blocking(|repo| {
                plan_push(
                    repo,
                    &TiersOnly(&tiers),
                    &req2,
                    push,
                    &now2,
                    &mut refusal,
                    &mut created,
                )
            });
            (r, refusal, created)
        })
        .await
        .map_err(|e| HoldError::Internal(format!("blocking task failed: {e}")))?;
        if let Some(e) = quota_refusal {
            return Err(e);
        }
        committed?;
        // Counted in memory, written in batches (`stats`), never a commit per pull.
        use super::stats::StatsSink;
        if push {
            if let Some(scanner) = self.scanner() {
                scanner.enqueue(req.scan_request());
            }
            let children: Vec<String> = req
                .manifest
                .manifests
                .iter()
                .filter_map(|m| m["digest"].as_str().map(str::to_string))
                .take(MAX_LAYERS)
                .collect();
            self.stats.push(
                &req.user_did,
                &req.repository,
                &req.manifest_digest,
                req.tag.is_some(),
                &children,
            );
        } else {
            self.stats.pull(&req.user_did, &req.repository);
        }
        let mut out = NotifyOutcome {
            success: true,
            operation: if push { "push" } else { "pull" }.into(),
            stats_updated: true,
            post_created: None,
            post_uri: None,
            layers_created: push.then_some(layers_created),
        };
        if push && req.tag.is_some() && self.posts_enabled().await {
            match self.announce(&req, base_url, &now).await {
                Ok(uri) => {
                    out.post_created = Some(true);
                    out.post_uri = Some(uri);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not post the push announcement; the push is not affected");
                    out.post_created = Some(false);
                }
            }
        }
        Ok(out)
    }

    async fn posts_enabled(&self) -> bool {
        match self.pds.get_record(CAPTAIN, SELF).await {
            Ok(Some(r)) => r.value["enableBlueskyPosts"].as_bool().unwrap_or(false),
            _ => false,
        }
    }

    /// Posts "<user> pushed <repo>:<tag>" with a link facet to the image page.
    async fn announce(&self, req: &NotifyManifest, base_url: &str, now: &str) -> Result<String> {
        let post = announcement(req, base_url, now);
        let rkey = Tid::now().to_string();
        self.pds
            .apply_writes(vec![Write::Create {
                collection: POST.into(),
                rkey: rkey.clone(),
                record: record_cbor(&post)?,
            }])
            .await?;
        Ok(format!("at://{}/{POST}/{rkey}", self.pds.did()))
    }
}

/// The post record: text with the link as a `app.bsky.richtext.facet#link` over its bytes.
pub fn announcement(req: &NotifyManifest, base_url: &str, now: &str) -> Value {
    let tag = req.tag.as_deref().unwrap_or("latest");
    let link = format!(
        "{}/{}/{}",
        base_url.trim_end_matches('/'),
        req.user_did,
        req.repository
    );
    let head = format!("{} pushed {}:{tag}\n", req.user_did, req.repository);
    let text = format!("{head}{link}");
    json!({
        "$type": POST,
        "text": text,
        "facets": [{
            "index": {"byteStart": head.len(), "byteEnd": head.len() + link.len()},
            "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}],
        }],
        "createdAt": now,
    })
}

/// The tier lookup without the rest of the service (runs on the blocking pool).
struct TiersOnly<'a>(&'a super::Tiers);

impl TiersOnly<'_> {
    fn limit<S: Blockstore>(
        &self,
        repo: &Repo<S>,
        user: &str,
    ) -> Result<Option<(String, u64)>, HoldError> {
        let captain = match repo.get_record(CAPTAIN, SELF)? {
            Some((_, b)) => Captain::from_record(&record_json(&b)?),
            None => None,
        };
        if captain.is_some_and(|c| c.owner == user) || !self.0.enabled() {
            return Ok(None);
        }
        let crew = match repo.get_record(CREW, &crew_rkey(user))? {
            Some((_, b)) => CrewMember::from_record(&record_json(&b)?).filter(|c| c.member == user),
            None => None,
        };
        Ok(self
            .0
            .for_member(crew.as_ref().and_then(|c| c.tier.as_deref()))
            .map(|t| (t.name.clone(), t.quota_bytes)))
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_push(
    repo: &Repo<StagedStore>,
    tiers: &TiersOnly<'_>,
    req: &NotifyManifest,
    push: bool,
    now: &str,
    refusal: &mut Option<HoldApiError>,
    created: &mut usize,
) -> Result<Vec<Write>, HoldError> {
    let mut writes = Vec::new();
    if push {
        if let Some((tier, limit)) = tiers.limit(repo, &req.user_did)? {
            let layers: Vec<(String, u64)> = req
                .manifest
                .layers
                .iter()
                .map(|d| (d.digest.clone(), d.size))
                .collect();
            let (used, adding) = quota_figures(repo, &req.user_did, &layers)?;
            if used + adding > limit {
                *refusal = Some(quota_error(&req.user_did, &tier, used, adding, limit));
                return Ok(Vec::new());
            }
        }
        let uri = req.manifest_uri();
        // The manifest URI names the user (validate), so these are the user's records.
        let recorded: std::collections::HashSet<String> = repo
            .store()
            .inner()
            .layers_of_manifest(&uri)?
            .into_iter()
            .map(|(_, digest)| digest)
            .collect();
        let mut tid = Tid::now();
        for layer in &req.manifest.layers {
            // A re-push of the same manifest records nothing twice.
            if recorded.contains(&layer.digest) {
                continue;
            }
            let rec = HoldLayer {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
                manifest: uri.clone(),
                user_did: req.user_did.clone(),
                created_at: now.to_string(),
            }
            .to_value();
            writes.push(Write::Create {
                collection: LAYER.into(),
                rkey: tid.to_string(),
                record: record_cbor(&rec)?,
            });
            tid = tid.successor();
        }
        *created = writes.len();
    }
    Ok(writes)
}

/// Creates or updates the stats record of (owner, repository) with `change` applied.
pub fn stats_write<S: Blockstore>(
    repo: &Repo<S>,
    owner: &str,
    repository: &str,
    now: &str,
    change: impl FnOnce(&mut Value),
) -> Result<Write, HoldError> {
    let rkey = stats_rkey(owner, repository);
    let existing = repo.get_record(STATS, &rkey)?;
    let mut rec = match &existing {
        Some((_, b)) => record_json(b)?,
        None => HoldStats {
            owner_did: owner.to_string(),
            repository: repository.to_string(),
            pull_count: 0,
            push_count: 0,
            last_pull: None,
            last_push: None,
            updated_at: now.to_string(),
        }
        .to_value(),
    };
    change(&mut rec);
    rec["updatedAt"] = json!(now);
    let record = record_cbor(&rec)?;
    Ok(if existing.is_some() {
        Write::Update {
            collection: STATS.into(),
            rkey,
            record,
        }
    } else {
        Write::Create {
            collection: STATS.into(),
            rkey,
            record,
        }
    })
}
