//! `io.atcr.*` records -> rows. Every source of records (direct writes after a push, the
//! firehose, the backfill) goes through [`Index::apply_records`], so the same record seen
//! twice is one idempotent upsert, and the firehose cursor commits with the rows it produced.
//!
//! Records are outside data: each field is bounded (the lexicon's maxLength, capped list
//! lengths); a record that does not check out is logged and skipped without failing the
//! rest of its commit.

use std::collections::{BTreeMap, BTreeSet};

// Writes go through the index's write plumbing (one request per transaction to a primary).
use super::write::Conn as Connection;
use serde_json::Value;

use super::{Index, IndexError, Result};
use crate::oci::types::{Digest, Name};
use crate::registry::records;

pub const MANIFEST_NSID: &str = "io.atcr.manifest";
pub const TAG_NSID: &str = "io.atcr.tag";
pub const PROFILE_NSID: &str = "io.atcr.sailor.profile";
pub const STAR_NSID: &str = "io.atcr.sailor.star";
pub const PAGE_NSID: &str = "io.atcr.repo.page";
/// The collections the index ingests.
pub const COLLECTIONS: [&str; 5] = [MANIFEST_NSID, TAG_NSID, PROFILE_NSID, STAR_NSID, PAGE_NSID];

const MAX_REFERENCES: usize = 10_000;
const MAX_ANNOTATIONS: usize = 256;
const MAX_ANNOTATION_VALUE: usize = 8 * 1024;
const MAX_DESCRIPTION: usize = 100_000;
/// `sha512:` + 128 hex digits.
const MAX_DIGEST: usize = 135;

/// Repositories (DID, name) whose full-text row is rewritten once, when the transaction's
/// changes are all applied: a batch of 200 firehose commits to one repository rewrites its
/// search row once, not 200 times.
type SearchDirty = BTreeSet<(String, String)>;

/// One record change in a repository (a DID's repo on its PDS).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    Upsert {
        collection: String,
        rkey: String,
        value: Value,
    },
    Delete {
        collection: String,
        rkey: String,
    },
}

impl RecordChange {
    pub fn collection(&self) -> &str {
        match self {
            RecordChange::Upsert { collection, .. } | RecordChange::Delete { collection, .. } => {
                collection
            }
        }
    }
}

fn invalid(m: impl Into<String>) -> IndexError {
    IndexError::InvalidRecord(m.into())
}

fn str_field<'a>(v: &'a Value, key: &str, max: usize) -> Result<&'a str> {
    let s = v
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{key} missing")))?;
    if s.is_empty() || s.len() > max {
        return Err(invalid(format!("{key} empty or longer than {max}")));
    }
    Ok(s)
}

fn opt_str(v: &Value, key: &str, max: usize) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| s.len() <= max)
        .map(str::to_string)
}

fn annotations_of(v: &Value) -> BTreeMap<String, String> {
    v.get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?)))
                .filter(|(k, v)| k.len() <= 256 && v.len() <= MAX_ANNOTATION_VALUE)
                .take(MAX_ANNOTATIONS)
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// (digest, size, mediaType) of a `#blobReference` / `#manifestReference`.
fn reference(v: &Value) -> Option<(String, i64, String)> {
    let digest = v.get("digest")?.as_str()?;
    if digest.len() > MAX_DIGEST || !digest.contains(':') {
        return None;
    }
    let size = v.get("size")?.as_i64()?.max(0);
    let mt = v
        .get("mediaType")
        .and_then(Value::as_str)
        .filter(|m| m.len() <= 255)
        .unwrap_or("");
    Some((digest.to_string(), size, mt.to_string()))
}

/// The DID's row exists; true when it was created now (the caller resolves its handle).
pub(super) async fn ensure_user(conn: &Connection, did: &str, now: &str) -> Result<bool> {
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO users (did, first_seen) VALUES (?1, ?2)",
            (did, now),
        )
        .await?;
    Ok(n == 1)
}

/// The repository's row exists; true when it was created now (its search row is new).
async fn ensure_repository(conn: &Connection, did: &str, repo: &str, now: &str) -> Result<bool> {
    let created = conn
        .execute(
            "INSERT OR IGNORE INTO repositories (did, name, created_at) VALUES (?1, ?2, ?3)",
            (did, repo, now),
        )
        .await?
        == 1;
    // Every repository has a stats row: the search's newest-first listing reads them.
    conn.execute(
        "INSERT OR IGNORE INTO repository_stats (did, repository) VALUES (?1, ?2)",
        (did, repo),
    )
    .await?;
    Ok(created)
}

/// Rewrite the repository's full-text row (handle, name, description, annotations).
pub(super) async fn refresh_search(conn: &Connection, did: &str, repo: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM search_fts WHERE rowid =
            (SELECT rowid FROM repositories WHERE did = ?1 AND name = ?2)",
        (did, repo),
    )
    .await?;
    conn.execute(
        "INSERT INTO search_fts (rowid, handle, name, description, annotations)
         SELECT r.rowid, COALESCE(u.handle, ''), r.name, COALESCE(p.description, ''),
                COALESCE((SELECT group_concat(a.value, ' ') FROM repository_annotations a
                          WHERE a.did = r.did AND a.repository = r.name), '')
         FROM repositories r
         LEFT JOIN users u ON u.did = r.did
         LEFT JOIN repo_pages p ON p.did = r.did AND p.repository = r.name
         WHERE r.did = ?1 AND r.name = ?2",
        (did, repo),
    )
    .await?;
    Ok(())
}

async fn refresh_user_search(conn: &Connection, did: &str) -> Result<()> {
    let mut rows = conn
        .query("SELECT name FROM repositories WHERE did = ?1", [did])
        .await?;
    let mut names = Vec::new();
    while let Some(r) = rows.next().await? {
        names.push(r.get::<String>(0)?);
    }
    drop(rows);
    for n in names {
        refresh_search(conn, did, &n).await?;
    }
    Ok(())
}

/// Drop a repository row (and its search row) once nothing refers to it any more.
async fn drop_repository_if_empty(conn: &Connection, did: &str, repo: &str) -> Result<()> {
    let mut rows = conn
        .query(
            "SELECT (SELECT COUNT(*) FROM manifests WHERE did = ?1 AND repository = ?2)
                  + (SELECT COUNT(*) FROM tags WHERE did = ?1 AND repository = ?2)
                  + (SELECT COUNT(*) FROM repo_pages WHERE did = ?1 AND repository = ?2)",
            (did, repo),
        )
        .await?;
    let left: i64 = match rows.next().await? {
        Some(r) => r.get(0)?,
        None => 0,
    };
    drop(rows);
    if left == 0 {
        conn.execute(
            "DELETE FROM search_fts WHERE rowid =
                (SELECT rowid FROM repositories WHERE did = ?1 AND name = ?2)",
            (did, repo),
        )
        .await?;
        conn.execute(
            "DELETE FROM repositories WHERE did = ?1 AND name = ?2",
            (did, repo),
        )
        .await?;
        conn.execute(
            "DELETE FROM repository_annotations WHERE did = ?1 AND repository = ?2",
            (did, repo),
        )
        .await?;
    }
    Ok(())
}

async fn touch_push(conn: &Connection, did: &str, repo: &str, at: &str, count: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO repository_stats (did, repository, push_count, last_push)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (did, repository) DO UPDATE SET
            push_count = push_count + excluded.push_count,
            last_push = CASE WHEN last_push IS NULL OR excluded.last_push > last_push
                             THEN excluded.last_push ELSE last_push END",
        (did, repo, count, at),
    )
    .await?;
    Ok(())
}

pub(super) async fn add_pulls(
    conn: &Connection,
    did: &str,
    repo: &str,
    n: i64,
    now: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO repository_stats (did, repository, pull_count, last_pull)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (did, repository) DO UPDATE SET
            pull_count = pull_count + excluded.pull_count, last_pull = excluded.last_pull",
        (did, repo, n, now),
    )
    .await?;
    Ok(())
}

async fn put_manifest(
    conn: &Connection,
    did: &str,
    rkey: &str,
    v: &Value,
    now: &str,
    dirty: &mut SearchDirty,
) -> Result<()> {
    let repo = str_field(v, "repository", 255)?;
    // Up to a sha512 digest: the lexicon caps records at 128 characters, but a registry
    // without a PDS (auth off) indexes its sha512 manifests through the same path.
    let digest = str_field(v, "digest", MAX_DIGEST)?;
    if digest.parse::<Digest>().is_err() {
        return Err(invalid(format!("digest {digest:?} is not a digest")));
    }
    let media_type = str_field(v, "mediaType", 255)?;
    let schema_version = v.get("schemaVersion").and_then(Value::as_i64).unwrap_or(2);
    let created_at = opt_str(v, "createdAt", 64).unwrap_or_else(|| now.to_string());
    let config = v.get("config").and_then(reference);
    let layers: Vec<_> = v
        .get("layers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_REFERENCES)
                .filter_map(reference)
                .collect()
        })
        .unwrap_or_default();
    let children: Vec<_> = v
        .get("manifests")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_REFERENCES)
                .filter_map(|m| {
                    let (d, s, mt) = reference(m)?;
                    let p = m.get("platform");
                    let field = |k: &str| p.and_then(|p| opt_str(p, k, 64));
                    Some((
                        d,
                        s,
                        mt,
                        field("os"),
                        field("architecture"),
                        field("variant"),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let subject = v.get("subject").and_then(reference).map(|s| s.0);
    let artifact_type = opt_str(v, "artifactType", 255);
    let hold_did = opt_str(v, "holdDid", 2048).filter(|h| h.starts_with("did:"));
    let total_size = if children.is_empty() {
        Some(config.as_ref().map_or(0, |c| c.1) + layers.iter().map(|l| l.1).sum::<i64>())
    } else {
        None
    };
    let annotations = annotations_of(v);

    // The search row (handle, name, description, annotations) changes only with a new
    // repository or new repository annotations: rewriting it for every record was a fifth
    // of the firehose's apply cost on a big index (FTS5 segment writes).
    let mut search_changed = ensure_repository(conn, did, repo, now).await?;
    let inserted = conn
        .execute(
            "INSERT INTO manifests (did, repository, digest, media_type, schema_version,
                config_digest, config_size, total_size, artifact_type, subject_digest, hold_did,
                created_at, rkey)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (did, repository, digest) DO UPDATE SET
                media_type = excluded.media_type, schema_version = excluded.schema_version,
                config_digest = excluded.config_digest, config_size = excluded.config_size,
                total_size = excluded.total_size, artifact_type = excluded.artifact_type,
                subject_digest = excluded.subject_digest,
                hold_did = COALESCE(excluded.hold_did, hold_did), rkey = excluded.rkey",
            libsql::params![
                did,
                repo,
                digest,
                media_type,
                schema_version,
                config.as_ref().map(|c| c.0.clone()),
                config.as_ref().map(|c| c.1),
                total_size,
                artifact_type,
                subject.clone(),
                hold_did,
                created_at.clone(),
                rkey,
            ],
        )
        .await?;
    // Tags that named this record before it was indexed now know their digest.
    conn.execute(
        "UPDATE tags SET digest = ?3 WHERE did = ?1 AND manifest_rkey = ?2 AND repository = ?4
            AND digest != ?3",
        (did, rkey, digest, repo),
    )
    .await?;
    // `changes()` cannot tell an insert from an upsert: ask whether the layers exist.
    let _ = inserted;
    let key = (did, repo, digest);
    let mut rows = conn
        .query(
            "SELECT (SELECT COUNT(*) FROM layers WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3)
                  + (SELECT COUNT(*) FROM manifest_references WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3)
                  + (SELECT COUNT(*) FROM manifest_annotations WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3)",
            key,
        )
        .await?;
    let seen_before: i64 = match rows.next().await? {
        Some(r) => r.get(0)?,
        None => 0,
    };
    drop(rows);
    for table in ["layers", "manifest_references", "manifest_annotations"] {
        conn.execute(
            &format!(
                "DELETE FROM {table} WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3"
            ),
            key,
        )
        .await?;
    }
    for (i, (d, s, mt)) in layers.iter().enumerate() {
        conn.execute(
            "INSERT INTO layers (did, repository, manifest_digest, position, digest, size, media_type)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            libsql::params![did, repo, digest, i as i64, d.as_str(), *s, mt.as_str()],
        )
        .await?;
    }
    for (i, (d, s, mt, os, arch, variant)) in children.iter().enumerate() {
        conn.execute(
            "INSERT INTO manifest_references (did, repository, manifest_digest, position, digest,
                size, media_type, os, architecture, variant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            libsql::params![
                did,
                repo,
                digest,
                i as i64,
                d.as_str(),
                *s,
                mt.as_str(),
                os.clone(),
                arch.clone(),
                variant.clone()
            ],
        )
        .await?;
    }
    for (k, val) in &annotations {
        conn.execute(
            "INSERT INTO manifest_annotations (did, repository, manifest_digest, key, value)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            (did, repo, digest, k.as_str(), val.as_str()),
        )
        .await?;
    }
    // The repository's annotations are those of its latest annotated manifest (the
    // image's OCI annotations: title, description, source, licenses...).
    if !annotations.is_empty()
        && subject.is_none()
        && repository_annotations(conn, did, repo).await? != annotations
    {
        search_changed = true;
        conn.execute(
            "DELETE FROM repository_annotations WHERE did = ?1 AND repository = ?2",
            (did, repo),
        )
        .await?;
        for (k, val) in &annotations {
            conn.execute(
                "INSERT INTO repository_annotations (did, repository, key, value, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (did, repo, k.as_str(), val.as_str(), created_at.as_str()),
            )
            .await?;
        }
    }
    // A push is a manifest this index has not seen before (the firehose echo of our own
    // direct write, or a backfill, does not count it twice).
    let first_time = seen_before == 0 && (!layers.is_empty() || !children.is_empty());
    touch_push(conn, did, repo, &created_at, i64::from(first_time)).await?;
    if search_changed {
        dirty.insert((did.to_string(), repo.to_string()));
    }
    Ok(())
}

/// The repository's current annotations (as `put_manifest` last stored them).
async fn repository_annotations(
    conn: &Connection,
    did: &str,
    repo: &str,
) -> Result<BTreeMap<String, String>> {
    let mut rows = conn
        .query(
            "SELECT key, value FROM repository_annotations WHERE did = ?1 AND repository = ?2",
            (did, repo),
        )
        .await?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next().await? {
        out.insert(r.get::<String>(0)?, r.get::<String>(1)?);
    }
    Ok(out)
}

/// A deleted manifest record: the row (or rows, for old digest-keyed records that several
/// repositories shared) it produced, found by record key.
async fn delete_manifest(conn: &Connection, did: &str, rkey: &str) -> Result<()> {
    let mut rows = conn
        .query(
            "SELECT repository, digest FROM manifests WHERE did = ?1 AND rkey = ?2",
            (did, rkey),
        )
        .await?;
    let mut found = Vec::new();
    while let Some(r) = rows.next().await? {
        found.push((r.get::<String>(0)?, r.get::<String>(1)?));
    }
    drop(rows);
    for (repo, digest) in found {
        let key = (did, repo.as_str(), digest.as_str());
        for sql in [
            "DELETE FROM layers WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3",
            "DELETE FROM manifest_references WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3",
            "DELETE FROM manifest_annotations WHERE did = ?1 AND repository = ?2 AND manifest_digest = ?3",
            "DELETE FROM manifests WHERE did = ?1 AND repository = ?2 AND digest = ?3",
        ] {
            conn.execute(sql, key).await?;
        }
        drop_repository_if_empty(conn, did, &repo).await?;
    }
    Ok(())
}

async fn put_tag(
    conn: &Connection,
    did: &str,
    rkey: &str,
    v: &Value,
    now: &str,
    dirty: &mut SearchDirty,
) -> Result<()> {
    let repo = str_field(v, "repository", 255)?;
    let tag = str_field(v, "tag", 128)?;
    // The manifest record the tag names (its AT-URI; TID-keyed records do not carry their
    // digest in the key, so the digest comes from the indexed record).
    let target = match v.get("manifest").and_then(Value::as_str) {
        Some(uri) if uri.len() <= 8192 => {
            // `at:///<collection>/<rkey>` (no authority): this AppView's direct writes,
            // made before the owner's DID is known; the tag's own repository is meant.
            let parsed = records::parse_at_uri(uri).or_else(|| {
                let (c, k) = uri.strip_prefix("at:///")?.split_once('/')?;
                (!k.is_empty() && !k.contains('/')).then_some(("", c, k))
            });
            let (authority, collection, mkey) =
                parsed.ok_or_else(|| invalid(format!("manifest {uri:?} is not an AT-URI")))?;
            if collection != MANIFEST_NSID {
                return Err(invalid(format!(
                    "manifest {uri:?} is not a manifest record"
                )));
            }
            let owner = if authority.starts_with("did:") {
                authority
            } else {
                did
            };
            Some((owner.to_string(), mkey.to_string()))
        }
        Some(_) => return Err(invalid("manifest URI too long")),
        None => None,
    };
    let digest = match v.get("manifestDigest").and_then(Value::as_str) {
        // Older records (and the direct writes of this AppView) carry the digest.
        Some(d) if d.len() <= MAX_DIGEST && d.contains(':') => d.to_string(),
        _ => {
            let (owner, mkey) = target
                .as_ref()
                .ok_or_else(|| invalid("tag names no manifest"))?;
            let mut rows = conn
                .query(
                    "SELECT digest FROM manifests WHERE did = ?1 AND rkey = ?2 LIMIT 1",
                    (owner.as_str(), mkey.as_str()),
                )
                .await?;
            let indexed = match rows.next().await? {
                Some(r) => Some(r.get::<String>(0)?),
                None => None,
            };
            drop(rows);
            // Not indexed (yet): an old digest-hex key names its digest; otherwise the tag
            // waits (empty digest, hidden) until the manifest record arrives.
            indexed
                .or_else(|| records::legacy_digest_of_rkey(mkey))
                .unwrap_or_default()
        }
    };
    let manifest_rkey = target.map(|(_, k)| k);
    let media_type = opt_str(v, "mediaType", 255);
    let updated_at = opt_str(v, "updatedAt", 64).unwrap_or_else(|| now.to_string());
    let created = ensure_repository(conn, did, repo, now).await?;
    // One tag per (repository, tag): a record under another rkey for the same tag wins.
    conn.execute(
        "DELETE FROM tags WHERE did = ?1 AND ((repository = ?2 AND tag = ?3) OR rkey = ?4)",
        (did, repo, tag, rkey),
    )
    .await?;
    conn.execute(
        "INSERT INTO tags (did, repository, tag, digest, rkey, updated_at, manifest_rkey,
            media_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        libsql::params![
            did,
            repo,
            tag,
            digest.as_str(),
            rkey,
            updated_at.as_str(),
            manifest_rkey,
            media_type
        ],
    )
    .await?;
    touch_push(conn, did, repo, &updated_at, 0).await?;
    // A tag is not searched: only a repository it created needs its search row.
    if created {
        dirty.insert((did.to_string(), repo.to_string()));
    }
    Ok(())
}

async fn delete_tag(conn: &Connection, did: &str, rkey: &str) -> Result<()> {
    let mut rows = conn
        .query(
            "SELECT repository FROM tags WHERE did = ?1 AND rkey = ?2",
            (did, rkey),
        )
        .await?;
    let repo = match rows.next().await? {
        Some(r) => Some(r.get::<String>(0)?),
        None => None,
    };
    drop(rows);
    conn.execute("DELETE FROM tags WHERE did = ?1 AND rkey = ?2", (did, rkey))
        .await?;
    if let Some(repo) = repo {
        drop_repository_if_empty(conn, did, &repo).await?;
    }
    Ok(())
}

async fn put_profile(conn: &Connection, did: &str, v: &Value) -> Result<()> {
    let hold = opt_str(v, "defaultHold", 2048);
    conn.execute(
        "UPDATE users SET default_hold = ?2 WHERE did = ?1",
        (did, hold),
    )
    .await?;
    Ok(())
}

/// (owner DID, repository) a star's subject names. The lexicon's subject is the AT-URI of
/// the repo page record; older records used `{uri}` or `{did, repository}` objects.
pub fn star_subject(v: &Value) -> Option<(String, String)> {
    let subject = v.get("subject")?;
    let uri = match subject {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("uri").and_then(Value::as_str),
        _ => None,
    };
    if let Some(uri) = uri {
        let (owner, collection, rkey) = records::parse_at_uri(uri)?;
        return (collection == PAGE_NSID && owner.starts_with("did:") && rkey.len() <= 256)
            .then(|| (owner.to_string(), rkey.to_string()));
    }
    let owner = subject.get("did")?.as_str()?;
    let repo = subject.get("repository")?.as_str()?;
    (owner.starts_with("did:") && owner.len() <= 2048 && !repo.is_empty() && repo.len() <= 256)
        .then(|| (owner.to_string(), repo.to_string()))
}

pub(super) async fn put_star_row(
    conn: &Connection,
    starrer: &str,
    rkey: &str,
    owner: &str,
    repo: &str,
    created_at: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO stars (starrer_did, rkey, owner_did, repository, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (starrer_did, rkey) DO UPDATE SET owner_did = excluded.owner_did,
            repository = excluded.repository, created_at = excluded.created_at",
        (starrer, rkey, owner, repo, created_at),
    )
    .await?;
    Ok(())
}

async fn put_page(
    conn: &Connection,
    did: &str,
    rkey: &str,
    v: &Value,
    now: &str,
    dirty: &mut SearchDirty,
) -> Result<()> {
    // The key is the repository's name; a record that says otherwise is bad.
    let repo = rkey.to_string();
    if let Some(field) = opt_str(v, "repository", 256) {
        if field != repo {
            return Err(invalid(format!(
                "page key {rkey:?} is not its repository {field:?}"
            )));
        }
    }
    if repo.is_empty() || repo.len() > 256 {
        return Err(invalid("repository empty or too long"));
    }
    let description = v
        .get("description")
        .and_then(Value::as_str)
        .map(|d| truncate(d, MAX_DESCRIPTION));
    let avatar = v
        .get("avatar")
        .and_then(|a| a.get("ref"))
        .and_then(|r| r.get("$link"))
        .and_then(Value::as_str)
        .filter(|c| c.len() <= 128)
        .map(str::to_string);
    let created = opt_str(v, "createdAt", 64).unwrap_or_else(|| now.to_string());
    let updated = opt_str(v, "updatedAt", 64).unwrap_or_else(|| created.clone());
    let user_edited = i64::from(v.get("userEdited").and_then(Value::as_bool) == Some(true));
    ensure_repository(conn, did, &repo, now).await?;
    conn.execute(
        "INSERT INTO repo_pages (did, repository, description, avatar_cid, created_at, updated_at,
            user_edited)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (did, repository) DO UPDATE SET description = excluded.description,
            avatar_cid = excluded.avatar_cid, created_at = excluded.created_at,
            updated_at = excluded.updated_at, user_edited = excluded.user_edited",
        libsql::params![
            did,
            repo.as_str(),
            description,
            avatar,
            created,
            updated,
            user_edited
        ],
    )
    .await?;
    dirty.insert((did.to_string(), repo));
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

async fn delete_page(
    conn: &Connection,
    did: &str,
    rkey: &str,
    dirty: &mut SearchDirty,
) -> Result<()> {
    let repo = rkey.to_string();
    conn.execute(
        "DELETE FROM repo_pages WHERE did = ?1 AND repository = ?2",
        (did, repo.as_str()),
    )
    .await?;
    drop_repository_if_empty(conn, did, &repo).await?;
    // A repository still there loses the page's description from its search row (one
    // that was dropped has no row to rewrite).
    dirty.insert((did.to_string(), repo));
    Ok(())
}

/// Apply one change for `did` on `conn` (inside the caller's transaction).
async fn apply_change(
    conn: &Connection,
    did: &str,
    c: &RecordChange,
    now: &str,
    dirty: &mut SearchDirty,
) -> Result<()> {
    match c {
        RecordChange::Upsert {
            collection,
            rkey,
            value,
        } => match collection.as_str() {
            MANIFEST_NSID => put_manifest(conn, did, rkey, value, now, dirty).await,
            TAG_NSID => put_tag(conn, did, rkey, value, now, dirty).await,
            PROFILE_NSID => put_profile(conn, did, value).await,
            STAR_NSID => {
                let (owner, repo) =
                    star_subject(value).ok_or_else(|| invalid("star subject not understood"))?;
                let created = opt_str(value, "createdAt", 64).unwrap_or_else(|| now.to_string());
                put_star_row(conn, did, rkey, &owner, &repo, &created).await
            }
            PAGE_NSID => put_page(conn, did, rkey, value, now, dirty).await,
            _ => Ok(()),
        },
        RecordChange::Delete { collection, rkey } => match collection.as_str() {
            MANIFEST_NSID => delete_manifest(conn, did, rkey).await,
            TAG_NSID => delete_tag(conn, did, rkey).await,
            PROFILE_NSID => put_profile(conn, did, &Value::Null).await,
            STAR_NSID => {
                conn.execute(
                    "DELETE FROM stars WHERE starrer_did = ?1 AND rkey = ?2",
                    (did, rkey.as_str()),
                )
                .await?;
                Ok(())
            }
            PAGE_NSID => delete_page(conn, did, rkey, dirty).await,
            _ => Ok(()),
        },
    }
}

impl Index {
    /// Apply record changes of one repository in one transaction; with `cursor`, the
    /// ingest cursor of that source is stored in the same transaction. A record that does
    /// not check out is logged and skipped; database errors fail the whole batch.
    pub async fn apply_records(
        &self,
        did: &str,
        changes: &[RecordChange],
        cursor: Option<(&str, i64)>,
    ) -> Result<()> {
        self.apply_batch(&[(did, changes)], cursor).await
    }

    /// Apply the changes of several commits (of any repositories, in order) in one
    /// transaction, with the cursor of the last: what the firehose consumer does with the
    /// frames it has read ahead. One commit (and fsync) per batch instead of per frame, and
    /// each touched repository's search row rewritten once.
    pub async fn apply_batch(
        &self,
        batch: &[(&str, &[RecordChange])],
        cursor: Option<(&str, i64)>,
    ) -> Result<()> {
        let now = crate::pds::now_rfc3339();
        let mut new_users = Vec::new();
        {
            let conn = self.writer().await;
            let tx = conn.transaction().await?;
            let mut dirty = SearchDirty::new();
            for (did, changes) in batch {
                let relevant = changes
                    .iter()
                    .any(|c| COLLECTIONS.contains(&c.collection()));
                if relevant && ensure_user(&tx, did, &now).await? {
                    new_users.push(did.to_string());
                }
                for c in changes.iter() {
                    if !COLLECTIONS.contains(&c.collection()) {
                        continue;
                    }
                    match apply_change(&tx, did, c, &now, &mut dirty).await {
                        Ok(()) => {}
                        Err(IndexError::InvalidRecord(m)) => {
                            tracing::info!(%did, collection = c.collection(), reason = %m, "record skipped by the index")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            for (did, repo) in &dirty {
                refresh_search(&tx, did, repo).await?;
            }
            if let Some((source, seq)) = cursor {
                set_cursor(&tx, source, seq, &now).await?;
            }
            tx.commit().await?;
        }
        new_users.sort();
        new_users.dedup();
        for did in new_users {
            let me = self.clone();
            tokio::spawn(async move { me.refresh_user(&did).await });
        }
        let mut holds: Vec<String> = Vec::new();
        for (did, changes) in batch {
            // Single-platform images: their platform is in the image config (off this path).
            self.spawn_platform_fill(super::platform::pending_of(did, changes));
            // Holds named by manifests: cache their captain record once (UI: hold owner,
            // public or not).
            holds.extend(changes.iter().filter_map(|c| {
                match c {
                    RecordChange::Upsert {
                        collection, value, ..
                    } if collection == MANIFEST_NSID => value
                        .get("holdDid")
                        .and_then(Value::as_str)
                        .filter(|h| h.starts_with("did:") && h.len() <= 2048)
                        .map(str::to_string),
                    _ => None,
                }
            }));
        }
        holds.sort();
        holds.dedup();
        for h in holds {
            if self.hold_captain(&h).await?.is_none() {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.refresh_hold(&h).await {
                        tracing::debug!(hold = %h, error = %e, "hold captain record not fetched");
                    }
                });
            }
        }
        Ok(())
    }

    /// Fetch a hold's `io.atcr.hold.captain/self` record from the hold and cache it.
    pub async fn refresh_hold(&self, hold_did: &str) -> Result<()> {
        let id = self
            .resolver()
            .resolve(hold_did)
            .await
            .map_err(|e| IndexError::Network(format!("resolving {hold_did}: {e}")))?;
        let rec = self
            .resolver()
            .xrpc()
            .get_record(&id.pds, hold_did, "io.atcr.hold.captain", "self")
            .await
            .map_err(|e| IndexError::Network(format!("{hold_did} captain: {e}")))?;
        let Some(rec) = rec else {
            return Ok(());
        };
        let v = &rec.value;
        let owner = str_field(v, "owner", 2048)?;
        let flag = |k: &str| i64::from(v.get(k).and_then(Value::as_bool).unwrap_or(false));
        let conn = self.writer().await;
        conn.execute(
            "INSERT INTO hold_captain_records (hold_did, owner_did, public, allow_all_crew,
                deployed_at, region, provider, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (hold_did) DO UPDATE SET owner_did = excluded.owner_did,
                public = excluded.public, allow_all_crew = excluded.allow_all_crew,
                deployed_at = excluded.deployed_at, region = excluded.region,
                provider = excluded.provider, updated_at = excluded.updated_at",
            libsql::params![
                hold_did,
                owner,
                flag("public"),
                flag("allowAllCrew"),
                opt_str(v, "deployedAt", 64),
                opt_str(v, "region", 64),
                opt_str(v, "provider", 64),
                crate::pds::now_rfc3339()
            ],
        )
        .await?;
        Ok(())
    }

    /// Store an ingest cursor on its own (a frame without index-relevant changes).
    pub async fn set_cursor(&self, source: &str, seq: i64) -> Result<()> {
        let conn = self.writer().await;
        set_cursor(&conn, source, seq, &crate::pds::now_rfc3339()).await
    }

    /// Forget a source's cursor (it no longer knows our position).
    pub async fn delete_cursor(&self, source: &str) -> Result<()> {
        let conn = self.writer().await;
        conn.execute("DELETE FROM ingest_cursor WHERE source = ?1", [source])
            .await?;
        Ok(())
    }

    /// Resolve the DID document and store handle and PDS (logged, never fatal).
    pub async fn refresh_user(&self, did: &str) {
        if self.local_owners() && !did.starts_with("did:") {
            // A local owner is its own handle.
            if let Err(e) = self.set_user_identity(did, Some(did), None).await {
                tracing::warn!(owner = %did, error = %e, "storing a local owner in the index failed");
            }
            return;
        }
        self.resolver().invalidate(did);
        match self.resolver().resolve(did).await {
            Ok(id) => {
                if let Err(e) = self
                    .set_user_identity(did, id.handle.as_deref(), Some(&id.pds))
                    .await
                {
                    tracing::warn!(%did, error = %e, "storing a user's identity in the index failed");
                }
                if let Err(e) = self.refresh_avatar(did, &id.pds).await {
                    tracing::debug!(%did, error = %e, "avatar of an indexed user not read");
                }
            }
            Err(e) => tracing::debug!(%did, error = %e, "identity of an indexed user not resolved"),
        }
    }

    /// The avatar of the user's `app.bsky.actor.profile/self`, stored as the
    /// `com.atproto.sync.getBlob` URL on their PDS (none when there is no profile).
    async fn refresh_avatar(&self, did: &str, pds: &str) -> Result<()> {
        let rec = self
            .resolver()
            .xrpc()
            .get_record(pds, did, "app.bsky.actor.profile", "self")
            .await
            .map_err(|e| IndexError::Network(e.to_string()))?;
        let avatar = rec.as_ref().and_then(|r| {
            let cid = r.value.get("avatar")?.get("ref")?.get("$link")?.as_str()?;
            (cid.len() <= 128 && cid.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| {
                format!(
                    "{}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}",
                    pds.trim_end_matches('/')
                )
            })
        });
        let conn = self.writer().await;
        conn.execute("UPDATE users SET avatar = ?2 WHERE did = ?1", (did, avatar))
            .await?;
        Ok(())
    }

    /// Set a user's handle (and PDS): `#identity` events, DID document resolution.
    pub async fn set_user_identity(
        &self,
        did: &str,
        handle: Option<&str>,
        pds: Option<&str>,
    ) -> Result<()> {
        let now = crate::pds::now_rfc3339();
        let conn = self.writer().await;
        let tx = conn.transaction().await?;
        ensure_user(&tx, did, &now).await?;
        // A handle belongs to one DID: an older claim by another DID is dropped.
        if let Some(h) = handle {
            tx.execute(
                "UPDATE users SET handle = NULL WHERE handle = ?1 AND did != ?2",
                (h, did),
            )
            .await?;
        }
        tx.execute(
            "UPDATE users SET handle = ?2, pds = COALESCE(?3, pds), resolved_at = ?4 WHERE did = ?1",
            (did, handle, pds, now.as_str()),
        )
        .await?;
        refresh_user_search(&tx, did).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forget everything indexed for a DID (account deleted or taken down).
    pub async fn forget_account(&self, did: &str) -> Result<()> {
        let conn = self.writer().await;
        let tx = conn.transaction().await?;
        tx.execute(
            "DELETE FROM search_fts WHERE rowid IN (SELECT rowid FROM repositories WHERE did = ?1)",
            [did],
        )
        .await?;
        for sql in [
            "DELETE FROM layers WHERE did = ?1",
            "DELETE FROM manifest_references WHERE did = ?1",
            "DELETE FROM manifest_annotations WHERE did = ?1",
            "DELETE FROM manifests WHERE did = ?1",
            "DELETE FROM tags WHERE did = ?1",
            "DELETE FROM repository_annotations WHERE did = ?1",
            "DELETE FROM repo_pages WHERE did = ?1",
            "DELETE FROM repositories WHERE did = ?1",
            "DELETE FROM stars WHERE starrer_did = ?1 OR owner_did = ?1",
            "DELETE FROM users WHERE did = ?1",
        ] {
            tx.execute(sql, [did]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- direct writes ------------------------------------------------------------------

    /// Name the hold this appliance's pushes store their blobs on (set once at start).
    pub fn set_local_hold(&self, hold_did: String) {
        let _ = self.inner.local_hold.set(hold_did);
    }

    /// After a manifest PUT reached the PDS and the local store: index it now, in the
    /// background (never fails or slows the push; errors are logged). `rkey`: the key of the owner's `io.atcr.manifest` record (`None` without a PDS:
    /// the digest hex stands in, as records had before TID keys); `hold_did`: the hold the
    /// push stored its blobs on (`None`: this appliance's).
    #[allow(clippy::too_many_arguments)]
    pub fn note_manifest_put(
        &self,
        name: &Name,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
        rkey: Option<&str>,
        hold_did: Option<&str>,
    ) {
        let now = crate::pds::now_rfc3339();
        let blob =
            serde_json::json!({"$type": "blob", "mimeType": media_type, "size": bytes.len()});
        // The hold the push stored its blobs on (federation), else this appliance's.
        let hold =
            hold_did.unwrap_or_else(|| self.inner.local_hold.get().map_or("", String::as_str));
        let value = records::manifest_record(
            name.repository(),
            digest,
            media_type,
            bytes,
            &blob,
            hold,
            &now,
        );
        let rkey = rkey.unwrap_or(digest.hex()).to_string();
        let mut changes = vec![RecordChange::Upsert {
            collection: MANIFEST_NSID.into(),
            rkey: rkey.clone(),
            value,
        }];
        if let Some(t) = tag {
            // The owner's DID is not known yet here: the URI names no authority (the tag's
            // own repository is meant) and the digest is given outright.
            let uri = records::at_uri("", MANIFEST_NSID, &rkey);
            let mut v = records::tag_record(name.repository(), t, &uri, media_type, &now);
            v["manifestDigest"] = Value::String(digest.to_string());
            changes.push(RecordChange::Upsert {
                collection: TAG_NSID.into(),
                rkey: records::tag_rkey(name.repository(), t),
                value: v,
            });
        }
        self.spawn_direct(name, changes);
    }

    /// After a tag DELETE.
    pub fn note_tag_delete(&self, name: &Name, tag: &str) {
        let rkey = records::tag_rkey(name.repository(), tag);
        self.spawn_direct(
            name,
            vec![RecordChange::Delete {
                collection: TAG_NSID.into(),
                rkey,
            }],
        );
    }

    /// After a manifest DELETE by digest: the manifest and the tags pointing at it go.
    pub fn note_manifest_delete(&self, name: &Name, digest: &Digest) {
        let me = self.clone();
        let (name, digest) = (name.clone(), digest.clone());
        tokio::spawn(async move {
            let Some(did) = me.did_of(name.identity()).await else {
                return;
            };
            let rkeys = match me
                .tag_rkeys_for(&did, name.repository(), &digest.to_string())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "index: reading tags of a deleted manifest failed");
                    Vec::new()
                }
            };
            let mut changes: Vec<RecordChange> = rkeys
                .into_iter()
                .map(|rkey| RecordChange::Delete {
                    collection: TAG_NSID.into(),
                    rkey,
                })
                .collect();
            let rkey = match me
                .manifest_rkey(&did, name.repository(), &digest.to_string())
                .await
            {
                Ok(Some(k)) => k,
                Ok(None) => digest.hex().to_string(),
                Err(e) => {
                    tracing::warn!(error = %e, "index: reading a deleted manifest's key failed");
                    digest.hex().to_string()
                }
            };
            changes.push(RecordChange::Delete {
                collection: MANIFEST_NSID.into(),
                rkey,
            });
            if let Err(e) = me.enqueue_records(&did, &changes).await {
                tracing::warn!(name = %name, error = %e, "index: direct write not queued");
            }
        });
    }

    fn spawn_direct(&self, name: &Name, changes: Vec<RecordChange>) {
        let me = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let Some(did) = me.did_of(name.identity()).await else {
                tracing::debug!(name = %name, "index: no DID for this name; not indexed");
                return;
            };
            if let Err(e) = me.enqueue_records(&did, &changes).await {
                tracing::warn!(name = %name, error = %e, "index: direct write not queued");
            }
        });
    }

    /// A star the UI just wrote to the starrer's PDS (`io.atcr.sailor.star/<rkey>`).
    pub async fn put_star(
        &self,
        starrer_did: &str,
        rkey: &str,
        owner_did: &str,
        repository: &str,
    ) -> Result<()> {
        let value = serde_json::json!({
            "$type": STAR_NSID,
            "subject": records::at_uri(owner_did, PAGE_NSID, repository),
            "createdAt": crate::pds::now_rfc3339(),
        });
        self.apply_direct(
            starrer_did,
            &[RecordChange::Upsert {
                collection: STAR_NSID.into(),
                rkey: rkey.into(),
                value,
            }],
        )
        .await
    }

    /// A star the UI just deleted from the starrer's PDS.
    pub async fn delete_star(&self, starrer_did: &str, rkey: &str) -> Result<()> {
        self.apply_direct(
            starrer_did,
            &[RecordChange::Delete {
                collection: STAR_NSID.into(),
                rkey: rkey.into(),
            }],
        )
        .await
    }
}

async fn set_cursor(conn: &Connection, source: &str, seq: i64, now: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO ingest_cursor (source, cursor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        (source, seq, now),
    )
    .await?;
    Ok(())
}
