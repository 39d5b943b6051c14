use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::HandlerResult;
use crate::app::http::{empty, hv, stream_body};
use crate::app::AppState;
use crate::oci::types::range::{parse_range, RangeOutcome};
use crate::oci::types::{Digest, Name};

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with single-range support.
pub async fn blob_get(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    digest: Digest,
) -> HandlerResult {
    let size = state.registry.blob_size(&name, &digest).await?;
    let base = || {
        Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("Docker-Content-Digest", hv(&digest.to_string()))
            .header(ETAG, hv(&format!("\"{digest}\"")))
            .header(ACCEPT_RANGES, "bytes")
    };
    let range = match req.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) => parse_range(h, size),
        None => RangeOutcome::Full,
    };
    if req.method() == Method::HEAD {
        return Ok(base()
            .status(StatusCode::OK)
            .header(CONTENT_LENGTH, size)
            .body(empty())
            .expect("valid"));
    }
    if let Some(url) = state.registry.blob_redirect(&name, &digest).await? {
        // The bytes come straight from object storage; Range goes along with the client.
        return Ok(base()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(http::header::LOCATION, hv(&url))
            .header(CONTENT_LENGTH, 0)
            .body(empty())
            .expect("valid"));
    }
    match range {
        RangeOutcome::Unsatisfiable => Ok(Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(CONTENT_RANGE, format!("bytes */{size}"))
            .body(empty())
            .expect("valid")),
        RangeOutcome::Partial(r) => {
            let read = state.registry.blob_read(&name, &digest, Some(r)).await?;
            Ok(base()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_LENGTH, read.len)
                .header(
                    CONTENT_RANGE,
                    format!("bytes {}-{}/{size}", r.start, r.start + read.len - 1),
                )
                .body(stream_body(read.stream))
                .expect("valid"))
        }
        RangeOutcome::Full => {
            let read = state.registry.blob_read(&name, &digest, None).await?;
            Ok(base()
                .status(StatusCode::OK)
                .header(CONTENT_LENGTH, read.len)
                .body(stream_body(read.stream))
                .expect("valid"))
        }
    }
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlink from the repository.
pub async fn blob_delete(state: &AppState, name: Name, digest: Digest) -> HandlerResult {
    state.registry.blob_delete(&name, &digest).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .expect("valid"))
}
