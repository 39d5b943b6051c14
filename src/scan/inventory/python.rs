//! Python distributions: the core metadata of `*.dist-info/METADATA` (wheels, pip) and
//! `*.egg-info/PKG-INFO` or a bare `*.egg-info` file (setuptools), an email-header format.
//! Licence: `License-Expression` (metadata 2.4), else a short `License`, else the
//! `License ::` classifiers.

use super::{clip, Package, PackageType, MAX_FIELD};

pub fn parse_metadata(bytes: &[u8]) -> Option<Package> {
    let text = String::from_utf8_lossy(bytes);
    let mut name = None;
    let mut version = None;
    let mut expression = None;
    let mut license = None;
    let mut classifiers = Vec::new();
    let mut last_key = String::new();
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (long description) starts here
        }
        if line.starts_with([' ', '\t']) {
            if last_key == "license" {
                // A multi-line License field is the licence text, not a name.
                license = None;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "name" if name.is_none() => name = Some(clip(v, MAX_FIELD)),
            "version" if version.is_none() => version = Some(clip(v, MAX_FIELD)),
            "license-expression" => expression = Some(clip(v, MAX_FIELD)),
            "license" if !v.is_empty() && v.len() <= 100 && v != "UNKNOWN" => {
                license = Some(v.to_string())
            }
            "classifier" => {
                if let Some(l) = v.strip_prefix("License ::") {
                    let last = l.rsplit("::").next().unwrap_or("").trim();
                    if !last.is_empty() && classifiers.len() < 16 {
                        classifiers.push(clip(last, 100));
                    }
                }
            }
            _ => {}
        }
        last_key = k;
    }
    let (name, version) = (name?, version?);
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let mut p = Package::new(PackageType::Pypi, &name, &version);
    p.licenses = match (expression, license) {
        (Some(e), _) => vec![e],
        (None, Some(l)) => vec![l],
        (None, None) => classifiers,
    };
    Some(p)
}

/// PEP 503 normalised name: lowercase, runs of `-`, `_`, `.` as one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        let m = b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: HTTP\nLicense: Apache 2.0\nClassifier: License :: OSI Approved :: Apache Software License\n\nName: not-this\n";
        let p = parse_metadata(m).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("requests", "2.31.0")
        );
        assert_eq!(p.licenses, ["Apache 2.0"]);
        let m = b"Name: Jinja2\nVersion: 3.1.2\nLicense: BSD-3-Clause\n        long text\nClassifier: License :: OSI Approved :: BSD License\n";
        assert_eq!(parse_metadata(m).unwrap().licenses, ["BSD License"]);
        assert_eq!(
            parse_metadata(b"Name: x\nVersion: 1\nLicense-Expression: MIT OR Apache-2.0\n")
                .unwrap()
                .licenses,
            ["MIT OR Apache-2.0"]
        );
        assert!(parse_metadata(b"Name: x\n").is_none());
        assert_eq!(normalize_name("Jinja2"), "jinja2");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("Foo__Bar-.baz"), "foo-bar-baz");
    }
}
