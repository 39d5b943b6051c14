//! Backfill: rebuild the index from the network. `com.atproto.sync.listRepos` on each
//! configured host, then per repository `com.atproto.repo.describeRepo` (skip repos
//! without `io.atcr.*` collections) and `com.atproto.repo.listRecords` per collection at the
//! PDS the DID document names. Records are applied through the same path as the firehose;
//! index rows whose record is no longer listed are deleted, so a re-read repository
//! matches its PDS. Runs at start when the index is empty (`index.backfill_when_empty`),
//! for `tooBig`/`#sync` firehose events, and via `atcr index backfill`.
//!
//! Listings are not signed: they are trusted because they come from the PDS the DID's
//! own document names (the firehose path verifies signatures).

use std::collections::HashSet;

use atrium_api::com::atproto::{repo::describe_repo, sync::list_repos};
use atrium_api::types::LimitedNonZeroU16;

use super::apply::{RecordChange, COLLECTIONS, MANIFEST_NSID, PAGE_NSID, STAR_NSID, TAG_NSID};
use super::{Index, IndexError, Result};

/// Pages read per listing at most (100 records or repos each).
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BackfillReport {
    /// Repositories (DIDs) listed by the hosts.
    pub repos_seen: usize,
    /// DIDs with at least one `io.atcr.*` record.
    pub repos_indexed: usize,
    pub records: usize,
    /// DIDs whose PDS could not be read (logged).
    pub failures: usize,
}

/// Repositories asked for per `listRepos` page.
const LIST_REPOS_PAGE: u16 = 500;

impl Index {
    /// Backfill every repository the hosts list.
    pub async fn backfill(&self, hosts: &[String]) -> Result<BackfillReport> {
        let mut report = BackfillReport::default();
        let mut seen = HashSet::new();
        for host in hosts {
            let xrpc = self.resolver().xrpc().clone();
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let params = list_repos::ParametersData {
                    cursor: cursor.clone(),
                    limit: LimitedNonZeroU16::try_from(LIST_REPOS_PAGE).ok(),
                };
                let page: list_repos::OutputData = xrpc
                    .query_params(host, list_repos::NSID, &params, None)
                    .await
                    .map_err(|e| IndexError::Network(format!("{host}: listRepos: {e}")))?;
                for r in &page.repos {
                    let did = r.did.as_str();
                    if r.active == Some(false) || !seen.insert(did.to_string()) {
                        continue;
                    }
                    report.repos_seen += 1;
                    match self.backfill_repo(did).await {
                        Ok(0) => {}
                        Ok(n) => {
                            report.repos_indexed += 1;
                            report.records += n;
                        }
                        Err(IndexError::Network(m)) => {
                            report.failures += 1;
                            tracing::warn!(did = %did, error = %m, "backfill of a repository failed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                match page.cursor {
                    Some(c) if !page.repos.is_empty() => cursor = Some(c),
                    _ => break,
                }
            }
        }
        tracing::info!(?report, "index backfill finished");
        Ok(report)
    }

    /// Re-read one DID's `io.atcr.*` records from its PDS; returns how many were listed.
    pub async fn backfill_repo(&self, did: &str) -> Result<usize> {
        let id = self
            .resolver()
            .resolve(did)
            .await
            .map_err(|e| IndexError::Network(format!("resolving {did}: {e}")))?;
        let xrpc = self.resolver().xrpc().clone();
        // A repository that cannot be described (or a DID that is no valid `repo`
        // parameter) is listed collection by collection.
        let described = match did.parse() {
            Ok(repo) => {
                xrpc.query_params::<describe_repo::OutputData, _>(
                    &id.pds,
                    describe_repo::NSID,
                    &describe_repo::ParametersData { repo },
                    None,
                )
                .await
            }
            Err(e) => Err(crate::atproto::xrpc::XrpcError::Invalid {
                method: describe_repo::NSID.into(),
                detail: format!("repo {did:?}: {e}"),
            }),
        };
        let collections: Vec<&str> = match described {
            Ok(d) => COLLECTIONS
                .iter()
                .copied()
                .filter(|c| d.collections.iter().any(|x| x.as_str() == *c))
                .collect(),
            Err(_) => COLLECTIONS.to_vec(),
        };
        let mut changes = Vec::new();
        for collection in COLLECTIONS {
            let mut listed = HashSet::new();
            if collections.contains(&collection) {
                let mut cursor: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let page = xrpc
                        .list_records(&id.pds, did, collection, 100, cursor.as_deref())
                        .await
                        .map_err(|e| IndexError::Network(format!("{did} {collection}: {e}")))?;
                    for r in &page.records {
                        let Some((_, _, rkey)) = crate::registry::records::parse_at_uri(&r.uri)
                        else {
                            continue;
                        };
                        listed.insert(rkey.to_string());
                        changes.push(RecordChange::Upsert {
                            collection: collection.into(),
                            rkey: rkey.into(),
                            value: r.value.clone(),
                        });
                    }
                    match page.cursor {
                        Some(c) if !page.records.is_empty() => cursor = Some(c),
                        _ => break,
                    }
                }
            }
            for rkey in self.indexed_rkeys(did, collection).await? {
                if !listed.contains(&rkey) {
                    changes.push(RecordChange::Delete {
                        collection: collection.into(),
                        rkey,
                    });
                }
            }
        }
        let n = changes
            .iter()
            .filter(|c| matches!(c, RecordChange::Upsert { .. }))
            .count();
        // Manifests before the tags that name them, deletes last (a moved tag's row is
        // replaced by its upsert, not deleted after it).
        changes.sort_by_key(|c| match c {
            RecordChange::Upsert { collection, .. } => {
                (0, COLLECTIONS.iter().position(|x| x == collection))
            }
            RecordChange::Delete { collection, .. } => {
                (1, COLLECTIONS.iter().position(|x| x == collection))
            }
        });
        if !changes.is_empty() {
            self.apply_records(did, &changes, None).await?;
        }
        if n > 0 {
            self.set_user_identity(did, id.handle.as_deref(), Some(&id.pds))
                .await?;
        }
        Ok(n)
    }

    /// The rkeys the index holds for a DID's records of one collection.
    async fn indexed_rkeys(&self, did: &str, collection: &str) -> Result<Vec<String>> {
        let sql = match collection {
            MANIFEST_NSID => {
                "SELECT DISTINCT rkey FROM manifests WHERE did = ?1 AND rkey IS NOT NULL"
            }
            TAG_NSID => "SELECT rkey FROM tags WHERE did = ?1",
            STAR_NSID => "SELECT rkey FROM stars WHERE starrer_did = ?1",
            PAGE_NSID => "SELECT repository FROM repo_pages WHERE did = ?1",
            _ => return Ok(Vec::new()),
        };
        let conn = self.reader().await;
        let mut rows = conn.query(sql, [did]).await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(r.get(0)?);
        }
        Ok(out)
    }

    /// Whether the index holds no repository yet (a fresh or deleted `index.db`).
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.storage_stats().await?.repositories == 0)
    }

    /// Start the network side: one firehose consumer per `index.firehose` endpoint and, when
    /// the index is empty and `backfill_when_empty` is set, a backfill of
    /// `index.backfill_hosts`. [`Index::stop_ingest`] ends them.
    pub fn start_ingest(&self, config: &crate::config::Config) {
        let ix = &config.index;
        let mut tasks = super::firehose::spawn_consumers(self, &ix.firehose, ix.max_frame_bytes);
        if ix.backfill_when_empty && !ix.backfill_hosts.is_empty() {
            let (me, hosts) = (self.clone(), ix.backfill_hosts.clone());
            tasks.push(tokio::spawn(async move {
                match me.is_empty().await {
                    Ok(true) => {
                        tracing::info!(hosts = ?hosts, "index is empty: backfilling");
                        if let Err(e) = me.backfill(&hosts).await {
                            tracing::warn!(error = %e, "index backfill failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "index backfill check failed"),
                }
            }));
        }
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
    }

    /// Stop the firehose consumers and any running backfill.
    pub fn stop_ingest(&self) {
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}
