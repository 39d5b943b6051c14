//! Registry JWTs: ES256 (P-256) tokens this registry issues to Docker clients and verifies on
//! every `/v2/` request. Signed with the crate's own `SigningKey` (low-S compact r||s), so no
//! JWT crate is needed; verification checks the header, signature, `iss`, `aud`, `exp` and
//! `nbf`, and refuses tokens longer than [`MAX_TOKEN_LEN`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::atproto::repo::crypto::{PublicKey, SigningKey};

pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Allowed clock skew for `nbf`/`exp`, in seconds.
const LEEWAY: u64 = 30;

/// One grant: `{"type":"repository","name":"alice.test/app","actions":["pull","push"]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    pub fn allows(&self, type_: &str, name: &str, action: &str) -> bool {
        self.type_ == type_ && self.name == name && self.actions.iter().any(|a| a == action)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The user's DID; empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
}

impl Claims {
    pub fn allows(&self, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|a| a.allows("repository", name, action))
    }

    pub fn is_anonymous(&self) -> bool {
        self.sub.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is too long")]
    TooLong,
    #[error("token algorithm is not ES256")]
    Algorithm,
    #[error("token signature does not verify")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for another service")]
    Audience,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Key id: the did:key form of the public key (stable, tells keys apart after rotation).
pub fn key_id(key: &PublicKey) -> String {
    key.did_key()
}

pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let header = Header {
        alg: "ES256".into(),
        typ: Some("JWT".into()),
        kid: Some(key_id(&key.public_key())),
    };
    let h = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

pub fn verify(key: &PublicKey, token: &str, service: &str, now: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if header.alg != "ES256" {
        return Err(JwtError::Algorithm);
    }
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
    let input_len = h.len() + 1 + c.len();
    key.verify(&token.as_bytes()[..input_len], &sig)
        .map_err(|_| JwtError::Signature)?;
    let claims: Claims = B64
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.exp + LEEWAY <= now {
        return Err(JwtError::Expired);
    }
    if claims.nbf > now + LEEWAY {
        return Err(JwtError::NotYetValid);
    }
    if claims.aud != service || claims.iss != service {
        return Err(JwtError::Audience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "reg.test".into(),
            sub: "did:plc:abc".into(),
            aud: "reg.test".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "1".into(),
            access: vec![Access {
                type_: "repository".into(),
                name: "alice.test/app".into(),
                actions: vec!["pull".into(), "push".into()],
            }],
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = SigningKey::generate_p256();
        let pk = key.public_key();
        let now = 1_700_000_000;
        let t = sign(&key, &claims(now));
        let c = verify(&pk, &t, "reg.test", now).unwrap();
        assert!(c.allows("alice.test/app", "push"));
        assert!(!c.allows("alice.test/other", "pull"));
        assert_eq!(
            verify(&pk, &t, "other", now).unwrap_err(),
            JwtError::Audience
        );
        assert_eq!(
            verify(&pk, &t, "reg.test", now + 400).unwrap_err(),
            JwtError::Expired
        );
        let other = SigningKey::generate_p256().public_key();
        assert_eq!(
            verify(&other, &t, "reg.test", now).unwrap_err(),
            JwtError::Signature
        );
        // Tampered claims.
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut c2 = claims(now);
        c2.sub = "did:plc:evil".into();
        let forged = B64.encode(serde_json::to_vec(&c2).unwrap());
        parts[1] = &forged;
        assert_eq!(
            verify(&pk, &parts.join("."), "reg.test", now).unwrap_err(),
            JwtError::Signature
        );
        assert_eq!(
            verify(&pk, "a.b", "reg.test", now).unwrap_err(),
            JwtError::Malformed
        );
        assert_eq!(
            verify(&pk, &"a".repeat(MAX_TOKEN_LEN + 1), "reg.test", now).unwrap_err(),
            JwtError::TooLong
        );
        // alg=none is refused.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(serde_json::to_vec(&claims(now)).unwrap())
        );
        assert_eq!(
            verify(&pk, &none, "reg.test", now).unwrap_err(),
            JwtError::Algorithm
        );
    }
}
