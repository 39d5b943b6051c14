use http::header::{CONTENT_LENGTH, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{blob_location, HandlerResult};
use crate::app::http::{
    body_stream, empty, header_str, header_u64, hv, limit_address, query, query_get, Client,
};
use crate::app::AppState;
use crate::oci::error::{ErrorCode, OciError};
use crate::oci::types::range::parse_content_range;
use crate::oci::types::{Algorithm, Digest, Name};
use crate::registry::{RegistryError, UploadState, Uploader};

fn upload_location(name: &Name, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>`; distribution answers `0-0` for an empty upload, and clients expect it.
fn range_header(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn session_response(
    status: StatusCode,
    name: &Name,
    s: &UploadState,
) -> Response<crate::app::http::Body> {
    Response::builder()
        .status(status)
        .header(LOCATION, hv(&upload_location(name, &s.id)))
        .header("Docker-Upload-UUID", hv(&s.id))
        .header("Range", range_header(s.len))
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .expect("valid")
}

fn created(name: &Name, digest: &Digest) -> HandlerResult {
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(LOCATION, hv(&blob_location(name, digest)))
        .header("Docker-Content-Digest", hv(&digest.to_string()))
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .expect("valid"))
}

fn parse_digest(s: &str) -> Result<Digest, OciError> {
    s.parse::<Digest>().map_err(OciError::from)
}

/// Who opens a session, for the upload caps: the token's subject (else the repository's
/// first segment) and the client address, unless it is exempt from per-address caps.
fn uploader(state: &AppState, req: &Request<Incoming>, name: &Name) -> Uploader {
    let client = req.extensions().get::<Client>();
    let identity = client
        .and_then(|c| c.subject.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.identity().to_string());
    Uploader {
        identity,
        address: limit_address(&state.config, client),
    }
}

/// `POST /v2/<name>/blobs/uploads/`: start a session, mount (`?mount=&from=`), or upload in
/// one request (`?digest=` with the body).
pub async fn upload_start(state: &AppState, req: Request<Incoming>, name: Name) -> HandlerResult {
    let q = query(req.uri());
    let who = uploader(state, &req, &name);
    if let Some(mount) = query_get(&q, "mount") {
        let digest = parse_digest(mount)?;
        let from = match query_get(&q, "from") {
            Some(f) => Some(f.parse::<Name>()?),
            None => None,
        };
        if state
            .registry
            .blob_mount(&name, &digest, from.as_ref())
            .await?
        {
            return created(&name, &digest);
        }
        // Not mountable: fall back to a plain session, as the spec asks.
        let s = state
            .registry
            .upload_start(&name, digest.algorithm(), &who)
            .await?;
        return Ok(session_response(StatusCode::ACCEPTED, &name, &s));
    }
    if let Some(d) = query_get(&q, "digest") {
        let digest = parse_digest(d)?;
        let (parts, body) = req.into_parts();
        let declared = header_u64(&parts, &CONTENT_LENGTH);
        state
            .registry
            .upload_monolithic(&name, &digest, declared, body_stream(body), &who)
            .await?;
        return created(&name, &digest);
    }
    let s = state
        .registry
        .upload_start(&name, Algorithm::Sha256, &who)
        .await?;
    Ok(session_response(StatusCode::ACCEPTED, &name, &s))
}

/// The start offset a `Content-Range` names, checked against `Content-Length`.
fn content_range_start(
    parts: &http::request::Parts,
    declared: Option<u64>,
) -> Result<Option<u64>, OciError> {
    let Some(h) = header_str(parts, &http::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let r = parse_content_range(h).ok_or_else(|| {
        OciError::new(
            ErrorCode::BlobUploadInvalid,
            "Content-Range must be <start>-<end>",
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    })?;
    if declared.is_some_and(|len| len != r.len()) {
        return Err(OciError::new(
            ErrorCode::SizeInvalid,
            "Content-Length does not match Content-Range",
        ));
    }
    Ok(Some(r.start))
}

/// An out-of-order chunk: 416 with where the upload really stands, so the client can resume.
async fn out_of_order(state: &AppState, name: &Name, id: &str, e: RegistryError) -> HandlerResult {
    let mut resp = crate::app::http::oci_error(&OciError::from(e));
    if let Ok(s) = state.registry.upload_status(name, id).await {
        let h = resp.headers_mut();
        h.insert(LOCATION, hv(&upload_location(name, &s.id)));
        h.insert("Range", hv(&range_header(s.len)));
        h.insert("Docker-Upload-UUID", hv(&s.id));
    }
    Ok(resp)
}

/// `PATCH <location>`: append a chunk (with `Content-Range`) or stream the rest (without).
pub async fn upload_patch(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    id: String,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let declared = header_u64(&parts, &CONTENT_LENGTH);
    let start = content_range_start(&parts, declared)?;
    match state
        .registry
        .upload_append(&name, &id, start, declared, body_stream(body))
        .await
    {
        Ok(s) => Ok(session_response(StatusCode::ACCEPTED, &name, &s)),
        Err(e @ RegistryError::UploadOutOfOrder { .. }) => out_of_order(state, &name, &id, e).await,
        Err(e) => Err(e.into()),
    }
}

/// `PUT <location>?digest=`: the optional last chunk, then verify and commit.
pub async fn upload_put(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    id: String,
) -> HandlerResult {
    let q = query(req.uri());
    let digest = parse_digest(query_get(&q, "digest").ok_or_else(|| {
        OciError::new(ErrorCode::DigestInvalid, "the digest parameter is required")
    })?)?;
    let (parts, body) = req.into_parts();
    let declared = header_u64(&parts, &CONTENT_LENGTH);
    let start = content_range_start(&parts, declared)?;
    let body = if declared == Some(0) {
        None
    } else {
        Some(body_stream(body))
    };
    match state
        .registry
        .upload_finish(&name, &id, &digest, start, declared, body)
        .await
    {
        Ok(_) => created(&name, &digest),
        Err(e @ RegistryError::UploadOutOfOrder { .. }) => out_of_order(state, &name, &id, e).await,
        Err(e) => Err(e.into()),
    }
}

/// `GET <location>`: where the upload stands.
pub async fn upload_status(state: &AppState, name: Name, id: String) -> HandlerResult {
    let s = state.registry.upload_status(&name, &id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, &name, &s))
}

/// `DELETE <location>`: abandon the upload.
pub async fn upload_cancel(state: &AppState, name: Name, id: String) -> HandlerResult {
    state.registry.upload_cancel(&name, &id).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(empty())
        .expect("valid"))
}
