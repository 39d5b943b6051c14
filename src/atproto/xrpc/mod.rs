//! A typed XRPC client over `reqwest` (rustls): the few `com.atproto.*` calls the registry
//! makes against users' PDSes. Every response body is read with a size cap, every call has
//! a timeout, and XRPC errors keep the server's error name (`AuthenticationRequired`,
//! `InvalidToken`, `ExpiredToken`, ...).
//!
//! The parameters, inputs and outputs of the calls are atrium-api's generated
//! `com::atproto::*::{ParametersData, InputData, OutputData}` types; the transport (size caps,
//! timeouts, DPoP, metrics, error bodies) is ours. Strings going out are parsed into
//! atrium's checked formats (`Did`, `Nsid`, `RecordKey`, `Cid`, ...) first: a malformed one
//! is [`XrpcError::Invalid`] and the request is not sent. Callers keep plain strings and
//! `serde_json::Value` records ([`Session`], [`Record`], [`RecordRef`], [`BlobRef`]), converted
//! at this boundary.

use std::str::FromStr;
use std::time::Duration;

use atrium_api::com::atproto::{identity, repo, server, sync};
use atrium_api::types::string::{AtIdentifier, Cid, Did, Handle, Nsid, RecordKey};
use atrium_api::types::{LimitedNonZeroU8, Unknown};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JSON responses larger than this are refused (records, sessions, DID documents).
pub const MAX_JSON_RESPONSE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum XrpcError {
    /// The server answered with an XRPC error body (`{"error","message"}`) or a bare status.
    #[error("{method}: HTTP {status} {error}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Remote {
        method: String,
        status: u16,
        error: String,
        message: Option<String>,
    },
    #[error("{method}: cannot reach the server: {detail}")]
    Transport { method: String, detail: String },
    #[error("{method}: response larger than {limit} bytes")]
    TooLarge { method: String, limit: usize },
    #[error("{method}: unexpected response: {detail}")]
    Decode { method: String, detail: String },
    /// A parameter or record that the call's lexicon does not allow (a malformed DID, NSID,
    /// record key or CID, a float in a record): refused before anything is sent.
    #[error("{method}: invalid request, not sent: {detail}")]
    Invalid { method: String, detail: String },
    #[error("invalid service URL {0:?}")]
    BadUrl(String),
}

impl XrpcError {
    /// The XRPC error name, when the server gave one.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            XrpcError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            XrpcError::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The access token was refused because it expired (refresh and retry).
    pub fn is_expired_token(&self) -> bool {
        matches!(self.error_name(), Some("ExpiredToken"))
    }

    /// Credentials were refused (wrong password, revoked app password, bad token).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            XrpcError::Remote { status: 400 | 401 | 403, error, .. }
                if matches!(error.as_str(), "AuthenticationRequired" | "InvalidToken" | "ExpiredToken" | "AccountTakedown" | "AuthFactorTokenRequired" | "InvalidRequest" | "Unauthorized")
        )
    }
}

type Result<T> = std::result::Result<T, XrpcError>;

/// How an authenticated call proves who it is: an app-password session's access JWT, or an
/// OAuth access token bound to a DPoP key (a fresh proof per request, the server's nonce,
/// one retry when the server asks for a new nonce).
#[derive(Clone)]
pub enum Credential {
    Bearer(String),
    Dpop {
        token: String,
        key: std::sync::Arc<crate::atproto::dpop::Es256Key>,
        nonces: std::sync::Arc<crate::atproto::dpop::NonceCache>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.write_str(match self {
            Credential::Bearer(_) => "Credential::Bearer",
            Credential::Dpop { .. } => "Credential::Dpop",
        })
    }
}

impl Credential {
    /// Sets the `Authorization` (and `DPoP`) headers of a request for `method` `url`.
    fn set_headers(&self, headers: &mut reqwest::header::HeaderMap, method: &str, url: &str) {
        use reqwest::header::{HeaderValue, AUTHORIZATION};
        let (scheme, token) = match self {
            Credential::Bearer(t) => ("Bearer", t),
            Credential::Dpop { token, key, nonces } => {
                let nonce = nonces.get(url);
                let proof = key.dpop_proof(method, url, nonce.as_deref(), Some(token));
                if let Ok(v) = HeaderValue::from_str(&proof) {
                    headers.insert("DPoP", v);
                }
                ("DPoP", token)
            }
        };
        if let Ok(mut v) = HeaderValue::from_str(&format!("{scheme} {token}")) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
    }
}

/// A resource server asking for a (new) DPoP nonce: 401 + `WWW-Authenticate: DPoP
/// error="use_dpop_nonce"` (RFC 9449 section 9).
fn wants_dpop_nonce(resp: &reqwest::Response) -> bool {
    resp.status() == reqwest::StatusCode::UNAUTHORIZED
        && resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains("use_dpop_nonce")))
}

/// `com.atproto.server.createSession` / `refreshSession` output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub did: String,
    pub handle: String,
    pub access_jwt: String,
    pub refresh_jwt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl From<server::create_session::OutputData> for Session {
    fn from(o: server::create_session::OutputData) -> Session {
        Session {
            did: o.did.into(),
            handle: o.handle.into(),
            access_jwt: o.access_jwt,
            refresh_jwt: o.refresh_jwt,
            active: o.active,
        }
    }
}

impl From<server::refresh_session::OutputData> for Session {
    fn from(o: server::refresh_session::OutputData) -> Session {
        Session {
            did: o.did.into(),
            handle: o.handle.into(),
            access_jwt: o.access_jwt,
            refresh_jwt: o.refresh_jwt,
            active: o.active,
        }
    }
}

/// A blob reference as returned by `uploadBlob`, embedded in records verbatim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobRef {
    #[serde(rename = "$type")]
    pub type_: String,
    #[serde(rename = "ref")]
    pub link: CidLink,
    #[serde(rename = "mimeType")]
    pub mime_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CidLink {
    #[serde(rename = "$link")]
    pub link: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordRef {
    pub uri: String,
    pub cid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub uri: String,
    #[serde(default)]
    pub cid: Option<String>,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordList {
    pub records: Vec<Record>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One write of `com.atproto.repo.applyWrites`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "$type")]
pub enum Write {
    #[serde(rename = "com.atproto.repo.applyWrites#create")]
    Create {
        collection: String,
        rkey: String,
        value: serde_json::Value,
    },
    #[serde(rename = "com.atproto.repo.applyWrites#update")]
    Update {
        collection: String,
        rkey: String,
        value: serde_json::Value,
    },
    #[serde(rename = "com.atproto.repo.applyWrites#delete")]
    Delete { collection: String, rkey: String },
}

/// Timeouts and limits of the client.
#[derive(Debug, Clone)]
pub struct XrpcConfig {
    pub connect_timeout: Duration,
    /// Whole-request timeout for JSON calls.
    pub timeout: Duration,
    /// Whole-request timeout for blob transfers.
    pub blob_timeout: Duration,
}

impl Default for XrpcConfig {
    fn default() -> Self {
        XrpcConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            blob_timeout: Duration::from_secs(300),
        }
    }
}

/// The client. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct XrpcClient {
    http: reqwest::Client,
    cfg: XrpcConfig,
}

impl std::fmt::Debug for XrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XrpcClient").finish_non_exhaustive()
    }
}

impl Default for XrpcClient {
    fn default() -> Self {
        XrpcClient::new(XrpcConfig::default())
    }
}

/// Reads at most `limit` bytes of a response body.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    method: &str,
) -> Result<Bytes> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(XrpcError::TooLarge {
            method: method.into(),
            limit,
        });
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| XrpcError::Transport {
        method: method.into(),
        detail: e.to_string(),
    })? {
        if buf.len() + chunk.len() > limit {
            return Err(XrpcError::TooLarge {
                method: method.into(),
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn transport(method: &str, e: reqwest::Error) -> XrpcError {
    // reqwest's Display hides the cause ("error sending request"); include the chain.
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    XrpcError::Transport {
        method: method.into(),
        detail,
    }
}

/// Parses a string into one of atrium's checked formats; a malformed one is
/// [`XrpcError::Invalid`] naming the parameter.
fn arg<T>(method: &str, what: &str, s: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    T::from_str(s).map_err(|e| XrpcError::Invalid {
        method: method.into(),
        detail: format!("{what} {s:?}: {e}"),
    })
}

/// A record going out: `serde_json::Value` -> atrium's `Unknown` (the ATProto data model:
/// a float is refused here, as the PDS would refuse it).
fn record_in(method: &str, record: &serde_json::Value) -> Result<Unknown> {
    serde_json::from_value(record.clone()).map_err(|e| XrpcError::Invalid {
        method: method.into(),
        detail: format!("record: {e}"),
    })
}

/// A record coming back: atrium's `Unknown` -> `serde_json::Value`. Kept as `Value` for the
/// callers, which read records tolerantly (unknown fields, older shapes); atrium's
/// `TryFromUnknown` would do the same round trip through JSON but unwraps its errors.
fn record_out(method: &str, value: &Unknown) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| XrpcError::Decode {
        method: method.into(),
        detail: format!("record: {e}"),
    })
}

impl From<repo::put_record::OutputData> for RecordRef {
    fn from(o: repo::put_record::OutputData) -> RecordRef {
        RecordRef {
            uri: o.uri,
            cid: o.cid.as_ref().to_string(),
        }
    }
}

impl From<repo::create_record::OutputData> for RecordRef {
    fn from(o: repo::create_record::OutputData) -> RecordRef {
        RecordRef {
            uri: o.uri,
            cid: o.cid.as_ref().to_string(),
        }
    }
}

impl BlobRef {
    /// From `uploadBlob`'s output. The legacy untyped form (`{cid, mimeType}`) has no size
    /// and is never returned by a current PDS: refused.
    fn from_atrium(method: &str, b: atrium_api::types::BlobRef) -> Result<BlobRef> {
        use atrium_api::types::{BlobRef as A, TypedBlobRef};
        match b {
            A::Typed(TypedBlobRef::Blob(b)) => Ok(BlobRef {
                type_: "blob".into(),
                link: CidLink {
                    link: b.r#ref.0.to_string(),
                },
                mime_type: b.mime_type,
                size: b.size as u64,
            }),
            A::Untyped(_) => Err(XrpcError::Decode {
                method: method.into(),
                detail: "legacy untyped blob reference".into(),
            }),
        }
    }
}

impl XrpcClient {
    pub fn new(cfg: XrpcConfig) -> XrpcClient {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("atcr/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        XrpcClient { http, cfg }
    }

    /// The underlying HTTP client (identity resolution shares the pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn config(&self) -> &XrpcConfig {
        &self.cfg
    }

    fn url(service: &str, method: &str) -> Result<reqwest::Url> {
        let base = service.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(XrpcError::BadUrl(service.into()));
        }
        reqwest::Url::parse(&format!("{base}/xrpc/{method}"))
            .map_err(|_| XrpcError::BadUrl(service.into()))
    }

    async fn send(
        &self,
        method: &str,
        req: reqwest::RequestBuilder,
        auth: Option<&Credential>,
    ) -> Result<reqwest::Response> {
        let (client, built) = req.build_split();
        let mut request = built.map_err(|e| transport(method, e))?;
        let host = match (request.url().host_str(), request.url().port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let started = std::time::Instant::now();
        let sent = match auth {
            None => client.execute(request).await,
            Some(c) => {
                let verb = request.method().as_str().to_string();
                let url = request.url().to_string();
                // A body that cannot be sent twice (a stream) gets no nonce retry.
                let retry = request.try_clone();
                c.set_headers(request.headers_mut(), &verb, &url);
                match (client.execute(request).await, c) {
                    (Ok(resp), Credential::Dpop { nonces, .. }) => {
                        nonces.remember(&url, resp.headers());
                        match retry {
                            Some(mut again) if wants_dpop_nonce(&resp) => {
                                c.set_headers(again.headers_mut(), &verb, &url);
                                let again = client.execute(again).await;
                                if let Ok(r) = &again {
                                    nonces.remember(&url, r.headers());
                                }
                                again
                            }
                            _ => Ok(resp),
                        }
                    }
                    (sent, _) => sent,
                }
            }
        };
        let outcome = match &sent {
            Err(_) => crate::metrics::Upstream::Transport,
            Ok(r) if r.status().is_success() => crate::metrics::Upstream::Ok,
            Ok(r) => crate::metrics::Upstream::Status(r.status().as_u16()),
        };
        crate::metrics::upstream_call(&host, started.elapsed(), outcome);
        let resp = sent.map_err(|e| transport(method, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_limited(resp, 64 * 1024, method)
            .await
            .unwrap_or_default();
        #[derive(Deserialize)]
        struct ErrBody {
            error: Option<String>,
            message: Option<String>,
        }
        let parsed: Option<ErrBody> = serde_json::from_slice(&body).ok();
        let (error, message) = match parsed {
            Some(ErrBody { error, message }) => (
                error.unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_string()),
                message,
            ),
            None => (
                status.canonical_reason().unwrap_or("Error").to_string(),
                None,
            ),
        };
        Err(XrpcError::Remote {
            method: method.into(),
            status: status.as_u16(),
            error: truncate(error, 128),
            message: message.map(|m| truncate(m, 512)),
        })
    }

    async fn json<T: DeserializeOwned>(method: &str, resp: reqwest::Response) -> Result<T> {
        let body = read_limited(resp, MAX_JSON_RESPONSE, method).await?;
        serde_json::from_slice(&body).map_err(|e| XrpcError::Decode {
            method: method.into(),
            detail: e.to_string(),
        })
    }

    /// A query (GET) returning JSON.
    pub async fn query<T: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        params: &[(&str, &str)],
        token: Option<&Credential>,
    ) -> Result<T> {
        self.query_params(service, method, params, token).await
    }

    /// A query whose parameters are anything `serde_urlencoded` writes, such as an atrium
    /// `ParametersData`.
    pub async fn query_params<T: DeserializeOwned, P: Serialize + ?Sized>(
        &self,
        service: &str,
        method: &str,
        params: &P,
        token: Option<&Credential>,
    ) -> Result<T> {
        let url = Self::url(service, method)?;
        let req = self.http.get(url).query(params).timeout(self.cfg.timeout);
        let resp = self.send(method, req, token).await?;
        Self::json(method, resp).await
    }

    /// A procedure (POST) with a JSON body returning JSON (or nothing: use `serde_json::Value`).
    pub async fn procedure<T: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        body: &impl Serialize,
        token: Option<&Credential>,
    ) -> Result<T> {
        let url = Self::url(service, method)?;
        let req = self.http.post(url).json(body).timeout(self.cfg.timeout);
        let resp = self.send(method, req, token).await?;
        let bytes = read_limited(resp, MAX_JSON_RESPONSE, method).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| XrpcError::Decode {
            method: method.into(),
            detail: e.to_string(),
        })
    }

    // ---- com.atproto.server ---------------------------------------------------------------

    pub async fn create_session(
        &self,
        pds: &str,
        identifier: &str,
        password: &str,
    ) -> Result<Session> {
        use server::create_session::{InputData, OutputData, NSID};
        let input = InputData {
            allow_takendown: None,
            auth_factor_token: None,
            identifier: identifier.into(),
            password: password.into(),
        };
        let out: OutputData = self.procedure(pds, NSID, &input, None).await?;
        Ok(out.into())
    }

    pub async fn refresh_session(&self, pds: &str, refresh_jwt: &str) -> Result<Session> {
        use server::refresh_session::{OutputData, NSID};
        let url = Self::url(pds, NSID)?;
        let req = self.http.post(url).timeout(self.cfg.timeout);
        let auth = Credential::Bearer(refresh_jwt.to_string());
        let resp = self.send(NSID, req, Some(&auth)).await?;
        let out: OutputData = Self::json(NSID, resp).await?;
        Ok(out.into())
    }

    /// Ends a session at the PDS (`deleteSession` with its refresh JWT): used to throw away a
    /// session made with a main password, which this registry refuses to keep.
    pub async fn delete_session(&self, pds: &str, refresh_jwt: &str) -> Result<()> {
        const M: &str = server::delete_session::NSID;
        let url = Self::url(pds, M)?;
        let req = self.http.post(url).timeout(self.cfg.timeout);
        let auth = Credential::Bearer(refresh_jwt.to_string());
        self.send(M, req, Some(&auth)).await?;
        Ok(())
    }

    /// An inter-service JWT for `aud` (a DID), optionally bound to one method (`lxm`).
    pub async fn get_service_auth(
        &self,
        pds: &str,
        auth: &Credential,
        aud: &str,
        lxm: Option<&str>,
        exp: Option<u64>,
    ) -> Result<String> {
        use server::get_service_auth::{OutputData, ParametersData, NSID};
        let params = ParametersData {
            aud: aud.into(),
            exp: exp
                .map(|e| {
                    i64::try_from(e).map_err(|_| XrpcError::Invalid {
                        method: NSID.into(),
                        detail: format!("exp {e}: out of range"),
                    })
                })
                .transpose()?,
            lxm: lxm.map(|l| arg::<Nsid>(NSID, "lxm", l)).transpose()?,
        };
        let out: OutputData = self.query_params(pds, NSID, &params, Some(auth)).await?;
        Ok(out.token)
    }

    // ---- com.atproto.repo -----------------------------------------------------------------

    /// Uploads a blob from a stream (or buffer): `body` is any `reqwest::Body`.
    pub async fn upload_blob(
        &self,
        pds: &str,
        auth: &Credential,
        mime_type: &str,
        body: impl Into<reqwest::Body>,
        len: Option<u64>,
    ) -> Result<BlobRef> {
        use repo::upload_blob::{OutputData, NSID as M};
        let url = Self::url(pds, M)?;
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, mime_type)
            .body(body)
            .timeout(self.cfg.blob_timeout);
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        let resp = self.send(M, req, Some(auth)).await?;
        let out: OutputData = Self::json(M, resp).await?;
        BlobRef::from_atrium(M, out.blob)
    }

    /// `putRecord` (lexicon validation left to the PDS's default: it does not know
    /// `io.atcr.*` and stores such records unvalidated).
    pub async fn put_record(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
    ) -> Result<RecordRef> {
        self.put_record_inner(pds, auth, repo, collection, rkey, record, None)
            .await
    }

    /// `putRecord` that only replaces the record whose CID is `swap_record` (`InvalidSwap`
    /// when it changed meanwhile), so a concurrent edit is never overwritten.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_record_swap(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
        swap_record: &str,
    ) -> Result<RecordRef> {
        self.put_record_inner(pds, auth, repo, collection, rkey, record, Some(swap_record))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_record_inner(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
        swap_record: Option<&str>,
    ) -> Result<RecordRef> {
        use repo::put_record::{InputData, OutputData, NSID};
        let input = InputData {
            collection: arg::<Nsid>(NSID, "collection", collection)?,
            record: record_in(NSID, record)?,
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            rkey: arg::<RecordKey>(NSID, "rkey", rkey)?,
            swap_commit: None,
            swap_record: swap_record
                .map(|c| arg::<Cid>(NSID, "swapRecord", c))
                .transpose()?,
            validate: None,
        };
        let out: OutputData = self.procedure(pds, NSID, &input, Some(auth)).await?;
        Ok(out.into())
    }

    /// `createRecord` under a chosen rkey: fails when a record with that key exists, so it
    /// never overwrites one.
    pub async fn create_record(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
    ) -> Result<RecordRef> {
        use repo::create_record::{InputData, OutputData, NSID};
        let input = InputData {
            collection: arg::<Nsid>(NSID, "collection", collection)?,
            record: record_in(NSID, record)?,
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            rkey: Some(arg::<RecordKey>(NSID, "rkey", rkey)?),
            swap_commit: None,
            validate: None,
        };
        let out: OutputData = self.procedure(pds, NSID, &input, Some(auth)).await?;
        Ok(out.into())
    }

    pub async fn delete_record(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<()> {
        use repo::delete_record::{InputData, OutputData, NSID};
        let input = InputData {
            collection: arg::<Nsid>(NSID, "collection", collection)?,
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            rkey: arg::<RecordKey>(NSID, "rkey", rkey)?,
            swap_commit: None,
            swap_record: None,
        };
        // Older PDSes answer with an empty body (`None`), newer ones with the commit.
        let _: Option<OutputData> = self.procedure(pds, NSID, &input, Some(auth)).await?;
        Ok(())
    }

    /// `getRecord`; `Ok(None)` when the record does not exist.
    pub async fn get_record(
        &self,
        pds: &str,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<Option<Record>> {
        use repo::get_record::{OutputData, ParametersData, NSID};
        let params = ParametersData {
            cid: None,
            collection: arg::<Nsid>(NSID, "collection", collection)?,
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            rkey: arg::<RecordKey>(NSID, "rkey", rkey)?,
        };
        match self
            .query_params::<OutputData, _>(pds, NSID, &params, None)
            .await
        {
            Ok(r) => Ok(Some(Record {
                value: record_out(NSID, &r.value)?,
                uri: r.uri,
                cid: r.cid.map(|c| c.as_ref().to_string()),
            })),
            Err(XrpcError::Remote { error, .. }) if error == "RecordNotFound" => Ok(None),
            Err(XrpcError::Remote { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list_records(
        &self,
        pds: &str,
        repo: &str,
        collection: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<RecordList> {
        use repo::list_records::{OutputData, ParametersData, NSID};
        let limit = LimitedNonZeroU8::<100>::try_from(limit.clamp(1, 100) as u8).ok();
        let params = ParametersData {
            collection: arg::<Nsid>(NSID, "collection", collection)?,
            cursor: cursor.map(str::to_string),
            limit,
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            reverse: None,
        };
        let out: OutputData = self.query_params(pds, NSID, &params, None).await?;
        let records = out
            .records
            .iter()
            .map(|r| {
                Ok(Record {
                    uri: r.uri.clone(),
                    cid: Some(r.cid.as_ref().to_string()),
                    value: record_out(NSID, &r.value)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordList {
            records,
            cursor: out.cursor,
        })
    }

    pub async fn apply_writes(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        writes: &[Write],
    ) -> Result<()> {
        use repo::apply_writes::{
            CreateData, DeleteData, InputData, InputWritesItem, OutputData, UpdateData, NSID,
        };
        let nsid = |c: &str| arg::<Nsid>(NSID, "collection", c);
        let rkey = |k: &str| arg::<RecordKey>(NSID, "rkey", k);
        let writes = writes
            .iter()
            .map(|w| {
                Ok(match w {
                    Write::Create {
                        collection,
                        rkey: k,
                        value,
                    } => InputWritesItem::Create(Box::new(
                        CreateData {
                            collection: nsid(collection)?,
                            rkey: Some(rkey(k)?),
                            value: record_in(NSID, value)?,
                        }
                        .into(),
                    )),
                    Write::Update {
                        collection,
                        rkey: k,
                        value,
                    } => InputWritesItem::Update(Box::new(
                        UpdateData {
                            collection: nsid(collection)?,
                            rkey: rkey(k)?,
                            value: record_in(NSID, value)?,
                        }
                        .into(),
                    )),
                    Write::Delete {
                        collection,
                        rkey: k,
                    } => InputWritesItem::Delete(Box::new(
                        DeleteData {
                            collection: nsid(collection)?,
                            rkey: rkey(k)?,
                        }
                        .into(),
                    )),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let input = InputData {
            repo: arg::<AtIdentifier>(NSID, "repo", repo)?,
            swap_commit: None,
            validate: None,
            writes,
        };
        let _: Option<OutputData> = self.procedure(pds, NSID, &input, Some(auth)).await?;
        Ok(())
    }

    // ---- com.atproto.sync / identity ------------------------------------------------------

    /// Downloads a blob, refusing more than `limit` bytes.
    pub async fn get_blob(&self, pds: &str, did: &str, cid: &str, limit: usize) -> Result<Bytes> {
        use sync::get_blob::{ParametersData, NSID as M};
        let params = ParametersData {
            cid: arg::<Cid>(M, "cid", cid)?,
            did: arg::<Did>(M, "did", did)?,
        };
        let url = Self::url(pds, M)?;
        let req = self
            .http
            .get(url)
            .query(&params)
            .timeout(self.cfg.blob_timeout);
        let resp = self.send(M, req, None).await?;
        read_limited(resp, limit, M).await
    }

    pub async fn resolve_handle(&self, service: &str, handle: &str) -> Result<String> {
        use identity::resolve_handle::{OutputData, ParametersData, NSID};
        let params = ParametersData {
            handle: arg::<Handle>(NSID, "handle", handle)?,
        };
        let out: OutputData = self.query_params(service, NSID, &params, None).await?;
        Ok(out.did.into())
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_serialize_with_type_tags() {
        let w = Write::Delete {
            collection: "io.atcr.tag".into(),
            rkey: "x".into(),
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["$type"], "com.atproto.repo.applyWrites#delete");
        assert_eq!(v["rkey"], "x");
    }

    #[test]
    fn error_display_has_the_name() {
        let e = XrpcError::Remote {
            method: "com.atproto.server.createSession".into(),
            status: 401,
            error: "AuthenticationRequired".into(),
            message: Some("Invalid identifier or password".into()),
        };
        assert!(e.to_string().contains("AuthenticationRequired"));
        assert!(e.is_auth_failure());
        assert_eq!(truncate("héllo".into(), 2), "h");
    }

    #[test]
    fn atrium_inputs_and_outputs_keep_the_wire_shapes() {
        use repo::put_record::InputData;
        let record = serde_json::json!({"$type": "io.atcr.tag", "repository": "app", "tag": "latest",
            "n": 7, "nested": {"ref": {"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"}}});
        let input = InputData {
            collection: arg("m", "collection", "io.atcr.tag").unwrap(),
            record: record_in("m", &record).unwrap(),
            repo: arg("m", "repo", "did:plc:abc").unwrap(),
            rkey: arg("m", "rkey", "app:latest").unwrap(),
            swap_commit: None,
            swap_record: Some(
                arg(
                    "m",
                    "swapRecord",
                    "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
                )
                .unwrap(),
            ),
            validate: None,
        };
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            serde_json::json!({"repo": "did:plc:abc", "collection": "io.atcr.tag", "rkey": "app:latest",
                "record": record, "swapRecord": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"})
        );
        // A record comes back as it went out.
        let back: Unknown = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(record_out("m", &back).unwrap(), record);
        // Query parameters are written as the pairs were.
        let params = repo::list_records::ParametersData {
            collection: arg("m", "collection", "io.atcr.manifest").unwrap(),
            cursor: Some("3k a".into()),
            limit: LimitedNonZeroU8::try_from(100).ok(),
            repo: arg("m", "repo", "alice.test").unwrap(),
            reverse: None,
        };
        let client = reqwest::Client::new();
        let req = client
            .get("http://x/xrpc/m")
            .query(&params)
            .build()
            .unwrap();
        assert_eq!(
            req.url().query(),
            Some("collection=io.atcr.manifest&cursor=3k+a&limit=100&repo=alice.test")
        );
    }

    #[test]
    fn malformed_arguments_are_refused_before_sending() {
        let e = arg::<RecordKey>("com.atproto.repo.getRecord", "rkey", "a/b").unwrap_err();
        assert!(matches!(e, XrpcError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("rkey"), "{e}");
        assert!(arg::<Nsid>("m", "collection", "not an nsid").is_err());
        assert!(arg::<Did>("m", "did", "alice").is_err());
        assert!(arg::<Cid>("m", "cid", "sha256:00").is_err());
        assert!(arg::<AtIdentifier>("m", "repo", "did:plc:abc").is_ok());
        // Floats are not in the ATProto data model.
        let e = record_in("m", &serde_json::json!({"x": 1.5})).unwrap_err();
        assert!(matches!(e, XrpcError::Invalid { .. }), "{e}");
    }

    #[test]
    fn sessions_and_blob_refs_from_atrium_outputs() {
        let out: server::create_session::OutputData = serde_json::from_value(serde_json::json!({
            "did": "did:plc:abc", "handle": "alice.test", "accessJwt": "a", "refreshJwt": "r",
            "active": true, "email": "a@example.com", "didDoc": {"id": "did:plc:abc"}}))
        .unwrap();
        let s: Session = out.into();
        assert_eq!(
            s,
            Session {
                did: "did:plc:abc".into(),
                handle: "alice.test".into(),
                access_jwt: "a".into(),
                refresh_jwt: "r".into(),
                active: Some(true),
            }
        );
        // A malformed DID in a response is a decode error, not a panic.
        let bad = serde_json::from_value::<server::refresh_session::OutputData>(
            serde_json::json!({"did": "nope", "handle": "alice.test", "accessJwt": "a", "refreshJwt": "r"}),
        );
        assert!(bad.is_err());
        let blob = serde_json::json!({"$type": "blob",
            "ref": {"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},
            "mimeType": "application/json", "size": 42});
        let out: repo::upload_blob::OutputData =
            serde_json::from_value(serde_json::json!({ "blob": blob })).unwrap();
        let ours = BlobRef::from_atrium("m", out.blob).unwrap();
        assert_eq!(serde_json::to_value(&ours).unwrap(), blob);
        let legacy: repo::upload_blob::OutputData = serde_json::from_value(
            serde_json::json!({"blob": {"cid": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy", "mimeType": "x/y"}}),
        )
        .unwrap();
        assert!(BlobRef::from_atrium("m", legacy.blob).is_err());
    }

    #[test]
    fn urls_must_be_http() {
        assert!(XrpcClient::url("ftp://x", "a.b.c").is_err());
        assert_eq!(
            XrpcClient::url("http://localhost:2583/", "a.b.c")
                .unwrap()
                .as_str(),
            "http://localhost:2583/xrpc/a.b.c"
        );
    }
}
