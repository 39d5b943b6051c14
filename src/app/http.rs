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

/// Read and discard up to `max` more bytes of a body we refuse, so a client still sending it
/// reads our error instead of a reset connection. Bigger bodies are cut off.
pub async fn drain(body: Incoming, max: u64) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
        seen += chunk.len() as u64;
        if seen > max {
            break;
        }
    }
}

/// Collect a small body (manifests), refusing more than `limit` bytes. An oversized body is
/// still read (up to 4x the limit) so the client gets to see the 413.
pub async fn collect_limited(body: Incoming, limit: usize) -> Result<Vec<u8>, CollectError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| CollectError::Io(e.to_string()))?;
        if out.len() + chunk.len() > limit {
            let mut seen = (out.len() + chunk.len()) as u64;
            while let Some(Ok(c)) = futures_util::StreamExt::next(&mut stream).await {
                seen += c.len() as u64;
                if seen > 4 * limit as u64 {
                    break;
                }
            }
            return Err(CollectError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[derive(Debug)]
pub enum CollectError {
    TooLarge,
    Io(String),
}

/// Decoded query parameters (first value wins). Plain percent-decoding: `+` is a literal plus
/// (media types such as `application/vnd.oci.image.config.v1+json` carry one), not a space.
pub fn query(uri: &http::Uri) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect()
        })
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

/// The client's address for rate limits and logs. A request from a loopback peer is taken to
/// come through the reverse proxy on this host (the appliance's Caddy), so the rightmost
/// `X-Forwarded-For` entry names the client; anyone else's header is ignored (it could say
/// anything).
pub fn client_ip(peer: std::net::SocketAddr, headers: &http::HeaderMap) -> std::net::IpAddr {
    if !peer.ip().is_loopback() {
        return peer.ip();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
        .next_back()
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_loopback() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.9"),
        );
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 5));
        let remote = std::net::SocketAddr::from(([192, 0, 2, 7], 5));
        assert_eq!(client_ip(local, &h).to_string(), "10.0.0.9");
        assert_eq!(client_ip(remote, &h).to_string(), "192.0.2.7");
        assert_eq!(
            client_ip(local, &http::HeaderMap::new()).to_string(),
            "127.0.0.1"
        );
    }
}
