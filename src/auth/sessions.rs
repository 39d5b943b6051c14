//! PDS sessions (access + refresh JWT from `createSession`), kept only on this host: sealed
//! with XChaCha20-Poly1305 (random 24-byte nonce, the DID as associated data) under the key
//! in `keys/session-seal.key`, stored in the `secrets` table of `registry.redb`. A session
//! whose access JWT has expired is refreshed with `refreshSession` and stored again.

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::atproto::xrpc::{Session, XrpcClient, XrpcError};
use crate::registry::store::{MetaStore, StoreError};

/// A PDS session plus the PDS it belongs to.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct PdsSession {
    pub pds: String,
    pub session: Session,
}

impl std::fmt::Debug for PdsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("PdsSession")
            .field("pds", &self.pds)
            .field("did", &self.session.did)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no PDS session for {0}: log in again (docker login)")]
    Missing(String),
    #[error("stored PDS session for {0} cannot be decrypted")]
    Corrupt(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Xrpc(#[from] XrpcError),
}

pub struct SessionStore {
    store: Arc<MetaStore>,
    cipher: XChaCha20Poly1305,
    xrpc: XrpcClient,
    /// Serialises refreshes (a refresh JWT is single-use).
    refresh_lock: tokio::sync::Mutex<()>,
}

fn key_of(did: &str) -> String {
    format!("pds-session/{did}")
}

impl SessionStore {
    pub fn new(store: Arc<MetaStore>, seal_key: [u8; 32], xrpc: XrpcClient) -> Self {
        SessionStore {
            store,
            cipher: XChaCha20Poly1305::new(&seal_key.into()),
            xrpc,
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn seal(&self, did: &str, s: &PdsSession) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let plain = serde_json::to_vec(s).unwrap_or_default();
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: did.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    fn open(&self, did: &str, sealed: &[u8]) -> Result<PdsSession, SessionError> {
        if sealed.len() < 24 + 16 {
            return Err(SessionError::Corrupt(did.into()));
        }
        let (nonce, ct) = sealed.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: did.as_bytes(),
                },
            )
            .map_err(|_| SessionError::Corrupt(did.into()))?;
        serde_json::from_slice(&plain).map_err(|_| SessionError::Corrupt(did.into()))
    }

    pub async fn put(&self, s: &PdsSession) -> Result<(), SessionError> {
        let did = s.session.did.clone();
        let sealed = self.seal(&did, s);
        self.store
            .run(move |st| st.put_secret(&key_of(&did), &sealed))
            .await?;
        Ok(())
    }

    pub async fn get(&self, did: &str) -> Result<PdsSession, SessionError> {
        let k = key_of(did);
        let sealed = self
            .store
            .run(move |st| st.get_secret(&k))
            .await?
            .ok_or_else(|| SessionError::Missing(did.into()))?;
        self.open(did, &sealed)
    }

    /// Refresh after the PDS said `ExpiredToken`; `stale` is the session that failed.
    pub async fn refresh(&self, stale: &PdsSession) -> Result<PdsSession, SessionError> {
        let _guard = self.refresh_lock.lock().await;
        let did = &stale.session.did;
        // Someone else may have refreshed while we waited.
        let current = self.get(did).await?;
        if current.session.access_jwt != stale.session.access_jwt {
            return Ok(current);
        }
        let fresh = self
            .xrpc
            .refresh_session(&current.pds, &current.session.refresh_jwt)
            .await?;
        let s = PdsSession {
            pds: current.pds.clone(),
            session: fresh,
        };
        self.put(&s).await?;
        Ok(s)
    }

    pub async fn forget(&self, did: &str) -> Result<(), SessionError> {
        let k = key_of(did);
        self.store.run(move |st| st.delete_secret(&k)).await?;
        Ok(())
    }

    /// Run `f` with the DID's session; on `ExpiredToken` refresh once and retry.
    pub async fn with_session<T, F, Fut>(&self, did: &str, f: F) -> Result<T, SessionError>
    where
        F: Fn(PdsSession) -> Fut,
        Fut: std::future::Future<Output = Result<T, XrpcError>>,
    {
        let s = self.get(did).await?;
        match f(s.clone()).await {
            Err(e) if e.is_expired_token() => {
                let fresh = self.refresh(&s).await?;
                Ok(f(fresh).await?)
            }
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sealed_at_rest_and_bound_to_the_did() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let ss = SessionStore::new(store.clone(), [7u8; 32], XrpcClient::default());
        let s = PdsSession {
            pds: "http://localhost:2583".into(),
            session: Session {
                did: "did:plc:abc".into(),
                handle: "alice.test".into(),
                access_jwt: "ACCESS-SECRET".into(),
                refresh_jwt: "REFRESH-SECRET".into(),
                active: None,
            },
        };
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
}
