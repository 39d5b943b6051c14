//! A streaming tar reader for image layers: POSIX ustar, GNU (`L`/`K` long names, base-256
//! sizes) and PAX (`x` local headers: `path`, `linkpath`, `size`; `g` global headers are
//! skipped). Header checksums are verified; extension headers are capped
//! ([`MAX_LONG_NAME`], [`MAX_PAX`]) so a hostile layer cannot make the reader allocate
//! more than that per entry, whatever it claims. Entry data is read through [`Read`] on the
//! reader and skipped when the caller does not read it.
//!
//! Written here rather than taken from the `tar` crate, which reads PAX and GNU extension
//! headers whole into memory whatever their size.

use std::io::{self, Read};

/// Longest GNU long name / long link accepted.
pub const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest PAX extended header accepted.
pub const MAX_PAX: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Dir,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The path as stored (lossy UTF-8), not normalised.
    pub path: String,
    pub link: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("tar: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub struct TarReader<R: Read> {
    r: R,
    /// Unread data bytes of the current entry.
    remaining: u64,
    /// Padding after the current entry's data (to the next 512-byte block).
    pad: u64,
    done: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian in the remaining bytes (first byte's low bits too).
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = memchr::memchr(0, field).unwrap_or(field.len());
    &field[..end]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    /// The underlying reader (after the archive's end marker, when at the end).
    pub fn into_inner(self) -> R {
        self.r
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.r.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar entry cut short",
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads a block; `false` at a clean end of input.
    fn block(&mut self, buf: &mut [u8; 512]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < 512 {
            let n = self.r.read(&mut buf[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(TarError::Malformed("truncated header block".into()));
            }
            filled += n;
        }
        Ok(true)
    }

    /// Data of an extension header, capped.
    fn read_ext(&mut self, size: u64, cap: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > cap {
            return Err(TarError::Malformed(format!(
                "{what} of {size} bytes (limit {cap})"
            )));
        }
        let mut v = vec![0u8; size as usize];
        self.r.read_exact(&mut v)?;
        self.skip((512 - size % 512) % 512)?;
        Ok(v)
    }

    /// The next entry's header (after skipping what is left of the current entry), or
    /// `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.pad)?;
        self.remaining = 0;
        self.pad = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_link: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        // Extension headers chained before one entry: a handful at most.
        for _ in 0..16 {
            let mut h = [0u8; 512];
            if !self.block(&mut h)? || h.iter().all(|b| *b == 0) {
                self.done = true;
                return Ok(None);
            }
            let stored = octal(&h[148..156])
                .ok_or_else(|| TarError::Malformed("bad checksum field".into()))?;
            let unsigned: u64 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            let signed: i64 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        i64::from(*b as i8)
                    }
                })
                .sum();
            if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
                return Err(TarError::Malformed("header checksum mismatch".into()));
            }
            let size =
                octal(&h[124..136]).ok_or_else(|| TarError::Malformed("bad size field".into()))?;
            let typeflag = h[156];
            match typeflag {
                b'L' => {
                    let v = self.read_ext(size, MAX_LONG_NAME, "GNU long name")?;
                    long_name = Some(cstr(&v).to_vec());
                    continue;
                }
                b'K' => {
                    let v = self.read_ext(size, MAX_LONG_NAME, "GNU long link")?;
                    long_link = Some(cstr(&v).to_vec());
                    continue;
                }
                b'x' | b'X' => {
                    let v = self.read_ext(size, MAX_PAX, "PAX header")?;
                    for (k, val) in pax_records(&v) {
                        match k.as_str() {
                            "path" => pax_path = Some(val),
                            "linkpath" => pax_link = Some(val),
                            "size" => pax_size = val.parse().ok(),
                            _ => {}
                        }
                    }
                    continue;
                }
                b'g' => {
                    self.read_ext(size, MAX_PAX, "PAX global header")?;
                    continue;
                }
                _ => {}
            }
            let ustar = &h[257..263] == b"ustar\0";
            let mut path = cstr(&h[0..100]).to_vec();
            if ustar {
                let prefix = cstr(&h[345..500]);
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&path);
                    path = p;
                }
            }
            let path = pax_path
                .or_else(|| long_name.as_deref().map(lossy))
                .unwrap_or_else(|| lossy(&path));
            let link = pax_link
                .or_else(|| long_link.as_deref().map(lossy))
                .unwrap_or_else(|| lossy(cstr(&h[157..257])));
            let size = pax_size.unwrap_or(size);
            let kind = match typeflag {
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'5' => Kind::Dir,
                _ => Kind::Other,
            };
            // Links, directories and devices carry no data (whatever their size field says,
            // except that a hard link with data is read as data here and skipped).
            let data = match kind {
                Kind::File | Kind::Other | Kind::HardLink => size,
                Kind::Symlink | Kind::Dir => 0,
            };
            self.remaining = data;
            self.pad = (512 - data % 512) % 512;
            let mode = octal(&h[100..108]).unwrap_or(0) as u32;
            return Ok(Some(Header {
                path,
                link,
                kind,
                size: if kind == Kind::File { size } else { 0 },
                mode,
            }));
        }
        Err(TarError::Malformed(
            "too many extension headers in a row".into(),
        ))
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar entry cut short",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// `"<len> key=value\n"` records.
fn pax_records(mut data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(sp) = memchr::memchr(b' ', data) else {
            break;
        };
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > data.len() {
            break;
        }
        let rec = &data[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = memchr::memchr(b'=', rec) {
            out.push((lossy(&rec[..eq]), lossy(&rec[eq + 1..])));
        }
        data = &data[len..];
    }
    out
}

/// Builds tar archives (tests, benches, fuzz seeds): ustar headers, PAX for long paths.
pub mod build {
    /// One entry: path, kind byte (`b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'5'`
    /// directory), link target, data, mode.
    pub struct Entry<'a> {
        pub path: &'a str,
        pub kind: u8,
        pub link: &'a str,
        pub data: &'a [u8],
        pub mode: u32,
    }

    pub fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            kind: b'0',
            link: "",
            data,
            mode: 0o644,
        }
    }

    pub fn exec<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            kind: b'0',
            link: "",
            data,
            mode: 0o755,
        }
    }

    pub fn dir(path: &str) -> Entry<'_> {
        Entry {
            path,
            kind: b'5',
            link: "",
            data: b"",
            mode: 0o755,
        }
    }

    pub fn symlink<'a>(path: &'a str, target: &'a str) -> Entry<'a> {
        Entry {
            path,
            kind: b'2',
            link: target,
            data: b"",
            mode: 0o777,
        }
    }

    pub fn hardlink<'a>(path: &'a str, target: &'a str) -> Entry<'a> {
        Entry {
            path,
            kind: b'1',
            link: target,
            data: b"",
            mode: 0o644,
        }
    }

    fn header(out: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], size: usize, mode: u32) {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
    }

    fn pad(out: &mut Vec<u8>) {
        while out.len() % 512 != 0 {
            out.push(0);
        }
    }

    /// A complete archive (with the two zero blocks at the end).
    pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            if e.path.len() > 100 || e.link.len() > 100 {
                let mut recs = String::new();
                for (k, v) in [("path", e.path), ("linkpath", e.link)] {
                    if v.len() > 100 {
                        let body = format!(" {k}={v}\n");
                        let mut len = body.len() + 1;
                        while format!("{len}{body}").len() != len {
                            len += 1;
                        }
                        recs.push_str(&format!("{len}{body}"));
                    }
                }
                header(&mut out, b"PaxHeader", b'x', b"", recs.len(), 0o644);
                out.extend_from_slice(recs.as_bytes());
                pad(&mut out);
            }
            header(
                &mut out,
                e.path.as_bytes(),
                e.kind,
                e.link.as_bytes(),
                e.data.len(),
                e.mode,
            );
            out.extend_from_slice(e.data);
            pad(&mut out);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn list(t: &[u8]) -> Vec<(String, Kind, String, Vec<u8>)> {
        let mut r = TarReader::new(t);
        let mut out = Vec::new();
        while let Some(h) = r.next_entry().unwrap() {
            let mut data = Vec::new();
            if h.path.ends_with("read") {
                r.read_to_end(&mut data).unwrap();
            }
            out.push((h.path, h.kind, h.link, data));
        }
        out
    }

    #[test]
    fn ustar_pax_links_and_skipping() {
        let long = format!("usr/{}/read", "d".repeat(150));
        let t = tar(&[
            dir("etc/"),
            file("etc/skip", &[7u8; 1000]),
            file("etc/read", b"hello"),
            symlink("etc/os-release", "../usr/lib/os-release"),
            hardlink("bin/sh2", "bin/sh"),
            file(&long, b"long"),
        ]);
        let got = list(&t);
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[2],
            (
                "etc/read".into(),
                Kind::File,
                String::new(),
                b"hello".to_vec()
            )
        );
        assert_eq!(got[3].1, Kind::Symlink);
        assert_eq!(got[3].2, "../usr/lib/os-release");
        assert_eq!(got[4].1, Kind::HardLink);
        assert_eq!(got[5].0, long);
        assert_eq!(got[5].3, b"long");
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut t = tar(&[file("a", b"x")]);
        t[0] = b'b'; // checksum no longer matches
        assert!(TarReader::new(&t[..]).next_entry().is_err());
        // A PAX header claiming 1 GiB.
        let mut h = tar(&[file("PaxHeader", b"")]);
        h[156] = b'x';
        h[124..135].copy_from_slice(format!("{:011o}", 1u64 << 30).as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h[..512].iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let e = TarReader::new(&h[..]).next_entry().unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        // Truncated data.
        let t = tar(&[file("a", &[1u8; 600])]);
        let mut r = TarReader::new(&t[..700]);
        r.next_entry().unwrap();
        assert!(r.next_entry().is_err());
        assert!(TarReader::new(&b"short"[..]).next_entry().is_err());
        assert!(TarReader::new(&b""[..]).next_entry().unwrap().is_none());
    }
}
