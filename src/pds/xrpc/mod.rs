//! The hold's HTTP surface: `/.well-known/did.json`, `/.well-known/atproto-did` and the
//! `/xrpc/<nsid>` methods. The NSID table below is the second level of the route table
//! in `server/router.rs` (which sends every `/xrpc/{nsid}` here), one screen long.
//! Handlers live in files named after their NSID group. Every error is an [`XrpcError`]:
//! `{"error": "Name", "message": "..."}` with the status from [`XrpcError::status`].

pub mod com_atproto_identity;
pub mod com_atproto_repo;
pub mod com_atproto_server;
pub mod com_atproto_sync;
pub mod io_atcr_hold;
pub mod subscribe_repos;
pub mod well_known;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{HoldError, HoldPds};
use crate::app::http::{full, json, Body};
use crate::app::AppState;

/// XRPC error names used by the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrpcErrorKind {
    InvalidRequest,
    MethodNotImplemented,
    MethodNotAllowed,
    RecordNotFound,
    RepoNotFound,
    BlobNotFound,
    HandleNotFound,
    FutureCursor,
    ConsumerTooSlow,
    RateLimitExceeded,
    InternalServerError,
    /// A method-specific error from a lexicon (`QuotaExceeded`, `InvalidUploadId`, ...).
    Named(&'static str, StatusCode),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct XrpcError {
    pub kind: XrpcErrorKind,
    pub message: String,
}

impl XrpcError {
    pub fn new(kind: XrpcErrorKind, message: impl Into<String>) -> XrpcError {
        XrpcError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> XrpcError {
        XrpcError::new(XrpcErrorKind::InvalidRequest, message)
    }

    pub fn name(&self) -> &'static str {
        use XrpcErrorKind as K;
        match self.kind {
            K::InvalidRequest => "InvalidRequest",
            K::MethodNotImplemented => "MethodNotImplemented",
            K::MethodNotAllowed => "InvalidRequest",
            K::RecordNotFound => "RecordNotFound",
            K::RepoNotFound => "RepoNotFound",
            K::BlobNotFound => "BlobNotFound",
            K::HandleNotFound => "HandleNotFound",
            K::FutureCursor => "FutureCursor",
            K::ConsumerTooSlow => "ConsumerTooSlow",
            K::RateLimitExceeded => "RateLimitExceeded",
            K::InternalServerError => "InternalServerError",
            K::Named(name, _) => name,
        }
    }

    /// The one status mapping (as the reference PDS: lookups that miss are 400s).
    pub fn status(&self) -> StatusCode {
        use XrpcErrorKind as K;
        match self.kind {
            K::InvalidRequest
            | K::RecordNotFound
            | K::RepoNotFound
            | K::BlobNotFound
            | K::HandleNotFound
            | K::FutureCursor
            | K::ConsumerTooSlow => StatusCode::BAD_REQUEST,
            K::MethodNotImplemented => StatusCode::NOT_IMPLEMENTED,
            K::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            K::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            K::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            K::Named(_, status) => status,
        }
    }

    /// The error body with a status other than the mapped one (e.g. 404 outside `/xrpc/`).
    pub fn with_status(&self, status: StatusCode) -> Response<Body> {
        let mut r = self.response();
        *r.status_mut() = status;
        r
    }

    pub fn response(&self) -> Response<Body> {
        json(
            self.status(),
            &serde_json::json!({"error": self.name(), "message": self.message}),
        )
    }
}

impl From<HoldError> for XrpcError {
    fn from(e: HoldError) -> Self {
        tracing::warn!(error = %e, "hold request failed");
        XrpcError::new(
            XrpcErrorKind::InternalServerError,
            "internal error in the hold",
        )
    }
}

pub type XrpcResult = Result<Response<Body>, XrpcError>;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Query,
    Subscription,
}

type Handler =
    fn(Arc<HoldPds>, Request<Incoming>) -> futures_util::future::BoxFuture<'static, XrpcResult>;

macro_rules! h {
    ($f:path) => {{
        fn call(
            hold: Arc<HoldPds>,
            req: Request<Incoming>,
        ) -> futures_util::future::BoxFuture<'static, XrpcResult> {
            Box::pin(async move { $f(&hold, req).await })
        }
        call as Handler
    }};
}

/// NSID -> (kind, handler).
fn method(nsid: &str) -> Option<(Kind, Handler)> {
    use com_atproto_identity as identity;
    use com_atproto_repo as repo;
    use com_atproto_server as server;
    use com_atproto_sync as sync;
    Some(match nsid {
        "_health" => (Kind::Query, h!(server::health)),
        "com.atproto.server.describeServer" => (Kind::Query, h!(server::describe_server)),
        "com.atproto.repo.describeRepo" => (Kind::Query, h!(repo::describe_repo)),
        "com.atproto.repo.getRecord" => (Kind::Query, h!(repo::get_record)),
        "com.atproto.repo.listRecords" => (Kind::Query, h!(repo::list_records)),
        "com.atproto.sync.getRepo" => (Kind::Query, h!(sync::get_repo)),
        "com.atproto.sync.getRecord" => (Kind::Query, h!(sync::get_record)),
        "com.atproto.sync.getLatestCommit" => (Kind::Query, h!(sync::get_latest_commit)),
        "com.atproto.sync.listRepos" => (Kind::Query, h!(sync::list_repos)),
        "com.atproto.sync.getRepoStatus" => (Kind::Query, h!(sync::get_repo_status)),
        "com.atproto.sync.listBlobs" => (Kind::Query, h!(sync::list_blobs)),
        "com.atproto.identity.resolveHandle" => (Kind::Query, h!(identity::resolve_handle)),
        "com.atproto.sync.subscribeRepos" => (Kind::Subscription, h!(subscribe_repos::subscribe)),
        _ => return None,
    })
}

/// Entry point for `/xrpc/{nsid}`.
pub async fn dispatch(state: &AppState, nsid: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(hold) = state.hold.clone() else {
        return XrpcError::new(
            XrpcErrorKind::MethodNotImplemented,
            "the hold is disabled on this server",
        )
        .response();
    };
    if nsid.starts_with("io.atcr.hold.") || nsid == "com.atproto.sync.getBlob" {
        return io_atcr_hold::dispatch(state, nsid, req).await;
    }
    let Some((kind, handler)) = method(nsid) else {
        return XrpcError::new(
            XrpcErrorKind::MethodNotImplemented,
            format!("{nsid} is not implemented"),
        )
        .response();
    };
    let ok = match kind {
        Kind::Query => matches!(*req.method(), Method::GET | Method::HEAD),
        Kind::Subscription => *req.method() == Method::GET,
    };
    if !ok {
        return XrpcError::new(
            XrpcErrorKind::MethodNotAllowed,
            format!("{nsid} does not accept {}", req.method()),
        )
        .response();
    }
    handler(hold, req).await.unwrap_or_else(|e| e.response())
}

// ---- helpers shared by the handlers ---------------------------------------------------------

pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub fn of<B>(req: &Request<B>) -> Params {
        Params(crate::app::http::query(req.uri()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        crate::app::http::query_get(&self.0, key)
    }

    pub fn required(&self, key: &str) -> Result<&str, XrpcError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(XrpcError::invalid(format!(
                "Error: Params must have the property \"{key}\""
            ))),
        }
    }

    /// `limit` in `1..=max` (default `default`).
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, XrpcError> {
        match self.get("limit") {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(XrpcError::invalid(format!(
                    "limit must be an integer in 1..={max}"
                ))),
            },
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, XrpcError> {
        match self.get(key) {
            None => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(_) => Err(XrpcError::invalid(format!("{key} must be a boolean"))),
        }
    }
}

/// The `repo`/`did` parameter must name this hold (by DID or handle).
pub(crate) fn check_repo(hold: &HoldPds, repo: &str) -> Result<(), XrpcError> {
    let id = hold.identity();
    if repo == id.did || repo.eq_ignore_ascii_case(&id.handle) {
        Ok(())
    } else {
        Err(XrpcError::new(
            XrpcErrorKind::RepoNotFound,
            format!("Could not find repo: {repo}"),
        ))
    }
}

/// The hold's public base URL: configured, else from the request's Host header.
pub(crate) fn public_url<B>(hold: &HoldPds, req: &Request<B>) -> String {
    if let Some(u) = &hold.identity().public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or(hold.identity().host.as_str());
    format!("http://{host}")
}

pub(crate) fn car_response(car: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/vnd.ipld.car")
        .header(http::header::CONTENT_LENGTH, car.len())
        .body(full(car))
        .expect("static headers are valid")
}
