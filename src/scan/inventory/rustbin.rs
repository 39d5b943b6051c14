//! Rust binaries built with `cargo auditable`: a zlib-compressed JSON dependency list
//! (`{"packages":[{"name","version","source","kind","dependencies","root"}]}`) in a
//! `.dep-v0` section. The binary scanner ([`super::binary`]) finds the zlib stream by its
//! decompressed prefix, so no section table (at the end of the file) is needed.

use serde::Deserialize;

use super::{clip, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

/// What the decompressed JSON starts with.
pub const JSON_PREFIX: &[u8] = b"{\"packages\":[";
/// Largest decompressed dependency list accepted.
pub const MAX_JSON: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct VersionInfo {
    packages: Vec<Dep>,
}

#[derive(Deserialize)]
struct Dep {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    root: bool,
}

/// The crates compiled into the binary: runtime dependencies and the root package (build
/// dependencies only ran at build time). Sources other than crates.io (`local`, `git`,
/// `registry`) are kept but cannot be matched against the crates.io advisories.
pub fn parse_json(json: &[u8]) -> Option<Vec<Package>> {
    let info: VersionInfo = serde_json::from_slice(json).ok()?;
    let mut out = Vec::new();
    for d in info.packages.into_iter().take(MAX_PACKAGES_PER_FILE) {
        if d.kind == "build" && !d.root {
            continue;
        }
        if d.name.is_empty() || d.version.is_empty() {
            continue;
        }
        let mut p = Package::new(
            PackageType::Cargo,
            &clip(&d.name, MAX_FIELD),
            &clip(&d.version, MAX_FIELD),
        );
        if d.source != "crates.io" {
            // Recorded so the SBOM says where it came from; the matcher skips it.
            p.source = Some(if d.source.is_empty() {
                "local".into()
            } else {
                clip(&d.source, 32)
            });
        }
        out.push(p);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::parse_json;

    #[test]
    fn dependency_list() {
        let j = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1,2]},{"name":"hex","version":"0.4.3","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}],"format":1}"#;
        let p = parse_json(j).unwrap();
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(got, ["app@0.1.0", "hex@0.4.3"]);
        assert_eq!(p[0].source.as_deref(), Some("local"));
        assert_eq!(p[1].source, None);
        assert!(parse_json(b"{").is_none());
    }
}
