//! A typed XRPC client over `reqwest` (rustls): the few `com.atproto.*` calls the registry
//! makes against users' PDSes. Every response body is read with a size cap, every call has
//! a timeout, and XRPC errors keep the server's error name (`AuthenticationRequired`,
//! `InvalidToken`, `ExpiredToken`, ...).

use std::time::Duration;

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
        let resp = match auth {
            None => req.send().await.map_err(|e| transport(method, e))?,
            Some(c) => {
                let (client, built) = req.build_split();
                let mut request = built.map_err(|e| transport(method, e))?;
                let verb = request.method().as_str().to_string();
                let url = request.url().to_string();
                // A body that cannot be sent twice (a stream) gets no nonce retry.
                let retry = request.try_clone();
                c.set_headers(request.headers_mut(), &verb, &url);
                let resp = client
                    .execute(request)
                    .await
                    .map_err(|e| transport(method, e))?;
                match c {
                    Credential::Bearer(_) => resp,
                    Credential::Dpop { nonces, .. } => {
                        nonces.remember(&url, resp.headers());
                        match retry {
                            Some(mut again) if wants_dpop_nonce(&resp) => {
                                c.set_headers(again.headers_mut(), &verb, &url);
                                let resp = client
                                    .execute(again)
                                    .await
                                    .map_err(|e| transport(method, e))?;
                                nonces.remember(&url, resp.headers());
                                resp
                            }
                            _ => resp,
                        }
                    }
                }
            }
        };
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
        self.procedure(
            pds,
            "com.atproto.server.createSession",
            &serde_json::json!({"identifier": identifier, "password": password}),
            None,
        )
        .await
    }

    pub async fn refresh_session(&self, pds: &str, refresh_jwt: &str) -> Result<Session> {
        let url = Self::url(pds, "com.atproto.server.refreshSession")?;
        let req = self.http.post(url).timeout(self.cfg.timeout);
        let auth = Credential::Bearer(refresh_jwt.to_string());
        let resp = self
            .send("com.atproto.server.refreshSession", req, Some(&auth))
            .await?;
        Self::json("com.atproto.server.refreshSession", resp).await
    }

    /// Ends a session at the PDS (`deleteSession` with its refresh JWT): used to throw away a
    /// session made with a main password, which this registry refuses to keep.
    pub async fn delete_session(&self, pds: &str, refresh_jwt: &str) -> Result<()> {
        const M: &str = "com.atproto.server.deleteSession";
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
        let exp_s = exp.map(|e| e.to_string());
        let mut params = vec![("aud", aud)];
        if let Some(l) = lxm {
            params.push(("lxm", l));
        }
        if let Some(e) = &exp_s {
            params.push(("exp", e));
        }
        #[derive(Deserialize)]
        struct Out {
            token: String,
        }
        let out: Out = self
            .query(
                pds,
                "com.atproto.server.getServiceAuth",
                &params,
                Some(auth),
            )
            .await?;
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
        const M: &str = "com.atproto.repo.uploadBlob";
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
        #[derive(Deserialize)]
        struct Out {
            blob: BlobRef,
        }
        let out: Out = Self::json(M, resp).await?;
        Ok(out.blob)
    }

    /// `putRecord` without lexicon validation (the PDS does not know `io.atcr.*`).
    pub async fn put_record(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
    ) -> Result<RecordRef> {
        self.procedure(
            pds,
            "com.atproto.repo.putRecord",
            &serde_json::json!({"repo": repo, "collection": collection, "rkey": rkey, "record": record}),
            Some(auth),
        )
        .await
    }

    pub async fn delete_record(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<()> {
        let _: serde_json::Value = self
            .procedure(
                pds,
                "com.atproto.repo.deleteRecord",
                &serde_json::json!({"repo": repo, "collection": collection, "rkey": rkey}),
                Some(auth),
            )
            .await?;
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
        match self
            .query(
                pds,
                "com.atproto.repo.getRecord",
                &[("repo", repo), ("collection", collection), ("rkey", rkey)],
                None,
            )
            .await
        {
            Ok(r) => Ok(Some(r)),
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
        let limit = limit.clamp(1, 100).to_string();
        let mut params = vec![
            ("repo", repo),
            ("collection", collection),
            ("limit", limit.as_str()),
        ];
        if let Some(c) = cursor {
            params.push(("cursor", c));
        }
        self.query(pds, "com.atproto.repo.listRecords", &params, None)
            .await
    }

    pub async fn apply_writes(
        &self,
        pds: &str,
        auth: &Credential,
        repo: &str,
        writes: &[Write],
    ) -> Result<()> {
        let _: serde_json::Value = self
            .procedure(
                pds,
                "com.atproto.repo.applyWrites",
                &serde_json::json!({"repo": repo, "writes": writes}),
                Some(auth),
            )
            .await?;
        Ok(())
    }

    // ---- com.atproto.sync / identity ------------------------------------------------------

    /// Downloads a blob, refusing more than `limit` bytes.
    pub async fn get_blob(&self, pds: &str, did: &str, cid: &str, limit: usize) -> Result<Bytes> {
        const M: &str = "com.atproto.sync.getBlob";
        let url = Self::url(pds, M)?;
        let req = self
            .http
            .get(url)
            .query(&[("did", did), ("cid", cid)])
            .timeout(self.cfg.blob_timeout);
        let resp = self.send(M, req, None).await?;
        read_limited(resp, limit, M).await
    }

    pub async fn resolve_handle(&self, service: &str, handle: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Out {
            did: String,
        }
        let out: Out = self
            .query(
                service,
                "com.atproto.identity.resolveHandle",
                &[("handle", handle)],
                None,
            )
            .await?;
        Ok(out.did)
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
