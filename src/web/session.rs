//! Browser sessions and CSRF tokens.
//!
//! - A session is a random 32-byte id in the `atcr_session` cookie (HttpOnly, SameSite=Lax,
//!   Secure behind https). redb (`ui_sessions`) stores only sha256(id) -> {DID, handle,
//!   CSRF token, expiry}, so a copy of the database does not yield usable cookies. The PDS
//!   session itself stays in the sealed `secrets` table ([`crate::auth::sessions`]).
//! - Every POST carries a `csrf` form field. Logged in, it must equal the session's token;
//!   anonymous (the login forms), it must equal the `atcr_csrf` cookie (double submit).
//!   Compared in constant time (`subtle`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::registry::store::{now_unix, MetaStore, StoreError};

pub const SESSION_COOKIE: &str = "atcr_session";
pub const CSRF_COOKIE: &str = "atcr_csrf";
/// A week: long enough to be convenient, short enough that a forgotten browser expires.
pub const SESSION_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebSession {
    pub did: String,
    pub handle: String,
    pub csrf: String,
    pub expires_unix: u64,
}

pub struct Sessions {
    store: Arc<MetaStore>,
}

/// 32 random bytes, base64url: cookie ids and CSRF tokens.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Constant-time equality of a submitted token and the expected one (empty never matches).
pub fn tokens_match(submitted: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(submitted.as_bytes().ct_eq(expected.as_bytes()))
}

impl Sessions {
    pub fn new(store: Arc<MetaStore>) -> Sessions {
        Sessions { store }
    }

    /// Creates a session; returns the cookie id and the session.
    pub async fn create(
        &self,
        did: &str,
        handle: &str,
    ) -> Result<(String, WebSession), StoreError> {
        let id = random_token();
        let s = WebSession {
            did: did.into(),
            handle: handle.into(),
            csrf: random_token(),
            expires_unix: now_unix() + SESSION_TTL_SECS,
        };
        let (k, v) = (key_of(&id), serde_json::to_vec(&s)?);
        self.store.run(move |st| st.put_ui_session(&k, &v)).await?;
        // Opportunistic cleanup of expired rows; logins are rare enough to pay for it.
        let now = now_unix();
        let _ = self
            .store
            .run(move |st| {
                st.purge_ui_sessions(|v| {
                    serde_json::from_slice::<WebSession>(v)
                        .map(|s| s.expires_unix <= now)
                        .unwrap_or(true)
                })
            })
            .await;
        Ok((id, s))
    }

    /// The live session for a cookie id (expired ones are deleted and read as absent).
    pub async fn get(&self, id: &str) -> Result<Option<WebSession>, StoreError> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        let k = key_of(id);
        let k2 = k.clone();
        let Some(raw) = self.store.run(move |st| st.get_ui_session(&k)).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<WebSession>(&raw) {
            Ok(s) if s.expires_unix > now_unix() => Ok(Some(s)),
            _ => {
                self.store.run(move |st| st.delete_ui_session(&k2)).await?;
                Ok(None)
            }
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let k = key_of(id);
        self.store.run(move |st| st.delete_ui_session(&k)).await
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value. `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool, same_site: &str) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_store_only_a_hash_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let sessions = Sessions::new(store.clone());
        let (id, s) = sessions
            .create("did:plc:alice", "alice.test")
            .await
            .unwrap();
        assert_eq!(sessions.get(&id).await.unwrap(), Some(s.clone()));
        assert!(
            store.get_ui_session(&id).unwrap().is_none(),
            "raw id is not a key"
        );
        assert_eq!(sessions.get("forged").await.unwrap(), None);
        // Expired: read as absent and removed.
        let old = WebSession {
            expires_unix: now_unix() - 1,
            ..s
        };
        store
            .put_ui_session(&key_of("old"), &serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert_eq!(sessions.get("old").await.unwrap(), None);
        assert!(store.get_ui_session(&key_of("old")).unwrap().is_none());
        sessions.delete(&id).await.unwrap();
        assert_eq!(sessions.get(&id).await.unwrap(), None);
    }

    #[test]
    fn csrf_and_cookies() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abd", "abc"));
        assert!(!tokens_match("", ""));
        assert!(!tokens_match("abc", "abcd"));
        let h = Some("a=1; atcr_session=xyz; atcr_csrf=t");
        assert_eq!(cookie(h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(h, CSRF_COOKIE), Some("t"));
        assert_eq!(cookie(h, "b"), None);
        let c = set_cookie(SESSION_COOKIE, "v", 10, true, "Lax");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "v", 10, false, "Lax").contains("Secure"));
    }
}
