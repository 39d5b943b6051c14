//! Sign-in pages beyond the app-password form ([`super::pages::login`]):
//! - ATProto OAuth: `POST /auth/oauth/login` (a handle -> the PDS's own sign-in and consent
//!   pages) and `GET /auth/oauth/callback` (-> a browser session);
//! - `/device`: the signed-in user approves or denies a credential helper's code;
//! - `/settings/devices` (revoke devices) and `/settings/access` (end everything: browser
//!   sessions, devices, the OAuth grant and the app-password session, at the PDS too).
//!
//! The OAuth start answers with a small page that moves on by `<meta refresh>` instead of a
//! redirect: the pages' CSP says `form-action 'self'`, which browsers also apply to a
//! form's redirect to another origin (the PDS).

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::session::{cookie, random_token, set_cookie, SESSION_COOKIE, SESSION_TTL_SECS};
use super::views::{age, DevicePage, LoginPage, OAuthRedirectPage};
use super::{read_form, redirect, render, safe_next, Ctx, WebError, WebResult};
use crate::app::http::{query, query_get};
use crate::app::AppState;
use crate::auth::oauth::{OAuthError, PENDING_TTL_SECS};

/// Binds an OAuth sign-in to the browser that started it (checked at the callback).
const OAUTH_COOKIE: &str = "atcr_oauth";

fn login_error(
    ctx: &Ctx,
    next: &str,
    identifier: &str,
    status: StatusCode,
    msg: &str,
) -> WebResult {
    let mut resp = render(&LoginPage {
        chrome: ctx.chrome("Log in"),
        admin: false,
        oauth: true,
        next: next.to_string(),
        identifier: identifier.to_string(),
        error: msg.to_string(),
    })?;
    *resp.status_mut() = status;
    Ok(resp)
}

/// `POST /auth/oauth/login`: handle (or DID) -> PAR at the user's authorization server ->
/// the browser goes to the PDS's sign-in page.
pub async fn oauth_login(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    ctx.check_csrf(&form)?;
    let identifier = form
        .get("identifier")
        .trim()
        .trim_start_matches('@')
        .to_string();
    let next = safe_next(form.get("next")).to_string();
    let Some(client) = &state.auth.oauth else {
        return Err(WebError::NotFound(
            "OAuth sign-in is off on this server; use an app password.".into(),
        ));
    };
    if identifier.is_empty() || identifier.len() > 256 {
        return login_error(
            ctx,
            &next,
            &identifier,
            StatusCode::BAD_REQUEST,
            "Give your handle (or DID).",
        );
    }
    let binding = random_token();
    match client.start(&identifier, &binding, &next).await {
        Ok((url, _state)) => {
            let mut resp = render(&OAuthRedirectPage {
                chrome: ctx.chrome("Continue to your PDS"),
                url,
            })?;
            let c = set_cookie(OAUTH_COOKIE, &binding, PENDING_TTL_SECS, ctx.secure, "Lax");
            resp.headers_mut()
                .append(http::header::SET_COOKIE, crate::app::http::hv(&c));
            Ok(resp)
        }
        Err(e) => {
            tracing::info!(%identifier, error = %e, "OAuth start failed");
            let status = match e {
                OAuthError::Identity(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            login_error(
                ctx,
                &next,
                &identifier,
                status,
                &format!("Cannot start the sign-in: {e}"),
            )
        }
    }
}

/// `GET /auth/oauth/callback?code&state&iss` (or `?error=`).
pub async fn oauth_callback<B>(state: &Arc<AppState>, ctx: &Ctx, req: &Request<B>) -> WebResult {
    let Some(client) = &state.auth.oauth else {
        return Err(WebError::NotFound(
            "OAuth sign-in is off on this server.".into(),
        ));
    };
    let q = query(req.uri());
    let get = |k| query_get(&q, k).unwrap_or("");
    if !get("error").is_empty() {
        let msg = match get("error") {
            "access_denied" => "The sign-in was cancelled at your PDS.".to_string(),
            e => format!(
                "Your PDS refused the sign-in ({e}: {}).",
                get("error_description")
            ),
        };
        return login_error(ctx, "/", "", StatusCode::UNAUTHORIZED, &msg);
    }
    let cookies = req
        .headers()
        .get(http::header::COOKIE)
        .and_then(|v| v.to_str().ok());
    let binding = cookie(cookies, OAUTH_COOKIE).unwrap_or("");
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let iss = query_get(&q, "iss");
    let signed_in = match client
        .callback(get("state"), get("code"), iss, binding)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "OAuth callback refused");
            let status = match e {
                OAuthError::Transport(_) | OAuthError::Server { .. } => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            };
            return login_error(ctx, "/", "", status, &format!("Sign-in failed: {e}"));
        }
    };
    // A new session id at every login (no fixation).
    if let Some((old, _)) = &ctx.session {
        state.web.sessions.delete(old).await?;
    }
    let (id, _) = state
        .web
        .sessions
        .create_with(&signed_in.did, &signed_in.handle, user_agent, true)
        .await?;
    tracing::info!(did = %signed_in.did, "web login (OAuth)");
    state.auth.after_login(&signed_in.did).await;
    let session = set_cookie(SESSION_COOKIE, &id, SESSION_TTL_SECS, ctx.secure, "Lax");
    let clear = set_cookie(OAUTH_COOKIE, "", 0, ctx.secure, "Lax");
    Ok(redirect(safe_next(&signed_in.next), &[session, clear]))
}

/// After a browser session ends: when the user has no browser session and no device left
/// here, nothing needs their PDS any more, so the OAuth grant is revoked at the
/// authorization server and the app-password session deleted at the PDS.
pub async fn release_pds_access_if_unused(state: &AppState, did: &str) {
    let browsers = state
        .web
        .sessions
        .list(did)
        .await
        .map(|l| l.len())
        .unwrap_or(1);
    let devices = state
        .auth
        .devices
        .list(did)
        .await
        .map(|l| l.len())
        .unwrap_or(1);
    if browsers == 0 && devices == 0 {
        release_pds_access(state, did).await;
    }
}

/// Revokes the OAuth grant and ends the app-password session of `did`, at the PDS too.
async fn release_pds_access(state: &AppState, did: &str) {
    if let Some(c) = &state.auth.oauth {
        if let Err(e) = c.revoke(did).await {
            tracing::warn!(%did, error = %e, "cannot revoke the OAuth grant");
        }
    }
    if let Ok(s) = state.auth.sessions.get(did).await {
        if let Err(e) = state
            .auth
            .resolver()
            .xrpc()
            .delete_session(&s.pds, &s.session.refresh_jwt)
            .await
        {
            tracing::info!(%did, error = %e, "cannot delete the app-password session at the PDS");
        }
    }
    state.auth.forget_password_session(did).await;
}

/// `GET /device[?code=]`: the approval page (sign-in first).
pub async fn device_page<B>(state: &Arc<AppState>, ctx: &Ctx, req: &Request<B>) -> WebResult {
    let q = query(req.uri());
    let code = crate::auth::device::normalize_user_code(query_get(&q, "code").unwrap_or(""));
    let Some(user) = ctx.user() else {
        let here = if code.is_empty() {
            "/device".to_string()
        } else {
            format!("/device?code={code}")
        };
        let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(redirect(&format!("/login?next={next}"), &[]));
    };
    let pending = if code.is_empty() {
        None
    } else {
        state
            .auth
            .devices
            .lookup(&code)
            .await
            .map_err(|e| WebError::Internal(e.to_string()))?
    };
    let now = crate::registry::store::now_unix();
    render(&DevicePage {
        chrome: ctx.chrome("Approve a device"),
        handle: user.handle.clone(),
        code: crate::auth::device::display_user_code(&code),
        found: pending.is_some(),
        unknown: !code.is_empty() && pending.is_none(),
        name: pending.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        addr: pending.as_ref().map(|p| p.addr.clone()).unwrap_or_default(),
        asked: pending
            .as_ref()
            .map(|p| age(p.created_unix, now))
            .unwrap_or_default(),
        done: String::new(),
    })
}

/// `POST /device` (`code`, `decision` = approve | deny).
pub async fn device_decide(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    let Some(user) = ctx.user() else {
        return Ok(redirect("/login?next=%2Fdevice", &[]));
    };
    ctx.check_csrf(&form)?;
    let approve = match form.get("decision") {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(WebError::BadRequest(
                "decision must be approve or deny".into(),
            ))
        }
    };
    let code = form.get("code");
    let decided = state
        .auth
        .devices
        .decide(code, &user.did, &user.handle, approve)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    if !decided {
        return Err(WebError::NotFound(
            "No device is waiting with this code (it expired after ten minutes, or was already decided).".into(),
        ));
    }
    tracing::info!(did = %user.did, approve, "device code decided");
    render(&DevicePage {
        chrome: ctx.chrome("Approve a device"),
        handle: user.handle.clone(),
        code: crate::auth::device::display_user_code(&crate::auth::device::normalize_user_code(
            code,
        )),
        found: false,
        unknown: false,
        name: String::new(),
        addr: String::new(),
        asked: String::new(),
        done: if approve {
            "Approved. The device is signed in; you can close this tab.".into()
        } else {
            "Denied. The device was not signed in.".into()
        },
    })
}

/// `POST /settings/devices` (`revoke` = a device id, or `all`).
pub async fn revoke_devices(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    let Some(user) = ctx.user() else {
        return Ok(redirect("/login?next=/settings", &[]));
    };
    ctx.check_csrf(&form)?;
    let target = form.get("revoke");
    if target.is_empty() {
        return Err(WebError::BadRequest("Pick a device.".into()));
    }
    let id = (target != "all").then_some(target);
    let n = state
        .auth
        .devices
        .revoke(&user.did, id)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(redirect(
        &format!("/settings?devices_revoked={n}#devices-h"),
        &[],
    ))
}

/// `POST /settings/access`: sign out everywhere, revoke every device, revoke the OAuth grant
/// and end the app-password session at the PDS.
pub async fn revoke_access(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    let Some((id, user)) = &ctx.session else {
        return Ok(redirect("/login?next=/settings", &[]));
    };
    ctx.check_csrf(&form)?;
    let did = user.did.clone();
    let _ = state.web.sessions.revoke_others(&did, "").await?;
    state.web.sessions.delete(id).await?;
    state
        .auth
        .devices
        .revoke(&did, None)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    release_pds_access(state, &did).await;
    tracing::info!(%did, "all access revoked by the user");
    let clear = set_cookie(SESSION_COOKIE, "", 0, ctx.secure, "Lax");
    Ok(redirect("/", &[clear]))
}
