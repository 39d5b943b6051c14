//! The single route table. Every URL the process answers is listed in [`table`]; OCI paths
//! carry repository names with slashes, so everything under `/v2/` is split further by
//! [`crate::oci::route::parse`], whose grammar is also one screen long.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::app::http::{json, oci_error, Body, Client};
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
    /// Prometheus text format (`[metrics]`).
    Metrics,
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
            ("/metrics", RouteId::Metrics),
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
            ("/compare/{owner}/{*repo}", RouteId::Web(WebPage::Compare)),
            ("/scan/rescan", RouteId::Web(WebPage::Rescan)),
        ];
        for (path, id) in routes {
            r.insert(path, id).expect("route table is consistent");
        }
        r
    })
}

/// Every request: a `request` span (request id, method, route, repository and digest of OCI
/// paths, the caller's DID once authenticated) around the routed handler, then the log line
/// and the metrics. The id is the client's `X-Request-Id` when it is short and plain, else a
/// new one; it is sent back in `X-Request-Id`.
pub async fn dispatch(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let label = RequestLabel::of(&path, req.uri().query());
    let request_id = request_id(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %label.route,
        repository = tracing::field::Empty,
        digest = tracing::field::Empty,
        did = tracing::field::Empty,
    );
    if let Some(r) = &label.repository {
        span.record("repository", tracing::field::display(r));
    }
    if let Some(d) = &label.digest {
        span.record("digest", tracing::field::display(d));
    }
    let uploading = label.is_upload && matches!(method, Method::POST | Method::PATCH | Method::PUT);
    let in_flight = uploading.then(crate::metrics::UploadInFlight::start);
    let mut resp = route(&state, req, peer, &method, &path)
        .instrument(span.clone())
        .await;
    drop(in_flight);
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status();
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(%path, %peer, status = status.as_u16(), micros, "request failed");
        } else if matches!(method, Method::GET | Method::HEAD) {
            tracing::debug!(%path, %peer, status = status.as_u16(), micros, "request");
        } else {
            // Writes are few and worth a line each (pushes, deletes, logins).
            tracing::info!(%path, %peer, status = status.as_u16(), micros, "request");
        }
    });
    crate::metrics::http_request(&label.route, method.as_str(), status.as_u16(), elapsed);
    let route_name = label.route.clone();
    resp.map(|body| crate::metrics::CountSent::new(body, &route_name).boxed_unsync())
}

/// What the metrics and the log know of a request path: a bounded route name and, for OCI
/// paths, the repository and digest.
struct RequestLabel {
    route: Cow<'static, str>,
    repository: Option<String>,
    digest: Option<String>,
    is_upload: bool,
}

impl RequestLabel {
    fn of(path: &str, query: Option<&str>) -> RequestLabel {
        let mut label = RequestLabel {
            route: Cow::Borrowed("not_found"),
            repository: None,
            digest: None,
            is_upload: false,
        };
        let Ok(m) = table().at(path) else {
            return label;
        };
        label.route = match *m.value {
            RouteId::OciBase => "oci_base".into(),
            RouteId::OciCatalog => "oci_catalog".into(),
            RouteId::Oci => {
                match crate::oci::route::parse(m.params.get("oci_path").unwrap_or("")) {
                    Ok(route) => {
                        label.repository = Some(route_name(&route).to_string());
                        let (name, digest) = match &route {
                            OciRoute::Manifest { reference, .. } => (
                                "oci_manifest",
                                match reference {
                                    crate::oci::types::Reference::Digest(d) => Some(d.to_string()),
                                    _ => None,
                                },
                            ),
                            OciRoute::ManifestBadTag { .. } => ("oci_manifest", None),
                            OciRoute::Blob { digest, .. } => ("oci_blob", Some(digest.to_string())),
                            OciRoute::UploadStart { .. } => ("oci_upload_start", None),
                            OciRoute::Upload { .. } => ("oci_upload", None),
                            OciRoute::Tags { .. } => ("oci_tags", None),
                            OciRoute::Referrers { digest, .. } => {
                                ("oci_referrers", Some(digest.to_string()))
                            }
                        };
                        label.is_upload = matches!(
                            route,
                            OciRoute::UploadStart { .. } | OciRoute::Upload { .. }
                        );
                        // An upload's final PUT names its digest in the query.
                        label.digest = digest.or_else(|| {
                            form_urlencoded::parse(query?.as_bytes())
                                .find(|(k, _)| k == "digest")
                                .and_then(|(_, v)| v.parse::<crate::oci::types::Digest>().ok())
                                .map(|d| d.to_string())
                        });
                        name.into()
                    }
                    Err(_) => "oci_invalid".into(),
                }
            }
            RouteId::AuthToken => "auth_token".into(),
            RouteId::DeviceCode => "auth_device_code".into(),
            RouteId::DeviceToken => "auth_device_token".into(),
            RouteId::OAuthClientMetadata => "oauth_client_metadata".into(),
            RouteId::OAuthJwks => "oauth_jwks".into(),
            RouteId::Health => "health".into(),
            RouteId::Xrpc => "xrpc".into(),
            RouteId::DidJson => "did_json".into(),
            RouteId::AtprotoDid => "atproto_did".into(),
            RouteId::Metrics => "metrics".into(),
            RouteId::Web(page) => format!("web_{page:?}").to_lowercase().into(),
        };
        label
    }
}

/// The client's `X-Request-Id` if it is 1..=64 characters of `[A-Za-z0-9._-]`, else a new
/// random one (16 hex digits).
fn request_id<B>(req: &Request<B>) -> String {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    match given {
        Some(v) => v.to_string(),
        None => uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
    }
}

/// `/metrics`: the Prometheus text format; with `[metrics] token` set, only for
/// `Authorization: Bearer <token>` (compared in constant time).
fn metrics_endpoint<B>(state: &AppState, req: &Request<B>) -> Response<Body> {
    let config = &state.config.metrics;
    if !config.enabled {
        return crate::web::not_found(state);
    }
    if !config.token.0.is_empty() {
        use subtle::ConstantTimeEq;
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = given.as_bytes().ct_eq(config.token.0.as_bytes()).into();
        if !ok {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(http::header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(crate::app::http::full("metrics need a bearer token\n"))
                .expect("static headers are valid");
        }
    }
    let (content_type, text) = crate::metrics::render();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(crate::app::http::full(text))
        .expect("static headers are valid")
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    method: &Method,
    path: &str,
) -> Response<Body> {
    let state = state.clone();
    let method = method.clone();
    let path = path.to_string();
    let mut resp = match table().at(&path) {
        Ok(m) => match *m.value {
            RouteId::OciBase => match guard(&state, &req, Need::Base).await {
                Ok(_) => oci::base(&method),
                Err(resp) => resp,
            },
            RouteId::OciCatalog => match guard(&state, &req, Need::Catalog).await {
                Ok(_) => oci::catalog(&state, req).await,
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
                            Ok(claims) => {
                                // The authenticated caller's DID (`None`: anonymous, or auth
                                // off): pulls from a private remote hold need it.
                                let caller = claims
                                    .as_ref()
                                    .map(|c| c.sub.clone())
                                    .filter(|s| !s.is_empty());
                                let mut req = req;
                                req.extensions_mut().insert(Client {
                                    addr: peer.ip(),
                                    subject: claims.map(|c| c.sub),
                                });
                                oci_dispatch(&state, route, req, peer, caller).await
                            }
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
            RouteId::Health => json(StatusCode::OK, &crate::app::health(&state)),
            RouteId::Xrpc => {
                let nsid = m.params.get("nsid").unwrap_or("").to_string();
                let mut req = req;
                req.extensions_mut().insert(Client {
                    addr: peer.ip(),
                    subject: None,
                });
                crate::pds::xrpc::dispatch(&state, &nsid, req).await
            }
            RouteId::DidJson => crate::pds::xrpc::well_known::did_json(&state, &req),
            RouteId::AtprotoDid => crate::pds::xrpc::well_known::atproto_did(&state),
            RouteId::Metrics => metrics_endpoint(&state, &req),
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
/// response, with the `WWW-Authenticate` challenge on 401. Returns the token's claims.
async fn guard<B>(
    state: &AppState,
    req: &Request<B>,
    need: Need<'_>,
) -> Result<Option<crate::auth::jwt::Claims>, Response<Body>> {
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
        Ok(claims) => {
            if let Some(did) = claims
                .as_ref()
                .map(|c| c.sub.as_str())
                .filter(|d| !d.is_empty())
            {
                tracing::Span::current().record("did", tracing::field::display(did));
            }
            return Ok(claims);
        }
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

async fn oci_dispatch(
    state: &AppState,
    route: OciRoute,
    req: Request<Incoming>,
    peer: SocketAddr,
    caller: Option<String>,
) -> Response<Body> {
    use OciRoute as R;
    let m = req.method().clone();
    let result = match (route, &m) {
        (R::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            oci::manifest_get(state, req, name, reference, peer).await
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
            oci::blob_get(state, req, name, digest, caller.as_deref()).await
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
