//! Inter-service tokens (`com.atproto.server.getServiceAuth` JWTs) presented to the hold as
//! `Authorization: Bearer <jwt>` (atcr-spec 3.4).
//!
//! A user's PDS signs them with the user's `#atproto` repo key: `alg` ES256K (secp256k1,
//! what the reference PDS uses) or ES256 (P-256). The checks, in order: size
//! ([`MAX_TOKEN_LEN`]), shape and `alg`, claims ([`check_claims`]: `aud` is this hold,
//! `lxm` is the called method, `exp` not passed beyond [`LEEWAY_SECS`], lifetime not absurd),
//! then the signature against the key of the `iss` DID document, re-resolving the document
//! once when a cached one does not verify (the user may have rotated the key).
//!
//! Not `jsonwebtoken` (which signs and checks the registry's own ES256 tokens in
//! `auth/jwt.rs`): it has no ES256K at all, and ES256K is what the reference PDS signs with;
//! nor does it apply ATProto's low-S rule. The crate's own [`PublicKey::verify`] covers both
//! curves with that rule (compact r||s, high-S refused), so one path serves both. The parsing
//! and claim checks are pure; only [`ServiceAuth::verify`] does I/O (DID resolution).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;

use crate::atproto::identity::Resolver;
use crate::atproto::repo::crypto::{KeyAlgorithm, PublicKey};

/// Largest token accepted (the reference PDS's are ~400-700 bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Allowed clock difference between the user's PDS and us.
pub const LEEWAY_SECS: u64 = 10;
/// Longest lifetime accepted for a token bound to a method (`lxm`): the reference PDS
/// issues at most one hour.
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// Longest lifetime for a token without `lxm`: the reference PDS allows 60 s.
pub const MAX_UNBOUND_LIFETIME_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAuthError {
    #[error("authentication required: send Authorization: Bearer <service token>")]
    AuthRequired,
    #[error("malformed service token: {0}")]
    Malformed(&'static str),
    #[error("service token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("unsupported service token algorithm {0:?} (ES256K or ES256 expected)")]
    Algorithm(String),
    #[error("service token has expired")]
    Expired,
    #[error("service token lifetime is too long")]
    LifetimeTooLong,
    #[error("service token is for {got:?}, not this hold ({want})")]
    Audience { got: String, want: String },
    #[error("service token is for method {got:?}, not {want}")]
    LexiconMethod { got: String, want: String },
    #[error("cannot resolve the token issuer {did}: {detail}")]
    Issuer { did: String, detail: String },
    #[error("service token signature does not verify with the key of {0}")]
    Signature(String),
}

impl ServiceAuthError {
    /// XRPC error name (the reference's `xrpc-server` names where one exists).
    pub fn xrpc_name(&self) -> &'static str {
        match self {
            ServiceAuthError::AuthRequired => "AuthRequired",
            ServiceAuthError::Malformed(_)
            | ServiceAuthError::TooLong
            | ServiceAuthError::Algorithm(_)
            | ServiceAuthError::LifetimeTooLong
            | ServiceAuthError::Issuer { .. } => "InvalidToken",
            ServiceAuthError::Expired => "ExpiredToken",
            ServiceAuthError::Audience { .. } => "BadJwtAudience",
            ServiceAuthError::LexiconMethod { .. } => "BadJwtLexiconMethod",
            ServiceAuthError::Signature(_) => "BadJwtSignature",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
}

/// The claims the hold uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ServiceClaims {
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub lxm: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
}

impl ServiceClaims {
    /// The issuer DID without a `#service` fragment.
    pub fn issuer_did(&self) -> &str {
        self.iss.split('#').next().unwrap_or_default()
    }
}

/// A token split into what is signed, the signature and its decoded parts.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    pub algorithm: KeyAlgorithm,
    pub claims: ServiceClaims,
    signing_input: String,
    signature: Vec<u8>,
}

impl ParsedToken {
    pub fn verify_with(&self, key: &PublicKey) -> bool {
        key.algorithm() == self.algorithm
            && key
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
    }
}

/// The token of an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> Result<&str, ServiceAuthError> {
    let h = header.ok_or(ServiceAuthError::AuthRequired)?;
    let (scheme, token) = h.split_once(' ').ok_or(ServiceAuthError::AuthRequired)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ServiceAuthError::AuthRequired);
    }
    Ok(token.trim())
}

/// Splits and decodes a token; no signature or claim check yet.
pub fn parse(token: &str) -> Result<ParsedToken, ServiceAuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ServiceAuthError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ServiceAuthError::Malformed("not three dot-separated parts"));
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(ServiceAuthError::Malformed("header"))?;
    let algorithm = match header.alg.as_str() {
        "ES256K" => KeyAlgorithm::K256,
        "ES256" => KeyAlgorithm::P256,
        other => return Err(ServiceAuthError::Algorithm(other.to_string())),
    };
    let claims: ServiceClaims = B64
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(ServiceAuthError::Malformed("claims"))?;
    if !claims.issuer_did().starts_with("did:") {
        return Err(ServiceAuthError::Malformed("iss is not a DID"));
    }
    let signature = B64
        .decode(s)
        .map_err(|_| ServiceAuthError::Malformed("signature encoding"))?;
    Ok(ParsedToken {
        algorithm,
        claims,
        signing_input: format!("{h}.{c}"),
        signature,
    })
}

/// The claim checks, pure. `lxm`: when the token names a method it must be `nsid`; a token
/// without one is accepted (atcr.io's direct-access docs call `getServiceAuth` with only
/// `aud`) but only with the short lifetime the reference PDS allows such tokens
/// ([`MAX_UNBOUND_LIFETIME_SECS`]).
pub fn check_claims(
    claims: &ServiceClaims,
    hold_did: &str,
    nsid: &str,
    now: u64,
) -> Result<(), ServiceAuthError> {
    if claims.aud != hold_did {
        return Err(ServiceAuthError::Audience {
            got: claims.aud.clone(),
            want: hold_did.to_string(),
        });
    }
    if let Some(lxm) = &claims.lxm {
        if lxm != nsid {
            return Err(ServiceAuthError::LexiconMethod {
                got: lxm.clone(),
                want: nsid.to_string(),
            });
        }
    }
    if claims.exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(ServiceAuthError::Expired);
    }
    let max = if claims.lxm.is_some() {
        MAX_LIFETIME_SECS
    } else {
        MAX_UNBOUND_LIFETIME_SECS
    };
    let issued = claims.iat.unwrap_or(now).min(now + LEEWAY_SECS);
    if claims.exp.saturating_sub(issued) > max + LEEWAY_SECS {
        return Err(ServiceAuthError::LifetimeTooLong);
    }
    Ok(())
}

/// Least time between two forced re-resolutions of one DID: a stream of tokens with bad
/// signatures must not turn into a stream of DID-document fetches.
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// DIDs remembered for [`REFRESH_INTERVAL`] (bounded; cleared when full).
const MAX_REFRESH_ENTRIES: usize = 4096;

/// Verifies service tokens for one hold.
pub struct ServiceAuth {
    hold_did: String,
    resolver: Arc<Resolver>,
    refreshed: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl ServiceAuth {
    pub fn new(hold_did: impl Into<String>, resolver: Arc<Resolver>) -> ServiceAuth {
        ServiceAuth {
            hold_did: hold_did.into(),
            resolver,
            refreshed: std::sync::Mutex::default(),
        }
    }

    pub fn hold_did(&self) -> &str {
        &self.hold_did
    }

    /// The caller's DID if `token` is a valid service token for calling `nsid` on this hold.
    pub async fn verify(&self, token: &str, nsid: &str) -> Result<String, ServiceAuthError> {
        let parsed = parse(token)?;
        check_claims(&parsed.claims, &self.hold_did, nsid, unix_now())?;
        let did = parsed.claims.issuer_did().to_string();
        // First the (possibly cached) document; if its key does not verify, the user may
        // have rotated keys since we cached it: drop it and resolve once more.
        for attempt in 0..2 {
            if attempt == 1 {
                if !self.may_refresh(&did) {
                    break;
                }
                self.resolver.invalidate(&did);
            }
            let doc =
                self.resolver
                    .resolve_did(&did)
                    .await
                    .map_err(|e| ServiceAuthError::Issuer {
                        did: did.clone(),
                        detail: e.to_string(),
                    })?;
            let key = doc.signing_key().ok_or_else(|| ServiceAuthError::Issuer {
                did: did.clone(),
                detail: "its DID document has no #atproto key".into(),
            })?;
            if parsed.verify_with(&key) {
                return Ok(did);
            }
        }
        Err(ServiceAuthError::Signature(did))
    }
}

impl ServiceAuth {
    fn may_refresh(&self, did: &str) -> bool {
        let mut m = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if m.get(did)
            .is_some_and(|t| now.duration_since(*t) < REFRESH_INTERVAL)
        {
            return false;
        }
        if m.len() >= MAX_REFRESH_ENTRIES {
            m.clear();
        }
        m.insert(did.to_string(), now);
        true
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a service token (tests and in-process callers; the hold itself only verifies).
pub fn sign_token(key: &crate::atproto::repo::SigningKey, claims: &serde_json::Value) -> String {
    let alg = match key.algorithm() {
        KeyAlgorithm::K256 => "ES256K",
        KeyAlgorithm::P256 => "ES256",
    };
    let h = B64.encode(
        serde_json::to_vec(&serde_json::json!({"typ": "JWT", "alg": alg})).unwrap_or_default(),
    );
    let c = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atproto::repo::SigningKey;
    use serde_json::json;

    const HOLD: &str = "did:web:hold.test";
    const NSID: &str = "io.atcr.hold.getQuota";

    fn k256() -> SigningKey {
        SigningKey::from_bytes(KeyAlgorithm::K256, &[7u8; 32]).unwrap()
    }

    fn claims(now: u64) -> serde_json::Value {
        json!({"iss": "did:plc:alice#atproto_pds", "aud": HOLD, "exp": now + 60, "iat": now, "lxm": NSID, "jti": "x"})
    }

    #[test]
    fn parse_and_verify_both_curves() {
        let now = 1_800_000_000;
        for key in [k256(), SigningKey::generate_p256()] {
            let t = sign_token(&key, &claims(now));
            let p = parse(&t).unwrap();
            assert_eq!(p.algorithm, key.algorithm());
            assert_eq!(p.claims.issuer_did(), "did:plc:alice");
            assert!(p.verify_with(&key.public_key()));
            check_claims(&p.claims, HOLD, NSID, now).unwrap();
            // Another key of the same curve does not verify; a key of the other curve
            // never does (alg is bound to the key type).
            assert!(!p.verify_with(&SigningKey::generate_p256().public_key()));
            let mut other = [9u8; 32];
            other[0] = 1;
            assert!(!p.verify_with(
                &SigningKey::from_bytes(KeyAlgorithm::K256, &other)
                    .unwrap()
                    .public_key()
            ));
        }
    }

    #[test]
    fn claim_rejections() {
        let now = 1_800_000_000;
        let p = parse(&sign_token(&k256(), &claims(now))).unwrap();
        assert!(matches!(
            check_claims(&p.claims, "did:web:other", NSID, now),
            Err(ServiceAuthError::Audience { .. })
        ));
        assert!(matches!(
            check_claims(&p.claims, HOLD, "io.atcr.hold.notifyManifest", now),
            Err(ServiceAuthError::LexiconMethod { .. })
        ));
        // Within the leeway still fine; beyond it expired.
        check_claims(&p.claims, HOLD, NSID, now + 60 + LEEWAY_SECS - 1).unwrap();
        assert_eq!(
            check_claims(&p.claims, HOLD, NSID, now + 60 + LEEWAY_SECS),
            Err(ServiceAuthError::Expired)
        );
        // A year-long token is refused; a method-less one may live a minute only.
        let mut c = claims(now);
        c["exp"] = json!(now + 365 * 86400);
        let p = parse(&sign_token(&k256(), &c)).unwrap();
        assert_eq!(
            check_claims(&p.claims, HOLD, NSID, now),
            Err(ServiceAuthError::LifetimeTooLong)
        );
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("lxm");
        let p = parse(&sign_token(&k256(), &c)).unwrap();
        check_claims(&p.claims, HOLD, NSID, now).unwrap();
        c["exp"] = json!(now + 600);
        let p = parse(&sign_token(&k256(), &c)).unwrap();
        assert_eq!(
            check_claims(&p.claims, HOLD, NSID, now),
            Err(ServiceAuthError::LifetimeTooLong)
        );
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(parse("a.b").unwrap_err().xrpc_name(), "InvalidToken");
        assert_eq!(
            parse(&"a".repeat(MAX_TOKEN_LEN + 1)).unwrap_err(),
            ServiceAuthError::TooLong
        );
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(serde_json::to_vec(&claims(1)).unwrap())
        );
        assert_eq!(
            parse(&none).unwrap_err(),
            ServiceAuthError::Algorithm("none".into())
        );
        let hs = format!(
            "{}.{}.AAAA",
            B64.encode(br#"{"alg":"HS256"}"#),
            B64.encode(serde_json::to_vec(&claims(1)).unwrap())
        );
        assert!(matches!(parse(&hs), Err(ServiceAuthError::Algorithm(_))));
        assert_eq!(bearer(None), Err(ServiceAuthError::AuthRequired));
        assert_eq!(
            bearer(Some("Basic abc")),
            Err(ServiceAuthError::AuthRequired)
        );
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        // A tampered payload does not verify.
        let key = k256();
        let t = sign_token(&key, &claims(1));
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims(1);
        c["iss"] = json!("did:plc:mallory");
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap());
        assert!(!parse(&parts.join("."))
            .unwrap()
            .verify_with(&key.public_key()));
    }
}
