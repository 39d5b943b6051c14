//! Identity resolution: handle -> DID -> DID document -> PDS endpoint and signing key, with
//! the handle round-trip check (`alsoKnownAs`) and a TTL cache.
//!
//! Handle -> DID tries, in order: DNS TXT `_atproto.<handle>` (hickory-resolver), HTTPS
//! `https://<handle>/.well-known/atproto-did`, then the configured `resolveHandle` service
//! (`identity.handle_resolver`), if any. Handles under special-use TLDs (`.test`, `.local`,
//! `.localhost`, `.invalid`, `.example`, `.internal`, `.arpa`) cannot be in public DNS, so
//! they skip the first two steps. DID -> document: did:plc through the configured PLC
//! directory, did:web through `https://<host>/.well-known/did.json` (plain http only for
//! `localhost`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::atproto::repo::crypto::PublicKey;
use crate::atproto::repo::syntax::{validate_did, validate_handle};
use crate::atproto::xrpc::{read_limited, XrpcClient, XrpcError};
use crate::ttl_map::TtlMap;

/// DID documents and well-known answers larger than this are refused.
pub const MAX_DID_DOC: usize = 64 * 1024;
const MAX_CACHE_ENTRIES: usize = 10_000;
const SPECIAL_TLDS: &[&str] = &[
    "test",
    "local",
    "localhost",
    "invalid",
    "example",
    "internal",
    "arpa",
    "onion",
];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not a valid handle or DID")]
    BadIdentifier(String),
    #[error("handle {0} could not be resolved to a DID")]
    HandleNotFound(String),
    #[error("DID method of {0} is not supported (did:plc, did:web)")]
    UnsupportedDidMethod(String),
    #[error("DID document of {did} could not be fetched: {detail}")]
    DidFetch { did: String, detail: String },
    #[error("DID document of {did} is invalid: {detail}")]
    DidDocInvalid { did: String, detail: String },
    #[error("DID {did} does not claim handle {handle} (alsoKnownAs)")]
    HandleMismatch { did: String, handle: String },
    #[error("DID {0} has no #atproto_pds service")]
    NoPds(String),
    #[error("DID {0} has no usable #atproto signing key")]
    NoSigningKey(String),
}

/// The parts of a DID document ATProto uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DidDocument {
    pub id: String,
    #[serde(default)]
    pub also_known_as: Vec<String>,
    #[serde(default)]
    pub verification_method: Vec<VerificationMethod>,
    #[serde(default)]
    pub service: Vec<Service>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMethod {
    pub id: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub public_key_multibase: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub service_endpoint: serde_json::Value,
}

fn fragment_matches(id: &str, did: &str, frag: &str) -> bool {
    id == frag || id.strip_prefix(did).is_some_and(|rest| rest == frag)
}

impl DidDocument {
    /// Parse and check a document fetched for `did`.
    pub fn parse(did: &str, bytes: &[u8]) -> Result<DidDocument, IdentityError> {
        let doc: DidDocument =
            serde_json::from_slice(bytes).map_err(|e| IdentityError::DidDocInvalid {
                did: did.into(),
                detail: e.to_string(),
            })?;
        if doc.id != did {
            return Err(IdentityError::DidDocInvalid {
                did: did.into(),
                detail: format!("document is for {:?}", doc.id),
            });
        }
        Ok(doc)
    }

    /// The `#atproto_pds` service endpoint, without a trailing slash.
    pub fn pds_endpoint(&self) -> Option<String> {
        self.service
            .iter()
            .find(|s| {
                fragment_matches(&s.id, &self.id, "#atproto_pds")
                    && s.type_ == "AtprotoPersonalDataServer"
            })
            .and_then(|s| s.service_endpoint.as_str())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// The `#atproto` signing key: `Multikey` (P-256 or secp256k1), or the legacy
    /// `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019` forms (a
    /// multibase SEC1 point without multicodec prefix; older PLC directories serve these).
    pub fn signing_key(&self) -> Option<PublicKey> {
        use crate::atproto::repo::crypto::KeyAlgorithm;
        let m = self
            .verification_method
            .iter()
            .find(|m| fragment_matches(&m.id, &self.id, "#atproto"))?;
        let k = m.public_key_multibase.as_deref()?;
        if k.len() > 256 {
            return None;
        }
        let legacy = match m.type_.as_str() {
            "EcdsaSecp256k1VerificationKey2019" => Some(KeyAlgorithm::K256),
            "EcdsaSecp256r1VerificationKey2019" => Some(KeyAlgorithm::P256),
            _ => None,
        };
        match legacy {
            Some(alg) => {
                let (_, bytes) = multibase::decode(k).ok()?;
                PublicKey::from_sec1(alg, &bytes).ok()
            }
            None => PublicKey::from_multikey(k).ok(),
        }
    }

    /// Handles the document claims (`at://<handle>` entries), lowercased.
    pub fn handles(&self) -> impl Iterator<Item = String> + '_ {
        self.also_known_as
            .iter()
            .filter_map(|a| a.strip_prefix("at://"))
            .map(|h| h.to_ascii_lowercase())
    }

    /// The first claimed handle (not verified).
    pub fn primary_handle(&self) -> Option<String> {
        self.handles().next()
    }
}

/// A resolved, checked identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub did: String,
    /// The handle, when it was given and round-tripped, or claimed by the document.
    pub handle: Option<String>,
    pub pds: String,
    pub doc: DidDocument,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// PLC directory base URL.
    pub plc_url: String,
    /// Optional `com.atproto.identity.resolveHandle` service base URL.
    pub handle_resolver: Option<String>,
    pub cache_ttl: Duration,
    /// Use DNS (and HTTPS well-known) for public handles.
    pub dns: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            plc_url: "https://plc.directory".into(),
            handle_resolver: None,
            cache_ttl: Duration::from_secs(600),
            dns: true,
        }
    }
}

/// The resolver. Share one per process (`Arc`).
pub struct Resolver {
    cfg: IdentityConfig,
    xrpc: XrpcClient,
    dns: Option<hickory_resolver::TokioResolver>,
    handles: TtlMap<String>,
    docs: TtlMap<DidDocument>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("plc_url", &self.cfg.plc_url)
            .finish_non_exhaustive()
    }
}

fn is_special_use(handle: &str) -> bool {
    handle
        .rsplit('.')
        .next()
        .is_some_and(|tld| SPECIAL_TLDS.contains(&tld))
}

fn build_dns() -> Option<hickory_resolver::TokioResolver> {
    let mut b = hickory_resolver::TokioResolver::builder_tokio().ok()?;
    let opts = b.options_mut();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    Some(b.build())
}

impl Resolver {
    pub fn new(cfg: IdentityConfig, xrpc: XrpcClient) -> Arc<Resolver> {
        let dns = if cfg.dns { build_dns() } else { None };
        Arc::new(Resolver {
            handles: TtlMap::new(cfg.cache_ttl, MAX_CACHE_ENTRIES),
            docs: TtlMap::new(cfg.cache_ttl, MAX_CACHE_ENTRIES),
            cfg,
            xrpc,
            dns,
        })
    }

    /// Handle -> DID (not yet round-trip checked; see [`Resolver::resolve`]).
    pub async fn resolve_handle(&self, handle: &str) -> Result<String, IdentityError> {
        let handle = handle.to_ascii_lowercase();
        validate_handle(&handle).map_err(|_| IdentityError::BadIdentifier(handle.clone()))?;
        if let Some(did) = self.handles.get(&handle) {
            return Ok(did);
        }
        let did = self.lookup_handle(&handle).await?;
        self.handles.put(&handle, did.clone());
        Ok(did)
    }

    async fn lookup_handle(&self, handle: &str) -> Result<String, IdentityError> {
        let valid = |d: &str| validate_did(d).is_ok();
        if !is_special_use(handle) {
            if let Some(dns) = &self.dns {
                if let Ok(txt) = dns.txt_lookup(format!("_atproto.{handle}.")).await {
                    let dids: Vec<String> = txt
                        .iter()
                        .map(|r| {
                            r.txt_data()
                                .iter()
                                .map(|d| String::from_utf8_lossy(d).into_owned())
                                .collect::<String>()
                        })
                        .filter_map(|s| s.strip_prefix("did=").map(str::to_string))
                        .filter(|d| valid(d))
                        .collect();
                    if dids.len() == 1 {
                        return Ok(dids[0].clone());
                    }
                }
            }
            if self.cfg.dns {
                let url = format!("https://{handle}/.well-known/atproto-did");
                if let Ok(resp) = self
                    .xrpc
                    .http()
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    if resp.status().is_success() {
                        if let Ok(body) = read_limited(resp, 2048, "atproto-did").await {
                            let text = String::from_utf8_lossy(&body).trim().to_string();
                            if valid(&text) {
                                return Ok(text);
                            }
                        }
                    }
                }
            }
        }
        if let Some(service) = &self.cfg.handle_resolver {
            if let Ok(did) = self.xrpc.resolve_handle(service, handle).await {
                if valid(&did) {
                    return Ok(did);
                }
            }
        }
        Err(IdentityError::HandleNotFound(handle.into()))
    }

    fn did_doc_url(&self, did: &str) -> Result<String, IdentityError> {
        if let Some(id) = did.strip_prefix("did:plc:") {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(IdentityError::BadIdentifier(did.into()));
            }
            Ok(format!("{}/{did}", self.cfg.plc_url.trim_end_matches('/')))
        } else if let Some(rest) = did.strip_prefix("did:web:") {
            // did:web with a path (extra ':' segments) is not used by ATProto.
            if rest.contains(':') {
                return Err(IdentityError::UnsupportedDidMethod(did.into()));
            }
            let host = rest.replace("%3A", ":").replace("%3a", ":");
            let hostname = host.split(':').next().unwrap_or("");
            if validate_handle(hostname).is_err() && hostname != "localhost" {
                return Err(IdentityError::BadIdentifier(did.into()));
            }
            let scheme = if hostname == "localhost" {
                "http"
            } else {
                "https"
            };
            Ok(format!("{scheme}://{host}/.well-known/did.json"))
        } else {
            Err(IdentityError::UnsupportedDidMethod(did.into()))
        }
    }

    /// DID -> document (cached).
    pub async fn resolve_did(&self, did: &str) -> Result<DidDocument, IdentityError> {
        validate_did(did).map_err(|_| IdentityError::BadIdentifier(did.into()))?;
        if let Some(doc) = self.docs.get(did) {
            return Ok(doc);
        }
        let url = self.did_doc_url(did)?;
        let fetch_err = |detail: String| IdentityError::DidFetch {
            did: did.into(),
            detail,
        };
        let resp = self
            .xrpc
            .http()
            .get(&url)
            .timeout(self.xrpc.config().timeout)
            .send()
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fetch_err(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = read_limited(resp, MAX_DID_DOC, "did document")
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        let doc = DidDocument::parse(did, &body)?;
        self.docs.put(did, doc.clone());
        Ok(doc)
    }

    /// A handle or DID -> checked identity with its PDS. A handle must round-trip: the DID
    /// document it resolves to must list `at://<handle>` in `alsoKnownAs`.
    pub async fn resolve(&self, identifier: &str) -> Result<Identity, IdentityError> {
        if identifier.starts_with("did:") {
            let doc = self.resolve_did(identifier).await?;
            let pds = doc
                .pds_endpoint()
                .ok_or_else(|| IdentityError::NoPds(identifier.into()))?;
            return Ok(Identity {
                did: identifier.into(),
                handle: doc.primary_handle(),
                pds,
                doc,
            });
        }
        let handle = identifier.to_ascii_lowercase();
        let did = self.resolve_handle(&handle).await?;
        let doc = self.resolve_did(&did).await?;
        if !doc.handles().any(|h| h == handle) {
            self.handles.forget(&handle);
            return Err(IdentityError::HandleMismatch { did, handle });
        }
        let pds = doc
            .pds_endpoint()
            .ok_or(IdentityError::NoPds(did.clone()))?;
        Ok(Identity {
            did,
            handle: Some(handle),
            pds,
            doc,
        })
    }

    /// Only the DID of a handle or DID (round-trip checked for handles).
    pub async fn resolve_did_of(&self, identifier: &str) -> Result<String, IdentityError> {
        if identifier.starts_with("did:") {
            validate_did(identifier)
                .map_err(|_| IdentityError::BadIdentifier(identifier.into()))?;
            return Ok(identifier.into());
        }
        Ok(self.resolve(identifier).await?.did)
    }

    /// Drop cached entries for an identity (after a failure that suggests they are stale).
    pub fn invalidate(&self, identifier: &str) {
        self.handles.forget(&identifier.to_ascii_lowercase());
        self.docs.forget(identifier);
    }

    pub fn xrpc(&self) -> &XrpcClient {
        &self.xrpc
    }
}

impl From<XrpcError> for IdentityError {
    fn from(e: XrpcError) -> Self {
        IdentityError::DidFetch {
            did: String::new(),
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"{
      "@context": ["https://www.w3.org/ns/did/v1"],
      "id": "did:plc:abc123",
      "alsoKnownAs": ["at://Alice.test"],
      "verificationMethod": [{"id": "did:plc:abc123#atproto", "type": "Multikey",
        "controller": "did:plc:abc123",
        "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"}],
      "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
        "serviceEndpoint": "http://localhost:2583/"}]
    }"##;

    #[test]
    fn parses_a_did_document() {
        let doc = DidDocument::parse("did:plc:abc123", DOC.as_bytes()).unwrap();
        assert_eq!(doc.pds_endpoint().as_deref(), Some("http://localhost:2583"));
        assert_eq!(doc.primary_handle().as_deref(), Some("alice.test"));
        assert!(doc.signing_key().is_some());
        assert!(DidDocument::parse("did:plc:other", DOC.as_bytes()).is_err());
        // The legacy form (served by the reference PLC directory).
        let legacy = DOC.replace("\"Multikey\"", "\"EcdsaSecp256k1VerificationKey2019\"").replace(
            "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF",
            "zRaU1gzP7jniaYC6AjmBGLNMqBj8MFqAN6qZ2GR1EfyzQQKSMhJdimxyaspjUuyUTjUfun3eV6QrJJVwSdCtDakWP",
        );
        let doc = DidDocument::parse("did:plc:abc123", legacy.as_bytes()).unwrap();
        assert!(doc.signing_key().is_some());
        assert!(DidDocument::parse("did:plc:abc123", b"[]").is_err());
    }

    #[test]
    fn did_urls() {
        let r = Resolver::new(
            IdentityConfig {
                plc_url: "http://localhost:2582/".into(),
                dns: false,
                ..Default::default()
            },
            XrpcClient::default(),
        );
        assert_eq!(
            r.did_doc_url("did:plc:abc").unwrap(),
            "http://localhost:2582/did:plc:abc"
        );
        assert_eq!(
            r.did_doc_url("did:web:example.com").unwrap(),
            "https://example.com/.well-known/did.json"
        );
        assert_eq!(
            r.did_doc_url("did:web:localhost%3A5000").unwrap(),
            "http://localhost:5000/.well-known/did.json"
        );
        assert!(r.did_doc_url("did:key:zabc").is_err());
        assert!(r.did_doc_url("did:plc:a/b").is_err());
        assert!(is_special_use("alice.test"));
        assert!(!is_special_use("alice.bsky.social"));
    }
}
