//! The single route table. Every URL the process answers is listed in [`table`]; OCI paths
//! carry repository names with slashes, so everything under `/v2/` is split further by
//! [`crate::oci::route::parse`], whose grammar is also one screen long.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::http::{json, oci_error, Body};
use crate::app::AppState;
use crate::auth::Need;
use crate::oci::handlers as oci;
use crate::oci::route::OciRoute;
use crate::oci::{ErrorCode, OciError};
use crate::web::WebPage;

#[derive(Debug, Clone, Copy)]
enum RouteId {
    OciBase,
    OciCatalog,
    Oci,
    AuthToken,
    /// `/auth/device/code` and `/auth/device/token` (the credential helper's device flow).
    DeviceCode,
    DeviceToken,
    /// OAuth client metadata (the `client_id` document) and its public keys.
    OAuthClientMetadata,
    OAuthJwks,
    Health,
    Xrpc,
    DidJson,
    AtprotoDid,
    /// Browser pages (`web/`): HTML, cookie sessions, CSRF on every POST.
    Web(WebPage),
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
            ("/auth/token", RouteId::AuthToken),
            ("/auth/device/code", RouteId::DeviceCode),
            ("/auth/device/token", RouteId::DeviceToken),
            ("/auth/oauth/login", RouteId::Web(WebPage::OAuthLogin)),
            ("/auth/oauth/callback", RouteId::Web(WebPage::OAuthCallback)),
            ("/oauth-client-metadata.json", RouteId::OAuthClientMetadata),
            ("/oauth/jwks.json", RouteId::OAuthJwks),
            ("/device", RouteId::Web(WebPage::Device)),
            ("/_health", RouteId::Health),
            ("/xrpc/{nsid}", RouteId::Xrpc), // hold PDS: NSID table in pds/xrpc/mod.rs
            ("/.well-known/did.json", RouteId::DidJson),
            ("/.well-known/atproto-did", RouteId::AtprotoDid),
            ("/", RouteId::Web(WebPage::Home)),
            ("/static/{file}", RouteId::Web(WebPage::Static)),
            ("/login", RouteId::Web(WebPage::Login)),
            ("/logout", RouteId::Web(WebPage::Logout)),
            ("/search", RouteId::Web(WebPage::Search)),
            ("/r/{owner}", RouteId::Web(WebPage::Repo)), // -> /u/<owner>
            ("/r/{owner}/", RouteId::Web(WebPage::Repo)),
            ("/r/{owner}/{*rest}", RouteId::Web(WebPage::Repo)), // <repo...>[/manifests/<digest>]
            ("/favicon.ico", RouteId::Web(WebPage::Favicon)),
            ("/star", RouteId::Web(WebPage::Star)),
            ("/u/{handle}", RouteId::Web(WebPage::User)),
            ("/avatar/{did}", RouteId::Web(WebPage::Avatar)),
            ("/settings", RouteId::Web(WebPage::Settings)),
            ("/settings/export", RouteId::Web(WebPage::SettingsExport)),
            (
                "/settings/sessions",
                RouteId::Web(WebPage::SettingsSessions),
            ),
            ("/settings/devices", RouteId::Web(WebPage::SettingsDevices)),
            ("/settings/access", RouteId::Web(WebPage::SettingsAccess)),
            ("/install", RouteId::Web(WebPage::Install)),
            ("/admin", RouteId::Web(WebPage::Admin)),
            ("/admin/login", RouteId::Web(WebPage::AdminLogin)),
            ("/admin/crew/add", RouteId::Web(WebPage::AdminCrewAdd)),
            ("/admin/crew/edit", RouteId::Web(WebPage::AdminCrewEdit)),
            ("/admin/crew/remove", RouteId::Web(WebPage::AdminCrewRemove)),
            ("/admin/settings", RouteId::Web(WebPage::AdminSettings)),
            ("/admin/gc", RouteId::Web(WebPage::AdminGc)),
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
            RouteId::OciBase => match guard(&state, &req, Need::Base).await {
                Ok(()) => oci::base(&method),
                Err(resp) => resp,
            },
            RouteId::OciCatalog => match guard(&state, &req, Need::Catalog).await {
                Ok(()) => oci::catalog(&state, req).await,
                Err(resp) => resp,
            },
            RouteId::Oci => {
                match crate::oci::route::parse(m.params.get("oci_path").unwrap_or("")) {
                    Ok(route) => {
                        let name = route_name(&route).clone();
                        let need = match method {
                            Method::GET | Method::HEAD => Need::Pull(&name),
                            _ => Need::Push(&name),
                        };
                        match guard(&state, &req, need).await {
                            Ok(()) => oci_dispatch(&state, route, req).await,
                            Err(resp) => resp,
                        }
                    }
                    Err(e) => oci_error(&e),
                }
            }
            RouteId::AuthToken => crate::auth::handler::token(&state, req, peer).await,
            RouteId::DeviceCode => crate::auth::handler::device_code(&state, req, peer).await,
            RouteId::DeviceToken => crate::auth::handler::device_token(&state, req).await,
            RouteId::OAuthClientMetadata => crate::auth::handler::client_metadata(&state),
            RouteId::OAuthJwks => crate::auth::handler::jwks(&state),
            RouteId::Health => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            RouteId::Xrpc => {
                let nsid = m.params.get("nsid").unwrap_or("").to_string();
                crate::pds::xrpc::dispatch(&state, &nsid, req).await
            }
            RouteId::DidJson => crate::pds::xrpc::well_known::did_json(&state, &req),
            RouteId::AtprotoDid => crate::pds::xrpc::well_known::atproto_did(&state),
            RouteId::Web(page) => {
                let params = m
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                crate::web::handle(&state, page, params, req, peer).await
            }
        },
        // API clients get JSON errors; everyone else (browsers) the HTML 404 page.
        Err(_)
            if path.starts_with("/v2")
                || path.starts_with("/xrpc")
                || path.starts_with("/auth") =>
        {
            oci_error(
                &OciError::new(ErrorCode::Unsupported, "no such endpoint")
                    .with_status(StatusCode::NOT_FOUND),
            )
        }
        Err(_) => crate::web::not_found(&state),
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

fn route_name(route: &OciRoute) -> &crate::oci::types::Name {
    match route {
        OciRoute::Manifest { name, .. }
        | OciRoute::ManifestBadTag { name, .. }
        | OciRoute::Blob { name, .. }
        | OciRoute::UploadStart { name }
        | OciRoute::Upload { name, .. }
        | OciRoute::Tags { name }
        | OciRoute::Referrers { name, .. } => name,
    }
}

/// Token check for `/v2/` (a no-op with `auth.mode = "none"`); a refusal is the OCI error
/// response, with the `WWW-Authenticate` challenge on 401.
async fn guard<B>(
    state: &AppState,
    req: &Request<B>,
    need: Need<'_>,
) -> Result<(), Response<Body>> {
    let header = |n| {
        req.headers()
            .get(n)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let refusal = match state
        .auth
        .check(
            header(http::header::AUTHORIZATION),
            header(http::header::HOST),
            need,
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(r) => r,
    };
    let mut resp = crate::auth::handler::refusal_response(refusal.error);
    if let Some(c) = refusal.challenge {
        if let Ok(v) = http::HeaderValue::from_str(&c) {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    Err(resp)
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
