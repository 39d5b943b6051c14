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
    /// When the login happened; 0 for sessions written before this field existed.
    #[serde(default)]
    pub created_unix: u64,
    /// The browser's User-Agent at login (capped), so the owner can tell sessions apart.
    #[serde(default)]
    pub user_agent: String,
    /// Signed in with ATProto OAuth (else with an app password).
    #[serde(default)]
    pub oauth: bool,
}

/// One live session of a user, as the settings page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEntry {
    /// sha256 of the cookie id: names the session in a revoke form without revealing the
    /// cookie itself.
    pub key: String,
    pub session: WebSession,
}

/// Longest User-Agent kept with a session.
const USER_AGENT_MAX: usize = 200;

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

/// The stored key of a cookie id: sha256(id), hex.
pub fn key_of(id: &str) -> String {
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
        user_agent: &str,
    ) -> Result<(String, WebSession), StoreError> {
        self.create_with(did, handle, user_agent, false).await
    }

    /// Like [`Sessions::create`]; `oauth` records how the user signed in.
    pub async fn create_with(
        &self,
        did: &str,
        handle: &str,
        user_agent: &str,
        oauth: bool,
    ) -> Result<(String, WebSession), StoreError> {
        let id = random_token();
        let now = now_unix();
        let s = WebSession {
            did: did.into(),
            handle: handle.into(),
            csrf: random_token(),
            expires_unix: now + SESSION_TTL_SECS,
            created_unix: now,
            user_agent: cap_chars(user_agent, USER_AGENT_MAX),
            oauth,
        };
        let (k, v) = (key_of(&id), serde_json::to_vec(&s)?);
        self.store.run(move |st| st.put_ui_session(&k, &v)).await?;
        // Opportunistic cleanup of expired rows; logins are rare enough to pay for it.
        let _ = self
            .store
            .run(move |st| st.remove_ui_sessions(|_, v| !live_at(v, now)))
            .await;
        Ok((id, s))
    }

    /// The live sessions of `did`, newest first.
    pub async fn list(&self, did: &str) -> Result<Vec<SessionEntry>, StoreError> {
        let rows = self.store.run(|st| st.list_ui_sessions()).await?;
        let now = now_unix();
        let mut out: Vec<SessionEntry> = rows
            .into_iter()
            .filter_map(|(key, v)| {
                let session = serde_json::from_slice::<WebSession>(&v).ok()?;
                (session.did == did && session.expires_unix > now)
                    .then_some(SessionEntry { key, session })
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.session.created_unix));
        Ok(out)
    }

    /// Ends the session stored under `key` if it belongs to `did` (anyone else's key, or an
    /// unknown one, changes nothing); returns whether one ended.
    pub async fn revoke(&self, did: &str, key: &str) -> Result<bool, StoreError> {
        let (did, key) = (did.to_string(), key.to_string());
        let n = self
            .store
            .run(move |st| st.remove_ui_sessions(|k, v| k == key && owned_by(v, &did)))
            .await?;
        Ok(n > 0)
    }

    /// Ends every session of `did` but the one stored under `keep`; returns how many ended.
    pub async fn revoke_others(&self, did: &str, keep: &str) -> Result<usize, StoreError> {
        let (did, keep) = (did.to_string(), keep.to_string());
        self.store
            .run(move |st| st.remove_ui_sessions(|k, v| k != keep && owned_by(v, &did)))
            .await
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

fn live_at(raw: &[u8], now: u64) -> bool {
    serde_json::from_slice::<WebSession>(raw).is_ok_and(|s| s.expires_unix > now)
}

fn owned_by(raw: &[u8], did: &str) -> bool {
    serde_json::from_slice::<WebSession>(raw).is_ok_and(|s| s.did == did)
}

fn cap_chars(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
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
            .create("did:plc:alice", "alice.test", "Firefox\n")
            .await
            .unwrap();
        assert_eq!(sessions.get(&id).await.unwrap(), Some(s.clone()));
        assert_eq!(s.user_agent, "Firefox", "control characters are dropped");
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

    #[tokio::test]
    async fn owners_list_and_revoke_only_their_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let sessions = Sessions::new(store);
        let (a1, _) = sessions.create("did:plc:alice", "a", "one").await.unwrap();
        let (a2, _) = sessions.create("did:plc:alice", "a", "two").await.unwrap();
        let (a3, _) = sessions
            .create("did:plc:alice", "a", "three")
            .await
            .unwrap();
        let (b1, _) = sessions.create("did:plc:bob", "b", "bob's").await.unwrap();
        let listed = sessions.list("did:plc:alice").await.unwrap();
        let mut keys: Vec<_> = listed.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        let mut expected = vec![key_of(&a1), key_of(&a2), key_of(&a3)];
        expected.sort();
        assert_eq!(keys, expected, "bob's session is not alice's to see");

        // Alice cannot end bob's session by naming its key; she can end her own.
        assert!(!sessions
            .revoke("did:plc:alice", &key_of(&b1))
            .await
            .unwrap());
        assert!(sessions.get(&b1).await.unwrap().is_some());
        assert!(sessions
            .revoke("did:plc:alice", &key_of(&a2))
            .await
            .unwrap());
        assert!(sessions.get(&a2).await.unwrap().is_none());

        // "Sign out everywhere else" keeps the current one and bob's.
        let n = sessions
            .revoke_others("did:plc:alice", &key_of(&a1))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(sessions.get(&a1).await.unwrap().is_some());
        assert!(sessions.get(&a3).await.unwrap().is_none());
        assert!(sessions.get(&b1).await.unwrap().is_some());
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
