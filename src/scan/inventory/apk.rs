//! Alpine's installed database `/lib/apk/db/installed`: one block per package (blank line
//! between), `X:value` lines: `P` name, `V` version, `A` architecture, `L` licence, `o`
//! origin (the source package advisories name).

use super::{clip, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

pub fn parse_installed(bytes: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut cur: Option<Package> = None;
    let flush = |cur: &mut Option<Package>, out: &mut Vec<Package>| {
        if let Some(p) = cur.take() {
            if !p.name.is_empty() && !p.version.is_empty() && out.len() < MAX_PACKAGES_PER_FILE {
                out.push(p);
            }
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let p = cur.get_or_insert_with(|| Package::new(PackageType::Apk, "", ""));
        let v = clip(v.trim(), MAX_FIELD);
        match k {
            "P" => p.name = v,
            "V" => p.version = v,
            "A" => p.arch = Some(clip(&v, 32)),
            "L" => {
                p.licenses = v
                    .split_whitespace()
                    .filter(|w| !matches!(w.to_ascii_uppercase().as_str(), "AND" | "OR" | "WITH"))
                    .map(|w| w.trim_matches(|c| c == '(' || c == ')').to_string())
                    .filter(|w| !w.is_empty())
                    .take(16)
                    .collect()
            }
            "o" => p.source = Some(v),
            _ => {}
        }
    }
    flush(&mut cur, &mut out);
    for p in &mut out {
        if p.source.as_deref() == Some(p.name.as_str()) {
            p.source = None;
        }
    }
    out
}

/// (path, package) of every file the database lists (`F:` directory, then `R:` files).
pub fn owned_paths(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut pkg = String::new();
    let mut dir = String::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("P:") {
            pkg = p.trim().to_string();
            dir.clear();
        } else if let Some(d) = line.strip_prefix("F:") {
            dir = d.trim().trim_matches('/').to_string();
        } else if let Some(f) = line.strip_prefix("R:") {
            if out.len() >= 4 * MAX_PACKAGES_PER_FILE {
                break;
            }
            let f = f.trim();
            out.push((
                if dir.is_empty() {
                    f.to_string()
                } else {
                    format!("{dir}/{f}")
                },
                pkg.clone(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_installed;

    #[test]
    fn installed_db() {
        let db = b"C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:383152\nL:MIT\no:musl\nT:the musl c library\nF:lib\nR:ld-musl-x86_64.so.1\n\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\nL:Apache-2.0\no:openssl\n\nP:broken\n";
        let p = parse_installed(db);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("musl", "1.2.4_git20230717-r4")
        );
        assert_eq!(p[0].source, None);
        assert_eq!(p[0].licenses, ["MIT"]);
        assert_eq!(p[1].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].arch.as_deref(), Some("x86_64"));
        let owned = super::owned_paths(db);
        assert_eq!(
            owned,
            [("lib/ld-musl-x86_64.so.1".to_string(), "musl".to_string())]
        );
    }
}
