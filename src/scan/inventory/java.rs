//! Java archives (jar, war, ear) read as a stream of zip local entries, so the archive is
//! never held whole or written to disk: `META-INF/maven/<group>/<artifact>/pom.properties`
//! gives Maven coordinates (a shaded jar has several), `META-INF/MANIFEST.MF` the
//! title/version/licence when there is no pom.properties, and nested archives
//! (`BOOT-INF/lib/*.jar`, `WEB-INF/lib/*.jar`) are read the same way, two levels deep.
//!
//! A hand-written reader because the archives come from `ZipOutputStream`, which puts the
//! sizes of deflated entries after the data (a data descriptor): a streaming reader must
//! inflate to find the end, which the `zip` crate's stream reader does not do.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::DeflateDecoder;

use super::{clip, Package, PackageType, MAX_FIELD};

/// Largest pom.properties / MANIFEST.MF read.
const MAX_META: u64 = 256 * 1024;
/// Nesting depth of jars inside jars.
const MAX_DEPTH: usize = 2;
/// Entries read per archive before giving up.
const MAX_ENTRIES: usize = 200_000;
/// Packages taken from one archive (with its nested ones).
const MAX_PACKAGES: usize = 10_000;
/// Bytes inflated from one archive with its nested ones (a zip bomb nested in a jar
/// would otherwise multiply the work): the scan of that archive stops there.
const MAX_INFLATE: u64 = 1 << 30;
/// Largest stored entry of unknown size (a data descriptor after it) read to find its end.
const MAX_STORED_UNKNOWN: usize = 16 << 20;

/// Inflated bytes still allowed for the archive being read.
type Budget = std::cell::Cell<u64>;

/// Counts what an inflater produces against the archive's [`MAX_INFLATE`].
struct Budgeted<'a, R> {
    inner: R,
    left: &'a Budget,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.left.get();
        if n as u64 > left {
            self.left.set(0);
            return Err(io::Error::other("the archive inflates to more than 1 GiB"));
        }
        self.left.set(left - n as u64);
        Ok(n)
    }
}

pub fn is_archive_name(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".jar", ".war", ".ear", ".jpi", ".hpi"]
        .iter()
        .any(|e| lower.ends_with(e))
}

/// Reads an archive; `name` is its path (for packages that have only a manifest).
pub fn scan_archive(r: &mut dyn Read, name: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut buffered = BufReader::with_capacity(64 * 1024, r);
    let budget = Budget::new(MAX_INFLATE);
    let _ = scan(&mut buffered, name, 0, &mut out, &budget);
    out
}

fn le16(b: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([b[0], b[1]]))
}
fn le32(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads entries from a buffered reader: the bufread inflater consumes exactly the bytes of
/// its deflate stream, so the next local header follows right where it stops.
fn scan(
    r: &mut dyn BufRead,
    name: &str,
    depth: usize,
    out: &mut Vec<Package>,
    budget: &Budget,
) -> io::Result<()> {
    let mut manifest: Option<Package> = None;
    let mut found_pom = false;
    for _ in 0..MAX_ENTRIES {
        let mut sig = [0u8; 4];
        if r.read_exact(&mut sig).is_err() || sig != [0x50, 0x4b, 0x03, 0x04] {
            break; // central directory, end, or not a zip
        }
        let mut h = [0u8; 26];
        r.read_exact(&mut h)?;
        let flags = le16(&h[2..]);
        let method = le16(&h[4..]);
        let mut csize = le32(&h[14..]);
        let name_len = le16(&h[22..]);
        let extra_len = le16(&h[24..]);
        let mut raw_name = vec![0u8; name_len];
        r.read_exact(&mut raw_name)?;
        let mut extra = vec![0u8; extra_len];
        r.read_exact(&mut extra)?;
        if csize == 0xffff_ffff {
            csize = zip64_csize(&extra).unwrap_or(u64::MAX);
        }
        let entry = String::from_utf8_lossy(&raw_name).to_string();
        let descriptor = flags & 0x08 != 0;
        let want_meta = entry == "META-INF/MANIFEST.MF"
            || (entry.starts_with("META-INF/maven/") && entry.ends_with("/pom.properties"));
        let nested = depth < MAX_DEPTH && is_archive_name(&entry);
        // The entry's data as a reader that ends where the entry ends.
        let known = !descriptor || (method == 0 && csize != 0 && csize != u64::MAX);
        match (method, known) {
            (0, true) => {
                let mut data = (&mut *r).take(csize);
                handle(
                    &mut data,
                    &entry,
                    want_meta,
                    nested,
                    depth,
                    out,
                    &mut manifest,
                    &mut found_pom,
                    budget,
                )?;
                io::copy(&mut data, &mut io::sink())?;
            }
            (8, true) => {
                let mut dec = Budgeted {
                    inner: DeflateDecoder::new((&mut *r).take(csize)),
                    left: budget,
                };
                handle(
                    &mut dec,
                    &entry,
                    want_meta,
                    nested,
                    depth,
                    out,
                    &mut manifest,
                    &mut found_pom,
                    budget,
                )?;
                io::copy(&mut dec, &mut io::sink())?;
                let mut rest = dec.inner.into_inner();
                io::copy(&mut rest, &mut io::sink())?;
            }
            (8, false) => {
                // The size follows the data: inflate to the end of the deflate stream.
                let mut dec = Budgeted {
                    inner: DeflateDecoder::new(&mut *r),
                    left: budget,
                };
                handle(
                    &mut dec,
                    &entry,
                    want_meta,
                    nested,
                    depth,
                    out,
                    &mut manifest,
                    &mut found_pom,
                    budget,
                )?;
                io::copy(&mut dec, &mut io::sink())?;
            }
            (0, false) => {
                // Stored with the size after the data (Python's zipfile on a pipe): read to
                // the data descriptor whose CRC and sizes match what came before it.
                let Some(data) = read_to_descriptor(r)? else {
                    break;
                };
                handle(
                    &mut &data[..],
                    &entry,
                    want_meta,
                    nested,
                    depth,
                    out,
                    &mut manifest,
                    &mut found_pom,
                    budget,
                )?;
                continue; // the descriptor is consumed
            }
            _ => break, // another compression method: the entry's end cannot be found
        }
        if descriptor {
            // Optional signature, crc32, compressed and uncompressed sizes (32-bit; zip64
            // entries are rare in jars and end the scan when misread).
            let mut d = [0u8; 4];
            r.read_exact(&mut d)?;
            let skip = if d == [0x50, 0x4b, 0x07, 0x08] { 12 } else { 8 };
            let mut rest = vec![0u8; skip];
            r.read_exact(&mut rest)?;
        }
        if out.len() >= MAX_PACKAGES {
            break;
        }
    }
    if !found_pom {
        if let Some(mut m) = manifest {
            m.locations.push(name.to_string());
            out.push(m);
        }
    }
    Ok(())
}

/// The data of a stored entry whose sizes follow it: bytes up to a data descriptor
/// (`PK\x07\x08`, crc32, sizes) that matches them, which is consumed too. `None` past
/// [`MAX_STORED_UNKNOWN`] or at the end of input.
fn read_to_descriptor(r: &mut dyn BufRead) -> io::Result<Option<Vec<u8>>> {
    const SIG: &[u8] = &[0x50, 0x4b, 0x07, 0x08];
    let mut data: Vec<u8> = Vec::new();
    // Consumed bytes that may still start a descriptor (fewer than 16).
    let mut pend: Vec<u8> = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let mut window = std::mem::take(&mut pend);
        let from_pend = window.len();
        window.extend_from_slice(buf);
        let buf_len = buf.len();
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&window[from..], SIG) {
            let pos = from + i;
            if pos + 16 > window.len() {
                break;
            }
            let d = &window[pos..pos + 16];
            let size = (data.len() + pos) as u64;
            if le32(&d[8..]) == size & 0xffff_ffff && le32(&d[12..]) == size & 0xffff_ffff {
                let mut crc = flate2::Crc::new();
                crc.update(&data);
                crc.update(&window[..pos]);
                if u64::from(crc.sum()) == le32(&d[4..]) {
                    data.extend_from_slice(&window[..pos]);
                    r.consume(pos + 16 - from_pend);
                    return Ok(Some(data));
                }
            }
            from = pos + 1;
        }
        let keep = window.len().min(15);
        data.extend_from_slice(&window[..window.len() - keep]);
        pend = window[window.len() - keep..].to_vec();
        r.consume(buf_len);
        if data.len() > MAX_STORED_UNKNOWN {
            return Ok(None);
        }
    }
}

fn zip64_csize(extra: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = le16(&extra[i..]);
        let len = le16(&extra[i + 2..]);
        let body = extra.get(i + 4..i + 4 + len)?;
        if id == 1 && body.len() >= 16 {
            return Some(u64::from_le_bytes(body[8..16].try_into().ok()?));
        }
        i += 4 + len;
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn handle(
    data: &mut dyn Read,
    entry: &str,
    want_meta: bool,
    nested: bool,
    depth: usize,
    out: &mut Vec<Package>,
    manifest: &mut Option<Package>,
    found_pom: &mut bool,
    budget: &Budget,
) -> io::Result<()> {
    if want_meta {
        let mut buf = Vec::new();
        data.take(MAX_META).read_to_end(&mut buf)?;
        if entry.ends_with("pom.properties") {
            if let Some(mut p) = parse_pom_properties(&buf) {
                *found_pom = true;
                p.locations.push(entry.to_string());
                out.push(p);
            }
        } else {
            *manifest = parse_manifest(&buf);
        }
    } else if nested {
        let before = out.len();
        let mut inner = BufReader::with_capacity(64 * 1024, data);
        scan(&mut inner, entry, depth + 1, out, budget)?;
        for p in &mut out[before..] {
            if let Some(l) = p.locations.last_mut() {
                *l = format!("{entry}!/{l}");
            }
        }
    }
    Ok(())
}

/// `groupId`, `artifactId` and `version` of a pom.properties file.
pub fn parse_pom_properties(bytes: &[u8]) -> Option<Package> {
    let text = String::from_utf8_lossy(bytes);
    let (mut g, mut a, mut v) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, val)) = line.split_once(['=', ':']) else {
            continue;
        };
        let val = clip(val.trim(), MAX_FIELD);
        match k.trim() {
            "groupId" => g = Some(val),
            "artifactId" => a = Some(val),
            "version" => v = Some(val),
            _ => {}
        }
    }
    let (g, a, v) = (g?, a?, v?);
    if g.is_empty() || a.is_empty() || v.is_empty() {
        return None;
    }
    let mut p = Package::new(PackageType::Maven, &a, &v);
    p.namespace = Some(g);
    Some(p)
}

/// A package from MANIFEST.MF main attributes (no Maven group: it is listed, not matched).
pub fn parse_manifest(bytes: &[u8]) -> Option<Package> {
    let text = String::from_utf8_lossy(bytes);
    let mut attrs: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break; // main section ends
        }
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some((_, v)) = attrs.last_mut() {
                if v.len() < 4096 {
                    v.push_str(cont);
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            attrs.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let name = get("Implementation-Title")
        .or_else(|| get("Bundle-SymbolicName").map(|s| s.split(';').next().unwrap_or(s)))
        .or_else(|| get("Bundle-Name"))?;
    let version = get("Implementation-Version").or_else(|| get("Bundle-Version"))?;
    let mut p = Package::new(
        PackageType::Maven,
        &clip(name.trim(), MAX_FIELD),
        &clip(version, MAX_FIELD),
    );
    if let Some(l) = get("Bundle-License") {
        p.licenses = vec![clip(l.split(';').next().unwrap_or(l), 200)];
    }
    Some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A jar written like `ZipOutputStream`: deflated entries with data descriptors.
    pub fn jar(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, deflate) in entries {
            out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0]);
            let (flags, method): (u16, u16) = if *deflate { (8, 8) } else { (0, 0) };
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            let crc = crc32(data);
            let body = if *deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            if *deflate {
                out.extend_from_slice(&[0u8; 12]);
            } else {
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&body);
            if *deflate {
                out.extend_from_slice(&[0x50, 0x4b, 0x07, 0x08]);
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        out.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut h = flate2::Crc::new();
        h.update(data);
        h.sum()
    }

    #[test]
    fn shaded_and_nested_jars() {
        let inner = jar(&[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\nImplementation-Title: inner\n",
                true,
            ),
            (
                "META-INF/maven/org.yaml/snakeyaml/pom.properties",
                b"version=1.33\ngroupId=org.yaml\nartifactId=snakeyaml\n",
                true,
            ),
        ]);
        let outer = jar(&[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\nImplementation-Title: app\nImplementation-Version: 1.0\n", true),
            ("com/example/App.class", &[0xca, 0xfe, 0xba, 0xbe, 1, 2, 3], true),
            ("META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties", b"#Generated\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion=2.14.1\n", true),
            ("BOOT-INF/lib/snakeyaml-1.33.jar", &inner, false),
        ]);
        let p = scan_archive(&mut &outer[..], "app.jar");
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}@{} {:?}", p.full_name(), p.version, p.locations))
            .collect();
        assert_eq!(
            got,
            [
                "org.apache.logging.log4j:log4j-core@2.14.1 [\"META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties\"]",
                "org.yaml:snakeyaml@1.33 [\"BOOT-INF/lib/snakeyaml-1.33.jar!/META-INF/maven/org.yaml/snakeyaml/pom.properties\"]",
            ]
        );
        // Only a manifest: listed under its title, no group.
        let m = jar(&[("META-INF/MANIFEST.MF", b"Bundle-SymbolicName: org.example.lib;singleton:=true\nBundle-Version: 2.0.0\nBundle-License: Apache-2.0\n", true)]);
        let p = scan_archive(&mut &m[..], "lib.jar");
        assert_eq!(
            (p[0].full_name().as_str(), p[0].version.as_str()),
            ("org.example.lib", "2.0.0")
        );
        assert_eq!(p[0].licenses, ["Apache-2.0"]);
        assert!(scan_archive(&mut &b"not a zip"[..], "x.jar").is_empty());
    }

    /// A jar written by another implementation (Python's zipfile to a pipe: data
    /// descriptors after deflated entries, a stored nested jar).
    #[test]
    fn python_written_jar() {
        let bytes = include_bytes!("../../../fuzz/seeds/scan_java/app.jar");
        let p = scan_archive(&mut &bytes[..], "app.jar");
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}@{}", p.full_name(), p.version))
            .collect();
        assert_eq!(
            got,
            [
                "org.apache.logging.log4j:log4j-core@2.14.1",
                "org.yaml:snakeyaml@1.33"
            ]
        );
    }
}
