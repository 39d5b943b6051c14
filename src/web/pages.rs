//! Account pages: login/logout (handle + app password, the same PDS login the Docker token
//! endpoint uses), settings (default hold from the sailor profile, data export) and
//! `/install`. The index-backed pages are in [`super::catalog`].

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::session::{key_of, set_cookie, SESSION_COOKIE, SESSION_TTL_SECS};
use super::views::{age, InstallPage, LoginPage, SessionRow, SettingsPage};
use super::{read_form, redirect, render, safe_next, Ctx, WebError, WebResult};
use crate::app::http::{full, query, query_get, Body};
use crate::app::AppState;
use crate::auth::AuthError;
use crate::registry::store::now_unix;

/// The user's `io.atcr.*` collections the export contains.
const EXPORT_COLLECTIONS: [&str; 6] = [
    "io.atcr.manifest",
    "io.atcr.tag",
    "io.atcr.sailor.profile",
    "io.atcr.sailor.star",
    "io.atcr.repo.page",
    "io.atcr.sailor.webhook",
];
/// Why there is no sign-in in local mode, and what to do about it.
const LOCAL_MODE_LOGIN: &str = "This registry runs in local mode (auth.mode = \"local\"): there \
are no accounts and no sign-in, and pushes need no login. To sign in with an ATProto handle and \
an app password, start atcr without --local (auth.mode = \"atproto\").";

/// Records per collection in one export (100 pages of `listRecords`).
const EXPORT_MAX_PAGES: usize = 100;

pub fn login_form<B>(
    state: &AppState,
    ctx: &Ctx,
    req: &Request<B>,
    admin: bool,
    identifier: &str,
    error: &str,
) -> WebResult {
    let q = query(req.uri());
    let next = safe_next(query_get(&q, "next").unwrap_or(if admin { "/admin" } else { "/" }));
    let error = if ctx.local_mode && error.is_empty() {
        LOCAL_MODE_LOGIN
    } else {
        error
    };
    render(&LoginPage {
        chrome: ctx.chrome(if admin { "Hold admin login" } else { "Log in" }),
        admin,
        oauth: state.auth.oauth.is_some(),
        next: next.to_string(),
        identifier: identifier.to_string(),
        error: error.to_string(),
    })
}

fn login_again(
    state: &AppState,
    ctx: &Ctx,
    admin: bool,
    next: &str,
    identifier: &str,
    status: StatusCode,
    error: &str,
) -> WebResult {
    let mut resp = render(&LoginPage {
        chrome: ctx.chrome("Log in"),
        admin,
        oauth: state.auth.oauth.is_some(),
        next: next.to_string(),
        identifier: identifier.to_string(),
        error: error.to_string(),
    })?;
    *resp.status_mut() = status;
    Ok(resp)
}

pub async fn login(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: Request<Incoming>,
    admin: bool,
) -> WebResult {
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let identifier = form
        .get("identifier")
        .trim()
        .trim_start_matches('@')
        .to_string();
    let next = safe_next(form.get("next")).to_string();
    if state.auth.mode() == crate::auth::AuthMode::None {
        return login_again(
            state,
            ctx,
            admin,
            &next,
            &identifier,
            StatusCode::BAD_REQUEST,
            LOCAL_MODE_LOGIN,
        );
    }
    if identifier.is_empty() || form.get("password").is_empty() {
        return login_again(
            state,
            ctx,
            admin,
            &next,
            &identifier,
            StatusCode::BAD_REQUEST,
            "Give your handle (or DID) and an app password.",
        );
    }
    if admin {
        // Only the captain may log in here: check before the password goes anywhere.
        let did = match state.auth.resolver().resolve_did_of(&identifier).await {
            Ok(d) => d,
            Err(e) => {
                return login_again(
                    state,
                    ctx,
                    admin,
                    &next,
                    &identifier,
                    StatusCode::BAD_REQUEST,
                    &format!("Cannot resolve {identifier}: {e}"),
                )
            }
        };
        if !super::admin::is_captain(state, &did).await? {
            return login_again(
                state,
                ctx,
                admin,
                &next,
                &identifier,
                StatusCode::FORBIDDEN,
                &format!("{identifier} is not this hold's captain."),
            );
        }
    }
    let peer = ctx.peer.ip().to_string();
    let session = match state
        .auth
        .password_login(
            &identifier,
            form.get("password"),
            &peer,
            Some(user_agent.as_str()),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let (status, msg) = match &e {
                AuthError::BadCredentials(_) => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong handle or app password.".to_string(),
                ),
                AuthError::TooManyFailures => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
                AuthError::MainPassword => (StatusCode::UNAUTHORIZED, e.to_string()),
                AuthError::Identity { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
                AuthError::PdsUnavailable(_) => (
                    StatusCode::BAD_GATEWAY,
                    format!("Your PDS did not answer ({e}). Try again in a minute."),
                ),
                _ => return Err(WebError::Internal(e.to_string())),
            };
            return login_again(state, ctx, admin, &next, &identifier, status, &msg);
        }
    };
    // A new session id at every login (no fixation); the old one, if any, goes away.
    if let Some((old, _)) = &ctx.session {
        state.web.sessions.delete(old).await?;
    }
    let (id, _) = state
        .web
        .sessions
        .create(&session.did, &session.handle, &user_agent)
        .await?;
    tracing::info!(did = %session.did, admin, "web login");
    let cookie = set_cookie(SESSION_COOKIE, &id, SESSION_TTL_SECS, ctx.secure, "Lax");
    Ok(redirect(&next, &[cookie]))
}

pub async fn logout(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    if ctx.session.is_none() {
        return Ok(redirect("/", &[]));
    }
    ctx.check_csrf(&form)?;
    if let Some((id, s)) = &ctx.session {
        state.web.sessions.delete(id).await?;
        super::signin::release_pds_access_if_unused(state, &s.did).await;
    }
    let cookie = set_cookie(SESSION_COOKIE, "", 0, ctx.secure, "Lax");
    Ok(redirect("/", &[cookie]))
}

pub fn install(state: &AppState, ctx: &Ctx) -> WebResult {
    render(&InstallPage {
        chrome: ctx.chrome("Install"),
        host: ctx.host.clone(),
        base: state.auth.base_url(Some(&ctx.host)),
        example_handle: ctx
            .user()
            .map(|u| u.handle.clone())
            .unwrap_or_else(|| "alice.bsky.social".into()),
    })
}

/// Where an anonymous visitor of a members-only page is sent.
fn login_redirect(here: &str) -> Response<Body> {
    redirect(&format!("/login?next={here}"), &[])
}

pub async fn settings(state: &Arc<AppState>, ctx: &Ctx, req_uri: &http::Uri) -> WebResult {
    if ctx.user().is_none() {
        return Ok(login_redirect("/settings"));
    }
    let user = ctx.user().expect("checked above");
    let (default_hold, profile_error) = match read_profile(state, &user.did).await {
        Ok(h) => (h, String::new()),
        Err(e) => (String::new(), format!("Your PDS could not be read: {e}")),
    };
    let current = ctx
        .session
        .as_ref()
        .map(|(id, _)| key_of(id))
        .unwrap_or_default();
    let now = now_unix();
    let sessions = state
        .web
        .sessions
        .list(&user.did)
        .await?
        .into_iter()
        .map(|e| SessionRow {
            current: e.key == current,
            started: if e.session.created_unix == 0 {
                "before this list existed".into()
            } else {
                age(e.session.created_unix, now)
            },
            expires: match e.session.expires_unix.saturating_sub(now) {
                left if left < 86_400 => "under a day".into(),
                left => format!("{} days", (left + 43_200) / 86_400),
            },
            browser: super::views::browser_name(&e.session.user_agent),
            user_agent: if e.session.user_agent.is_empty() {
                "unknown browser".into()
            } else {
                e.session.user_agent
            },
            key: e.key,
        })
        .collect();
    let q = query(req_uri);
    let devices = state
        .auth
        .devices
        .list(&user.did)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .into_iter()
        .map(|d| super::views::DeviceRow {
            id: d.id,
            name: d.name,
            created: age(d.created_unix, now),
            last_used: age(d.last_used_unix, now),
            addr: d.addr,
        })
        .collect();
    render(&SettingsPage {
        devices,
        devices_flash: match query_get(&q, "devices_revoked").and_then(|n| n.parse::<usize>().ok())
        {
            None => String::new(),
            Some(0) => "No device was revoked.".into(),
            Some(1) => "Revoked 1 device.".into(),
            Some(n) => format!("Revoked {n} devices."),
        },
        signed_in_with: if user.oauth {
            "ATProto OAuth".into()
        } else {
            "an app password".into()
        },
        chrome: ctx.chrome("Settings"),
        did: user.did.clone(),
        handle: user.handle.clone(),
        default_hold,
        profile_error,
        sessions,
        // A count, not a message, in the query: a link cannot put words on this page.
        flash: match query_get(&q, "revoked").and_then(|n| n.parse::<usize>().ok()) {
            None => String::new(),
            Some(0) => "No session was signed out: it had already ended.".into(),
            Some(1) => "Signed out 1 session.".into(),
            Some(n) => format!("Signed out {n} sessions."),
        },
    })
}

/// `POST /settings/sessions`: `revoke` = a session key from the list, or `others` for every
/// session of this user but the current one. Only the user's own sessions can be named.
pub async fn revoke_sessions(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> WebResult {
    let form = read_form(req).await?;
    let Some((id, session)) = &ctx.session else {
        return Ok(login_redirect("/settings"));
    };
    ctx.check_csrf(&form)?;
    let current = key_of(id);
    let target = form.get("revoke");
    let ended = if target == "others" {
        state
            .web
            .sessions
            .revoke_others(&session.did, &current)
            .await?
    } else if target.is_empty() || target == current {
        return Err(WebError::BadRequest(
            "Pick another session; log out to end this one.".into(),
        ));
    } else {
        usize::from(state.web.sessions.revoke(&session.did, target).await?)
    };
    tracing::info!(did = %session.did, ended, "web sessions revoked");
    Ok(redirect(
        &format!("/settings?revoked={ended}#sessions-h"),
        &[],
    ))
}

async fn read_profile(state: &AppState, did: &str) -> Result<String, String> {
    let id = state
        .auth
        .resolver()
        .resolve(did)
        .await
        .map_err(|e| e.to_string())?;
    let rec = state
        .auth
        .resolver()
        .xrpc()
        .get_record(&id.pds, did, "io.atcr.sailor.profile", "self")
        .await
        .map_err(|e| e.to_string())?;
    Ok(rec
        .and_then(|r| {
            r.value
                .get("defaultHold")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default())
}

/// `POST /settings/export`: every `io.atcr.*` record of the user, read from their PDS (the
/// source of truth, not our index), as one JSON attachment.
pub async fn export(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    if ctx.user().is_none() {
        return Ok(login_redirect("/settings"));
    }
    ctx.check_csrf(&form)?;
    let did = ctx.user().expect("checked above").did.clone();
    let id = state
        .auth
        .resolver()
        .resolve(&did)
        .await
        .map_err(|e| WebError::Upstream(format!("cannot resolve {did}: {e}")))?;
    let xrpc = state.auth.resolver().xrpc();
    let mut collections = serde_json::Map::new();
    for c in EXPORT_COLLECTIONS {
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..EXPORT_MAX_PAGES {
            let page = xrpc
                .list_records(&id.pds, &did, c, 100, cursor.as_deref())
                .await
                .map_err(|e| WebError::Upstream(format!("your PDS ({}) failed: {e}", id.pds)))?;
            let n = page.records.len();
            records.extend(
                page.records
                    .into_iter()
                    .map(|r| serde_json::json!({"uri": r.uri, "cid": r.cid, "value": r.value})),
            );
            cursor = page.cursor;
            if cursor.is_none() || n == 0 {
                break;
            }
        }
        collections.insert(c.to_string(), records.into());
    }
    let doc = serde_json::json!({
        "did": did,
        "pds": id.pds,
        "exportedAt": crate::pds::now_rfc3339(),
        "collections": collections,
    });
    let body = serde_json::to_vec_pretty(&doc).map_err(|e| WebError::Internal(e.to_string()))?;
    let name = format!("atcr-export-{}.json", did.replace(':', "_"));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(
            http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(full(body))
        .expect("valid headers"))
}
