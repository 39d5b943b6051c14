//! What the web UI shows of the scanner (`crate::scan`): severity badges (tag rows,
//! platforms), the vulnerabilities section of the manifest page with its Rescan button, the
//! SBOM package list with a filter (`/r/<owner>/<repo>/manifests/<digest>/sbom`), the
//! comparison of two tags (`/compare/<owner>/<repo>?a=&b=`), and the recognised kinds of
//! referrers (SBOMs, signatures, attestations).
//!
//! Scan results come from this process's hold: the `io.atcr.hold.scan` record, its SBOM
//! and report blobs (capped reads). Badges come from the index's `scans` table, one query
//! per page. Manifests stored on another hold show no scan (not fetched yet).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use askama::Template;
use http::Request;
use hyper::body::Incoming;

use super::views::{age, short_digest, Chrome};
use super::{read_form, redirect, render, Ctx, WebError, WebResult};
use crate::app::http::{query, query_get};
use crate::app::AppState;
use crate::index::scans::ScanRow;
use crate::scan::report::{MatchView, ReportView, Summary};
use crate::scan::sbom;
use crate::scan::service::{self, Pending, ScanRecord};

/// Vulnerability rows shown on a manifest page (the JSON report has them all).
const MAX_ROWS: usize = 500;
/// Packages shown on the SBOM page at once.
const MAX_PACKAGES: usize = 2000;

/// A severity badge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Badge {
    /// CSS class: `sev-critical`, `sev-high`, `sev-medium`, `sev-low`, `sev-unknown`,
    /// `sev-none`, `sev-failed`, `sev-pending`.
    pub class: &'static str,
    pub text: String,
    /// Every count, for the tooltip.
    pub title: String,
}

fn counts_title(s: &Summary) -> String {
    format!(
        "{} critical, {} high, {} medium, {} low, {} unknown",
        s.critical, s.high, s.medium, s.low, s.unknown
    )
}

/// The badge of a scan status and summary.
pub fn badge(status: &str, s: &Summary, reason: &str) -> Badge {
    match status {
        "failed" => Badge {
            class: "sev-failed",
            text: "scan failed".into(),
            title: reason.to_string(),
        },
        "skipped" => Badge {
            class: "sev-none",
            text: "not scanned".into(),
            title: reason.to_string(),
        },
        _ => {
            let (class, n, word) = match s.worst() {
                Some(crate::scan::vulndb::osv::Level::Critical) => {
                    ("sev-critical", s.critical, "critical")
                }
                Some(crate::scan::vulndb::osv::Level::High) => ("sev-high", s.high, "high"),
                Some(crate::scan::vulndb::osv::Level::Medium) => ("sev-medium", s.medium, "medium"),
                Some(crate::scan::vulndb::osv::Level::Low) => ("sev-low", s.low, "low"),
                Some(crate::scan::vulndb::osv::Level::Unknown) => {
                    ("sev-unknown", s.unknown, "unrated")
                }
                None => {
                    return Badge {
                        class: "sev-none",
                        text: "no known vulnerabilities".into(),
                        title: reason.to_string(),
                    }
                }
            };
            let more = s.total - n;
            Badge {
                class,
                text: if more > 0 {
                    format!("{n} {word} +{more}")
                } else {
                    format!("{n} {word}")
                },
                title: counts_title(s),
            }
        }
    }
}

fn summary_of_row(r: &ScanRow) -> Summary {
    let u = |v: i64| v.max(0) as u64;
    Summary {
        critical: u(r.critical),
        high: u(r.high),
        medium: u(r.medium),
        low: u(r.low),
        unknown: u(r.unknown()),
        total: u(r.total),
    }
}

fn pending_badge(p: Pending) -> Badge {
    Badge {
        class: "sev-pending",
        text: match p {
            Pending::Queued => "scan queued".into(),
            Pending::Running => "scanning…".into(),
        },
        title: String::new(),
    }
}

/// Badges of a page's manifest digests (tags of one repository), from the index.
pub async fn badges(
    state: &AppState,
    did: &str,
    repo: &str,
    digests: &[String],
) -> BTreeMap<String, Badge> {
    let mut out = BTreeMap::new();
    let rows = match state.index.scan_summaries(did, repo, digests).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read scan summaries");
            return out;
        }
    };
    for d in digests {
        if let Some(p) = state.scanner.as_ref().and_then(|s| s.pending(d)) {
            out.insert(d.clone(), pending_badge(p));
        } else if let Some(r) = rows.get(d) {
            let status = if r.status == "partial" {
                "ok"
            } else {
                r.status.as_str()
            };
            let mut b = badge(status, &summary_of_row(r), "");
            if r.platforms > 0 {
                b.title = format!("worst of {} platforms: {}", r.platforms, b.title);
            }
            out.insert(d.clone(), b);
        }
    }
    out
}

/// A vulnerability as a table row.
#[derive(Debug, Clone)]
pub struct VulnRow {
    pub class: &'static str,
    pub severity: String,
    pub id: String,
    pub url: String,
    pub aliases: String,
    pub package: String,
    pub kind: String,
    pub installed: String,
    pub fixed: String,
    pub summary: String,
    pub cvss: String,
}

fn sev_class(s: &str) -> &'static str {
    match s {
        "critical" => "sev-critical",
        "high" => "sev-high",
        "medium" => "sev-medium",
        "low" => "sev-low",
        _ => "sev-unknown",
    }
}

fn vuln_row(m: &MatchView) -> VulnRow {
    VulnRow {
        class: sev_class(&m.severity),
        severity: m.severity.clone(),
        id: m.id.clone(),
        url: if m.url.starts_with("https://") || m.url.starts_with("http://") {
            m.url.clone()
        } else {
            format!("https://osv.dev/vulnerability/{}", m.id)
        },
        aliases: m.aliases.join(", "),
        package: m.package.name.clone(),
        kind: crate::scan::inventory::PackageType::parse(&m.package.kind)
            .map(|k| k.label().to_string())
            .unwrap_or_else(|| m.package.kind.clone()),
        installed: m.package.version.clone(),
        fixed: m.fixed_version.clone().unwrap_or_default(),
        summary: m.summary.clone(),
        cvss: m.cvss_score.map(|s| format!("{s:.1}")).unwrap_or_default(),
    }
}

/// A count chip of the summary.
#[derive(Debug, Clone)]
pub struct Count {
    pub class: &'static str,
    pub label: &'static str,
    pub n: u64,
}

fn counts(s: &Summary) -> Vec<Count> {
    vec![
        Count {
            class: "sev-critical",
            label: "critical",
            n: s.critical,
        },
        Count {
            class: "sev-high",
            label: "high",
            n: s.high,
        },
        Count {
            class: "sev-medium",
            label: "medium",
            n: s.medium,
        },
        Count {
            class: "sev-low",
            label: "low",
            n: s.low,
        },
        Count {
            class: "sev-unknown",
            label: "unknown",
            n: s.unknown,
        },
    ]
}

/// The vulnerabilities section of a manifest page.
#[derive(Debug, Clone, Default)]
pub struct ScanSection {
    /// `ok`, `failed`, `skipped`, `pending`, `none` (never scanned), `remote` (another
    /// hold), `index` (see the platforms), `off` (no scanner here).
    pub state: String,
    pub badge: Badge,
    pub reason: String,
    pub scanned: String,
    pub scanner_version: String,
    pub database: String,
    pub counts: Vec<Count>,
    pub total: u64,
    pub rows: Vec<VulnRow>,
    /// Matches not shown (over [`MAX_ROWS`]).
    pub more: usize,
    pub sbom_href: String,
    pub sbom_download: String,
    pub report_download: String,
    /// Platforms of an index with their badges: (platform, href, badge).
    pub platforms: Vec<(String, String, Badge)>,
    pub can_rescan: bool,
    pub owner_did: String,
    pub repo: String,
    pub digest: String,
}

/// The scan record of `digest` in this process's hold.
pub async fn record(state: &AppState, digest: &str) -> Option<ScanRecord> {
    let hold = state.hold.as_ref()?;
    match service::record_of(hold, digest).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a scan record");
            None
        }
    }
}

async fn blob_bytes(
    state: &AppState,
    d: &crate::oci::types::Digest,
    cap: usize,
) -> Result<Vec<u8>, String> {
    let api = state.hold_api.as_ref().ok_or("no hold in this process")?;
    service::get_blob(api.blobs().as_ref(), d, cap).await
}

pub async fn report_of(state: &AppState, rec: &ScanRecord) -> Option<ReportView> {
    let d = rec.report.as_ref()?;
    match blob_bytes(state, d, crate::scan::report::MAX_REPORT_BYTES).await {
        Ok(b) => crate::scan::report::read(&b).ok(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a vulnerability report");
            None
        }
    }
}

pub async fn sbom_of(state: &AppState, rec: &ScanRecord) -> Option<sbom::View> {
    let d = rec.sbom.as_ref()?;
    match blob_bytes(state, d, sbom::MAX_SBOM_BYTES).await {
        Ok(b) => sbom::read(&b).ok(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read an SBOM");
            None
        }
    }
}

fn blob_url(state: &AppState, d: &Option<crate::oci::types::Digest>) -> String {
    match (state.hold.as_ref(), d) {
        (Some(h), Some(d)) => format!(
            "/xrpc/com.atproto.sync.getBlob?did={}&cid={}",
            h.did(),
            crate::scan::service::cid_string(d).unwrap_or_default()
        ),
        _ => String::new(),
    }
}

/// Whether the signed-in user may rescan images of `owner_did`: the owner, or the captain.
pub async fn can_rescan(state: &AppState, ctx: &Ctx, owner_did: &str) -> bool {
    let Some(u) = ctx.user() else { return false };
    if state.scanner.is_none() {
        return false;
    }
    if u.did == owner_did {
        return true;
    }
    match state.hold.as_ref() {
        Some(h) => h
            .captain()
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.owner == u.did),
        None => false,
    }
}

/// Builds the manifest page's section. `hold_did` is the hold the manifest names;
/// `children` are an index's platforms as (platform, digest, href).
#[allow(clippy::too_many_arguments)]
pub async fn section(
    state: &AppState,
    ctx: &Ctx,
    owner_did: &str,
    repo: &str,
    digest: &str,
    hold_did: Option<&str>,
    children: &[(String, String, String)],
    manifest_href: &str,
) -> ScanSection {
    let mut s = ScanSection {
        owner_did: owner_did.to_string(),
        repo: repo.to_string(),
        digest: digest.to_string(),
        ..ScanSection::default()
    };
    let Some(hold) = state.hold.as_ref() else {
        s.state = "off".into();
        return s;
    };
    if !children.is_empty() {
        s.state = "index".into();
        let digests: Vec<String> = children.iter().map(|c| c.1.clone()).collect();
        let b = badges(state, owner_did, repo, &digests).await;
        s.platforms = children
            .iter()
            .map(|(p, d, href)| {
                (
                    p.clone(),
                    href.clone(),
                    b.get(d).cloned().unwrap_or_default(),
                )
            })
            .collect();
        s.can_rescan = can_rescan(state, ctx, owner_did).await;
        return s;
    }
    if hold_did.is_some_and(|h| h != hold.did()) {
        s.state = "remote".into();
        return s;
    }
    s.can_rescan = can_rescan(state, ctx, owner_did).await;
    if let Some(p) = state.scanner.as_ref().and_then(|sc| sc.pending(digest)) {
        s.state = "pending".into();
        s.badge = pending_badge(p);
        return s;
    }
    let Some(rec) = record(state, digest).await else {
        s.state = if state.scanner.is_some() {
            "none"
        } else {
            "off"
        }
        .into();
        return s;
    };
    s.state = rec.status.clone();
    s.badge = badge(&rec.status, &rec.summary, &rec.reason);
    s.reason = rec.reason.clone();
    s.scanned = age(
        crate::web::catalog::unix_of(&rec.scanned_at),
        crate::registry::store::now_unix(),
    );
    s.scanner_version = rec.scanner_version.clone();
    s.counts = counts(&rec.summary);
    s.total = rec.summary.total;
    s.sbom_download = blob_url(state, &rec.sbom);
    s.report_download = blob_url(state, &rec.report);
    if rec.sbom.is_some() {
        s.sbom_href = format!("{manifest_href}/sbom");
    }
    if let Some(report) = report_of(state, &rec).await {
        if let Some(db) = &report.database {
            s.database = format!(
                "OSV database generation {}, {} advisories, updated {}",
                db["generation"],
                db["advisories"],
                db["updatedAt"].as_str().unwrap_or("")
            );
        }
        s.more = report.matches.len().saturating_sub(MAX_ROWS);
        s.rows = report.matches.iter().take(MAX_ROWS).map(vuln_row).collect();
    }
    s
}

/// A package row of the SBOM page.
#[derive(Debug, Clone)]
pub struct PackageRow {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub license: String,
    pub purl: String,
    pub locations: String,
    pub owner: String,
}

#[derive(Template)]
#[template(path = "sbom.html")]
pub struct SbomPage {
    pub chrome: Chrome,
    pub owner: String,
    pub repo: String,
    pub digest: String,
    pub short: String,
    pub manifest_href: String,
    pub q: String,
    pub kind: String,
    pub kinds: Vec<(String, String)>,
    pub rows: Vec<PackageRow>,
    pub total: usize,
    pub matching: usize,
    pub download: String,
    pub distro: String,
}

/// `/r/<owner>/<repo>/manifests/<digest>/sbom?q=&type=`.
pub async fn sbom_page(
    state: &Arc<AppState>,
    ctx: &Ctx,
    owner: &str,
    repo: &str,
    digest: &str,
    req_query: &str,
) -> WebResult {
    let q = query(
        &format!("/?{req_query}")
            .parse()
            .map_err(|_| WebError::BadRequest("bad query".into()))?,
    );
    let text = query_get(&q, "q")
        .unwrap_or("")
        .trim()
        .chars()
        .take(100)
        .collect::<String>();
    let kind = query_get(&q, "type").unwrap_or("").trim().to_string();
    let rec = record(state, digest).await.ok_or_else(|| {
        WebError::NotFound(format!("{digest} has not been scanned on this hold."))
    })?;
    let view = sbom_of(state, &rec)
        .await
        .ok_or_else(|| WebError::NotFound("This scan has no SBOM.".into()))?;
    let needle = text.to_ascii_lowercase();
    let mut kinds: BTreeSet<(String, String)> = BTreeSet::new();
    let all: Vec<PackageRow> = view
        .packages
        .iter()
        .map(|e| {
            let p = &e.package.package;
            kinds.insert((p.kind.as_str().to_string(), p.kind.label().to_string()));
            PackageRow {
                name: p.full_name(),
                version: p.version.clone(),
                kind: p.kind.label().to_string(),
                license: e.license.clone(),
                purl: e.purl.clone(),
                locations: p.locations.join(", "),
                owner: e.package.owner.clone().unwrap_or_default(),
            }
        })
        .collect();
    let total = all.len();
    let wanted: Vec<PackageRow> = all
        .into_iter()
        .zip(view.packages.iter())
        .filter(|(row, e)| {
            (kind.is_empty() || e.package.package.kind.as_str() == kind)
                && (needle.is_empty()
                    || row.name.to_ascii_lowercase().contains(&needle)
                    || row.license.to_ascii_lowercase().contains(&needle)
                    || row.version.to_ascii_lowercase().contains(&needle))
        })
        .map(|(r, _)| r)
        .collect();
    let matching = wanted.len();
    let manifest_href = format!("/r/{owner}/{repo}/manifests/{digest}");
    render(&SbomPage {
        chrome: ctx.chrome(format!("SBOM of {owner}/{repo} {}", short_digest(digest))),
        owner: owner.to_string(),
        repo: repo.to_string(),
        digest: digest.to_string(),
        short: short_digest(digest),
        manifest_href,
        q: text,
        kind,
        kinds: kinds.into_iter().collect(),
        rows: wanted.into_iter().take(MAX_PACKAGES).collect(),
        total,
        matching,
        download: blob_url(state, &rec.sbom),
        distro: view
            .distro
            .map(|d| {
                if d.pretty_name.is_empty() {
                    format!("{} {}", d.id, d.version_id)
                } else {
                    d.pretty_name
                }
            })
            .unwrap_or_default(),
    })
}

/// A changed package between two images.
#[derive(Debug, Clone)]
pub struct ChangedRow {
    pub name: String,
    pub kind: String,
    pub from: String,
    pub to: String,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub struct ComparePage {
    pub chrome: Chrome,
    pub owner: String,
    pub repo: String,
    pub repo_href: String,
    pub tags: Vec<String>,
    pub a: String,
    pub b: String,
    pub error: String,
    pub compared: bool,
    pub badge_a: Badge,
    pub badge_b: Badge,
    pub digest_a: String,
    pub digest_b: String,
    pub added: Vec<ChangedRow>,
    pub removed: Vec<ChangedRow>,
    pub changed: Vec<ChangedRow>,
    pub vulns_added: Vec<VulnRow>,
    pub vulns_removed: Vec<VulnRow>,
}

/// A tag (or digest) of the repository to the image manifest to compare (an index's
/// linux/amd64 platform, else its first).
async fn resolve(state: &AppState, did: &str, repo: &str, r: &str) -> Result<String, String> {
    let digest = if r.contains(':') {
        r.to_string()
    } else {
        let tags = state
            .index
            .tags(did, repo, 1000, 0)
            .await
            .map_err(|e| e.to_string())?;
        tags.into_iter()
            .find(|t| t.tag == r)
            .map(|t| t.digest)
            .ok_or_else(|| format!("there is no tag {r}"))?
    };
    let m = state
        .index
        .manifest(did, repo, &digest)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("there is no manifest {digest}"))?;
    if m.children.is_empty() {
        return Ok(digest);
    }
    let pick = m
        .children
        .iter()
        .find(|c| {
            c.platform.as_ref().is_some_and(|p| {
                p.os.as_deref() == Some("linux") && p.architecture.as_deref() == Some("amd64")
            })
        })
        .or_else(|| m.children.first())
        .ok_or("the index is empty")?;
    Ok(pick.digest.clone())
}

/// `/compare/<owner>/<repo>?a=<tag|digest>&b=<tag|digest>`.
pub async fn compare_page(
    state: &Arc<AppState>,
    ctx: &Ctx,
    who: &str,
    repo: &str,
    req: &Request<Incoming>,
) -> WebResult {
    let q = query(req.uri());
    let a = query_get(&q, "a").unwrap_or("").trim().to_string();
    let b = query_get(&q, "b").unwrap_or("").trim().to_string();
    let (did, owner) = super::catalog::owner_of(state, who).await?;
    if state
        .index
        .repository(&did, repo)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .is_none()
    {
        return Err(WebError::NotFound(format!(
            "{owner} has no repository {repo}."
        )));
    }
    let tags: Vec<String> = state
        .index
        .tags(&did, repo, 200, 0)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .into_iter()
        .map(|t| t.tag)
        .collect();
    let mut page = ComparePage {
        chrome: ctx.chrome(format!("Compare {owner}/{repo}")),
        owner: owner.clone(),
        repo: repo.to_string(),
        repo_href: format!("/r/{owner}/{repo}"),
        a: a.clone(),
        b: b.clone(),
        tags,
        error: String::new(),
        compared: false,
        badge_a: Badge::default(),
        badge_b: Badge::default(),
        digest_a: String::new(),
        digest_b: String::new(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        vulns_added: Vec::new(),
        vulns_removed: Vec::new(),
    };
    if a.is_empty() || b.is_empty() {
        return render(&page);
    }
    let (da, db) = match (
        resolve(state, &did, repo, &a).await,
        resolve(state, &did, repo, &b).await,
    ) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            page.error = e;
            return render(&page);
        }
    };
    let (ra, rb) = (record(state, &da).await, record(state, &db).await);
    let (Some(ra), Some(rb)) = (ra, rb) else {
        page.error = "Both images must have been scanned on this hold.".into();
        return render(&page);
    };
    page.badge_a = badge(&ra.status, &ra.summary, &ra.reason);
    page.badge_b = badge(&rb.status, &rb.summary, &rb.reason);
    page.digest_a = da;
    page.digest_b = db;
    let (sa, sb) = (
        sbom_of(state, &ra).await.unwrap_or_default(),
        sbom_of(state, &rb).await.unwrap_or_default(),
    );
    let (pa, pb) = (sbom::package_versions(&sa), sbom::package_versions(&sb));
    let label = |k: &str| {
        crate::scan::inventory::PackageType::parse(k)
            .map(|t| t.label().to_string())
            .unwrap_or_else(|| k.to_string())
    };
    for ((kind, name), va) in &pa {
        match pb.get(&(kind.clone(), name.clone())) {
            None => page.removed.push(ChangedRow {
                name: name.clone(),
                kind: label(kind),
                from: va.join(", "),
                to: String::new(),
            }),
            Some(vb) if vb != va => page.changed.push(ChangedRow {
                name: name.clone(),
                kind: label(kind),
                from: va.join(", "),
                to: vb.join(", "),
            }),
            _ => {}
        }
    }
    for ((kind, name), vb) in &pb {
        if !pa.contains_key(&(kind.clone(), name.clone())) {
            page.added.push(ChangedRow {
                name: name.clone(),
                kind: label(kind),
                from: String::new(),
                to: vb.join(", "),
            });
        }
    }
    let (va, vb) = (
        report_of(state, &ra).await.unwrap_or_default(),
        report_of(state, &rb).await.unwrap_or_default(),
    );
    let key = |m: &MatchView| (m.id.clone(), m.package.name.clone());
    let ka: BTreeSet<_> = va.matches.iter().map(key).collect();
    let kb: BTreeSet<_> = vb.matches.iter().map(key).collect();
    page.vulns_added = vb
        .matches
        .iter()
        .filter(|m| !ka.contains(&key(m)))
        .map(vuln_row)
        .collect();
    page.vulns_removed = va
        .matches
        .iter()
        .filter(|m| !kb.contains(&key(m)))
        .map(vuln_row)
        .collect();
    page.compared = true;
    render(&page)
}

/// `POST /scan/rescan` (owner or captain): queues a forced scan of a manifest (every
/// platform of an index), then back to its page.
pub async fn rescan(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    if ctx.user().is_none() {
        return Ok(redirect("/login", &[]));
    }
    ctx.check_csrf(&form)?;
    let (owner_did, repo, digest) = (form.get("owner"), form.get("repo"), form.get("digest"));
    let Some(scanner) = state.scanner.clone() else {
        return Err(WebError::NotFound(
            "This server does not scan images.".into(),
        ));
    };
    if !can_rescan(state, ctx, owner_did).await {
        return Err(WebError::Forbidden(
            "Only the image's owner or the hold's captain can rescan it.".into(),
        ));
    }
    let name: crate::oci::types::Name = format!("{owner_did}/{repo}")
        .parse()
        .map_err(|e| WebError::BadRequest(format!("repository: {e}")))?;
    let reference: crate::oci::types::Reference = digest
        .parse()
        .map_err(|e| WebError::BadRequest(format!("digest: {e}")))?;
    let resolver = state.auth.resolver().clone();
    let requests = service::requests_for(&state.registry, Some(&resolver), &name, &reference, true)
        .await
        .map_err(WebError::NotFound)?;
    let n = requests.len();
    for r in requests {
        scanner.enqueue(r);
    }
    tracing::info!(%owner_did, %repo, %digest, manifests = n, "rescan requested");
    let owner = state
        .index
        .user_by_handle_or_did(owner_did)
        .await
        .ok()
        .flatten()
        .and_then(|u| u.handle)
        .unwrap_or_else(|| owner_did.to_string());
    Ok(redirect(
        &format!("/r/{owner}/{repo}/manifests/{digest}"),
        &[],
    ))
}

/// A manifest's artifact type as the referrers API reports it (`artifactType`, else the
/// config media type), read from the local registry under the first of `names` that has it.
pub async fn artifact_type(state: &AppState, names: &[String], digest: &str) -> Option<String> {
    let reference: crate::oci::types::Reference = digest.parse().ok()?;
    for n in names {
        let Ok(name) = n.parse::<crate::oci::types::Name>() else {
            continue;
        };
        if let Ok(m) = state.registry.manifest_get(&name, &reference).await {
            return crate::oci::types::manifest::parse_manifest(&m.meta.media_type, &m.bytes)
                .ok()?
                .referrer_artifact_type();
        }
    }
    None
}

/// What a referrer is, by its artifact type: (label, CSS class).
pub fn referrer_kind(artifact_type: &str) -> (&'static str, &'static str) {
    let t = artifact_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match t.as_str() {
        "application/spdx+json" | "text/spdx" | "application/spdx" | "text/spdx+json" => {
            ("SBOM (SPDX)", "kind-sbom")
        }
        "application/vnd.cyclonedx+json"
        | "application/vnd.cyclonedx+xml"
        | "application/vnd.cyclonedx" => ("SBOM (CycloneDX)", "kind-sbom"),
        "application/vnd.syft+json" => ("SBOM (Syft)", "kind-sbom"),
        "application/vnd.dev.cosign.artifact.sig.v1+json"
        | "application/vnd.dev.cosign.simplesigning.v1+json" => ("Signature (cosign)", "kind-sig"),
        "application/vnd.dev.sigstore.bundle.v0.3+json"
        | "application/vnd.dev.sigstore.bundle+json" => ("Signature (Sigstore bundle)", "kind-sig"),
        "application/vnd.cncf.notary.signature" => ("Signature (Notation)", "kind-sig"),
        "application/vnd.dsse.envelope.v1+json"
        | "application/vnd.in-toto+json"
        | "application/vnd.dev.cosign.attestation.v1+json" => ("Attestation (in-toto)", "kind-att"),
        "application/vnd.atcr.vulnerabilities+json"
        | "application/sarif+json"
        | "application/vnd.oci.image.manifest.v1+json+vuln" => ("Vulnerability report", "kind-att"),
        _ => ("", ""),
    }
}

/// cosign's tag-based scheme: `sha256-<hex>.sig`, `.att`, `.sbom` tags name artifacts of
/// `sha256:<hex>` in the same repository.
pub fn cosign_tag_kind(tag: &str, digest: &str) -> Option<&'static str> {
    let hex = digest.strip_prefix("sha256:")?;
    let rest = tag.strip_prefix("sha256-")?.strip_prefix(hex)?;
    match rest {
        ".sig" => Some("Signature (cosign)"),
        ".att" => Some("Attestation (cosign)"),
        ".sbom" => Some("SBOM (cosign)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_and_kinds() {
        let s = Summary {
            critical: 2,
            high: 0,
            medium: 2,
            low: 1,
            unknown: 0,
            total: 5,
        };
        let b = badge("ok", &s, "");
        assert_eq!(
            (b.class, b.text.as_str()),
            ("sev-critical", "2 critical +3")
        );
        assert_eq!(
            badge("ok", &Summary::default(), "").text,
            "no known vulnerabilities"
        );
        assert_eq!(badge("failed", &s, "boom").title, "boom");
        let u = Summary {
            unknown: 2,
            total: 2,
            ..Summary::default()
        };
        assert_eq!(badge("ok", &u, "").text, "2 unrated");
        assert_eq!(referrer_kind("application/spdx+json").0, "SBOM (SPDX)");
        assert_eq!(
            referrer_kind("application/vnd.cyclonedx+json").0,
            "SBOM (CycloneDX)"
        );
        assert_eq!(
            referrer_kind("application/vnd.cncf.notary.signature").0,
            "Signature (Notation)"
        );
        assert_eq!(
            referrer_kind("application/vnd.dev.cosign.artifact.sig.v1+json").0,
            "Signature (cosign)"
        );
        assert_eq!(
            referrer_kind("application/vnd.dev.sigstore.bundle.v0.3+json").1,
            "kind-sig"
        );
        assert_eq!(referrer_kind("application/x-unknown").0, "");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            cosign_tag_kind(&format!("sha256-{}.sig", "ab".repeat(32)), &d),
            Some("Signature (cosign)")
        );
        assert_eq!(cosign_tag_kind("latest", &d), None);
    }
}
