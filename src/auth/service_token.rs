//! "A service token for user X, audience Y, method Z" (atcr-spec 3.4): the one question the
//! registry asks before it calls a hold on a user's behalf. [`ServiceTokens`] is the seam;
//! [`PdsServiceTokens`] answers it through the user's PDS session stored on this host
//! ([`SessionStore`], refreshed on `ExpiredToken`) with `com.atproto.server.getServiceAuth`
//! (`aud` = the hold DID, `lxm` = the method, `exp` = five minutes). Any other kind of
//! session (OAuth with DPoP) can answer the same trait. Tokens are cached per
//! (DID, audience, method) until a minute before they expire, so a push of many layers asks
//! the PDS once per method, not once per request.

use std::sync::Arc;
use std::time::Duration;

use super::sessions::{SessionError, SessionStore};
use crate::atproto::xrpc::XrpcClient;
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

/// Service tokens from the user's stored app-password session.
pub struct PdsServiceTokens {
    sessions: Arc<SessionStore>,
    xrpc: XrpcClient,
    cache: TtlMap<String>,
}

impl PdsServiceTokens {
    pub fn new(sessions: Arc<SessionStore>, xrpc: XrpcClient) -> Self {
        PdsServiceTokens {
            sessions,
            xrpc,
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
        let xrpc = self.xrpc.clone();
        let token = self
            .sessions
            .with_session(did, |s| {
                let xrpc = xrpc.clone();
                async move {
                    xrpc.get_service_auth(&s.pds, &s.session.access_jwt, aud, Some(lxm), Some(exp))
                        .await
                }
            })
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
