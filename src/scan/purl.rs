//! Package URLs (<https://github.com/package-url/purl-spec>): how the SBOM names each
//! package, and how a stored SBOM is read back into packages for re-matching.
//!
//! Conventions (as Syft writes them): OS packages carry the distribution as namespace and
//! `arch`, `distro=<id>-<version>` and `upstream=<source>[@<version>]` qualifiers; RPM
//! versions drop the epoch into an `epoch` qualifier; Go module paths split at the last
//! `/`; crates from outside crates.io carry `repository_url=<source>`.

use std::collections::BTreeMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::inventory::{Distro, Package, PackageType};

/// Everything but `A-Z a-z 0-9 . - _ ~ :` is encoded.
const ENC: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, ENC).to_string()
}

fn dec(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().to_string()
}

/// The package URL of `p` in an image of `distro`.
pub fn of(p: &Package, distro: Option<&Distro>) -> String {
    let mut q: BTreeMap<&str, String> = BTreeMap::new();
    let mut version = p.version.clone();
    let (namespace, name): (Option<String>, String) = match p.kind {
        PackageType::Golang => match p.name.rsplit_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, p.name.clone()),
        },
        k if k.is_os() => (
            distro.map(|d| d.id.clone()).filter(|i| !i.is_empty()),
            p.name.clone(),
        ),
        _ => (p.namespace.clone(), p.name.clone()),
    };
    if p.kind.is_os() {
        if let Some(a) = &p.arch {
            q.insert("arch", a.clone());
        }
        if let Some(d) = distro {
            q.insert("distro", format!("{}-{}", d.id, d.version_id));
        }
        if let Some(src) = &p.source {
            q.insert(
                "upstream",
                match &p.source_version {
                    Some(v) => format!("{src}@{v}"),
                    None => src.clone(),
                },
            );
        } else if let Some(v) = &p.source_version {
            q.insert("upstream", format!("{}@{v}", p.name));
        }
        if p.kind == PackageType::Rpm {
            if let Some((e, rest)) = version.split_once(':') {
                if e.bytes().all(|b| b.is_ascii_digit()) {
                    q.insert("epoch", e.to_string());
                    version = rest.to_string();
                }
            }
        }
    }
    if p.kind == PackageType::Cargo {
        if let Some(src) = &p.source {
            q.insert("repository_url", src.clone());
        }
    }
    let mut s = format!("pkg:{}/", p.kind.as_str());
    if let Some(ns) = namespace {
        for seg in ns.split('/') {
            s.push_str(&enc(seg));
            s.push('/');
        }
    }
    s.push_str(&enc(&name));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&enc(&version));
    }
    if !q.is_empty() {
        s.push('?');
        let parts: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        s.push_str(&parts.join("&"));
    }
    s
}

/// A package (and the distribution its `distro` qualifier names) from a package URL we
/// wrote. `None` for other types or malformed URLs.
pub fn parse(purl: &str) -> Option<(Package, Option<Distro>)> {
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.split('#').next()?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (path, version) = match path.rsplit_once('@') {
        Some((p, v)) if !v.contains('/') => (p, dec(v)),
        _ => (path, String::new()),
    };
    let mut segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(dec).collect();
    let kind = PackageType::parse(&segs.first()?.to_ascii_lowercase())?;
    segs.remove(0);
    let name = segs.pop()?;
    let namespace = (!segs.is_empty()).then(|| segs.join("/"));
    let mut q: BTreeMap<String, String> = BTreeMap::new();
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        if let Some((k, v)) = kv.split_once('=') {
            q.insert(k.to_ascii_lowercase(), dec(v));
        }
    }
    let mut p = Package::new(kind, &name, &version);
    match kind {
        PackageType::Golang => {
            if let Some(ns) = namespace {
                p.name = format!("{ns}/{name}");
            }
        }
        k if k.is_os() => {}
        _ => p.namespace = namespace,
    }
    let mut distro = None;
    if kind.is_os() {
        p.arch = q.get("arch").cloned();
        if let Some(up) = q.get("upstream") {
            match up.split_once('@') {
                Some((n, v)) => {
                    if n != p.name {
                        p.source = Some(n.to_string());
                    }
                    p.source_version = Some(v.to_string());
                }
                None => p.source = Some(up.clone()).filter(|s| *s != p.name),
            }
        }
        if let Some(e) = q.get("epoch") {
            p.version = format!("{e}:{}", p.version);
        }
        if let Some(d) = q.get("distro") {
            let (id, ver) = d.split_once('-').unwrap_or((d.as_str(), ""));
            distro = Some(Distro {
                id: id.to_string(),
                version_id: ver.to_string(),
                ..Distro::default()
            });
        }
    }
    if kind == PackageType::Cargo {
        p.source = q.get("repository_url").cloned();
    }
    Some((p, distro))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let deb = Distro {
            id: "debian".into(),
            version_id: "12".into(),
            ..Distro::default()
        };
        let mut ssl = Package::new(PackageType::Deb, "libssl3", "3.0.11-1~deb12u2+b1");
        ssl.arch = Some("amd64".into());
        ssl.source = Some("openssl".into());
        ssl.source_version = Some("3.0.11-1~deb12u2".into());
        let u = of(&ssl, Some(&deb));
        assert_eq!(u, "pkg:deb/debian/libssl3@3.0.11-1~deb12u2%2Bb1?arch=amd64&distro=debian-12&upstream=openssl%403.0.11-1~deb12u2");
        let (back, d) = parse(&u).unwrap();
        assert_eq!(back, ssl);
        assert_eq!(d.unwrap().version_id, "12");

        let mut rpm = Package::new(PackageType::Rpm, "openssl-libs", "1:3.0.7-24.el9");
        rpm.source = Some("openssl".into());
        let alma = Distro {
            id: "almalinux".into(),
            version_id: "9.3".into(),
            ..Distro::default()
        };
        let u = of(&rpm, Some(&alma));
        assert_eq!(u, "pkg:rpm/almalinux/openssl-libs@3.0.7-24.el9?distro=almalinux-9.3&epoch=1&upstream=openssl");
        assert_eq!(parse(&u).unwrap().0, rpm);

        let go = Package::new(PackageType::Golang, "golang.org/x/text", "v0.3.7");
        assert_eq!(of(&go, None), "pkg:golang/golang.org/x/text@v0.3.7");
        assert_eq!(parse(&of(&go, None)).unwrap().0, go);

        let mut npm = Package::new(PackageType::Npm, "core", "7.22.0");
        npm.namespace = Some("@babel".into());
        assert_eq!(of(&npm, None), "pkg:npm/%40babel/core@7.22.0");
        assert_eq!(parse(&of(&npm, None)).unwrap().0, npm);

        let mut mvn = Package::new(PackageType::Maven, "log4j-core", "2.14.1");
        mvn.namespace = Some("org.apache.logging.log4j".into());
        assert_eq!(parse(&of(&mvn, None)).unwrap().0, mvn);

        let mut local = Package::new(PackageType::Cargo, "app", "0.1.0");
        local.source = Some("local".into());
        assert_eq!(parse(&of(&local, None)).unwrap().0, local);
        assert!(parse("pkg:unknown/x@1").is_none());
        assert!(parse("nonsense").is_none());
    }
}
