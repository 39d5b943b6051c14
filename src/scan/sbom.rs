//! The SBOM: an SPDX 2.3 JSON document (`application/spdx+json`) per scanned manifest.
//!
//! - The document `DESCRIBES` one `CONTAINER` package (the image: repository, digest,
//!   `pkg:oci` URL), which `CONTAINS` an `OPERATING-SYSTEM` package (from os-release) and
//!   every package found.
//! - Each package: name, `versionInfo`, a `purl` external reference ([`super::purl`]),
//!   `licenseDeclared` as an SPDX expression (unknown names as `LicenseRef-`s with their
//!   text in `hasExtractedLicensingInfos`), `sourceInfo` naming the files it was read from,
//!   `primaryPackagePurpose` (`LIBRARY`, `APPLICATION` for Go/Rust main modules is not
//!   distinguished: `LIBRARY`), `filesAnalyzed: false`.
//! - A language package an OS package installed is `CONTAINS`-related to that OS package
//!   (file ownership), which [`read`] turns back into [`OwnedPackage::owner`].
//!
//! [`read`] parses documents this module wrote (re-matching after a database update, the
//! UI's package list, tag comparison); SBOMs from elsewhere (referrers) are shown, not read.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::inventory::{Distro, Package};
use super::walk::{Inventory, OwnedPackage};

pub const MEDIA_TYPE: &str = "application/spdx+json";
/// Largest SBOM [`read`] parses.
pub const MAX_SBOM_BYTES: usize = 64 << 20;

/// What the document is about.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub repository: String,
    pub digest: String,
    pub user_did: String,
    /// Registry host for the `pkg:oci` URL and the namespace URI.
    pub host: String,
}

fn spdx_id(prefix: &str, label: &str, unique: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    let h = hex::encode(&Sha256::digest(unique.as_bytes())[..8]);
    format!("SPDXRef-{prefix}-{clean}-{h}")
}

/// SPDX wants `YYYY-MM-DDThh:mm:ssZ`.
fn spdx_time(rfc3339: &str) -> String {
    match rfc3339.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => rfc3339.to_string(),
    }
}

/// Builds the document.
pub fn build(image: &ImageRef, inv: &Inventory, created: &str, tool_version: &str) -> Value {
    let image_id = "SPDXRef-Image".to_string();
    let hex = image
        .digest
        .split_once(':')
        .map(|(_, h)| h)
        .unwrap_or(&image.digest);
    let last = image
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&image.repository);
    let oci_purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC),
        image.digest.replace(':', "%3A"),
        percent_encoding::utf8_percent_encode(
            &format!("{}/{}/{}", image.host, image.user_did, image.repository),
            percent_encoding::NON_ALPHANUMERIC
        ),
    );
    let mut packages = vec![json!({
        "name": image.repository,
        "SPDXID": image_id,
        "versionInfo": image.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": oci_purl}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut extracted: BTreeMap<String, String> = BTreeMap::new();
    if let Some(d) = &inv.distro {
        let os_id = spdx_id(
            "OperatingSystem",
            &d.id,
            &format!("{}-{}", d.id, d.version_id),
        );
        let mut os = json!({
            "name": d.id,
            "SPDXID": os_id,
            "versionInfo": d.version_id,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "OPERATING-SYSTEM",
        });
        if !d.pretty_name.is_empty() {
            os["description"] = json!(d.pretty_name);
        }
        if !d.version_codename.is_empty() {
            os["comment"] = json!(format!("codename {}", d.version_codename));
        }
        packages.push(os);
        relationships.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": os_id}));
    }
    // OS package name -> SPDX id, for ownership relationships.
    let mut os_ids: HashMap<String, String> = HashMap::new();
    let mut ids: Vec<String> = Vec::with_capacity(inv.packages.len());
    for op in &inv.packages {
        let p = &op.package;
        let purl = super::purl::of(p, inv.distro.as_ref());
        let id = spdx_id(
            "Package",
            &format!("{}-{}", p.kind.as_str(), p.full_name()),
            &purl,
        );
        let (license, refs) = super::license::expression(&p.licenses);
        for (r, text) in refs {
            extracted.entry(r).or_insert(text);
        }
        let mut v = json!({
            "name": p.full_name(),
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license,
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
        });
        if !p.locations.is_empty() {
            v["sourceInfo"] = json!(format!(
                "acquired package info from: {}",
                p.locations.join(", ")
            ));
        }
        if p.kind.is_os() {
            os_ids.insert(p.name.clone(), id.clone());
        }
        packages.push(v);
        relationships.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        ids.push(id);
    }
    for (op, id) in inv.packages.iter().zip(&ids) {
        if let Some(owner) = op.owner.as_ref().and_then(|o| os_ids.get(o)) {
            relationships.push(json!({
                "spdxElementId": owner,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
                "comment": "installed by this OS package (file ownership)",
            }));
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", image.repository, image.digest),
        "documentNamespace": format!(
            "https://{}/spdx/{}/{}/{}-{}",
            image.host, image.user_did, image.repository, hex, uuid::Uuid::new_v4()
        ),
        "creationInfo": {
            "created": spdx_time(created),
            "creators": [format!("Tool: atcr-{tool_version}")],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(
            extracted
                .into_iter()
                .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
                .collect(),
        );
    }
    doc
}

/// A package as [`read`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub package: OwnedPackage,
    pub purl: String,
    /// The licence for people: the declared expression with `LicenseRef`s replaced by
    /// their original names.
    pub license: String,
}

/// A document read back.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub distro: Option<Distro>,
    pub packages: Vec<Entry>,
    pub created: String,
}

/// Reads a document [`build`] wrote.
pub fn read(bytes: &[u8]) -> Result<View, String> {
    if bytes.len() > MAX_SBOM_BYTES {
        return Err(format!("the SBOM is over {MAX_SBOM_BYTES} bytes"));
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("SBOM: {e}"))?;
    if doc["spdxVersion"]
        .as_str()
        .is_none_or(|v| !v.starts_with("SPDX-2"))
    {
        return Err("not an SPDX 2 document".into());
    }
    let refs: HashMap<&str, &str> = doc["hasExtractedLicensingInfos"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e["licenseId"].as_str()?,
                        e["name"].as_str().or(e["extractedText"].as_str())?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut view = View {
        created: doc["creationInfo"]["created"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        ..View::default()
    };
    let empty = Vec::new();
    let pkgs = doc["packages"].as_array().unwrap_or(&empty);
    // id -> name of OS packages, and owner links.
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for r in doc["relationships"].as_array().unwrap_or(&empty) {
        if r["relationshipType"] == "CONTAINS" && r["spdxElementId"] != "SPDXRef-Image" {
            if let (Some(a), Some(b)) = (
                r["spdxElementId"].as_str(),
                r["relatedSpdxElement"].as_str(),
            ) {
                owners.insert(b, a);
            }
        }
    }
    for p in pkgs {
        match p["primaryPackagePurpose"].as_str() {
            Some("OPERATING-SYSTEM") => {
                view.distro = Some(Distro {
                    id: p["name"].as_str().unwrap_or("").to_string(),
                    version_id: p["versionInfo"].as_str().unwrap_or("").to_string(),
                    pretty_name: p["description"].as_str().unwrap_or("").to_string(),
                    version_codename: p["comment"]
                        .as_str()
                        .and_then(|c| c.strip_prefix("codename "))
                        .unwrap_or("")
                        .to_string(),
                });
                continue;
            }
            Some("CONTAINER") => continue,
            _ => {}
        }
        let Some(purl) = p["externalRefs"].as_array().and_then(|refs| {
            refs.iter()
                .find(|r| r["referenceType"] == "purl")
                .and_then(|r| r["referenceLocator"].as_str())
        }) else {
            continue;
        };
        let Some((mut package, _)) = super::purl::parse(purl) else {
            continue;
        };
        let declared = p["licenseDeclared"].as_str().unwrap_or("NOASSERTION");
        let license = if declared == "NOASSERTION" || declared == "NONE" {
            String::new()
        } else {
            declared
                .split(' ')
                .map(|w| {
                    let (open, body) = split_open(w);
                    let (body, close) = split_close(body);
                    format!("{open}{}{close}", refs.get(body).copied().unwrap_or(body))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(src) = p["sourceInfo"]
            .as_str()
            .and_then(|s| s.strip_prefix("acquired package info from: "))
        {
            package.locations = src.split(", ").map(str::to_string).collect();
        }
        if !license.is_empty() {
            package.licenses = vec![license.clone()];
        }
        let id = p["SPDXID"].as_str().unwrap_or("");
        if package.kind.is_os() {
            names.insert(id, package.name.clone());
        }
        view.packages.push(Entry {
            package: OwnedPackage {
                package,
                owner: owners.get(id).map(|o| o.to_string()),
            },
            purl: purl.to_string(),
            license,
        });
    }
    // Owner ids to names.
    for e in &mut view.packages {
        if let Some(o) = e.package.owner.take() {
            e.package.owner = names.get(o.as_str()).cloned();
        }
    }
    Ok(view)
}

fn split_open(s: &str) -> (&str, &str) {
    let body = s.trim_start_matches('(');
    (&s[..s.len() - body.len()], body)
}

fn split_close(s: &str) -> (&str, &str) {
    let body = s.trim_end_matches(')');
    (body, &s[body.len()..])
}

/// The packages of a [`View`] as an inventory for matching.
pub fn to_inventory(view: &View) -> Inventory {
    Inventory {
        distro: view.distro.clone(),
        packages: view.packages.iter().map(|e| e.package.clone()).collect(),
        ..Inventory::default()
    }
}

/// The packages of `a` and `b` keyed for comparison: (type, name) -> versions.
pub fn package_versions(view: &View) -> BTreeMap<(String, String), Vec<String>> {
    let mut m: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for e in &view.packages {
        let p: &Package = &e.package.package;
        m.entry((p.kind.as_str().to_string(), p.full_name()))
            .or_default()
            .push(p.version.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::inventory::PackageType;

    #[test]
    fn build_and_read_back() {
        let mut six = Package::new(PackageType::Pypi, "six", "1.16.0");
        six.locations = vec!["usr/lib/python3/dist-packages/six-1.16.0.egg-info".into()];
        let mut deb = Package::new(PackageType::Deb, "python3-six", "1.16.0-4");
        deb.licenses = vec!["Expat".into(), "Odd License".into()];
        deb.arch = Some("all".into());
        let inv = Inventory {
            distro: Some(Distro {
                id: "debian".into(),
                version_id: "12".into(),
                pretty_name: "Debian 12".into(),
                version_codename: "bookworm".into(),
            }),
            packages: vec![
                OwnedPackage {
                    package: deb.clone(),
                    owner: None,
                },
                OwnedPackage {
                    package: six.clone(),
                    owner: Some("python3-six".into()),
                },
            ],
            ..Inventory::default()
        };
        let img = ImageRef {
            repository: "team/app".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            user_did: "did:plc:x".into(),
            host: "reg.example".into(),
        };
        let doc = build(&img, &inv, "2024-05-01T10:00:00.123Z", "0.1.0");
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "2024-05-01T10:00:00Z");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 4);
        let deb_pkg = &doc["packages"][2];
        assert_eq!(deb_pkg["licenseDeclared"], "MIT AND LicenseRef-Odd-License");
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-Odd-License"
        );
        for p in doc["packages"].as_array().unwrap() {
            let id = p["SPDXID"].as_str().unwrap();
            assert!(
                id.starts_with("SPDXRef-")
                    && id[8..]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                "{id}"
            );
        }
        let view = read(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(view.distro.as_ref().unwrap().version_codename, "bookworm");
        assert_eq!(view.packages.len(), 2);
        assert_eq!(view.packages[0].license, "MIT AND Odd License");
        assert_eq!(
            view.packages[0].package.package.arch.as_deref(),
            Some("all")
        );
        assert_eq!(
            view.packages[1].package.owner.as_deref(),
            Some("python3-six")
        );
        assert_eq!(view.packages[1].package.package.locations, six.locations);
        assert!(read(b"{}").is_err());
    }
}
