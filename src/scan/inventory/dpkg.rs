//! dpkg's database: `/var/lib/dpkg/status` (every package with its `Status`), the
//! per-package files of distroless images in `/var/lib/dpkg/status.d/` (no `Status`: all
//! installed), and package licences from the machine-readable copyright files
//! (`/usr/share/doc/<package>/copyright`, DEP-5 `License:` fields).

use super::{clip, field, rfc822_stanzas, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

/// Installed packages of a status file (or a `status.d` file).
pub fn parse_status(bytes: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    rfc822_stanzas(&text, |f| {
        if let Some(p) = package(f) {
            out.push(p);
        }
        out.len() < MAX_PACKAGES_PER_FILE
    });
    out
}

fn package(f: &[(String, String)]) -> Option<Package> {
    let name = field(f, "Package")?;
    let version = field(f, "Version")?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    // `Status: install ok installed`; half-installed or removed-with-config packages are
    // not on the system. status.d files carry no Status at all.
    if let Some(status) = field(f, "Status") {
        let state = status.split_whitespace().last().unwrap_or("");
        if !matches!(
            state,
            "installed" | "half-configured" | "unpacked" | "triggers-awaited" | "triggers-pending"
        ) {
            return None;
        }
    }
    let mut p = Package::new(
        PackageType::Deb,
        &clip(name, MAX_FIELD),
        &clip(version, MAX_FIELD),
    );
    p.arch = field(f, "Architecture").map(|a| clip(a, 32));
    if let Some(src) = field(f, "Source") {
        // `Source: glibc` or `Source: glibc (2.36-9+deb12u4)`.
        let (sname, sver) = match src.split_once('(') {
            Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')').trim())),
            None => (src.trim(), None),
        };
        if !sname.is_empty() && sname != p.name {
            p.source = Some(clip(sname, MAX_FIELD));
        }
        if let Some(v) = sver.filter(|v| !v.is_empty() && *v != p.version) {
            p.source_version = Some(clip(v, MAX_FIELD));
        }
    }
    Some(p)
}

/// Licence names of a DEP-5 copyright file, in first-seen order (`License: GPL-2+ or
/// Artistic` gives both). Free-form copyright files give none.
pub fn parse_copyright(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("License:") else {
            continue;
        };
        for part in split_license_expr(rest.trim()) {
            if !part.is_empty() && !out.contains(&part) && out.len() < 32 {
                out.push(part);
            }
        }
    }
    out
}

fn split_license_expr(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let normalized = expr.replace(['(', ')', ','], " ");
    let mut cur = Vec::new();
    for word in normalized.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" | "and" | "|" | "&" => {
                if !cur.is_empty() {
                    out.push(clip(&cur.join(" "), 64));
                    cur.clear();
                }
            }
            "with" => cur.push("with"),
            _ => cur.push(word),
        }
    }
    if !cur.is_empty() {
        out.push(clip(&cur.join(" "), 64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file() {
        let status = b"Package: libc6\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n multi-line\n\nPackage: removed\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl (3.0.11-1~deb12u2)\nVersion: 3.0.11-1~deb12u2+b1\n";
        let p = parse_status(status);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("libc6", "2.36-9+deb12u4")
        );
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[0].source_version, None);
        assert_eq!(p[0].arch.as_deref(), Some("amd64"));
        assert_eq!(p[1].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].source_version.as_deref(), Some("3.0.11-1~deb12u2"));
        // status.d: no Status field.
        assert_eq!(
            parse_status(b"Package: base-files\nVersion: 12.4+deb12u5\n").len(),
            1
        );
    }

    #[test]
    fn copyright_licences() {
        let c = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or Artistic\n\nFiles: lib/*\nLicense: LGPL-2.1+\n The text\n\nLicense: GPL-2+\n";
        assert_eq!(parse_copyright(c), ["GPL-2+", "Artistic", "LGPL-2.1+"]);
        assert!(parse_copyright(b"This is free software.").is_empty());
    }
}
