//! ES256 JWTs of ATProto OAuth, signed with `jsonwebtoken` (pure-Rust backend):
//! - [`DpopKey`]: a P-256 key bound to one OAuth session and the DPoP proofs (RFC 9449) that
//!   go with every token-endpoint and resource request (`htm`, `htu`, `iat`, `jti`, the
//!   server's `nonce`, `ath` = hash of the access token for resource requests);
//! - [`NonceCache`]: the last `DPoP-Nonce` each origin sent, so most requests need no retry;
//! - [`Es256Key::jwt`]: any other ES256 JWT with a `kid` (the OAuth client assertion).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePrivateKey;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("invalid P-256 key")]
pub struct KeyError;

/// A P-256 private key usable for ES256 JWTs. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Es256Key {
    secret: [u8; 32],
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Es256Key")
            .field("thumbprint", &self.thumbprint())
            .finish()
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 16 random bytes, base64url: `jti`s, states, verifiers.
pub fn random_id(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    B64.encode(b)
}

impl Es256Key {
    pub fn generate() -> Es256Key {
        let k = SigningKey::random(&mut rand_core::OsRng);
        Self::from_bytes(&k.to_bytes()).expect("a fresh key is valid")
    }

    pub fn from_bytes(secret: &[u8]) -> Result<Es256Key, KeyError> {
        let key = SigningKey::from_slice(secret).map_err(|_| KeyError)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError)?;
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().ok_or(KeyError)?, point.y().ok_or(KeyError)?);
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: B64.encode(x),
                y: B64.encode(y),
            }),
        };
        let mut s = [0u8; 32];
        s.copy_from_slice(&key.to_bytes());
        Ok(Es256Key {
            secret: s,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk,
        })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The public JWK (no `kid`).
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The public JWK as a JWKS entry: `kid`, `use: sig`, `alg: ES256`.
    pub fn jwks_entry(&self, kid: &str) -> Jwk {
        let mut j = self.jwk.clone();
        j.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_id: Some(kid.to_string()),
            key_algorithm: Some(KeyAlgorithm::ES256),
            ..CommonParameters::default()
        };
        j
    }

    /// RFC 7638 thumbprint (base64url sha256 of the canonical JWK): a stable key id.
    pub fn thumbprint(&self) -> String {
        let AlgorithmParameters::EllipticCurve(p) = &self.jwk.algorithm else {
            return String::new();
        };
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            p.x, p.y
        );
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// An ES256 JWT with this header's `kid`/`typ`/`jwk` and `claims`.
    fn sign(&self, header: Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("ES256 signing with a valid key cannot fail")
    }

    /// A JWT signed by this key with `kid` in the header (client assertions).
    pub fn jwt(&self, kid: &str, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_string());
        self.sign(h, claims)
    }

    /// A DPoP proof for one request. `url` loses its query and fragment (`htu`); `ath` binds
    /// the proof to the access token on resource requests.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = serde_json::json!({
            "jti": random_id(16),
            "htm": method,
            "htu": htu,
            "iat": now(),
        });
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        if let Some(t) = access_token {
            claims["ath"] = B64.encode(Sha256::digest(t.as_bytes())).into();
        }
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("dpop+jwt".into());
        h.jwk = Some(self.jwk.clone());
        self.sign(h, &claims)
    }
}

/// `scheme://host[:port]` of a URL (the key of the nonce cache).
pub fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => url.to_string(),
    }
}

/// Nonces are per server and short-lived; a handful of origins is all one process talks to,
/// but the map is bounded anyway.
const MAX_NONCE_ORIGINS: usize = 4096;

/// The latest `DPoP-Nonce` per origin.
#[derive(Debug, Default)]
pub struct NonceCache(Mutex<HashMap<String, String>>);

impl NonceCache {
    pub fn get(&self, url: &str) -> Option<String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&origin_of(url)).cloned()
    }

    pub fn put(&self, url: &str, nonce: &str) {
        if nonce.is_empty() || nonce.len() > 512 {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_NONCE_ORIGINS {
            m.clear();
        }
        m.insert(origin_of(url), nonce.to_string());
    }

    /// Remembers the nonce a response carried.
    pub fn remember(&self, url: &str, headers: &reqwest::header::HeaderMap) {
        if let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            self.put(url, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_part(jwt: &str, i: usize) -> serde_json::Value {
        let part = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn dpop_proofs_carry_the_public_key_and_verify() {
        let k = Es256Key::generate();
        let again = Es256Key::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k.thumbprint(), again.thumbprint());
        let proof = k.dpop_proof(
            "POST",
            "https://pds.example/xrpc/a.b.c?x=1#f",
            Some("n1"),
            Some("tok"),
        );
        let h = decode_part(&proof, 0);
        assert_eq!(h["typ"], "dpop+jwt");
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["jwk"]["crv"], "P-256");
        assert!(h["jwk"].get("d").is_none(), "no private part in the header");
        let c = decode_part(&proof, 1);
        assert_eq!(c["htu"], "https://pds.example/xrpc/a.b.c");
        assert_eq!(c["htm"], "POST");
        assert_eq!(c["nonce"], "n1");
        assert_eq!(c["ath"], B64.encode(Sha256::digest(b"tok")));
        // The signature verifies with the JWK from the header (what a server does).
        let jwk: Jwk = serde_json::from_value(h["jwk"].clone()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&proof, &dk, &v).unwrap();
        assert!(!format!("{k:?}").contains(&hex::encode(k.to_bytes())));
    }

    #[test]
    fn nonces_per_origin() {
        let c = NonceCache::default();
        c.put("https://a.example/x/y?z", "n");
        assert_eq!(c.get("https://a.example/other").as_deref(), Some("n"));
        assert_eq!(c.get("https://b.example/x"), None);
    }
}
