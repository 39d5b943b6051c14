//! Go build information embedded in binaries (Go 1.18+): the `\xff Go buildinf:` header
//! followed inline by the toolchain version and the module list (`path`, `mod`, `dep`,
//! `=>` replacement lines). Gives the `stdlib` at the toolchain version, the main module
//! (unless `(devel)`) and every dependency. Binaries from before Go 1.18 keep the data
//! behind pointers that need the whole file; they are not read.

use super::{clip, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Bytes after the magic a build info block can need (version + module list).
pub const MAX_BUILDINFO: usize = 4 * 1024 * 1024;

/// What a build info block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub go_version: String,
    pub main_path: String,
    pub packages: Vec<Package>,
}

/// Result of trying to parse at a magic.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Done(BuildInfo),
    /// More bytes are needed (the block is longer than what was given).
    NeedMore,
    /// Not a build info block (e.g. the magic string inside `debug/buildinfo`'s code).
    Invalid,
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

/// Parses a block starting at the magic.
pub fn parse(block: &[u8]) -> Parsed {
    if block.len() < 32 {
        return Parsed::NeedMore;
    }
    if &block[..14] != MAGIC {
        return Parsed::Invalid;
    }
    let flags = block[15];
    if flags & 2 == 0 {
        return Parsed::Invalid; // pre-1.18 pointer format
    }
    let mut pos = 32;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let Some((len, n)) = uvarint(&block[pos.min(block.len())..]) else {
            return if block.len() - pos < 10 {
                Parsed::NeedMore
            } else {
                Parsed::Invalid
            };
        };
        if len as usize > MAX_BUILDINFO {
            return Parsed::Invalid;
        }
        let start = pos + n;
        let end = start + len as usize;
        if end > block.len() {
            return Parsed::NeedMore;
        }
        strings.push(&block[start..end]);
        pos = end;
    }
    let version = String::from_utf8_lossy(strings[0]).to_string();
    if !version.starts_with("go") && !version.starts_with("devel") {
        return Parsed::Invalid;
    }
    let mut modinfo = strings[1];
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Parsed::Done(from_modinfo(&version, &String::from_utf8_lossy(modinfo)))
}

fn from_modinfo(version: &str, modinfo: &str) -> BuildInfo {
    let mut packages = Vec::new();
    let mut main_path = String::new();
    if let Some(v) = stdlib_version(version) {
        packages.push(Package::new(PackageType::Golang, "stdlib", &v));
    }
    for line in modinfo.lines() {
        if packages.len() >= MAX_PACKAGES_PER_FILE {
            break;
        }
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", p, ..] => main_path = clip(p, MAX_FIELD),
            ["mod", path, ver, ..] => {
                if main_path.is_empty() {
                    main_path = clip(path, MAX_FIELD);
                }
                if !ver.is_empty() && *ver != "(devel)" {
                    packages.push(Package::new(
                        PackageType::Golang,
                        &clip(path, MAX_FIELD),
                        &clip(ver, MAX_FIELD),
                    ));
                }
            }
            ["dep", path, ver, ..] => {
                packages.push(Package::new(
                    PackageType::Golang,
                    &clip(path, MAX_FIELD),
                    &clip(ver, MAX_FIELD),
                ));
            }
            // A module replacement of the dependency just above: the code really built is
            // the replacement's, when it is a versioned module (a local directory has none).
            ["=>", path, ver, ..]
                if !ver.is_empty()
                    && *ver != "(devel)"
                    && !path.starts_with('.')
                    && !path.starts_with('/') =>
            {
                if let Some(last) = packages.last_mut().filter(|p| p.name != "stdlib") {
                    last.name = clip(path, MAX_FIELD);
                    last.version = clip(ver, MAX_FIELD);
                }
            }
            _ => {}
        }
    }
    BuildInfo {
        go_version: clip(version, MAX_FIELD),
        main_path,
        packages,
    }
}

/// `go1.19.8` -> `1.19.8`, `go1.20` -> `1.20.0`, `go1.21rc2` -> `1.21.0-rc.2` (the form the
/// Go vulnerability database uses for the standard library); `None` for devel builds.
pub fn stdlib_version(v: &str) -> Option<String> {
    let v = v.split_whitespace().next()?.strip_prefix("go")?;
    let (num, pre) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let mut parts: Vec<&str> = num.split('.').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    let mut out = parts.join(".");
    if let Some(pre) = pre {
        let (word, n) = pre.split_at(pre.find(|c: char| c.is_ascii_digit()).unwrap_or(pre.len()));
        out.push('-');
        out.push_str(word);
        if !n.is_empty() {
            out.push('.');
            out.push_str(n);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(32, 0);
        let mut put = |s: &[u8]| {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s);
        };
        put(version.as_bytes());
        let sentinel = [0x30u8; 16];
        let mut m = sentinel.to_vec();
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(&[
            0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8,
            0xf2,
        ]);
        put(&m);
        b
    }

    #[test]
    fn buildinfo_with_replacement() {
        let mi = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.7\th1:abc\ndep\texample.com/dep\tv1.2.3\n=>\t./dep\t(devel)\t\ndep\tgolang.org/x/net\tv0.1.0\n=>\tgolang.org/x/net\tv0.17.0\th1:x\nbuild\t-compiler=gc\n";
        let b = block("go1.19.8", mi);
        let Parsed::Done(info) = parse(&b) else {
            panic!("not parsed")
        };
        assert_eq!(info.main_path, "example.com/app");
        let got: Vec<String> = info
            .packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(
            got,
            [
                "stdlib@1.19.8",
                "golang.org/x/text@v0.3.7",
                "example.com/dep@v1.2.3",
                "golang.org/x/net@v0.17.0"
            ]
        );
        assert_eq!(parse(&b[..40]), Parsed::NeedMore);
        let mut bad = b.clone();
        bad[15] = 0;
        assert_eq!(parse(&bad), Parsed::Invalid);
    }

    #[test]
    fn stdlib_versions() {
        assert_eq!(stdlib_version("go1.19.8").as_deref(), Some("1.19.8"));
        assert_eq!(stdlib_version("go1.20").as_deref(), Some("1.20.0"));
        assert_eq!(stdlib_version("go1.21rc2").as_deref(), Some("1.21.0-rc.2"));
        assert_eq!(
            stdlib_version("go1.22.1 X:boringcrypto").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(stdlib_version("devel +abc"), None);
    }
}
