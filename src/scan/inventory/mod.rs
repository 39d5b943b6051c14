//! Package inventories read from the files of an image, one parser per format. Every parser
//! takes bytes already capped by the layer walker (`super::walk`), never panics on any
//! input (each has a fuzz target), and returns what it could read.
//!
//! - [`os_release`] reads `/etc/os-release` -> [`Distro`].
//! - [`dpkg`] reads `/var/lib/dpkg/status`, `/var/lib/dpkg/status.d/*` (distroless), and the
//!   licences in `/usr/share/doc/<package>/copyright` (DEP-5).
//! - [`apk`] reads `/lib/apk/db/installed`.
//! - [`rpm`] reads `rpmdb.sqlite` with [`sqlite`], a minimal read-only SQLite file reader,
//!   and the RPM header blobs in it.
//! - [`python`] reads `*.dist-info/METADATA`, `*.egg-info/PKG-INFO` and `*.egg-info` files.
//! - [`npm`] reads `package-lock.json` (v1-v3) and `node_modules/**/package.json`.
//! - [`binary`] reads ELF executables streamed once for Go build info ([`gobin`]) and Rust
//!   cargo-auditable dependency lists ([`rustbin`]).
//! - [`java`] reads jar/war/ear archives streamed entry by entry (nested jars too) for
//!   `META-INF/maven/**/pom.properties` and `META-INF/MANIFEST.MF`.

pub mod apk;
pub mod binary;
pub mod dpkg;
pub mod gobin;
pub mod java;
pub mod npm;
pub mod os_release;
pub mod python;
pub mod rpm;
pub mod rustbin;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// Most packages one inventory file may contribute (a corrupt or hostile file stops there).
pub const MAX_PACKAGES_PER_FILE: usize = 100_000;

/// What kind of package, as its package URL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageType {
    Deb,
    Apk,
    Rpm,
    Pypi,
    Npm,
    Golang,
    Cargo,
    Maven,
}

impl PackageType {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageType::Deb => "deb",
            PackageType::Apk => "apk",
            PackageType::Rpm => "rpm",
            PackageType::Pypi => "pypi",
            PackageType::Npm => "npm",
            PackageType::Golang => "golang",
            PackageType::Cargo => "cargo",
            PackageType::Maven => "maven",
        }
    }

    pub fn parse(s: &str) -> Option<PackageType> {
        Some(match s {
            "deb" => PackageType::Deb,
            "apk" => PackageType::Apk,
            "rpm" => PackageType::Rpm,
            "pypi" => PackageType::Pypi,
            "npm" => PackageType::Npm,
            "golang" => PackageType::Golang,
            "cargo" => PackageType::Cargo,
            "maven" => PackageType::Maven,
            _ => return None,
        })
    }

    /// Packages of the operating system (matched against the distribution's advisories).
    pub fn is_os(self) -> bool {
        matches!(self, PackageType::Deb | PackageType::Apk | PackageType::Rpm)
    }

    /// A human label for the UI.
    pub fn label(self) -> &'static str {
        match self {
            PackageType::Deb => "Debian package",
            PackageType::Apk => "Alpine package",
            PackageType::Rpm => "RPM package",
            PackageType::Pypi => "Python",
            PackageType::Npm => "npm",
            PackageType::Golang => "Go module",
            PackageType::Cargo => "Rust crate",
            PackageType::Maven => "Java (Maven)",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub kind: PackageType,
    /// Maven groupId, npm scope (`@scope`); part of the package URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub version: String,
    /// The source package (Debian `Source`, Alpine origin, RPM source rpm) when it is
    /// another name: distribution advisories name source packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The source package's version when it differs from `version` (binNMUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Licences as the package declares them (not necessarily SPDX identifiers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
    /// Where it was found (paths inside the image, without a leading `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

impl Package {
    pub fn new(kind: PackageType, name: &str, version: &str) -> Package {
        Package {
            kind,
            namespace: None,
            name: name.to_string(),
            version: version.to_string(),
            source: None,
            source_version: None,
            arch: None,
            licenses: Vec::new(),
            locations: Vec::new(),
        }
    }

    /// The name as it appears in the ecosystem (`group:artifact`, `@scope/name`).
    pub fn full_name(&self) -> String {
        match (&self.namespace, self.kind) {
            (Some(ns), PackageType::Maven) => format!("{ns}:{}", self.name),
            (Some(ns), PackageType::Npm) => format!("{ns}/{}", self.name),
            (Some(ns), _) => format!("{ns}/{}", self.name),
            (None, _) => self.name.clone(),
        }
    }
}

/// The operating system of an image (`/etc/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distro {
    /// `ID`: debian, ubuntu, alpine, almalinux, rocky, ...
    pub id: String,
    /// `VERSION_ID`: 12, 22.04, 3.19.1, ...
    #[serde(rename = "versionId")]
    pub version_id: String,
    #[serde(
        rename = "prettyName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pretty_name: String,
    #[serde(
        rename = "versionCodename",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub version_codename: String,
}

/// Cuts a string to at most `max` bytes on a character boundary (hostile files can hold
/// megabyte-long fields).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Longest name or version kept from any inventory.
pub const MAX_FIELD: usize = 256;

/// Splits RFC 822-style stanzas (dpkg status, apk installed uses its own): `Key: value`
/// lines, continuation lines starting with a space or tab, stanzas separated by blank
/// lines. Calls `f` with each stanza's fields (continuations joined with `\n`).
pub fn rfc822_stanzas(text: &str, mut f: impl FnMut(&[(String, String)]) -> bool) {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !fields.is_empty() && !f(&fields) {
                return;
            }
            fields.clear();
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                if v.len() < 64 * 1024 {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !fields.is_empty() {
        f(&fields);
    }
}

/// The value of `key` (case-insensitive) in a stanza.
pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}
