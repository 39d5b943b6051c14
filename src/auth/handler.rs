//! The sign-in endpoints for programs (thin):
//! - `GET /auth/token`: the Docker token endpoint. Parses Basic credentials and scopes,
//!   calls [`super::Auth::login`], answers `{token, access_token, expires_in, issued_at}`.
//! - `POST /auth/device/code`, `POST /auth/device/token`: the credential helper's device
//!   flow ([`super::device`]).
//! - `GET /oauth-client-metadata.json`, `GET /oauth/jwks.json`: the OAuth client's metadata
//!   document and public keys ([`super::oauth`]); 404 when OAuth is off.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};

use super::scope::parse_scopes;
use super::AuthError;
use crate::app::http::{collect_limited, json, oci_error, query, Body};
use crate::app::AppState;
use crate::oci::OciError;

/// Longest `Authorization` header read (Basic with a long DID and password fits easily).
const MAX_AUTH_HEADER: usize = 4096;

/// `Basic base64(user:password)` -> (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    if header.len() > MAX_AUTH_HEADER {
        return None;
    }
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    // A DID user name has colons itself: `did:<method>:<id>` (ATProto DIDs have no further
    // raw colons; a did:web port is `%3A`), so the password starts after the third colon.
    let split_at = if text.starts_with("did:") {
        text.match_indices(':').nth(2).map(|(i, _)| i)?
    } else {
        text.find(':')?
    };
    let (user, pass) = (&text[..split_at], &text[split_at + 1..]);
    if user.is_empty() || pass.is_empty() {
        return None;
    }
    Some((user.trim().to_string(), pass.to_string()))
}

pub async fn token<B>(state: &AppState, req: Request<B>, peer: SocketAddr) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return oci_error(&OciError::from(AuthError::Denied(
            "use GET on the token endpoint".into(),
        )));
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let q = query(req.uri());
    let scopes = parse_scopes(
        q.iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    let auth_header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let basic = match auth_header {
        None => None,
        Some(h) => match parse_basic(h) {
            Some(c) => Some(c),
            None => {
                return oci_error(&OciError::from(AuthError::BadCredentials(
                    "malformed Basic credentials".into(),
                )))
            }
        },
    };
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok());
    let auth = &state.auth;
    let client = crate::app::http::client_ip(peer, req.headers()).to_string();
    match auth.login(basic, scopes, &client, host, user_agent).await {
        Ok(t) => json(StatusCode::OK, &t),
        Err(e) => {
            if !matches!(e, AuthError::TooManyFailures) {
                tracing::info!(%peer, error = %e, "token request refused");
            } else {
                tracing::warn!(%peer, "token request rate-limited");
            }
            let mut resp = refusal_response(e);
            if resp.status() == StatusCode::UNAUTHORIZED {
                if let Ok(v) = http::HeaderValue::from_str(&auth.challenge(host, None, false)) {
                    resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
                }
            }
            resp
        }
    }
}

/// The OCI error answer to a refused request. Clients print the error's `message`, not its
/// `detail`, so refusals the user can act on say there why, and what to do.
pub fn refusal_response(e: AuthError) -> Response<Body> {
    let Some(why) = explain_refusal(&e) else {
        return oci_error(&OciError::from(e));
    };
    let err = OciError::from(e);
    let code = err.code.describe().0;
    json(
        err.status(),
        &serde_json::json!({"errors": [{"code": code, "message": why, "detail": why}]}),
    )
}

/// Why a token request was refused and what to do, in the words clients print (the error's
/// `message`): the handle does not resolve, the PDS refused the password, a main password
/// instead of an app password, the PDS is down. `None`: the plain OCI error is enough.
pub fn explain_refusal(e: &AuthError) -> Option<String> {
    use crate::atproto::identity::IdentityError as I;
    Some(match e {
        AuthError::Identity {
            identifier,
            source: I::HandleNotFound(_),
        } => format!(
            "the handle {identifier} could not be resolved to a DID (no _atproto DNS record and \
             no https://{identifier}/.well-known/atproto-did): check the spelling, or log in with \
             your DID. To try atcr without an ATProto account, run it with `atcr serve --local`"
        ),
        AuthError::Identity { identifier, source } => format!(
            "cannot resolve {identifier}: {source}. Check the handle or DID; if it is right, its \
             DID document or PDS is unreachable right now: try again in a minute"
        ),
        AuthError::BadCredentials(why) => format!(
            "{why}. Log in with your handle (or DID) and an app password: create one in your \
             Bluesky app under Settings > Privacy and security > App passwords, or in your PDS's \
             account settings; a revoked app password stops working"
        ),
        AuthError::MainPassword => super::APP_PASSWORD_HINT.to_string(),
        AuthError::PdsUnavailable(x) => format!(
            "your PDS could not be reached to check the password ({x}): try again in a minute"
        ),
        AuthError::TooManyFailures | AuthError::LoginToPush(_) | AuthError::Denied(_) => {
            e.to_string()
        }
        _ => return None,
    })
}

/// Request bodies of the device endpoints are tiny forms or JSON objects.
const MAX_DEVICE_BODY: usize = 4096;

/// The fields of a small form or JSON object body.
async fn small_body(req: Request<hyper::body::Incoming>) -> Option<Vec<(String, String)>> {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = collect_limited(req.into_body(), MAX_DEVICE_BODY)
        .await
        .ok()?;
    if ct.starts_with("application/json") {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
        Some(
            v.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
        )
    } else {
        Some(form_urlencoded::parse(&bytes).into_owned().collect())
    }
}

fn field<'a>(fields: &'a [(String, String)], k: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// An OAuth-style error body (`{"error", "error_description"}`).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let mut r = json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// `POST /auth/device/code` (`device_name`): a new device code pair.
pub async fn device_code(
    state: &AppState,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if req.method() != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST",
        );
    }
    if state.auth.mode() != super::AuthMode::Atproto {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "logins are off on this server",
        );
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let client = crate::app::http::client_ip(peer, req.headers()).to_string();
    let Some(fields) = small_body(req).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let base = state.auth.base_url(host.as_deref());
    match state
        .auth
        .devices
        .create(field(&fields, "device_name"), &client, &base)
        .await
    {
        Ok(code) => {
            let mut r = json(StatusCode::OK, &code);
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(super::device::DeviceError::TooMany) => oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &super::device::DeviceError::TooMany.to_string(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "device code failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            )
        }
    }
}

/// `POST /auth/device/token` (`device_code`): pending, slow down, denied, expired, or the
/// device secret (once).
pub async fn device_token(state: &AppState, req: Request<hyper::body::Incoming>) -> Response<Body> {
    use super::device::Poll;
    if req.method() != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST",
        );
    }
    let Some(fields) = small_body(req).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    match state.auth.devices.poll(field(&fields, "device_code")).await {
        Ok(Poll::Approved {
            secret,
            did,
            handle,
        }) => {
            let mut r = json(
                StatusCode::OK,
                &serde_json::json!({"device_secret": secret, "did": did, "handle": handle}),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Ok(Poll::Pending) => oauth_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "waiting for approval at /device",
        ),
        Ok(Poll::SlowDown) => oauth_error(StatusCode::BAD_REQUEST, "slow_down", "poll less often"),
        Ok(Poll::Denied) => oauth_error(
            StatusCode::BAD_REQUEST,
            "access_denied",
            "the request was denied",
        ),
        Ok(Poll::Expired) => oauth_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "unknown or expired device code; start again",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "device poll failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            )
        }
    }
}

fn public_json(value: &serde_json::Value) -> Response<Body> {
    let mut r = json(StatusCode::OK, value);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    r.headers_mut().insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    r
}

/// `GET /oauth-client-metadata.json`.
pub fn client_metadata(state: &AppState) -> Response<Body> {
    match &state.auth.oauth {
        Some(c) => public_json(&c.client_metadata()),
        None => oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "OAuth is off on this server",
        ),
    }
}

/// `GET /oauth/jwks.json`.
pub fn jwks(state: &AppState) -> Response<Body> {
    match &state.auth.oauth {
        Some(c) => public_json(&c.jwks()),
        None => oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "OAuth is off on this server",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal on a newcomer's path says why and what to do, in `message`.
    #[test]
    fn refusals_explain_themselves_in_the_message() {
        use crate::atproto::identity::IdentityError;
        use crate::atproto::xrpc::XrpcError;
        let message = |e: AuthError| {
            let resp = refusal_response(e);
            let status = resp.status();
            let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                resp.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let e = &v["errors"][0];
            assert_eq!(e["message"], e["detail"]);
            (
                status.as_u16(),
                e["code"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        };
        let (status, code, m) = message(AuthError::Identity {
            identifier: "alice.test".into(),
            source: IdentityError::HandleNotFound("alice.test".into()),
        });
        assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
        assert!(
            m.contains("handle alice.test could not be resolved")
                && m.contains("atcr serve --local"),
            "{m}"
        );
        let (_, _, m) = message(AuthError::BadCredentials(
            "the PDS https://pds.example refused the password for alice.test".into(),
        ));
        assert!(
            m.contains("https://pds.example refused") && m.contains("app password"),
            "{m}"
        );
        let (_, _, m) = message(AuthError::MainPassword);
        assert!(m.contains("only app passwords"), "{m}");
        let (status, _, m) = message(AuthError::PdsUnavailable(XrpcError::Transport {
            method: "com.atproto.server.createSession".into(),
            detail: "connection refused".into(),
        }));
        assert_eq!(status, 502);
        assert!(
            m.contains("could not be reached") && m.contains("try again"),
            "{m}"
        );
        let (status, code, m) = message(AuthError::LoginToPush(
            "log in first with `docker login x`".into(),
        ));
        assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
        assert!(m.contains("docker login"));
        let (status, code, _) = message(AuthError::TooManyFailures);
        assert_eq!((status, code.as_str()), (429, "TOOMANYREQUESTS"));
        let (status, code, m) = message(AuthError::Denied(
            "did:plc:x may not push to bob/app".into(),
        ));
        assert_eq!((status, code.as_str()), (403, "DENIED"));
        assert!(m.contains("may not push"));
    }

    #[test]
    fn basic_credentials() {
        let h = format!("Basic {}", STANDARD.encode("alice.test:abcd-efgh:x"));
        assert_eq!(
            parse_basic(&h),
            Some(("alice.test".into(), "abcd-efgh:x".into()))
        );
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(
            parse_basic(&format!("Basic {}", STANDARD.encode("nopass"))),
            None
        );
        assert_eq!(parse_basic("Bearer x"), None);
        let h = format!("Basic {}", STANDARD.encode("did:plc:abc123:pw:with:colons"));
        assert_eq!(
            parse_basic(&h),
            Some(("did:plc:abc123".into(), "pw:with:colons".into()))
        );
    }
}
