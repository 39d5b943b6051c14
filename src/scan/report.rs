//! The vulnerability report (`application/vnd.atcr.vulnerabilities+json`), stored as the
//! scan record's `vulnReportBlob`. Its JSON Schema is `src/scan/vulnerabilities.schema.json`
//! (draft 2020-12); the shape, version 1:
//!
//! ```text
//! { "schemaVersion": 1,
//!   "scanner":  { "name": "atcr", "version": "0.1.0" },
//!   "database": { "generation", "updatedAt", "advisories", "sources": [..] } | null,
//!   "manifest": { "digest", "repository", "userDid" },
//!   "distro":   { "id", "versionId", "prettyName"? } | null,
//!   "createdAt": RFC 3339,
//!   "summary":  { "critical", "high", "medium", "low", "unknown", "total" },
//!   "packages": number of packages in the SBOM,
//!   "matches":  [ { "id", "aliases": [..], "summary", "url",
//!                   "severity": "critical|high|medium|low|unknown",
//!                   "severitySource": "CVSS_V3|CVSS_V4|CVSS_V2|Ubuntu|distribution|database|",
//!                   "cvssScore"?: number, "cvssVector"?: string,
//!                   "package": { "name", "version", "type", "purl", "ecosystem",
//!                                "matchedVersion", "locations": [..] },
//!                   "fixedVersion": string | null } ],
//!   "notes": [ files skipped or unreadable ] }
//! ```
//!
//! `matches` are sorted worst first. `summary.total` counts matches (a package with two
//! vulnerabilities counts twice); `unknown` are matches no source rated.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::inventory::Distro;
use super::matcher::Finding;
use super::vulndb::osv::Level;
use super::vulndb::Meta;

pub const MEDIA_TYPE: &str = "application/vnd.atcr.vulnerabilities+json";
/// The JSON Schema of the report, for tests and anyone reading reports.
pub const SCHEMA: &str = include_str!("vulnerabilities.schema.json");

/// Severity counts, as the scan record and the UI show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
    pub total: u64,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Summary {
        let mut s = Summary::default();
        for f in findings {
            match f.severity.level {
                Level::Critical => s.critical += 1,
                Level::High => s.high += 1,
                Level::Medium => s.medium += 1,
                Level::Low => s.low += 1,
                Level::Unknown => s.unknown += 1,
            }
            s.total += 1;
        }
        s
    }

    /// The worst level present (`None` when there is nothing).
    pub fn worst(&self) -> Option<Level> {
        [
            (self.critical, Level::Critical),
            (self.high, Level::High),
            (self.medium, Level::Medium),
            (self.low, Level::Low),
            (self.unknown, Level::Unknown),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, l)| l)
    }
}

pub struct Context<'a> {
    pub digest: &'a str,
    pub repository: &'a str,
    pub user_did: &'a str,
    pub distro: Option<&'a Distro>,
    pub database: Option<&'a Meta>,
    pub created_at: &'a str,
    pub packages: usize,
    pub notes: &'a [String],
}

pub fn build(ctx: &Context<'_>, findings: &[Finding]) -> Value {
    let summary = Summary::of(findings);
    let matches: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut m = json!({
                "id": f.id,
                "aliases": f.aliases,
                "summary": f.summary,
                "url": f.url,
                "severity": f.severity.level.as_str(),
                "severitySource": f.severity.source,
                "package": {
                    "name": f.package.full_name(),
                    "version": f.package.version,
                    "type": f.package.kind.as_str(),
                    "purl": f.purl,
                    "ecosystem": f.ecosystem,
                    "matchedVersion": f.installed,
                    "locations": f.package.locations,
                },
                "fixedVersion": f.fixed,
            });
            if let Some(s) = f.severity.score {
                m["cvssScore"] = json!(s);
            }
            if let Some(v) = &f.severity.vector {
                m["cvssVector"] = json!(v);
            }
            m
        })
        .collect();
    json!({
        "schemaVersion": 1,
        "scanner": {"name": "atcr", "version": env!("CARGO_PKG_VERSION")},
        "database": ctx.database.map(|m| json!({
            "generation": m.generation,
            "updatedAt": m.updated_at,
            "advisories": m.advisories,
            "sources": m.sources,
        })),
        "manifest": {"digest": ctx.digest, "repository": ctx.repository, "userDid": ctx.user_did},
        "distro": ctx.distro.map(|d| {
            let mut v = json!({"id": d.id, "versionId": d.version_id});
            if !d.pretty_name.is_empty() {
                v["prettyName"] = json!(d.pretty_name);
            }
            v
        }),
        "createdAt": ctx.created_at,
        "summary": summary,
        "packages": ctx.packages,
        "matches": matches,
        "notes": ctx.notes,
    })
}

/// One match as the UI reads it back from a stored report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MatchView {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub severity: String,
    #[serde(rename = "cvssScore", default)]
    pub cvss_score: Option<f64>,
    pub package: PackageView,
    #[serde(rename = "fixedVersion", default)]
    pub fixed_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PackageView {
    pub name: String,
    pub version: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub purl: String,
}

/// A stored report read back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportView {
    #[serde(default)]
    pub summary: Summary,
    #[serde(default)]
    pub matches: Vec<MatchView>,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub database: Option<Value>,
}

/// Largest report the UI reads.
pub const MAX_REPORT_BYTES: usize = 64 << 20;

pub fn read(bytes: &[u8]) -> Result<ReportView, String> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err("the vulnerability report is too large to show".into());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("vulnerability report: {e}"))
}

/// A plain-text table of a report for terminals (`atcr scan`).
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let s = &report["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let distro = match report["distro"]["id"].as_str() {
        Some(id) => format!(
            ", {id} {}",
            report["distro"]["versionId"].as_str().unwrap_or("")
        ),
        None => String::new(),
    };
    out.push_str(&format!(
        "{} packages{distro}\nvulnerabilities: {} critical, {} high, {} medium, {} low, {} unknown ({} total)\n",
        report["packages"].as_u64().unwrap_or(0),
        n("critical"),
        n("high"),
        n("medium"),
        n("low"),
        n("unknown"),
        n("total")
    ));
    if report["database"].is_null() {
        out.push_str("(no vulnerability database: run `atcr vulndb import`)\n");
    }
    let empty = Vec::new();
    let matches = report["matches"].as_array().unwrap_or(&empty);
    if !matches.is_empty() {
        let rows: Vec<[String; 5]> = matches
            .iter()
            .map(|m| {
                [
                    m["severity"].as_str().unwrap_or("").to_uppercase(),
                    m["id"].as_str().unwrap_or("").to_string(),
                    m["package"]["name"].as_str().unwrap_or("").to_string(),
                    m["package"]["version"].as_str().unwrap_or("").to_string(),
                    m["fixedVersion"].as_str().unwrap_or("-").to_string(),
                ]
            })
            .collect();
        let head = ["SEVERITY", "ID", "PACKAGE", "INSTALLED", "FIXED"];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                l.push_str(c);
                if i < 4 {
                    l.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
                }
            }
            l.push('\n');
            l
        };
        out.push_str(&line(head));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
    }
    for note in report["notes"].as_array().unwrap_or(&empty) {
        out.push_str(&format!("note: {}\n", note.as_str().unwrap_or("")));
    }
    out
}
