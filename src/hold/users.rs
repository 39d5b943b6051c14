//! Per-user operations of the hold API: `requestCrew`, `getQuota`, `getLayersForManifest`,
//! `exportUserData`, `deleteUserData` (records only, never blobs; the captain's crew record
//! stays), `setStats`, `listTiers`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::manifest::{collection_where, layer_records, stats_write, user_layers};
use super::{check_did, HoldApiError, HoldService, Result, LAYER, POST, STATS};
use crate::atproto::records::{HoldCrew, LexiconRecord};
use crate::atproto::repo::Write;
use crate::pds::permissions::{role_permissions, Action, Decision, Permission};
use crate::pds::records::{crew_rkey, CREW};
use crate::pds::{now_rfc3339, record_cbor, HoldError};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestCrew {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SetStats {
    #[serde(rename = "ownerDid")]
    pub owner_did: String,
    pub repository: String,
    #[serde(rename = "pullCount", default)]
    pub pull_count: Option<u64>,
    #[serde(rename = "pushCount", default)]
    pub push_count: Option<u64>,
    #[serde(rename = "lastPull", default)]
    pub last_pull: Option<String>,
    #[serde(rename = "lastPush", default)]
    pub last_push: Option<String>,
}

impl HoldService {
    /// `requestCrew`: joins the crew (any authenticated DID when `allowAllCrew`, else only
    /// the captain). Self-registration grants at most `blob:read` + `blob:write`;
    /// `crew:admin` is never self-granted.
    pub async fn request_crew(&self, caller: Option<&str>, req: RequestCrew) -> Result<Value> {
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        match self
            .pds
            .authorize(Some(caller), Action::RequestCrew)
            .await?
        {
            Decision::AlreadyMember => {
                let rkey = crew_rkey(caller);
                return Ok(json!({
                    "status": "already_member",
                    "uri": format!("at://{}/{CREW}/{rkey}", self.pds.did()),
                    "message": "already a crew member of this hold",
                }));
            }
            Decision::Deny(d) => return Err(d.into()),
            Decision::Allow => {}
        }
        let role = req.role.unwrap_or_else(|| "member".into());
        if role.is_empty() || role.len() > 32 {
            return Err(HoldApiError::InvalidRequest(
                "role must be 1-32 characters".into(),
            ));
        }
        let allowed = [Permission::BlobRead, Permission::BlobWrite];
        let mut perms: Vec<&'static str> = match req.permissions {
            None => role_permissions(&role)
                .iter()
                .filter(|p| allowed.contains(p))
                .map(|p| p.as_str())
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for p in &list {
                    match Permission::parse(p) {
                        Some(p) if allowed.contains(&p) => out.push(p.as_str()),
                        _ => {
                            return Err(HoldApiError::InvalidRequest(format!(
                                "permission {p:?} cannot be requested (blob:read, blob:write)"
                            )))
                        }
                    }
                }
                out
            }
        };
        if perms.is_empty() {
            perms = vec!["blob:read", "blob:write"];
        }
        perms.sort_unstable();
        perms.dedup();
        let rkey = crew_rkey(caller);
        let rec = HoldCrew {
            member: caller.to_string(),
            role: role.to_string(),
            permissions: perms.iter().map(|p| p.to_string()).collect(),
            added_at: now_rfc3339(),
            tier: (!self.tiers.default_tier.is_empty()).then(|| self.tiers.default_tier.clone()),
        };
        let record = record_cbor(&rec.to_value())?;
        let committed = self
            .pds
            .apply_writes(vec![Write::Create {
                collection: CREW.into(),
                rkey: rkey.clone(),
                record,
            }])
            .await?;
        let cid = self
            .pds
            .get_record(CREW, &rkey)
            .await?
            .map(|r| r.cid.to_string());
        tracing::info!(member = %caller, rev = ?committed.map(|c| c.rev), "crew member added by requestCrew");
        Ok(json!({
            "status": "created",
            "uri": format!("at://{}/{CREW}/{rkey}", self.pds.did()),
            "cid": cid,
        }))
    }

    /// `getQuota?userDid=`: the user themself or an admin.
    pub async fn get_quota(&self, caller: Option<&str>, user: &str) -> Result<Value> {
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        if !check_did(user) {
            return Err(HoldApiError::InvalidUserDid(format!(
                "{user:?} is not a DID"
            )));
        }
        self.require_self_or_admin(caller, user).await?;
        let u = user.to_string();
        // O(1): the per-user totals of the layer index.
        let (unique_blobs, total) = self
            .pds
            .store()
            .run(move |s| s.layer_usage(&u))
            .await
            .map_err(HoldError::from)?;
        let captain = self.pds.captain().await?;
        let mut out = json!({
            "userDid": user,
            "uniqueBlobs": unique_blobs,
            "totalSize": total,
        });
        let is_captain = captain.is_some_and(|c| c.owner == user);
        if !is_captain {
            let crew = self.pds.crew_member(user).await?;
            if let Some(t) = self
                .tiers
                .for_member(crew.as_ref().and_then(|c| c.tier.as_deref()))
            {
                out["tier"] = json!(t.name);
                out["limit"] = json!(t.quota_bytes);
            }
        }
        Ok(out)
    }

    /// `getLayersForManifest?manifest=<at-uri>`: readable by whoever may read blobs.
    pub async fn layers_for_manifest(&self, caller: Option<&str>, uri: &str) -> Result<Value> {
        self.require(caller, Action::ReadBlob).await?;
        crate::atproto::repo::syntax::validate_at_uri(uri)
            .map_err(|e| HoldApiError::InvalidRequest(format!("manifest: {e}")))?;
        let u = uri.to_string();
        let layers = self
            .pds
            .read(move |repo| {
                let rkeys = repo.store().inner().layers_of_manifest(&u)?;
                layer_records(repo, rkeys.into_iter().map(|(rkey, _)| rkey))
            })
            .await?;
        Ok(json!({"layers": layers.into_iter().map(|(_, v)| v).collect::<Vec<_>>()}))
    }

    /// `exportUserData`: everything this hold stores about the caller.
    pub async fn export_user_data(&self, caller: Option<&str>) -> Result<Value> {
        let user = caller.ok_or(HoldApiError::AuthRequired)?.to_string();
        // The export shows the counts up to now, also those not written yet.
        if let Err(e) = self.stats.flush_all().await {
            tracing::warn!(error = %e, "pending hold stats not written before an export");
        }
        let captain = self.pds.captain().await?;
        let crew = self.pds.get_record(CREW, &crew_rkey(&user)).await?;
        let u = user.clone();
        let (layers, stats, posts) = self
            .pds
            .read(move |repo| {
                let layers = user_layers(repo, &u)?;
                let stats = collection_where(repo, STATS, |v| v["ownerDid"] == u.as_str())?;
                // Posts mention the user's DID in their text (see manifest::announcement).
                let posts = collection_where(repo, POST, |v| {
                    v["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with(&format!("{u} ")))
                })?;
                Ok((layers, stats, posts))
            })
            .await?;
        let did = self.pds.did().to_string();
        Ok(json!({
            "exportedAt": now_rfc3339(),
            "holdDid": did,
            "userDid": user,
            "isCaptain": captain.is_some_and(|c| c.owner == user),
            "crewRecord": crew.filter(|c| c.value["member"] == user.as_str()).map(|c| json!({
                "role": c.value["role"],
                "tier": c.value["tier"],
                "addedAt": c.value["addedAt"],
                "permissions": c.value["permissions"],
            })),
            "layerRecords": layers.iter().map(|(_, v)| json!({
                "digest": v["digest"], "size": v["size"], "mediaType": v["mediaType"],
                "manifest": v["manifest"], "createdAt": v["createdAt"],
            })).collect::<Vec<_>>(),
            "statsRecords": stats.iter().map(|(_, v)| json!({
                "repository": v["repository"], "pullCount": v["pullCount"],
                "pushCount": v["pushCount"], "lastPull": v["lastPull"],
                "lastPush": v["lastPush"], "updatedAt": v["updatedAt"],
            })).collect::<Vec<_>>(),
            "blueskyPosts": posts.iter().map(|(k, v)| json!({
                "uri": format!("at://{did}/{POST}/{k}"), "text": v["text"], "createdAt": v["createdAt"],
            })).collect::<Vec<_>>(),
        }))
    }

    /// `deleteUserData`: deletes the caller's crew, layer and stats records in one commit.
    /// Blobs stay (they are shared across users). The captain keeps their crew record.
    pub async fn delete_user_data(&self, caller: Option<&str>) -> Result<Value> {
        let user = caller.ok_or(HoldApiError::AuthRequired)?.to_string();
        // Pending counts are written first, so no later batch re-creates a deleted record.
        self.stats.flush_all().await?;
        let is_captain = self.pds.captain().await?.is_some_and(|c| c.owner == user);
        let pds = self.pds.clone();
        let u = user.clone();
        let (crew_deleted, layers_deleted, stats_deleted) =
            tokio::task::spawn_blocking(move || {
                let mut counts = (false, 0usize, 0usize);
                pds.write_blocking(|repo| {
                    let mut writes = Vec::new();
                    let rkey = crew_rkey(&u);
                    if !is_captain && repo.get_record(CREW, &rkey)?.is_some() {
                        writes.push(Write::Delete {
                            collection: CREW.into(),
                            rkey,
                        });
                        counts.0 = true;
                    }
                    for rkey in repo.store().inner().layer_rkeys_of_user(&u)? {
                        writes.push(Write::Delete {
                            collection: LAYER.into(),
                            rkey,
                        });
                        counts.1 += 1;
                    }
                    for (rkey, _) in collection_where(repo, STATS, |v| v["ownerDid"] == u.as_str())?
                    {
                        writes.push(Write::Delete {
                            collection: STATS.into(),
                            rkey,
                        });
                        counts.2 += 1;
                    }
                    Ok(writes)
                })
                .map(|_| counts)
            })
            .await
            .map_err(|e| crate::pds::HoldError::Internal(e.to_string()))??;
        Ok(json!({
            "success": true,
            "crewDeleted": crew_deleted,
            "layersDeleted": layers_deleted,
            "statsDeleted": stats_deleted,
        }))
    }

    /// `setStats`: sets counters of a repository's stats record. Crew `blob:write`, for the
    /// caller's own repositories (admins for anyone's).
    pub async fn set_stats(&self, caller: Option<&str>, req: SetStats) -> Result<Value> {
        self.require(caller, Action::WriteBlob).await?;
        let caller = caller.ok_or(HoldApiError::AuthRequired)?;
        if !check_did(&req.owner_did) {
            return Err(HoldApiError::InvalidOwner(format!(
                "{:?} is not a DID",
                req.owner_did
            )));
        }
        if req.owner_did != caller && !self.is_admin(caller).await? {
            return Err(HoldApiError::InvalidOwner(
                "stats can only be set for your own repositories".into(),
            ));
        }
        if req.repository.is_empty() || req.repository.len() > 256 {
            return Err(HoldApiError::InvalidRepository(
                "repository must be 1-256 characters".into(),
            ));
        }
        // Counts still in memory first, so the absolute values set here are the last word.
        if let Err(e) = self.stats.flush_all().await {
            tracing::warn!(error = %e, "pending hold stats not written before setStats");
        }
        let now = now_rfc3339();
        self.pds
            .clone()
            .write_async(move |repo| {
                Ok(vec![stats_write(
                    repo,
                    &req.owner_did,
                    &req.repository,
                    &now,
                    |s| {
                        if let Some(n) = req.pull_count {
                            s["pullCount"] = json!(n);
                        }
                        if let Some(n) = req.push_count {
                            s["pushCount"] = json!(n);
                        }
                        if let Some(t) = &req.last_pull {
                            s["lastPull"] = json!(t);
                        }
                        if let Some(t) = &req.last_push {
                            s["lastPush"] = json!(t);
                        }
                    },
                )?])
            })
            .await?;
        Ok(json!({"success": true}))
    }

    /// Every digest a layer record names (garbage collection keeps these blobs).
    pub async fn referenced_digests(&self) -> Result<std::collections::HashSet<String>> {
        // The distinct (user, digest) pairs of the layer index, not every record.
        let mut keep = self
            .pds
            .store()
            .run(|s| s.layer_digests())
            .await
            .map_err(HoldError::from)?;
        keep.extend(self.unnotified_completions().await?);
        // SBOMs and vulnerability reports of scan records.
        for r in crate::scan::service::list_records(&self.pds).await? {
            keep.extend(r.sbom.iter().chain(&r.report).map(|d| d.to_string()));
        }
        Ok(keep)
    }

    /// `listTiers`: public.
    pub fn list_tiers(&self) -> Value {
        json!({
            "defaultTier": self.tiers.default_tier,
            "tiers": self.tiers.tiers.iter().map(|t| json!({
                "name": t.name,
                "quota": t.quota_bytes,
            })).collect::<Vec<_>>(),
        })
    }
}
