//! Passwords, as far as a registry may know them:
//! - [`PasswordHasher`]: argon2id (salted, deliberately slow; a couple of hashes at a time on
//!   blocking threads) of an app password that the PDS accepted, kept sealed beside its PDS
//!   session so the same login later reuses the session instead of a new `createSession`.
//! - [`kind_of_session`]: an app-password session from a main-password one, by the `scope`
//!   the PDS put into the access JWT (`com.atproto.appPass` / `com.atproto.appPassPrivileged`
//!   versus `com.atproto.access`).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

/// Hashes (each ~19 MiB of memory) running at once; more wait.
const CONCURRENT_HASHES: usize = 2;

pub struct PasswordHasher {
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        PasswordHasher {
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HASHES)),
        }
    }
}

impl PasswordHasher {
    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
    pub async fn hash(&self, password: &str) -> Option<String> {
        let _permit = self.permits.acquire().await.ok()?;
        let password = password.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand_core::OsRng);
            Argon2::default()
                .hash_password(&password, &salt)
                .ok()
                .map(|h| h.to_string())
        })
        .await
        .ok()
        .flatten()
    }

    /// Does `password` match the stored PHC string? (The comparison is argon2's,
    /// constant-time.)
    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let (password, phc) = (password.as_bytes().to_vec(), phc.to_string());
        tokio::task::spawn_blocking(move || match PasswordHash::new(&phc) {
            Ok(h) => Argon2::default().verify_password(&password, &h).is_ok(),
            Err(_) => false,
        })
        .await
        .unwrap_or(false)
    }
}

/// What kind of password made a PDS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    AppPassword,
    /// The account's main password: never kept.
    MainPassword,
    /// The PDS did not say (no readable `scope`); treated as an app password, since PDSes
    /// that predate app-password scopes have nothing else to offer.
    Unknown,
}

/// Reads the `scope` claim of an access JWT (unverified: it came straight from the PDS over
/// the connection we opened, and only decides whether to *refuse* a session).
pub fn kind_of_session(access_jwt: &str) -> SessionKind {
    let scope = access_jwt
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("scope").and_then(|s| s.as_str()).map(str::to_string));
    match scope.as_deref() {
        Some("com.atproto.appPass") | Some("com.atproto.appPassPrivileged") => {
            SessionKind::AppPassword
        }
        Some("com.atproto.access") => SessionKind::MainPassword,
        _ => SessionKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!("e30.{}.sig", B64.encode(payload))
    }

    #[test]
    fn session_kinds_from_scopes() {
        assert_eq!(
            kind_of_session(&jwt(r#"{"scope":"com.atproto.appPass","sub":"did:plc:a"}"#)),
            SessionKind::AppPassword
        );
        assert_eq!(
            kind_of_session(&jwt(r#"{"scope":"com.atproto.appPassPrivileged"}"#)),
            SessionKind::AppPassword
        );
        assert_eq!(
            kind_of_session(&jwt(r#"{"scope":"com.atproto.access"}"#)),
            SessionKind::MainPassword
        );
        assert_eq!(kind_of_session("garbage"), SessionKind::Unknown);
    }

    #[tokio::test]
    async fn hashes_are_salted_and_verify() {
        let h = PasswordHasher::default();
        let a = h.hash("abcd-efgh-ijkl-mnop").await.unwrap();
        let b = h.hash("abcd-efgh-ijkl-mnop").await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(!a.contains("abcd"));
        assert!(h.verify("abcd-efgh-ijkl-mnop", &a).await);
        assert!(!h.verify("abcd-efgh-ijkl-mnoq", &a).await);
        assert!(!h.verify("x", "not a phc string").await);
    }
}
