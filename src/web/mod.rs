//! The web UI (design.md section 6, atcr-spec 5.8 and 6.1): server-rendered askama pages
//! (`templates/`), htmx for fragments (search paging), assets embedded in the binary
//! ([`assets`]), browser sessions and CSRF ([`session`]), the public pages ([`pages`]) and
//! the hold admin panel at `/admin` ([`admin`], captain only).
//!
//! Request flow: `server::router` matches the path to a [`WebPage`] and calls [`handle`];
//! [`Ctx::from_request`] reads the session cookie (redb `ui_sessions`) and the theme; the
//! page handler gathers data (the index, the registry, the hold PDS, users' PDSes through
//! their sealed sessions) into view structs ([`views`]) and renders them. Every POST goes
//! through [`Ctx::check_csrf`] first. Errors become HTML error pages here, in one place
//! ([`WebError`]).

pub mod admin;
pub mod assets;
pub mod avatars;
pub mod catalog;
pub mod markdown;
pub mod page_form;
pub mod pages;
pub mod repo_page;
pub mod scans;
pub mod session;
pub mod signin;
pub mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::http::{collect_limited, full, Body};
use crate::app::AppState;
use session::{cookie, set_cookie, tokens_match, WebSession, CSRF_COOKIE, SESSION_COOKIE};

/// Form bodies are small (a handle, a password, a few fields).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The pages of the route table (`server/router.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebPage {
    Home,
    Static,
    /// `/favicon.ico` (the embedded icon).
    Favicon,
    Login,
    Logout,
    Search,
    /// `/r/<owner>/<repo...>[/manifests/<digest>]`
    Repo,
    Star,
    User,
    Settings,
    SettingsExport,
    SettingsSessions,
    /// `/settings/devices`: revoke credential-helper devices.
    SettingsDevices,
    /// `/settings/access`: end every session, device and grant of the user.
    SettingsAccess,
    /// `/auth/oauth/login`: start an OAuth sign-in (POST).
    OAuthLogin,
    /// `/auth/oauth/callback`: the authorization server's redirect back.
    OAuthCallback,
    /// `/device`: approve a credential helper's device code.
    Device,
    Avatar,
    Install,
    Admin,
    AdminLogin,
    AdminCrewAdd,
    AdminCrewEdit,
    AdminCrewRemove,
    AdminSettings,
    AdminGc,
    /// `/compare/<owner>/<repo...>?a=&b=`: two tags' packages and vulnerabilities.
    Compare,
    /// `POST /scan/rescan`.
    Rescan,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// The CSRF token is missing or wrong (403; the form is shown again by the browser).
    #[error("the form expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("method not allowed")]
    Method,
    /// A user's PDS (or the PLC directory) did not answer: 502 with a retry hint.
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::Method => StatusCode::METHOD_NOT_ALLOWED,
            WebError::Upstream(_) => StatusCode::BAD_GATEWAY,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::registry::store::StoreError> for WebError {
    fn from(e: crate::registry::store::StoreError) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<crate::pds::HoldError> for WebError {
    fn from(e: crate::pds::HoldError) -> Self {
        WebError::Internal(e.to_string())
    }
}

pub type WebResult = Result<Response<Body>, WebError>;

/// What every page needs to know about the request.
pub struct Ctx {
    pub session: Option<(String, WebSession)>,
    /// Anonymous CSRF token (cookie `atcr_csrf`); freshly made when absent.
    pub anon_csrf: String,
    anon_csrf_is_new: bool,
    pub theme: String,
    pub secure: bool,
    /// `host[:port]` for pull commands.
    pub host: String,
    pub peer: SocketAddr,
    pub htmx: bool,
    /// Local mode: no sign-in, and every page says authentication is off.
    pub local_mode: bool,
}

impl Ctx {
    pub async fn from_request<B>(
        state: &AppState,
        req: &Request<B>,
        peer: SocketAddr,
    ) -> Result<Ctx, WebError> {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        let cookies = h("cookie");
        let session = match cookie(cookies, SESSION_COOKIE) {
            Some(id) => state
                .web
                .sessions
                .get(id)
                .await?
                .map(|s| (id.to_string(), s)),
            None => None,
        };
        let (anon_csrf, anon_csrf_is_new) = match cookie(cookies, CSRF_COOKIE) {
            Some(t) if t.len() >= 32 && t.len() <= 64 => (t.to_string(), false),
            _ => (session::random_token(), true),
        };
        let theme = match cookie(cookies, "atcr_theme") {
            Some("dark") => "dark",
            Some("light") => "light",
            _ => "",
        }
        .to_string();
        let public = &state.config.server.public_url;
        let secure = public.starts_with("https://") || h("x-forwarded-proto") == Some("https");
        let host = if !public.is_empty() {
            public
                .split("://")
                .nth(1)
                .unwrap_or(public)
                .trim_end_matches('/')
                .to_string()
        } else {
            h("host")
                .filter(|v| {
                    v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                })
                .unwrap_or("localhost")
                .to_string()
        };
        Ok(Ctx {
            session,
            anon_csrf,
            anon_csrf_is_new,
            theme,
            secure,
            host,
            peer: std::net::SocketAddr::new(
                crate::app::http::client_ip(peer, req.headers()),
                peer.port(),
            ),
            htmx: h("hx-request") == Some("true"),
            local_mode: is_local(state),
        })
    }

    /// An anonymous visitor of `host` (benches and tests that call page functions).
    pub fn anonymous(host: &str) -> Ctx {
        Ctx {
            session: None,
            anon_csrf: session::random_token(),
            anon_csrf_is_new: true,
            theme: String::new(),
            secure: false,
            host: host.to_string(),
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            htmx: false,
            local_mode: false,
        }
    }

    pub fn user(&self) -> Option<&WebSession> {
        self.session.as_ref().map(|(_, s)| s)
    }

    /// The token forms on this page must carry.
    pub fn csrf(&self) -> &str {
        match &self.session {
            Some((_, s)) => &s.csrf,
            None => &self.anon_csrf,
        }
    }

    pub fn check_csrf(&self, form: &Form) -> Result<(), WebError> {
        let ok = match &self.session {
            Some((_, s)) => tokens_match(form.get("csrf"), &s.csrf),
            // A token we just made up was never sent to the browser: nothing can match it.
            None => !self.anon_csrf_is_new && tokens_match(form.get("csrf"), &self.anon_csrf),
        };
        if ok {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    pub fn chrome(&self, title: impl Into<String>) -> views::Chrome {
        views::Chrome {
            title: title.into(),
            user: self.user().map(|s| views::UserChip {
                did: s.did.clone(),
                handle: s.handle.clone(),
            }),
            csrf: self.csrf().to_string(),
            theme: self.theme.clone(),
            css_v: assets::version("app.css"),
            js_v: assets::version("app.js"),
            htmx_v: assets::version("htmx.min.js"),
            local_mode: self.local_mode,
        }
    }

    fn finish(&self, mut resp: Response<Body>) -> Response<Body> {
        if self.anon_csrf_is_new && self.session.is_none() {
            let c = set_cookie(
                CSRF_COOKIE,
                &self.anon_csrf,
                session::SESSION_TTL_SECS,
                self.secure,
                "Strict",
            );
            if let Ok(v) = http::HeaderValue::from_str(&c) {
                resp.headers_mut().append(http::header::SET_COOKIE, v);
            }
        }
        resp
    }
}

/// A decoded `application/x-www-form-urlencoded` body (first value wins; lists keep all).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(key, _)| key == k)
    }
    pub fn parse(bytes: &[u8]) -> Form {
        Form(form_urlencoded::parse(bytes).into_owned().collect())
    }
    /// A form read another way (multipart).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Form {
        Form(pairs)
    }
}

pub async fn read_form(req: Request<Incoming>) -> Result<Form, WebError> {
    let bytes = collect_limited(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|_| WebError::BadRequest("the form is too large or was cut off".into()))?;
    Ok(Form::parse(&bytes))
}

/// Security headers every HTML answer carries: no framing, no inline script, no sniffing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn html(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("Content-Security-Policy", CSP)
        // For browsers that predate CSP frame-ancestors.
        .header("X-Frame-Options", "DENY")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "same-origin")
        .body(full(body))
        .expect("static headers are valid")
}

pub fn render(t: &impl Template) -> WebResult {
    let body = t
        .render()
        .map_err(|e| WebError::Internal(format!("template: {e}")))?;
    Ok(html(StatusCode::OK, body))
}

/// 303 See Other (after a POST) with optional `Set-Cookie` values.
pub fn redirect(location: &str, cookies: &[String]) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(http::header::LOCATION, crate::app::http::hv(location))
        .header(http::header::CACHE_CONTROL, "no-store");
    for c in cookies {
        b = b.header(http::header::SET_COOKIE, crate::app::http::hv(c));
    }
    b.body(full(Vec::new())).expect("valid redirect")
}

/// Only local paths are followed after login (no open redirects).
pub fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// Local mode (`auth.mode = "local"`): authentication is off.
pub fn is_local(state: &AppState) -> bool {
    state.auth.mode() == crate::auth::AuthMode::None
}

fn error_page(ctx: Option<&Ctx>, local_mode: bool, e: &WebError) -> Response<Body> {
    let status = e.status();
    if let WebError::Internal(msg) = e {
        tracing::warn!(error = %msg, "web page failed");
    }
    let (title, hint) = match e {
        WebError::NotFound(_) => ("Not found", "Check the address, or search for the image."),
        WebError::Upstream(_) => (
            "A PDS did not answer",
            "The data lives on the owner's ATProto PDS, which is down or slow. Try again in a minute.",
        ),
        WebError::Csrf => ("Form expired", "Go back, reload the page and submit again."),
        WebError::Forbidden(_) => ("Not allowed", ""),
        WebError::Method => ("Method not allowed", ""),
        WebError::BadRequest(_) => ("Bad request", ""),
        WebError::Internal(_) => ("Something went wrong", "The error was logged."),
    };
    let message = match e {
        // Internal details stay in the log.
        WebError::Internal(_) => String::new(),
        other => other.to_string(),
    };
    let chrome = match ctx {
        Some(c) => c.chrome(title),
        None => views::Chrome {
            local_mode,
            ..views::Chrome::bare(title)
        },
    };
    let t = views::ErrorPage {
        chrome,
        status: status.as_u16(),
        heading: title.to_string(),
        message,
        hint: hint.to_string(),
    };
    let body = t.render().unwrap_or_else(|_| title.to_string());
    html(status, body)
}

/// The HTML 404 for paths no route matches (browsers; `/v2` keeps its JSON errors).
pub fn not_found(state: &AppState) -> Response<Body> {
    error_page(
        None,
        is_local(state),
        &WebError::NotFound("There is no page at this address.".into()),
    )
}

/// Entry point from the router.
pub async fn handle(
    state: &Arc<AppState>,
    page: WebPage,
    params: Vec<(String, String)>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Cacheable bodies without a session: no cookie is read, no CSRF cookie is set.
    let inm = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let head = req.method() == Method::HEAD;
    if page == WebPage::Static {
        return assets::serve(&param("file"), inm, head).unwrap_or_else(|| not_found(state));
    }
    if page == WebPage::Favicon {
        return assets::serve("favicon.ico", inm, head).unwrap_or_else(|| not_found(state));
    }
    if page == WebPage::Avatar {
        let q = crate::app::http::query(req.uri());
        let repo = crate::app::http::query_get(&q, "repo");
        return match catalog::avatar(state, &param("did"), repo, inm, head).await {
            Ok(r) => r,
            Err(e) => error_page(None, is_local(state), &e),
        };
    }
    let ctx = match Ctx::from_request(state, &req, peer).await {
        Ok(c) => c,
        Err(e) => return error_page(None, is_local(state), &e),
    };
    let method = req.method().clone();
    let result = match (page, method) {
        (WebPage::Home, Method::GET) => catalog::home(state, &ctx).await,
        (WebPage::Search, Method::GET) => catalog::search(state, &ctx, &req).await,
        (WebPage::Repo, Method::GET) if param("rest").trim_end_matches('/').ends_with("/sbom") => {
            let rest = param("rest");
            match rest
                .trim_end_matches('/')
                .trim_end_matches("/sbom")
                .split_once("/manifests/")
            {
                Some((repo, digest)) => {
                    let q = req.uri().query().unwrap_or("").to_string();
                    let (_, shown) = match catalog::owner_of(state, &param("owner")).await {
                        Ok(o) => o,
                        Err(e) => return ctx.finish(error_page(Some(&ctx), ctx.local_mode, &e)),
                    };
                    scans::sbom_page(state, &ctx, &shown, repo, digest, &q).await
                }
                None => Err(WebError::NotFound(
                    "There is no page at this address.".into(),
                )),
            }
        }
        (WebPage::Compare, Method::GET) => {
            scans::compare_page(
                state,
                &ctx,
                &param("owner"),
                param("repo").trim_end_matches('/'),
                &req,
            )
            .await
        }
        (WebPage::Rescan, Method::POST) => scans::rescan(state, &ctx, req).await,
        (WebPage::Repo, Method::GET) => {
            let q = crate::app::http::query(req.uri());
            let offset = crate::app::http::query_get(&q, "tags_offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            catalog::repo_or_manifest(state, &ctx, &param("owner"), &param("rest"), offset).await
        }
        (WebPage::Repo, Method::POST) => {
            let repo = param("rest").trim_end_matches('/').to_string();
            repo_page::edit(state, &ctx, &param("owner"), &repo, req).await
        }
        (WebPage::Star, Method::POST) => catalog::star(state, &ctx, req).await,
        (WebPage::User, Method::GET) => {
            let q = crate::app::http::query(req.uri());
            let page = crate::app::http::query_get(&q, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            catalog::user(state, &ctx, &param("handle"), page).await
        }
        (WebPage::Login, Method::GET) => pages::login_form(state, &ctx, &req, false, "", ""),
        (WebPage::Login, Method::POST) => pages::login(state, &ctx, req, false).await,
        (WebPage::Logout, Method::POST) => pages::logout(state, &ctx, req).await,
        (WebPage::Settings, Method::GET) => pages::settings(state, &ctx, req.uri()).await,
        (WebPage::SettingsSessions, Method::POST) => pages::revoke_sessions(state, &ctx, req).await,
        (WebPage::SettingsExport, Method::POST) => pages::export(state, &ctx, req).await,
        (WebPage::SettingsDevices, Method::POST) => signin::revoke_devices(state, &ctx, req).await,
        (WebPage::SettingsAccess, Method::POST) => signin::revoke_access(state, &ctx, req).await,
        (WebPage::OAuthLogin, Method::POST) => signin::oauth_login(state, &ctx, req).await,
        (WebPage::OAuthCallback, Method::GET) => signin::oauth_callback(state, &ctx, &req).await,
        (WebPage::Device, Method::GET) => signin::device_page(state, &ctx, &req).await,
        (WebPage::Device, Method::POST) => signin::device_decide(state, &ctx, req).await,
        (WebPage::Install, Method::GET) => pages::install(state, &ctx),
        (WebPage::Admin, Method::GET) => admin::dashboard(state, &ctx, &req).await,
        (WebPage::AdminLogin, Method::GET) => pages::login_form(state, &ctx, &req, true, "", ""),
        (WebPage::AdminLogin, Method::POST) => pages::login(state, &ctx, req, true).await,
        (WebPage::AdminCrewAdd, Method::POST) => admin::crew_add(state, &ctx, req).await,
        (WebPage::AdminCrewEdit, Method::POST) => admin::crew_edit(state, &ctx, req).await,
        (WebPage::AdminCrewRemove, Method::GET) => {
            admin::crew_remove_confirm(state, &ctx, &req).await
        }
        (WebPage::AdminCrewRemove, Method::POST) => admin::crew_remove(state, &ctx, req).await,
        (WebPage::AdminSettings, Method::POST) => admin::settings(state, &ctx, req).await,
        (WebPage::AdminGc, Method::GET) => admin::gc_preview(state, &ctx).await,
        (WebPage::AdminGc, Method::POST) => admin::gc_run(state, &ctx, req).await,
        _ => Err(WebError::Method),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => error_page(Some(&ctx), ctx.local_mode, &e),
    };
    ctx.finish(resp)
}
