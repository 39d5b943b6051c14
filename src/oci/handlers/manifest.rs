use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::HandlerResult;
use crate::app::http::{collect_limited, empty, full, header_u64, hv, CollectError};
use crate::app::AppState;
use crate::oci::error::{ErrorCode, OciError};
use crate::oci::types::{Name, Reference};
use crate::registry::RegistryError;

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`: the exact bytes that were pushed. The read
/// is reported to the registry, which decides whether it is a pull (`registry::pulls`).
pub async fn manifest_get(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    reference: Reference,
    peer: std::net::SocketAddr,
) -> HandlerResult {
    let m = state.registry.manifest_get(&name, &reference).await?;
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, hv(&m.meta.media_type))
        .header(CONTENT_LENGTH, m.bytes.len())
        .header("Docker-Content-Digest", hv(&m.digest.to_string()))
        .header(ETAG, hv(&format!("\"{}\"", m.digest)));
    let get = req.method() != Method::HEAD;
    state
        .registry
        .note_manifest_read(&peer.ip().to_string(), &name, &reference, &m.digest, get);
    let body = if get { full(m.bytes) } else { empty() };
    Ok(resp.body(body).expect("valid"))
}

/// `PUT /v2/<name>/manifests/<reference>`.
pub async fn manifest_put(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    reference: Reference,
) -> HandlerResult {
    let limit = state.registry.limits().max_manifest_bytes;
    let (parts, body) = req.into_parts();
    let too_large = || OciError::from(RegistryError::ManifestTooLarge { limit });
    if header_u64(&parts, &CONTENT_LENGTH).is_some_and(|n| n > limit as u64) {
        crate::app::http::drain(body, 4 * limit as u64).await;
        return Err(too_large());
    }
    let bytes = match collect_limited(body, limit).await {
        Ok(b) => b,
        Err(CollectError::TooLarge) => return Err(too_large()),
        Err(CollectError::Io(e)) => {
            return Err(OciError::new(
                ErrorCode::ManifestInvalid,
                format!("reading body: {e}"),
            ))
        }
    };
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let put = state
        .registry
        .manifest_put(&name, &reference, content_type, bytes)
        .await?;
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            LOCATION,
            hv(&format!("/v2/{name}/manifests/{}", put.digest)),
        )
        .header("Docker-Content-Digest", hv(&put.digest.to_string()))
        .header(CONTENT_LENGTH, 0);
    if let Some(subject) = &put.subject {
        resp = resp.header("OCI-Subject", hv(&subject.to_string()));
    }
    Ok(resp.body(empty()).expect("valid"))
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest removes the manifest and its tags,
/// by tag removes only the tag.
pub async fn manifest_delete(state: &AppState, name: Name, reference: Reference) -> HandlerResult {
    state.registry.manifest_delete(&name, &reference).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .expect("valid"))
}
