//! Profile and repository avatars through this host. The CSP allows images only from here
//! (a profile or a README must not make readers' browsers call other servers), so
//! `/avatar/<did>` (and `/avatar/<did>?repo=<repository>` for a repository page's avatar)
//! reads the avatar blob from the user's PDS once, checks that it is the blob the record
//! names (CID) and a raster image (no SVG: it can carry script), and serves it from a small
//! memory cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::atproto::repo::cid::{parse_cid, verify_block};
use crate::atproto::xrpc::XrpcClient;

/// `app.bsky.actor.profile` caps avatars at 1,000,000 bytes.
pub const MAX_AVATAR_BYTES: usize = 1_000_000;
/// Memory for cached images; past it, the oldest go.
const CACHE_BYTES: usize = 32 << 20;
/// How long an image is served before the PDS is asked again (the CID is in the index, so a
/// new avatar has a new CID and is fetched at once).
const IMAGE_TTL: Duration = Duration::from_secs(3600);
/// How long a failure (PDS down, not an image) is believed, so page views do not hammer.
const FAILURE_TTL: Duration = Duration::from_secs(300);

/// What an avatar may be: its largest size and its image types (by their bytes).
struct Kind {
    max_bytes: usize,
    types: &'static [&'static str],
}

const PROFILE_AVATAR: Kind = Kind {
    max_bytes: MAX_AVATAR_BYTES,
    types: &["image/png", "image/jpeg", "image/gif", "image/webp"],
};

/// `io.atcr.repo.page` avatars: the lexicon's `accept` and `maxSize`.
const PAGE_AVATAR: Kind = Kind {
    max_bytes: super::page_form::MAX_PAGE_AVATAR_BYTES,
    types: &["image/png", "image/jpeg", "image/webp"],
};

#[derive(Clone)]
pub struct Avatar {
    pub bytes: Bytes,
    pub content_type: &'static str,
    /// The blob's CID: a strong validator for `ETag`.
    pub cid: String,
}

struct Entry {
    cid: String,
    image: Option<Avatar>,
    at: Instant,
}

#[derive(Default)]
pub struct Avatars {
    cache: Mutex<HashMap<String, Entry>>,
}

/// The media type of a PNG, JPEG, GIF or WebP image, from its first bytes.
pub fn sniff_image(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// `(pds, cid)` from the `com.atproto.sync.getBlob` URL the index stores for a user.
pub fn parse_avatar_url(url: &str) -> Option<(String, String)> {
    let (pds, query) = url.split_once("/xrpc/com.atproto.sync.getBlob?")?;
    let cid = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "cid")
        .map(|(_, v)| v.into_owned())?;
    Some((pds.to_string(), cid))
}

impl Avatars {
    /// The avatar `cid` of `did` from `pds`: cached, else fetched and checked. `None` when it
    /// cannot be had (logged at debug; the page shows no image).
    pub async fn get(&self, xrpc: &XrpcClient, pds: &str, did: &str, cid: &str) -> Option<Avatar> {
        self.get_image(xrpc, pds, did, cid, did, &PROFILE_AVATAR)
            .await
    }

    /// A repository page's avatar (`io.atcr.repo.page` avatar: PNG, JPEG or WebP, at most
    /// 3,000,000 bytes), cached under `did/repository`.
    pub async fn get_repo(
        &self,
        xrpc: &XrpcClient,
        pds: &str,
        did: &str,
        repository: &str,
        cid: &str,
    ) -> Option<Avatar> {
        let key = format!("{did}/{repository}");
        self.get_image(xrpc, pds, did, cid, &key, &PAGE_AVATAR)
            .await
    }

    async fn get_image(
        &self,
        xrpc: &XrpcClient,
        pds: &str,
        did: &str,
        cid: &str,
        key: &str,
        kind: &Kind,
    ) -> Option<Avatar> {
        if let Some(hit) = self.cached(key, cid) {
            return hit;
        }
        let image = match Self::fetch(xrpc, pds, did, cid, kind).await {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(%did, %cid, error = %e, "avatar not served");
                None
            }
        };
        self.store(key, cid, image.clone());
        image
    }

    fn cached(&self, did: &str, cid: &str) -> Option<Option<Avatar>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let e = cache.get(did).filter(|e| e.cid == cid)?;
        let ttl = if e.image.is_some() {
            IMAGE_TTL
        } else {
            FAILURE_TTL
        };
        (e.at.elapsed() < ttl).then(|| e.image.clone())
    }

    fn store(&self, did: &str, cid: &str, image: Option<Avatar>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            did.to_string(),
            Entry {
                cid: cid.to_string(),
                image,
                at: Instant::now(),
            },
        );
        let size = |c: &HashMap<String, Entry>| -> usize {
            c.values()
                .map(|e| e.image.as_ref().map_or(0, |a| a.bytes.len()) + 64)
                .sum()
        };
        while size(&cache) > CACHE_BYTES {
            let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            cache.remove(&oldest);
        }
    }

    async fn fetch(
        xrpc: &XrpcClient,
        pds: &str,
        did: &str,
        cid: &str,
        kind: &Kind,
    ) -> Result<Avatar, String> {
        let parsed = parse_cid(cid).map_err(|e| format!("bad CID: {e}"))?;
        let bytes = xrpc
            .get_blob(pds, did, cid, kind.max_bytes)
            .await
            .map_err(|e| e.to_string())?;
        verify_block(&parsed, &bytes).map_err(|e| format!("blob does not match its CID: {e}"))?;
        let content_type = sniff_image(&bytes)
            .filter(|t| kind.types.contains(t))
            .ok_or("not an image type this avatar may have")?;
        Ok(Avatar {
            bytes,
            content_type,
            cid: cid.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_raster_images_pass() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"<svg onload=alert(1)>"), None);
        assert_eq!(sniff_image(b"<html>"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn avatar_urls_from_the_index() {
        let url =
            "http://localhost:2583/xrpc/com.atproto.sync.getBlob?did=did:plc:abc&cid=bafkreiabc";
        assert_eq!(
            parse_avatar_url(url),
            Some(("http://localhost:2583".into(), "bafkreiabc".into()))
        );
        assert_eq!(parse_avatar_url("https://cdn.example/avatar.png"), None);
    }

    #[test]
    fn cache_is_per_cid_and_bounded() {
        let a = Avatars::default();
        let img = |n: usize| Avatar {
            bytes: Bytes::from(vec![0u8; n]),
            content_type: "image/png",
            cid: "c".into(),
        };
        a.store("did:plc:a", "c1", Some(img(10)));
        assert!(a.cached("did:plc:a", "c1").unwrap().is_some());
        assert!(
            a.cached("did:plc:a", "c2").is_none(),
            "a new avatar is fetched"
        );
        a.store("did:plc:b", "c1", None);
        assert!(
            a.cached("did:plc:b", "c1").unwrap().is_none(),
            "failure remembered"
        );
        for i in 0..40 {
            a.store(&format!("did:plc:{i}"), "c", Some(img(1 << 20)));
        }
        let total: usize = a
            .cache
            .lock()
            .unwrap()
            .values()
            .map(|e| e.image.as_ref().map_or(0, |i| i.bytes.len()))
            .sum();
        assert!(total <= CACHE_BYTES);
        assert!(a.cached("did:plc:39", "c").is_some(), "newest kept");
    }
}
