//! The `io.atcr.*` records as typed structs, field for field as the lexicons in
//! `assets/lexicons/io/atcr/` define them (camelCase names, optional fields skipped when
//! unset, `$type` written from the struct's serde name). Record writers build these instead
//! of `json!` objects; [`LexiconRecord::to_value`] gives the `serde_json::Value` the XRPC
//! client and the hold's repository take.
//!
//! Reading stays tolerant: unknown fields are ignored, `$type` is not required, and the
//! read-modify-write paths (a profile gaining `registryDomain`, a page's description, the
//! captain's settings, stats counters) keep editing the stored `Value` so that fields written
//! by other software or newer versions survive. Blob fields are kept as `Value`: blob
//! references are made by the PDS (`uploadBlob`) or the hold and embedded verbatim, and the
//! index's local records carry a blob without `ref`.
//!
//! The test at the bottom checks every struct against its lexicon JSON.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A record type with its lexicon's NSID and record key type.
pub trait LexiconRecord: Serialize + DeserializeOwned {
    /// The collection (and the `$type` the record is written with).
    const NSID: &'static str;
    /// The lexicon's record key type: `tid`, `any` or `literal:self`.
    const KEY: &'static str;

    /// The record as JSON, `$type` first. These structs have string keys and no floats, so
    /// serialization cannot fail; `Null` would only come from a broken `Serialize` impl.
    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads a stored record; `None` when a required field is missing or mistyped.
    fn from_value(v: &Value) -> Option<Self> {
        Self::deserialize(v).ok()
    }
}

macro_rules! lexicon_record {
    ($t:ty, $nsid:literal, $key:literal) => {
        impl LexiconRecord for $t {
            const NSID: &'static str = $nsid;
            const KEY: &'static str = $key;
        }
    };
}

/// String keys to string values (the lexicons' `annotations`).
pub type Annotations = BTreeMap<String, String>;

// ---- io.atcr.manifest -----------------------------------------------------------------------

/// `io.atcr.manifest`, rkey a TID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.manifest", rename_all = "camelCase")]
pub struct Manifest {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub schema_version: i64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_did: Option<String>,
    /// Deprecated (older records): readers use `holdDid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_blob: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BlobReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<BlobReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<ManifestReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<BlobReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
}
lexicon_record!(Manifest, "io.atcr.manifest", "tid");

/// `io.atcr.manifest#blobReference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobReference {
    pub media_type: String,
    pub size: i64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
}

/// `io.atcr.manifest#manifestReference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReference {
    pub media_type: String,
    pub size: i64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
}

/// `io.atcr.manifest#platform`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
}

// ---- io.atcr.tag, io.atcr.repo.page -----------------------------------------------------------

/// `io.atcr.tag`, rkey [`crate::registry::records::tag_rkey`] (readers match by fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.tag", rename_all = "camelCase")]
pub struct Tag {
    pub repository: String,
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Deprecated (older records): new records name the `manifest` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}
lexicon_record!(Tag, "io.atcr.tag", "any");

/// `io.atcr.repo.page`, rkey the repository name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.repo.page", rename_all = "camelCase")]
pub struct RepoPage {
    pub repository: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_edited: Option<bool>,
}
lexicon_record!(RepoPage, "io.atcr.repo.page", "any");

// ---- io.atcr.sailor.* -------------------------------------------------------------------------

/// `io.atcr.sailor.profile`, rkey `self`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "$type",
    rename = "io.atcr.sailor.profile",
    rename_all = "camelCase"
)]
pub struct SailorProfile {
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_hold: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_remove_untagged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_domain: Option<String>,
}
lexicon_record!(SailorProfile, "io.atcr.sailor.profile", "literal:self");

/// `io.atcr.sailor.star`, rkey a TID (the lexicon allows any key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "$type",
    rename = "io.atcr.sailor.star",
    rename_all = "camelCase"
)]
pub struct SailorStar {
    /// `at://<owner>/io.atcr.repo.page/<repository>`.
    pub subject: String,
    pub created_at: String,
}
lexicon_record!(SailorStar, "io.atcr.sailor.star", "any");

// ---- io.atcr.hold.* (the hold's own repository) ---------------------------------------------

/// `io.atcr.hold.captain`, rkey `self`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "$type",
    rename = "io.atcr.hold.captain",
    rename_all = "camelCase"
)]
pub struct HoldCaptain {
    pub owner: String,
    pub public: bool,
    pub allow_all_crew: bool,
    pub enable_bluesky_posts: bool,
    pub deployed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
}
lexicon_record!(HoldCaptain, "io.atcr.hold.captain", "literal:self");

/// `io.atcr.hold.crew`, rkey derived from the member's DID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.hold.crew", rename_all = "camelCase")]
pub struct HoldCrew {
    pub member: String,
    pub role: String,
    pub permissions: Vec<String>,
    pub added_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}
lexicon_record!(HoldCrew, "io.atcr.hold.crew", "any");

/// `io.atcr.hold.layer`, rkey a TID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.hold.layer", rename_all = "camelCase")]
pub struct HoldLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// AT-URI of the user's `io.atcr.manifest` record.
    pub manifest: String,
    pub user_did: String,
    pub created_at: String,
}
lexicon_record!(HoldLayer, "io.atcr.hold.layer", "tid");

/// `io.atcr.hold.stats`, rkey derived from (owner, repository).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.hold.stats", rename_all = "camelCase")]
pub struct HoldStats {
    pub owner_did: String,
    pub repository: String,
    pub pull_count: u64,
    pub push_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pull: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push: Option<String>,
    pub updated_at: String,
}
lexicon_record!(HoldStats, "io.atcr.hold.stats", "any");

/// `io.atcr.hold.scan`, rkey derived from the manifest digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type", rename = "io.atcr.hold.scan", rename_all = "camelCase")]
pub struct HoldScan {
    /// AT-URI of the scanned `io.atcr.manifest` record.
    pub manifest: String,
    pub repository: String,
    pub user_did: String,
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub total: u64,
    pub scanner_version: String,
    pub scanned_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_blob: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vuln_report_blob: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
lexicon_record!(HoldScan, "io.atcr.hold.scan", "any");

#[cfg(test)]
mod tests {
    //! Every struct against its lexicon: each property it writes exists in the lexicon with a
    //! compatible type (nested objects against their `#ref` definitions), every `required`
    //! property is written even with all optional fields unset, `$type` is the lexicon's id
    //! and [`LexiconRecord::KEY`] its record key type.

    use super::*;
    use serde_json::json;

    fn lexicon(nsid: &str) -> Value {
        let text = match nsid {
            "io.atcr.manifest" => include_str!("../../assets/lexicons/io/atcr/manifest.json"),
            "io.atcr.tag" => include_str!("../../assets/lexicons/io/atcr/tag.json"),
            "io.atcr.repo.page" => include_str!("../../assets/lexicons/io/atcr/repo/page.json"),
            "io.atcr.sailor.profile" => {
                include_str!("../../assets/lexicons/io/atcr/sailor/profile.json")
            }
            "io.atcr.sailor.star" => include_str!("../../assets/lexicons/io/atcr/sailor/star.json"),
            "io.atcr.hold.captain" => {
                include_str!("../../assets/lexicons/io/atcr/hold/captain.json")
            }
            "io.atcr.hold.crew" => include_str!("../../assets/lexicons/io/atcr/hold/crew.json"),
            "io.atcr.hold.layer" => include_str!("../../assets/lexicons/io/atcr/hold/layer.json"),
            "io.atcr.hold.stats" => include_str!("../../assets/lexicons/io/atcr/hold/stats.json"),
            "io.atcr.hold.scan" => include_str!("../../assets/lexicons/io/atcr/hold/scan.json"),
            other => panic!("no lexicon file listed for {other}"),
        };
        serde_json::from_str(text).unwrap()
    }

    /// Checks `value` against the object definition `def` of lexicon `lex`; returns every
    /// mismatch (empty: it conforms).
    fn check_object(lex: &Value, def: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut bad = Vec::new();
        let Some(obj) = value.as_object() else {
            return vec![format!("{at}: not an object")];
        };
        let props = def["properties"].as_object().expect("properties");
        for req in def["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                bad.push(format!("{at}.{req}: required by the lexicon, not written"));
            }
        }
        for (k, v) in obj {
            if k == "$type" {
                continue;
            }
            match props.get(k) {
                None => bad.push(format!("{at}.{k}: not in the lexicon")),
                Some(p) => bad.extend(check_field(lex, p, v, &format!("{at}.{k}"))),
            }
        }
        bad
    }

    fn check_field(lex: &Value, p: &Value, v: &Value, at: &str) -> Vec<String> {
        let ty = p["type"].as_str().unwrap();
        let ok = match ty {
            "string" => {
                let Some(s) = v.as_str() else {
                    return vec![format!("{at}: lexicon string, written {v}")];
                };
                if let Some(max) = p["maxLength"].as_u64() {
                    if s.len() as u64 > max {
                        return vec![format!("{at}: longer than maxLength {max}")];
                    }
                }
                let format_ok = match p["format"].as_str() {
                    Some("did") => s.starts_with("did:"),
                    Some("at-uri") => s.starts_with("at://"),
                    Some("datetime") => s.len() >= 20 && s.as_bytes()[10] == b'T',
                    Some("uri") => s.contains(':'),
                    _ => true,
                };
                if !format_ok {
                    return vec![format!("{at}: {s:?} is not a {}", p["format"])];
                }
                true
            }
            "integer" => match (v.as_i64(), v.as_u64()) {
                (Some(i), _) => p["minimum"].as_i64().is_none_or(|m| i >= m),
                (None, Some(_)) => true,
                _ => false,
            },
            "boolean" => v.is_boolean(),
            "unknown" => true,
            "blob" => v.is_object() && v["$type"] == "blob",
            "array" => {
                let Some(items) = v.as_array() else {
                    return vec![format!("{at}: lexicon array, written {v}")];
                };
                return items
                    .iter()
                    .enumerate()
                    .flat_map(|(i, x)| check_field(lex, &p["items"], x, &format!("{at}[{i}]")))
                    .collect();
            }
            "ref" => {
                let r = p["ref"].as_str().unwrap();
                let name = r.strip_prefix('#').expect("local refs only");
                let def = &lex["defs"][name];
                assert!(def.is_object(), "{at}: no definition {r}");
                return check_object(lex, def, v, at);
            }
            other => panic!("{at}: lexicon type {other} not handled by the test"),
        };
        if ok {
            Vec::new()
        } else {
            vec![format!("{at}: lexicon {ty}, written {v}")]
        }
    }

    /// Serializes `full` (every optional field set) and `minimal` (none set) and checks both.
    fn conforms<R: LexiconRecord>(full: &R, minimal: &R) -> Vec<String> {
        let lex = lexicon(R::NSID);
        let main = &lex["defs"]["main"];
        let mut bad = Vec::new();
        if lex["id"] != R::NSID {
            bad.push(format!("{}: lexicon id is {}", R::NSID, lex["id"]));
        }
        if main["key"] != R::KEY {
            bad.push(format!(
                "{}: key {} vs lexicon {}",
                R::NSID,
                R::KEY,
                main["key"]
            ));
        }
        for (which, r) in [("full", full), ("minimal", minimal)] {
            let v = r.to_value();
            if v["$type"] != R::NSID {
                bad.push(format!("{} ({which}): $type {}", R::NSID, v["$type"]));
            }
            bad.extend(check_object(
                &lex,
                &main["record"],
                &v,
                &format!("{}({which})", R::NSID),
            ));
            // It reads back as written.
            if R::from_value(&v).map(|back| back.to_value()) != Some(v.clone()) {
                bad.push(format!("{} ({which}): does not read back", R::NSID));
            }
        }
        // The full sample must cover every property, so that none goes unchecked.
        let full = full.to_value();
        for k in main["record"]["properties"].as_object().unwrap().keys() {
            if full.get(k).is_none() {
                bad.push(format!("{}: the full sample leaves out {k}", R::NSID));
            }
        }
        bad
    }

    const DT: &str = "2026-01-02T03:04:05.678Z";
    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

    fn blob(mime: &str) -> Value {
        json!({"$type": "blob", "ref": {"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"}, "mimeType": mime, "size": 3})
    }

    fn desc() -> BlobReference {
        BlobReference {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 42,
            digest: format!("sha256:{}", "a".repeat(64)),
            urls: Some(vec!["https://example.com/l".into()]),
            annotations: Some([("k".to_string(), "v".to_string())].into()),
        }
    }

    fn manifest() -> (Manifest, Manifest) {
        let full = Manifest {
            repository: "tools/builder".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            schema_version: 2,
            created_at: DT.into(),
            hold_did: Some("did:web:hold.example.com".into()),
            hold_endpoint: Some("https://hold.example.com".into()),
            manifest_blob: Some(blob("application/vnd.oci.image.index.v1+json")),
            config: Some(desc()),
            layers: Some(vec![desc()]),
            manifests: Some(vec![ManifestReference {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 7,
                digest: format!("sha256:{}", "c".repeat(64)),
                platform: Some(Platform {
                    architecture: "arm64".into(),
                    os: "linux".into(),
                    variant: Some("v8".into()),
                    os_version: Some("10.0".into()),
                    os_features: Some(vec!["win32k".into()]),
                }),
                annotations: Some(Annotations::new()),
            }]),
            subject: Some(desc()),
            annotations: Some([("a".to_string(), "b".to_string())].into()),
        };
        let minimal = Manifest {
            hold_did: None,
            hold_endpoint: None,
            manifest_blob: None,
            config: None,
            layers: None,
            manifests: Some(vec![ManifestReference {
                platform: Some(Platform {
                    variant: None,
                    os_version: None,
                    os_features: None,
                    ..full.manifests.clone().unwrap()[0].platform.clone().unwrap()
                }),
                annotations: None,
                ..full.manifests.clone().unwrap()[0].clone()
            }]),
            subject: Some(BlobReference {
                urls: None,
                annotations: None,
                ..desc()
            }),
            annotations: None,
            ..full.clone()
        };
        (full, minimal)
    }

    fn all_failures() -> Vec<String> {
        let mut bad = Vec::new();
        let (full, minimal) = manifest();
        bad.extend(conforms(&full, &minimal));
        let tag = Tag {
            repository: "app".into(),
            tag: "latest".into(),
            manifest: Some(format!("at://{DID}/io.atcr.manifest/3kabc")),
            manifest_digest: Some(format!("sha256:{}", "d".repeat(64))),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            updated_at: Some(DT.into()),
        };
        let tag_min = Tag {
            manifest: None,
            manifest_digest: None,
            media_type: None,
            updated_at: None,
            ..tag.clone()
        };
        bad.extend(conforms(&tag, &tag_min));
        let page = RepoPage {
            repository: "app".into(),
            created_at: DT.into(),
            updated_at: DT.into(),
            description: Some("# App".into()),
            avatar: Some(blob("image/png")),
            user_edited: Some(true),
        };
        let page_min = RepoPage {
            description: None,
            avatar: None,
            user_edited: None,
            ..page.clone()
        };
        bad.extend(conforms(&page, &page_min));
        let profile = SailorProfile {
            created_at: DT.into(),
            updated_at: Some(DT.into()),
            default_hold: Some("did:web:hold.example.com".into()),
            auto_remove_untagged: Some(false),
            oci_client: Some("podman".into()),
            registry_domain: Some("registry.example.com".into()),
        };
        let profile_min = SailorProfile {
            created_at: DT.into(),
            updated_at: None,
            default_hold: None,
            auto_remove_untagged: None,
            oci_client: None,
            registry_domain: None,
        };
        bad.extend(conforms(&profile, &profile_min));
        let star = SailorStar {
            subject: format!("at://{DID}/io.atcr.repo.page/app"),
            created_at: DT.into(),
        };
        bad.extend(conforms(&star, &star));
        let captain = HoldCaptain {
            owner: DID.into(),
            public: true,
            allow_all_crew: false,
            enable_bluesky_posts: false,
            deployed_at: DT.into(),
            region: Some("eu-central-1".into()),
            successor: Some("did:web:next.example.com".into()),
        };
        let captain_min = HoldCaptain {
            region: None,
            successor: None,
            ..captain.clone()
        };
        bad.extend(conforms(&captain, &captain_min));
        let crew = HoldCrew {
            member: DID.into(),
            role: "write".into(),
            permissions: vec!["blob:read".into(), "blob:write".into()],
            added_at: DT.into(),
            tier: Some("default".into()),
        };
        let crew_min = HoldCrew {
            tier: None,
            ..crew.clone()
        };
        bad.extend(conforms(&crew, &crew_min));
        let layer = HoldLayer {
            digest: format!("sha256:{}", "e".repeat(64)),
            size: 1 << 40,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            manifest: format!("at://{DID}/io.atcr.manifest/3kabc"),
            user_did: DID.into(),
            created_at: DT.into(),
        };
        bad.extend(conforms(&layer, &layer));
        let stats = HoldStats {
            owner_did: DID.into(),
            repository: "app".into(),
            pull_count: 3,
            push_count: 1,
            last_pull: Some(DT.into()),
            last_push: Some(DT.into()),
            updated_at: DT.into(),
        };
        let stats_min = HoldStats {
            last_pull: None,
            last_push: None,
            ..stats.clone()
        };
        bad.extend(conforms(&stats, &stats_min));
        let scan = HoldScan {
            manifest: format!("at://{DID}/io.atcr.manifest/3kabc"),
            repository: "app".into(),
            user_did: DID.into(),
            critical: 1,
            high: 2,
            medium: 3,
            low: 4,
            total: 10,
            scanner_version: "atcr-scan 0.1".into(),
            scanned_at: DT.into(),
            sbom_blob: Some(blob("application/spdx+json")),
            vuln_report_blob: Some(blob("application/vnd.atcr.vulnerabilities+json")),
            status: Some("ok".into()),
            reason: Some("none".into()),
        };
        let scan_min = HoldScan {
            sbom_blob: None,
            vuln_report_blob: None,
            status: None,
            reason: None,
            ..scan.clone()
        };
        bad.extend(conforms(&scan, &scan_min));
        bad
    }

    #[test]
    fn every_record_struct_matches_its_lexicon() {
        let bad = all_failures();
        assert!(
            bad.is_empty(),
            "records not matching their lexicons:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn the_lexicon_check_catches_mismatches() {
        let lex = lexicon("io.atcr.tag");
        let def = &lex["defs"]["main"]["record"];
        let good = json!({"$type": "io.atcr.tag", "repository": "app", "tag": "latest"});
        assert!(check_object(&lex, def, &good, "tag").is_empty());
        // A renamed field (snake_case), a missing required one, a wrong type, a wrong format.
        let renamed = json!({"repository": "app", "tag": "latest", "updated_at": DT});
        assert!(!check_object(&lex, def, &renamed, "tag").is_empty());
        let missing = json!({"repository": "app"});
        assert!(!check_object(&lex, def, &missing, "tag").is_empty());
        let mistyped = json!({"repository": "app", "tag": 7});
        assert!(!check_object(&lex, def, &mistyped, "tag").is_empty());
        let bad_uri = json!({"repository": "app", "tag": "x", "manifest": "sha256:00"});
        assert!(!check_object(&lex, def, &bad_uri, "tag").is_empty());
        // Nested definitions are followed.
        let lex = lexicon("io.atcr.manifest");
        let def = &lex["defs"]["main"]["record"];
        let (full, _) = manifest();
        let mut v = full.to_value();
        v["manifests"][0]["platform"]["os_version"] = json!("1");
        assert!(!check_object(&lex, def, &v, "manifest").is_empty());
        // A negative count where the lexicon sets a minimum of 0.
        let lex = lexicon("io.atcr.hold.stats");
        let def = &lex["defs"]["main"]["record"];
        let mut v = json!({"ownerDid": DID, "repository": "app", "pullCount": 0, "pushCount": 0,
            "updatedAt": DT});
        assert!(check_object(&lex, def, &v, "stats").is_empty());
        v["pullCount"] = json!(-1);
        assert!(!check_object(&lex, def, &v, "stats").is_empty());
    }

    #[test]
    fn reading_is_tolerant() {
        // Unknown fields, no `$type`, an older tag with only `manifestDigest`.
        let v = json!({"repository": "app", "tag": "v1", "manifestDigest": "sha256:00",
            "somethingNew": {"x": 1}});
        let t = Tag::from_value(&v).unwrap();
        assert_eq!(t.manifest_digest.as_deref(), Some("sha256:00"));
        assert!(t.manifest.is_none());
        // A required field missing: not this record type.
        assert!(HoldCrew::from_value(&json!({"member": DID})).is_none());
    }
}
