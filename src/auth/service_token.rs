//! "A service token for user X, audience Y, method Z" (atcr-spec 3.4): the one question the
//! registry asks before it calls a hold on a user's behalf. [`ServiceTokens`] is the seam;
//! [`PdsServiceTokens`] answers it through the user's PDS session stored on this host
//! ([`SessionStore::service_token`]: the OAuth session with DPoP or the app-password session,
//! refreshed on an expired token) with `com.atproto.server.getServiceAuth` (`aud` = the hold
//! DID, `lxm` = the method, `exp` = five minutes). Tokens are cached per
//! (DID, audience, method) until a minute before they expire, so a push of many layers asks
//! the PDS once per method, not once per request.

use std::sync::Arc;
use std::time::Duration;

use super::sessions::{SessionError, SessionStore};
use crate::ttl_map::TtlMap;

/// Lifetime asked of the PDS.
const TOKEN_SECS: u64 = 300;
/// Tokens are reused until this long before they expire.
const REUSE: Duration = Duration::from_secs(TOKEN_SECS - 60);
const MAX_CACHED_TOKENS: usize = 10_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceTokenError {
    /// This host keeps no usable PDS session for the user.
    #[error("no PDS session for {0} on this registry: log in again (docker login)")]
    NoSession(String),
    /// The user's PDS refused or is unreachable.
    #[error("the PDS of {did} did not issue a service token: {detail}")]
    Pds { did: String, detail: String },
}

#[async_trait::async_trait]
pub trait ServiceTokens: Send + Sync {
    /// A token issued by `did`'s PDS for audience `aud` (a DID) and method `lxm` (an NSID).
    async fn service_token(
        &self,
        did: &str,
        aud: &str,
        lxm: &str,
    ) -> Result<String, ServiceTokenError>;
}

/// Service tokens from the user's stored PDS session (OAuth or app password).
pub struct PdsServiceTokens {
    sessions: Arc<SessionStore>,
    cache: TtlMap<String>,
}

impl PdsServiceTokens {
    pub fn new(sessions: Arc<SessionStore>) -> Self {
        PdsServiceTokens {
            sessions,
            cache: TtlMap::new(REUSE, MAX_CACHED_TOKENS),
        }
    }
}

#[async_trait::async_trait]
impl ServiceTokens for PdsServiceTokens {
    async fn service_token(
        &self,
        did: &str,
        aud: &str,
        lxm: &str,
    ) -> Result<String, ServiceTokenError> {
        let key = format!("{did} {aud} {lxm}");
        if let Some(t) = self.cache.get(&key) {
            return Ok(t);
        }
        let exp = crate::registry::store::now_unix() + TOKEN_SECS;
        // Through whichever session the DID has here (OAuth with DPoP, or app password),
        // refreshed once on an expired token.
        let token = self
            .sessions
            .service_token(did, aud, Some(lxm), Some(exp))
            .await
            .map_err(|e| match e {
                SessionError::Missing(_) | SessionError::Corrupt(_) => {
                    ServiceTokenError::NoSession(did.to_string())
                }
                other => ServiceTokenError::Pds {
                    did: did.to_string(),
                    detail: other.to_string(),
                },
            })?;
        self.cache.put(&key, token.clone());
        Ok(token)
    }
}
