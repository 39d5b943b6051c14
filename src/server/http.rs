//! Response building blocks shared by all handlers: the body type, JSON and error responses,
//! streaming request bodies and query strings.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::blob::ChunkStream;
use crate::oci::OciError;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn stream_body(stream: ChunkStream) -> Body {
    http_body_util::StreamBody::new(stream.map_ok(hyper::body::Frame::data)).boxed_unsync()
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .body(full(bytes))
        .expect("static headers are valid")
}

pub fn oci_error(e: &OciError) -> Response<Body> {
    let body = e.body();
    Response::builder()
        .status(e.status())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("static headers are valid")
}

/// The request body as a stream of byte chunks, for blob uploads.
pub fn body_stream(body: Incoming) -> ChunkStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// Collect a small body (manifests), refusing more than `limit` bytes.
pub async fn collect_limited(body: Incoming, limit: usize) -> Result<Vec<u8>, CollectError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(CollectError::TooLarge)
        }
        Err(e) => Err(CollectError::Io(e.to_string())),
    }
}

#[derive(Debug)]
pub enum CollectError {
    TooLarge,
    Io(String),
}

/// Decoded query parameters (first value wins).
pub fn query(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn header_str<'a>(
    req: &'a http::request::Parts,
    name: &http::header::HeaderName,
) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn header_u64(req: &http::request::Parts, name: &http::header::HeaderName) -> Option<u64> {
    header_str(req, name).and_then(|s| s.trim().parse().ok())
}

/// A header value from text we built ourselves (names, digests): always valid, but never panic.
pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
