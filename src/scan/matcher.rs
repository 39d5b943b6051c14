//! Matching packages against the local OSV database.
//!
//! Each package is looked up under its OSV ecosystem and name:
//! - OS packages under the distribution's ecosystem (`Debian:12`, `Ubuntu:22.04`,
//!   `Alpine:v3.19`, `Wolfi`, `AlmaLinux:9`, `Rocky Linux:9`) by their *source* package
//!   name and version (Debian `Source`, Alpine origin, RPM source rpm; RPMs are looked up
//!   under their binary name too), since distribution advisories name source packages.
//! - `PyPI` (PEP 503 names), `npm` (`@scope/name`), `Go` (module path, `stdlib` for the
//!   toolchain; versions without `v`), `crates.io` (crates from crates.io only), `Maven`
//!   (`group:artifact`).
//!
//! Language packages an OS package installed are not matched on their own: the
//! distribution's advisories cover them (with its backported fixes). One advisory known
//! under several ids for one package (a DSA and its CVE, a GHSA and a PYSEC) is reported
//! once, under its CVE id when it has one.

use super::inventory::{Distro, Package, PackageType};
use super::version::Scheme;
use super::vulndb::osv::{self, Severity};
use super::vulndb::{Reader, VulnDbError};
use super::walk::Inventory;

/// One vulnerability of one package.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub aliases: Vec<String>,
    /// Upstream vulnerabilities of the advisory (not reported; used to drop a bundle
    /// advisory whose CVEs are all reported on their own).
    pub upstream: Vec<String>,
    pub summary: String,
    pub url: String,
    pub severity: Severity,
    pub package: Package,
    pub purl: String,
    pub ecosystem: String,
    /// The version compared (the source version for Debian packages built from it).
    pub installed: String,
    pub fixed: Option<String>,
}

/// The OSV ecosystem of a distribution's packages.
pub fn distro_ecosystem(d: &Distro) -> Option<String> {
    let major_minor = |v: &str| {
        let parts: Vec<&str> = v.split(['.', '_']).take(2).collect();
        (parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then(|| parts.join("."))
    };
    let major = |v: &str| {
        let m = v.split('.').next().unwrap_or("");
        (!m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())).then(|| m.to_string())
    };
    Some(match d.id.as_str() {
        "debian" => {
            let v = major(&d.version_id).or_else(|| {
                Some(
                    match d.version_codename.as_str() {
                        "buster" => "10",
                        "bullseye" => "11",
                        "bookworm" => "12",
                        "trixie" => "13",
                        "forky" => "14",
                        _ => return None,
                    }
                    .to_string(),
                )
            })?;
            format!("Debian:{v}")
        }
        "ubuntu" => format!("Ubuntu:{}", major_minor(&d.version_id)?),
        "alpine" => format!("Alpine:v{}", major_minor(&d.version_id)?),
        "wolfi" => "Wolfi".into(),
        "chainguard" => "Chainguard".into(),
        "almalinux" => format!("AlmaLinux:{}", major(&d.version_id)?),
        "rocky" => format!("Rocky Linux:{}", major(&d.version_id)?),
        _ => return None,
    })
}

/// (ecosystem, names to look up, version to compare) of a package.
fn lookup_key(p: &Package, distro: Option<&Distro>) -> Option<(String, Vec<String>, String)> {
    Some(match p.kind {
        PackageType::Deb | PackageType::Apk => {
            let eco = distro_ecosystem(distro?)?;
            let name = p.source.clone().unwrap_or_else(|| p.name.clone());
            let version = p
                .source_version
                .clone()
                .unwrap_or_else(|| p.version.clone());
            (eco, vec![name], version)
        }
        PackageType::Rpm => {
            let eco = distro_ecosystem(distro?)?;
            let mut names = vec![p.name.clone()];
            if let Some(s) = &p.source {
                names.push(s.clone());
            }
            (eco, names, p.version.clone())
        }
        PackageType::Pypi => ("PyPI".into(), vec![p.name.clone()], p.version.clone()),
        PackageType::Npm => ("npm".into(), vec![p.full_name()], p.version.clone()),
        PackageType::Golang => (
            "Go".into(),
            vec![p.name.clone()],
            p.version.trim_start_matches('v').to_string(),
        ),
        PackageType::Cargo => {
            if p.source.is_some() {
                return None;
            }
            ("crates.io".into(), vec![p.name.clone()], p.version.clone())
        }
        PackageType::Maven => {
            p.namespace.as_ref()?;
            ("Maven".into(), vec![p.full_name()], p.version.clone())
        }
    })
}

/// Every vulnerability of the inventory's packages, sorted by severity, then package, id.
pub fn find(reader: &Reader, inv: &Inventory) -> Result<Vec<Finding>, VulnDbError> {
    let mut out = Vec::new();
    for op in &inv.packages {
        if op.owner.is_some() {
            continue;
        }
        let p = &op.package;
        let Some((eco, names, version)) = lookup_key(p, inv.distro.as_ref()) else {
            continue;
        };
        let Some(scheme) = Scheme::for_ecosystem(&eco) else {
            continue;
        };
        let mut found: Vec<Finding> = Vec::new();
        for name in &names {
            for entry in reader.lookup(&eco, name)? {
                if found.iter().any(|f| f.id == entry.id) {
                    continue;
                }
                let (hit, fixed) = osv::affects(&entry, scheme, &version);
                if !hit {
                    continue;
                }
                let info = reader.vuln(&entry.id)?;
                let (aliases, upstream, summary, url) = match info {
                    Some(i) => (i.aliases, i.upstream, i.summary, i.url),
                    None => (
                        Vec::new(),
                        Vec::new(),
                        String::new(),
                        format!("https://osv.dev/vulnerability/{}", entry.id),
                    ),
                };
                found.push(Finding {
                    id: entry.id.clone(),
                    aliases,
                    upstream,
                    summary,
                    url,
                    severity: entry.severity.clone(),
                    package: p.clone(),
                    purl: super::purl::of(p, inv.distro.as_ref()),
                    ecosystem: eco.clone(),
                    installed: version.clone(),
                    fixed,
                });
            }
        }
        out.extend(dedupe(found));
    }
    out.sort_by(|a, b| {
        a.severity
            .level
            .cmp(&b.severity.level)
            .then_with(|| a.package.full_name().cmp(&b.package.full_name()))
            .then_with(|| a.package.version.cmp(&b.package.version))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The names an advisory is known by: its id, aliases, and its upstream id when it has
/// exactly one (a per-CVE distribution record).
fn names(f: &Finding) -> Vec<String> {
    let mut n: Vec<String> = std::iter::once(f.id.clone())
        .chain(f.aliases.iter().cloned())
        .collect();
    if f.upstream.len() == 1 {
        n.push(f.upstream[0].clone());
    }
    n
}

/// Merges findings of one package that are the same advisory under different ids, and
/// drops bundle advisories (a DSA naming several CVEs) whose CVEs are all reported.
fn dedupe(found: Vec<Finding>) -> Vec<Finding> {
    let mut groups: Vec<Vec<Finding>> = Vec::new();
    for f in found {
        let mine = names(&f);
        match groups
            .iter_mut()
            .find(|g| g.iter().any(|o| names(o).iter().any(|n| mine.contains(n))))
        {
            Some(g) => g.push(f),
            None => groups.push(vec![f]),
        }
    }
    let covered: Vec<Vec<String>> = groups
        .iter()
        .map(|g| g.iter().flat_map(names).collect())
        .collect();
    let groups: Vec<Vec<Finding>> = groups
        .into_iter()
        .enumerate()
        .filter(|(i, g)| {
            let up: Vec<&String> = g.iter().flat_map(|f| f.upstream.iter()).collect();
            let bundle = g.iter().all(|f| f.upstream.len() >= 2);
            !(bundle
                && up.iter().all(|u| {
                    covered
                        .iter()
                        .enumerate()
                        .any(|(j, c)| j != *i && c.contains(u))
                }))
        })
        .map(|(_, g)| g)
        .collect();
    groups
        .into_iter()
        .map(|mut g| {
            // Keep: known severity, then a known fix, then a CVE id, then the smallest id.
            g.sort_by(|a, b| {
                (a.severity.level == osv::Level::Unknown)
                    .cmp(&(b.severity.level == osv::Level::Unknown))
                    .then_with(|| a.fixed.is_none().cmp(&b.fixed.is_none()))
                    .then_with(|| (!a.id.starts_with("CVE-")).cmp(&!b.id.starts_with("CVE-")))
                    .then_with(|| a.id.cmp(&b.id))
            });
            let mut keep = g.remove(0);
            let cve = names(&keep).into_iter().find(|n| n.starts_with("CVE-"));
            let mut aliases: Vec<String> = Vec::new();
            for other in std::iter::once(&keep).chain(g.iter()) {
                for n in std::iter::once(&other.id).chain(other.aliases.iter()) {
                    if !aliases.contains(n) {
                        aliases.push(n.clone());
                    }
                }
            }
            if let Some(c) = cve {
                keep.id = c;
            }
            aliases.retain(|a| *a != keep.id);
            keep.aliases = aliases;
            keep
        })
        .collect()
}
