//! Manifests and tags as ATProto records (design.md section 4; atcr-spec 1.1), and the small
//! trait through which the registry writes and reads them. With `auth.mode = "none"` no
//! implementation is installed and the registry is purely local.
//!
//! Record shapes (atcr.io lexicons, `assets/lexicons/`):
//! - `io.atcr.manifest`, rkey = a TID, one record per (repository, digest): `repository`,
//!   `digest`, `mediaType`, `schemaVersion`, `manifestBlob` (the exact bytes), `config`,
//!   `layers` or `manifests` (with `platform`), `subject`, `annotations`, `holdDid`,
//!   `createdAt`. A re-push into the same repository reuses the record (its key is
//!   remembered locally). Readers find manifest records by `repository` + `digest`; records
//!   written before TID keys (rkey = digest hex) are still read.
//! - `io.atcr.tag`: `repository`, `tag`, `manifest` (the manifest record's AT-URI),
//!   `mediaType` (of the tagged manifest), `updatedAt`. The rkey is [`tag_rkey`]; readers
//!   match tags by their fields, not by rkey.
//! - `io.atcr.repo.page`, rkey = the repository name: created on a repository's first push
//!   ([`page_record`], description from the `org.opencontainers.image.description`
//!   annotation), edited by its owner in the UI (`userEdited`). Nested repository names
//!   (`tools/builder`) cannot be record keys, so they have no page ([`page_rkey`]).
//! - `io.atcr.sailor.profile`, rkey `self`: `defaultHold`, `registryDomain`, `ociClient`,
//!   `createdAt`.
//!
//! sha512: a `sha512:` digest string is 135 characters and the lexicons cap every `digest`
//! at 128, so a manifest whose own digest or any descriptor's digest is sha512 cannot be
//! described by a valid record. In ATProto mode such a push is refused with a clear error
//! ([`check_describable`]); without a PDS (`auth.mode = "none"`) sha512 works as usual.

use serde_json::{Map, Value};

use crate::atproto::records::{
    Annotations, BlobReference, LexiconRecord, Manifest, ManifestReference, Platform, RepoPage,
    SailorProfile, Tag,
};
use crate::oci::types::{Digest, Name, Reference};

pub const MANIFEST_NSID: &str = Manifest::NSID;
pub const TAG_NSID: &str = Tag::NSID;
pub const PROFILE_NSID: &str = SailorProfile::NSID;
pub const PAGE_NSID: &str = RepoPage::NSID;
pub const STAR_NSID: &str = crate::atproto::records::SailorStar::NSID;
/// The annotation a repository page's first description comes from.
pub const DESCRIPTION_ANNOTATION: &str = "org.opencontainers.image.description";
/// Longest `digest` the lexicons allow.
pub const MAX_RECORD_DIGEST: usize = 128;
/// Longest `mediaType` of a manifest record and its descriptors.
pub const MAX_RECORD_MEDIA_TYPE: usize = 128;
/// Longest repo page description (markdown) the lexicon allows.
pub const MAX_PAGE_DESCRIPTION: usize = 100_000;

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

/// Where a manifest PUT was recorded in the owner's PDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The owner's DID.
    pub did: String,
    /// Record key of the `io.atcr.manifest` record (a TID, or an older record's key).
    pub rkey: String,
}

impl Written {
    /// `at://<did>/io.atcr.manifest/<rkey>`.
    pub fn uri(&self) -> String {
        at_uri(&self.did, MANIFEST_NSID, &self.rkey)
    }
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
    /// its blobs; empty: this registry's default; reusing the record of an earlier push of
    /// the same digest into the same repository), then the tag record (if `tag`), and
    /// create the repository's page on its first push.
    async fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
        hold_did: &str,
    ) -> Result<Written, RecordsError>;
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

/// Record key of a repository's `io.atcr.repo.page`: the repository name itself (the
/// lexicon: the key must equal `repository`). A nested name (`tools/builder`) is no valid
/// record key (`/`), so such a repository has no page: `None`.
pub fn page_rkey(repository: &str) -> Option<String> {
    crate::atproto::repo::syntax::validate_record_key(repository)
        .is_ok()
        .then(|| repository.to_string())
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

/// `scheme:rest` with an RFC 3986 scheme: what the lexicon's `uri` format accepts.
fn looks_like_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
        && scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Only string->string annotation maps are kept (the lexicon's map of strings).
fn annotations(from: &Map<String, Value>) -> Option<Annotations> {
    let a = from.get("annotations")?.as_object()?;
    let m: Annotations = a
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// `#blobReference`: mediaType, size, digest, urls?, annotations? A descriptor without an
/// integer size or a digest is left out (validated manifests have both).
fn blob_reference(d: &Value) -> Option<BlobReference> {
    let d = d.as_object()?;
    // The lexicon's `uri` format: a scheme, a colon, something after it.
    let uris: Vec<String> = d
        .get("urls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|u| looks_like_uri(u))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(BlobReference {
        media_type: d
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        size: d.get("size")?.as_i64()?,
        digest: d.get("digest")?.as_str()?.to_string(),
        urls: (!uris.is_empty()).then_some(uris),
        annotations: annotations(d),
    })
}

/// `#manifestReference`: mediaType, size, digest, platform?, annotations?
fn manifest_reference(d: &Value) -> Option<ManifestReference> {
    let obj = d.as_object()?;
    let b = blob_reference(d)?;
    // The record is a summary (the exact bytes are the manifestBlob): platform fields
    // beyond the lexicon's lengths are left out rather than making the record invalid.
    let platform = obj
        .get("platform")
        .and_then(Value::as_object)
        .and_then(|p| {
            let short = |k: &str, max: usize| {
                p.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| s.len() <= max)
                    .map(str::to_string)
            };
            let features: Vec<String> = p
                .get("os.features")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .filter(|s| s.len() <= 64)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(Platform {
                architecture: short("architecture", 32)?,
                os: short("os", 32)?,
                variant: short("variant", 32),
                os_version: short("os.version", 64),
                os_features: (!features.is_empty()).then_some(features),
            })
        });
    Some(ManifestReference {
        media_type: b.media_type,
        size: b.size,
        digest: b.digest,
        platform,
        annotations: b.annotations,
    })
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
    Manifest {
        repository: repository.to_string(),
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        schema_version: raw
            .get("schemaVersion")
            .and_then(Value::as_i64)
            .unwrap_or(2),
        created_at: created_at.to_string(),
        hold_did: (!hold_did.is_empty()).then(|| hold_did.to_string()),
        hold_endpoint: None,
        manifest_blob: Some(manifest_blob.clone()),
        config: raw.get("config").and_then(blob_reference),
        layers: raw
            .get("layers")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(blob_reference).collect()),
        manifests: raw
            .get("manifests")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(manifest_reference).collect()),
        subject: raw.get("subject").and_then(blob_reference),
        annotations: annotations(&raw),
    }
    .to_value()
}

pub fn tag_record(
    repository: &str,
    tag: &str,
    manifest_uri: &str,
    media_type: &str,
    updated_at: &str,
) -> Value {
    Tag {
        repository: repository.to_string(),
        tag: tag.to_string(),
        manifest: Some(manifest_uri.to_string()),
        manifest_digest: None,
        media_type: (!media_type.is_empty() && media_type.len() <= 255)
            .then(|| media_type.to_string()),
        updated_at: Some(updated_at.to_string()),
    }
    .to_value()
}

/// The sailor profile created at a user's first login here. `oci_client` is one of the
/// lexicon's known values ([`oci_client_of`]) or absent.
pub fn profile_record(
    default_hold: &str,
    registry_domain: &str,
    oci_client: Option<&str>,
    created_at: &str,
) -> Value {
    SailorProfile {
        created_at: created_at.to_string(),
        updated_at: None,
        default_hold: Some(default_hold.to_string()),
        auto_remove_untagged: None,
        oci_client: oci_client.map(str::to_string),
        registry_domain: (!registry_domain.is_empty() && registry_domain.len() <= 255)
            .then(|| registry_domain.to_string()),
    }
    .to_value()
}

/// The lexicon's `ociClient` value for a login's `User-Agent`, when it names a known
/// client. Docker sends `docker/<version> ...`; podman, buildah and skopeo share
/// containers/image (`containers/<version> (github.com/containers/image)`) and only podman
/// and buildah name themselves (`libpod/...`, `Buildah/...`), so the shared agent is taken
/// as podman, the usual CLI behind it; nerdctl (`nerdctl/...`, or containerd's resolver
/// `containerd/...`) and crane (`crane/...` or `go-containerregistry/...`). Browsers and
/// anything else: `None` (the profile keeps what it had).
pub fn oci_client_of(user_agent: &str) -> Option<&'static str> {
    let ua = user_agent.trim().to_ascii_lowercase();
    let starts = |p: &str| ua.starts_with(p);
    if starts("docker/") || starts("docker-credential-") {
        Some("docker")
    } else if starts("buildah/") {
        Some("buildah")
    } else if starts("libpod/") || starts("podman/") || starts("containers/") {
        Some("podman")
    } else if starts("nerdctl/") || starts("containerd/") {
        Some("nerdctl")
    } else if starts("crane/") || starts("go-containerregistry/") {
        Some("crane")
    } else {
        None
    }
}

/// The `io.atcr.repo.page` record a repository gets on its first push.
pub fn page_record(repository: &str, description: Option<&str>, now: &str) -> Value {
    RepoPage {
        repository: repository.to_string(),
        created_at: now.to_string(),
        updated_at: now.to_string(),
        description: description
            .filter(|d| !d.trim().is_empty())
            .map(|d| truncate_utf8(d, MAX_PAGE_DESCRIPTION).to_string()),
        avatar: None,
        user_edited: None,
    }
    .to_value()
}

/// The `org.opencontainers.image.description` annotation of manifest bytes, if any.
pub fn description_annotation(manifest_bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(manifest_bytes).ok()?;
    v.get("annotations")?
        .get(DESCRIPTION_ANNOTATION)?
        .as_str()
        .filter(|d| !d.trim().is_empty())
        .map(str::to_string)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a manifest can be written as a valid `io.atcr.manifest` record: its digest and
/// every descriptor's digest must fit the lexicon's 128 characters (sha512 digests do not),
/// and so must the media types. `Err` names what does not fit.
pub fn check_describable(
    digest: &Digest,
    parsed: &crate::oci::types::manifest::ParsedManifest,
) -> Result<(), String> {
    let too_long = |d: &Digest| d.to_string().len() > MAX_RECORD_DIGEST;
    if too_long(digest) {
        return Err(format!(
            "the manifest digest {digest} is longer than the {MAX_RECORD_DIGEST} characters an io.atcr.manifest record allows: sha512 manifests cannot be stored in your PDS; push by tag or with a sha256 digest"
        ));
    }
    if parsed.media_type.len() > MAX_RECORD_MEDIA_TYPE {
        return Err(format!(
            "the manifest media type is longer than the {MAX_RECORD_MEDIA_TYPE} characters an io.atcr.manifest record allows"
        ));
    }
    let descriptors = parsed
        .config
        .iter()
        .chain(&parsed.layers)
        .chain(&parsed.manifests)
        .chain(&parsed.subject);
    for d in descriptors {
        if too_long(&d.digest) {
            return Err(format!(
                "the manifest references {}, whose digest is longer than the {MAX_RECORD_DIGEST} characters an io.atcr.manifest record allows: content addressed with sha512 cannot be described in your PDS; use sha256",
                d.digest
            ));
        }
        if d.media_type.len() > MAX_RECORD_MEDIA_TYPE {
            return Err(format!(
                "the media type of {} is longer than the {MAX_RECORD_MEDIA_TYPE} characters an io.atcr.manifest record allows",
                d.digest
            ));
        }
    }
    Ok(())
}

/// The digest an old-style manifest record key stands for (rkey = digest hex, written
/// before manifest records had TID keys).
pub fn legacy_digest_of_rkey(rkey: &str) -> Option<String> {
    let hex_ok = rkey
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match rkey.len() {
        64 if hex_ok => Some(format!("sha256:{rkey}")),
        128 if hex_ok => Some(format!("sha512:{rkey}")),
        _ => None,
    }
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
    use serde_json::json;

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
    fn clients_from_user_agents() {
        // As sent to /auth/token by the real clients (podman 4, skopeo 1.9, buildah 1.28).
        assert_eq!(
            oci_client_of("containers/5.23.1 (github.com/containers/image)"),
            Some("podman")
        );
        assert_eq!(oci_client_of("Buildah/1.28.2"), Some("buildah"));
        assert_eq!(oci_client_of("skopeo/1.9.3"), None);
        assert_eq!(
            oci_client_of("docker/27.5.1 go/go1.22.2 git-commit/4c9b3b0 kernel/6.1 os/linux arch/amd64 UpstreamClient(Docker-Client/27.5.1 \\(linux\\))"),
            Some("docker")
        );
        assert_eq!(oci_client_of("nerdctl/2.0.0"), Some("nerdctl"));
        assert_eq!(oci_client_of("go-containerregistry/v0.20.2"), Some("crane"));
        assert_eq!(
            oci_client_of("Mozilla/5.0 (X11; Linux x86_64) Chrome/120"),
            None
        );
    }

    #[test]
    fn pages_descriptions_and_describable_manifests() {
        assert_eq!(page_rkey("app").as_deref(), Some("app"));
        assert_eq!(page_rkey("my-app_2.0").as_deref(), Some("my-app_2.0"));
        assert_eq!(page_rkey("tools/builder"), None);
        let p = page_record("app", Some("# Hi"), "2026-01-01T00:00:00.000Z");
        assert_eq!(p["description"], "# Hi");
        assert!(p.get("userEdited").is_none());
        let p = page_record("app", Some("  "), "2026-01-01T00:00:00.000Z");
        assert!(p.get("description").is_none());
        let long = "é".repeat(60_000);
        let p = page_record("app", Some(&long), "t");
        assert!(p["description"].as_str().unwrap().len() <= MAX_PAGE_DESCRIPTION);
        assert_eq!(
            description_annotation(
                br#"{"annotations":{"org.opencontainers.image.description":"tiny"}}"#
            ),
            Some("tiny".into())
        );
        assert_eq!(description_annotation(b"{}"), None);
        assert_eq!(
            legacy_digest_of_rkey(&"ab".repeat(32)),
            Some(format!("sha256:{}", "ab".repeat(32)))
        );
        assert_eq!(legacy_digest_of_rkey("3lbaaaaaaaaa2"), None);

        let m = |d: &str| {
            crate::oci::types::manifest::parse_manifest(
                "application/vnd.oci.image.manifest.v1+json",
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
                    "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"{d}"}},
                    "layers":[]}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let sha256 = Digest::sha256_of(b"x");
        let sha512: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert!(check_describable(&sha256, &m(&sha256.to_string())).is_ok());
        let e = check_describable(&sha512, &m(&sha256.to_string())).unwrap_err();
        assert!(e.contains("sha512"), "{e}");
        let e = check_describable(&sha256, &m(&sha512.to_string())).unwrap_err();
        assert!(e.contains("sha512"), "{e}");
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
