//! Sign-in (design.md section 3): Docker token auth, PDS sessions, ATProto OAuth, devices.
//!
//! - `GET /auth/token` ([`handler::token`]): HTTP Basic `handle-or-DID : secret`, the secret
//!   being an **app password** or a **device secret** ([`device`]). An app password is
//!   checked against the sealed session of an earlier login first ([`password`]: argon2id
//!   hash kept with it, bounded lifetime, revalidated by a refresh), so repeated token
//!   requests cost no `createSession`; otherwise the PDS is asked, a main-password session is
//!   deleted there and refused, and the new app-password session is sealed ([`sessions`]).
//!   The answer is an ES256 registry JWT ([`jwt`]) whose `access` grants pull on what was
//!   asked and push only on names whose identity resolves to the signed-in DID. Without
//!   credentials the token is pull-only (anonymous).
//! - Every `/v2/` request goes through [`Auth::check`]: `/v2/` itself needs a valid token
//!   (so `docker login` verifies credentials), pulls are public, pushes need a token
//!   granting `push` on the name whose owner is the token's subject.
//! - Brute force ([`ratelimit`]): attempts are counted before the PDS call, keyed by the
//!   resolved DID, per address + identity first; failures never lock out a clean address.
//! - The web UI signs in with ATProto OAuth ([`oauth`], confidential client, DPoP); record
//!   writes and service tokens use whichever session a DID has ([`sessions::PdsAgent`]).
//!
//! Passwords and tokens never reach a log line; `Debug` of sessions hides them.

pub mod device;
pub mod handler;
pub mod jwt;
pub mod keys;
pub mod oauth;
pub mod password;
pub mod ratelimit;
pub mod scope;
pub mod service_token;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use crate::atproto::identity::{IdentityError, Resolver};
use crate::atproto::repo::crypto::{PublicKey, SigningKey};
use crate::atproto::xrpc::XrpcError;
use crate::oci::types::Name;
use crate::registry::store::now_unix;
use jwt::{Access, Claims, JwtError};
use password::{kind_of_session, PasswordHasher, SessionKind};
use ratelimit::{LimitSettings, Limited, LoginLimiter};
use sessions::{LoginProof, PdsSession, SessionStore};

/// Where users create app passwords (shown when a main password is refused).
pub const APP_PASSWORD_HINT: &str =
    "atcr accepts only app passwords, never your account's main password. \
Create one in your Bluesky app under Settings > Privacy and security > App passwords \
(https://bsky.app/settings/app-passwords), or in your PDS's account settings, and sign in with it.";

/// Constant-time equality of two strings (tokens, hashes).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Local mode (`auth.mode = "local"`, formerly `none`): no authentication at all, for
    /// trying atcr on one machine.
    None,
    /// Docker token auth against users' ATProto PDSes.
    Atproto,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Required,
    /// A push without credentials: what to do is in the message.
    #[error("{0}")]
    LoginToPush(String),
    #[error("invalid credentials: {0}")]
    BadCredentials(String),
    #[error("invalid token: {0}")]
    BadToken(#[from] JwtError),
    #[error("{0}")]
    Denied(String),
    #[error("too many failed logins from this address; try again in a few minutes")]
    TooManyFailures,
    /// The PDS accepted the account's main password; the session was deleted there.
    #[error("{APP_PASSWORD_HINT}")]
    MainPassword,
    #[error("cannot resolve {identifier}: {source}")]
    Identity {
        identifier: String,
        source: IdentityError,
    },
    #[error("the PDS could not be reached: {0}")]
    PdsUnavailable(XrpcError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What a request needs.
#[derive(Debug, Clone)]
pub enum Need<'a> {
    /// `GET /v2/`: a valid token (docker login checks credentials this way).
    Base,
    /// Reading: public, no token needed (a token, if sent, must still be valid).
    Pull(&'a Name),
    /// Writing into a repository.
    Push(&'a Name),
    /// Listing the catalog: public.
    Catalog,
}

/// A refused request: the error and the `WWW-Authenticate` challenge to send with a 401.
#[derive(Debug)]
pub struct Refusal {
    pub error: AuthError,
    pub challenge: Option<String>,
}

/// Called after a successful password login (creates the sailor profile). `user_agent` is
/// the login request's `User-Agent` (the profile's `ociClient` comes from it).
#[async_trait::async_trait]
pub trait LoginHook: Send + Sync {
    /// `did` has a stored session (app password or OAuth) by now; `user_agent` is the
    /// login request's `User-Agent` (the profile's `ociClient` comes from it).
    async fn after_login(&self, did: &str, user_agent: Option<&str>);
}

pub struct AuthSettings {
    pub mode: AuthMode,
    /// Service name (`iss`/`aud`); empty: the host of the public URL or request.
    pub service: String,
    /// Public base URL; empty: derived from the request's Host header.
    pub public_url: String,
    pub token_ttl: Duration,
    pub limits: LimitSettings,
    /// How long an accepted app password keeps reusing its PDS session (0: never reuse).
    pub session_reuse: Duration,
    /// How often a reused session is confirmed alive at the PDS (`refreshSession`).
    pub session_revalidate: Duration,
}

pub struct Auth {
    settings: AuthSettings,
    key: SigningKey,
    public: PublicKey,
    resolver: Arc<Resolver>,
    pub sessions: Arc<SessionStore>,
    limiter: Arc<LoginLimiter>,
    hasher: PasswordHasher,
    login_hook: std::sync::RwLock<Option<Arc<dyn LoginHook>>>,
    /// The web UI's OAuth client (set when `server.public_url` is https).
    pub oauth: Option<Arc<oauth::OAuthClient>>,
    pub devices: device::DeviceFlow,
}

/// Who a successful login is.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub did: String,
    pub handle: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.settings.mode)
            .finish_non_exhaustive()
    }
}

fn host_of(url: &str) -> &str {
    url.split("://").nth(1).unwrap_or(url).trim_end_matches('/')
}

impl Auth {
    pub fn new(
        settings: AuthSettings,
        key: SigningKey,
        resolver: Arc<Resolver>,
        sessions: Arc<SessionStore>,
    ) -> Auth {
        let public = key.public_key();
        Auth {
            limiter: LoginLimiter::new(settings.limits.clone()),
            hasher: PasswordHasher::default(),
            settings,
            key,
            public,
            resolver,
            devices: device::DeviceFlow::new(sessions.clone()),
            sessions,
            login_hook: std::sync::RwLock::new(None),
            oauth: None,
        }
    }

    /// Turns on the web UI's OAuth sign-in (the composition root does it).
    pub fn with_oauth(mut self, client: Arc<oauth::OAuthClient>) -> Auth {
        self.sessions.set_oauth_refresher(client.clone());
        self.oauth = Some(client);
        self
    }

    pub fn set_login_hook(&self, hook: Arc<dyn LoginHook>) {
        *self.login_hook.write().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    pub fn mode(&self) -> AuthMode {
        self.settings.mode
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// `https://host` for realms: the configured public URL, else from the request Host.
    pub fn base_url(&self, host_header: Option<&str>) -> String {
        if !self.settings.public_url.is_empty() {
            return self.settings.public_url.trim_end_matches('/').to_string();
        }
        let host = host_header
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    pub fn service(&self, host_header: Option<&str>) -> String {
        if !self.settings.service.is_empty() {
            return self.settings.service.clone();
        }
        host_of(&self.base_url(host_header)).to_string()
    }

    pub fn challenge(&self, host: Option<&str>, scope: Option<String>, error: bool) -> String {
        let mut c = format!(
            "Bearer realm=\"{}/auth/token\",service=\"{}\"",
            self.base_url(host),
            self.service(host)
        );
        if let Some(s) = scope {
            c.push_str(&format!(",scope=\"{s}\""));
        }
        if error {
            c.push_str(",error=\"invalid_token\"");
        }
        c
    }

    fn issue(&self, service: &str, sub: &str, access: Vec<Access>) -> (String, u64, u64) {
        let now = now_unix();
        let ttl = self.settings.token_ttl.as_secs();
        let mut jti = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut jti);
        let claims = Claims {
            iss: service.into(),
            sub: sub.into(),
            aud: service.into(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: hex::encode(jti),
            access,
        };
        (jwt::sign(&self.key, &claims), ttl, now)
    }

    /// Verify a bearer token for this service.
    pub fn verify(&self, token: &str, host: Option<&str>) -> Result<Claims, JwtError> {
        jwt::verify(&self.public, token, &self.service(host), now_unix())
    }

    /// Does `identity` (a name's first segment) belong to `did`?
    pub async fn owns(&self, did: &str, identity: &str) -> bool {
        if did.is_empty() {
            return false;
        }
        if identity.starts_with("did:") {
            return identity == did;
        }
        match self.resolver.resolve_did_of(identity).await {
            Ok(d) => d == did,
            Err(_) => false,
        }
    }

    /// Authorise one `/v2/` request. `authorization` is the raw header.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        host: Option<&str>,
        need: Need<'_>,
    ) -> Result<Option<Claims>, Refusal> {
        if self.settings.mode == AuthMode::None {
            return Ok(None);
        }
        let scope = match &need {
            Need::Push(n) => Some(format!("repository:{n}:pull,push")),
            Need::Pull(n) => Some(format!("repository:{n}:pull")),
            _ => None,
        };
        let bearer = authorization.and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        });
        let claims = match bearer {
            None => None,
            Some(t) => match self.verify(t.trim(), host) {
                Ok(c) => Some(c),
                Err(e) => {
                    return Err(Refusal {
                        error: AuthError::BadToken(e),
                        challenge: Some(self.challenge(host, scope, true)),
                    })
                }
            },
        };
        let required = |error| Refusal {
            error,
            challenge: Some(self.challenge(host, scope.clone(), false)),
        };
        match need {
            Need::Base => match claims {
                Some(c) => Ok(Some(c)),
                None => Err(required(AuthError::Required)),
            },
            Need::Pull(_) | Need::Catalog => Ok(claims),
            Need::Push(name) => {
                let login = || {
                    let host = host_of(&self.base_url(host)).to_string();
                    required(AuthError::LoginToPush(format!(
                        "authentication required to push to {name}: log in first with `docker login \
                         {host}` (your ATProto handle or DID and an app password); you can push only \
                         under {host}/<your handle>/"
                    )))
                };
                let Some(c) = claims else {
                    return Err(login());
                };
                if c.is_anonymous() {
                    return Err(login());
                }
                if !c.allows(name.as_str(), "push") || !self.owns(&c.sub, name.identity()).await {
                    return Err(Refusal {
                        error: AuthError::Denied(format!(
                            "{} may not push to {name}: only into its own namespace",
                            c.sub
                        )),
                        challenge: None,
                    });
                }
                Ok(Some(c))
            }
        }
    }

    /// The token endpoint's logic: credentials (if any) + requested scopes -> a token.
    pub async fn login(
        &self,
        basic: Option<(String, String)>,
        scopes: Vec<Access>,
        client_addr: &str,
        host: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<TokenResponse, AuthError> {
        let service = self.service(host);
        let Some((user, password)) = basic else {
            // Anonymous: pull only.
            let access = scopes
                .into_iter()
                .filter(|a| a.actions.iter().any(|x| x == "pull"))
                .map(|mut a| {
                    a.actions = vec!["pull".into()];
                    a
                })
                .collect();
            return Ok(self.respond(&service, "", access));
        };
        let who = if password.starts_with(device::SECRET_PREFIX) {
            self.device_login(&user, &password, client_addr).await?
        } else {
            self.password_login(&user, &password, client_addr, user_agent)
                .await?
        };
        let did = who.did.clone();
        tracing::info!(%did, "login");
        let mut access = Vec::new();
        for mut a in scopes {
            let owner = a.name.split('/').next().unwrap_or("").to_string();
            let own = self.owns(&did, &owner).await;
            a.actions.retain(|x| x == "pull" || (own && x != "*"));
            if !a.actions.is_empty() {
                access.push(a);
            }
        }
        Ok(self.respond(&service, &did, access))
    }

    fn limited(&self, why: Limited, addr: &str) -> AuthError {
        tracing::warn!(addr, reason = ?why, "login refused by the brute-force limits");
        AuthError::TooManyFailures
    }

    /// `user` + device secret (from `docker-credential-atcr`): no PDS call at all. Device
    /// secrets carry 256 random bits, so guessing is hopeless and failures are not counted:
    /// a revoked device keeps getting a clear 401 (Docker asks for several tokens per push),
    /// never a 429. The address limit still applies.
    async fn device_login(
        &self,
        user: &str,
        secret: &str,
        client_addr: &str,
    ) -> Result<LoggedIn, AuthError> {
        self.limiter
            .check_address(client_addr)
            .map_err(|w| self.limited(w, client_addr))?;
        let did = match self.resolver.resolve_did_of(user).await {
            Ok(d) => d,
            Err(source) => {
                self.limiter.fail_address(client_addr);
                return Err(AuthError::Identity {
                    identifier: user.to_string(),
                    source,
                });
            }
        };
        match self.devices.authenticate(secret).await {
            Ok(Some(d)) if d.did == did => Ok(LoggedIn {
                did: d.did,
                handle: d.handle,
            }),
            Ok(_) => Err(AuthError::BadCredentials(format!(
                "unknown or revoked device credential for {user}: run docker-credential-atcr login"
            ))),
            Err(e) => Err(AuthError::Internal(e.to_string())),
        }
    }

    /// Handle-or-DID + app password -> a PDS session (reused when the same password was
    /// accepted before, else `createSession`), sealed into the session store, with the
    /// brute-force limits and the login hook. Shared by the token endpoint and the web UI's
    /// app-password form.
    pub async fn password_login(
        &self,
        user: &str,
        password: &str,
        client_addr: &str,
        user_agent: Option<&str>,
    ) -> Result<LoggedIn, AuthError> {
        self.limiter
            .check_address(client_addr)
            .map_err(|w| self.limited(w, client_addr))?;
        let identity = match self.resolver.resolve(user).await {
            Ok(i) => i,
            Err(source) => {
                self.limiter.fail_address(client_addr);
                return Err(AuthError::Identity {
                    identifier: user.to_string(),
                    source,
                });
            }
        };
        // Counted now, before any PDS call: concurrent guesses cannot overtake the count.
        let attempt = self
            .limiter
            .begin(client_addr, &identity.did)
            .map_err(|w| self.limited(w, client_addr))?;
        if let Some(who) = self
            .reuse_session(&identity.did, &identity.pds, password)
            .await
        {
            attempt.succeeded();
            // The hook keeps the profile's `ociClient` current (it skips logins it has seen).
            self.after_login(&who.did, user_agent).await;
            return Ok(who);
        }
        let session = match self
            .resolver
            .xrpc()
            .create_session(&identity.pds, &identity.did, password)
            .await
        {
            Ok(s) => s,
            Err(e) if e.is_auth_failure() => {
                attempt.failed();
                return Err(AuthError::BadCredentials(format!(
                    "the PDS {} refused the password for {user}",
                    identity.pds
                )));
            }
            // Not the user's fault: the attempt is given back when `attempt` drops.
            Err(e) => return Err(AuthError::PdsUnavailable(e)),
        };
        if session.did != identity.did {
            attempt.failed();
            return Err(AuthError::BadCredentials(
                "the PDS answered for another account".into(),
            ));
        }
        if kind_of_session(&session.access_jwt) == SessionKind::MainPassword {
            // Never keep it: end it at the PDS, and count it like a failure (a script that
            // keeps sending the main password must not burn the account's PDS logins).
            if let Err(e) = self
                .resolver
                .xrpc()
                .delete_session(&identity.pds, &session.refresh_jwt)
                .await
            {
                tracing::warn!(did = %identity.did, error = %e, "cannot delete a main-password session at the PDS");
            }
            attempt.failed();
            tracing::info!(did = %identity.did, "main password refused (session deleted at the PDS)");
            return Err(AuthError::MainPassword);
        }
        let now = now_unix();
        let login = if self.settings.session_reuse.is_zero() {
            None
        } else {
            self.hasher.hash(password).await.map(|hash| LoginProof {
                hash,
                created_unix: now,
                verified_unix: now,
            })
        };
        let pds_session = PdsSession {
            pds: identity.pds.clone(),
            session,
            login,
        };
        self.sessions
            .put(&pds_session)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        attempt.succeeded();
        self.after_login(&pds_session.session.did, user_agent).await;
        Ok(LoggedIn {
            did: pds_session.session.did.clone(),
            handle: pds_session.session.handle.clone(),
        })
    }

    /// The stored session of `did`, when `password` is the one that made it, it is young
    /// enough, and (every `session_revalidate`) a refresh at the PDS still works. A refresh
    /// the PDS refuses (revoked app password) drops the session: the caller then asks the
    /// PDS with the password, which fails too.
    async fn reuse_session(&self, did: &str, pds: &str, password: &str) -> Option<LoggedIn> {
        let stored = self.sessions.get(did).await.ok()?;
        let proof = stored.login.as_ref()?;
        let now = now_unix();
        if stored.pds != pds
            || proof.created_unix + self.settings.session_reuse.as_secs() <= now
            || !self.hasher.verify(password, &proof.hash).await
        {
            return None;
        }
        let stored = if proof.verified_unix + self.settings.session_revalidate.as_secs() <= now {
            match self.sessions.refresh(&stored).await {
                Ok(fresh) => fresh,
                Err(sessions::SessionError::Revoked(_)) => return None,
                // The PDS is down: the password was verified against its hash, so a token
                // for pulls and the stored session stay usable.
                Err(e) => {
                    tracing::warn!(%did, error = %e, "cannot revalidate a reused session");
                    stored
                }
            }
        } else {
            stored
        };
        tracing::debug!(%did, "app password matched the stored session: no createSession");
        Some(LoggedIn {
            did: stored.session.did.clone(),
            handle: stored.session.handle.clone(),
        })
    }

    /// Runs the login hook (the sailor profile) for a DID that just signed in, by password
    /// or OAuth.
    pub async fn after_login(&self, did: &str, user_agent: Option<&str>) {
        let hook = self
            .login_hook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(h) = hook {
            h.after_login(did, user_agent).await;
        }
    }

    /// Forget what lets a password skip the PDS (sign-out, revocation).
    pub async fn forget_password_session(&self, did: &str) {
        if let Err(e) = self.sessions.forget(did).await {
            tracing::warn!(%did, error = %e, "cannot forget the PDS session");
        }
    }

    pub fn respond(&self, service: &str, sub: &str, access: Vec<Access>) -> TokenResponse {
        let (token, ttl, now) = self.issue(service, sub, access);
        TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: ttl,
            issued_at: rfc3339(now),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
