//! Hold discovery: a hold DID -> its HTTP endpoint (atcr-spec 2, "Hold DID document").
//! `did:web:<host>` -> `https://<host>/.well-known/did.json` (fetched through the guarded
//! client: no redirects, 64 KiB cap, timeouts), `did:plc:` -> the PLC directory (the
//! identity resolver); then the `#atcr_hold` service (`AtcrHoldService`), else the hold's
//! `#atproto_pds` (every hold is also a PDS). Answers are cached for a TTL.

use std::sync::Arc;
use std::time::Duration;

use super::net::{check_url, UrlRefused};
use super::{HoldCallError, HoldEndpoint};
use crate::atproto::identity::{DidDocument, Resolver, MAX_DID_DOC};
use crate::atproto::repo::syntax::validate_did;
use crate::ttl_map::TtlMap;

const MAX_CACHED_HOLDS: usize = 1000;
/// Whole-request limit of a did.json fetch.
const DID_DOC_TIMEOUT: Duration = Duration::from_secs(10);

/// The hold service endpoint of a DID document: the `#atcr_hold` service of type
/// `AtcrHoldService`, else the `#atproto_pds` service; an http(s) URL without trailing `/`.
pub fn hold_service_endpoint(doc: &DidDocument) -> Option<String> {
    let find = |frag: &str, ty: &str| {
        doc.service
            .iter()
            .find(|s| {
                (s.id == frag || s.id.strip_prefix(doc.id.as_str()) == Some(frag)) && s.type_ == ty
            })
            .and_then(|s| s.service_endpoint.as_str())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| u.trim_end_matches('/').to_string())
    };
    find("#atcr_hold", "AtcrHoldService")
        .or_else(|| find("#atproto_pds", "AtprotoPersonalDataServer"))
}

/// `did:web:<host>` -> (host with `%3A` decoded, hostname without port).
fn did_web_host(did: &str) -> Option<(String, String)> {
    let rest = did.strip_prefix("did:web:")?;
    // did:web with a path (extra ':' segments) is not used by ATProto.
    if rest.contains(':') || rest.is_empty() {
        return None;
    }
    let host = rest.replace("%3A", ":").replace("%3a", ":");
    let hostname = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some((host, hostname))
}

/// Hold DID -> endpoint, cached.
pub struct HoldDirectory {
    http: reqwest::Client,
    resolver: Arc<Resolver>,
    allow_private: bool,
    cache: TtlMap<String>,
}

impl HoldDirectory {
    pub fn new(
        http: reqwest::Client,
        resolver: Arc<Resolver>,
        allow_private: bool,
        ttl: Duration,
    ) -> Self {
        HoldDirectory {
            http,
            resolver,
            allow_private,
            cache: TtlMap::new(ttl, MAX_CACHED_HOLDS),
        }
    }

    /// The endpoint of hold `did` (from the cache within its TTL).
    pub async fn endpoint(&self, did: &str) -> Result<HoldEndpoint, HoldCallError> {
        let fail = |detail: String| HoldCallError::Discovery {
            hold: did.to_string(),
            detail,
        };
        validate_did(did).map_err(|_| fail("not a valid DID".into()))?;
        if let Some(url) = self.cache.get(did) {
            return Ok(HoldEndpoint {
                did: did.to_string(),
                url,
            });
        }
        let doc = if did.starts_with("did:web:") {
            self.fetch_did_web(did).await?
        } else if did.starts_with("did:plc:") {
            self.resolver
                .resolve_did(did)
                .await
                .map_err(|e| fail(e.to_string()))?
        } else {
            return Err(fail("only did:web and did:plc holds are supported".into()));
        };
        let url = hold_service_endpoint(&doc)
            .ok_or_else(|| fail("its DID document has no #atcr_hold service".into()))?;
        check_url(&url, self.allow_private).map_err(|UrlRefused(m)| fail(m))?;
        self.cache.put(did, url.clone());
        Ok(HoldEndpoint {
            did: did.to_string(),
            url,
        })
    }

    async fn fetch_did_web(&self, did: &str) -> Result<DidDocument, HoldCallError> {
        let fail = |detail: String| HoldCallError::Discovery {
            hold: did.to_string(),
            detail,
        };
        let (host, hostname) =
            did_web_host(did).ok_or_else(|| fail("not a did:web of a host".into()))?;
        // Plain http only for localhost (a development or test hold), as the identity
        // resolver does; the address rules of `check_url` apply to everything else.
        let scheme = if hostname == "localhost" && self.allow_private {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{host}/.well-known/did.json");
        let url = check_url(&url, self.allow_private).map_err(|UrlRefused(m)| fail(m))?;
        let resp = self
            .http
            .get(url)
            .timeout(DID_DOC_TIMEOUT)
            .send()
            .await
            .map_err(|e| fail(format!("cannot fetch its did.json: {}", super::chain(&e))))?;
        if !resp.status().is_success() {
            return Err(fail(format!(
                "its did.json answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = crate::atproto::xrpc::read_limited(resp, MAX_DID_DOC, "did.json")
            .await
            .map_err(|e| fail(e.to_string()))?;
        DidDocument::parse(did, &body).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(services: serde_json::Value) -> DidDocument {
        let v = serde_json::json!({"id": "did:web:hold.example.com", "service": services});
        DidDocument::parse("did:web:hold.example.com", v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_atcr_hold_service_wins() {
        let d = doc(serde_json::json!([
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example.com"},
            {"id": "did:web:hold.example.com#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": "https://hold.example.com/"},
        ]));
        assert_eq!(
            hold_service_endpoint(&d).as_deref(),
            Some("https://hold.example.com")
        );
    }

    #[test]
    fn falls_back_to_the_pds_service_and_refuses_junk() {
        let d = doc(serde_json::json!([
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://h.example.com"},
        ]));
        assert_eq!(
            hold_service_endpoint(&d).as_deref(),
            Some("https://h.example.com")
        );
        // Wrong type, non-http endpoint, endpoint not a string: no endpoint.
        for services in [
            serde_json::json!([{"id": "#atcr_hold", "type": "Other", "serviceEndpoint": "https://x"}]),
            serde_json::json!([{"id": "#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": "file:///etc"}]),
            serde_json::json!([{"id": "#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": {"uri": "https://x"}}]),
            serde_json::json!([{"id": "did:web:other.example#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": "https://x"}]),
            serde_json::json!([]),
        ] {
            assert_eq!(
                hold_service_endpoint(&doc(services.clone())),
                None,
                "{services}"
            );
        }
    }

    #[test]
    fn did_web_hosts() {
        assert_eq!(
            did_web_host("did:web:localhost%3A5001"),
            Some(("localhost:5001".into(), "localhost".into()))
        );
        assert_eq!(
            did_web_host("did:web:Hold.Example.com"),
            Some(("Hold.Example.com".into(), "hold.example.com".into()))
        );
        assert_eq!(did_web_host("did:web:example.com:path"), None);
        assert_eq!(did_web_host("did:plc:abc"), None);
    }

    #[tokio::test]
    async fn private_holds_are_refused_before_any_call() {
        use crate::atproto::identity::IdentityConfig;
        let resolver = Resolver::new(
            IdentityConfig {
                dns: false,
                ..Default::default()
            },
            crate::atproto::xrpc::XrpcClient::default(),
        );
        let dir = HoldDirectory::new(
            reqwest::Client::new(),
            resolver,
            false,
            Duration::from_secs(60),
        );
        for did in ["did:web:localhost%3A5001", "did:web:127.0.0.1"] {
            let e = dir.endpoint(did).await.unwrap_err();
            assert!(e.to_string().contains("not a public"), "{did}: {e}");
        }
        let e = dir.endpoint("did:key:zabc").await.unwrap_err();
        assert!(matches!(e, HoldCallError::Discovery { .. }), "{e}");
    }
}
