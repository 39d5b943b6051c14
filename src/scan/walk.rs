//! Reads an image's layers in order without unpacking them: each layer is decompressed as
//! a stream (gzip, zstd or plain tar, told apart by their magic bytes, not by the media
//! type), its tar entries are walked once, the files the inventory parsers want are read
//! into memory under a size cap and parsed on the spot, and whiteouts (`.wh.<name>`,
//! `.wh..wh..opq`) remove what lower layers put there. Only parse results are kept
//! between layers, keyed by path, so memory does not grow with the image.
//!
//! Caps ([`Limits`]): decompressed bytes per layer and per image (decompression bombs),
//! tar entries per image, bytes per inventory file, bytes per executable scanned, layers.
//! A cap on bytes or entries fails the scan with a reason; an oversized single file is
//! skipped with a note.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::inventory::{self, binary::BinaryScanner, Distro, Package, PackageType};
use super::tar::{Kind, TarReader};

/// Resource caps of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes of one layer.
    pub max_layer_bytes: u64,
    /// Decompressed bytes of all layers together.
    pub max_image_bytes: u64,
    /// Tar entries of all layers together.
    pub max_entries: u64,
    /// Bytes of one inventory file (package databases, lockfiles, metadata, archives'
    /// metadata entries).
    pub max_file_bytes: u64,
    /// Bytes of one executable or Java archive scanned for packages (larger ones are
    /// skipped with a note).
    pub max_binary_bytes: u64,
    /// Layers of one image.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 8 << 30,
            max_image_bytes: 16 << 30,
            max_entries: 2_000_000,
            max_file_bytes: 64 << 20,
            max_binary_bytes: 1 << 30,
            max_layers: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{0}")]
    Limit(String),
    #[error("layer {layer}: {message}")]
    Layer { layer: usize, message: String },
}

/// Largest zstd window accepted (the decoder keeps that much of the output).
pub const MAX_ZSTD_WINDOW: u64 = 100 << 20;

/// What one file contributed.
#[derive(Debug, Clone)]
enum Found {
    OsRelease(Distro),
    Packages(Vec<Package>),
    Copyright(Vec<String>),
    /// (path, package) of files an OS package installed (dpkg `.list`/`.md5sums`, apk
    /// `F`/`R` lines).
    Owned(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
struct Slot {
    layer: usize,
    found: Found,
}

/// Counters of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkStats {
    pub layers: usize,
    pub entries: u64,
    pub bytes: u64,
}

/// The result of a walk.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub distro: Option<Distro>,
    /// Sorted, one per (type, name, version, arch), locations merged.
    pub packages: Vec<OwnedPackage>,
    /// Files that were skipped or could not be parsed.
    pub notes: Vec<String>,
    pub stats: WalkStats,
}

/// A package and, for language packages an OS package installed, that package's name.
/// Those are listed in the SBOM but matched only through the distribution's advisories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPackage {
    pub package: Package,
    pub owner: Option<String>,
}

pub struct Walker {
    limits: Limits,
    state: BTreeMap<String, Slot>,
    layer: usize,
    entries: u64,
    image_bytes: Arc<AtomicU64>,
    notes: Vec<String>,
}

/// Counts decompressed bytes and stops at the caps.
struct Capped<R> {
    inner: R,
    layer_bytes: u64,
    max_layer: u64,
    image_bytes: Arc<AtomicU64>,
    max_image: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.layer_bytes += n as u64;
        let total = self.image_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.layer_bytes > self.max_layer {
            return Err(io::Error::other(CapHit(format!(
                "a layer decompresses to more than {} bytes (limit scan.max_layer_mib)",
                self.max_layer
            ))));
        }
        if total > self.max_image {
            return Err(io::Error::other(CapHit(format!(
                "the image decompresses to more than {} bytes (limit scan.max_image_mib)",
                self.max_image
            ))));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct CapHit(String);
impl std::fmt::Display for CapHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CapHit {}

/// Concatenated zstd frames (and skippable frames), as `zstd:chunked` layers have them.
struct ZstdFrames<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
}

/// The window a zstd frame header asks for (bytes the decoder must keep).
pub fn zstd_window(h: &[u8]) -> Option<u64> {
    if h.len() < 6 || h[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let fhd = h[4];
    let single = fhd & 0x20 != 0;
    if !single {
        let wd = h[5];
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = [1usize, 2, 4, 8][usize::from(fhd >> 6)];
    let at = 5 + dict_len;
    let b = h.get(at..at + fcs_len)?;
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate() {
        v |= u64::from(*x) << (8 * i);
    }
    Some(if fcs_len == 2 { v + 256 } else { v })
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                let head = self.src.fill_buf()?;
                if head.is_empty() {
                    return Ok(0);
                }
                if head.len() >= 8 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18] {
                    let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
                    self.src.consume(8);
                    io::copy(&mut (&mut self.src).take(len), &mut io::sink())?;
                    continue;
                }
                let window =
                    zstd_window(head).ok_or_else(|| io::Error::other("not a zstd frame"))?;
                if window > MAX_ZSTD_WINDOW {
                    return Err(io::Error::other(format!(
                        "zstd window of {window} bytes (limit {MAX_ZSTD_WINDOW})"
                    )));
                }
                self.dec.reset(&mut self.src).map_err(io::Error::other)?;
                self.in_frame = true;
            }
            if self.dec.can_collect() > 0 {
                return self.dec.read(buf);
            }
            if self.dec.is_finished() {
                self.in_frame = false;
                continue;
            }
            self.dec
                .decode_blocks(
                    &mut self.src,
                    BlockDecodingStrategy::UptoBytes(buf.len().max(128 * 1024)),
                )
                .map_err(io::Error::other)?;
        }
    }
}

/// A decompressing reader chosen by the stream's first bytes.
pub fn decompress<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut b = BufReader::with_capacity(256 * 1024, r);
    let head = b.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(b))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ZstdFrames {
            src: b,
            dec: FrameDecoder::new(),
            in_frame: false,
        })
    } else {
        Box::new(b)
    })
}

/// A path inside the image: no leading `/` or `./`, no `.` components; `None` for paths
/// that climb out with `..`.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Which parser wants a file, by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    OsRelease,
    Dpkg,
    DpkgList(String),
    Copyright,
    Apk,
    Rpm,
    Python,
    NpmLock,
    NpmPackage,
    Jar,
    /// Executables are scanned when they start with the ELF magic.
    Executable,
    Nothing,
}

fn want(path: &str, mode: u32) -> Want {
    let name = path.rsplit('/').next().unwrap_or(path);
    match path {
        "etc/os-release" | "usr/lib/os-release" => return Want::OsRelease,
        "var/lib/dpkg/status" => return Want::Dpkg,
        "lib/apk/db/installed" => return Want::Apk,
        "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite" => return Want::Rpm,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/status.d/") {
        if !rest.contains('/') {
            return match rest.strip_suffix(".md5sums") {
                Some(pkg) => Want::DpkgList(pkg.to_string()),
                None => Want::Dpkg,
            };
        }
    }
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/info/") {
        if let Some(pkg) = rest.strip_suffix(".list").filter(|p| !p.contains('/')) {
            return Want::DpkgList(pkg.split(':').next().unwrap_or(pkg).to_string());
        }
    }
    if path.starts_with("usr/share/doc/") && name == "copyright" && path.matches('/').count() == 4 {
        return Want::Copyright;
    }
    if (name == "METADATA" && path.ends_with(".dist-info/METADATA"))
        || (name == "PKG-INFO" && path.ends_with(".egg-info/PKG-INFO"))
        || name.ends_with(".egg-info")
    {
        return Want::Python;
    }
    if name == "package-lock.json" && !path.contains("node_modules/") {
        return Want::NpmLock;
    }
    if name == "package.json" && inventory::npm::is_installed_package_json(path) {
        return Want::NpmPackage;
    }
    if inventory::java::is_archive_name(name) {
        return Want::Jar;
    }
    if mode & 0o111 != 0 {
        return Want::Executable;
    }
    Want::Nothing
}

/// Reads all of `r` if it is at most `cap` bytes.
fn read_capped(r: &mut dyn Read, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(cap + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= cap).then_some(buf))
}

fn io_to_walk(layer: usize, e: io::Error) -> WalkError {
    if let Some(cap) = e.get_ref().and_then(|i| i.downcast_ref::<CapHit>()) {
        return WalkError::Limit(cap.0.clone());
    }
    WalkError::Layer {
        layer,
        message: e.to_string(),
    }
}

impl Walker {
    pub fn new(limits: Limits) -> Walker {
        Walker {
            limits,
            state: BTreeMap::new(),
            layer: 0,
            entries: 0,
            image_bytes: Arc::new(AtomicU64::new(0)),
            notes: Vec::new(),
        }
    }

    fn note(&mut self, n: String) {
        if self.notes.len() < 100 {
            self.notes.push(n);
        }
    }

    /// Removes `path` and everything below it that lower layers put there.
    fn whiteout(&mut self, path: &str, below_only: bool) {
        let layer = self.layer;
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .state
            .range(path.to_string()..)
            .take_while(|(k, _)| k.as_str() == path || k.starts_with(&prefix))
            .filter(|(k, s)| s.layer < layer && (!below_only || k.as_str() != path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.state.remove(&k);
        }
    }

    /// Walks the next layer (compressed or not). Layers must come bottom first.
    pub fn add_layer(&mut self, r: impl Read) -> Result<(), WalkError> {
        self.layer += 1;
        let layer = self.layer;
        if layer > self.limits.max_layers {
            return Err(WalkError::Limit(format!(
                "more than {} layers (limit scan.max_layers)",
                self.limits.max_layers
            )));
        }
        let capped = Capped {
            inner: decompress(r).map_err(|e| io_to_walk(layer, e))?,
            layer_bytes: 0,
            max_layer: self.limits.max_layer_bytes,
            image_bytes: self.image_bytes.clone(),
            max_image: self.limits.max_image_bytes,
        };
        let mut tar = TarReader::new(capped);
        loop {
            let h = match tar.next_entry() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(super::tar::TarError::Io(e)) => return Err(io_to_walk(layer, e)),
                Err(e) => {
                    return Err(WalkError::Layer {
                        layer,
                        message: e.to_string(),
                    })
                }
            };
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(WalkError::Limit(format!(
                    "more than {} files in the image (limit scan.max_entries)",
                    self.limits.max_entries
                )));
            }
            let Some(path) = normalize(&h.path) else {
                continue;
            };
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                // Opaque directory: what lower layers had in it is gone (the directory stays).
                if dir.is_empty() {
                    self.state.retain(|_, s| s.layer >= layer);
                } else {
                    self.whiteout(&dir, true);
                }
                continue;
            }
            if let Some(target) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    target.to_string()
                } else {
                    format!("{dir}/{target}")
                };
                self.whiteout(&gone, false);
                continue;
            }
            match h.kind {
                Kind::HardLink => {
                    if let Some(slot) = normalize(&h.link).and_then(|t| self.state.get(&t).cloned())
                    {
                        let found = relocate(slot.found, &path);
                        self.state.insert(path, Slot { layer, found });
                    }
                }
                Kind::File => {
                    // A regular file replaces whatever a lower layer had at this path.
                    self.state.remove(&path);
                    let w = want(&path, h.mode);
                    if w == Want::Nothing {
                        continue;
                    }
                    let found = self
                        .read_file(&mut tar, &path, w, h.size)
                        .map_err(|e| io_to_walk(layer, e))?;
                    if let Some(found) = found {
                        self.state.insert(path, Slot { layer, found });
                    }
                }
                Kind::Dir | Kind::Symlink | Kind::Other => {
                    if h.kind == Kind::Symlink {
                        self.state.remove(&path);
                    }
                }
            }
        }
        // Read what follows the archive's end marker, so the layer's bytes are counted
        // against the caps; what is there (padding, a bad trailer) does not change the
        // inventory, so only a cap makes it an error.
        let mut rest = tar.into_inner();
        if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
            match io_to_walk(layer, e) {
                cap @ WalkError::Limit(_) => return Err(cap),
                other => self.note(format!("after the end of layer {layer}'s tar: {other}")),
            }
        }
        Ok(())
    }

    fn read_file(
        &mut self,
        r: &mut dyn Read,
        path: &str,
        w: Want,
        size: u64,
    ) -> io::Result<Option<Found>> {
        let cap = self.limits.max_file_bytes;
        let small = |me: &mut Self, r: &mut dyn Read| -> io::Result<Option<Vec<u8>>> {
            let data = read_capped(r, cap)?;
            if data.is_none() {
                me.note(format!(
                    "{path}: larger than {cap} bytes (limit scan.max_file_mib), not read"
                ));
            }
            Ok(data)
        };
        let located = |mut pkgs: Vec<Package>| {
            for p in &mut pkgs {
                if p.locations.is_empty() {
                    p.locations.push(path.to_string());
                }
            }
            pkgs
        };
        Ok(match w {
            Want::OsRelease => small(self, r)?
                .and_then(|b| inventory::os_release::parse(&b))
                .map(Found::OsRelease),
            Want::Dpkg => {
                small(self, r)?.map(|b| Found::Packages(located(inventory::dpkg::parse_status(&b))))
            }
            Want::DpkgList(pkg) => small(self, r)?.map(|b| {
                let text = String::from_utf8_lossy(&b);
                let paths = text
                    .lines()
                    // `.list`: absolute paths; `.md5sums`: "<md5>  <path>" (relative).
                    .filter_map(|l| l.rsplit("  ").next())
                    .filter_map(normalize)
                    .map(|p| (p, pkg.clone()))
                    .collect();
                Found::Owned(paths)
            }),
            Want::Copyright => {
                small(self, r)?.map(|b| Found::Copyright(inventory::dpkg::parse_copyright(&b)))
            }
            Want::Apk => small(self, r)?.map(|b| {
                // The file list goes in as if it were a separate file, so language packages
                // apk installed are recognised as the distribution's.
                let owned = inventory::apk::owned_paths(&b);
                self.state.insert(
                    format!("{path}#files"),
                    Slot {
                        layer: self.layer,
                        found: Found::Owned(owned),
                    },
                );
                Found::Packages(located(inventory::apk::parse_installed(&b)))
            }),
            Want::Rpm => match small(self, r)? {
                Some(b) => match inventory::rpm::parse_rpmdb_sqlite(&b) {
                    Ok(p) => Some(Found::Packages(located(p))),
                    Err(e) => {
                        self.note(format!("{path}: {e}"));
                        None
                    }
                },
                None => None,
            },
            Want::Python => small(self, r)?
                .and_then(|b| inventory::python::parse_metadata(&b))
                .map(|p| Found::Packages(located(vec![p]))),
            Want::NpmLock => {
                small(self, r)?.map(|b| Found::Packages(located(inventory::npm::parse_lock(&b))))
            }
            Want::NpmPackage => small(self, r)?
                .and_then(|b| inventory::npm::parse_package_json(&b))
                .map(|p| Found::Packages(located(vec![p]))),
            Want::Jar => {
                if size > self.limits.max_binary_bytes {
                    self.note(format!(
                        "{path}: larger than {} bytes (limit scan.max_binary_mib), not read",
                        self.limits.max_binary_bytes
                    ));
                    return Ok(None);
                }
                let pkgs = inventory::java::scan_archive(r, path);
                let pkgs = pkgs
                    .into_iter()
                    .map(|mut p| {
                        p.locations = p.locations.iter().map(|l| format!("{path}!/{l}")).collect();
                        if p.locations.is_empty() {
                            p.locations.push(path.to_string());
                        }
                        p
                    })
                    .collect::<Vec<_>>();
                (!pkgs.is_empty()).then_some(Found::Packages(pkgs))
            }
            Want::Executable => {
                if size < 1024 {
                    return Ok(None);
                }
                let mut magic = [0u8; 4];
                if r.read_exact(&mut magic).is_err() || magic != *b"\x7fELF" {
                    return Ok(None);
                }
                if size > self.limits.max_binary_bytes {
                    self.note(format!("{path}: executable larger than {} bytes (limit scan.max_binary_mib), not scanned", self.limits.max_binary_bytes));
                    return Ok(None);
                }
                let mut scanner = BinaryScanner::default();
                scanner.feed(&magic);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 || scanner.finished() {
                        break;
                    }
                    scanner.feed(&buf[..n]);
                }
                let pkgs = located(scanner.finish());
                (!pkgs.is_empty()).then_some(Found::Packages(pkgs))
            }
            Want::Nothing => None,
        })
    }

    /// The inventory of the image as the last layer left it.
    pub fn finish(self) -> Inventory {
        let mut distro = None;
        for p in ["etc/os-release", "usr/lib/os-release"] {
            if let Some(Slot {
                found: Found::OsRelease(d),
                ..
            }) = self.state.get(p)
            {
                distro = Some(d.clone());
                break;
            }
        }
        let mut owned: HashMap<&str, &str> = HashMap::new();
        for slot in self.state.values() {
            if let Found::Owned(paths) = &slot.found {
                for (p, pkg) in paths {
                    owned.insert(p.as_str(), pkg.as_str());
                }
            }
        }
        let mut merged: BTreeMap<(PackageType, String, String, String), OwnedPackage> =
            BTreeMap::new();
        for (path, slot) in &self.state {
            let Found::Packages(pkgs) = &slot.found else {
                continue;
            };
            for p in pkgs {
                let mut p = p.clone();
                if p.kind == PackageType::Deb {
                    let copyright = format!("usr/share/doc/{}/copyright", p.name);
                    if let Some(Slot {
                        found: Found::Copyright(l),
                        ..
                    }) = self.state.get(&copyright)
                    {
                        p.licenses = l.clone();
                    }
                }
                let owner = if p.kind.is_os() {
                    None
                } else {
                    owned.get(path.as_str()).map(|s| s.to_string())
                };
                let key = (
                    p.kind,
                    p.full_name(),
                    p.version.clone(),
                    p.arch.clone().unwrap_or_default(),
                );
                match merged.get_mut(&key) {
                    Some(existing) => {
                        for l in p.locations {
                            if !existing.package.locations.contains(&l)
                                && existing.package.locations.len() < 16
                            {
                                existing.package.locations.push(l);
                            }
                        }
                        if existing.owner.is_some() && owner.is_none() {
                            existing.owner = None;
                        }
                    }
                    None => {
                        merged.insert(key, OwnedPackage { package: p, owner });
                    }
                }
            }
        }
        Inventory {
            distro,
            packages: merged.into_values().collect(),
            notes: self.notes,
            stats: WalkStats {
                layers: self.layer,
                entries: self.entries,
                bytes: self.image_bytes.load(Ordering::Relaxed),
            },
        }
    }
}

/// A hard link's copy of what its target contributed, located at the link.
fn relocate(found: Found, path: &str) -> Found {
    match found {
        Found::Packages(pkgs) => Found::Packages(
            pkgs.into_iter()
                .map(|mut p| {
                    p.locations = vec![path.to_string()];
                    p
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::tar::build::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    const STATUS: &[u8] = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nSource: glibc\nArchitecture: amd64\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nSource: zlib\nArchitecture: amd64\n";

    fn names(inv: &Inventory) -> Vec<String> {
        inv.packages
            .iter()
            .map(|p| {
                format!(
                    "{}:{}@{}",
                    p.package.kind.as_str(),
                    p.package.full_name(),
                    p.package.version
                )
            })
            .collect()
    }

    #[test]
    fn layers_whiteouts_and_compression() {
        let l1 = tar(&[
            dir("etc"),
            symlink("etc/os-release", "../usr/lib/os-release"),
            file("usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            file("var/lib/dpkg/status", STATUS),
            file(
                "usr/share/doc/zlib1g/copyright",
                b"Format: x\n\nLicense: Zlib\n",
            ),
            file(
                "app/node_modules/lodash/package.json",
                br#"{"name":"lodash","version":"4.17.20"}"#,
            ),
            file(
                "app/node_modules/left-pad/package.json",
                br#"{"name":"left-pad","version":"1.3.0"}"#,
            ),
            file(
                "opt/venv/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA",
                b"Name: requests\nVersion: 2.31.0\n",
            ),
            file(
                "usr/lib/python3/dist-packages/six-1.16.0.egg-info",
                b"Name: six\nVersion: 1.16.0\n",
            ),
            file(
                "var/lib/dpkg/info/python3-six.list",
                b"/.\n/usr/lib/python3/dist-packages/six-1.16.0.egg-info\n",
            ),
        ]);
        let l2 = tar(&[
            // Layer 2 removes left-pad, empties /opt/venv, and upgrades lodash.
            file("app/node_modules/.wh.left-pad", b""),
            file("opt/venv/.wh..wh..opq", b""),
            file(
                "opt/venv/lib/python3.11/site-packages/flask-3.0.0.dist-info/METADATA",
                b"Name: Flask\nVersion: 3.0.0\n",
            ),
            file(
                "app/node_modules/lodash/package.json",
                br#"{"name":"lodash","version":"4.17.21"}"#,
            ),
            hardlink(
                "app/node_modules/lodash2/package.json",
                "app/node_modules/lodash/package.json",
            ),
        ]);
        for (a, b) in [
            (gz(&l1), zst(&l2)),
            (l1.clone(), gz(&l2)),
            (zst(&l1), l2.clone()),
        ] {
            let mut w = Walker::new(Limits::default());
            w.add_layer(&a[..]).unwrap();
            w.add_layer(&b[..]).unwrap();
            let inv = w.finish();
            assert_eq!(
                inv.distro
                    .as_ref()
                    .map(|d| (d.id.as_str(), d.version_id.as_str())),
                Some(("debian", "12"))
            );
            assert_eq!(
                names(&inv),
                [
                    "deb:libc6@2.36-9",
                    "deb:zlib1g@1:1.2.13.dfsg-1",
                    "pypi:Flask@3.0.0",
                    "pypi:six@1.16.0",
                    "npm:lodash@4.17.21",
                ]
            );
            let lodash = &inv.packages[4].package;
            assert_eq!(
                lodash.locations,
                [
                    "app/node_modules/lodash/package.json",
                    "app/node_modules/lodash2/package.json"
                ]
            );
            assert_eq!(inv.packages[1].package.licenses, ["Zlib"]);
            assert!(inv.packages[0].package.licenses.is_empty());
            assert_eq!(inv.packages[3].owner.as_deref(), Some("python3-six"));
            assert_eq!(inv.packages[2].owner, None);
            assert_eq!(inv.stats.layers, 2);
        }
    }

    #[test]
    fn a_file_replaced_by_a_later_layer_or_deleted() {
        let l1 = tar(&[file("lib/apk/db/installed", b"P:musl\nV:1.2.4-r0\n\n")]);
        let l2 = tar(&[file("lib/apk/db/.wh.installed", b"")]);
        let mut w = Walker::new(Limits::default());
        w.add_layer(&l1[..]).unwrap();
        w.add_layer(&l2[..]).unwrap();
        assert!(w.finish().packages.is_empty());
        // Whiteout and re-creation in the same layer: the new file stays.
        let l3 = tar(&[
            file("lib/apk/db/.wh.installed", b""),
            file("lib/apk/db/installed", b"P:busybox\nV:1.36.1-r15\n\n"),
        ]);
        let mut w = Walker::new(Limits::default());
        w.add_layer(&l1[..]).unwrap();
        w.add_layer(&l3[..]).unwrap();
        assert_eq!(names(&w.finish()), ["apk:busybox@1.36.1-r15"]);
    }

    #[test]
    fn caps_stop_bombs_and_big_files() {
        // 64 MiB of zeros gzip to ~64 KiB: a bomb for a 16 MiB layer cap.
        let big = tar(&[file("zeros", &vec![0u8; 64 << 20])]);
        let bomb = gz(&big);
        assert!(bomb.len() < 1 << 20);
        let limits = Limits {
            max_layer_bytes: 16 << 20,
            ..Limits::default()
        };
        let mut w = Walker::new(limits);
        let e = w.add_layer(&bomb[..]).unwrap_err();
        assert!(
            matches!(e, WalkError::Limit(ref m) if m.contains("max_layer_mib")),
            "{e}"
        );
        // Entries.
        let many: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
        let entries: Vec<_> = many.iter().map(|n| file(n, b"")).collect();
        let t = tar(&entries);
        let mut w = Walker::new(Limits {
            max_entries: 10,
            ..Limits::default()
        });
        assert!(matches!(w.add_layer(&t[..]), Err(WalkError::Limit(_))));
        // One oversized inventory file is skipped with a note, the scan goes on.
        let t = tar(&[
            file("var/lib/dpkg/status", STATUS),
            file("lib/apk/db/installed", &vec![b'x'; 5000]),
        ]);
        let mut w = Walker::new(Limits {
            max_file_bytes: 1000,
            ..Limits::default()
        });
        w.add_layer(&t[..]).unwrap();
        let inv = w.finish();
        assert_eq!(inv.packages.len(), 2);
        assert!(
            inv.notes[0].contains("lib/apk/db/installed"),
            "{:?}",
            inv.notes
        );
        // A corrupt layer is an error naming the layer.
        let mut w = Walker::new(Limits::default());
        let e = w.add_layer(&b"\x1f\x8bnot really gzip"[..]).unwrap_err();
        assert!(matches!(e, WalkError::Layer { layer: 1, .. }), "{e}");
    }

    #[test]
    fn zstd_windows() {
        let z = zst(b"hello");
        assert!(zstd_window(&z).unwrap() <= 1 << 20);
        // A frame header asking for a 2 GiB window is refused before decoding.
        let hostile = [0x28, 0xb5, 0x2f, 0xfd, 0x00, (21 << 3) as u8, 0, 0];
        assert_eq!(zstd_window(&hostile), Some(1 << 31));
        let mut w = Walker::new(Limits::default());
        assert!(w.add_layer(&hostile[..]).is_err());
    }
}
