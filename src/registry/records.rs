//! Manifests and tags as ATProto records (design.md section 4; atcr-spec 1.1), and the small
//! trait through which the registry writes and reads them. With `auth.mode = "none"` no
//! implementation is installed and the registry is purely local.
//!
//! Record shapes (atcr.io lexicons):
//! - `io.atcr.manifest`, rkey = digest hex: `repository`, `digest`, `mediaType`,
//!   `schemaVersion`, `manifestBlob` (the exact bytes), `config`, `layers` or `manifests`
//!   (with `platform`), `subject`, `annotations`, `holdDid`, `createdAt`.
//! - `io.atcr.tag`: `repository`, `tag`, `manifest` (AT-URI), `updatedAt`. The rkey is
//!   [`tag_rkey`]; readers match tags by their fields, not by rkey.
//! - `io.atcr.sailor.profile`, rkey `self`: `defaultHold`, `createdAt`.

use serde_json::{json, Map, Value};

use crate::oci::types::{Digest, Name, Reference};

pub const MANIFEST_NSID: &str = "io.atcr.manifest";
pub const TAG_NSID: &str = "io.atcr.tag";
pub const PROFILE_NSID: &str = "io.atcr.sailor.profile";

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The user's PDS is unreachable or refused the write.
    #[error("{0}")]
    Unavailable(String),
    /// No PDS session on this host for the owner (log in again).
    #[error("{0}")]
    NoSession(String),
    /// The PDS returned data that does not check out (digest, shape).
    #[error("{0}")]
    Invalid(String),
}

/// A manifest fetched from the owner's PDS, digest-checked.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// The record's `holdDid` (or the did:web of a legacy `holdEndpoint`): where the
    /// manifest's blobs are.
    pub hold_did: Option<String>,
}

/// Where the registry's manifests and tags live besides the local copy.
#[async_trait::async_trait]
pub trait ManifestRecords: Send + Sync {
    /// Upload the bytes, write the manifest record (naming `hold_did`, the hold that keeps
    /// its blobs), then the tag record (if `tag`).
    async fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
        hold_did: &str,
    ) -> Result<(), RecordsError>;
    async fn delete_tag(&self, name: &Name, tag: &str) -> Result<(), RecordsError>;
    /// Delete the manifest record and the given tag records that point at it.
    async fn delete_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        tags: &[String],
    ) -> Result<(), RecordsError>;
    /// Look a manifest up in the owner's PDS (pull miss). `Ok(None)`: not there.
    async fn fetch(
        &self,
        name: &Name,
        reference: &Reference,
        limit: usize,
    ) -> Result<Option<Fetched>, RecordsError>;
}

/// Record key of the tag record for (repository, tag): the repository with `/` written as
/// `~`, a `:`, then the tag. Repository names (OCI grammar) and tags contain neither `~`
/// nor `:`, so the encoding is injective, deterministic (re-tagging overwrites) and within
/// the rkey alphabet `[A-Za-z0-9._~:-]` (at most 255 + 1 + 128 characters).
pub fn tag_rkey(repository: &str, tag: &str) -> String {
    format!("{}:{tag}", repository.replace('/', "~"))
}

/// `at://<did>/<collection>/<rkey>`.
pub fn at_uri(did: &str, collection: &str, rkey: &str) -> String {
    format!("at://{did}/{collection}/{rkey}")
}

/// Parses `at://<did>/<collection>/<rkey>`.
pub fn parse_at_uri(uri: &str) -> Option<(&str, &str, &str)> {
    let rest = uri.strip_prefix("at://")?;
    let mut it = rest.splitn(3, '/');
    let (a, c, r) = (it.next()?, it.next()?, it.next()?);
    (!a.is_empty() && !c.is_empty() && !r.is_empty() && !r.contains('/')).then_some((a, c, r))
}

fn copy_str(from: &Map<String, Value>, key: &str, to: &mut Map<String, Value>, as_key: &str) {
    if let Some(v) = from.get(key).filter(|v| v.is_string()) {
        to.insert(as_key.into(), v.clone());
    }
}

/// Only string->string annotation maps are kept (the lexicon's map of strings).
fn annotations(from: &Map<String, Value>) -> Option<Value> {
    let a = from.get("annotations")?.as_object()?;
    let m: Map<String, Value> = a
        .iter()
        .filter(|(_, v)| v.is_string())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!m.is_empty()).then_some(Value::Object(m))
}

/// `#blobReference`: mediaType, size, digest, urls?, annotations?
fn blob_reference(d: &Value) -> Option<Value> {
    let d = d.as_object()?;
    let mut out = Map::new();
    copy_str(d, "mediaType", &mut out, "mediaType");
    out.insert("size".into(), d.get("size")?.clone());
    copy_str(d, "digest", &mut out, "digest");
    if let Some(urls) = d.get("urls").filter(|u| u.is_array()) {
        out.insert("urls".into(), urls.clone());
    }
    if let Some(a) = annotations(d) {
        out.insert("annotations".into(), a);
    }
    Some(Value::Object(out))
}

/// `#manifestReference`: mediaType, size, digest, platform?, annotations?
fn manifest_reference(d: &Value) -> Option<Value> {
    let obj = d.as_object()?;
    let mut out = blob_reference(d)?.as_object()?.clone();
    out.remove("urls");
    if let Some(p) = obj.get("platform").and_then(Value::as_object) {
        let mut plat = Map::new();
        copy_str(p, "architecture", &mut plat, "architecture");
        copy_str(p, "os", &mut plat, "os");
        copy_str(p, "variant", &mut plat, "variant");
        copy_str(p, "os.version", &mut plat, "osVersion");
        if let Some(f) = p.get("os.features").filter(|f| f.is_array()) {
            plat.insert("osFeatures".into(), f.clone());
        }
        out.insert("platform".into(), Value::Object(plat));
    }
    Some(Value::Object(out))
}

/// The `io.atcr.manifest` record for validated manifest bytes.
pub fn manifest_record(
    repository: &str,
    digest: &Digest,
    media_type: &str,
    bytes: &[u8],
    manifest_blob: &Value,
    hold_did: &str,
    created_at: &str,
) -> Value {
    let raw: Map<String, Value> = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let mut rec = Map::new();
    rec.insert("$type".into(), json!(MANIFEST_NSID));
    rec.insert("repository".into(), json!(repository));
    rec.insert("digest".into(), json!(digest.to_string()));
    rec.insert("mediaType".into(), json!(media_type));
    rec.insert(
        "schemaVersion".into(),
        json!(raw
            .get("schemaVersion")
            .and_then(Value::as_i64)
            .unwrap_or(2)),
    );
    rec.insert("manifestBlob".into(), manifest_blob.clone());
    if let Some(c) = raw.get("config").and_then(blob_reference) {
        rec.insert("config".into(), c);
    }
    if let Some(layers) = raw.get("layers").and_then(Value::as_array) {
        rec.insert(
            "layers".into(),
            Value::Array(layers.iter().filter_map(blob_reference).collect()),
        );
    }
    if let Some(ms) = raw.get("manifests").and_then(Value::as_array) {
        rec.insert(
            "manifests".into(),
            Value::Array(ms.iter().filter_map(manifest_reference).collect()),
        );
    }
    if let Some(s) = raw.get("subject").and_then(blob_reference) {
        rec.insert("subject".into(), s);
    }
    if let Some(a) = annotations(&raw) {
        rec.insert("annotations".into(), a);
    }
    rec.insert("holdDid".into(), json!(hold_did));
    rec.insert("createdAt".into(), json!(created_at));
    Value::Object(rec)
}

pub fn tag_record(repository: &str, tag: &str, manifest_uri: &str, updated_at: &str) -> Value {
    json!({
        "$type": TAG_NSID,
        "repository": repository,
        "tag": tag,
        "manifest": manifest_uri,
        "updatedAt": updated_at,
    })
}

pub fn profile_record(default_hold: &str, created_at: &str) -> Value {
    json!({
        "$type": PROFILE_NSID,
        "defaultHold": default_hold,
        "createdAt": created_at,
    })
}

/// `did:web:<host>` for a URL or host (a port is written `%3A<port>`).
pub fn did_web_for(url_or_host: &str) -> String {
    let host = url_or_host
        .split("://")
        .nth(1)
        .unwrap_or(url_or_host)
        .trim_end_matches('/');
    format!("did:web:{}", host.replace(':', "%3A"))
}

/// Now as an ATProto datetime with milliseconds (`2026-01-02T03:04:05.678Z`).
pub fn now_datetime() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let base = crate::auth::rfc3339(d.as_secs());
    format!("{}.{:03}Z", base.trim_end_matches('Z'), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rkeys_are_injective_and_valid() {
        assert_eq!(tag_rkey("app", "latest"), "app:latest");
        assert_eq!(tag_rkey("tools/builder", "v1.0"), "tools~builder:v1.0");
        assert_ne!(tag_rkey("a/b", "c"), tag_rkey("a", "b_c"));
        let k = tag_rkey(&"a".repeat(255), &"t".repeat(128));
        assert!(k.len() <= 512);
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:-".contains(&b)));
    }

    #[test]
    fn at_uris() {
        assert_eq!(
            parse_at_uri("at://did:plc:abc/io.atcr.manifest/ff00"),
            Some(("did:plc:abc", "io.atcr.manifest", "ff00"))
        );
        assert_eq!(parse_at_uri("at://did:plc:abc/io.atcr.manifest"), None);
        assert_eq!(
            did_web_for("http://localhost:5000/"),
            "did:web:localhost%3A5000"
        );
        assert_eq!(
            did_web_for("registry.example.com"),
            "did:web:registry.example.com"
        );
    }

    #[test]
    fn manifest_record_fields() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,
            "digest":"sha256:aa","platform":{"architecture":"arm64","os":"linux","variant":"v8",
            "os.version":"1","os.features":["x"]},"annotations":{"k":"v","n":1}}],
          "annotations":{"org.opencontainers.image.created":"2026"}}"#;
        let d = Digest::sha256_of(index);
        let blob = json!({"$type":"blob","ref":{"$link":"bafk"},"mimeType":"x","size":1});
        let r = manifest_record(
            "app",
            &d,
            "application/vnd.oci.image.index.v1+json",
            index,
            &blob,
            "did:web:localhost%3A5000",
            "2026-01-01T00:00:00.000Z",
        );
        assert_eq!(r["$type"], MANIFEST_NSID);
        assert_eq!(r["digest"], d.to_string());
        assert_eq!(r["schemaVersion"], 2);
        let m = &r["manifests"][0];
        assert_eq!(m["platform"]["osVersion"], "1");
        assert_eq!(m["platform"]["osFeatures"][0], "x");
        assert_eq!(m["annotations"], json!({"k":"v"}));
        assert!(r.get("layers").is_none());
        assert_eq!(r["manifestBlob"], blob);
        assert_eq!(r["holdDid"], "did:web:localhost%3A5000");
        let image =
            br#"{"schemaVersion":2,"config":{"mediaType":"c","size":2,"digest":"sha256:cc"},
          "layers":[{"mediaType":"l","size":3,"digest":"sha256:dd","urls":["https://x"]}],
          "subject":{"mediaType":"m","size":4,"digest":"sha256:ee"}}"#;
        let r = manifest_record("a/b", &d, "m", image, &blob, "h", "t");
        assert_eq!(
            r["config"],
            json!({"mediaType":"c","size":2,"digest":"sha256:cc"})
        );
        assert_eq!(r["layers"][0]["urls"][0], "https://x");
        assert_eq!(r["subject"]["digest"], "sha256:ee");
        assert!(now_datetime().ends_with('Z'));
        assert_eq!(now_datetime().len(), 24);
    }
}
