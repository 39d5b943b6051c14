//! Scan summaries in the index: one row per scanned manifest digest, written when the
//! hold's scanner finishes (and rebuilt from its records at start). The repository page
//! reads its tags' badges here in one query, an index's badge from its platforms, and the
//! search filter "critical vulnerabilities" is [`CRITICAL_FILTER`].

use std::collections::HashMap;

use super::{Index, Result};

/// SQL condition on `repositories r`: a tag of the repository names a manifest with
/// critical vulnerabilities, itself or through one of its platforms.
pub const CRITICAL_FILTER: &str =
    "(EXISTS (SELECT 1 FROM tags t JOIN scans s ON s.digest = t.digest
        WHERE t.did = r.did AND t.repository = r.name AND s.critical > 0)
    OR EXISTS (SELECT 1 FROM tags t JOIN manifest_references mr ON mr.did = t.did
        AND mr.repository = t.repository AND mr.manifest_digest = t.digest
        JOIN scans s ON s.digest = mr.digest
        WHERE t.did = r.did AND t.repository = r.name AND s.critical > 0))";

/// One scan's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRow {
    pub digest: String,
    pub user_did: String,
    pub repository: String,
    /// `ok`, `failed`, `skipped`.
    pub status: String,
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub total: i64,
    pub scanned_at: String,
    /// For an index: how many of its platforms were scanned (0 for an image).
    pub platforms: i64,
}

impl ScanRow {
    pub fn unknown(&self) -> i64 {
        (self.total - self.critical - self.high - self.medium - self.low).max(0)
    }
}

impl Index {
    /// Upserts a scan summary.
    pub async fn put_scan(&self, row: &ScanRow) -> Result<()> {
        let conn = self.writer().await;
        conn.execute(
            "INSERT INTO scans (digest, user_did, repository, status, critical, high, medium, low, total, scanned_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (digest) DO UPDATE SET user_did = excluded.user_did, repository = excluded.repository,
               status = excluded.status, critical = excluded.critical, high = excluded.high,
               medium = excluded.medium, low = excluded.low, total = excluded.total,
               scanned_at = excluded.scanned_at",
            libsql::params![
                row.digest.as_str(),
                row.user_did.as_str(),
                row.repository.as_str(),
                row.status.as_str(),
                row.critical,
                row.high,
                row.medium,
                row.low,
                row.total,
                row.scanned_at.as_str()
            ],
        )
        .await?;
        Ok(())
    }

    /// Summaries of `digests` (tags of `did`/`repo`): a scanned manifest's own, an index's
    /// the worst of its platforms (each count the maximum over them). Two queries.
    pub async fn scan_summaries(
        &self,
        did: &str,
        repo: &str,
        digests: &[String],
    ) -> Result<HashMap<String, ScanRow>> {
        let mut out = HashMap::new();
        if digests.is_empty() {
            return Ok(out);
        }
        let digests = &digests[..digests.len().min(500)];
        let marks = |from: usize| {
            (from..from + digests.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let conn = self.reader().await;
        let params: Vec<libsql::Value> = digests.iter().map(|d| d.clone().into()).collect();
        let mut rows = conn
            .query(
                &format!(
                    "SELECT digest, user_did, repository, status, critical, high, medium, low, total, scanned_at
                     FROM scans WHERE digest IN ({})",
                    marks(1)
                ),
                params,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            let digest: String = r.get(0)?;
            out.insert(
                digest.clone(),
                ScanRow {
                    digest,
                    user_did: r.get(1)?,
                    repository: r.get(2)?,
                    status: r.get(3)?,
                    critical: r.get(4)?,
                    high: r.get(5)?,
                    medium: r.get(6)?,
                    low: r.get(7)?,
                    total: r.get(8)?,
                    scanned_at: r.get(9)?,
                    platforms: 0,
                },
            );
        }
        let mut params: Vec<libsql::Value> = vec![did.to_string().into(), repo.to_string().into()];
        params.extend(digests.iter().map(|d| libsql::Value::from(d.clone())));
        let mut rows = conn
            .query(
                &format!(
                    "SELECT mr.manifest_digest, COUNT(*), MAX(s.critical), MAX(s.high), MAX(s.medium),
                        MAX(s.low), MAX(s.total), MAX(s.scanned_at), MIN(s.status = 'ok')
                     FROM manifest_references mr JOIN scans s ON s.digest = mr.digest
                     WHERE mr.did = ?1 AND mr.repository = ?2 AND mr.manifest_digest IN ({})
                     GROUP BY mr.manifest_digest",
                    marks(3)
                ),
                params,
            )
            .await?;
        while let Some(r) = rows.next().await? {
            let d: String = r.get(0)?;
            if out.contains_key(&d) {
                continue;
            }
            let all_ok: i64 = r.get::<Option<i64>>(8)?.unwrap_or(0);
            out.insert(
                d.clone(),
                ScanRow {
                    digest: d,
                    user_did: did.to_string(),
                    repository: repo.to_string(),
                    status: if all_ok == 1 { "ok" } else { "partial" }.into(),
                    critical: r.get::<Option<i64>>(2)?.unwrap_or(0),
                    high: r.get::<Option<i64>>(3)?.unwrap_or(0),
                    medium: r.get::<Option<i64>>(4)?.unwrap_or(0),
                    low: r.get::<Option<i64>>(5)?.unwrap_or(0),
                    total: r.get::<Option<i64>>(6)?.unwrap_or(0),
                    scanned_at: r.get::<Option<String>>(7)?.unwrap_or_default(),
                    platforms: r.get(1)?,
                },
            );
        }
        Ok(out)
    }
}
