//! Thin handlers of the `io.atcr.hold.*` methods and `com.atproto.sync.getBlob`: parse the
//! request, authenticate the caller (service token, see `pds/service_auth.rs`), call
//! [`crate::hold::HoldService`], and map its errors to XRPC bodies ([`api_error`], the one
//! place). Every method passes the crew rules inside the service.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{public_url, Params, XrpcError, XrpcErrorKind, XrpcResult};
use crate::app::http::{
    body_stream, collect_limited, json, limit_address, stream_body, Body, Client,
};
use crate::app::AppState;
use crate::hold::uploads::PartRef;
use crate::hold::{HoldApiError, HoldService};
use crate::oci::types::Digest;
use crate::pds::permissions::Action;

/// Largest JSON request body (notifyManifest with many layers stays far below).
const MAX_JSON_BODY: usize = 1024 * 1024;

/// The one mapping from hold API errors to XRPC error bodies.
pub fn api_error(e: HoldApiError) -> XrpcError {
    use HoldApiError as E;
    let named = |name: &'static str, status: StatusCode, msg: String| {
        XrpcError::new(XrpcErrorKind::Named(name, status), msg)
    };
    let msg = e.to_string();
    match e {
        E::Auth(a) => named(a.xrpc_name(), StatusCode::UNAUTHORIZED, msg),
        E::AuthRequired => named("AuthRequired", StatusCode::UNAUTHORIZED, msg),
        E::Forbidden(_) => named("Forbidden", StatusCode::FORBIDDEN, msg),
        E::RegistrationDisabled => named("RegistrationDisabled", StatusCode::FORBIDDEN, msg),
        E::QuotaExceeded(_) => named("QuotaExceeded", StatusCode::BAD_REQUEST, msg),
        E::InvalidRequest(_) => XrpcError::invalid(msg),
        E::InvalidDigest(_) => named("InvalidDigest", StatusCode::BAD_REQUEST, msg),
        E::InvalidUploadId => named("InvalidUploadId", StatusCode::BAD_REQUEST, msg),
        E::InvalidPartNumber(_) => named("InvalidPartNumber", StatusCode::BAD_REQUEST, msg),
        E::UploadFailed(_) => named("UploadFailed", StatusCode::BAD_REQUEST, msg),
        E::TooManyUploads(_) => named("RateLimitExceeded", StatusCode::TOO_MANY_REQUESTS, msg),
        E::Blob(crate::blob::BlobError::StorageFull(_)) => {
            named("InsufficientStorage", StatusCode::INSUFFICIENT_STORAGE, msg)
        }
        E::MissingParts(_) => named("MissingParts", StatusCode::BAD_REQUEST, msg),
        E::CompletionFailed(_) => named("CompletionFailed", StatusCode::BAD_REQUEST, msg),
        E::InvalidOperation(_) => named("InvalidOperation", StatusCode::BAD_REQUEST, msg),
        E::UserMismatch(_) => named("UserMismatch", StatusCode::BAD_REQUEST, msg),
        E::InvalidUserDid(_) => named("InvalidUserDid", StatusCode::BAD_REQUEST, msg),
        E::InvalidOwner(_) => named("InvalidOwner", StatusCode::BAD_REQUEST, msg),
        E::InvalidRepository(_) => named("InvalidRepository", StatusCode::BAD_REQUEST, msg),
        E::BlobNotFound(_) => XrpcError::new(XrpcErrorKind::BlobNotFound, msg),
        E::Hold(h) => h.into(),
        E::Blob(b) => {
            crate::metrics::blob_store_error("hold");
            tracing::warn!(error = %b, "hold blob storage failed");
            XrpcError::new(
                XrpcErrorKind::InternalServerError,
                "blob storage failed in the hold",
            )
        }
    }
}

/// Entry point for `/xrpc/io.atcr.hold.*` and `/xrpc/com.atproto.sync.getBlob`.
pub async fn dispatch(state: &AppState, nsid: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(svc) = state.hold_api.clone() else {
        return XrpcError::new(
            XrpcErrorKind::MethodNotImplemented,
            "the hold is disabled on this server",
        )
        .response();
    };
    let m = req.method().clone();
    let query = matches!(m, Method::GET | Method::HEAD);
    let address = limit_address(&state.config, req.extensions().get::<Client>());
    let result = match (nsid, query) {
        ("com.atproto.sync.getBlob", true) => get_blob(&svc, nsid, req).await,
        ("io.atcr.hold.getQuota", true) => get_quota(&svc, nsid, req).await,
        ("io.atcr.hold.getLayersForManifest", true) => layers_for_manifest(&svc, nsid, req).await,
        ("io.atcr.hold.exportUserData", true) => export_user_data(&svc, nsid, req).await,
        ("io.atcr.hold.listTiers", true) => Ok(json(StatusCode::OK, &svc.list_tiers())),
        ("io.atcr.hold.uploadPart", _) if m == Method::PUT => upload_part(&svc, nsid, req).await,
        (
            "io.atcr.hold.initiateUpload"
            | "io.atcr.hold.getPartUploadUrl"
            | "io.atcr.hold.completeUpload"
            | "io.atcr.hold.abortUpload"
            | "io.atcr.hold.notifyManifest"
            | "io.atcr.hold.requestCrew"
            | "io.atcr.hold.deleteUserData"
            | "io.atcr.hold.setStats",
            false,
        ) if m == Method::POST => procedure(&svc, nsid, req, address).await,
        (
            "com.atproto.sync.getBlob"
            | "io.atcr.hold.getQuota"
            | "io.atcr.hold.getLayersForManifest"
            | "io.atcr.hold.exportUserData"
            | "io.atcr.hold.listTiers"
            | "io.atcr.hold.uploadPart"
            | "io.atcr.hold.initiateUpload"
            | "io.atcr.hold.getPartUploadUrl"
            | "io.atcr.hold.completeUpload"
            | "io.atcr.hold.abortUpload"
            | "io.atcr.hold.notifyManifest"
            | "io.atcr.hold.requestCrew"
            | "io.atcr.hold.deleteUserData"
            | "io.atcr.hold.setStats",
            _,
        ) => Err(XrpcError::new(
            XrpcErrorKind::MethodNotAllowed,
            format!("{nsid} does not accept {m}"),
        )),
        _ => Err(XrpcError::new(
            XrpcErrorKind::MethodNotImplemented,
            format!("{nsid} is not implemented"),
        )),
    };
    result.unwrap_or_else(|e| e.response())
}

fn authorization<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn caller<B>(
    svc: &HoldService,
    nsid: &str,
    req: &Request<B>,
) -> Result<Option<String>, XrpcError> {
    svc.caller(authorization(req).as_deref(), nsid)
        .await
        .map_err(api_error)
}

fn ok(v: &impl serde::Serialize) -> XrpcResult {
    Ok(json(StatusCode::OK, v))
}

async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, XrpcError> {
    let bytes = collect_limited(body, MAX_JSON_BODY)
        .await
        .map_err(|_| XrpcError::invalid(format!("request body over {MAX_JSON_BODY} bytes")))?;
    let bytes = if bytes.is_empty() {
        b"{}".to_vec()
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| XrpcError::invalid(format!("request body: {e}")))
}

#[derive(Deserialize)]
struct InitiateIn {
    digest: String,
}

#[derive(Deserialize)]
struct UploadIdIn {
    #[serde(rename = "uploadId")]
    upload_id: String,
}

#[derive(Deserialize)]
struct PartUrlIn {
    #[serde(rename = "uploadId")]
    upload_id: String,
    #[serde(rename = "partNumber")]
    part_number: u32,
}

#[derive(Deserialize)]
struct CompleteIn {
    #[serde(rename = "uploadId")]
    upload_id: String,
    digest: String,
    #[serde(default)]
    parts: Vec<PartRef>,
}

/// The JSON procedures (POST).
async fn procedure(
    svc: &HoldService,
    nsid: &str,
    req: Request<Incoming>,
    address: Option<String>,
) -> XrpcResult {
    // The caller is authenticated before the body is read; every procedure needs one.
    let who = caller(svc, nsid, &req).await?;
    if who.is_none() {
        return Err(api_error(HoldApiError::AuthRequired));
    }
    let base = public_url(svc.pds(), &req);
    let who = who.as_deref();
    let body = req.into_body();
    let e = api_error;
    match nsid {
        "io.atcr.hold.initiateUpload" => {
            let i: InitiateIn = read_json(body).await?;
            let id = svc
                .initiate_upload(who, &i.digest, address.as_deref())
                .await
                .map_err(e)?;
            ok(&serde_json::json!({"uploadId": id}))
        }
        "io.atcr.hold.getPartUploadUrl" => {
            let i: PartUrlIn = read_json(body).await?;
            let u = svc
                .part_upload_url(who, &i.upload_id, i.part_number, &base)
                .await
                .map_err(e)?;
            ok(&u)
        }
        "io.atcr.hold.completeUpload" => {
            let i: CompleteIn = read_json(body).await?;
            let d = svc
                .complete_upload(who, &i.upload_id, &i.digest, &i.parts)
                .await
                .map_err(e)?;
            ok(&serde_json::json!({"status": "completed", "digest": d.to_string()}))
        }
        "io.atcr.hold.abortUpload" => {
            let i: UploadIdIn = read_json(body).await?;
            svc.abort_upload(who, &i.upload_id).await.map_err(e)?;
            ok(&serde_json::json!({"status": "aborted"}))
        }
        "io.atcr.hold.notifyManifest" => {
            let i = read_json(body).await?;
            ok(&svc.notify_manifest(who, i, &base).await.map_err(e)?)
        }
        "io.atcr.hold.requestCrew" => {
            let i = read_json(body).await?;
            ok(&svc.request_crew(who, i).await.map_err(e)?)
        }
        "io.atcr.hold.deleteUserData" => ok(&svc.delete_user_data(who).await.map_err(e)?),
        "io.atcr.hold.setStats" => {
            let i = read_json(body).await?;
            ok(&svc.set_stats(who, i).await.map_err(e)?)
        }
        _ => Err(XrpcError::new(
            XrpcErrorKind::MethodNotImplemented,
            format!("{nsid} is not implemented"),
        )),
    }
}

/// `PUT uploadPart`: `X-Upload-Id` / `X-Part-Number` headers (or the same as query
/// parameters, as in the URL `getPartUploadUrl` returns); the body streams to storage.
async fn upload_part(svc: &HoldService, nsid: &str, req: Request<Incoming>) -> XrpcResult {
    let who = caller(svc, nsid, &req).await?;
    let p = Params::of(&req);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let id = header("x-upload-id")
        .or_else(|| p.get("uploadId").map(str::to_string))
        .ok_or_else(|| api_error(HoldApiError::InvalidUploadId))?;
    let part: u32 = header("x-part-number")
        .or_else(|| p.get("partNumber").map(str::to_string))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            api_error(HoldApiError::InvalidPartNumber(
                "X-Part-Number must be a positive integer".into(),
            ))
        })?;
    let body = body_stream(req.into_body());
    let etag = svc
        .upload_part(who.as_deref(), &id, part, body)
        .await
        .map_err(api_error)?;
    ok(&serde_json::json!({"etag": etag}))
}

async fn get_quota(svc: &HoldService, nsid: &str, req: Request<Incoming>) -> XrpcResult {
    let who = caller(svc, nsid, &req).await?;
    let p = Params::of(&req);
    let user = p
        .get("userDid")
        .map(str::to_string)
        .or_else(|| who.clone())
        .unwrap_or_default();
    ok(&svc
        .get_quota(who.as_deref(), &user)
        .await
        .map_err(api_error)?)
}

async fn layers_for_manifest(svc: &HoldService, nsid: &str, req: Request<Incoming>) -> XrpcResult {
    let who = caller(svc, nsid, &req).await?;
    let p = Params::of(&req);
    let uri = p.required("manifest")?;
    ok(&svc
        .layers_for_manifest(who.as_deref(), uri)
        .await
        .map_err(api_error)?)
}

async fn export_user_data(svc: &HoldService, nsid: &str, req: Request<Incoming>) -> XrpcResult {
    let who = caller(svc, nsid, &req).await?;
    ok(&svc
        .export_user_data(who.as_deref())
        .await
        .map_err(api_error)?)
}

/// `com.atproto.sync.getBlob?did=&cid=`: an OCI digest (`sha256:...`) is a blob of the blob
/// store (GET: 307 to a presigned URL on S3, streamed otherwise; HEAD: 200 with its size,
/// never a redirect); a CID is a blob of the hold repo, which stores none yet
/// (`BlobNotFound`). Both gated by `public` / crew `blob:read`.
async fn get_blob(svc: &HoldService, nsid: &str, req: Request<Incoming>) -> XrpcResult {
    let who = caller(svc, nsid, &req).await?;
    let p = Params::of(&req);
    super::check_repo(svc.pds(), p.required("did")?)?;
    let cid = p.required("cid")?.to_string();
    svc.require(who.as_deref(), Action::ReadBlob)
        .await
        .map_err(api_error)?;
    let not_found = || XrpcError::new(XrpcErrorKind::BlobNotFound, "Blob not found");
    // A raw sha2-256 CID names the same bytes as the OCI digest with that hash (the scan
    // records' SBOM and report blobs are stored that way).
    let as_digest = if cid.contains(':') {
        Some(cid.clone())
    } else {
        crate::scan::service::digest_of_cid(&cid).map(|d| d.to_string())
    };
    if let Some(cid) = as_digest {
        let digest: Digest = cid
            .parse()
            .map_err(|e| XrpcError::invalid(format!("cid: {e}")))?;
        let blobs = svc.blobs();
        let Some(size) = blobs.stat(&digest).await.map_err(|e| api_error(e.into()))? else {
            return Err(not_found());
        };
        let builder = Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::header::CONTENT_LENGTH, size)
            .header("Docker-Content-Digest", digest.to_string());
        // HEAD answers presence and size from metadata (AppViews ask before pulls and
        // mounts); only a GET is sent to storage.
        if req.method() == Method::HEAD {
            return Ok(builder
                .body(crate::app::http::empty())
                .expect("valid headers"));
        }
        if let Some(url) = blobs
            .redirect_url(&digest)
            .await
            .map_err(|e| api_error(e.into()))?
        {
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(http::header::LOCATION, url)
                .body(crate::app::http::empty())
                .expect("valid redirect"));
        }
        let read = blobs
            .read(&digest, None)
            .await
            .map_err(|e| api_error(e.into()))?;
        return Ok(builder
            .body(stream_body(read.stream))
            .expect("valid headers"));
    }
    crate::atproto::repo::cid::parse_cid(&cid)
        .map_err(|e| XrpcError::invalid(format!("cid: {e}")))?;
    Err(not_found())
}
