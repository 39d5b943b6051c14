//! The hold admin panel at `/admin` (atcr-spec 5.8). Only the captain (the `owner` of
//! `io.atcr.hold.captain`) gets in: every handler re-reads the captain record and compares
//! it with the session's DID, so a captain change takes effect on the next request.
//!
//! Changes are commits to the hold's embedded PDS (`HoldPds::write_blocking`, one commit
//! each, planned against the current repo state under the writer lock), so they reach the
//! firehose like any other record write. Usage per crew member comes from the registry's
//! blob links grouped by repository owner (the hold does not write `io.atcr.hold.layer`
//! records yet). Quotas are the hold's `[hold] tiers` (enforced on push and notifyManifest).

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::views::{human_size, AdminPage, CrewRow, GcPage, GcRow, RemoveConfirm, UsageRow};
use super::{read_form, redirect, render, Ctx, Form, WebError, WebResult};
use crate::app::http::{query, query_get};
use crate::app::AppState;
use crate::atproto::repo::Write;
use crate::pds::permissions::{role_permissions, CrewMember, Permission};
use crate::pds::records::{crew_rkey, CAPTAIN, CREW, SELF};
use crate::pds::{record_cbor, HoldPds};

/// Usage per member DID from `io.atcr.hold.layer` records (atcr-spec 5.4: the sum of each
/// user's unique layer digests), read from the hold's layer index (per-user totals, kept in
/// each commit); `None` when the hold has no layer records.
async fn layer_usage(
    hold: &HoldPds,
) -> Result<Option<std::collections::BTreeMap<String, (u64, u64)>>, WebError> {
    let all = hold
        .store()
        .run(|s| s.layer_usage_all())
        .await
        .map_err(|e: crate::pds::store::HoldStoreError| WebError::Internal(e.to_string()))?;
    let out: std::collections::BTreeMap<String, (u64, u64)> = all.into_iter().collect();
    Ok((!out.is_empty()).then_some(out))
}

/// How many crew records the panel lists (a hold's crew is small; the page says if cut).
const MAX_CREW: usize = 1000;

fn hold(state: &AppState) -> Result<&Arc<HoldPds>, WebError> {
    state
        .hold
        .as_ref()
        .ok_or_else(|| WebError::NotFound("This server does not run a hold.".into()))
}

/// The captain's session, or a redirect to the admin login.
async fn captain<'a>(
    state: &AppState,
    ctx: &'a Ctx,
) -> Result<Result<&'a str, WebResult>, WebError> {
    let hold = hold(state)?;
    let Some(user) = ctx.user() else {
        return Ok(Err(Ok(redirect("/admin/login", &[]))));
    };
    let owner = hold
        .captain()
        .await?
        .ok_or_else(|| WebError::Internal("the captain record is missing".into()))?
        .owner;
    if user.did != owner {
        return Err(WebError::Forbidden(format!(
            "{} is not this hold's captain; log out and log in as the captain.",
            user.handle
        )));
    }
    Ok(Ok(&user.did))
}

macro_rules! require_captain {
    ($state:expr, $ctx:expr) => {
        match captain($state, $ctx).await? {
            Ok(did) => did,
            Err(resp) => return resp,
        }
    };
}

/// Is `did` the hold's captain? (The admin login checks this before asking the PDS.)
pub async fn is_captain(state: &AppState, did: &str) -> Result<bool, WebError> {
    Ok(hold(state)?.captain().await?.map(|c| c.owner) == Some(did.to_string()))
}

async fn crew_records(hold: &HoldPds) -> Result<Vec<CrewMember>, WebError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = hold
            .list_records(CREW, 100, cursor.as_deref(), false)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.rkey.clone());
        let n = page.len();
        out.extend(
            page.iter()
                .filter_map(|r| CrewMember::from_record(&r.value)),
        );
        if n < 100 || out.len() >= MAX_CREW {
            break;
        }
    }
    Ok(out)
}

pub async fn dashboard(state: &Arc<AppState>, ctx: &Ctx, req: &Request<Incoming>) -> WebResult {
    let owner = require_captain!(state, ctx).to_string();
    let hold = hold(state)?;
    let q = query(req.uri());
    let flash = query_get(&q, "ok").or(query_get(&q, "err")).unwrap_or("");
    let flash_error = query_get(&q, "err").is_some();
    let captain_rec = hold
        .get_record(CAPTAIN, SELF)
        .await?
        .map(|r| r.value)
        .unwrap_or_default();
    let flag = |k: &str| {
        captain_rec
            .get(k)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };

    let usage = state
        .registry
        .usage_by_identity()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    // Repositories are named by handle or DID; fold both onto the DID (a name that does not
    // resolve stays as it is), so one user is one row with one count.
    let resolver = state.auth.resolver();
    let mut by_user: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (ident, (blobs, bytes)) in &usage {
        let did = if ident.starts_with("did:") {
            ident.clone()
        } else {
            resolver.resolve_did_of(ident).await.unwrap_or_default()
        };
        let e = by_user
            .entry(if did.is_empty() { ident.clone() } else { did })
            .or_default();
        e.0 += blobs;
        e.1 += bytes;
    }
    let mut by_did: std::collections::BTreeMap<String, (u64, u64)> = by_user
        .iter()
        .filter(|(k, _)| k.starts_with("did:"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let (usage_source, crew_unit) = match layer_usage(hold).await? {
        Some(layers) => {
            by_did = layers;
            (
                "Usage: the distinct layers each member pushed, from the hold's io.atcr.hold.layer records (what quotas count).",
                "layers",
            )
        }
        None => (
            "Usage: the distinct blobs (layers and configs) in each member's repositories on this registry (the hold has no io.atcr.hold.layer records yet).",
            "blobs",
        ),
    };
    let crew_members: Vec<CrewMember> = crew_records(hold).await?;
    let is_crew = |did: &str| crew_members.iter().any(|c| c.member == did);
    let mut sizes: Vec<(&String, &(u64, u64))> = by_user.iter().collect();
    sizes.sort_by_key(|(_, (_, bytes))| std::cmp::Reverse(*bytes));
    let mut top_users = Vec::new();
    for (key, (blobs, bytes)) in sizes.into_iter().take(10) {
        let (who, did) = if key.starts_with("did:") {
            let handle = match resolver.resolve(key).await {
                Ok(id) => id.handle.unwrap_or_else(|| key.clone()),
                Err(_) => key.clone(),
            };
            (handle, key.clone())
        } else {
            (key.clone(), String::new())
        };
        top_users.push(UsageRow {
            not_crew: did.is_empty() || !is_crew(&did),
            who,
            did,
            blobs: *blobs,
            size: human_size(*bytes),
        });
    }

    let tiers = state.hold_api.as_ref().map(|h| h.tiers());
    let mut crew = Vec::new();
    for c in crew_members {
        let handle = match resolver.resolve(&c.member).await {
            Ok(id) => id.handle.unwrap_or_else(|| c.member.clone()),
            Err(_) => c.member.clone(),
        };
        let (blobs, bytes) = by_did.get(&c.member).copied().unwrap_or_default();
        let quota = match tiers.and_then(|t| t.for_member(c.tier.as_deref())) {
            _ if c.member == owner => "unlimited (captain)".to_string(),
            Some(t) => format!("{} ({})", human_size(t.quota_bytes), t.name),
            None => "unlimited".to_string(),
        };
        crew.push(CrewRow {
            is_owner: c.member == owner,
            has_read: c.has(Permission::BlobRead),
            has_write: c.has(Permission::BlobWrite),
            has_admin: c.has(Permission::CrewAdmin),
            permissions: c
                .permissions
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            tier: c.tier.clone().unwrap_or_default(),
            role: c.role.clone(),
            usage: human_size(bytes),
            quota,
            blobs,
            handle,
            member: c.member,
        });
    }
    let (blob_count, total) = state
        .registry
        .storage_totals()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let owner_handle = match resolver.resolve(&owner).await {
        Ok(id) => id.handle.unwrap_or_default(),
        Err(_) => String::new(),
    };
    render(&AdminPage {
        chrome: ctx.chrome("Hold admin"),
        hold_did: hold.did().to_string(),
        hold_name: super::views::hold_name(hold.did()),
        owner_handle,
        crew_unit: crew_unit.to_string(),
        owner,
        crew,
        public: flag("public"),
        allow_all_crew: flag("allowAllCrew"),
        bluesky_posts: flag("enableBlueskyPosts"),
        successor: captain_rec
            .get("successor")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        total_size: human_size(total),
        blob_count,
        top_users,
        flash: flash.to_string(),
        flash_error,
        usage_source: usage_source.to_string(),
        quota_note: match tiers {
            Some(t) if t.enabled() => format!(
                "Quotas by tier ([hold] tiers): {}; members without a known tier get \"{}\".",
                t.tiers
                    .iter()
                    .map(|x| format!("{} {}", x.name, human_size(x.quota_bytes)))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.default_tier
            ),
            _ => "No tiers are configured ([hold] tiers is empty): usage is unlimited.".into(),
        },
    })
}

fn back(ok: Result<String, String>) -> WebResult {
    let (k, msg) = match ok {
        Ok(m) => ("ok", m),
        Err(m) => ("err", m),
    };
    // %20, not '+': our query decoder takes '+' literally (media types contain it).
    let v = percent_encoding::utf8_percent_encode(&msg, percent_encoding::NON_ALPHANUMERIC);
    Ok(redirect(&format!("/admin?{k}={v}"), &[]))
}

/// A tier name: short, lowercase letters, digits, `-` and `_` (record field `tier` ≤ 32).
fn valid_tier(t: &str) -> bool {
    t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

async fn resolve_member(state: &AppState, input: &str) -> Result<String, String> {
    let input = input.trim().trim_start_matches('@');
    if input.is_empty() {
        return Err("Give a handle or a DID.".into());
    }
    if input.starts_with("did:") {
        crate::atproto::repo::syntax::validate_did(input)
            .map_err(|e| format!("{input} is not a valid DID: {e}"))?;
        return Ok(input.to_string());
    }
    state
        .auth
        .resolver()
        .resolve_did_of(input)
        .await
        .map_err(|e| format!("cannot resolve {input}: {e}"))
}

async fn commit(hold: &Arc<HoldPds>, writes: Vec<Write>) -> Result<(), WebError> {
    hold.apply_writes(writes).await?;
    Ok(())
}

pub async fn crew_add(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    require_captain!(state, ctx);
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let hold = hold(state)?;
    let member = match resolve_member(state, form.get("member")).await {
        Ok(d) => d,
        Err(e) => return back(Err(e)),
    };
    let role = match form.get("role") {
        r @ ("read" | "write" | "admin") => r,
        _ => return back(Err("Unknown role.".into())),
    };
    let tier = form.get("tier").trim();
    if !valid_tier(tier) {
        return back(Err(
            "A tier is up to 32 lowercase letters, digits, - or _.".into()
        ));
    }
    if hold.crew_member(&member).await?.is_some() {
        return back(Err(format!("{member} is already crew.")));
    }
    let mut rec = serde_json::json!({
        "$type": CREW,
        "member": member,
        "role": role,
        "permissions": role_permissions(role).iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "addedAt": crate::pds::now_rfc3339(),
    });
    // No tier given: the default one, written out (the record then says what applies).
    let default_tier = state
        .hold_api
        .as_ref()
        .map(|h| h.tiers().default_tier.clone())
        .unwrap_or_default();
    let tier = if tier.is_empty() {
        default_tier.as_str()
    } else {
        tier
    };
    if !tier.is_empty() {
        rec["tier"] = tier.into();
    }
    commit(
        hold,
        vec![Write::Create {
            collection: CREW.into(),
            rkey: crew_rkey(&member),
            record: record_cbor(&rec)?,
        }],
    )
    .await?;
    tracing::info!(%member, role, "crew member added from the admin panel");
    back(Ok(format!(
        "Added {} as {role}.",
        form.get("member").trim()
    )))
}

pub async fn crew_edit(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let owner = require_captain!(state, ctx).to_string();
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let hold = hold(state)?;
    let member = form.get("member").to_string();
    let tier = form.get("tier").trim().to_string();
    if !valid_tier(&tier) {
        return back(Err(
            "A tier is up to 32 lowercase letters, digits, - or _.".into()
        ));
    }
    let mut perms: Vec<&str> = form
        .all("perm")
        .into_iter()
        .filter(|p| Permission::parse(p).is_some())
        .collect();
    perms.sort();
    perms.dedup();
    if member == owner && perms.len() < 3 {
        return back(Err("The captain keeps every permission.".into()));
    }
    let rkey = crew_rkey(&member);
    let Some(current) = hold.get_record(CREW, &rkey).await? else {
        return back(Err(format!("{member} is not crew.")));
    };
    let mut rec = current.value;
    rec["permissions"] = perms.clone().into();
    match rec.as_object_mut() {
        Some(obj) if tier.is_empty() => {
            obj.remove("tier");
        }
        Some(obj) => {
            obj.insert("tier".into(), tier.clone().into());
        }
        None => return Err(WebError::Internal("crew record is not an object".into())),
    }
    commit(
        hold,
        vec![Write::Update {
            collection: CREW.into(),
            rkey,
            record: record_cbor(&rec)?,
        }],
    )
    .await?;
    tracing::info!(%member, ?perms, %tier, "crew member updated from the admin panel");
    back(Ok(format!("Saved {member}.")))
}

pub async fn crew_remove_confirm(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &Request<Incoming>,
) -> WebResult {
    require_captain!(state, ctx);
    let q = query(req.uri());
    let member = query_get(&q, "member").unwrap_or("").to_string();
    if hold(state)?.crew_member(&member).await?.is_none() {
        return Err(WebError::NotFound(format!("{member} is not crew.")));
    }
    let handle = match state.auth.resolver().resolve(&member).await {
        Ok(id) => id.handle.unwrap_or_else(|| member.clone()),
        Err(_) => member.clone(),
    };
    render(&RemoveConfirm {
        chrome: ctx.chrome("Remove crew member"),
        member,
        handle,
    })
}

pub async fn crew_remove(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let owner = require_captain!(state, ctx).to_string();
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    if form.get("confirm") != "yes" {
        return back(Err("Removal was not confirmed.".into()));
    }
    let member = form.get("member").to_string();
    if member == owner {
        return back(Err("The captain cannot be removed from the crew.".into()));
    }
    let hold = hold(state)?;
    if hold.crew_member(&member).await?.is_none() {
        return back(Err(format!("{member} is not crew.")));
    }
    commit(
        hold,
        vec![Write::Delete {
            collection: CREW.into(),
            rkey: crew_rkey(&member),
        }],
    )
    .await?;
    tracing::info!(%member, "crew member removed from the admin panel");
    back(Ok(format!("Removed {member}.")))
}

pub async fn settings(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    require_captain!(state, ctx);
    let form: Form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let hold = hold(state)?;
    let successor = form.get("successor").trim().to_string();
    if !successor.is_empty() {
        if let Err(e) = crate::atproto::repo::syntax::validate_did(&successor) {
            return back(Err(format!("The successor must be a DID: {e}")));
        }
        if successor == hold.did() {
            return back(Err("A hold cannot be its own successor.".into()));
        }
    }
    let Some(current) = hold.get_record(CAPTAIN, SELF).await? else {
        return Err(WebError::Internal("the captain record is missing".into()));
    };
    let mut rec = current.value;
    let Some(obj) = rec.as_object_mut() else {
        return Err(WebError::Internal("captain record is not an object".into()));
    };
    for key in ["public", "allowAllCrew", "enableBlueskyPosts"] {
        obj.insert(key.into(), form.has(key).into());
    }
    if successor.is_empty() {
        obj.remove("successor");
    } else {
        obj.insert("successor".into(), successor.into());
    }
    commit(
        hold,
        vec![Write::Update {
            collection: CAPTAIN.into(),
            rkey: SELF.into(),
            record: record_cbor(&rec)?,
        }],
    )
    .await?;
    tracing::info!("hold settings changed from the admin panel");
    back(Ok("Settings saved.".into()))
}

/// Most blobs one admin GC run deletes: the preview's digests travel in the run's form
/// (64 KiB at most), so the run deletes exactly what was reviewed.
const GC_BATCH: usize = 500;

/// Each blob's size (0 when it is gone), read before a run: the blobs are gone after it.
async fn blob_sizes(
    state: &AppState,
    digests: &[crate::oci::types::Digest],
) -> std::collections::HashMap<String, u64> {
    let mut sizes = std::collections::HashMap::new();
    for d in digests {
        let size = state.registry.blob_stat(d).await.ok().flatten();
        sizes.insert(d.to_string(), size.unwrap_or(0));
    }
    sizes
}

/// Table rows and their total size.
fn gc_rows(
    digests: &[crate::oci::types::Digest],
    sizes: &std::collections::HashMap<String, u64>,
) -> (Vec<GcRow>, u64) {
    let mut total = 0;
    let rows = digests
        .iter()
        .map(|d| {
            let size = sizes.get(&d.to_string()).copied().unwrap_or(0);
            total += size;
            GcRow {
                digest: d.to_string(),
                size: human_size(size),
            }
        })
        .collect();
    (rows, total)
}

pub async fn gc_preview(state: &Arc<AppState>, ctx: &Ctx) -> WebResult {
    require_captain!(state, ctx);
    let mut candidates =
        crate::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), true)
            .await
            .map_err(WebError::Internal)?;
    let more = candidates.len().saturating_sub(GC_BATCH);
    candidates.truncate(GC_BATCH);
    let (rows, total) = gc_rows(&candidates, &blob_sizes(state, &candidates).await);
    render(&GcPage {
        chrome: ctx.chrome("Garbage collection"),
        rows,
        total: human_size(total),
        ran: false,
        more,
        skipped: 0,
    })
}

/// Deletes the blobs the preview listed (sent back in the form), each re-checked: one that
/// became referenced since the preview is kept.
pub async fn gc_run(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    require_captain!(state, ctx);
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let mut reviewed = Vec::new();
    for d in form.all("digest").into_iter().take(GC_BATCH) {
        let d: crate::oci::types::Digest = d
            .parse()
            .map_err(|_| WebError::BadRequest(format!("not a digest: {d:?}")))?;
        reviewed.push(d);
    }
    let sizes = blob_sizes(state, &reviewed).await;
    let only: std::collections::HashSet<String> = sizes.keys().cloned().collect();
    let swept = if only.is_empty() {
        Vec::new()
    } else {
        crate::gc::collect_garbage_among(
            &state.registry,
            state.hold_api.as_deref(),
            false,
            Some(&only),
        )
        .await
        .map_err(WebError::Internal)?
    };
    let (rows, total) = gc_rows(&swept, &sizes);
    tracing::info!(
        blobs = rows.len(),
        reviewed = only.len(),
        "garbage collection run from the admin panel"
    );
    render(&GcPage {
        chrome: ctx.chrome("Garbage collection"),
        skipped: only.len() - rows.len(),
        rows,
        total: human_size(total),
        ran: true,
        more: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers() {
        assert!(valid_tier(""));
        assert!(valid_tier("deckhand"));
        assert!(valid_tier("tier-2_b"));
        assert!(!valid_tier("Deckhand"));
        assert!(!valid_tier("a b"));
        assert!(!valid_tier(&"x".repeat(33)));
    }
}
