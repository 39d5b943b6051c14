//! The OSV schema (<https://ossf.github.io/osv-schema/>) as the importer reads it, and the
//! compact form the database keeps: per affected package, its ranges and listed versions;
//! per advisory, the summary, aliases, a link and the severity.
//!
//! Severity ([`severity_of`]): for distribution ecosystems the distribution's own rating
//! comes first (Ubuntu's priority, Debian's urgency, an `ecosystem_specific.severity`),
//! then CVSS; for language ecosystems CVSS first (v3, then v4, then v2), then the
//! database's rating (GitHub's `database_specific.severity`). Nothing usable: unknown.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scan::version::Scheme;

#[derive(Debug, Clone, Deserialize)]
pub struct Osv {
    pub id: String,
    #[serde(default)]
    pub modified: String,
    #[serde(default)]
    pub published: String,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Upstream vulnerabilities this advisory is about (a DSA names its CVEs here).
    #[serde(default)]
    pub upstream: Vec<String>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub severity: Vec<OsvSeverity>,
    #[serde(default)]
    pub affected: Vec<OsvAffected>,
    #[serde(default)]
    pub references: Vec<OsvReference>,
    #[serde(default)]
    pub database_specific: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvSeverity {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub score: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvReference {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvAffected {
    #[serde(default)]
    pub package: Option<OsvPackage>,
    #[serde(default)]
    pub severity: Vec<OsvSeverity>,
    #[serde(default)]
    pub ranges: Vec<OsvRange>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ecosystem_specific: Value,
    #[serde(default)]
    pub database_specific: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    #[serde(default)]
    pub ecosystem: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvRange {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<Value>,
}

/// Severity levels, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Critical,
    High,
    Medium,
    Low,
    Unknown,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
            Level::Unknown => "unknown",
        }
    }

    /// A rating word as distributions and databases write it.
    pub fn from_word(w: &str) -> Option<Level> {
        Some(match w.trim().to_ascii_lowercase().as_str() {
            "critical" => Level::Critical,
            "high" | "important" => Level::High,
            "medium" | "moderate" => Level::Medium,
            "low" | "negligible" | "unimportant" | "minor" => Level::Low,
            _ => return None,
        })
    }

    pub fn from_score(score: f64) -> Level {
        if score >= 9.0 {
            Level::Critical
        } else if score >= 7.0 {
            Level::High
        } else if score >= 4.0 {
            Level::Medium
        } else {
            Level::Low
        }
    }
}

/// A severity with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Severity {
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// `CVSS_V3`, `CVSS_V4`, `CVSS_V2`, `Ubuntu`, `Debian`, `GitHub`, ...
    pub source: String,
}

impl Severity {
    pub fn unknown() -> Severity {
        Severity {
            level: Level::Unknown,
            score: None,
            vector: None,
            source: String::new(),
        }
    }
}

fn cvss(list: &[OsvSeverity]) -> Option<Severity> {
    for kind in ["CVSS_V3", "CVSS_V4", "CVSS_V2"] {
        for s in list.iter().filter(|s| s.kind == kind) {
            if let Ok(c) = s.score.parse::<cvss::Cvss>() {
                let score = (c.score() * 10.0).round() / 10.0;
                return Some(Severity {
                    level: Level::from_score(score),
                    score: Some(score),
                    vector: Some(crate::scan::inventory::clip(&s.score, 200)),
                    source: kind.to_string(),
                });
            }
        }
    }
    None
}

fn rated(list: &[OsvSeverity]) -> Option<Severity> {
    list.iter()
        .filter(|s| !s.kind.starts_with("CVSS"))
        .find_map(|s| Level::from_word(&s.score).map(|level| (s, level)))
        .map(|(s, level)| Severity {
            level,
            score: None,
            vector: None,
            source: s.kind.clone(),
        })
}

fn word_at(v: &Value, keys: &[&str], source: &str) -> Option<Severity> {
    keys.iter().find_map(|k| {
        v.get(*k)
            .and_then(Value::as_str)
            .and_then(Level::from_word)
            .map(|level| Severity {
                level,
                score: None,
                vector: None,
                source: source.to_string(),
            })
    })
}

/// The severity of `vuln` for one affected package (see the module doc for the order).
pub fn severity_of(vuln: &Osv, affected: &OsvAffected, distro: bool) -> Severity {
    let own = || {
        rated(&affected.severity)
            .or_else(|| {
                word_at(
                    &affected.ecosystem_specific,
                    &["severity", "urgency", "priority"],
                    "distribution",
                )
            })
            .or_else(|| rated(&vuln.severity))
    };
    let scored = || cvss(&affected.severity).or_else(|| cvss(&vuln.severity));
    let db = || {
        word_at(
            &vuln.database_specific,
            &["severity", "cvss_severity"],
            "database",
        )
        .or_else(|| word_at(&affected.database_specific, &["severity"], "database"))
    };
    let found = if distro {
        own().or_else(scored).or_else(db)
    } else {
        scored().or_else(own).or_else(db)
    };
    found.unwrap_or_else(Severity::unknown)
}

/// A range event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "i")]
    Introduced,
    #[serde(rename = "f")]
    Fixed,
    #[serde(rename = "l")]
    LastAffected,
    #[serde(rename = "x")]
    Limit,
}

/// A version range: `ECOSYSTEM` (the package's ordering) or `SEMVER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// `true`: SemVer ordering; `false`: the ecosystem's.
    #[serde(rename = "s", default)]
    pub semver: bool,
    #[serde(rename = "e")]
    pub events: Vec<(EventKind, String)>,
}

/// One advisory's entry for one package, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedEntry {
    pub id: String,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(rename = "sev")]
    pub severity: Severity,
}

/// The advisory itself, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VulnInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub published: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modified: String,
    /// The package keys (`ecosystem\0name`) this advisory has entries under.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// The ecosystem as the database keys it: `Ubuntu:22.04:LTS` -> `Ubuntu:22.04`
/// (`Ubuntu:Pro:...` stays apart: those fixes need a subscription). `None` when no
/// version ordering is known for it (it could never be matched).
pub fn canonical_ecosystem(e: &str) -> Option<String> {
    Scheme::for_ecosystem(e)?;
    let mut parts: Vec<&str> = e.split(':').collect();
    if parts[0] == "Ubuntu" && parts.last() == Some(&"LTS") {
        parts.pop();
    }
    Some(parts.join(":"))
}

/// Package names as the database keys them (PyPI: PEP 503 normalised).
pub fn canonical_name(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        crate::scan::inventory::python::normalize_name(name)
    } else {
        name.to_string()
    }
}

/// The stored entries of one advisory: `(key, entry)` per affected package it can match.
pub fn compact(vuln: &Osv) -> (VulnInfo, Vec<(String, AffectedEntry)>) {
    let mut entries: Vec<(String, AffectedEntry)> = Vec::new();
    for a in &vuln.affected {
        let Some(pkg) = &a.package else {
            continue;
        };
        let Some(eco) = canonical_ecosystem(&pkg.ecosystem) else {
            continue;
        };
        if pkg.name.is_empty() {
            continue;
        }
        let ranges: Vec<Range> = a
            .ranges
            .iter()
            .filter(|r| r.kind == "ECOSYSTEM" || r.kind == "SEMVER")
            .map(|r| Range {
                semver: r.kind == "SEMVER",
                events: r
                    .events
                    .iter()
                    .filter_map(|e| {
                        let o = e.as_object()?;
                        let (k, v) = o.iter().next()?;
                        let kind = match k.as_str() {
                            "introduced" => EventKind::Introduced,
                            "fixed" => EventKind::Fixed,
                            "last_affected" => EventKind::LastAffected,
                            "limit" => EventKind::Limit,
                            _ => return None,
                        };
                        Some((kind, v.as_str()?.to_string()))
                    })
                    .collect(),
            })
            .filter(|r| !r.events.is_empty())
            .collect();
        if ranges.is_empty() && a.versions.is_empty() {
            continue;
        }
        let distro = matches!(
            Scheme::for_ecosystem(&eco),
            Some(Scheme::Dpkg | Scheme::Apk | Scheme::Rpm)
        );
        let key = format!("{eco}\0{}", canonical_name(&eco, &pkg.name));
        let entry = AffectedEntry {
            id: vuln.id.clone(),
            ranges,
            versions: a.versions.iter().take(10_000).cloned().collect(),
            severity: severity_of(vuln, a, distro),
        };
        // Several affected entries for one package (e.g. two ranges lists): merged.
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, e)) => {
                e.ranges.extend(entry.ranges);
                e.versions.extend(entry.versions);
            }
            None => entries.push((key, entry)),
        }
    }
    let url = vuln
        .references
        .iter()
        .find(|r| r.kind == "ADVISORY")
        .or_else(|| vuln.references.first())
        .map(|r| r.url.clone())
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .unwrap_or_else(|| format!("https://osv.dev/vulnerability/{}", vuln.id));
    let summary = if vuln.summary.is_empty() {
        vuln.details.lines().next().unwrap_or("").to_string()
    } else {
        vuln.summary.clone()
    };
    let info = VulnInfo {
        id: vuln.id.clone(),
        aliases: vuln.aliases.iter().take(50).cloned().collect(),
        upstream: vuln.upstream.iter().take(200).cloned().collect(),
        summary: crate::scan::inventory::clip(&summary, 300),
        url: crate::scan::inventory::clip(&url, 500),
        published: vuln.published.clone(),
        modified: vuln.modified.clone(),
        keys: entries.iter().map(|(k, _)| k.clone()).collect(),
    };
    (info, entries)
}

/// Whether `version` is affected by `entry` (OSV's evaluation: listed versions, then each
/// range's sorted events), and the lowest fixed version above it when there is one.
pub fn affects(entry: &AffectedEntry, scheme: Scheme, version: &str) -> (bool, Option<String>) {
    if entry.versions.iter().any(|v| v == version) {
        return (true, fixed_after(entry, scheme, version));
    }
    for r in &entry.ranges {
        let s = if r.semver { Scheme::Semver } else { scheme };
        let cmp = |a: &str, b: &str| {
            if r.semver {
                s.compare(a.trim_start_matches('v'), b.trim_start_matches('v'))
            } else {
                s.compare(a, b)
            }
        };
        let mut events: Vec<&(EventKind, String)> = r.events.iter().collect();
        events.sort_by(|a, b| match (a.1.as_str(), b.1.as_str()) {
            ("0", "0") => std::cmp::Ordering::Equal,
            ("0", _) => std::cmp::Ordering::Less,
            (_, "0") => std::cmp::Ordering::Greater,
            (x, y) => cmp(x, y),
        });
        let mut affected = false;
        for (kind, v) in events {
            use std::cmp::Ordering::*;
            match kind {
                EventKind::Introduced => {
                    if v == "0" || cmp(version, v) != Less {
                        affected = true;
                    }
                }
                EventKind::Fixed | EventKind::Limit => {
                    if cmp(version, v) != Less {
                        affected = false;
                    }
                }
                EventKind::LastAffected => {
                    if cmp(version, v) == Greater {
                        affected = false;
                    }
                }
            }
        }
        if affected {
            return (true, fixed_after(entry, scheme, version));
        }
    }
    (false, None)
}

fn fixed_after(entry: &AffectedEntry, scheme: Scheme, version: &str) -> Option<String> {
    let mut best: Option<(&str, Scheme)> = None;
    for r in &entry.ranges {
        let s = if r.semver { Scheme::Semver } else { scheme };
        for (kind, v) in &r.events {
            if *kind != EventKind::Fixed {
                continue;
            }
            let norm = |x: &str| {
                if r.semver {
                    x.trim_start_matches('v').to_string()
                } else {
                    x.to_string()
                }
            };
            if s.compare(&norm(v), &norm(version)) != std::cmp::Ordering::Greater {
                continue;
            }
            if best.is_none_or(|(b, bs)| bs.compare(&norm(v), &norm(b)) == std::cmp::Ordering::Less)
            {
                best = Some((v, s));
            }
        }
    }
    best.map(|(v, _)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn osv(json: &str) -> Osv {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn ranges_and_versions() {
        let v = osv(
            r#"{"id":"GHSA-1","aliases":["CVE-2021-1"],"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}],
            "affected":[{"package":{"ecosystem":"PyPI","name":"Jinja2"},
              "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.11.3"}]},
                        {"type":"ECOSYSTEM","events":[{"introduced":"3.0.0"},{"last_affected":"3.0.1"}]},
                        {"type":"GIT","repo":"x","events":[{"introduced":"abc"}]}],
              "versions":["2.10"]}]}"#,
        );
        let (info, entries) = compact(&v);
        assert_eq!(info.keys, ["PyPI\0jinja2"]);
        let e = &entries[0].1;
        assert_eq!(e.severity.level, Level::Critical);
        assert_eq!(e.severity.score, Some(10.0));
        let p = Scheme::Pep440;
        assert_eq!(affects(e, p, "2.10"), (true, Some("2.11.3".into())));
        assert_eq!(affects(e, p, "2.11.2"), (true, Some("2.11.3".into())));
        assert_eq!(affects(e, p, "2.11.3"), (false, None));
        assert_eq!(affects(e, p, "3.0.0"), (true, None));
        assert_eq!(affects(e, p, "3.0.1"), (true, None));
        assert_eq!(affects(e, p, "3.0.2"), (false, None));
    }

    #[test]
    fn debian_ranges_and_severity_order() {
        let v = osv(
            r#"{"id":"DEBIAN-CVE-2023-5363","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}],
            "affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},"ecosystem_specific":{"urgency":"low"},
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.11-1~deb12u2"}]}]},
              {"package":{"ecosystem":"Ubuntu:22.04:LTS","name":"openssl"},
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.2-0ubuntu1.12"}]}]},
              {"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"1.0.0"},{"fixed":"1.2.0"}]}]}]}"#,
        );
        let (info, entries) = compact(&v);
        assert_eq!(
            info.keys,
            ["Debian:12\0openssl", "Ubuntu:22.04\0openssl", "npm\0x"]
        );
        assert_eq!(entries[0].1.severity.level, Level::Low); // the distribution's urgency wins
        assert_eq!(entries[1].1.severity.level, Level::High); // CVSS 7.5
        assert_eq!(entries[2].1.severity.level, Level::High); // CVSS first for npm
        assert!(affects(&entries[0].1, Scheme::Dpkg, "3.0.11-1~deb12u1").0);
        assert!(!affects(&entries[0].1, Scheme::Dpkg, "3.0.11-1~deb12u2").0);
        assert_eq!(
            affects(&entries[2].1, Scheme::Semver, "1.1.9"),
            (true, Some("1.2.0".into()))
        );
        assert!(!affects(&entries[2].1, Scheme::Semver, "0.9.0").0);
        assert_eq!(
            info.url,
            "https://osv.dev/vulnerability/DEBIAN-CVE-2023-5363"
        );
    }

    #[test]
    fn unknown_severity_and_database_rating() {
        let v = osv(
            r#"{"id":"ALPINE-1","affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r6"}]}]}]}"#,
        );
        assert_eq!(compact(&v).1[0].1.severity.level, Level::Unknown);
        let v = osv(
            r#"{"id":"GHSA-2","database_specific":{"severity":"MODERATE"},"affected":[{"package":{"ecosystem":"crates.io","name":"x"},"versions":["1.0.0"]}]}"#,
        );
        assert_eq!(compact(&v).1[0].1.severity.level, Level::Medium);
        assert_eq!(
            canonical_ecosystem("Ubuntu:Pro:18.04:LTS").as_deref(),
            Some("Ubuntu:Pro:18.04")
        );
        assert_eq!(canonical_ecosystem("Unknown Eco"), None);
    }
}
