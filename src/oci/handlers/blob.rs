use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::HandlerResult;
use crate::app::http::{empty, hv, stream_body};
use crate::app::AppState;
use crate::oci::types::range::{parse_range, RangeOutcome};
use crate::oci::types::{Digest, Name};
use crate::registry::remote::{BlobSource, RemoteBlob};

/// A blob on a remote hold: HEAD answers its size (the hold was asked), GET redirects to
/// where the hold keeps it, or streams a private hold's bytes fetched with the puller's token.
async fn remote_blob(
    state: &AppState,
    req: &Request<Incoming>,
    digest: &Digest,
    hold: &str,
    size: u64,
    caller: Option<&str>,
) -> HandlerResult {
    let head = req.method() == Method::HEAD;
    let answer = state
        .registry
        .remote_blob(digest, hold, size, caller, head)
        .await?;
    let base = Response::builder()
        .header("Docker-Content-Digest", hv(&digest.to_string()))
        .header(ETAG, hv(&format!("\"{digest}\"")));
    Ok(match answer {
        RemoteBlob::Present { size } => base
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(empty()),
        RemoteBlob::Redirect(url) => base
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(http::header::LOCATION, hv(&url))
            .header(CONTENT_LENGTH, 0)
            .body(empty()),
        RemoteBlob::Stream { len, stream } => base
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(stream_body(stream)),
    }
    .expect("valid"))
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with single-range support. `caller` is the
/// authenticated puller (private holds serve their crew only).
pub async fn blob_get(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    digest: Digest,
    caller: Option<&str>,
) -> HandlerResult {
    let size = match state.registry.blob_source(&name, &digest, caller).await? {
        BlobSource::Local { size } => size,
        BlobSource::Remote { hold, size } => {
            return remote_blob(state, &req, &digest, &hold, size, caller).await
        }
    };
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
