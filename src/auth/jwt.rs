//! Registry JWTs: ES256 (P-256) tokens this registry issues to Docker clients and verifies on
//! every `/v2/` request, through the `jsonwebtoken` crate (pure-Rust `p256` backend, no C).
//! Verification is pinned: algorithm ES256 only, `iss` = `aud` = the service, `exp` and
//! `nbf` required with [`LEEWAY`] seconds of clock skew, tokens longer than
//! [`MAX_TOKEN_LEN`] refused before parsing. The signing key is the registry's own
//! `keys/registry-token.key`; the header's `kid` is its did:key.
//!
//! Service tokens minted by PDSes (`pds/service_auth.rs`) do not come through here: they are
//! ES256K (secp256k1) as often as ES256, which jsonwebtoken does not implement.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};

use crate::atproto::repo::crypto::{KeyAlgorithm, PublicKey, SigningKey};

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
    #[error("the token key is not a P-256 key")]
    Key,
}

/// Key id: the did:key form of the public key (stable, tells keys apart after rotation).
pub fn key_id(key: &PublicKey) -> String {
    key.did_key()
}

/// The PKCS#8 form jsonwebtoken takes for an ES256 key.
fn encoding_key(key: &SigningKey) -> Result<EncodingKey, JwtError> {
    if key.algorithm() != KeyAlgorithm::P256 {
        return Err(JwtError::Key);
    }
    let secret = p256::SecretKey::from_slice(&key.to_bytes()).map_err(|_| JwtError::Key)?;
    let der = secret.to_pkcs8_der().map_err(|_| JwtError::Key)?;
    Ok(EncodingKey::from_ec_der(der.as_bytes()))
}

/// Signs `claims` with the registry's token key, which `auth/keys.rs` always creates and
/// loads as P-256.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key_id(&key.public_key()));
    encoding_key(key)
        .and_then(|k| jsonwebtoken::encode(&header, claims, &k).map_err(|_| JwtError::Key))
        .expect("the registry token key is a P-256 key")
}

pub fn verify(key: &PublicKey, token: &str, service: &str, now: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    if key.algorithm() != KeyAlgorithm::P256 {
        return Err(JwtError::Key);
    }
    let mut validation = Validation::new(Algorithm::ES256);
    // `exp`/`nbf` must be present (required claims) but are checked below against the
    // caller's clock `now`, with the same leeway, instead of jsonwebtoken's own clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = LEEWAY;
    validation.set_audience(&[service]);
    validation.set_issuer(&[service]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
    let decoding = DecodingKey::from_ec_der(&key.compressed());
    let data =
        jsonwebtoken::decode::<Claims>(token, &decoding, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => JwtError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    JwtError::Algorithm
                }
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => JwtError::Audience,
                _ => JwtError::Malformed,
            }
        })?;
    let claims = data.claims;
    if claims.exp + LEEWAY <= now {
        return Err(JwtError::Expired);
    }
    if claims.nbf > now + LEEWAY {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

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
        // alg=none (not an algorithm jsonwebtoken knows) and HS256 (a known algorithm,
        // not the pinned one: the classic key-confusion attack) are refused.
        let body = B64.encode(serde_json::to_vec(&claims(now)).unwrap());
        let none = format!("{}.{body}.", B64.encode(br#"{"alg":"none"}"#));
        assert!(matches!(
            verify(&pk, &none, "reg.test", now).unwrap_err(),
            JwtError::Algorithm | JwtError::Malformed
        ));
        let hs = format!(
            "{}.{body}.AAAA",
            B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#)
        );
        assert_eq!(
            verify(&pk, &hs, "reg.test", now).unwrap_err(),
            JwtError::Algorithm
        );
        // Not valid yet; and without the required exp/nbf claims.
        assert_eq!(
            verify(&pk, &t, "reg.test", now - 100).unwrap_err(),
            JwtError::NotYetValid
        );
        let no_exp = serde_json::json!({"iss": "reg.test", "aud": "reg.test", "sub": "x"});
        let mut header = Header::new(Algorithm::ES256);
        header.kid = None;
        let t2 = jsonwebtoken::encode(&header, &no_exp, &encoding_key(&key).unwrap()).unwrap();
        assert_eq!(
            verify(&pk, &t2, "reg.test", now).unwrap_err(),
            JwtError::Malformed
        );
        // The header names the key.
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.kid.as_deref(), Some(pk.did_key().as_str()));
        assert_eq!(h.alg, Algorithm::ES256);
    }
}
