//! Declared licences to SPDX license expressions. Packages declare licences in many
//! dialects (Debian's DEP-5 short names, RPM's Fedora names, Python classifiers, free text);
//! the common ones map to SPDX identifiers, anything else becomes a `LicenseRef-` with the
//! original text kept alongside (SPDX's `hasExtractedLicensingInfos`).

/// SPDX identifiers seen in images, plus the dialect names that mean exactly one of them.
const MAP: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("afl-2.1", "AFL-2.1"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("agpl-3.0", "AGPL-3.0-only"),
    ("agpl-3.0-only", "AGPL-3.0-only"),
    ("agpl-3.0-or-later", "AGPL-3.0-or-later"),
    ("apache 2.0", "Apache-2.0"),
    ("apache license 2.0", "Apache-2.0"),
    ("apache-1.1", "Apache-1.1"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("apache2", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1.0-perl", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("asl 2.0", "Apache-2.0"),
    ("beerware", "Beerware"),
    ("blueoak-1.0.0", "BlueOak-1.0.0"),
    ("boost", "BSL-1.0"),
    ("bsd-1-clause", "BSD-1-Clause"),
    ("bsd-2", "BSD-2-Clause"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3", "BSD-3-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("bzip2-1.0.6", "bzip2-1.0.6"),
    ("cc-by-3.0", "CC-BY-3.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cddl-1.0", "CDDL-1.0"),
    ("cddl-1.1", "CDDL-1.1"),
    ("curl", "curl"),
    ("epl-1.0", "EPL-1.0"),
    ("epl-2.0", "EPL-2.0"),
    ("expat", "MIT"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("ftl", "FTL"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-2.0-only", "GPL-2.0-only"),
    ("gpl-2.0-or-later", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gpl-3.0-only", "GPL-3.0-only"),
    ("gpl-3.0-or-later", "GPL-3.0-or-later"),
    ("gplv2", "GPL-2.0-only"),
    ("gplv2+", "GPL-2.0-or-later"),
    ("gplv3", "GPL-3.0-only"),
    ("gplv3+", "GPL-3.0-or-later"),
    ("isc", "ISC"),
    ("isc license", "ISC"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.0", "LGPL-2.0-only"),
    ("lgpl-2.0+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-2.1-only", "LGPL-2.1-only"),
    ("lgpl-2.1-or-later", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("lgpl-3.0", "LGPL-3.0-only"),
    ("lgpl-3.0+", "LGPL-3.0-or-later"),
    ("lgpl-3.0-only", "LGPL-3.0-only"),
    ("lgpl-3.0-or-later", "LGPL-3.0-or-later"),
    ("lgplv2", "LGPL-2.0-only"),
    ("lgplv2+", "LGPL-2.0-or-later"),
    ("lgplv3+", "LGPL-3.0-or-later"),
    ("libpng", "Libpng"),
    ("mit", "MIT"),
    ("mit license", "MIT"),
    ("mit-0", "MIT-0"),
    ("mpl 2.0", "MPL-2.0"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("mpl-2.0 license", "MPL-2.0"),
    ("ncsa", "NCSA"),
    ("openssl", "OpenSSL"),
    ("postgresql", "PostgreSQL"),
    ("psf", "PSF-2.0"),
    ("psf-2.0", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("ruby", "Ruby"),
    ("sleepycat", "Sleepycat"),
    ("unicode-3.0", "Unicode-3.0"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("unlicense", "Unlicense"),
    ("upl-1.0", "UPL-1.0"),
    ("vim", "Vim"),
    ("w3c", "W3C"),
    ("wtfpl", "WTFPL"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
    ("zpl-2.1", "ZPL-2.1"),
];

/// The SPDX identifier `name` stands for, when it is exactly one.
pub fn spdx_id(name: &str) -> Option<&'static str> {
    let key = name.trim().to_ascii_lowercase();
    MAP.binary_search_by(|(k, _)| k.cmp(&key.as_str()))
        .ok()
        .map(|i| MAP[i].1)
}

/// `LicenseRef-` + the name with characters SPDX refs cannot hold turned into `-`.
pub fn license_ref(name: &str) -> String {
    let cleaned: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    format!(
        "LicenseRef-{}",
        if cleaned.is_empty() {
            "unknown"
        } else {
            cleaned
        }
    )
}

/// An SPDX expression for a package's declared licences, and the `LicenseRef`s it uses
/// with their original text. Declared expressions (`MIT OR Apache-2.0`) keep their
/// operators; several declarations are joined with `AND`.
pub fn expression(declared: &[String]) -> (String, Vec<(String, String)>) {
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut parts = Vec::new();
    for d in declared {
        let mut out = Vec::new();
        let mut pending: Vec<&str> = Vec::new();
        let flush =
            |pending: &mut Vec<&str>, out: &mut Vec<String>, refs: &mut Vec<(String, String)>| {
                if pending.is_empty() {
                    return;
                }
                let name = pending.join(" ");
                pending.clear();
                let (open, name) = split_parens(&name);
                let (body, close) = split_close(name);
                let id = match spdx_id(body) {
                    Some(id) => id.to_string(),
                    None => {
                        let r = license_ref(body);
                        if !refs.iter().any(|(x, _)| *x == r) {
                            refs.push((r.clone(), body.to_string()));
                        }
                        r
                    }
                };
                out.push(format!("{open}{id}{close}"));
            };
        for w in d.split_whitespace() {
            if matches!(w, "AND" | "OR" | "WITH" | "and" | "or") {
                flush(&mut pending, &mut out, &mut refs);
                out.push(w.to_ascii_uppercase());
            } else {
                pending.push(w);
            }
        }
        flush(&mut pending, &mut out, &mut refs);
        if !out.is_empty() {
            let e = out.join(" ");
            parts.push(if declared.len() > 1 && e.contains(' ') {
                format!("({e})")
            } else {
                e
            });
        }
    }
    if parts.is_empty() {
        return ("NOASSERTION".into(), refs);
    }
    (parts.join(" AND "), refs)
}

fn split_parens(s: &str) -> (&str, &str) {
    let body = s.trim_start_matches('(');
    (&s[..s.len() - body.len()], body)
}

fn split_close(s: &str) -> (&str, &str) {
    let body = s.trim_end_matches(')');
    (body, &s[body.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_sorted_and_expressions() {
        assert!(
            MAP.windows(2).all(|w| w[0].0 < w[1].0),
            "MAP must stay sorted"
        );
        assert_eq!(spdx_id("GPL-2+"), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_id("Expat"), Some("MIT"));
        assert_eq!(expression(&["MIT".into()]).0, "MIT");
        assert_eq!(
            expression(&["MIT OR Apache-2.0".into()]).0,
            "MIT OR Apache-2.0"
        );
        let (e, refs) = expression(&["GPL-2+".into(), "BSD License".into()]);
        assert_eq!(e, "GPL-2.0-or-later AND LicenseRef-BSD-License");
        assert_eq!(
            refs,
            [(
                "LicenseRef-BSD-License".to_string(),
                "BSD License".to_string()
            )]
        );
        assert_eq!(
            expression(&["(MIT or Apache-2.0)".into()]).0,
            "(MIT OR Apache-2.0)"
        );
        assert_eq!(expression(&[]).0, "NOASSERTION");
    }
}
