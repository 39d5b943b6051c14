//! Users' PDS sessions, kept only on this host, and the **one session abstraction** every
//! write to a user's PDS goes through ([`PdsAgent`], [`SessionStore::with_agent`]).
//!
//! Two kinds of session can stand behind a DID:
//! - an **app-password session** ([`PdsSession`]: access + refresh JWT from `createSession`,
//!   with the [`LoginProof`] that lets the same app password reuse it), called with
//!   `Authorization: Bearer`;
//! - an **OAuth session** ([`OAuthSession`]: DPoP-bound access token, refresh token, the
//!   session's DPoP key and the authorization server's endpoints), called with
//!   `Authorization: DPoP` and a fresh proof per request.
//!
//! Record writes (`registry::pds`, the web UI's stars) and service tokens
//! ([`SessionStore::service_token`], `getServiceAuth` for holds) take a [`PdsAgent`] and do
//! not care which kind it is: the OAuth session is preferred when both exist. An expired
//! access token is refreshed (once, serialised per store) and the call retried; a refresh the
//! PDS refuses drops the session.
//!
//! Everything is sealed with XChaCha20-Poly1305 (random 24-byte nonce; the slot's DID or key
//! as associated data, so a sealed value moved to another slot does not open) under
//! `keys/session-seal.key`, in the `secrets` table of `registry.redb`.

use std::sync::{Arc, OnceLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::atproto::dpop::{Es256Key, NonceCache};
use crate::atproto::xrpc::{Credential, Session, XrpcClient, XrpcError};
use crate::registry::store::{now_unix, MetaStore, StoreError};

/// Proof that an app password was accepted by the PDS: its argon2id hash and when.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginProof {
    /// PHC string of the app password (salted, slow).
    pub hash: String,
    /// When the PDS last accepted the password itself (`createSession`).
    pub created_unix: u64,
    /// When the session was last confirmed alive at the PDS (created or refreshed).
    pub verified_unix: u64,
}

/// An app-password PDS session plus the PDS it belongs to.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct PdsSession {
    pub pds: String,
    pub session: Session,
    /// Present when the session came from a password login this registry may reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginProof>,
}

impl std::fmt::Debug for PdsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens or the hash.
        f.debug_struct("PdsSession")
            .field("pds", &self.pds)
            .field("did", &self.session.did)
            .finish_non_exhaustive()
    }
}

/// An ATProto OAuth session (confidential client, DPoP-bound tokens).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct OAuthSession {
    pub did: String,
    pub handle: String,
    /// The user's PDS (the resource server).
    pub pds: String,
    /// The authorization server (`iss`) and its endpoints.
    pub issuer: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: String,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_unix: u64,
    pub scope: String,
    /// The session's DPoP private key (P-256 scalar, hex).
    pub dpop_key: String,
    pub created_unix: u64,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("did", &self.did)
            .field("issuer", &self.issuer)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

impl OAuthSession {
    pub fn key(&self) -> Option<Es256Key> {
        hex::decode(&self.dpop_key)
            .ok()
            .and_then(|b| Es256Key::from_bytes(&b).ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no PDS session for {0}: log in again (docker login, or sign in on the web)")]
    Missing(String),
    #[error("stored PDS session for {0} cannot be decrypted")]
    Corrupt(String),
    /// The PDS (or authorization server) refused to refresh: the session is gone.
    #[error("the PDS ended the session of {0}: log in again")]
    Revoked(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Xrpc(#[from] XrpcError),
}

/// Refreshes OAuth sessions (the token endpoint needs the client's key; `auth::oauth`).
#[async_trait::async_trait]
pub trait OAuthRefresher: Send + Sync {
    async fn refresh(&self, s: &OAuthSession) -> Result<OAuthSession, SessionError>;
}

#[derive(Clone, Debug, PartialEq)]
enum AgentKind {
    AppPassword,
    OAuth,
}

/// An authenticated handle on one user's PDS: whatever kind of session stands behind it.
#[derive(Clone)]
pub struct PdsAgent {
    pub did: String,
    pub handle: String,
    pub pds: String,
    /// Pass to every `XrpcClient` call that needs the user's authority.
    pub auth: Credential,
    kind: AgentKind,
    /// The access token this agent carries (to tell a stale agent from a refreshed one).
    token: String,
}

impl std::fmt::Debug for PdsAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdsAgent")
            .field("did", &self.did)
            .field("pds", &self.pds)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PdsAgent {
    pub fn is_oauth(&self) -> bool {
        self.kind == AgentKind::OAuth
    }
}

/// The error that means "refresh the access token and try again".
fn needs_refresh(e: &XrpcError) -> bool {
    e.is_expired_token()
        || matches!(e, XrpcError::Remote { status: 401, error, .. }
            if matches!(error.as_str(), "InvalidToken" | "invalid_token" | "ExpiredToken"))
}

/// Refresh an OAuth access token this long before it expires.
const OAUTH_REFRESH_MARGIN_SECS: u64 = 60;

pub struct SessionStore {
    store: Arc<MetaStore>,
    cipher: XChaCha20Poly1305,
    xrpc: XrpcClient,
    /// Serialises refreshes (refresh tokens are single-use).
    refresh_lock: tokio::sync::Mutex<()>,
    oauth: OnceLock<Arc<dyn OAuthRefresher>>,
    /// DPoP nonces of resource servers (PDSes).
    pub nonces: Arc<NonceCache>,
}

fn key_of(did: &str) -> String {
    format!("pds-session/{did}")
}
fn oauth_key_of(did: &str) -> String {
    format!("oauth-session/{did}")
}

impl SessionStore {
    pub fn new(store: Arc<MetaStore>, seal_key: [u8; 32], xrpc: XrpcClient) -> Self {
        SessionStore {
            store,
            cipher: XChaCha20Poly1305::new(&seal_key.into()),
            xrpc,
            refresh_lock: tokio::sync::Mutex::new(()),
            oauth: OnceLock::new(),
            nonces: Arc::new(NonceCache::default()),
        }
    }

    pub fn set_oauth_refresher(&self, r: Arc<dyn OAuthRefresher>) {
        let _ = self.oauth.set(r);
    }

    pub fn xrpc(&self) -> &XrpcClient {
        &self.xrpc
    }

    // ---- sealing ------------------------------------------------------------------------

    fn seal_bytes(&self, aad: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    fn open_bytes(&self, aad: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()
    }

    /// Seals `value` into the secret `key` (associated data: `aad`).
    pub async fn put_sealed<T: Serialize>(
        &self,
        key: &str,
        aad: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let plain = serde_json::to_vec(value).map_err(StoreError::from)?;
        let sealed = self.seal_bytes(aad, &plain);
        let k = key.to_string();
        self.store.run(move |st| st.put_secret(&k, &sealed)).await?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, aad: &str, sealed: &[u8]) -> Result<T, SessionError> {
        let plain = self
            .open_bytes(aad, sealed)
            .ok_or_else(|| SessionError::Corrupt(aad.into()))?;
        serde_json::from_slice(&plain).map_err(|_| SessionError::Corrupt(aad.into()))
    }

    pub async fn get_sealed<T: DeserializeOwned>(
        &self,
        key: &str,
        aad: &str,
    ) -> Result<Option<T>, SessionError> {
        let k = key.to_string();
        match self.store.run(move |st| st.get_secret(&k)).await? {
            Some(sealed) => Ok(Some(self.decode(aad, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Reads and deletes in one transaction (single-use values).
    pub async fn take_sealed<T: DeserializeOwned>(
        &self,
        key: &str,
        aad: &str,
    ) -> Result<Option<T>, SessionError> {
        let k = key.to_string();
        match self.store.run(move |st| st.take_secret(&k)).await? {
            Some(sealed) => Ok(Some(self.decode(aad, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Every sealed value under `prefix` that opens (its key is its associated data).
    pub async fn list_sealed<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, SessionError> {
        let p = prefix.to_string();
        let rows = self.store.run(move |st| st.list_secrets(&p)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| self.decode(&k, &v).ok().map(|t| (k, t)))
            .collect())
    }

    pub async fn delete_sealed(&self, key: &str) -> Result<(), SessionError> {
        let k = key.to_string();
        self.store.run(move |st| st.delete_secret(&k)).await?;
        Ok(())
    }

    // ---- app-password sessions ------------------------------------------------------------

    pub async fn put(&self, s: &PdsSession) -> Result<(), SessionError> {
        let did = s.session.did.clone();
        self.put_sealed(&key_of(&did), &did, s).await
    }

    pub async fn get(&self, did: &str) -> Result<PdsSession, SessionError> {
        self.get_sealed(&key_of(did), did)
            .await?
            .ok_or_else(|| SessionError::Missing(did.into()))
    }

    pub async fn forget(&self, did: &str) -> Result<(), SessionError> {
        self.delete_sealed(&key_of(did)).await
    }

    /// Refreshes the app-password session that `stale` came from (`refreshSession`).
    pub async fn refresh(&self, stale: &PdsSession) -> Result<PdsSession, SessionError> {
        let _guard = self.refresh_lock.lock().await;
        let did = &stale.session.did;
        // Someone else may have refreshed while we waited.
        let current = self.get(did).await?;
        if current.session.access_jwt != stale.session.access_jwt {
            return Ok(current);
        }
        let fresh = match self
            .xrpc
            .refresh_session(&current.pds, &current.session.refresh_jwt)
            .await
        {
            Ok(f) => f,
            Err(e) if e.is_auth_failure() => {
                // Revoked app password, expired refresh token, taken-down account.
                self.forget(did).await?;
                tracing::info!(%did, error = %e, "the PDS refused to refresh; session dropped");
                return Err(SessionError::Revoked(did.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut login = current.login.clone();
        if let Some(l) = &mut login {
            l.verified_unix = now_unix();
        }
        let s = PdsSession {
            pds: current.pds.clone(),
            session: fresh,
            login,
        };
        self.put(&s).await?;
        Ok(s)
    }

    // ---- OAuth sessions -------------------------------------------------------------------

    pub async fn put_oauth(&self, s: &OAuthSession) -> Result<(), SessionError> {
        self.put_sealed(&oauth_key_of(&s.did), &s.did, s).await
    }

    pub async fn get_oauth(&self, did: &str) -> Result<Option<OAuthSession>, SessionError> {
        self.get_sealed(&oauth_key_of(did), did).await
    }

    pub async fn forget_oauth(&self, did: &str) -> Result<(), SessionError> {
        self.delete_sealed(&oauth_key_of(did)).await
    }

    async fn refresh_oauth(
        &self,
        stale_token: &str,
        did: &str,
    ) -> Result<OAuthSession, SessionError> {
        let _guard = self.refresh_lock.lock().await;
        let current = self
            .get_oauth(did)
            .await?
            .ok_or_else(|| SessionError::Missing(did.into()))?;
        if current.access_token != stale_token {
            return Ok(current);
        }
        let Some(r) = self.oauth.get() else {
            return Err(SessionError::Missing(did.into()));
        };
        match r.refresh(&current).await {
            Ok(fresh) => {
                self.put_oauth(&fresh).await?;
                Ok(fresh)
            }
            Err(SessionError::Revoked(d)) => {
                self.forget_oauth(did).await?;
                tracing::info!(%did, "the authorization server refused to refresh; OAuth session dropped");
                Err(SessionError::Revoked(d))
            }
            Err(e) => Err(e),
        }
    }

    fn oauth_agent(&self, s: &OAuthSession) -> Result<PdsAgent, SessionError> {
        let key = s
            .key()
            .ok_or_else(|| SessionError::Corrupt(s.did.clone()))?;
        Ok(PdsAgent {
            did: s.did.clone(),
            handle: s.handle.clone(),
            pds: s.pds.clone(),
            auth: Credential::Dpop {
                token: s.access_token.clone(),
                key: Arc::new(key),
                nonces: self.nonces.clone(),
            },
            kind: AgentKind::OAuth,
            token: s.access_token.clone(),
        })
    }

    fn app_agent(s: &PdsSession) -> PdsAgent {
        PdsAgent {
            did: s.session.did.clone(),
            handle: s.session.handle.clone(),
            pds: s.pds.clone(),
            auth: Credential::Bearer(s.session.access_jwt.clone()),
            kind: AgentKind::AppPassword,
            token: s.session.access_jwt.clone(),
        }
    }

    // ---- the abstraction ------------------------------------------------------------------

    /// The DID's session as an agent: the OAuth session when there is one (refreshed first
    /// when its access token is about to expire), else the app-password session.
    pub async fn agent(&self, did: &str) -> Result<PdsAgent, SessionError> {
        if let Some(s) = self.get_oauth(did).await? {
            let s = if s.expires_unix <= now_unix() + OAUTH_REFRESH_MARGIN_SECS {
                match self.refresh_oauth(&s.access_token, did).await {
                    Ok(fresh) => fresh,
                    // Revoked: fall back to an app-password session if there is one.
                    Err(SessionError::Revoked(_)) => {
                        return Ok(Self::app_agent(&self.get(did).await?))
                    }
                    Err(e) => return Err(e),
                }
            } else {
                s
            };
            tracing::debug!(%did, "PDS call through the OAuth session (DPoP)");
            return self.oauth_agent(&s);
        }
        tracing::debug!(%did, "PDS call through the app-password session");
        Ok(Self::app_agent(&self.get(did).await?))
    }

    /// A fresh agent after `stale` was refused as expired.
    async fn refreshed(&self, stale: &PdsAgent) -> Result<PdsAgent, SessionError> {
        match stale.kind {
            AgentKind::OAuth => {
                let s = self.refresh_oauth(&stale.token, &stale.did).await?;
                self.oauth_agent(&s)
            }
            AgentKind::AppPassword => {
                let current = self.get(&stale.did).await?;
                let stale_session = PdsSession {
                    session: Session {
                        access_jwt: stale.token.clone(),
                        ..current.session.clone()
                    },
                    ..current
                };
                Ok(Self::app_agent(&self.refresh(&stale_session).await?))
            }
        }
    }

    /// Run `f` with the DID's agent; when the PDS says the access token expired, refresh
    /// once and retry.
    pub async fn with_agent<T, F, Fut>(&self, did: &str, f: F) -> Result<T, SessionError>
    where
        F: Fn(PdsAgent) -> Fut,
        Fut: std::future::Future<Output = Result<T, XrpcError>>,
    {
        let agent = self.agent(did).await?;
        match f(agent.clone()).await {
            Err(e) if needs_refresh(&e) => {
                let fresh = self.refreshed(&agent).await?;
                Ok(f(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// A service token from the DID's PDS (`com.atproto.server.getServiceAuth`) for `aud`
    /// (a hold's DID), bound to `lxm`, through whichever session the DID has.
    pub async fn service_token(
        &self,
        did: &str,
        aud: &str,
        lxm: Option<&str>,
        exp: Option<u64>,
    ) -> Result<String, SessionError> {
        let xrpc = self.xrpc.clone();
        self.with_agent(did, |a| {
            let xrpc = xrpc.clone();
            async move { xrpc.get_service_auth(&a.pds, &a.auth, aud, lxm, exp).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> PdsSession {
        PdsSession {
            pds: "http://localhost:2583".into(),
            session: Session {
                did: "did:plc:abc".into(),
                handle: "alice.test".into(),
                access_jwt: "ACCESS-SECRET".into(),
                refresh_jwt: "REFRESH-SECRET".into(),
                active: None,
            },
            login: Some(LoginProof {
                hash: "$argon2id$HASH-SECRET".into(),
                created_unix: 1,
                verified_unix: 1,
            }),
        }
    }

    #[tokio::test]
    async fn sealed_at_rest_and_bound_to_the_did() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let ss = SessionStore::new(store.clone(), [7u8; 32], XrpcClient::default());
        let s = session();
        ss.put(&s).await.unwrap();
        assert_eq!(ss.get("did:plc:abc").await.unwrap(), s);
        let raw = store
            .get_secret("pds-session/did:plc:abc")
            .unwrap()
            .unwrap();
        assert!(!raw.windows(6).any(|w| w == b"SECRET"));
        // Moved to another DID's slot: refuses to open.
        store.put_secret("pds-session/did:plc:evil", &raw).unwrap();
        assert!(matches!(
            ss.get("did:plc:evil").await,
            Err(SessionError::Corrupt(_))
        ));
        assert!(matches!(
            ss.get("did:plc:none").await,
            Err(SessionError::Missing(_))
        ));
        // Another key cannot open it.
        let other = SessionStore::new(store, [8u8; 32], XrpcClient::default());
        assert!(other.get("did:plc:abc").await.is_err());
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    #[tokio::test]
    async fn the_agent_prefers_oauth_and_hides_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let ss = SessionStore::new(store, [7u8; 32], XrpcClient::default());
        ss.put(&session()).await.unwrap();
        let a = ss.agent("did:plc:abc").await.unwrap();
        assert!(!a.is_oauth());
        assert!(matches!(&a.auth, Credential::Bearer(t) if t == "ACCESS-SECRET"));
        let key = Es256Key::generate();
        let o = OAuthSession {
            did: "did:plc:abc".into(),
            handle: "alice.test".into(),
            pds: "http://localhost:2583".into(),
            issuer: "http://localhost:2583".into(),
            token_endpoint: "http://localhost:2583/oauth/token".into(),
            revocation_endpoint: String::new(),
            access_token: "OAUTH-SECRET".into(),
            refresh_token: "R".into(),
            expires_unix: now_unix() + 3600,
            scope: "atproto transition:generic".into(),
            dpop_key: hex::encode(key.to_bytes()),
            created_unix: now_unix(),
        };
        ss.put_oauth(&o).await.unwrap();
        let a = ss.agent("did:plc:abc").await.unwrap();
        assert!(a.is_oauth());
        assert!(!format!("{a:?}").contains("SECRET"));
        assert!(!format!("{o:?}").contains("SECRET"));
        ss.forget_oauth("did:plc:abc").await.unwrap();
        assert!(!ss.agent("did:plc:abc").await.unwrap().is_oauth());
    }
}
