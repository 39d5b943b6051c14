//! Manifest and index parsing and validation (OCI image manifest/index v1, Docker v2 schema 2
//! and manifest lists, artifacts with `artifactType` and `subject`).
//!
//! The registry stores and serves the exact bytes it was given; this module only extracts
//! what the registry must check (referenced blobs, the subject, the artifact type) and
//! refuses documents that are not manifests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Default cap on a manifest body; the spec suggests registries accept at least 4 MiB.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Media types are short; this bounds what we keep in the store per descriptor.
const MAX_MEDIA_TYPE_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest mediaType {field:?} does not match the Content-Type {content_type:?}")]
    MediaTypeMismatch { field: String, content_type: String },
    #[error("image manifest has no config descriptor")]
    MissingConfig,
    #[error("invalid descriptor: {0}")]
    BadDescriptor(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestKind {
    Image,
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "os.version"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "os.features")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// Layers the registry is not expected to hold (Docker foreign layers, OCI
    /// non-distributable layers, or anything with external `urls`).
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            || self.media_type.contains(".foreign.")
            || self.media_type.contains(".nondistributable.")
    }
}

/// The wire shape: one struct for all four document types, fields optional where they differ.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    // Schema 1 documents carry these; their presence identifies a refused legacy format.
    fs_layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    artifact_type: Option<String>,
    platform: Option<Platform>,
}

impl RawDescriptor {
    fn validate(self, what: &str) -> Result<Descriptor, ManifestError> {
        let bad = |m: String| ManifestError::BadDescriptor(format!("{what}: {m}"));
        let media_type = self
            .media_type
            .ok_or_else(|| bad("mediaType is missing".into()))?;
        check_media_type(&media_type).map_err(bad)?;
        let digest: Digest = self
            .digest
            .ok_or_else(|| bad("digest is missing".into()))?
            .parse()
            .map_err(|e| bad(format!("{e}")))?;
        let size = self.size.ok_or_else(|| bad("size is missing".into()))?;
        let size = u64::try_from(size).map_err(|_| bad("size is negative".into()))?;
        if let Some(at) = &self.artifact_type {
            check_media_type(at).map_err(bad)?;
        }
        Ok(Descriptor {
            media_type,
            digest,
            size,
            urls: self.urls,
            annotations: self.annotations,
            artifact_type: self.artifact_type,
            platform: self.platform,
        })
    }
}

/// RFC 6838 shape: `type/subtype`, restricted characters, bounded length.
fn check_media_type(mt: &str) -> Result<(), String> {
    let ok_chars = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match mt.split_once('/') {
        Some((t, s)) if mt.len() <= MAX_MEDIA_TYPE_LEN && ok_chars(t) && ok_chars(s) => Ok(()),
        _ => Err(format!(
            "media type {:?} is malformed",
            mt.chars().take(64).collect::<String>()
        )),
    }
}

/// What the registry needs to know about a manifest it is about to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl ParsedManifest {
    /// The artifact type a referrers response reports for this manifest: its own
    /// `artifactType`, else (image manifests only) the config media type.
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| match self.kind {
            ManifestKind::Image => self.config.as_ref().map(|c| c.media_type.clone()),
            ManifestKind::Index => None,
        })
    }

    /// Blobs that must already be in the repository (config and distributable layers).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.is_foreign()))
    }
}

/// Strip parameters (`; charset=...`) and whitespace from a Content-Type.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Parse and validate a manifest body pushed with `content_type` (may be empty).
pub fn parse_manifest(content_type: &str, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let content_type = essence(content_type);
    if content_type == DOCKER_SCHEMA1 || content_type == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestError::UnsupportedMediaType(
            content_type.to_string(),
        ));
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.fs_layers.is_some() {
        return Err(ManifestError::UnsupportedMediaType(
            DOCKER_SCHEMA1.to_string(),
        ));
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let header_kind = kind_of(content_type);
    let media_type = match (&raw.media_type, header_kind) {
        (Some(field), Some(_)) if field != content_type => {
            return Err(ManifestError::MediaTypeMismatch {
                field: field.clone(),
                content_type: content_type.to_string(),
            })
        }
        (_, Some(_)) => content_type.to_string(),
        (Some(field), None) => field.clone(),
        // No usable type anywhere: infer from the shape, as the OCI image spec allows.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => {
            return Err(ManifestError::UnsupportedMediaType(
                content_type.to_string(),
            ))
        }
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    if let Some(at) = &raw.artifact_type {
        check_media_type(at).map_err(ManifestError::BadDescriptor)?;
    }
    let subject = raw.subject.map(|s| s.validate("subject")).transpose()?;
    let mut parsed = ParsedManifest {
        media_type,
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
    };
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::BadDescriptor(
                    "an image manifest cannot list manifests".into(),
                ));
            }
            parsed.config = Some(
                raw.config
                    .ok_or(ManifestError::MissingConfig)?
                    .validate("config")?,
            );
            parsed.layers = raw
                .layers
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.validate(&format!("layers[{i}]")))
                .collect::<Result<_, _>>()?;
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::BadDescriptor(
                    "an index cannot have config or layers".into(),
                ));
            }
            parsed.manifests = raw
                .manifests
                .ok_or_else(|| ManifestError::BadDescriptor("index has no manifests list".into()))?
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.validate(&format!("manifests[{i}]")))
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{CFG}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{CFG}","size":2}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse_manifest(OCI_MANIFEST, image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/vnd.oci.empty.v1+json")
        );
        let with_subject = image(&format!(
            r#","artifactType":"application/vnd.example+type","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{CFG}","size":10}}"#
        ));
        let m = parse_manifest(
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            with_subject.as_bytes(),
        )
        .unwrap();
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), CFG);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/vnd.example+type")
        );
    }

    #[test]
    fn index_and_inference() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{CFG}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let m = parse_manifest("", idx.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(
            m.manifests[0].platform.as_ref().unwrap().architecture,
            "amd64"
        );
    }

    #[test]
    fn rejections() {
        assert!(matches!(
            parse_manifest(OCI_MANIFEST, b"{"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            parse_manifest(OCI_INDEX, image("").as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let v1 = image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert_eq!(
            parse_manifest(OCI_MANIFEST, v1.as_bytes()),
            Err(ManifestError::SchemaVersion)
        );
        let neg = image("").replace("\"size\":2}]", "\"size\":-1}]");
        assert!(matches!(
            parse_manifest(OCI_MANIFEST, neg.as_bytes()),
            Err(ManifestError::BadDescriptor(_))
        ));
        let bad_digest = image("").replace(CFG, "sha256:abc");
        assert!(parse_manifest(OCI_MANIFEST, bad_digest.as_bytes()).is_err());
        let no_cfg = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert_eq!(
            parse_manifest(OCI_MANIFEST, no_cfg.as_bytes()),
            Err(ManifestError::MissingConfig)
        );
        assert!(parse_manifest(DOCKER_SCHEMA1_SIGNED, b"{}").is_err());
    }
}
