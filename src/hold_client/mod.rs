//! The AppView as a client of remote holds: typed calls of the `io.atcr.hold.*` API
//! (multipart uploads, `notifyManifest`, `requestCrew`, `getQuota`) and of the hold's
//! `com.atproto.sync.getBlob` with an OCI digest (HEAD for presence, GET for a presigned
//! redirect or the bytes). Callers bring the service token (minted by the user's PDS, see
//! [`crate::auth::service_token`]); this module only speaks HTTP.
//!
//! - [`discovery`]: hold DID -> endpoint (`did.json` -> `#atcr_hold`), cached.
//! - [`net`]: SSRF rules for every outbound URL and the DNS step.
//!
//! Every call has a connect timeout and a whole-call timeout (parts: scaled by their
//! length); JSON answers are capped at 1 MiB; redirects are never followed (a hold's
//! getBlob redirect is handed to the OCI client instead). Idempotent calls (HEAD/GET
//! getBlob, getQuota, requestCrew, abortUpload) are retried with backoff when the hold is
//! unreachable or answers 5xx/429; the others never are. Errors keep the hold's XRPC error
//! name and message ([`HoldCallError`]) so the registry can say why a hold refused.

pub mod discovery;
pub mod net;

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::atproto::xrpc::{read_limited, MAX_JSON_RESPONSE};
use crate::blob::ChunkStream;

pub const INITIATE_UPLOAD: &str = "io.atcr.hold.initiateUpload";
pub const UPLOAD_PART: &str = "io.atcr.hold.uploadPart";
pub const COMPLETE_UPLOAD: &str = "io.atcr.hold.completeUpload";
pub const ABORT_UPLOAD: &str = "io.atcr.hold.abortUpload";
pub const NOTIFY_MANIFEST: &str = "io.atcr.hold.notifyManifest";
pub const REQUEST_CREW: &str = "io.atcr.hold.requestCrew";
pub const GET_QUOTA: &str = "io.atcr.hold.getQuota";
pub const GET_BLOB: &str = "com.atproto.sync.getBlob";

/// Upload ids longer than this (the lexicon's maxLength) are refused.
const MAX_UPLOAD_ID: usize = 256;
/// Error bodies read for the hold's error name and message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A hold's DID and base URL (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldEndpoint {
    pub did: String,
    pub url: String,
}

/// Failures of a hold call, with the hold named.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HoldCallError {
    /// The hold answered with an error (4xx): its XRPC error name and message.
    #[error("hold {hold} refused {method}: {error}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        hold: String,
        method: String,
        status: u16,
        error: String,
        message: Option<String>,
    },
    /// Unreachable, timed out, or 5xx/429.
    #[error("hold {hold} is unavailable ({method}): {detail}")]
    Unavailable {
        hold: String,
        method: String,
        detail: String,
    },
    /// The answer could not be used (not JSON, too large, missing fields).
    #[error("hold {hold} answered {method} with an unusable response: {detail}")]
    BadResponse {
        hold: String,
        method: String,
        detail: String,
    },
    /// The hold DID could not be turned into a usable endpoint.
    #[error("cannot reach hold {hold}: {detail}")]
    Discovery { hold: String, detail: String },
}

impl HoldCallError {
    /// The hold's DID.
    pub fn hold(&self) -> &str {
        match self {
            HoldCallError::Refused { hold, .. }
            | HoldCallError::Unavailable { hold, .. }
            | HoldCallError::BadResponse { hold, .. }
            | HoldCallError::Discovery { hold, .. } => hold,
        }
    }

    /// The XRPC error name of a refusal.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            HoldCallError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }

    /// What the hold said: its message, else its error name.
    pub fn reason(&self) -> String {
        match self {
            HoldCallError::Refused { error, message, .. } => {
                message.clone().unwrap_or_else(|| error.clone())
            }
            other => other.to_string(),
        }
    }

    /// The caller must authenticate (anonymous, or the token was refused).
    pub fn is_auth_required(&self) -> bool {
        matches!(self, HoldCallError::Refused { status: 401, .. })
    }

    /// The caller is authenticated but lacks a permission on the hold.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, HoldCallError::Refused { status: 403, error, .. } if error != "RegistrationDisabled")
    }

    pub fn is_quota_exceeded(&self) -> bool {
        self.error_name() == Some("QuotaExceeded")
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, HoldCallError::Unavailable { .. })
    }
}

type Result<T, E = HoldCallError> = std::result::Result<T, E>;

/// Where a blob stands on a hold (HEAD getBlob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobAt {
    /// The hold redirects to storage (a presigned URL the OCI client can fetch).
    Redirect(String),
    /// The hold serves the bytes itself; the size when it said.
    Here {
        size: Option<u64>,
    },
    Missing,
}

/// A GET of a blob from a hold.
pub enum BlobFetch {
    Redirect(String),
    Stream {
        len: Option<u64>,
        stream: ChunkStream,
    },
    Missing,
}

/// One uploaded part, as `completeUpload` wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPart {
    #[serde(rename = "partNumber")]
    pub part_number: u32,
    pub etag: String,
}

/// `getQuota`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Quota {
    #[serde(rename = "totalSize", default)]
    pub total_size: u64,
    /// Absent: unlimited.
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub tier: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HoldClientConfig {
    /// Lifts the SSRF address rules (tests, LAN holds).
    pub allow_private: bool,
    pub connect_timeout: Duration,
    /// Whole-call limit of JSON calls and HEADs (to the response headers for GETs).
    pub call_timeout: Duration,
    /// Attempts of an idempotent call (1 = no retry).
    pub attempts: u32,
    /// First backoff; each retry waits three times longer.
    pub backoff: Duration,
}

impl Default for HoldClientConfig {
    fn default() -> Self {
        HoldClientConfig {
            allow_private: false,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(20),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// The client (one connection pool; cheap to clone).
#[derive(Clone)]
pub struct HoldClient {
    http: reqwest::Client,
    cfg: HoldClientConfig,
}

impl std::fmt::Debug for HoldClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldClient")
            .field("allow_private", &self.cfg.allow_private)
            .finish_non_exhaustive()
    }
}

/// An error and its causes on one line (reqwest's Display hides the cause).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    detail
}

/// The time a part upload may take: two minutes plus 512 KiB/s for its length; 6 h for a
/// body of unknown length.
fn part_timeout(len: Option<u64>) -> Duration {
    match len {
        Some(n) => Duration::from_secs(120 + n / (512 * 1024)),
        None => Duration::from_secs(6 * 3600),
    }
}

impl HoldClient {
    pub fn new(cfg: HoldClientConfig) -> HoldClient {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(net::GuardedResolver {
                allow_private: cfg.allow_private,
            }))
            .user_agent(concat!("atcr/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        HoldClient { http, cfg }
    }

    /// The guarded HTTP client (discovery shares it).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn allow_private(&self) -> bool {
        self.cfg.allow_private
    }

    fn url(&self, hold: &HoldEndpoint, nsid: &str) -> Result<reqwest::Url> {
        net::check_url(&format!("{}/xrpc/{nsid}", hold.url), self.cfg.allow_private).map_err(|e| {
            HoldCallError::Discovery {
                hold: hold.did.clone(),
                detail: e.0,
            }
        })
    }

    /// The `getBlob` URL of a digest on a hold (what an OCI client is redirected to).
    pub fn blob_url(&self, hold: &HoldEndpoint, digest: &str) -> Result<String> {
        let mut u = self.url(hold, GET_BLOB)?;
        u.query_pairs_mut()
            .append_pair("did", &hold.did)
            .append_pair("cid", digest);
        Ok(u.to_string())
    }

    /// Sends, and turns error statuses into [`HoldCallError`]s (redirects are answers).
    async fn send(
        &self,
        hold: &HoldEndpoint,
        method: &str,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> Result<reqwest::Response> {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| HoldCallError::Unavailable {
            hold: hold.did.clone(),
            method: method.into(),
            detail: chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        let body = read_limited(resp, MAX_ERROR_BODY, method)
            .await
            .unwrap_or_default();
        #[derive(Deserialize)]
        struct ErrBody {
            error: Option<String>,
            message: Option<String>,
        }
        let parsed: Option<ErrBody> = serde_json::from_slice(&body).ok();
        let reason = status.canonical_reason().unwrap_or("Error").to_string();
        let (error, message) = match parsed {
            Some(ErrBody { error, message }) => (error.unwrap_or(reason), message),
            None => (reason, None),
        };
        let cut = |mut s: String, max: usize| {
            if s.len() > max {
                let mut n = max;
                while !s.is_char_boundary(n) {
                    n -= 1;
                }
                s.truncate(n);
            }
            s
        };
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(HoldCallError::Unavailable {
                hold: hold.did.clone(),
                method: method.into(),
                detail: format!(
                    "HTTP {} {}{}",
                    status.as_u16(),
                    cut(error, 128),
                    message
                        .map(|m| format!(": {}", cut(m, 512)))
                        .unwrap_or_default()
                ),
            });
        }
        Err(HoldCallError::Refused {
            hold: hold.did.clone(),
            method: method.into(),
            status: status.as_u16(),
            error: cut(error, 128),
            message: message.map(|m| cut(m, 512)),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        hold: &HoldEndpoint,
        method: &str,
        resp: reqwest::Response,
    ) -> Result<T> {
        let bad = |detail: String| HoldCallError::BadResponse {
            hold: hold.did.clone(),
            method: method.into(),
            detail,
        };
        let body = read_limited(resp, MAX_JSON_RESPONSE, method)
            .await
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))
    }

    /// Runs an idempotent call up to `attempts` times while the hold is unavailable.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut wait = self.cfg.backoff;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_unavailable() && attempt < self.cfg.attempts.max(1) => {
                    tracing::debug!(error = %e, attempt, "hold call failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 3;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        hold: &HoldEndpoint,
        nsid: &str,
        token: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let req = self
            .http
            .post(self.url(hold, nsid)?)
            .json(body)
            .timeout(self.cfg.call_timeout);
        let resp = self.send(hold, nsid, req, Some(token)).await?;
        Self::json(hold, nsid, resp).await
    }

    // ---- multipart uploads ---------------------------------------------------------------

    /// `initiateUpload {digest}` -> upload id. `digest` is the blob digest when known, else
    /// a temporary name (`uploads/temp-<uuid>`; the digest comes with `completeUpload`).
    pub async fn initiate_upload(
        &self,
        hold: &HoldEndpoint,
        token: &str,
        digest: &str,
    ) -> Result<String> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "uploadId")]
            upload_id: String,
        }
        let out: Out = self
            .post_json(
                hold,
                INITIATE_UPLOAD,
                token,
                &serde_json::json!({"digest": digest}),
            )
            .await?;
        if out.upload_id.is_empty() || out.upload_id.len() > MAX_UPLOAD_ID {
            return Err(HoldCallError::BadResponse {
                hold: hold.did.clone(),
                method: INITIATE_UPLOAD.into(),
                detail: "uploadId is empty or too long".into(),
            });
        }
        Ok(out.upload_id)
    }

    /// `uploadPart`: streams `body` as part `part` of `upload_id`; returns its etag.
    pub async fn upload_part(
        &self,
        hold: &HoldEndpoint,
        token: &str,
        upload_id: &str,
        part: u32,
        body: ChunkStream,
        len: Option<u64>,
    ) -> Result<String> {
        let mut req = self
            .http
            .put(self.url(hold, UPLOAD_PART)?)
            .header("X-Upload-Id", upload_id)
            .header("X-Part-Number", part.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(part_timeout(len))
            .body(reqwest::Body::wrap_stream(body));
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        let resp = self.send(hold, UPLOAD_PART, req, Some(token)).await?;
        #[derive(Deserialize)]
        struct Out {
            etag: String,
        }
        let out: Out = Self::json(hold, UPLOAD_PART, resp).await?;
        if out.etag.len() > 256 {
            return Err(HoldCallError::BadResponse {
                hold: hold.did.clone(),
                method: UPLOAD_PART.into(),
                detail: "etag longer than 256 characters".into(),
            });
        }
        Ok(out.etag)
    }

    /// `completeUpload {uploadId, digest, parts}`: the hold checks the digest and makes
    /// the blob visible.
    pub async fn complete_upload(
        &self,
        hold: &HoldEndpoint,
        token: &str,
        upload_id: &str,
        digest: &str,
        parts: &[UploadedPart],
    ) -> Result<()> {
        let _: serde_json::Value = self
            .post_json(
                hold,
                COMPLETE_UPLOAD,
                token,
                &serde_json::json!({"uploadId": upload_id, "digest": digest, "parts": parts}),
            )
            .await?;
        Ok(())
    }

    /// `abortUpload {uploadId}` (retried: aborting twice is harmless).
    pub async fn abort_upload(
        &self,
        hold: &HoldEndpoint,
        token: &str,
        upload_id: &str,
    ) -> Result<()> {
        let body = serde_json::json!({"uploadId": upload_id});
        self.retrying(|| async {
            let _: serde_json::Value = self.post_json(hold, ABORT_UPLOAD, token, &body).await?;
            Ok(())
        })
        .await
    }

    // ---- manifests, crew, quota ----------------------------------------------------------

    /// `notifyManifest` (never retried: a push is counted once).
    pub async fn notify_manifest(
        &self,
        hold: &HoldEndpoint,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.post_json(hold, NOTIFY_MANIFEST, token, body).await
    }

    /// `requestCrew {}` -> `{status: created|already_member, ...}`.
    pub async fn request_crew(
        &self,
        hold: &HoldEndpoint,
        token: &str,
    ) -> Result<serde_json::Value> {
        let body = serde_json::json!({});
        self.retrying(|| self.post_json(hold, REQUEST_CREW, token, &body))
            .await
    }

    /// `getQuota?userDid=`.
    pub async fn get_quota(&self, hold: &HoldEndpoint, token: &str, user: &str) -> Result<Quota> {
        self.retrying(|| async {
            let req = self
                .http
                .get(self.url(hold, GET_QUOTA)?)
                .query(&[("userDid", user)])
                .timeout(self.cfg.call_timeout);
            let resp = self.send(hold, GET_QUOTA, req, Some(token)).await?;
            Self::json(hold, GET_QUOTA, resp).await
        })
        .await
    }

    // ---- blobs ---------------------------------------------------------------------------

    fn redirect_target(resp: &reqwest::Response) -> Option<String> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)?
            .to_str()
            .ok()?;
        let u = resp.url().join(loc).ok()?;
        matches!(u.scheme(), "http" | "https").then(|| u.to_string())
    }

    fn blob_request(
        &self,
        hold: &HoldEndpoint,
        method: reqwest::Method,
        digest: &str,
    ) -> Result<reqwest::RequestBuilder> {
        Ok(self
            .http
            .request(method, self.url(hold, GET_BLOB)?)
            .query(&[("did", hold.did.as_str()), ("cid", digest)]))
    }

    /// HEAD getBlob: is the blob there, and does the hold redirect to storage?
    pub async fn blob_at(
        &self,
        hold: &HoldEndpoint,
        token: Option<&str>,
        digest: &str,
    ) -> Result<BlobAt> {
        self.retrying(|| async {
            let req = self
                .blob_request(hold, reqwest::Method::HEAD, digest)?
                .timeout(self.cfg.call_timeout);
            match self.send(hold, GET_BLOB, req, token).await {
                Ok(resp) if resp.status().is_redirection() => match Self::redirect_target(&resp) {
                    Some(u) => Ok(BlobAt::Redirect(u)),
                    None => Err(HoldCallError::BadResponse {
                        hold: hold.did.clone(),
                        method: GET_BLOB.into(),
                        detail: "a redirect without a usable Location".into(),
                    }),
                },
                Ok(resp) => Ok(BlobAt::Here {
                    size: resp
                        .headers()
                        .get(reqwest::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                }),
                // A HEAD carries no error body: 400 is the lookup error (BlobNotFound).
                Err(HoldCallError::Refused {
                    status: 400 | 404, ..
                }) => Ok(BlobAt::Missing),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// GET getBlob: a redirect to storage, or the bytes as a stream.
    pub async fn get_blob(
        &self,
        hold: &HoldEndpoint,
        token: Option<&str>,
        digest: &str,
    ) -> Result<BlobFetch> {
        let resp = self
            .retrying(|| async {
                // The whole-call timeout covers the answer's headers; the body then streams
                // under the client's read timeout.
                let req = self.blob_request(hold, reqwest::Method::GET, digest)?;
                let send = self.send(hold, GET_BLOB, req, token);
                match tokio::time::timeout(self.cfg.call_timeout, send).await {
                    Ok(r) => r,
                    Err(_) => Err(HoldCallError::Unavailable {
                        hold: hold.did.clone(),
                        method: GET_BLOB.into(),
                        detail: "no answer in time".into(),
                    }),
                }
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(HoldCallError::Refused { status: 404, .. }) => return Ok(BlobFetch::Missing),
            Err(e) if e.error_name() == Some("BlobNotFound") => return Ok(BlobFetch::Missing),
            Err(e) => return Err(e),
        };
        if resp.status().is_redirection() {
            return match Self::redirect_target(&resp) {
                Some(u) => Ok(BlobFetch::Redirect(u)),
                None => Err(HoldCallError::BadResponse {
                    hold: hold.did.clone(),
                    method: GET_BLOB.into(),
                    detail: "a redirect without a usable Location".into(),
                }),
            };
        }
        let len = resp.content_length();
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        let stream: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>,
        > = Box::pin(stream);
        Ok(BlobFetch::Stream { len, stream })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, error: &str, message: Option<&str>) -> HoldCallError {
        HoldCallError::Refused {
            hold: "did:web:hold.example.com".into(),
            method: INITIATE_UPLOAD.into(),
            status,
            error: error.into(),
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn error_kinds() {
        let e = refused(
            403,
            "Forbidden",
            Some("this needs the blob:write permission"),
        );
        assert!(e.is_forbidden() && !e.is_auth_required() && !e.is_unavailable());
        assert_eq!(e.reason(), "this needs the blob:write permission");
        assert!(e.to_string().contains("did:web:hold.example.com"));
        assert!(!refused(403, "RegistrationDisabled", None).is_forbidden());
        assert!(refused(401, "AuthRequired", None).is_auth_required());
        assert!(refused(400, "QuotaExceeded", None).is_quota_exceeded());
        assert_eq!(
            refused(400, "QuotaExceeded", None).reason(),
            "QuotaExceeded"
        );
        let down = HoldCallError::Unavailable {
            hold: "did:web:b".into(),
            method: GET_BLOB.into(),
            detail: "connection refused".into(),
        };
        assert!(down.is_unavailable());
        assert_eq!(down.hold(), "did:web:b");
    }

    #[test]
    fn blob_urls_encode_the_did() {
        let c = HoldClient::new(HoldClientConfig {
            allow_private: true,
            ..Default::default()
        });
        let hold = HoldEndpoint {
            did: "did:web:localhost%3A5001".into(),
            url: "http://localhost:5001".into(),
        };
        assert_eq!(
            c.blob_url(&hold, "sha256:ab").unwrap(),
            "http://localhost:5001/xrpc/com.atproto.sync.getBlob?did=did%3Aweb%3Alocalhost%253A5001&cid=sha256%3Aab"
        );
        let strict = HoldClient::new(HoldClientConfig::default());
        assert!(strict.blob_url(&hold, "sha256:ab").is_err());
        assert_eq!(part_timeout(Some(0)), Duration::from_secs(120));
        assert!(part_timeout(Some(5 << 30)) > Duration::from_secs(10_000));
    }

    /// Retries happen only while the hold is unavailable, with the configured attempts.
    #[tokio::test]
    async fn retries_only_unavailable() {
        let c = HoldClient::new(HoldClientConfig {
            allow_private: true,
            backoff: Duration::from_millis(1),
            ..Default::default()
        });
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: Result<()> = c
            .retrying(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(HoldCallError::Unavailable {
                    hold: "h".into(),
                    method: "m".into(),
                    detail: "down".into(),
                })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let r: Result<()> = c
            .retrying(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(refused(403, "Forbidden", None))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
