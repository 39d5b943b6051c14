//! `GET /auth/token`: the Docker token endpoint. Thin: parses Basic credentials and scopes,
//! calls [`super::Auth::login`], answers `{token, access_token, expires_in, issued_at}`.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};

use super::scope::parse_scopes;
use super::AuthError;
use crate::app::http::{json, oci_error, query, Body};
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
    match auth
        .login(basic, scopes, &peer.ip().to_string(), host, user_agent)
        .await
    {
        Ok(t) => json(StatusCode::OK, &t),
        Err(e) => {
            if !matches!(e, AuthError::TooManyFailures) {
                tracing::info!(%peer, error = %e, "token request refused");
            } else {
                tracing::warn!(%peer, "token request rate-limited");
            }
            let mut resp = oci_error(&OciError::from(e));
            if resp.status() == StatusCode::UNAUTHORIZED {
                if let Ok(v) = http::HeaderValue::from_str(&auth.challenge(host, None, false)) {
                    resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
                }
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
