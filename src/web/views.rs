//! View models and askama templates (`templates/`). Handlers fill these plain structs; the
//! templates only format, so pages stay cheap to render and easy to test.

use askama::Template;

/// The frame around every page: title, signed-in user, CSRF token, theme, asset versions.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub user: Option<UserChip>,
    pub csrf: String,
    /// `""` (follow the system), `"light"` or `"dark"` (the toggle's cookie).
    pub theme: String,
    pub css_v: &'static str,
    pub js_v: &'static str,
    pub htmx_v: &'static str,
    /// Local mode (`auth.mode = "local"`): every page carries the "authentication is off"
    /// banner.
    pub local_mode: bool,
}

impl Chrome {
    /// For pages rendered without a request context (early errors).
    pub fn bare(title: &str) -> Chrome {
        Chrome {
            local_mode: false,
            title: title.into(),
            user: None,
            csrf: String::new(),
            theme: String::new(),
            css_v: super::assets::version("app.css"),
            js_v: super::assets::version("app.js"),
            htmx_v: super::assets::version("htmx.min.js"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserChip {
    pub did: String,
    pub handle: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub heading: String,
    pub message: String,
    pub hint: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub admin: bool,
    /// Offer "sign in with your handle" (ATProto OAuth) above the app-password form.
    pub oauth: bool,
    pub next: String,
    pub identifier: String,
    pub error: String,
}

/// The hop to the PDS's sign-in page (a page, not a redirect: see `web::signin`).
#[derive(Template)]
#[template(path = "oauth_redirect.html")]
pub struct OAuthRedirectPage {
    pub chrome: Chrome,
    pub url: String,
}

/// `/device`: approve or deny a credential helper.
#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage {
    pub chrome: Chrome,
    pub handle: String,
    /// The code as typed or linked (`BCDF-GHJK`), empty for the blank form.
    pub code: String,
    /// A waiting request matches the code.
    pub found: bool,
    /// A code was given but nothing waits under it.
    pub unknown: bool,
    pub name: String,
    pub addr: String,
    pub asked: String,
    /// After a decision: what happened.
    pub done: String,
}

/// One credential-helper device on the settings page.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub addr: String,
}

#[derive(Template)]
#[template(path = "install.html")]
pub struct InstallPage {
    pub chrome: Chrome,
    pub host: String,
    /// The registry's base URL (where `/device` is).
    pub base: String,
    pub example_handle: String,
}

/// A repository in a list (home, search, user page).
#[derive(Debug, Clone)]
pub struct RepoCard {
    pub owner: String,
    pub repo: String,
    pub href: String,
    pub description: String,
    pub stars: u64,
    pub pulls: u64,
    /// "3 hours ago"; empty when unknown.
    pub updated: String,
    pub tag: String,
    /// False where the source has no counts (recent pushes): no misleading zeros.
    pub show_counts: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub chrome: Chrome,
    pub recent: Vec<RepoCard>,
    pub popular: Vec<RepoCard>,
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub short_digest: String,
    pub href: String,
    pub size: String,
    pub age: String,
    pub platforms: Vec<String>,
    pub pull: String,
    /// Severity badge of the tag's scan (empty class: not scanned).
    pub scan: super::scans::Badge,
    /// What `size` means ("compressed", "each platform, compressed").
    pub size_note: String,
}

#[derive(Template)]
#[template(path = "repo.html")]
pub struct RepoPage {
    pub chrome: Chrome,
    pub owner: String,
    pub owner_did: String,
    pub repo: String,
    /// The viewer owns the repository: the page edit form is shown.
    pub is_owner: bool,
    /// `/avatar/<did>?repo=<repo>` when the repo page names an avatar, else empty.
    pub avatar_src: String,
    /// The `io.atcr.repo.page` record exists / its owner edited it.
    pub has_page: bool,
    pub user_edited: bool,
    /// The README as markdown source (the edit form's text).
    pub description: String,
    /// The README rendered by [`super::markdown::to_html`] (safe to embed).
    pub readme_html: String,
    pub tags: Vec<TagRow>,
    pub pull: String,
    pub stars: u64,
    pub starred: bool,
    pub can_star: bool,
    pub pulls: u64,
    pub hold: String,
    /// The hold for people: `did:web:registry.example.com` -> `registry.example.com`.
    pub hold_name: String,
    /// "ok", "down" or "" (unknown).
    pub hold_health: String,
    pub more_tags_href: String,
}

#[derive(Template)]
#[template(path = "tag_rows.html")]
pub struct TagRows {
    pub tags: Vec<TagRow>,
    pub more_tags_href: String,
}

#[derive(Debug, Clone)]
pub struct LayerRow {
    pub digest: String,
    pub short_digest: String,
    pub media_type: String,
    pub size: String,
    pub step: String,
}

#[derive(Debug, Clone)]
pub struct ChildRow {
    pub platform: String,
    pub digest: String,
    pub short_digest: String,
    pub href: String,
    /// The child manifest's own size (referrers: empty).
    pub size: String,
    /// For referrers: what it is (`SBOM (SPDX)`, `Signature (cosign)`, ...), when known.
    pub kind: String,
    pub kind_class: &'static str,
    /// The child image's size (config + layers); empty when the child is not indexed.
    pub image_size: String,
}

#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub step: String,
    pub empty_layer: bool,
}

#[derive(Template)]
#[template(path = "manifest.html")]
pub struct ManifestPage {
    pub chrome: Chrome,
    pub owner: String,
    pub repo: String,
    pub repo_href: String,
    pub digest: String,
    pub media_type: String,
    pub total_size: String,
    pub platform: String,
    pub layers: Vec<LayerRow>,
    pub children: Vec<ChildRow>,
    pub history: Vec<HistoryRow>,
    /// Why the history is missing, when it is.
    pub history_note: String,
    pub annotations: Vec<AnnotationRow>,
    pub referrers: Vec<ChildRow>,
    pub pull: String,
    /// The vulnerabilities section.
    pub scan: super::scans::ScanSection,
    // newcomer (issue 22): digest copy, pull by digest, tags, image config, source link.
    pub short_digest: String,
    /// `docker pull host/owner/repo@sha256:...`.
    pub pull_digest: String,
    /// Tags pointing at this digest.
    pub tags: Vec<String>,
    /// The image config's runtime settings (single images whose config is stored here).
    pub config: ImageConfigView,
    /// `org.opencontainers.image.source` when it is an http(s) URL.
    pub source_url: String,
}

/// One annotation; `link` when the value is an http(s) URL (shown as a link).
#[derive(Debug, Clone)]
pub struct AnnotationRow {
    pub key: String,
    pub value: String,
    pub link: bool,
}

/// What an image runs with, from its config's `config` object (`docker inspect` shows the
/// same): exec forms as JSON arrays, everything else as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfigView {
    pub entrypoint: String,
    pub cmd: String,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub labels: Vec<(String, String)>,
}

impl ImageConfigView {
    pub fn is_empty(&self) -> bool {
        *self == ImageConfigView::default()
    }
}

#[derive(Template)]
#[template(path = "user.html")]
pub struct UserPage {
    pub chrome: Chrome,
    pub handle: String,
    pub did: String,
    /// The index knows a profile avatar (served by `/avatar/<did>`).
    pub has_avatar: bool,
    /// This page of the repositories ([`super::catalog::USER_PAGE`] at most).
    pub repos: Vec<RepoCard>,
    /// 1-based page number.
    pub page: u32,
    /// The previous (more recently pushed) page; empty on page 1.
    pub newer_href: String,
    /// The next page; empty on the last.
    pub older_href: String,
    pub stars: Vec<RepoCard>,
}

#[derive(Template)]
#[template(path = "search.html")]
pub struct SearchPage {
    pub chrome: Chrome,
    pub q: String,
    /// Architecture filter (`amd64`, `arm64`, ...); empty: any.
    pub arch: String,
    pub owner: String,
    /// Only images with critical vulnerabilities.
    pub critical: bool,
    /// The rendered [`SearchResults`] fragment (the same HTML htmx fetches for paging).
    pub results_html: String,
}

#[derive(Template)]
#[template(path = "search_results.html")]
pub struct SearchResults {
    pub results: Vec<RepoCard>,
    /// `/search?...&offset=N` of the next page; empty on the last one.
    pub next_href: String,
    pub first_page: bool,
    pub q: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub chrome: Chrome,
    pub did: String,
    pub handle: String,
    pub default_hold: String,
    pub profile_error: String,
    pub sessions: Vec<SessionRow>,
    pub flash: String,
    pub devices: Vec<DeviceRow>,
    pub devices_flash: String,
    /// How this browser signed in ("ATProto OAuth" / "an app password").
    pub signed_in_with: String,
}

/// One browser session on the settings page.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// sha256 of the cookie id, sent back by the revoke button.
    pub key: String,
    pub current: bool,
    pub started: String,
    /// Time left, rounded to days.
    pub expires: String,
    pub user_agent: String,
    /// "Chrome 131 on Linux" (the raw User-Agent when it is not recognised).
    pub browser: String,
}

// ---- hold admin ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct CrewRow {
    pub member: String,
    pub handle: String,
    pub role: String,
    pub permissions: Vec<String>,
    pub tier: String,
    pub usage: String,
    /// The member's limit: "unlimited", or the tier's size and name.
    pub quota: String,
    pub blobs: u64,
    pub is_owner: bool,
    pub has_read: bool,
    pub has_write: bool,
    pub has_admin: bool,
}

#[derive(Debug, Clone)]
pub struct UsageRow {
    /// Handle (or the name's first segment when it does not resolve).
    pub who: String,
    /// The DID, when known.
    pub did: String,
    /// Distinct blobs (layers and configs) in this user's repositories.
    pub blobs: u64,
    pub size: String,
    /// The user is not a crew member of this hold (their blobs are here all the same).
    pub not_crew: bool,
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
pub struct AdminPage {
    pub chrome: Chrome,
    pub hold_did: String,
    /// The hold's host (`did:web:` decoded), for people.
    pub hold_name: String,
    /// The captain's handle, when it resolves.
    pub owner_handle: String,
    /// What the crew's counts count: "layers" (the hold's layer records) or "blobs".
    pub crew_unit: String,
    pub owner: String,
    pub crew: Vec<CrewRow>,
    pub public: bool,
    pub allow_all_crew: bool,
    pub bluesky_posts: bool,
    pub successor: String,
    pub total_size: String,
    pub blob_count: u64,
    pub top_users: Vec<UsageRow>,
    pub flash: String,
    pub flash_error: bool,
    /// Where the crew usage figures come from.
    pub usage_source: String,
    pub quota_note: String,
}

#[derive(Template)]
#[template(path = "admin/remove.html")]
pub struct RemoveConfirm {
    pub chrome: Chrome,
    pub member: String,
    pub handle: String,
}

#[derive(Debug, Clone)]
pub struct GcRow {
    pub digest: String,
    pub size: String,
}

#[derive(Template)]
#[template(path = "admin/gc.html")]
pub struct GcPage {
    pub chrome: Chrome,
    pub rows: Vec<GcRow>,
    pub total: String,
    pub ran: bool,
    /// Candidates beyond this preview's batch (a later run takes them).
    pub more: usize,
    /// Reviewed blobs the run kept because they became referenced after the preview.
    pub skipped: usize,
}

// ---- formatting ---------------------------------------------------------------------------

/// Bytes for people: `0 B`, `512 B`, `1.5 KiB`, `23.4 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// "just now", "5 minutes ago", "3 days ago" from seconds since the epoch.
pub fn age(then_unix: u64, now_unix: u64) -> String {
    if then_unix == 0 {
        return String::new();
    }
    let d = now_unix.saturating_sub(then_unix);
    let (n, unit) = match d {
        0..=59 => return "just now".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=2_591_999 => (d / 86_400, "day"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// A hold DID for people: `did:web:host%3A5000` -> `host:5000`; other DIDs as they are.
pub fn hold_name(did: &str) -> String {
    match did.strip_prefix("did:web:") {
        Some(host) => host.replace("%3A", ":").replace("%3a", ":"),
        None => did.to_string(),
    }
}

/// Sizes of the platforms of an index: `1.2 MiB`, or `1.2 – 3.4 MiB` when they differ.
pub fn size_range(sizes: &[u64]) -> String {
    match (sizes.iter().min(), sizes.iter().max()) {
        (Some(lo), Some(hi)) if human_size(*lo) == human_size(*hi) => human_size(*lo),
        (Some(lo), Some(hi)) => format!("{} – {}", human_size(*lo), human_size(*hi)),
        _ => String::new(),
    }
}

/// "Chrome 131 on Linux" from a User-Agent; the raw string (cut to 80 characters) when no
/// known browser is named. Order matters: Edge and Opera say Chrome too, Chrome says Safari.
pub fn browser_name(ua: &str) -> String {
    let version = |token: &str| -> Option<String> {
        let start = ua.find(token)? + token.len();
        let v: String = ua[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(v)
    };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("CriOS/", "Chrome"),
        ("FxiOS/", "Firefox"),
    ]
    .iter()
    .find_map(|(token, name)| version(token).map(|v| format!("{name} {v}")))
    .or_else(|| {
        (ua.contains("Safari/") && ua.contains("Version/"))
            .then(|| format!("Safari {}", version("Version/").unwrap_or_default()))
    });
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(token, _)| ua.contains(token))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(os)) => format!("{} on {os}", b.trim_end()),
        (Some(b), None) => b.trim_end().to_string(),
        _ if ua.trim().is_empty() => "unknown browser".into(),
        _ => ua.chars().take(80).collect(),
    }
}

/// `sha256:0123456789ab` (12 hex digits), for tables.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.chars().take(19).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(age(100, 100), "just now");
        assert_eq!(age(100, 160), "1 minute ago");
        assert_eq!(age(0, 160), "");
        assert_eq!(age(1, 1 + 3 * 86_400), "3 days ago");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn hold_names_sizes_and_browsers() {
        assert_eq!(hold_name("did:web:localhost%3A5000"), "localhost:5000");
        assert_eq!(hold_name("did:web:hold.example.com"), "hold.example.com");
        assert_eq!(hold_name("did:plc:abc"), "did:plc:abc");
        assert_eq!(size_range(&[2048, 2048]), "2.0 KiB");
        assert_eq!(
            size_range(&[5120, 5140]),
            "5.0 KiB",
            "equal as shown: one figure"
        );
        assert_eq!(size_range(&[2048, 3 * 1024 * 1024]), "2.0 KiB – 3.0 MiB");
        assert_eq!(size_range(&[]), "");
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(browser_name(chrome), "Chrome 131 on Linux");
        let headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.224 Safari/537.36";
        assert_eq!(browser_name(headless), "Headless Chrome 120 on Linux");
        let firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
        assert_eq!(browser_name(firefox), "Firefox 121 on Windows");
        let safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15";
        assert_eq!(browser_name(safari), "Safari 17 on macOS");
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91";
        assert_eq!(browser_name(edge), "Edge 120 on Windows");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_name(iphone), "Safari 17 on iOS");
        assert_eq!(
            browser_name("Other-Browser/1.0 (atcr test)"),
            "Other-Browser/1.0 (atcr test)"
        );
        assert_eq!(browser_name(""), "unknown browser");
    }
}
