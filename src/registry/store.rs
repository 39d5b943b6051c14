//! The registry's local store on redb: the verified local copy of manifests and tags
//! (design.md section 4), referrers, per-repository blob links and upload sessions.
//!
//! Tables (keys are tuples of strings; digests as `alg:hex`):
//! ```text
//! manifests  (repo, digest)            -> (meta JSON, exact manifest bytes)
//! tags       (repo, tag)               -> digest
//! referrers  (repo, subject, referrer) -> descriptor JSON (what GET referrers returns)
//! blob_links (repo, digest)            -> size
//! repos      repo                      -> ()
//! uploads    upload id                 -> session JSON (repo, created)
//! secrets    key                       -> sealed bytes (PDS sessions, OAuth sessions and
//!                                         requests, device credentials; encrypted by the
//!                                         caller, never copied into any index)
//! ui_sessions sha256(cookie id) hex    -> web session JSON (DID, CSRF token, expiry, start, UA); the
//!                                         cookie value itself is never stored
//! manifest_rkeys (did, repository, digest) -> record key of that `io.atcr.manifest` record
//!                                         in the owner's PDS (a re-push reuses it)
//! repo_pages  (did, repository)        -> what this registry last saw of the repository's
//!                                         `io.atcr.repo.page` (JSON: userEdited, description
//!                                         hash), so pushes do not re-read it every time
//! ```
//! and the federation tables `blob_holds`, `remote_uploads` ([`holds`]).
//! Each logical change is one write transaction. Every method is blocking: callers run them
//! through [`MetaStore::run`], which moves them off the async runtime.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::oci::types::manifest::{Descriptor, ParsedManifest};
use crate::oci::types::{Digest, Name, Reference};

mod holds;

type Pair<'a> = (&'a str, &'a str);
type Triple<'a> = (&'a str, &'a str, &'a str);

const MANIFESTS: TableDefinition<Pair, (&[u8], &[u8])> = TableDefinition::new("manifests");
const TAGS: TableDefinition<Pair, &str> = TableDefinition::new("tags");
const REFERRERS: TableDefinition<Triple, &[u8]> = TableDefinition::new("referrers");
const BLOB_LINKS: TableDefinition<Pair, u64> = TableDefinition::new("blob_links");
const REPOS: TableDefinition<&str, ()> = TableDefinition::new("repos");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const UI_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("ui_sessions");
const MANIFEST_RKEYS: TableDefinition<Triple, &str> = TableDefinition::new("manifest_rkeys");
const REPO_PAGES: TableDefinition<Pair, &[u8]> = TableDefinition::new("repo_pages");

#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(String);

impl StoreError {
    /// Whether the write failed because the disk (or quota) is full. redb's errors carry
    /// the OS error only in their text: ENOSPC is "os error 28", EDQUOT "os error 122".
    pub fn is_no_space(&self) -> bool {
        self.0.contains("(os error 28)") || self.0.contains("(os error 122)")
    }
}

macro_rules! impl_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError(e.to_string()) }
        }
    )*};
}
impl_from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// What we keep next to a manifest's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestMeta {
    pub media_type: String,
    pub subject: Option<Digest>,
    pub created_unix: u64,
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub meta: ManifestMeta,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    pub created_unix: u64,
    /// Who opened it (the upload caps count it after a restart too).
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub address: Option<String>,
}

/// Outcome of a manifest delete, so callers can tell what went away.
#[derive(Debug, Default)]
pub struct Deleted {
    pub manifest: bool,
    pub tags: Vec<String>,
}

pub struct MetaStore {
    db: Arc<Database>,
    /// Store work on blocking threads at once. redb runs one write transaction at a time, so
    /// a burst of a thousand uploads would otherwise park hundreds of threads on its lock.
    slots: tokio::sync::Semaphore,
}

/// See [`MetaStore::slots`].
const STORE_CONCURRENCY: usize = 16;

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Upper bound for a prefix scan over string keys: no valid key contains U+10FFFF.
const HIGH: &str = "\u{10FFFF}";

impl MetaStore {
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let db = crate::redb_file::open(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(MANIFESTS)?;
            txn.open_table(TAGS)?;
            txn.open_table(REFERRERS)?;
            txn.open_table(BLOB_LINKS)?;
            txn.open_table(REPOS)?;
            txn.open_table(UPLOADS)?;
            txn.open_table(SECRETS)?;
            txn.open_table(UI_SESSIONS)?;
            txn.open_table(MANIFEST_RKEYS)?;
            txn.open_table(REPO_PAGES)?;
            txn.open_table(holds::BLOB_HOLDS)?;
            txn.open_table(holds::REMOTE_UPLOADS)?;
        }
        txn.commit()?;
        Ok(Arc::new(MetaStore {
            db,
            slots: tokio::sync::Semaphore::new(STORE_CONCURRENCY),
        }))
    }

    /// Run blocking store work on the blocking pool.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&MetaStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| StoreError(format!("store closed: {e}")))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    // ---- secrets (opaque, encrypted by the caller) ----------------------------------------

    pub fn put_secret(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SECRETS)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    pub fn get_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SECRETS)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn delete_secret(&self, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SECRETS)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    /// Takes (reads and deletes) a secret in one transaction: single-use values (OAuth
    /// states, device codes) cannot be redeemed twice by concurrent requests.
    pub fn take_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_write()?;
        let v = txn
            .open_table(SECRETS)?
            .remove(key)?
            .map(|v| v.value().to_vec());
        txn.commit()?;
        Ok(v)
    }

    /// Every secret whose key starts with `prefix`, in key order.
    pub fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SECRETS)?;
        let mut out = Vec::new();
        for row in t.range(prefix..)? {
            let (k, v) = row?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    // ---- record keys of the owner's PDS records -------------------------------------------

    /// The rkey of the `io.atcr.manifest` record for (did, repository, digest), if known.
    pub fn manifest_rkey(
        &self,
        did: &str,
        repository: &str,
        digest: &str,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(MANIFEST_RKEYS)?;
        Ok(t.get((did, repository, digest))?
            .map(|v| v.value().to_string()))
    }

    pub fn set_manifest_rkey(
        &self,
        did: &str,
        repository: &str,
        digest: &str,
        rkey: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(MANIFEST_RKEYS)?
            .insert((did, repository, digest), rkey)?;
        txn.commit()?;
        Ok(())
    }

    pub fn forget_manifest_rkey(
        &self,
        did: &str,
        repository: &str,
        digest: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(MANIFEST_RKEYS)?
            .remove((did, repository, digest))?;
        txn.commit()?;
        Ok(())
    }

    /// What was last seen of a repository's page (opaque JSON owned by `registry::pds`).
    pub fn repo_page_state(
        &self,
        did: &str,
        repository: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REPO_PAGES)?;
        Ok(t.get((did, repository))?.map(|v| v.value().to_vec()))
    }

    pub fn set_repo_page_state(
        &self,
        did: &str,
        repository: &str,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(REPO_PAGES)?
            .insert((did, repository), state)?;
        txn.commit()?;
        Ok(())
    }

    // ---- web UI sessions (opaque JSON owned by `web::session`) --------------------------------

    pub fn put_ui_session(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(UI_SESSIONS)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    pub fn get_ui_session(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UI_SESSIONS)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn delete_ui_session(&self, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(UI_SESSIONS)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    /// Every session row (key, value); a few per user, so a scan is cheap.
    pub fn list_ui_sessions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UI_SESSIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes, in one transaction, the sessions `doomed(key, value)` picks; returns how many.
    pub fn remove_ui_sessions(
        &self,
        doomed: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let n = {
            let mut t = txn.open_table(UI_SESSIONS)?;
            let mut stale = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                if doomed(k.value(), v.value()) {
                    stale.push(k.value().to_string());
                }
            }
            for k in &stale {
                t.remove(k.as_str())?;
            }
            stale.len()
        };
        txn.commit()?;
        Ok(n)
    }

    // ---- blob links -------------------------------------------------------------------------

    /// Per identity (a repository name's first segment): distinct blob digests linked in its
    /// repositories and their total size, for the hold admin's usage figures.
    pub fn usage_by_identity(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut seen: std::collections::BTreeSet<(String, String)> = Default::default();
        let mut out: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for row in txn.open_table(BLOB_LINKS)?.iter()? {
            let (k, v) = row?;
            let (repo, digest) = k.value();
            let ident = repo.split('/').next().unwrap_or(repo).to_string();
            if seen.insert((ident.clone(), digest.to_string())) {
                let e = out.entry(ident).or_default();
                e.0 += 1;
                e.1 += v.value();
            }
        }
        Ok(out)
    }

    pub fn blob_link(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOB_LINKS)?;
        Ok(t.get((repo, digest.to_string().as_str()))?
            .map(|v| v.value()))
    }

    pub fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(BLOB_LINKS)?
                .insert((repo, digest.to_string().as_str()), size)?;
            txn.open_table(REPOS)?.insert(repo, ())?;
            txn.open_table(UPLOADS)?;
            txn.open_table(SECRETS)?;
            txn.open_table(UI_SESSIONS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Link a committed upload into its repository and forget the session, atomically.
    pub fn finish_upload(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(BLOB_LINKS)?
                .insert((repo, digest.to_string().as_str()), size)?;
            txn.open_table(REPOS)?.insert(repo, ())?;
            txn.open_table(UPLOADS)?.remove(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn
            .open_table(BLOB_LINKS)?
            .remove((repo, digest.to_string().as_str()))?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Every digest any repository links or any manifest is stored under (GC mark set).
    /// Whether any repository links the blob (garbage collection's last check before a delete).
    pub fn is_linked_anywhere(&self, digest: &Digest) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let wanted = digest.to_string();
        for row in txn.open_table(BLOB_LINKS)?.iter()? {
            if row?.0.value().1 == wanted {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn referenced_digests(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = std::collections::BTreeSet::new();
        for row in txn.open_table(BLOB_LINKS)?.iter()? {
            out.insert(row?.0.value().1.to_string());
        }
        Ok(out)
    }

    // ---- uploads ------------------------------------------------------------------------------

    pub fn put_upload(&self, id: &str, rec: &UploadRecord) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        // Losing a just-created, still-empty session in a power cut is harmless (the client
        // restarts the upload); the next durable commit persists it anyway.
        txn.set_durability(Durability::Eventual);
        txn.open_table(UPLOADS)?
            .insert(id, serde_json::to_vec(rec)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        Ok(match t.get(id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn delete_upload(&self, id: &str) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        // A forgotten session that comes back after a power cut has no staged data left and
        // is swept again; no fsync per aborted upload (a flood aborts thousands).
        txn.set_durability(Durability::Eventual);
        txn.open_table(UPLOADS)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    pub fn list_uploads(&self) -> Result<Vec<(String, UploadRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(UPLOADS)?.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    // ---- manifests and tags -------------------------------------------------------------------

    pub fn has_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(MANIFESTS)?
            .get((repo, digest.to_string().as_str()))?
            .is_some())
    }

    pub fn get_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(MANIFESTS)?;
        let Some(v) = t.get((repo, digest.to_string().as_str()))? else {
            return Ok(None);
        };
        let (meta, bytes) = v.value();
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            meta: serde_json::from_slice(meta)?,
            bytes: bytes.to_vec(),
        }))
    }

    /// A manifest by tag or digest in one read transaction: a pull's `GET` by tag costs one
    /// trip to a blocking thread, not two, and sees one snapshot (no tag moving in between).
    pub fn get_manifest_by_reference(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, StoreError> {
        let txn = self.db.begin_read()?;
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                let t = txn.open_table(TAGS)?;
                match t
                    .get((repo, tag.as_str()))?
                    .and_then(|v| v.value().parse().ok())
                {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
        };
        let t = txn.open_table(MANIFESTS)?;
        let Some(v) = t.get((repo, digest.to_string().as_str()))? else {
            return Ok(None);
        };
        let (meta, bytes) = v.value();
        Ok(Some(StoredManifest {
            digest,
            meta: serde_json::from_slice(meta)?,
            bytes: bytes.to_vec(),
        }))
    }

    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TAGS)?;
        Ok(t.get((repo, tag))?.and_then(|v| v.value().parse().ok()))
    }

    /// Store a verified manifest, optionally tag it, and record it as a referrer of its subject.
    pub fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        parsed: &ParsedManifest,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<(), StoreError> {
        let repo = name.as_str();
        let d = digest.to_string();
        let meta = ManifestMeta {
            media_type: parsed.media_type.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            created_unix: now_unix(),
        };
        let txn = self.db.begin_write()?;
        {
            txn.open_table(MANIFESTS)?.insert(
                (repo, d.as_str()),
                (serde_json::to_vec(&meta)?.as_slice(), bytes),
            )?;
            if let Some(tag) = tag {
                txn.open_table(TAGS)?.insert((repo, tag), d.as_str())?;
            }
            if let Some(subject) = &parsed.subject {
                let desc = Descriptor {
                    media_type: parsed.media_type.clone(),
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    urls: Vec::new(),
                    annotations: parsed.annotations.clone(),
                    artifact_type: parsed.referrer_artifact_type(),
                    platform: None,
                };
                txn.open_table(REFERRERS)?.insert(
                    (repo, subject.digest.to_string().as_str(), d.as_str()),
                    serde_json::to_vec(&desc)?.as_slice(),
                )?;
            }
            txn.open_table(REPOS)?.insert(repo, ())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(TAGS)?.remove((repo, tag))?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Delete a manifest, every tag in the repository that points at it, and its referrer entry.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Deleted, StoreError> {
        let d = digest.to_string();
        let txn = self.db.begin_write()?;
        let mut out = Deleted::default();
        {
            let mut manifests = txn.open_table(MANIFESTS)?;
            let removed = manifests.remove((repo, d.as_str()))?;
            if let Some(v) = removed {
                out.manifest = true;
                let meta: ManifestMeta = serde_json::from_slice(v.value().0)?;
                if let Some(subject) = meta.subject {
                    txn.open_table(REFERRERS)?.remove((
                        repo,
                        subject.to_string().as_str(),
                        d.as_str(),
                    ))?;
                }
            }
            let mut tags = txn.open_table(TAGS)?;
            let pointing: Vec<String> = tags
                .range((repo, "")..(repo, HIGH))?
                .filter_map(|r| r.ok())
                .filter(|(_, v)| v.value() == d)
                .map(|(k, _)| k.value().1.to_string())
                .collect();
            for t in &pointing {
                tags.remove((repo, t.as_str()))?;
            }
            out.tags = pointing;
        }
        txn.commit()?;
        Ok(out)
    }

    /// Tags of a repository in lexical order, after `last`, at most `limit` (+1 to detect more).
    pub fn list_tags(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TAGS)?;
        let start = last.unwrap_or("");
        let mut out = Vec::new();
        for row in t.range((repo, start)..(repo, HIGH))? {
            let (k, _) = row?;
            let tag = k.value().1;
            if Some(tag) == last {
                continue;
            }
            out.push(tag.to_string());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// All (tag, digest) pairs of a repository.
    pub fn tags_with_digests(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TAGS)?;
        let mut out = Vec::new();
        for row in t.range((repo, "")..(repo, HIGH))? {
            let (k, v) = row?;
            out.push((k.value().1.to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(REPOS)?.get(repo)?.is_some())
    }

    pub fn list_repos(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REPOS)?;
        let mut out = Vec::new();
        for row in t.range(last.unwrap_or("")..)? {
            let (k, _) = row?;
            if Some(k.value()) == last {
                continue;
            }
            out.push(k.value().to_string());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REFERRERS)?;
        let s = subject.to_string();
        let mut out = Vec::new();
        for row in t.range((repo, s.as_str(), "")..(repo, s.as_str(), HIGH))? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }
}
