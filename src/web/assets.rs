//! Static assets compiled into the binary (`assets/static/`): served at `/static/<name>`
//! with a strong ETag (sha256 of the bytes, computed once) and a year-long immutable cache;
//! pages link them with `?v=<etag prefix>` so a new binary busts the cache.

use std::sync::OnceLock;

use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::app::http::{empty, full, Body};

struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/static/app.css"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/static/app.js"),
    },
    Asset {
        name: "htmx.min.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/static/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        bytes: include_bytes!("../../assets/static/favicon.svg"),
    },
    // Also answered at /favicon.ico, where browsers look when a page names no icon.
    Asset {
        name: "favicon.ico",
        mime: "image/vnd.microsoft.icon",
        bytes: include_bytes!("../../assets/static/favicon.ico"),
    },
    Asset {
        name: "htmx-LICENSE.txt",
        mime: "text/plain; charset=utf-8",
        bytes: include_bytes!("../../assets/static/htmx-LICENSE.txt"),
    },
];

fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.bytes)[..12])))
            .collect()
    })
}

/// A cache-busting version for links to `name` (the start of its ETag).
pub fn version(name: &str) -> &'static str {
    ASSETS
        .iter()
        .position(|a| a.name == name)
        .map(|i| &etags()[i][1..9])
        .unwrap_or("0")
}

/// `GET /static/<name>`; `if_none_match` is the request's header.
pub fn serve(name: &str, if_none_match: Option<&str>, head: bool) -> Option<Response<Body>> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    let asset = &ASSETS[i];
    Some(conditional(
        &etags()[i],
        "public, max-age=31536000, immutable",
        if_none_match,
        asset.mime,
        asset.bytes,
        head,
    ))
}

/// A cacheable body with a strong `ETag`: 304 when `if_none_match` names it (or is `*`),
/// else 200 (no body for HEAD). Static assets and avatars.
pub fn conditional(
    etag: &str,
    cache_control: &str,
    if_none_match: Option<&str>,
    content_type: &str,
    body: impl Into<bytes::Bytes>,
    head: bool,
) -> Response<Body> {
    let builder = Response::builder()
        .header(http::header::ETAG, etag)
        .header(http::header::CACHE_CONTROL, cache_control)
        .header("X-Content-Type-Options", "nosniff");
    let matches = if_none_match
        .map(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        .unwrap_or(false);
    let resp = if matches {
        builder.status(StatusCode::NOT_MODIFIED).body(empty())
    } else {
        let body = body.into();
        builder
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(if head { empty() } else { full(body) })
    };
    resp.expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_and_conditional_get() {
        let r = serve("app.css", None, false).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[http::header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        assert!(r.headers()[http::header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let again = serve("app.css", Some(&etag), false).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = serve("app.css", Some("\"nope\""), false).unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        assert!(serve("../Cargo.toml", None, false).is_none());
        assert_eq!(version("app.css"), &etag[1..9]);
    }

    #[test]
    fn vendored_htmx_is_the_pinned_release() {
        // The checksum in assets/README.md: a changed file must be a deliberate upgrade.
        let a = ASSETS.iter().find(|a| a.name == "htmx.min.js").unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(a.bytes)),
            "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
        );
    }
}
