//! The pages backed by the index (`crate::index`): home, repository, manifest detail, user,
//! search (htmx paging) and star/unstar. Reads come from the index only, except the image
//! config (Dockerfile history), which is read from the blob store with a size cap.
//!
//! Star: the record `io.atcr.sailor.star/<TID>` (subject = the repo page's AT-URI) is
//! written to the user's own PDS with their sealed session first; the index is told after
//! the PDS accepted it, so the page shows the new count at once.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::views::{
    age, hold_name, human_size, short_digest, size_range, AnnotationRow, ChildRow, HistoryRow,
    HomePage, ImageConfigView, LayerRow, ManifestPage, RepoCard, RepoPage, SearchPage,
    SearchResults, TagRow, TagRows, UserPage,
};
use super::{read_form, redirect, render, safe_next, Ctx, WebError, WebResult};
use crate::app::http::{query, query_get};
use crate::app::AppState;
use crate::index::{Index, Platform, RepoSummary, SearchFilters};
use crate::oci::types::{Digest, Name};

const STAR_NSID: &str = "io.atcr.sailor.star";
const PAGE_NSID: &str = "io.atcr.repo.page";
/// Tags per page on the repository page (more load with htmx).
pub const TAGS_PAGE: u32 = 50;
/// Repositories per user page (`/u/<handle>?page=N`).
pub const USER_PAGE: u32 = 60;
/// Search results per page.
pub const SEARCH_PAGE: u32 = 10;
/// Image configs bigger than this are not parsed for their history.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

fn index(state: &AppState) -> Result<&Index, WebError> {
    Ok(&state.index)
}

fn ix_err(e: crate::index::IndexError) -> WebError {
    WebError::Internal(format!("index: {e}"))
}

fn now() -> u64 {
    crate::registry::store::now_unix()
}

pub use crate::pds::unix_of;

fn owner_name(did: &str, handle: &Option<String>) -> String {
    handle.clone().unwrap_or_else(|| did.to_string())
}

fn card(r: &RepoSummary, now: u64) -> RepoCard {
    let owner = owner_name(&r.did, &r.handle);
    RepoCard {
        href: format!("/r/{owner}/{}", r.name),
        owner,
        repo: r.name.clone(),
        description: r
            .description
            .as_deref()
            .map(|d| super::markdown::summary(d, 200))
            .unwrap_or_default(),
        stars: r.star_count.max(0) as u64,
        pulls: r.pull_count.max(0) as u64,
        updated: r
            .last_push
            .as_deref()
            .map(|t| age(unix_of(t), now))
            .unwrap_or_default(),
        tag: r.latest_tag.clone().unwrap_or_default(),
        show_counts: true,
    }
}

fn platform_str(p: &Platform) -> String {
    let mut s = format!(
        "{}/{}",
        p.os.as_deref().unwrap_or("?"),
        p.architecture.as_deref().unwrap_or("?")
    );
    if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

pub async fn home(state: &Arc<AppState>, ctx: &Ctx) -> WebResult {
    let ix = index(state)?;
    let now = now();
    let recent = ix
        .recent_pushes(12)
        .await
        .map_err(ix_err)?
        .into_iter()
        .map(|p| {
            let owner = owner_name(&p.did, &p.handle);
            RepoCard {
                href: format!("/r/{owner}/{}", p.repository),
                owner,
                repo: p.repository,
                description: String::new(),
                stars: 0,
                pulls: 0,
                updated: age(unix_of(&p.pushed_at), now),
                tag: p.tag,
                show_counts: false,
            }
        })
        .collect();
    let popular = ix
        .popular_repos(12)
        .await
        .map_err(ix_err)?
        .iter()
        .filter(|r| r.star_count > 0 || r.pull_count > 0)
        .map(|r| card(r, now))
        .collect();
    render(&HomePage {
        chrome: ctx.chrome("Home"),
        recent,
        popular,
        host: ctx.host.clone(),
    })
}

/// The DID for a handle or DID in a URL: the index first, then the network.
/// A page's owner: DID, the name shown (handle, else DID), and whether the index knows a
/// profile avatar for them.
struct Owner {
    did: String,
    shown: String,
    has_avatar: bool,
}

/// The DID of the owner named in a page path (handle or DID).
pub async fn owner_did(state: &AppState, who: &str) -> Result<String, WebError> {
    Ok(find_owner(state, index(state)?, who).await?.did)
}

/// (DID, name shown) of a page's owner (handle or DID in the URL).
pub async fn owner_of(state: &AppState, who: &str) -> Result<(String, String), WebError> {
    let o = find_owner(state, &state.index, who).await?;
    Ok((o.did, o.shown))
}

async fn find_owner(state: &AppState, ix: &Index, who: &str) -> Result<Owner, WebError> {
    if let Some(u) = ix.user_by_handle_or_did(who).await.map_err(ix_err)? {
        return Ok(Owner {
            shown: u.handle.unwrap_or_else(|| u.did.clone()),
            did: u.did,
            has_avatar: u.avatar.is_some(),
        });
    }
    match state.auth.resolver().resolve(who).await {
        Ok(id) => Ok(Owner {
            shown: id.handle.unwrap_or_else(|| id.did.clone()),
            did: id.did,
            has_avatar: false,
        }),
        Err(e @ crate::atproto::identity::IdentityError::DidFetch { .. }) => {
            Err(WebError::Upstream(format!("cannot resolve {who}: {e}")))
        }
        Err(_) => Err(WebError::NotFound(format!("No user {who} is known here."))),
    }
}

/// `/r/<owner>/<rest>`: a repository page, or a manifest page when `rest` is
/// `<repo>/manifests/<digest>`. `tags_offset` pages the tag list (htmx).
pub async fn repo_or_manifest(
    state: &Arc<AppState>,
    ctx: &Ctx,
    owner: &str,
    rest: &str,
    tags_offset: u32,
) -> WebResult {
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return owner_redirect(owner);
    }
    if let Some((repo, digest)) = rest.split_once("/manifests/") {
        return manifest(state, ctx, owner, repo, digest).await;
    }
    repo_page(state, ctx, owner, rest, tags_offset).await
}

/// `/r/<owner>` (no repository): the owner's page lists their repositories.
pub fn owner_redirect(owner: &str) -> WebResult {
    // Handles and DIDs only (`%` for did:web ports): nothing to escape in the Location.
    if owner.is_empty()
        || !owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-_%".contains(&b))
    {
        return Err(WebError::NotFound(format!(
            "No user {owner} is known here."
        )));
    }
    Ok(http::Response::builder()
        .status(http::StatusCode::MOVED_PERMANENTLY)
        .header(http::header::LOCATION, format!("/u/{owner}"))
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(crate::app::http::empty())
        .expect("valid redirect"))
}

fn tag_rows(
    tags: Vec<crate::index::TagInfo>,
    owner: &str,
    repo: &str,
    host: &str,
    now: u64,
) -> Vec<TagRow> {
    tags.into_iter()
        .map(|t| TagRow {
            href: format!("/r/{owner}/{repo}/manifests/{}", t.digest),
            short_digest: short_digest(&t.digest),
            size: tag_size(&t).0,
            size_note: tag_size(&t).1,
            age: age(unix_of(&t.pushed_at), now),
            platforms: t.platforms.iter().map(platform_str).collect(),
            pull: format!("docker pull {host}/{owner}/{repo}:{}", t.tag),
            digest: t.digest,
            tag: t.tag,
            scan: Default::default(),
        })
        .collect()
}

/// A tag's size and what it means. A single image: config + layers as pushed (compressed),
/// what a pull downloads. An index: each platform's image, as a range when they differ (a
/// pull downloads one of them), else the sum over its children when their sizes are unknown.
fn tag_size(t: &crate::index::TagInfo) -> (String, String) {
    let known: Vec<u64> = t
        .image_sizes
        .iter()
        .flatten()
        .map(|s| (*s).max(0) as u64)
        .collect();
    let total = t
        .total_size
        .map(|s| human_size(s.max(0) as u64))
        .unwrap_or_default();
    if t.image_sizes.is_empty() {
        let note = if total.is_empty() { "" } else { "compressed" };
        (total, note.into())
    } else if !known.is_empty() {
        let n = t.platforms.len();
        (
            size_range(&known),
            format!(
                "{}, compressed",
                if n == 1 {
                    "1 platform".to_string()
                } else {
                    format!("each of {n} platforms")
                }
            ),
        )
    } else {
        (total, "all platforms together, compressed".into())
    }
}

async fn repo_page(
    state: &Arc<AppState>,
    ctx: &Ctx,
    who: &str,
    repo: &str,
    offset: u32,
) -> WebResult {
    let ix = index(state)?;
    let Owner {
        did, shown: owner, ..
    } = find_owner(state, ix, who).await?;
    let Some(info) = ix.repository(&did, repo).await.map_err(ix_err)? else {
        return Err(WebError::NotFound(format!(
            "{owner} has no repository {repo}."
        )));
    };
    let now = now();
    let tags = ix
        .tags(&did, repo, TAGS_PAGE + 1, offset)
        .await
        .map_err(ix_err)?;
    let more = tags.len() > TAGS_PAGE as usize;
    let mut tags = tags;
    tags.truncate(TAGS_PAGE as usize);
    let more_tags_href = if more {
        format!("/r/{owner}/{repo}?tags_offset={}", offset + TAGS_PAGE)
    } else {
        String::new()
    };
    let first_digest = tags.first().map(|t| t.digest.clone());
    let latest = tags
        .first()
        .map(|t| t.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let mut rows = tag_rows(tags, &owner, repo, &ctx.host, now);
    let digests: Vec<String> = rows.iter().map(|r| r.digest.clone()).collect();
    let badges = super::scans::badges(state, &did, repo, &digests).await;
    for r in &mut rows {
        if let Some(b) = badges.get(&r.digest) {
            r.scan = b.clone();
        }
    }
    if ctx.htmx && offset > 0 {
        return render(&TagRows {
            tags: rows,
            more_tags_href,
        });
    }
    let starred = match ctx.user() {
        Some(u) => ix.is_starred(&u.did, &did, repo).await.map_err(ix_err)?,
        None => false,
    };
    // The hold of the newest tag's manifest; this process answering means ours is up.
    let hold = match &first_digest {
        Some(d) => ix
            .manifest(&did, repo, d)
            .await
            .map_err(ix_err)?
            .and_then(|m| m.hold_did)
            .unwrap_or_default(),
        None => String::new(),
    };
    let hold_display = hold_name(&hold);
    let hold_health = match &state.hold {
        Some(h) if h.did() == hold => "ok".to_string(),
        _ => String::new(),
    };
    // Nested names cannot be record keys: such a repository has no page to edit or star.
    let has_page_key = crate::registry::records::page_rkey(repo).is_some();
    let is_owner = has_page_key && ctx.user().is_some_and(|u| u.did == did);
    let avatar_src = if info.avatar_cid.is_some() {
        format!(
            "/avatar/{did}?repo={}",
            percent_encoding::utf8_percent_encode(repo, percent_encoding::NON_ALPHANUMERIC)
        )
    } else {
        String::new()
    };
    render(&RepoPage {
        chrome: ctx.chrome(format!("{owner}/{repo}")),
        is_owner,
        avatar_src,
        user_edited: info.user_edited,
        has_page: info.has_page,
        description: info.summary.description.clone().unwrap_or_default(),
        pull: format!("docker pull {}/{owner}/{repo}:{latest}", ctx.host),
        readme_html: info
            .summary
            .description
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(super::markdown::to_html)
            .unwrap_or_default(),
        stars: info.summary.star_count.max(0) as u64,
        pulls: info.summary.pull_count.max(0) as u64,
        starred,
        can_star: has_page_key && ctx.user().is_some(),
        owner,
        owner_did: did,
        repo: repo.to_string(),
        tags: rows,
        hold,
        hold_name: hold_display,
        hold_health,
        more_tags_href,
    })
}

/// The image config's `history` as Dockerfile-like steps (`/bin/sh -c #(nop) ` and
/// `/bin/sh -c ` prefixes turned back into instructions), plus its platform.
pub fn config_history(config: &[u8]) -> (Vec<HistoryRow>, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else {
        return (Vec::new(), String::new());
    };
    let platform = match (
        v.get("os").and_then(|x| x.as_str()),
        v.get("architecture").and_then(|x| x.as_str()),
    ) {
        (Some(os), Some(arch)) => match v.get("variant").and_then(|x| x.as_str()) {
            Some(var) => format!("{os}/{arch}/{var}"),
            None => format!("{os}/{arch}"),
        },
        _ => String::new(),
    };
    let rows = v
        .get("history")
        .and_then(|h| h.as_array())
        .map(|h| {
            h.iter()
                .map(|e| {
                    let raw = e
                        .get("created_by")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .trim();
                    let step = if let Some(rest) = raw.strip_prefix("/bin/sh -c #(nop)") {
                        rest.trim().to_string()
                    } else if let Some(rest) = raw.strip_prefix("/bin/sh -c ") {
                        format!("RUN {}", rest.trim())
                    } else if raw.is_empty() {
                        e.get("comment")
                            .and_then(|c| c.as_str())
                            .unwrap_or("(no command recorded)")
                            .to_string()
                    } else {
                        raw.to_string()
                    };
                    HistoryRow {
                        step,
                        empty_layer: e
                            .get("empty_layer")
                            .and_then(|b| b.as_bool())
                            .unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    (rows, platform)
}

/// The runtime settings of an image config (`config.Entrypoint`, `Cmd`, `Env`,
/// `ExposedPorts`, `User`, `WorkingDir`, `Labels`); empty when there are none.
pub fn image_config(config: &[u8]) -> ImageConfigView {
    use serde_json::Value;
    let Ok(v) = serde_json::from_slice::<Value>(config) else {
        return ImageConfigView::default();
    };
    let Some(c) = v.get("config").filter(|c| c.is_object()) else {
        return ImageConfigView::default();
    };
    let text = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // Exec form, as the Dockerfile would write it.
    let exec = |k: &str| match c.get(k) {
        Some(a @ Value::Array(items)) if !items.is_empty() => a.to_string(),
        _ => String::new(),
    };
    let mut exposed_ports: Vec<String> = c
        .get("ExposedPorts")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    exposed_ports.sort();
    ImageConfigView {
        entrypoint: exec("Entrypoint"),
        cmd: exec("Cmd"),
        env: c
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        exposed_ports,
        user: text("User"),
        working_dir: text("WorkingDir"),
        labels: c
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// An annotation value worth a link: an http(s) URL without spaces or quotes.
fn is_link(v: &str) -> bool {
    (v.starts_with("https://") || v.starts_with("http://"))
        && v.len() <= 2048
        && !v.contains(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
}

/// Reads the config blob through a repository that links it (named by handle or DID).
async fn read_config(
    state: &AppState,
    names: &[String],
    digest: &Digest,
) -> Result<Vec<u8>, String> {
    use futures_util::TryStreamExt;
    for n in names {
        let Ok(name) = n.parse::<Name>() else {
            continue;
        };
        let Ok(size) = state.registry.blob_size(&name, digest).await else {
            continue;
        };
        if size > MAX_CONFIG_BYTES {
            return Err(format!(
                "The image config is {} (over the 1 MiB this page reads).",
                human_size(size)
            ));
        }
        let read = state
            .registry
            .blob_read(&name, digest, None)
            .await
            .map_err(|e| e.to_string())?;
        let chunks: Vec<bytes::Bytes> =
            read.stream.try_collect().await.map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(size as usize);
        for c in chunks {
            out.extend_from_slice(&c);
            if out.len() as u64 > MAX_CONFIG_BYTES {
                return Err("The image config is over 1 MiB.".into());
            }
        }
        return Ok(out);
    }
    Err("The image config is not stored on this registry's hold.".into())
}

async fn manifest(
    state: &Arc<AppState>,
    ctx: &Ctx,
    who: &str,
    repo: &str,
    digest: &str,
) -> WebResult {
    let ix = index(state)?;
    let Owner {
        did, shown: owner, ..
    } = find_owner(state, ix, who).await?;
    let Some(m) = ix.manifest(&did, repo, digest).await.map_err(ix_err)? else {
        return Err(WebError::NotFound(format!(
            "{owner}/{repo} has no manifest {digest}."
        )));
    };
    let mut history = Vec::new();
    let mut history_note = String::new();
    let mut platform = String::new();
    let mut config = ImageConfigView::default();
    if let Some(cd) = m
        .config_digest
        .as_deref()
        .and_then(|d| d.parse::<Digest>().ok())
    {
        let names = [
            format!("{owner}/{repo}"),
            format!("{did}/{repo}"),
            format!("{who}/{repo}"),
        ];
        match read_config(state, &names, &cd).await {
            Ok(bytes) => {
                (history, platform) = config_history(&bytes);
                config = image_config(&bytes);
            }
            Err(e) => history_note = e,
        }
    } else if !m.children.is_empty() {
        history_note =
            "A multi-platform index has no history of its own; open a platform above.".into();
    }
    // Each non-empty history step made one layer, in order.
    let mut steps = history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.step.clone());
    let layers = m
        .layers
        .iter()
        .map(|l| LayerRow {
            short_digest: short_digest(&l.digest),
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: human_size(l.size.max(0) as u64),
            step: steps.next().unwrap_or_default(),
        })
        .collect();
    let href = |d: &str| format!("/r/{owner}/{repo}/manifests/{d}");
    let children = m
        .children
        .iter()
        .map(|c| ChildRow {
            platform: c
                .platform
                .as_ref()
                .map(platform_str)
                .unwrap_or_else(|| "unknown".into()),
            href: href(&c.digest),
            short_digest: short_digest(&c.digest),
            digest: c.digest.clone(),
            size: human_size(c.size.max(0) as u64),
            kind: String::new(),
            kind_class: "",
            image_size: c
                .image_size
                .map(|s| human_size(s.max(0) as u64))
                .unwrap_or_default(),
        })
        .collect();
    let mut referrers: Vec<ChildRow> = Vec::new();
    let names = [format!("{owner}/{repo}"), format!("{did}/{repo}")];
    for r in &m.referrers {
        // Manifest records carry no artifactType; the manifest itself does.
        let t = match &r.artifact_type {
            Some(t) => t.clone(),
            None => super::scans::artifact_type(state, &names, &r.digest)
                .await
                .unwrap_or_else(|| r.media_type.clone()),
        };
        let (kind, kind_class) = super::scans::referrer_kind(&t);
        referrers.push(ChildRow {
            platform: t,
            href: href(&r.digest),
            short_digest: short_digest(&r.digest),
            digest: r.digest.clone(),
            size: String::new(),
            kind: kind.to_string(),
            kind_class,
            image_size: String::new(),
        });
    }
    // cosign's tag scheme (`sha256-<hex>.sig` / `.att` / `.sbom`) before OCI referrers.
    for t in ix.tags(&did, repo, 500, 0).await.map_err(ix_err)? {
        if let Some(kind) = super::scans::cosign_tag_kind(&t.tag, &m.digest) {
            referrers.push(ChildRow {
                platform: format!("tag {}", t.tag),
                href: href(&t.digest),
                short_digest: short_digest(&t.digest),
                digest: t.digest.clone(),
                size: String::new(),
                kind: kind.to_string(),
                kind_class: if kind.starts_with("SBOM") {
                    "kind-sbom"
                } else if kind.starts_with("Signature") {
                    "kind-sig"
                } else {
                    "kind-att"
                },
                image_size: String::new(),
            });
        }
    }
    let platforms: Vec<(String, String, String)> = m
        .children
        .iter()
        .map(|c| {
            (
                c.platform
                    .as_ref()
                    .map(platform_str)
                    .unwrap_or_else(|| "unknown".into()),
                c.digest.clone(),
                href(&c.digest),
            )
        })
        .collect();
    let scan = super::scans::section(
        state,
        ctx,
        &did,
        repo,
        &m.digest,
        m.hold_did.as_deref(),
        &platforms,
        &href(&m.digest),
    )
    .await;
    let pull_ref = match m.tags.first() {
        Some(t) => format!(":{t}"),
        None => format!("@{}", m.digest),
    };
    if platform.is_empty() {
        if let Some(p) = &m.platform {
            platform = platform_str(p);
        }
    }
    let source_url = m
        .annotations
        .get("org.opencontainers.image.source")
        .filter(|v| is_link(v))
        .cloned()
        .unwrap_or_default();
    render(&ManifestPage {
        chrome: ctx.chrome(format!("{owner}/{repo} {}", short_digest(&m.digest))),
        repo_href: format!("/r/{owner}/{repo}"),
        pull: format!("docker pull {}/{owner}/{repo}{pull_ref}", ctx.host),
        pull_digest: format!("docker pull {}/{owner}/{repo}@{}", ctx.host, m.digest),
        short_digest: short_digest(&m.digest),
        tags: m.tags.clone(),
        config,
        source_url,
        owner,
        repo: repo.to_string(),
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        total_size: m
            .total_size
            .map(|s| human_size(s.max(0) as u64))
            .unwrap_or_default(),
        platform,
        layers,
        children,
        history,
        history_note,
        annotations: m
            .annotations
            .into_iter()
            .map(|(key, value)| AnnotationRow {
                link: is_link(&value),
                key,
                value,
            })
            .collect(),
        referrers,
        scan,
    })
}

/// `/u/<handle>?page=N`: the user's repositories, [`USER_PAGE`] at a time (page 1 first;
/// a missing or bad `page` is page 1, as the other pages treat bad paging parameters),
/// and their stars.
pub async fn user(state: &Arc<AppState>, ctx: &Ctx, who: &str, page: u32) -> WebResult {
    let ix = index(state)?;
    let Owner {
        did,
        shown: handle,
        has_avatar,
    } = find_owner(state, ix, who).await?;
    let now = now();
    // Capped so the offset stays in range (600k repositories is far beyond any user).
    let page = page.clamp(1, 10_000);
    let (repos, more) = ix
        .user_repos_page(&did, USER_PAGE, (page - 1) * USER_PAGE)
        .await
        .map_err(ix_err)?;
    let repos = repos.iter().map(|r| card(r, now)).collect();
    let base = format!("/u/{handle}");
    let newer_href = match page {
        1 => String::new(),
        2 => base.clone(),
        p => format!("{base}?page={}", p - 1),
    };
    let older_href = if more {
        format!("{base}?page={}", page + 1)
    } else {
        String::new()
    };
    let stars = ix
        .user_stars(&did)
        .await
        .map_err(ix_err)?
        .iter()
        .map(|r| card(r, now))
        .collect();
    render(&UserPage {
        chrome: ctx.chrome(handle.clone()),
        handle,
        did,
        has_avatar,
        repos,
        page,
        newer_href,
        older_href,
        stars,
    })
}

/// `/avatar/<did>`: the user's profile avatar, fetched from their PDS and served from here
/// ([`super::avatars`]). 404 when the index knows none or it cannot be had.
pub async fn avatar(
    state: &Arc<AppState>,
    did: &str,
    repo: Option<&str>,
    if_none_match: Option<&str>,
    head: bool,
) -> WebResult {
    let none = || WebError::NotFound("No avatar.".into());
    if !did.starts_with("did:") {
        return Err(none());
    }
    let ix = index(state)?;
    let user = ix
        .user_by_handle_or_did(did)
        .await
        .map_err(ix_err)?
        .filter(|u| u.did == did)
        .ok_or_else(none)?;
    let xrpc = state.auth.resolver().xrpc();
    let image = match repo {
        // A repository page's avatar: the blob its io.atcr.repo.page names, on the
        // owner's PDS.
        Some(repo) => {
            let cid = ix
                .repository(did, repo)
                .await
                .map_err(ix_err)?
                .and_then(|r| r.avatar_cid)
                .ok_or_else(none)?;
            let pds = user.pds.clone().ok_or_else(none)?;
            state
                .web
                .avatars
                .get_repo(xrpc, &pds, did, repo, &cid)
                .await
        }
        None => {
            let (pds, cid) = user
                .avatar
                .as_deref()
                .and_then(super::avatars::parse_avatar_url)
                .ok_or_else(none)?;
            state.web.avatars.get(xrpc, &pds, did, &cid).await
        }
    }
    .ok_or_else(none)?;
    let mut resp = super::assets::conditional(
        &format!("\"{}\"", image.cid),
        "public, max-age=3600",
        if_none_match,
        image.content_type,
        image.bytes,
        head,
    );
    resp.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("default-src 'none'"),
    );
    Ok(resp)
}

/// Generic over the body (only the URI and headers are read), so benches can call it.
pub async fn search<B>(state: &Arc<AppState>, ctx: &Ctx, req: &Request<B>) -> WebResult {
    let ix = index(state)?;
    let q = query(req.uri());
    let text = query_get(&q, "q")
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    let owner = query_get(&q, "owner")
        .unwrap_or("")
        .trim()
        .trim_start_matches('@')
        .to_string();
    let arch = query_get(&q, "arch").unwrap_or("").trim().to_string();
    let critical = query_get(&q, "critical").is_some_and(|v| !v.is_empty() && v != "0");
    let offset: u32 = query_get(&q, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
        .min(100_000);
    let mut filters = SearchFilters::default();
    if !owner.is_empty() {
        match ix.user_by_handle_or_did(&owner).await.map_err(ix_err)? {
            Some(u) => filters.owner_did = Some(u.did),
            // An unknown owner matches nothing, rather than everything.
            None => filters.owner_did = Some(format!("unknown:{owner}")),
        }
    }
    if !arch.is_empty() {
        filters.architecture = Some(arch.clone());
    }
    filters.critical = critical;
    let found = ix
        .search(&text, &filters, SEARCH_PAGE, offset)
        .await
        .map_err(ix_err)?;
    let now = now();
    let shown = offset as i64 + found.results.len() as i64;
    let next_href = if shown < found.total && !found.results.is_empty() {
        // %20, not '+': the query decoder takes '+' literally.
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "/search?q={}&owner={}&arch={}{}&offset={shown}",
            enc(&text),
            enc(&owner),
            enc(&arch),
            if critical { "&critical=1" } else { "" }
        )
    } else {
        String::new()
    };
    let results = SearchResults {
        results: found.results.iter().map(|r| card(r, now)).collect(),
        next_href,
        first_page: offset == 0,
        q: text.clone(),
    };
    let restore = req.headers().contains_key("hx-history-restore-request");
    if ctx.htmx && !restore {
        return render(&results);
    }
    let results_html =
        askama::Template::render(&results).map_err(|e| WebError::Internal(e.to_string()))?;
    render(&SearchPage {
        chrome: ctx.chrome(if text.is_empty() {
            "Search".to_string()
        } else {
            format!("Search: {text}")
        }),
        q: text,
        owner,
        arch,
        critical,
        results_html,
    })
}

pub async fn star(state: &Arc<AppState>, ctx: &Ctx, req: Request<Incoming>) -> WebResult {
    let form = read_form(req).await?;
    let Some(user) = ctx.user() else {
        return Ok(redirect("/login", &[]));
    };
    ctx.check_csrf(&form)?;
    let ix = index(state)?;
    let (owner, repo) = (form.get("owner").to_string(), form.get("repo").to_string());
    let back = safe_next(form.get("back")).to_string();
    if crate::registry::records::page_rkey(&repo).is_none() {
        return Err(WebError::BadRequest(format!(
            "{repo} is a nested repository name; it has no io.atcr.repo.page a star could name."
        )));
    }
    if ix
        .repository(&owner, &repo)
        .await
        .map_err(ix_err)?
        .is_none()
    {
        return Err(WebError::NotFound(format!(
            "No repository {repo} of {owner}."
        )));
    }
    let existing = ix
        .star_rkey(&user.did, &owner, &repo)
        .await
        .map_err(ix_err)?;
    let xrpc = state.auth.resolver().xrpc().clone();
    let did = user.did.clone();
    let pds_err = |e: crate::auth::sessions::SessionError| match e {
        crate::auth::sessions::SessionError::Missing(_)
        | crate::auth::sessions::SessionError::Revoked(_)
        | crate::auth::sessions::SessionError::Corrupt(_) => WebError::Forbidden(
            "Your PDS session on this registry is gone; log out and log in again.".into(),
        ),
        other => WebError::Upstream(format!("Your PDS did not make the change: {other}")),
    };
    match (form.get("action"), existing) {
        ("star", None) => {
            let rkey = crate::atproto::repo::tid::Tid::now().as_str().to_string();
            let record = crate::atproto::records::SailorStar {
                subject: crate::registry::records::at_uri(&owner, PAGE_NSID, &repo),
                created_at: crate::pds::now_rfc3339(),
            };
            let record = crate::atproto::records::LexiconRecord::to_value(&record);
            state
                .auth
                .sessions
                .with_agent(&did, |s| {
                    let (xrpc, did, rkey, record) =
                        (xrpc.clone(), did.clone(), rkey.clone(), record.clone());
                    async move {
                        xrpc.put_record(&s.pds, &s.auth, &did, STAR_NSID, &rkey, &record)
                            .await
                    }
                })
                .await
                .map_err(pds_err)?;
            ix.put_star(&did, &rkey, &owner, &repo)
                .await
                .map_err(ix_err)?;
            tracing::info!(%did, %owner, %repo, "starred");
        }
        ("unstar", Some(rkey)) => {
            state
                .auth
                .sessions
                .with_agent(&did, |s| {
                    let (xrpc, did, rkey) = (xrpc.clone(), did.clone(), rkey.clone());
                    async move {
                        xrpc.delete_record(&s.pds, &s.auth, &did, STAR_NSID, &rkey)
                            .await
                    }
                })
                .await
                .map_err(pds_err)?;
            ix.delete_star(&did, &rkey).await.map_err(ix_err)?;
            tracing::info!(%did, %owner, %repo, "unstarred");
        }
        // Already in the wanted state (a double submit): nothing to do.
        ("star", Some(_)) | ("unstar", None) => {}
        _ => return Err(WebError::BadRequest("action must be star or unstar".into())),
    }
    Ok(redirect(&back, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_unix() {
        assert_eq!(unix_of("1970-01-01T00:00:00Z"), 0);
        assert_eq!(unix_of("2023-11-14T22:13:20Z"), 1_700_000_000);
        assert_eq!(unix_of("2023-11-14T22:13:20.123Z"), 1_700_000_000);
        assert_eq!(unix_of("2023-11-15T00:13:20+02:00"), 1_700_000_000);
        assert_eq!(unix_of("2000-02-29T00:00:00Z"), 951_782_400);
        assert_eq!(unix_of("garbage"), 0);
    }

    #[test]
    fn history_as_dockerfile_steps() {
        let cfg = br#"{"architecture":"arm64","os":"linux","variant":"v8","history":[
            {"created_by":"/bin/sh -c #(nop) ADD file:abc in / "},
            {"created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true},
            {"created_by":"/bin/sh -c apk add curl"},
            {"created_by":"RUN /bin/sh -c make # buildkit"},
            {"comment":"imported"}]}"#;
        let (rows, platform) = config_history(cfg);
        assert_eq!(platform, "linux/arm64/v8");
        let steps: Vec<_> = rows.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(
            steps,
            [
                "ADD file:abc in /",
                "CMD [\"sh\"]",
                "RUN apk add curl",
                "RUN /bin/sh -c make # buildkit",
                "imported"
            ]
        );
        assert!(rows[1].empty_layer && !rows[0].empty_layer);
        assert!(config_history(b"not json").0.is_empty());
    }
}
