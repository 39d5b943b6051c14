//! The typed read API (what the web UI renders). Names are stable: add, don't rename.
//! Lists are paged with `limit` + `offset`; timestamps are the RFC 3339 strings of the
//! records (or of the moment this AppView saw them).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Index, Result};

/// Largest page any list query returns.
pub const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserInfo {
    pub did: String,
    pub handle: Option<String>,
    pub pds: Option<String>,
    pub avatar: Option<String>,
    pub default_hold: Option<String>,
}

/// A repository in a list (home page, user page, search results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoSummary {
    pub did: String,
    pub handle: Option<String>,
    pub name: String,
    /// The repo page's description, else the `org.opencontainers.image.description`
    /// annotation.
    pub description: Option<String>,
    pub star_count: i64,
    pub pull_count: i64,
    pub push_count: i64,
    pub last_push: Option<String>,
    /// The most recently updated tag.
    pub latest_tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepositoryInfo {
    #[serde(flatten)]
    pub summary: RepoSummary,
    /// `page` (the `io.atcr.repo.page` record) or `annotation`.
    pub description_source: Option<String>,
    /// CID of the repo page's avatar blob (on the owner's PDS).
    pub avatar_cid: Option<String>,
    /// The repo page record exists (its subject is what stars name).
    pub has_page: bool,
    /// The owner edited the page (`userEdited`): pushes no longer change it.
    pub user_edited: bool,
    pub annotations: BTreeMap<String, String>,
    pub tag_count: i64,
    pub manifest_count: i64,
    pub last_pull: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagInfo {
    pub tag: String,
    pub digest: String,
    pub media_type: Option<String>,
    /// Config + layers; for an index, the sum over its children that are indexed.
    pub total_size: Option<i64>,
    /// When the manifest was created (its record's `createdAt`).
    pub created_at: Option<String>,
    /// When the tag was last written.
    pub pushed_at: String,
    /// Platforms of an index's children (attestations' `unknown/unknown` left out), or
    /// the one platform of a single image (from its config; empty until it was read).
    pub platforms: Vec<Platform>,
    /// For an index: each listed child's image size (config + layers) when it is indexed,
    /// in the order of `platforms`. Empty for single images (`total_size` is theirs).
    pub image_sizes: Vec<Option<i64>>,
}

/// A tag just pushed, for the home page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentPush {
    pub did: String,
    pub handle: Option<String>,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: Option<String>,
    pub pushed_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: i64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildManifest {
    pub digest: String,
    /// The child manifest's own size in bytes (what the index records).
    pub size: i64,
    pub media_type: String,
    pub platform: Option<Platform>,
    /// The child image's size (config + layers) when the child is indexed.
    pub image_size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestInfo {
    pub did: String,
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub schema_version: i64,
    pub config_digest: Option<String>,
    pub config_size: Option<i64>,
    pub total_size: Option<i64>,
    pub artifact_type: Option<String>,
    pub hold_did: Option<String>,
    pub created_at: String,
    pub annotations: BTreeMap<String, String>,
    pub layers: Vec<LayerInfo>,
    pub children: Vec<ChildManifest>,
    /// The manifest this one refers to (signatures, SBOMs, attestations).
    pub subject: Option<String>,
    /// Manifests whose subject is this one.
    pub referrers: Vec<Referrer>,
    pub tags: Vec<String>,
    /// A single image's platform, from its config (`None` for an index, or not read yet).
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchFilters {
    /// Only repositories of this DID.
    pub owner_did: Option<String>,
    /// Only repositories with a manifest for this architecture (`amd64`, `arm64`, ...).
    pub architecture: Option<String>,
    /// Only repositories with a tagged image (or a platform of one) that has critical
    /// vulnerabilities (`scans`).
    pub critical: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResults {
    pub results: Vec<RepoSummary>,
    /// All matches (for pagination).
    pub total: i64,
}

/// A hold's captain record, as cached from the hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldCaptain {
    pub hold_did: String,
    pub owner_did: String,
    pub public: bool,
    pub allow_all_crew: bool,
    pub deployed_at: Option<String>,
    pub region: Option<String>,
    pub provider: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStats {
    pub users: i64,
    pub repositories: i64,
    pub manifests: i64,
    pub tags: i64,
    pub stars: i64,
    pub pulls: i64,
    pub pushes: i64,
}

const REPO_SELECT: &str = "SELECT r.did, u.handle, r.name,
    COALESCE(p.description, (SELECT a.value FROM repository_annotations a
        WHERE a.did = r.did AND a.repository = r.name
          AND a.key = 'org.opencontainers.image.description')),
    COALESCE(st.star_count, 0), COALESCE(st.pull_count, 0), COALESCE(st.push_count, 0), st.last_push,
    (SELECT t.tag FROM tags t WHERE t.did = r.did AND t.repository = r.name AND t.digest != ''
        ORDER BY t.updated_at DESC, t.tag LIMIT 1)
  FROM repositories r
  LEFT JOIN users u ON u.did = r.did
  LEFT JOIN repo_pages p ON p.did = r.did AND p.repository = r.name
  LEFT JOIN repository_stats st ON st.did = r.did AND st.repository = r.name";

fn repo_summary(row: &libsql::Row) -> Result<RepoSummary> {
    repo_summary_at(row, 0)
}

/// The [`REPO_SELECT`] columns from column `b` on.
fn repo_summary_at(row: &libsql::Row, b: i32) -> Result<RepoSummary> {
    Ok(RepoSummary {
        did: row.get(b)?,
        handle: row.get(b + 1)?,
        name: row.get(b + 2)?,
        description: row.get(b + 3)?,
        star_count: row.get(b + 4)?,
        pull_count: row.get(b + 5)?,
        push_count: row.get(b + 6)?,
        last_push: row.get(b + 7)?,
        latest_tag: row.get(b + 8)?,
    })
}

fn page(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}

/// `foo bar` -> `"foo"* "bar"*` (each word a quoted prefix term, all required), so user
/// input can never be FTS5 syntax.
fn fts_query(q: &str) -> Option<String> {
    let terms: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| format!("\"{}\"*", t.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Index {
    async fn repo_list(
        &self,
        sql_tail: &str,
        params: Vec<libsql::Value>,
    ) -> Result<Vec<RepoSummary>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(&format!("{REPO_SELECT} {sql_tail}"), params)
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(repo_summary(&r)?);
        }
        Ok(out)
    }

    /// The latest tag writes, newest first.
    pub async fn recent_pushes(&self, limit: u32) -> Result<Vec<RecentPush>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT t.did, u.handle, t.repository, t.tag, t.digest, m.media_type, t.updated_at
                 FROM tags t
                 LEFT JOIN users u ON u.did = t.did
                 LEFT JOIN manifests m ON m.did = t.did AND m.repository = t.repository
                      AND m.digest = t.digest
                 WHERE t.digest != ''
                 ORDER BY t.updated_at DESC LIMIT ?1",
                [page(limit)],
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(RecentPush {
                did: r.get(0)?,
                handle: r.get(1)?,
                repository: r.get(2)?,
                tag: r.get(3)?,
                digest: r.get(4)?,
                media_type: r.get(5)?,
                pushed_at: r.get(6)?,
            });
        }
        Ok(out)
    }

    /// Repositories with stars or pulls: by stars, then pulls, then recency (the top rows
    /// of `repository_stats_popular`, whatever the number of repositories).
    pub async fn popular_repos(&self, limit: u32) -> Result<Vec<RepoSummary>> {
        self.repo_list(
            "WHERE (r.did, r.name) IN (SELECT did, repository FROM repository_stats
                 WHERE star_count > 0 OR pull_count > 0
                 ORDER BY star_count DESC, pull_count DESC, last_push DESC LIMIT ?1)
             ORDER BY st.star_count DESC, st.pull_count DESC, st.last_push DESC, r.name",
            vec![page(limit).into()],
        )
        .await
    }

    /// One repository, or `None` when the index has never seen it.
    pub async fn repository(&self, did: &str, repo: &str) -> Result<Option<RepositoryInfo>> {
        let Some(summary) = self
            .repo_list(
                "WHERE r.did = ?1 AND r.name = ?2",
                vec![did.into(), repo.into()],
            )
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT p.description IS NOT NULL, p.avatar_cid, p.repository IS NOT NULL,
                    COALESCE(p.user_edited, 0),
                    (SELECT COUNT(*) FROM tags t WHERE t.did = r.did AND t.repository = r.name
                        AND t.digest != ''),
                    (SELECT COUNT(*) FROM manifests m WHERE m.did = r.did AND m.repository = r.name),
                    st.last_pull, r.created_at
                 FROM repositories r
                 LEFT JOIN repo_pages p ON p.did = r.did AND p.repository = r.name
                 LEFT JOIN repository_stats st ON st.did = r.did AND st.repository = r.name
                 WHERE r.did = ?1 AND r.name = ?2",
                (did, repo),
            )
            .await?;
        let Some(row) = rows.next().await? else {
            return Ok(None);
        };
        let from_page: i64 = row.get(0)?;
        let description_source = match (&summary.description, from_page) {
            (None, _) => None,
            (Some(_), 1) => Some("page".to_string()),
            (Some(_), _) => Some("annotation".to_string()),
        };
        let avatar_cid: Option<String> = row.get(1)?;
        let has_page: i64 = row.get(2)?;
        let user_edited: i64 = row.get(3)?;
        let tag_count: i64 = row.get(4)?;
        let manifest_count: i64 = row.get(5)?;
        let last_pull: Option<String> = row.get(6)?;
        let created_at: String = row.get(7)?;
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT key, value FROM repository_annotations WHERE did = ?1 AND repository = ?2",
                (did, repo),
            )
            .await?;
        let mut annotations = BTreeMap::new();
        while let Some(r) = rows.next().await? {
            annotations.insert(r.get::<String>(0)?, r.get::<String>(1)?);
        }
        Ok(Some(RepositoryInfo {
            summary,
            description_source,
            avatar_cid,
            has_page: has_page != 0,
            user_edited: user_edited != 0,
            annotations,
            tag_count,
            manifest_count,
            last_pull,
            created_at,
        }))
    }

    /// Tags of a repository, most recently pushed first.
    pub async fn tags(
        &self,
        did: &str,
        repo: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<TagInfo>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT t.tag, t.digest, m.media_type,
                    COALESCE(m.total_size, (SELECT SUM(c.total_size) FROM manifest_references mr
                        JOIN manifests c ON c.did = mr.did AND c.repository = mr.repository
                             AND c.digest = mr.digest
                        WHERE mr.did = t.did AND mr.repository = t.repository
                          AND mr.manifest_digest = t.digest)),
                    m.created_at, t.updated_at
                 FROM tags t
                 LEFT JOIN manifests m ON m.did = t.did AND m.repository = t.repository
                      AND m.digest = t.digest
                 WHERE t.did = ?1 AND t.repository = ?2 AND t.digest != ''
                 ORDER BY t.updated_at DESC, t.tag LIMIT ?3 OFFSET ?4",
                libsql::params![did, repo, page(limit), i64::from(offset)],
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(TagInfo {
                tag: r.get(0)?,
                digest: r.get(1)?,
                media_type: r.get(2)?,
                total_size: r.get(3)?,
                created_at: r.get(4)?,
                pushed_at: r.get(5)?,
                platforms: Vec::new(),
                image_sizes: Vec::new(),
            });
        }
        drop(rows);
        for t in &mut out {
            (t.platforms, t.image_sizes) = platforms(&conn, did, repo, &t.digest).await?;
        }
        Ok(out)
    }

    /// One manifest with its layers, children, annotations, subject and referrers.
    pub async fn manifest(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ManifestInfo>> {
        let conn = self.reader().await;
        let key = (did, repo, digest);
        let mut rows = conn
            .query(
                "SELECT media_type, schema_version, config_digest, config_size, total_size,
                    artifact_type, hold_did, created_at, subject_digest, os, architecture, variant
                 FROM manifests WHERE did = ?1 AND repository = ?2 AND digest = ?3",
                key,
            )
            .await?;
        let Some(r) = rows.next().await? else {
            return Ok(None);
        };
        let mut m = ManifestInfo {
            did: did.into(),
            repository: repo.into(),
            digest: digest.into(),
            media_type: r.get(0)?,
            schema_version: r.get(1)?,
            config_digest: r.get(2)?,
            config_size: r.get(3)?,
            total_size: r.get(4)?,
            artifact_type: r.get(5)?,
            hold_did: r.get(6)?,
            created_at: r.get(7)?,
            subject: r.get(8)?,
            platform: match (r.get::<Option<String>>(9)?, r.get::<Option<String>>(10)?) {
                (None, None) => None,
                (os, architecture) => Some(Platform {
                    os,
                    architecture,
                    variant: r.get(11)?,
                }),
            },
            annotations: BTreeMap::new(),
            layers: Vec::new(),
            children: Vec::new(),
            referrers: Vec::new(),
            tags: Vec::new(),
        };
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT digest, size, media_type FROM layers
                 WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3 ORDER BY position",
                key,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            m.layers.push(LayerInfo {
                digest: r.get(0)?,
                size: r.get(1)?,
                media_type: r.get(2)?,
            });
        }
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT mr.digest, mr.size, mr.media_type, mr.os, mr.architecture, mr.variant,
                    c.total_size
                 FROM manifest_references mr
                 LEFT JOIN manifests c ON c.did = mr.did AND c.repository = mr.repository
                      AND c.digest = mr.digest
                 WHERE mr.did = ?1 AND mr.repository = ?2 AND mr.manifest_digest = ?3
                 ORDER BY mr.position",
                key,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            let p = Platform {
                os: r.get(3)?,
                architecture: r.get(4)?,
                variant: r.get(5)?,
            };
            let has = p.os.is_some() || p.architecture.is_some();
            m.children.push(ChildManifest {
                digest: r.get(0)?,
                size: r.get(1)?,
                media_type: r.get(2)?,
                platform: has.then_some(p),
                image_size: r.get(6)?,
            });
        }
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT key, value FROM manifest_annotations
                 WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3",
                key,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            m.annotations.insert(r.get(0)?, r.get(1)?);
        }
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT digest, media_type, artifact_type, created_at FROM manifests
                 WHERE did = ?1 AND repository = ?2 AND subject_digest = ?3 ORDER BY created_at",
                key,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            m.referrers.push(Referrer {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                artifact_type: r.get(2)?,
                created_at: r.get(3)?,
            });
        }
        drop(rows);
        let mut rows = conn
            .query(
                "SELECT tag FROM tags WHERE did = ?1 AND repository = ?2 AND digest = ?3 ORDER BY tag",
                key,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            m.tags.push(r.get(0)?);
        }
        Ok(Some(m))
    }

    /// A user by DID or handle (case-insensitive).
    pub async fn user_by_handle_or_did(&self, x: &str) -> Result<Option<UserInfo>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT did, handle, pds, avatar, default_hold FROM users
                 WHERE did = ?1 OR handle = lower(?1) LIMIT 1",
                [x],
            )
            .await?;
        let Some(r) = rows.next().await? else {
            return Ok(None);
        };
        Ok(Some(UserInfo {
            did: r.get(0)?,
            handle: r.get(1)?,
            pds: r.get(2)?,
            avatar: r.get(3)?,
            default_hold: r.get(4)?,
        }))
    }

    /// A user's repositories, most recently pushed first.
    pub async fn user_repos(&self, did: &str) -> Result<Vec<RepoSummary>> {
        self.repo_list(
            "WHERE r.did = ?1 ORDER BY st.last_push DESC, r.name LIMIT 1000",
            vec![did.into()],
        )
        .await
    }

    /// One page of a user's repositories (the user page), ordered as [`Self::user_repos`]:
    /// most recently pushed first, then by name (unique per owner, so the order is total
    /// and pages never overlap or skip). Reads `limit + 1` keys: the bool says whether a
    /// later page exists.
    ///
    /// LIMIT/OFFSET, not a seek: no index orders a user's repositories by last push, so a
    /// seek would read and sort the same keys; the inner query sorts only the keys (no
    /// per-repository subqueries), and only the page's rows get their summaries.
    pub async fn user_repos_page(
        &self,
        did: &str,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        let n = page(limit);
        let mut repos = self
            .repo_list(
                "WHERE r.rowid IN (SELECT k.rowid FROM repositories k
                     LEFT JOIN repository_stats ks ON ks.did = k.did AND ks.repository = k.name
                     WHERE k.did = ?1 ORDER BY ks.last_push DESC, k.name LIMIT ?2 OFFSET ?3)
                 ORDER BY st.last_push DESC, r.name",
                vec![did.into(), (n + 1).into(), i64::from(offset).into()],
            )
            .await?;
        let more = repos.len() as i64 > n;
        repos.truncate(n as usize);
        Ok((repos, more))
    }

    /// Repositories a user starred, latest star first.
    pub async fn user_stars(&self, did: &str) -> Result<Vec<RepoSummary>> {
        self.repo_list(
            "JOIN stars mine ON mine.owner_did = r.did AND mine.repository = r.name
             WHERE mine.starrer_did = ?1 ORDER BY mine.created_at DESC LIMIT 1000",
            vec![did.into()],
        )
        .await
    }

    pub async fn is_starred(&self, starrer_did: &str, owner_did: &str, repo: &str) -> Result<bool> {
        Ok(self
            .star_rkey(starrer_did, owner_did, repo)
            .await?
            .is_some())
    }

    /// The rkey of the starrer's `io.atcr.sailor.star` record for a repository (to delete it).
    pub async fn star_rkey(
        &self,
        starrer_did: &str,
        owner_did: &str,
        repo: &str,
    ) -> Result<Option<String>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT rkey FROM stars WHERE starrer_did = ?1 AND owner_did = ?2 AND repository = ?3
                 LIMIT 1",
                (starrer_did, owner_did, repo),
            )
            .await?;
        Ok(match rows.next().await? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    /// Full-text search over handles, repository names, descriptions and annotations
    /// (every word must match, as a prefix). An empty query lists everything, newest first.
    pub async fn search(
        &self,
        query: &str,
        filters: &SearchFilters,
        limit: u32,
        offset: u32,
    ) -> Result<SearchResults> {
        let mut conds = Vec::new();
        let mut params: Vec<libsql::Value> = Vec::new();
        let fts = fts_query(query);
        if let Some(q) = &fts {
            params.push(q.clone().into());
        }
        if let Some(o) = &filters.owner_did {
            params.push(o.clone().into());
            conds.push(format!("r.did = ?{}", params.len()));
        }
        if let Some(a) = &filters.architecture {
            params.push(a.clone().into());
            let n = params.len();
            // An index's children, or a single image's own platform (from its config).
            conds.push(format!(
                "(EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.did = r.did
                    AND mr.repository = r.name AND mr.architecture = ?{n})
                  OR EXISTS (SELECT 1 FROM manifests m WHERE m.did = r.did
                    AND m.repository = r.name AND m.architecture = ?{n}))"
            ));
        }
        if filters.critical {
            conds.push(super::scans::CRITICAL_FILTER.to_string());
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        // Text: the matches, each scored once by the FTS query (bm25 over the weighted
        // columns: handle, name, description, annotations), best first, ties newest
        // repository first; nothing but the FTS table is read for a page without filters.
        // No text: the most recent push first, read down `repository_stats_last_push`
        // (every repository has a stats row).
        let fts_from = "FROM (SELECT rowid AS fid, bm25(search_fts, 2.0, 4.0, 1.0, 0.5) AS score
                   FROM search_fts WHERE search_fts MATCH ?1) f";
        let (from, page_from, order) = match (&fts, conds.is_empty()) {
            (Some(_), true) => (
                fts_from.to_string(),
                fts_from.to_string(),
                "f.score, f.fid DESC",
            ),
            (Some(_), false) => {
                let f = format!("{fts_from} JOIN repositories r ON r.rowid = f.fid");
                (f.clone(), f, "f.score, f.fid DESC")
            }
            (None, _) => (
                "FROM repositories r".to_string(),
                "FROM repository_stats st
                 JOIN repositories r ON r.did = st.did AND r.name = st.repository"
                    .to_string(),
                "st.last_push DESC, r.name",
            ),
        };
        let id = if fts.is_some() { "f.fid" } else { "r.rowid" };
        let conn = self.reader().await;
        let total = {
            let mut rows = conn
                .query(&format!("SELECT COUNT(*) {from} {filter}"), params.clone())
                .await?;
            match rows.next().await? {
                Some(r) => r.get::<i64>(0)?,
                None => 0,
            }
        };
        // The page's repositories first (row ids only), then their summaries: the
        // per-repository subqueries run for the page, not for every match.
        let mut p = params;
        p.push(page(limit).into());
        p.push(i64::from(offset).into());
        let (nl, no) = (p.len() - 1, p.len());
        let mut ids: Vec<i64> = Vec::new();
        {
            let mut rows = conn
                .query(
                    &format!(
                        "SELECT {id} {page_from} {filter} ORDER BY {order} LIMIT ?{nl} OFFSET ?{no}"
                    ),
                    p,
                )
                .await?;
            while let Some(r) = rows.next().await? {
                ids.push(r.get(0)?);
            }
        }
        drop(conn);
        if ids.is_empty() {
            return Ok(SearchResults {
                results: Vec::new(),
                total,
            });
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                &format!(
                    "SELECT r.rowid, {} WHERE r.rowid IN ({marks})",
                    REPO_SELECT.trim_start_matches("SELECT ")
                ),
                ids.iter()
                    .map(|&i| libsql::Value::from(i))
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut by_id = std::collections::HashMap::new();
        while let Some(r) = rows.next().await? {
            by_id.insert(r.get::<i64>(0)?, repo_summary_at(&r, 1)?);
        }
        let results = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        Ok(SearchResults { results, total })
    }

    /// Row counts for the admin/status page.
    pub async fn storage_stats(&self) -> Result<IndexStats> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM repositories),
                    (SELECT COUNT(*) FROM manifests), (SELECT COUNT(*) FROM tags),
                    (SELECT COUNT(*) FROM stars),
                    (SELECT COALESCE(SUM(pull_count), 0) FROM repository_stats),
                    (SELECT COALESCE(SUM(push_count), 0) FROM repository_stats)",
                (),
            )
            .await?;
        let r = rows
            .next()
            .await?
            .ok_or(libsql::Error::QueryReturnedNoRows)?;
        Ok(IndexStats {
            users: r.get(0)?,
            repositories: r.get(1)?,
            manifests: r.get(2)?,
            tags: r.get(3)?,
            stars: r.get(4)?,
            pulls: r.get(5)?,
            pushes: r.get(6)?,
        })
    }

    /// The cached captain record of a hold (fetched when a manifest first names it).
    pub async fn hold_captain(&self, hold_did: &str) -> Result<Option<HoldCaptain>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT hold_did, owner_did, public, allow_all_crew, deployed_at, region, provider,
                    updated_at FROM hold_captain_records WHERE hold_did = ?1",
                [hold_did],
            )
            .await?;
        let Some(r) = rows.next().await? else {
            return Ok(None);
        };
        Ok(Some(HoldCaptain {
            hold_did: r.get(0)?,
            owner_did: r.get(1)?,
            public: r.get::<i64>(2)? != 0,
            allow_all_crew: r.get::<i64>(3)? != 0,
            deployed_at: r.get(4)?,
            region: r.get(5)?,
            provider: r.get(6)?,
            updated_at: r.get(7)?,
        }))
    }

    /// The stored firehose cursor of a source (its websocket URL).
    pub async fn ingest_cursor(&self, source: &str) -> Result<Option<i64>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT cursor FROM ingest_cursor WHERE source = ?1",
                [source],
            )
            .await?;
        Ok(match rows.next().await? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    /// The record key of the owner's `io.atcr.manifest` record for (repository, digest),
    /// when the index has seen it (written here, or by another AppView on the firehose).
    pub async fn manifest_rkey(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<String>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT rkey FROM manifests WHERE did = ?1 AND repository = ?2 AND digest = ?3
                    AND rkey IS NOT NULL",
                (did, repo, digest),
            )
            .await?;
        Ok(match rows.next().await? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    /// rkeys of the tag records pointing at a digest (for a manifest delete).
    pub(crate) async fn tag_rkeys_for(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Vec<String>> {
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT rkey FROM tags WHERE did = ?1 AND repository = ?2 AND digest = ?3",
                (did, repo, digest),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(r.get(0)?);
        }
        Ok(out)
    }
}

/// The platforms a tag's manifest stands for, with each child's image size for an index:
/// an index's children (attestations, `unknown/unknown`, left out), else the single image's
/// own platform from its config.
async fn platforms(
    conn: &libsql::Connection,
    did: &str,
    repo: &str,
    digest: &str,
) -> Result<(Vec<Platform>, Vec<Option<i64>>)> {
    let mut rows = conn
        .query(
            "SELECT mr.os, mr.architecture, mr.variant, c.total_size FROM manifest_references mr
             LEFT JOIN manifests c ON c.did = mr.did AND c.repository = mr.repository
                  AND c.digest = mr.digest
             WHERE mr.did = ?1 AND mr.repository = ?2 AND mr.manifest_digest = ?3
               AND (mr.os IS NOT NULL OR mr.architecture IS NOT NULL)
               AND NOT (COALESCE(mr.os, '') = 'unknown' AND COALESCE(mr.architecture, '') = 'unknown')
             ORDER BY mr.position",
            (did, repo, digest),
        )
        .await?;
    let (mut out, mut sizes) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next().await? {
        out.push(Platform {
            os: r.get(0)?,
            architecture: r.get(1)?,
            variant: r.get(2)?,
        });
        sizes.push(r.get(3)?);
    }
    drop(rows);
    if out.is_empty() {
        let mut rows = conn
            .query(
                "SELECT os, architecture, variant FROM manifests
                 WHERE did = ?1 AND repository = ?2 AND digest = ?3 AND architecture IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.did = ?1
                       AND mr.repository = ?2 AND mr.manifest_digest = ?3)",
                (did, repo, digest),
            )
            .await?;
        if let Some(r) = rows.next().await? {
            out.push(Platform {
                os: r.get(0)?,
                architecture: r.get(1)?,
                variant: r.get(2)?,
            });
            sizes.clear();
        }
    }
    Ok((out, sizes))
}
