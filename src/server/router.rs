//! The single route table. Every URL the process answers is listed in [`table`]; OCI paths
//! carry repository names with slashes, so everything under `/v2/` is split further by
//! [`crate::oci::route::parse`], whose grammar is also one screen long.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::http::{json, oci_error, Body};
use super::AppState;
use crate::oci::handlers as oci;
use crate::oci::route::OciRoute;
use crate::oci::{ErrorCode, OciError};

#[derive(Debug, Clone, Copy)]
enum RouteId {
    OciBase,
    OciCatalog,
    Oci,
    Health,
}

fn table() -> &'static matchit::Router<RouteId> {
    static TABLE: OnceLock<matchit::Router<RouteId>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut r = matchit::Router::new();
        let routes = [
            ("/v2", RouteId::OciBase),
            ("/v2/", RouteId::OciBase),
            ("/v2/_catalog", RouteId::OciCatalog),
            ("/v2/{*oci_path}", RouteId::Oci), // <name>/{manifests,blobs,tags,referrers}/...
            ("/_health", RouteId::Health),
        ];
        for (path, id) in routes {
            r.insert(path, id).expect("route table is consistent");
        }
        r
    })
}

pub async fn dispatch(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut resp = match table().at(&path) {
        Ok(m) => match *m.value {
            RouteId::OciBase => oci::base(&method),
            RouteId::OciCatalog => oci::catalog(&state, req).await,
            RouteId::Oci => {
                match crate::oci::route::parse(m.params.get("oci_path").unwrap_or("")) {
                    Ok(route) => oci_dispatch(&state, route, req).await,
                    Err(e) => oci_error(&e),
                }
            }
            RouteId::Health => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        },
        Err(_) => oci_error(
            &OciError::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND),
        ),
    };
    if path.starts_with("/v2") {
        resp.headers_mut().insert(
            "Docker-Distribution-API-Version",
            http::HeaderValue::from_static("registry/2.0"),
        );
    }
    let status = resp.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, %peer, status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(%method, %path, %peer, status = status.as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    }
    resp
}

async fn oci_dispatch(state: &AppState, route: OciRoute, req: Request<Incoming>) -> Response<Body> {
    use OciRoute as R;
    let m = req.method().clone();
    let result = match (route, &m) {
        (R::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            oci::manifest_get(state, req, name, reference).await
        }
        (R::Manifest { name, reference }, &Method::PUT) => {
            oci::manifest_put(state, req, name, reference).await
        }
        (R::Manifest { name, reference }, &Method::DELETE) => {
            oci::manifest_delete(state, name, reference).await
        }
        (R::ManifestBadTag { tag, .. }, &Method::PUT) => Err(OciError::new(
            ErrorCode::ManifestInvalid,
            format!("invalid tag {tag:?}"),
        )),
        (R::ManifestBadTag { tag, .. }, &Method::GET | &Method::HEAD | &Method::DELETE) => {
            Err(OciError::new(
                ErrorCode::ManifestUnknown,
                format!("no manifest is tagged {tag:?}"),
            ))
        }
        (R::Blob { name, digest }, &Method::GET | &Method::HEAD) => {
            oci::blob_get(state, req, name, digest).await
        }
        (R::Blob { name, digest }, &Method::DELETE) => oci::blob_delete(state, name, digest).await,
        (R::UploadStart { name }, &Method::POST) => oci::upload_start(state, req, name).await,
        (R::Upload { name, id }, &Method::PATCH) => oci::upload_patch(state, req, name, id).await,
        (R::Upload { name, id }, &Method::PUT) => oci::upload_put(state, req, name, id).await,
        (R::Upload { name, id }, &Method::GET) => oci::upload_status(state, name, id).await,
        (R::Upload { name, id }, &Method::DELETE) => oci::upload_cancel(state, name, id).await,
        (R::Tags { name }, &Method::GET) => oci::tags_list(state, req, name).await,
        (R::Referrers { name, digest }, &Method::GET) => {
            oci::referrers(state, req, name, digest).await
        }
        _ => Err(OciError::new(
            ErrorCode::Unsupported,
            format!("{m} is not allowed here"),
        )),
    };
    let mut resp = result.unwrap_or_else(|e| oci_error(&e));
    // An error may leave the request body unread; the connection cannot be reused then, so
    // say so instead of letting the client's next request hit a closed socket.
    let has_body = matches!(m, Method::POST | Method::PATCH | Method::PUT);
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}
