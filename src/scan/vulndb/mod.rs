//! The local vulnerability database: OSV advisories (<https://osv.dev>) kept in a redb file
//! under `<data_dir>/vulndb/`, so scans never need the network.
//!
//! - [`import`]: reads OSV's per-ecosystem export archives (`<Ecosystem>/all.zip`) or
//!   directories of OSV JSON files into a new generation of the database; `atcr vulndb
//!   import` and the URL refresh ([`refresh_from_urls`]) both use it.
//! - [`osv`]: the OSV schema, the compact stored form, severities and range evaluation.
//! - [`VulnDb`]: the running server's handle; it notices a new generation (written by the
//!   CLI while the server runs) and switches to it, and the scanner then re-matches every
//!   stored SBOM against it.
//!
//! Layout: `vulndb/CURRENT` names the live generation `N`, whose file is
//! `vulndb/osv-N.redb`. An import copies the live file (or starts empty with `replace`),
//! upserts into the copy, then atomically points `CURRENT` at it and unlinks older
//! generations (a server still reading one keeps its open file until it switches). Imports
//! take `vulndb/import.lock`, so two never interleave. Tables: `affected`
//! (`ecosystem\0name\0id` -> [`osv::AffectedEntry`] JSON), `vulns` (`id` ->
//! [`osv::VulnInfo`] JSON), `meta` (`meta` -> [`Meta`] JSON).

pub mod osv;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use osv::{AffectedEntry, Osv, VulnInfo};

const AFFECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("affected");
const VULNS: TableDefinition<&str, &[u8]> = TableDefinition::new("vulns");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Largest single OSV record read.
pub const MAX_RECORD_BYTES: u64 = 8 << 20;
/// Most records one import reads.
pub const MAX_RECORDS: u64 = 5_000_000;
/// Largest archive downloaded by the URL refresh.
pub const MAX_DOWNLOAD_BYTES: u64 = 4 << 30;
/// Records per write transaction during an import.
const BATCH: usize = 20_000;
/// redb page cache of the server's read handle.
const READ_CACHE: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("vulnerability database: {0}")]
    Db(String),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}")]
    Source(String),
    #[error("download {0}: {1}")]
    Download(String, String),
}

fn db_err(e: impl std::fmt::Display) -> VulnDbError {
    VulnDbError::Db(e.to_string())
}

/// What the database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub generation: u64,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
    /// Where the records came from (file names or URLs), last import first.
    pub sources: Vec<String>,
    pub advisories: u64,
    /// Advisory entries per ecosystem (`Debian:12`, `PyPI`, ...).
    pub ecosystems: BTreeMap<String, u64>,
}

/// Counters of one import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub generation: u64,
    pub records: u64,
    pub imported: u64,
    pub withdrawn: u64,
    /// Records with no affected package of a known ecosystem.
    pub unmatched: u64,
    pub failed: u64,
    pub advisories: u64,
}

fn current_file(dir: &Path) -> PathBuf {
    dir.join("CURRENT")
}

fn gen_file(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("osv-{generation}.redb"))
}

/// The live generation named by `CURRENT`.
pub fn live_generation(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(current_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An exclusive lock on `vulndb/import.lock` for as long as it lives.
struct ImportLock {
    _file: std::fs::File,
}

impl ImportLock {
    fn take(dir: &Path) -> Result<ImportLock, VulnDbError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("import.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| VulnDbError::Io(path.clone(), e))?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(VulnDbError::Io(path, io::Error::last_os_error()));
        }
        Ok(ImportLock { _file: f })
    }
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Imports OSV records from `sources` (zip archives, directories or single `.json` files)
/// into a new generation. With `replace` the new generation holds only these sources;
/// otherwise they are upserted into a copy of the live one. Blocking.
pub fn import(dir: &Path, sources: &[PathBuf], replace: bool) -> Result<ImportReport, VulnDbError> {
    import_named(
        dir,
        sources,
        &sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        replace,
    )
}

fn import_named(
    dir: &Path,
    sources: &[PathBuf],
    names: &[String],
    replace: bool,
) -> Result<ImportReport, VulnDbError> {
    std::fs::create_dir_all(dir).map_err(|e| VulnDbError::Io(dir.to_path_buf(), e))?;
    for s in sources {
        if !s.exists() {
            return Err(VulnDbError::Source(format!(
                "{} does not exist",
                s.display()
            )));
        }
    }
    let _lock = ImportLock::take(dir)?;
    let live = live_generation(dir);
    let generation = live.map_or(1, |g| g + 1);
    let tmp = dir.join(format!("osv-{generation}.redb.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut prior_sources = Vec::new();
    if let (Some(g), false) = (live, replace) {
        std::fs::copy(gen_file(dir, g), &tmp).map_err(|e| VulnDbError::Io(tmp.clone(), e))?;
    }
    let db = Database::builder()
        .set_cache_size(64 << 20)
        .create(&tmp)
        .map_err(db_err)?;
    if !replace {
        if let Some(m) = read_meta(&db)? {
            prior_sources = m.sources;
        }
    }
    let mut report = ImportReport {
        generation,
        ..ImportReport::default()
    };
    let mut batch: Vec<Osv> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<Osv>, report: &mut ImportReport| -> Result<(), VulnDbError> {
        if batch.is_empty() {
            return Ok(());
        }
        write_batch(&db, batch, report)?;
        batch.clear();
        Ok(())
    };
    for s in sources {
        let mut each = |bytes: &[u8], report: &mut ImportReport| -> Result<(), VulnDbError> {
            report.records += 1;
            if report.records > MAX_RECORDS {
                return Err(VulnDbError::Source(format!(
                    "more than {MAX_RECORDS} records"
                )));
            }
            match serde_json::from_slice::<Osv>(bytes) {
                Ok(v) if !v.id.is_empty() => batch.push(v),
                _ => report.failed += 1,
            }
            if batch.len() >= BATCH {
                flush(&mut batch, report)?;
            }
            Ok(())
        };
        read_source(s, &mut report, &mut each)?;
        flush(&mut batch, &mut report)?;
    }
    // Meta: counts from the tables.
    let mut meta = Meta {
        generation,
        updated_at: crate::pds::now_rfc3339(),
        sources: names
            .iter()
            .cloned()
            .chain(prior_sources)
            .take(64)
            .collect(),
        ..Meta::default()
    };
    {
        let tx = db.begin_read().map_err(db_err)?;
        let v = tx.open_table(VULNS).map_err(db_err)?;
        meta.advisories = v.len().map_err(db_err)?;
        let a = tx.open_table(AFFECTED).map_err(db_err)?;
        for row in a.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let eco = k.value().split('\0').next().unwrap_or("").to_string();
            *meta.ecosystems.entry(eco).or_default() += 1;
        }
    }
    {
        let tx = db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(META).map_err(db_err)?;
            let bytes = serde_json::to_vec(&meta).map_err(db_err)?;
            t.insert("meta", bytes.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
    }
    report.advisories = meta.advisories;
    drop(db);
    let target = gen_file(dir, generation);
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| VulnDbError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &target).map_err(|e| VulnDbError::Io(target.clone(), e))?;
    let cur_tmp = dir.join("CURRENT.tmp");
    {
        let mut f =
            std::fs::File::create(&cur_tmp).map_err(|e| VulnDbError::Io(cur_tmp.clone(), e))?;
        writeln!(f, "{generation}")
            .and_then(|()| f.sync_all())
            .map_err(|e| VulnDbError::Io(cur_tmp.clone(), e))?;
    }
    std::fs::rename(&cur_tmp, current_file(dir))
        .map_err(|e| VulnDbError::Io(cur_tmp.clone(), e))?;
    fsync_dir(dir);
    // Older generations go (an open handle in a running server keeps its file alive).
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let old = name
                .strip_prefix("osv-")
                .and_then(|r| r.strip_suffix(".redb"))
                .and_then(|g| g.parse::<u64>().ok())
                .is_some_and(|g| g < generation);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(report)
}

fn read_meta(db: &Database) -> Result<Option<Meta>, VulnDbError> {
    let tx = db.begin_read().map_err(db_err)?;
    let t = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    Ok(t.get("meta")
        .map_err(db_err)?
        .and_then(|v| serde_json::from_slice(v.value()).ok()))
}

fn write_batch(db: &Database, batch: &[Osv], report: &mut ImportReport) -> Result<(), VulnDbError> {
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut vulns = tx.open_table(VULNS).map_err(db_err)?;
        let mut affected = tx.open_table(AFFECTED).map_err(db_err)?;
        for v in batch {
            // Whatever an earlier version of this advisory said goes first.
            let old: Option<VulnInfo> = vulns
                .get(v.id.as_str())
                .map_err(db_err)?
                .and_then(|x| serde_json::from_slice(x.value()).ok());
            if let Some(old) = old {
                for key in &old.keys {
                    affected
                        .remove(format!("{key}\0{}", old.id).as_str())
                        .map_err(db_err)?;
                }
                vulns.remove(v.id.as_str()).map_err(db_err)?;
            }
            if v.withdrawn.as_deref().is_some_and(|w| !w.is_empty()) {
                report.withdrawn += 1;
                continue;
            }
            let (info, entries) = osv::compact(v);
            if entries.is_empty() {
                report.unmatched += 1;
                continue;
            }
            for (key, entry) in &entries {
                let bytes = serde_json::to_vec(entry).map_err(db_err)?;
                affected
                    .insert(format!("{key}\0{}", entry.id).as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            let bytes = serde_json::to_vec(&info).map_err(db_err)?;
            vulns
                .insert(info.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            report.imported += 1;
        }
    }
    tx.commit().map_err(db_err)
}

/// What [`read_source`] hands each record to.
type EachRecord<'a> = dyn FnMut(&[u8], &mut ImportReport) -> Result<(), VulnDbError> + 'a;

/// Feeds every OSV JSON record of a source to `each`.
fn read_source(
    s: &Path,
    report: &mut ImportReport,
    each: &mut EachRecord<'_>,
) -> Result<(), VulnDbError> {
    let io_err = |e: io::Error| VulnDbError::Io(s.to_path_buf(), e);
    if s.is_dir() {
        let mut stack = vec![s.to_path_buf()];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(io_err)?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    let f = std::fs::File::open(&p).map_err(|e| VulnDbError::Io(p.clone(), e))?;
                    let mut buf = Vec::new();
                    f.take(MAX_RECORD_BYTES + 1)
                        .read_to_end(&mut buf)
                        .map_err(|e| VulnDbError::Io(p.clone(), e))?;
                    if buf.len() as u64 > MAX_RECORD_BYTES {
                        report.failed += 1;
                        continue;
                    }
                    each(&buf, report)?;
                }
            }
        }
        return Ok(());
    }
    let f = std::fs::File::open(s).map_err(io_err)?;
    if s.extension().is_some_and(|e| e == "json") {
        let mut buf = Vec::new();
        f.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        return each(&buf, report);
    }
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| VulnDbError::Source(format!("{}: not a zip archive: {e}", s.display())))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| VulnDbError::Source(format!("{}: {e}", s.display())))?;
        if !entry.is_file() || !entry.name().ends_with(".json") {
            continue;
        }
        if entry.size() > MAX_RECORD_BYTES {
            report.failed += 1;
            continue;
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| VulnDbError::Source(format!("{}: {}: {e}", s.display(), entry.name())))?;
        each(&buf, report)?;
    }
    Ok(())
}

/// Downloads each URL (an OSV export zip) and imports them all as a new generation that
/// replaces the live one. A failed download leaves the live generation untouched.
pub async fn refresh_from_urls(dir: &Path, urls: &[String]) -> Result<ImportReport, VulnDbError> {
    let staging = dir.join("download");
    std::fs::create_dir_all(&staging).map_err(|e| VulnDbError::Io(staging.clone(), e))?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .timeout(std::time::Duration::from_secs(1800))
        .build()
        .map_err(|e| VulnDbError::Download(String::new(), e.to_string()))?;
    let mut files = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let path = staging.join(format!("{i}.zip"));
        download(&client, url, &path).await?;
        files.push(path);
    }
    let dir2 = dir.to_path_buf();
    let names = urls.to_vec();
    let files2 = files.clone();
    let report = tokio::task::spawn_blocking(move || import_named(&dir2, &files2, &names, true))
        .await
        .map_err(db_err)??;
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok(report)
}

async fn download(client: &reqwest::Client, url: &str, path: &Path) -> Result<(), VulnDbError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let err = |e: String| VulnDbError::Download(url.to_string(), e);
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| VulnDbError::Io(path.to_path_buf(), e))?;
    let mut stream = resp.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| err(e.to_string()))?;
        total += chunk.len() as u64;
        if total > MAX_DOWNLOAD_BYTES {
            return Err(err(format!("larger than {MAX_DOWNLOAD_BYTES} bytes")));
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| VulnDbError::Io(path.to_path_buf(), e))?;
    }
    f.sync_all()
        .await
        .map_err(|e| VulnDbError::Io(path.to_path_buf(), e))?;
    Ok(())
}

/// A read view of one generation.
#[derive(Clone)]
pub struct Reader {
    db: Arc<Database>,
    pub meta: Meta,
}

impl Reader {
    /// Every stored entry for (`ecosystem`, `name`) (names as the ecosystem writes them;
    /// PyPI names are normalised here).
    pub fn lookup(&self, ecosystem: &str, name: &str) -> Result<Vec<AffectedEntry>, VulnDbError> {
        let name = osv::canonical_name(ecosystem, name);
        let lo = format!("{ecosystem}\0{name}\0");
        let hi = format!("{ecosystem}\0{name}\u{1}");
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = match tx.open_table(AFFECTED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for row in t.range(lo.as_str()..hi.as_str()).map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            if let Ok(e) = serde_json::from_slice(v.value()) {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub fn vuln(&self, id: &str) -> Result<Option<VulnInfo>, VulnDbError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = match tx.open_table(VULNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(e)),
        };
        Ok(t.get(id)
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Ecosystems with at least one entry whose name starts with `prefix` (`Debian:` ...).
    pub fn ecosystems_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.meta
            .ecosystems
            .keys()
            .filter(|e| e.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// The server's handle on the live generation.
pub struct VulnDb {
    dir: PathBuf,
    loaded: Mutex<Option<(u64, Reader)>>,
}

impl std::fmt::Debug for VulnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulnDb")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl VulnDb {
    pub fn new(dir: &Path) -> VulnDb {
        VulnDb {
            dir: dir.to_path_buf(),
            loaded: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Switches to the generation `CURRENT` names when it changed. Returns the new
    /// generation when it switched. Blocking (opens a file).
    pub fn reload(&self) -> Result<Option<u64>, VulnDbError> {
        let Some(live) = live_generation(&self.dir) else {
            return Ok(None);
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.as_ref().is_some_and(|(g, _)| *g == live) {
            return Ok(None);
        }
        let db = Database::builder()
            .set_cache_size(READ_CACHE)
            .open(gen_file(&self.dir, live))
            .map_err(db_err)?;
        let meta = read_meta(&db)?.unwrap_or_default();
        *loaded = Some((
            live,
            Reader {
                db: Arc::new(db),
                meta,
            },
        ));
        Ok(Some(live))
    }

    /// The live generation, loading it on first use; `None` before any import.
    pub fn reader(&self) -> Option<Reader> {
        {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, r)) = loaded.as_ref() {
                return Some(r.clone());
            }
        }
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "cannot open the vulnerability database");
        }
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.as_ref().map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn import_upsert_withdraw_and_generations() {
        let tmp = tempfile::tempdir().unwrap();
        let db_dir = tmp.path().join("vulndb");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("nested")).unwrap();
        write(
            &src,
            "a.json",
            r#"{"id":"PYSEC-1","affected":[{"package":{"ecosystem":"PyPI","name":"Requests"},"versions":["2.0.0"]}]}"#,
        );
        write(
            &src.join("nested"),
            "b.json",
            r#"{"id":"GHSA-2","affected":[{"package":{"ecosystem":"npm","name":"lodash"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"}]}]}]}"#,
        );
        write(
            &src,
            "c.json",
            r#"{"id":"X-3","affected":[{"package":{"ecosystem":"Nonexistent","name":"y"},"versions":["1"]}]}"#,
        );
        write(&src, "bad.json", "{not json");
        let r = import(&db_dir, std::slice::from_ref(&src), false).unwrap();
        assert_eq!(
            (r.generation, r.records, r.imported, r.unmatched, r.failed),
            (1, 4, 2, 1, 1)
        );
        let vdb = VulnDb::new(&db_dir);
        let reader = vdb.reader().unwrap();
        assert_eq!(reader.meta.advisories, 2);
        assert_eq!(reader.lookup("PyPI", "requests").unwrap()[0].id, "PYSEC-1");
        assert_eq!(reader.lookup("npm", "lodash").unwrap().len(), 1);
        assert!(reader.lookup("npm", "lodas").unwrap().is_empty());

        // A zip with an update of GHSA-2 (now another package) and PYSEC-1 withdrawn.
        let zip_path = tmp.path().join("all.zip");
        {
            let f = std::fs::File::create(&zip_path).unwrap();
            let mut z = zip::ZipWriter::new(f);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("GHSA-2.json", opts).unwrap();
            z.write_all(br#"{"id":"GHSA-2","affected":[{"package":{"ecosystem":"npm","name":"underscore"},"versions":["1.0.0"]}]}"#).unwrap();
            z.start_file("PYSEC-1.json", opts).unwrap();
            z.write_all(br#"{"id":"PYSEC-1","withdrawn":"2024-01-01T00:00:00Z","affected":[]}"#)
                .unwrap();
            z.finish().unwrap();
        }
        let r = import(&db_dir, std::slice::from_ref(&zip_path), false).unwrap();
        assert_eq!(
            (r.generation, r.imported, r.withdrawn, r.advisories),
            (2, 1, 1, 1)
        );
        // The server's handle switches when asked, and the old file is gone from disk.
        assert_eq!(vdb.reload().unwrap(), Some(2));
        let reader = vdb.reader().unwrap();
        assert!(reader.lookup("npm", "lodash").unwrap().is_empty());
        assert_eq!(reader.lookup("npm", "underscore").unwrap()[0].id, "GHSA-2");
        assert!(reader.lookup("PyPI", "requests").unwrap().is_empty());
        assert!(!gen_file(&db_dir, 1).exists());
        assert_eq!(vdb.reload().unwrap(), None);
        // replace: only the new sources.
        let r = import(&db_dir, &[src.join("nested")], true).unwrap();
        assert_eq!((r.generation, r.advisories), (3, 1));
        assert!(import(&db_dir, &[tmp.path().join("missing.zip")], false).is_err());
        assert_eq!(live_generation(&db_dir), Some(3));
    }

    /// Serves `body` with `status` to every connection on a loopback port (a real HTTP/1.1
    /// server, one response per connection); returns the base URL.
    async fn serve_once_per_connection(status: &'static str, body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/zip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn refresh_from_urls_downloads_and_replaces_and_a_failure_keeps_the_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let db_dir = tmp.path().join("vulndb");
        let mut zip_bytes = Vec::new();
        {
            let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("GHSA-9.json", opts).unwrap();
            z.write_all(br#"{"id":"GHSA-9","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"versions":["1.0.0"]}]}"#).unwrap();
            z.finish().unwrap();
        }
        let ok = serve_once_per_connection("200 OK", zip_bytes).await;
        let r = refresh_from_urls(&db_dir, &[format!("{ok}/npm/all.zip")])
            .await
            .unwrap();
        assert_eq!((r.generation, r.imported, r.advisories), (1, 1, 1));
        // One handle, as the server keeps (a generation's file is opened once).
        let vdb = VulnDb::new(&db_dir);
        let reader = vdb.reader().unwrap();
        assert_eq!(reader.lookup("npm", "left-pad").unwrap()[0].id, "GHSA-9");
        // The staged download is removed after the import.
        assert_eq!(
            std::fs::read_dir(db_dir.join("download")).unwrap().count(),
            0
        );

        // A URL that answers 404 fails the refresh, names the URL, and leaves generation 1.
        let missing = serve_once_per_connection("404 Not Found", b"no".to_vec()).await;
        let url = format!("{missing}/PyPI/all.zip");
        let err = refresh_from_urls(&db_dir, &[format!("{ok}/npm/all.zip"), url.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&url), "{err}");
        assert!(err.to_string().contains("404"), "{err}");
        assert_eq!(live_generation(&db_dir), Some(1));
        assert_eq!(vdb.reload().unwrap(), None);
        let reader = vdb.reader().unwrap();
        assert_eq!(reader.lookup("npm", "left-pad").unwrap()[0].id, "GHSA-9");
    }
}
