//! A minimal read-only reader of SQLite database files, enough to list the rows of one
//! table: the header, table b-trees (interior and leaf pages), overflow chains, varints
//! and the record format (<https://www.sqlite.org/fileformat2.html>).
//!
//! Why not libsql (which bundles SQLite): the rpm database comes out of an untrusted image
//! as bytes in memory; SQLite would need it written to a file and would then run its own
//! code (triggers, views, a journal) on it. This reader only follows page pointers, checks
//! every offset, visits each page at most once and stops at its caps, so a hostile file
//! costs at most one pass over its bytes. Uncommitted pages in a `-wal` file are not seen.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SqliteError {
    #[error("not an SQLite 3 database")]
    NotSqlite,
    #[error("malformed database: {0}")]
    Malformed(&'static str),
    #[error("no table {0}")]
    NoTable(String),
}

type Result<T> = std::result::Result<T, SqliteError>;

/// Largest record payload assembled (bigger rows are skipped).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

pub struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    pages: usize,
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Db<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Db<'a>> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err(SqliteError::NotSqlite);
        }
        let page_size = match be16(bytes, 16).ok_or(SqliteError::NotSqlite)? {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n,
            _ => return Err(SqliteError::Malformed("page size")),
        };
        let reserved = usize::from(bytes[20]);
        let usable = page_size
            .checked_sub(reserved)
            .filter(|u| *u >= 480)
            .ok_or(SqliteError::Malformed("reserved space"))?;
        Ok(Db {
            bytes,
            page_size,
            usable,
            pages: bytes.len() / page_size,
        })
    }

    fn page(&self, n: u32) -> Result<&'a [u8]> {
        let n = n as usize;
        if n == 0 || n > self.pages {
            return Err(SqliteError::Malformed("page number out of range"));
        }
        let start = (n - 1) * self.page_size;
        Ok(&self.bytes[start..start + self.page_size])
    }

    /// Calls `f(rowid, columns)` for every row of the table b-tree rooted at `root`, at
    /// most `max_rows` times. `f` returns false to stop.
    pub fn scan_table(
        &self,
        root: u32,
        max_rows: usize,
        mut f: impl FnMut(i64, Vec<Value>) -> bool,
    ) -> Result<()> {
        let mut visited: HashSet<u32> = HashSet::new();
        let mut stack = vec![root];
        let mut rows = 0usize;
        while let Some(pn) = stack.pop() {
            if !visited.insert(pn) || visited.len() > self.pages {
                return Err(SqliteError::Malformed("page visited twice"));
            }
            let page = self.page(pn)?;
            let hdr = if pn == 1 { 100 } else { 0 };
            let kind = *page.get(hdr).ok_or(SqliteError::Malformed("page header"))?;
            let cells = be16(page, hdr + 3).ok_or(SqliteError::Malformed("page header"))?;
            match kind {
                0x05 => {
                    let right = be32(page, hdr + 8).ok_or(SqliteError::Malformed("page header"))?;
                    // Pushed in reverse so rows come out in rowid order.
                    stack.push(right);
                    for i in (0..cells).rev() {
                        let ptr = be16(page, hdr + 12 + 2 * i)
                            .ok_or(SqliteError::Malformed("cell pointer"))?;
                        let child = be32(page, ptr).ok_or(SqliteError::Malformed("cell"))?;
                        stack.push(child);
                    }
                }
                0x0d => {
                    for i in 0..cells {
                        let ptr = be16(page, hdr + 8 + 2 * i)
                            .ok_or(SqliteError::Malformed("cell pointer"))?;
                        let cell = page.get(ptr..).ok_or(SqliteError::Malformed("cell"))?;
                        let (len, a) = varint(cell).ok_or(SqliteError::Malformed("cell"))?;
                        let (rowid, b) =
                            varint(&cell[a..]).ok_or(SqliteError::Malformed("cell"))?;
                        let Some(payload) = self.payload(&cell[a + b..], len as usize)? else {
                            continue;
                        };
                        rows += 1;
                        if !f(rowid as i64, record(&payload)?) || rows >= max_rows {
                            return Ok(());
                        }
                    }
                }
                _ => return Err(SqliteError::Malformed("not a table b-tree page")),
            }
        }
        Ok(())
    }

    /// A leaf cell's payload with its overflow chain; `None` when over [`MAX_PAYLOAD`].
    fn payload(&self, local: &[u8], len: usize) -> Result<Option<Vec<u8>>> {
        let u = self.usable;
        let x = u - 35;
        let local_len = if len <= x {
            len
        } else {
            let m = ((u - 12) * 32 / 255) - 23;
            let k = m + ((len - m) % (u - 4));
            if k <= x {
                k
            } else {
                m
            }
        };
        if len > MAX_PAYLOAD {
            return Ok(None);
        }
        let mut out = local
            .get(..local_len)
            .ok_or(SqliteError::Malformed("cell payload"))?
            .to_vec();
        if local_len < len {
            let mut next =
                be32(local, local_len).ok_or(SqliteError::Malformed("overflow pointer"))?;
            let mut hops = 0usize;
            while out.len() < len {
                hops += 1;
                if next == 0 || hops > self.pages {
                    return Err(SqliteError::Malformed("overflow chain"));
                }
                let page = self.page(next)?;
                next = be32(page, 0).ok_or(SqliteError::Malformed("overflow page"))?;
                let take = (len - out.len()).min(u - 4);
                out.extend_from_slice(&page[4..4 + take]);
            }
        }
        Ok(Some(out))
    }

    /// The root page of table `name` (from `sqlite_schema`, rooted at page 1).
    pub fn table_root(&self, name: &str) -> Result<u32> {
        let mut root = None;
        self.scan_table(1, 100_000, |_, cols| {
            let is = |i: usize, want: &str| matches!(cols.get(i), Some(Value::Text(t)) if t.eq_ignore_ascii_case(want.as_bytes()));
            if is(0, "table") && is(1, name) {
                if let Some(Value::Int(r)) = cols.get(3) {
                    root = u32::try_from(*r).ok();
                }
                return false;
            }
            true
        })?;
        root.ok_or_else(|| SqliteError::NoTable(name.to_string()))
    }
}

/// Decodes a record (header of serial types, then the values).
pub fn record(p: &[u8]) -> Result<Vec<Value>> {
    let bad = SqliteError::Malformed("record");
    let (hlen, mut h) = varint(p).ok_or(bad.clone())?;
    let hlen = usize::try_from(hlen).map_err(|_| bad.clone())?;
    if hlen > p.len() || hlen < h {
        return Err(bad);
    }
    let mut body = hlen;
    let mut out = Vec::new();
    while h < hlen {
        let (t, n) = varint(&p[h..hlen]).ok_or(bad.clone())?;
        h += n;
        let int = |len: usize, body: usize| -> Result<i64> {
            let b = p
                .get(body..body + len)
                .ok_or(SqliteError::Malformed("record value"))?;
            let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
            for &x in b {
                v = (v << 8) | i64::from(x);
            }
            Ok(v)
        };
        let (value, len) = match t {
            0 => (Value::Null, 0),
            1..=4 => (Value::Int(int(t as usize, body)?), t as usize),
            5 => (Value::Int(int(6, body)?), 6),
            6 => (Value::Int(int(8, body)?), 8),
            7 => {
                let b = p
                    .get(body..body + 8)
                    .ok_or(SqliteError::Malformed("record value"))?;
                (
                    Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))),
                    8,
                )
            }
            8 => (Value::Int(0), 0),
            9 => (Value::Int(1), 0),
            10 | 11 => return Err(SqliteError::Malformed("reserved serial type")),
            n => {
                let len = usize::try_from((n - 12) / 2)
                    .map_err(|_| SqliteError::Malformed("record value"))?;
                let b = p
                    .get(body..body.saturating_add(len))
                    .ok_or(SqliteError::Malformed("record value"))?
                    .to_vec();
                (
                    if n % 2 == 0 {
                        Value::Blob(b)
                    } else {
                        Value::Text(b)
                    },
                    len,
                )
            }
        };
        body += len;
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Db::open(b"hello").err(), Some(SqliteError::NotSqlite));
        let mut b = b"SQLite format 3\0".to_vec();
        b.extend_from_slice(&[0x10, 0x00, 1, 1, 0, 64, 32, 32]);
        b.resize(4096 * 2, 0xff);
        let db = Db::open(&b).unwrap();
        assert!(db.table_root("Packages").is_err());
    }
}
