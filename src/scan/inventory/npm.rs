//! npm: `package-lock.json` (lockfileVersion 1: nested `dependencies`; 2 and 3: the flat
//! `packages` map keyed by `node_modules/...` paths) and the `package.json` of installed
//! packages under `node_modules/`. Development dependencies of a lockfile (`"dev": true`)
//! are left out: production images are usually installed without them.

use serde_json::Value;

use super::{clip, Package, PackageType, MAX_FIELD, MAX_PACKAGES_PER_FILE};

/// Packages of a lockfile.
pub fn parse_lock(bytes: &[u8]) -> Vec<Package> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(pkgs) = v.get("packages").and_then(Value::as_object) {
        for (path, info) in pkgs {
            if out.len() >= MAX_PACKAGES_PER_FILE {
                break;
            }
            let Some(idx) = path.rfind("node_modules/") else {
                continue; // "" is the project itself; workspace folders are not packages
            };
            if info.get("link").and_then(Value::as_bool) == Some(true)
                || info.get("dev").and_then(Value::as_bool) == Some(true)
            {
                continue;
            }
            let name = info
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&path[idx + "node_modules/".len()..]);
            if let Some(p) = make(name, info.get("version"), license_of(info)) {
                out.push(p);
            }
        }
    } else if let Some(deps) = v.get("dependencies").and_then(Value::as_object) {
        walk_v1(deps, &mut out, 0);
    }
    out
}

fn walk_v1(deps: &serde_json::Map<String, Value>, out: &mut Vec<Package>, depth: usize) {
    if depth > 64 {
        return;
    }
    for (name, info) in deps {
        if out.len() >= MAX_PACKAGES_PER_FILE {
            return;
        }
        if info.get("dev").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(p) = make(name, info.get("version"), Vec::new()) {
            out.push(p);
        }
        if let Some(nested) = info.get("dependencies").and_then(Value::as_object) {
            walk_v1(nested, out, depth + 1);
        }
    }
}

/// An installed package's `package.json`.
pub fn parse_package_json(bytes: &[u8]) -> Option<Package> {
    let v = serde_json::from_slice::<Value>(bytes).ok()?;
    let name = v.get("name").and_then(Value::as_str)?;
    make(name, v.get("version"), license_of(&v))
}

fn make(name: &str, version: Option<&Value>, licenses: Vec<String>) -> Option<Package> {
    let version = version.and_then(Value::as_str)?;
    // Lockfile v1 records aliases and git dependencies as URLs; keep real versions only.
    if name.is_empty() || version.is_empty() || version.contains(':') || version.contains('/') {
        return None;
    }
    let (ns, base) = match name.strip_prefix('@').and_then(|r| r.split_once('/')) {
        Some((scope, n)) => (Some(format!("@{scope}")), n),
        None => (None, name),
    };
    let mut p = Package::new(
        PackageType::Npm,
        &clip(base, MAX_FIELD),
        &clip(version, MAX_FIELD),
    );
    p.namespace = ns.map(|s| clip(&s, MAX_FIELD));
    p.licenses = licenses;
    Some(p)
}

fn license_of(v: &Value) -> Vec<String> {
    let one = |l: &Value| match l {
        Value::String(s) => Some(clip(s, 100)),
        Value::Object(o) => o.get("type").and_then(Value::as_str).map(|s| clip(s, 100)),
        _ => None,
    };
    if let Some(l) = v.get("license").and_then(one) {
        return vec![l];
    }
    v.get("licenses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(one).take(8).collect())
        .unwrap_or_default()
}

/// True for `.../node_modules/<name>/package.json` and `.../node_modules/@scope/<name>/package.json`
/// (not the package.json files deeper inside a package).
pub fn is_installed_package_json(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else {
        return false;
    };
    let Some(idx) = dir.rfind("node_modules/") else {
        return false;
    };
    let rest = &dir[idx + "node_modules/".len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] => !name.is_empty() && !name.starts_with('.') && !name.starts_with('@'),
        [scope, name] => scope.starts_with('@') && scope.len() > 1 && !name.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfiles() {
        let v3 = br#"{"name":"app","lockfileVersion":3,"packages":{
            "":{"name":"app","version":"1.0.0"},
            "node_modules/lodash":{"version":"4.17.20","license":"MIT"},
            "node_modules/@babel/core":{"version":"7.22.0"},
            "node_modules/a/node_modules/lodash":{"version":"4.17.21"},
            "node_modules/jest":{"version":"29.0.0","dev":true},
            "node_modules/linked":{"resolved":"../x","link":true}}}"#;
        let p = parse_lock(v3);
        let mut got: Vec<(String, &str, &[String])> = p
            .iter()
            .map(|p| (p.full_name(), p.version.as_str(), &p.licenses[..]))
            .collect();
        got.sort();
        let mit = ["MIT".to_string()];
        assert_eq!(
            got,
            [
                ("@babel/core".to_string(), "7.22.0", &[][..]),
                ("lodash".to_string(), "4.17.20", &mit[..]),
                ("lodash".to_string(), "4.17.21", &[][..]),
            ]
        );
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"express":{"version":"4.17.1","dependencies":{"qs":{"version":"6.7.0"}}},"x":{"version":"github:a/b"}}}"#;
        let names: Vec<String> = parse_lock(v1)
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(names, ["express@4.17.1", "qs@6.7.0"]);
        assert!(parse_lock(b"not json").is_empty());
    }

    #[test]
    fn installed_package_json() {
        let p = parse_package_json(
            br#"{"name":"@types/node","version":"20.1.0","license":{"type":"MIT"}}"#,
        )
        .unwrap();
        assert_eq!(
            (p.namespace.as_deref(), p.name.as_str()),
            (Some("@types"), "node")
        );
        assert_eq!(p.licenses, ["MIT"]);
        assert!(is_installed_package_json(
            "app/node_modules/lodash/package.json"
        ));
        assert!(is_installed_package_json(
            "node_modules/@types/node/package.json"
        ));
        assert!(is_installed_package_json(
            "a/node_modules/b/node_modules/c/package.json"
        ));
        assert!(!is_installed_package_json(
            "node_modules/lodash/fp/package.json"
        ));
        assert!(!is_installed_package_json("app/package.json"));
        assert!(!is_installed_package_json("node_modules/.bin/package.json"));
    }
}
