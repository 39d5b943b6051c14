//! ATProto OAuth for the web UI, as a **confidential client** (atproto.com/specs/oauth):
//!
//! - the client is `client_id = <public https URL>/oauth-client-metadata.json`, served by
//!   this appliance ([`OAuthClient::client_metadata`]) with its public key set at
//!   `/oauth/jwks.json` ([`OAuthClient::jwks`]); the ES256 key is `keys/oauth-client.key`;
//! - [`OAuthClient::start`]: handle/DID -> PDS -> its authorization server (protected-resource
//!   and authorization-server metadata, issuer checked) -> **PAR** with **PKCE** (S256), a
//!   `private_key_jwt` client assertion and a **DPoP** proof (retried once with the server's
//!   nonce) -> the URL of the authorization page. The pending request (verifier, DPoP key,
//!   endpoints, browser binding) is sealed under its `state` for ten minutes;
//! - [`OAuthClient::callback`]: state taken once, browser binding and `iss` checked, the
//!   code exchanged (assertion + DPoP), `sub` checked to be an account whose PDS names this
//!   issuer, the session ([`OAuthSession`]) sealed per DID;
//! - refresh ([`OAuthRefresher`], used by [`SessionStore`] for every DPoP call) and
//!   revocation at logout ([`OAuthClient::revoke`]).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sessions::{OAuthRefresher, OAuthSession, SessionError, SessionStore};
use crate::atproto::dpop::{random_id, Es256Key, NonceCache};
use crate::atproto::identity::Resolver;
use crate::atproto::xrpc::{read_limited, XrpcError};
use crate::registry::store::now_unix;

/// Metadata documents and token responses larger than this are refused.
const MAX_METADATA: usize = 64 * 1024;
/// How long a started login may take (PAR to callback).
pub const PENDING_TTL_SECS: u64 = 600;
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("cannot resolve {0}")]
    Identity(String),
    #[error("the authorization server of {pds} is not usable: {detail}")]
    Server { pds: String, detail: String },
    #[error("the authorization server refused: {0}")]
    Refused(String),
    #[error("this sign-in link expired or was already used; start again")]
    UnknownState,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("{0}")]
    Transport(String),
}

/// What [`OAuthClient::start`] sealed under the `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    dpop_key: String,
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: String,
    /// The DID the user named (empty when they gave none).
    expected_did: String,
    /// sha256 of the browser-binding cookie.
    browser: String,
    next: String,
    created_unix: u64,
}

/// The authorization server's metadata we use.
#[derive(Debug, Clone, Deserialize)]
struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    pushed_authorization_request_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    dpop_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    sub: String,
}

/// What the callback hands the web layer.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub did: String,
    pub handle: String,
    pub next: String,
}

pub struct OAuthClient {
    base: String,
    client_name: String,
    scope: String,
    key: Es256Key,
    kid: String,
    http: reqwest::Client,
    resolver: Arc<Resolver>,
    sessions: Arc<SessionStore>,
    /// DPoP nonces of authorization servers.
    nonces: NonceCache,
}

/// `http://` is accepted only for loopback authorization servers (a local test network);
/// everything else must be https.
fn acceptable_url(u: &str) -> bool {
    match reqwest::Url::parse(u) {
        Ok(url) => match url.scheme() {
            "https" => url.host_str().is_some(),
            "http" => matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
            _ => false,
        },
        Err(_) => false,
    }
}

fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// sha256 hex of a browser-binding cookie.
pub fn binding_hash(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

fn pending_key(state: &str) -> String {
    format!("oauth-request/{state}")
}

impl OAuthClient {
    /// `base` is the appliance's public https URL.
    pub fn new(
        base: &str,
        client_name: &str,
        scope: &str,
        key: Es256Key,
        resolver: Arc<Resolver>,
        sessions: Arc<SessionStore>,
    ) -> Arc<OAuthClient> {
        let http = resolver.xrpc().http().clone();
        let kid = key.thumbprint();
        Arc::new(OAuthClient {
            base: base.trim_end_matches('/').to_string(),
            client_name: client_name.to_string(),
            scope: scope.to_string(),
            key,
            kid,
            http,
            resolver,
            sessions,
            nonces: NonceCache::default(),
        })
    }

    pub fn client_id(&self) -> String {
        format!("{}/oauth-client-metadata.json", self.base)
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/oauth/callback", self.base)
    }

    /// The client metadata document (served at the `client_id` URL).
    pub fn client_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "client_id": self.client_id(),
            "client_name": self.client_name,
            "client_uri": self.base,
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri()],
            "scope": self.scope,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "dpop_bound_access_tokens": true,
            "jwks_uri": format!("{}/oauth/jwks.json", self.base),
        })
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.key.jwks_entry(&self.kid)] })
    }

    fn client_assertion(&self, audience: &str) -> String {
        let now = now_unix();
        self.key.jwt(
            &self.kid,
            &serde_json::json!({
                "iss": self.client_id(),
                "sub": self.client_id(),
                "aud": audience,
                "jti": random_id(16),
                "iat": now,
                "exp": now + 60,
            }),
        )
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        if !acceptable_url(url) {
            return Err(format!("{url} is not an https URL"));
        }
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        let body = read_limited(resp, MAX_METADATA, url)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }

    /// The authorization server of a PDS, with its metadata checked.
    async fn server_of(&self, pds: &str) -> Result<ServerMetadata, OAuthError> {
        let err = |detail: String| OAuthError::Server {
            pds: pds.to_string(),
            detail,
        };
        #[derive(Deserialize)]
        struct Resource {
            #[serde(default)]
            authorization_servers: Vec<String>,
        }
        let res: Resource = self
            .get_json(&format!(
                "{}/.well-known/oauth-protected-resource",
                pds.trim_end_matches('/')
            ))
            .await
            .map_err(err)?;
        let issuer = res
            .authorization_servers
            .first()
            .cloned()
            .ok_or_else(|| err("no authorization server".into()))?;
        let meta: ServerMetadata = self
            .get_json(&format!(
                "{}/.well-known/oauth-authorization-server",
                issuer.trim_end_matches('/')
            ))
            .await
            .map_err(err)?;
        if meta.issuer != issuer {
            return Err(err(format!(
                "metadata names issuer {} instead of {issuer}",
                meta.issuer
            )));
        }
        for u in [
            &meta.authorization_endpoint,
            &meta.token_endpoint,
            &meta.pushed_authorization_request_endpoint,
        ] {
            if !acceptable_url(u) {
                return Err(err(format!("endpoint {u} is not https")));
            }
        }
        if !meta
            .dpop_signing_alg_values_supported
            .iter()
            .any(|a| a == "ES256")
        {
            return Err(err("no ES256 DPoP".into()));
        }
        if !meta
            .token_endpoint_auth_methods_supported
            .iter()
            .any(|a| a == "private_key_jwt")
        {
            return Err(err("no private_key_jwt client authentication".into()));
        }
        Ok(meta)
    }

    /// POSTs a form to an authorization-server endpoint with client authentication and a
    /// DPoP proof; on `use_dpop_nonce` retries once with the nonce it got.
    async fn post_form(
        &self,
        url: &str,
        issuer: &str,
        dpop: &Es256Key,
        fields: &[(&str, &str)],
    ) -> Result<reqwest::Response, OAuthError> {
        let client_id = self.client_id();
        for attempt in 0..2 {
            let assertion = self.client_assertion(issuer);
            let mut form: Vec<(&str, &str)> = fields.to_vec();
            form.push(("client_id", &client_id));
            form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
            form.push(("client_assertion", &assertion));
            let nonce = self.nonces.get(url);
            let proof = dpop.dpop_proof("POST", url, nonce.as_deref(), None);
            let resp = self
                .http
                .post(url)
                .header("DPoP", proof)
                .form(&form)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| OAuthError::Transport(format!("{url}: {e}")))?;
            self.nonces.remember(url, resp.headers());
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status().as_u16();
            let body = read_limited(resp, MAX_METADATA, url)
                .await
                .unwrap_or_default();
            #[derive(Deserialize, Default)]
            struct ErrBody {
                #[serde(default)]
                error: String,
                #[serde(default)]
                error_description: String,
            }
            let e: ErrBody = serde_json::from_slice(&body).unwrap_or_default();
            if e.error == "use_dpop_nonce" && attempt == 0 {
                continue;
            }
            let detail = format!("HTTP {status} {} {}", e.error, e.error_description);
            return Err(if status >= 500 {
                OAuthError::Transport(detail)
            } else {
                OAuthError::Refused(detail.trim().to_string())
            });
        }
        Err(OAuthError::Refused(
            "the server kept asking for a new DPoP nonce".into(),
        ))
    }

    /// Starts a sign-in for `identifier` (a handle or DID): returns the authorization URL to
    /// send the browser to. `browser` is the value of the binding cookie set with it.
    pub async fn start(
        &self,
        identifier: &str,
        browser: &str,
        next: &str,
    ) -> Result<(String, String), OAuthError> {
        let identity = self
            .resolver
            .resolve(identifier)
            .await
            .map_err(|e| OAuthError::Identity(format!("{identifier}: {e}")))?;
        let meta = self.server_of(&identity.pds).await?;
        let state = random_id(24);
        let verifier = random_id(48);
        let dpop = Es256Key::generate();
        let redirect = self.redirect_uri();
        let challenge = pkce_challenge(&verifier);
        let hint = identity
            .handle
            .clone()
            .unwrap_or_else(|| identity.did.clone());
        let resp = self
            .post_form(
                &meta.pushed_authorization_request_endpoint,
                &meta.issuer,
                &dpop,
                &[
                    ("response_type", "code"),
                    ("redirect_uri", &redirect),
                    ("scope", &self.scope),
                    ("state", &state),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("login_hint", &hint),
                ],
            )
            .await?;
        #[derive(Deserialize)]
        struct Par {
            request_uri: String,
        }
        let body = read_limited(resp, MAX_METADATA, "PAR")
            .await
            .map_err(|e| OAuthError::Transport(e.to_string()))?;
        let par: Par = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::Refused(format!("PAR answer: {e}")))?;
        let pending = Pending {
            verifier,
            dpop_key: hex::encode(dpop.to_bytes()),
            issuer: meta.issuer.clone(),
            token_endpoint: meta.token_endpoint.clone(),
            revocation_endpoint: meta.revocation_endpoint.clone().unwrap_or_default(),
            expected_did: identity.did.clone(),
            browser: binding_hash(browser),
            next: next.to_string(),
            created_unix: now_unix(),
        };
        let key = pending_key(&state);
        self.sessions.put_sealed(&key, &key, &pending).await?;
        self.sweep_pending().await;
        let mut url = reqwest::Url::parse(&meta.authorization_endpoint)
            .map_err(|e| OAuthError::Invalid(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id())
            .append_pair("request_uri", &par.request_uri);
        Ok((url.to_string(), state))
    }

    /// Drops pending sign-ins older than their TTL (abandoned at the PDS's pages).
    async fn sweep_pending(&self) {
        let Ok(all) = self.sessions.list_sealed::<Pending>("oauth-request/").await else {
            return;
        };
        let now = now_unix();
        for (k, p) in all {
            if p.created_unix + PENDING_TTL_SECS < now {
                let _ = self.sessions.delete_sealed(&k).await;
            }
        }
    }

    /// The redirect back from the authorization server.
    pub async fn callback(
        &self,
        state: &str,
        code: &str,
        iss: Option<&str>,
        browser: &str,
    ) -> Result<SignedIn, OAuthError> {
        if state.is_empty() || state.len() > 128 {
            return Err(OAuthError::UnknownState);
        }
        let key = pending_key(state);
        let pending: Pending = self
            .sessions
            .take_sealed(&key, &key)
            .await?
            .ok_or(OAuthError::UnknownState)?;
        if pending.created_unix + PENDING_TTL_SECS < now_unix() {
            return Err(OAuthError::UnknownState);
        }
        if !super::constant_time_eq(&binding_hash(browser), &pending.browser) {
            return Err(OAuthError::Invalid(
                "this sign-in was started in another browser".into(),
            ));
        }
        // RFC 9207: the response must come from the server we sent the user to.
        if iss != Some(pending.issuer.as_str()) {
            return Err(OAuthError::Invalid(
                "the answer came from another issuer".into(),
            ));
        }
        let dpop = hex::decode(&pending.dpop_key)
            .ok()
            .and_then(|b| Es256Key::from_bytes(&b).ok())
            .ok_or_else(|| OAuthError::Invalid("corrupt pending sign-in".into()))?;
        let redirect = self.redirect_uri();
        let resp = self
            .post_form(
                &pending.token_endpoint,
                &pending.issuer,
                &dpop,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &redirect),
                    ("code_verifier", &pending.verifier),
                ],
            )
            .await?;
        let tokens = token_response(resp).await?;
        // The account that signed in must be one whose PDS trusts this issuer (the user
        // may have picked another account than the one they named).
        let identity = self
            .resolver
            .resolve(&tokens.sub)
            .await
            .map_err(|e| OAuthError::Identity(format!("{}: {e}", tokens.sub)))?;
        if tokens.sub != pending.expected_did {
            let meta = self.server_of(&identity.pds).await?;
            if meta.issuer != pending.issuer {
                return Err(OAuthError::Invalid(format!(
                    "{} is not served by {}",
                    tokens.sub, pending.issuer
                )));
            }
        }
        let refresh_token = tokens.refresh_token.clone().unwrap_or_default();
        let now = now_unix();
        let session = OAuthSession {
            did: tokens.sub.clone(),
            handle: identity
                .handle
                .clone()
                .unwrap_or_else(|| tokens.sub.clone()),
            pds: identity.pds.clone(),
            issuer: pending.issuer.clone(),
            token_endpoint: pending.token_endpoint.clone(),
            revocation_endpoint: pending.revocation_endpoint.clone(),
            access_token: tokens.access_token,
            refresh_token,
            expires_unix: now + tokens.expires_in.unwrap_or(300),
            scope: tokens.scope.unwrap_or_default(),
            dpop_key: pending.dpop_key,
            created_unix: now,
        };
        // A new sign-in replaces the DID's previous grant: revoke that one at its server.
        if let Ok(Some(old)) = self.sessions.get_oauth(&session.did).await {
            self.revoke_session(&old).await;
        }
        self.sessions.put_oauth(&session).await?;
        tracing::info!(did = %session.did, issuer = %session.issuer, "OAuth sign-in");
        Ok(SignedIn {
            did: session.did,
            handle: session.handle,
            next: pending.next,
        })
    }

    async fn revoke_session(&self, s: &OAuthSession) {
        if s.revocation_endpoint.is_empty() || !acceptable_url(&s.revocation_endpoint) {
            return;
        }
        let Some(dpop) = s.key() else { return };
        match self
            .post_form(
                &s.revocation_endpoint,
                &s.issuer,
                &dpop,
                &[
                    ("token", &s.refresh_token),
                    ("token_type_hint", "refresh_token"),
                ],
            )
            .await
        {
            Ok(_) => {
                tracing::info!(did = %s.did, "OAuth grant revoked at the authorization server")
            }
            Err(e) => tracing::warn!(did = %s.did, error = %e, "cannot revoke the OAuth grant"),
        }
    }

    /// Revokes the DID's OAuth grant at its authorization server and forgets it here.
    pub async fn revoke(&self, did: &str) -> Result<bool, OAuthError> {
        let Some(s) = self.sessions.get_oauth(did).await? else {
            return Ok(false);
        };
        self.revoke_session(&s).await;
        self.sessions.forget_oauth(did).await?;
        Ok(true)
    }
}

async fn token_response(resp: reqwest::Response) -> Result<TokenResponse, OAuthError> {
    let body = read_limited(resp, MAX_METADATA, "token")
        .await
        .map_err(|e: XrpcError| OAuthError::Transport(e.to_string()))?;
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| OAuthError::Refused(format!("token answer: {e}")))?;
    if !t.token_type.eq_ignore_ascii_case("DPoP") {
        return Err(OAuthError::Refused(format!(
            "token type {} is not DPoP",
            t.token_type
        )));
    }
    if !t.sub.starts_with("did:") {
        return Err(OAuthError::Refused("the token names no DID".into()));
    }
    if let Some(scope) = &t.scope {
        if !scope.split(' ').any(|s| s == "atproto") {
            return Err(OAuthError::Refused(format!(
                "scope {scope:?} lacks atproto"
            )));
        }
    }
    Ok(t)
}

#[async_trait::async_trait]
impl OAuthRefresher for OAuthClient {
    async fn refresh(&self, s: &OAuthSession) -> Result<OAuthSession, SessionError> {
        let dpop = s
            .key()
            .ok_or_else(|| SessionError::Corrupt(s.did.clone()))?;
        let resp = match self
            .post_form(
                &s.token_endpoint,
                &s.issuer,
                &dpop,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &s.refresh_token),
                ],
            )
            .await
        {
            Ok(r) => r,
            Err(OAuthError::Refused(d)) => {
                tracing::info!(did = %s.did, detail = %d, "OAuth refresh refused");
                return Err(SessionError::Revoked(s.did.clone()));
            }
            Err(e) => {
                return Err(SessionError::Xrpc(XrpcError::Transport {
                    method: "oauth refresh".into(),
                    detail: e.to_string(),
                }))
            }
        };
        let t = token_response(resp).await.map_err(|e| {
            SessionError::Xrpc(XrpcError::Decode {
                method: "oauth refresh".into(),
                detail: e.to_string(),
            })
        })?;
        if t.sub != s.did {
            return Err(SessionError::Revoked(s.did.clone()));
        }
        Ok(OAuthSession {
            access_token: t.access_token,
            refresh_token: t.refresh_token.unwrap_or_else(|| s.refresh_token.clone()),
            expires_unix: now_unix() + t.expires_in.unwrap_or(300),
            scope: t.scope.unwrap_or_else(|| s.scope.clone()),
            ..s.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_and_urls() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(acceptable_url("https://bsky.social/oauth/par"));
        assert!(acceptable_url("http://localhost:2583/oauth/par"));
        assert!(!acceptable_url("http://evil.example/oauth/par"));
        assert!(!acceptable_url("file:///etc/passwd"));
    }
}
