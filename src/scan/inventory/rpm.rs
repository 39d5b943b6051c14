//! The RPM database of Fedora, RHEL 9+, AlmaLinux, Rocky, Amazon Linux 2023, CentOS Stream
//! (`/var/lib/rpm/rpmdb.sqlite` or `/usr/lib/sysimage/rpm/rpmdb.sqlite`): the
//! `Packages` table holds one RPM header blob per package, read here with [`super::sqlite`].
//! Older BerkeleyDB (`Packages`) and NDB (`Packages.db`) databases are not read.
//!
//! Header blob: big-endian `il` (index entries), `dl` (data bytes), `il` entries of (tag,
//! type, offset, count), then the data store.

use super::sqlite::{Db, Value};
use super::{clip, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// Packages of an `rpmdb.sqlite` file; an error when it is not one.
pub fn parse_rpmdb_sqlite(bytes: &[u8]) -> Result<Vec<Package>, String> {
    let db = Db::open(bytes).map_err(|e| e.to_string())?;
    let root = db.table_root("Packages").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    db.scan_table(root, MAX_PACKAGES_PER_FILE, |_, cols| {
        if let Some(Value::Blob(b)) = cols.get(1) {
            if let Some(p) = parse_header(b) {
                out.push(p);
            }
        }
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One package from a header blob (`None` for gpg-pubkey pseudo packages and junk).
pub fn parse_header(blob: &[u8]) -> Option<Package> {
    let il = be32(blob, 0)? as usize;
    let dl = be32(blob, 4)? as usize;
    if il == 0 || il > 0xffff || dl > 256 << 20 {
        return None;
    }
    let index = blob.get(8..8 + il * 16)?;
    let data = blob.get(8 + il * 16..(8 + il * 16).checked_add(dl)?)?;
    let mut name = None;
    let mut version = None;
    let mut release = None;
    let mut epoch = None;
    let mut license = None;
    let mut arch = None;
    let mut source = None;
    for e in index.chunks_exact(16) {
        let tag = be32(e, 0)?;
        let kind = be32(e, 4)?;
        let off = be32(e, 8)? as usize;
        let count = be32(e, 12)?;
        let string = || -> Option<String> {
            if kind != TYPE_STRING && kind != TYPE_I18NSTRING {
                return None;
            }
            let rest = data.get(off..)?;
            let end = memchr::memchr(0, rest)?;
            Some(clip(&String::from_utf8_lossy(&rest[..end]), MAX_FIELD))
        };
        match tag {
            TAG_NAME => name = string(),
            TAG_VERSION => version = string(),
            TAG_RELEASE => release = string(),
            TAG_LICENSE => license = string(),
            TAG_ARCH => arch = string(),
            TAG_SOURCERPM => source = string(),
            TAG_EPOCH if kind == TYPE_INT32 && count >= 1 => epoch = be32(data, off),
            _ => {}
        }
    }
    let name = name?;
    let version = version?;
    if name.is_empty() || version.is_empty() || name == "gpg-pubkey" {
        return None;
    }
    let mut evr = String::new();
    if let Some(e) = epoch {
        evr.push_str(&format!("{e}:"));
    }
    evr.push_str(&version);
    if let Some(r) = release.filter(|r| !r.is_empty()) {
        evr.push('-');
        evr.push_str(&r);
    }
    let mut p = Package::new(PackageType::Rpm, &name, &evr);
    p.arch = arch.filter(|a| !a.is_empty() && a != "(none)");
    p.licenses = license.into_iter().filter(|l| !l.is_empty()).collect();
    p.source = source
        .as_deref()
        .and_then(source_name)
        .filter(|s| *s != name);
    Some(p)
}

/// `openssl-3.0.7-24.el9.src.rpm` -> `openssl`.
pub fn source_name(srpm: &str) -> Option<String> {
    let base = srpm.strip_suffix(".rpm")?;
    let base = base.rsplit_once('.').map(|(b, _)| b).unwrap_or(base); // .src / .nosrc
    let (rest, _release) = base.rsplit_once('-')?;
    let (name, _version) = rest.rsplit_once('-')?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Builds a header blob (tests and fuzz seeds).
pub fn build_header(tags: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    if let Some(e) = epoch {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        index.push((TAG_EPOCH, TYPE_INT32, data.len() as u32, 1u32));
        data.extend_from_slice(&e.to_be_bytes());
    }
    for (tag, value) in tags {
        index.push((*tag, TYPE_STRING, data.len() as u32, 1));
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(index.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    for (t, k, o, c) in index {
        for v in [t, k, o, c] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&data);
    out
}

/// The tag numbers `build_header` takes.
pub mod tags {
    pub const NAME: u32 = super::TAG_NAME;
    pub const VERSION: u32 = super::TAG_VERSION;
    pub const RELEASE: u32 = super::TAG_RELEASE;
    pub const LICENSE: u32 = super::TAG_LICENSE;
    pub const ARCH: u32 = super::TAG_ARCH;
    pub const SOURCERPM: u32 = super::TAG_SOURCERPM;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blob() {
        let h = build_header(
            &[
                (tags::NAME, "openssl-libs"),
                (tags::VERSION, "3.0.7"),
                (tags::RELEASE, "24.el9"),
                (tags::ARCH, "x86_64"),
                (tags::LICENSE, "ASL 2.0"),
                (tags::SOURCERPM, "openssl-3.0.7-24.el9.src.rpm"),
            ],
            Some(1),
        );
        let p = parse_header(&h).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("openssl-libs", "1:3.0.7-24.el9")
        );
        assert_eq!(p.source.as_deref(), Some("openssl"));
        assert_eq!(p.licenses, ["ASL 2.0"]);
        assert!(parse_header(&build_header(
            &[(tags::NAME, "gpg-pubkey"), (tags::VERSION, "1")],
            None
        ))
        .is_none());
        assert!(parse_header(&h[..20]).is_none());
        assert_eq!(
            source_name("glibc-2.34-60.el9.src.rpm").as_deref(),
            Some("glibc")
        );
    }

    /// A real SQLite file (written by libsql's bundled SQLite) with header blobs big enough
    /// to spill onto overflow pages, read back by our reader.
    #[tokio::test]
    async fn reads_a_real_sqlite_rpmdb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        let db = libsql::Builder::new_local(&path).build().await.unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("PRAGMA page_size=4096; CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); CREATE TABLE Name (key TEXT NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY(key, hnum, idx)) WITHOUT ROWID;").await.unwrap();
        let filler = "x".repeat(9000);
        for i in 0..300 {
            let name = format!("pkg{i}");
            let h = build_header(
                &[
                    (tags::NAME, &name),
                    (tags::VERSION, "1.0"),
                    (tags::RELEASE, "1.el9"),
                    (tags::LICENSE, &filler[..(i * 31) % 9000]),
                ],
                None,
            );
            conn.execute(
                "INSERT INTO Packages (blob) VALUES (?1)",
                libsql::params![h],
            )
            .await
            .unwrap();
        }
        drop(conn);
        drop(db);
        let bytes = std::fs::read(&path).unwrap();
        let p = parse_rpmdb_sqlite(&bytes).unwrap();
        assert_eq!(p.len(), 300);
        assert_eq!(p[0].name, "pkg0");
        assert_eq!(p[299].name, "pkg299");
        assert_eq!(p[299].licenses[0].len(), MAX_FIELD.min((299 * 31) % 9000));
        assert!(parse_rpmdb_sqlite(b"SQLite format 3\0junk").is_err());
    }

    /// An rpmdb written by Python's sqlite3 module (1 KiB pages).
    #[test]
    fn python_written_rpmdb() {
        let bytes = include_bytes!("../../../fuzz/seeds/scan_rpm/rpmdb.sqlite");
        let p = parse_rpmdb_sqlite(bytes).unwrap();
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}@{} {:?}", p.name, p.version, p.source))
            .collect();
        assert_eq!(
            got,
            [
                "openssl-libs@3.0.7-24.el9 Some(\"openssl\")",
                "bash@5.1.8-6.el9_1 None",
                "zlib@1.2.11-40.el9 None"
            ]
        );
    }
}
