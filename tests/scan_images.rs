//! The scanner end to end, with images built here: real package database files
//! (`tests/fixtures/scan/`), pushed through the OCI API of a real server, scanned by the
//! hold after `notifyManifest`, and read back over XRPC (the `io.atcr.hold.scan` record,
//! its SBOM and report blobs through `com.atproto.sync.getBlob`). Every package and
//! vulnerability list is asserted exactly against the OSV fixture
//! (`tests/fixtures/scan/osv/`, written for these images with known affected versions).
//!
//! Images: a Debian-style root filesystem (two layers: an upgrade and a purge with a
//! whiteout), an Alpine-style one (zstd layer), a Python environment, a Go binary (built
//! here with the `go` toolchain when it is installed; `ATCR_TEST_REQUIRE_GO=1` makes its
//! absence a failure), a Rust binary built with cargo-auditable (committed, see
//! `tests/fixtures/scan/rust/build.sh`), an npm + Java application, and an AlmaLinux-style
//! one (an rpmdb.sqlite written by SQLite); then a multi-platform index, an artifact
//! (skipped), a corrupt layer and a decompression bomb (failed), a database update
//! (re-match), the web pages, and garbage collection keeping the scan blobs.
//!
//! With `ATCR_TEST_SCAN_OUT=<dir>` every record, SBOM and report is written there for
//! `tests/scan/validate.mjs` (lexicon and schema checks with the reference libraries).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use atcr::scan::tar::build::{dir, exec, file, hardlink, symlink, tar, Entry};
use common::oci::*;
use common::{fixture_path, TestServer};
use serde_json::{json, Value};

const USER: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const SCAN: &str = "io.atcr.hold.scan";

fn fx(rel: &str) -> Vec<u8> {
    std::fs::read(fixture_path(&format!("scan/{rel}"))).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Pushes an image (config + layers) as `did/<repo>:<tag>`; returns the manifest digest.
async fn push(s: &TestServer, repo: &str, tag: &str, layers: &[(Vec<u8>, &str)]) -> String {
    let name = format!("{USER}/{repo}");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": layers.iter().map(|_| json!({"created_by": "/bin/sh -c #(nop) ADD file in /"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    push_blob(s, &name, &config).await;
    let mut descs = Vec::new();
    for (data, mt) in layers {
        push_blob(s, &name, data).await;
        descs.push(descriptor(mt, data));
    }
    let manifest = image_manifest(descriptor(OCI_CONFIG, &config), descs);
    push_manifest(s, &name, tag, OCI_MANIFEST, &manifest).await
}

fn hold_did(s: &TestServer) -> String {
    s.running
        .state
        .hold
        .as_ref()
        .expect("hold")
        .did()
        .to_string()
}

/// Waits for the scan record of `digest` (and, when given, for one not equal to `not`).
async fn record(s: &TestServer, digest: &str, not: Option<&Value>) -> Value {
    let rkey = digest.split_once(':').unwrap().1;
    let url = s.url(&format!(
        "/xrpc/com.atproto.repo.getRecord?repo={}&collection={SCAN}&rkey={rkey}",
        hold_did(s)
    ));
    for _ in 0..600 {
        let resp = s.client.get(&url).send().await.unwrap();
        if resp.status() == 200 {
            let v: Value = resp.json().await.unwrap();
            if not.is_none_or(|n| v["value"] != n["value"]) {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no scan record for {digest} after 60 s");
}

async fn blob(s: &TestServer, r: &Value, field: &str) -> Vec<u8> {
    let b = &r["value"][field];
    let cid = b["ref"]["$link"]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing: {r}"));
    let resp = s
        .client
        .get(s.url(&format!(
            "/xrpc/com.atproto.sync.getBlob?did={}&cid={cid}",
            hold_did(s)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "getBlob {field}");
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        bytes.len() as u64,
        b["size"].as_u64().unwrap(),
        "{field} size"
    );
    bytes
}

/// `type:name@version` of every package in an SBOM (with `[owner]` for owned ones).
fn packages(sbom: &[u8]) -> Vec<String> {
    let view = atcr::scan::sbom::read(sbom).expect("SBOM reads");
    view.packages
        .iter()
        .map(|e| {
            let p = &e.package.package;
            let mut s = format!("{}:{}@{}", p.kind.as_str(), p.full_name(), p.version);
            if let Some(o) = &e.package.owner {
                s.push_str(&format!(" [{o}]"));
            }
            s
        })
        .collect()
}

/// `severity id package@version -> fixed` of every match.
fn vulns(report: &Value) -> Vec<String> {
    report["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {} {}@{} -> {}",
                m["severity"].as_str().unwrap(),
                m["id"].as_str().unwrap(),
                m["package"]["name"].as_str().unwrap(),
                m["package"]["version"].as_str().unwrap(),
                m["fixedVersion"].as_str().unwrap_or("none")
            )
        })
        .collect()
}

/// Checks the record against the lexicon's constraints and returns (SBOM, report).
async fn check_record(
    s: &TestServer,
    r: &Value,
    digest: &str,
    repo: &str,
    dump: &str,
) -> (Vec<u8>, Value) {
    let v = &r["value"];
    assert_eq!(v["$type"], SCAN);
    let rkey = digest.split_once(':').unwrap().1;
    assert_eq!(r["uri"], format!("at://{}/{SCAN}/{rkey}", hold_did(s)));
    assert_eq!(
        v["manifest"],
        format!("at://{USER}/io.atcr.manifest/{rkey}")
    );
    assert_eq!(v["repository"], repo);
    assert_eq!(v["userDid"], USER);
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["scannerVersion"]
        .as_str()
        .unwrap()
        .starts_with("atcr-scanner-v"));
    assert!(v["scannerVersion"].as_str().unwrap().len() <= 64);
    assert!(atcr::web::catalog::unix_of(v["scannedAt"].as_str().unwrap()) > 1_700_000_000);
    assert_eq!(v["sbomBlob"]["mimeType"], "application/spdx+json");
    assert_eq!(
        v["vulnReportBlob"]["mimeType"],
        "application/vnd.atcr.vulnerabilities+json"
    );
    let sbom = blob(s, r, "sbomBlob").await;
    let report: Value = serde_json::from_slice(&blob(s, r, "vulnReportBlob").await).unwrap();
    let sum = &report["summary"];
    for k in ["critical", "high", "medium", "low", "total"] {
        assert_eq!(v[k], sum[k], "record {k} vs report");
    }
    assert_eq!(report["manifest"]["digest"], digest);
    check_schema(&report);
    dump_out(dump, r, &sbom, &report);
    (sbom, report)
}

/// Required fields and types of `src/scan/vulnerabilities.schema.json`, walked generically.
fn check_schema(report: &Value) {
    let schema: Value = serde_json::from_str(atcr::scan::report::SCHEMA).unwrap();
    fn walk(schema: &Value, v: &Value, at: &str) {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() {
            let ok = types.iter().any(|t| match *t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_u64() || v.is_i64(),
                "number" => v.is_number(),
                "null" => v.is_null(),
                _ => false,
            });
            assert!(ok, "{at}: {v} is not {types:?}");
        }
        if let Some(e) = schema["enum"].as_array() {
            assert!(e.contains(v), "{at}: {v} not in {e:?}");
        }
        if v.is_object() {
            for req in schema["required"].as_array().into_iter().flatten() {
                let k = req.as_str().unwrap();
                assert!(v.get(k).is_some(), "{at}: missing {k}");
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if let Some(x) = v.get(k) {
                        walk(sub, x, &format!("{at}.{k}"));
                    }
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                walk(items, x, &format!("{at}[{i}]"));
            }
        }
    }
    walk(&schema, report, "report");
}

fn dump_out(name: &str, record: &Value, sbom: &[u8], report: &Value) {
    let Ok(dir) = std::env::var("ATCR_TEST_SCAN_OUT") else {
        return;
    };
    let d = std::path::Path::new(&dir);
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(
        d.join(format!("{name}.record.json")),
        serde_json::to_vec_pretty(&record["value"]).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join(format!("{name}.spdx.json")), sbom).unwrap();
    std::fs::write(
        d.join(format!("{name}.report.json")),
        serde_json::to_vec_pretty(report).unwrap(),
    )
    .unwrap();
}

fn debian_layers() -> Vec<(Vec<u8>, &'static str)> {
    let status_base = fx("debian/status.base");
    let status = fx("debian/status");
    let (osr, zc, ec, bc) = (
        fx("debian/os-release"),
        fx("debian/zlib1g.copyright"),
        fx("debian/libexpat1.copyright"),
        fx("debian/base-files.copyright"),
    );
    let (six_list, six_info) = (fx("debian/python3-six.list"), fx("debian/six.PKG-INFO"));
    let l1 = tar(&[
        dir("etc"),
        symlink("etc/os-release", "../usr/lib/os-release"),
        file("usr/lib/os-release", &osr),
        file("var/lib/dpkg/status", &status_base),
        file("var/lib/dpkg/info/python3-six.list", &six_list),
        file(
            "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO",
            &six_info,
        ),
        file("usr/share/doc/zlib1g/copyright", &zc),
        file("usr/share/doc/libexpat1/copyright", &ec),
        file("usr/share/doc/base-files/copyright", &bc),
        file("usr/share/doc/tzdata/copyright", &bc),
        exec("bin/true", &[0u8; 2048]),
    ]);
    // `apt-get upgrade` (expat 2.5.0-1 -> 2.5.0-1+deb12u1) and `dpkg --purge tzdata`.
    let l2 = tar(&[
        file("var/lib/dpkg/status", &status),
        file("usr/share/doc/.wh.tzdata", b""),
    ]);
    vec![(gz(&l1), GZ), (gz(&l2), GZ)]
}

fn alpine_layers() -> Vec<(Vec<u8>, &'static str)> {
    let l = tar(&[
        file("etc/os-release", &fx("alpine/os-release")),
        file("lib/apk/db/installed", &fx("alpine/installed")),
        exec("bin/busybox", &[0u8; 4096]),
    ]);
    vec![(zst(&l), ZSTD)]
}

fn python_layers() -> Vec<(Vec<u8>, &'static str)> {
    let sp = "usr/local/lib/python3.11/site-packages";
    let meta = |n: &str, v: &str, lic: &str| {
        format!("Metadata-Version: 2.1\nName: {n}\nVersion: {v}\nSummary: test\nLicense: {lic}\n\nLong description.\n").into_bytes()
    };
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("{sp}/requests-2.25.0.dist-info/METADATA"), meta("requests", "2.25.0", "Apache 2.0")),
        (format!("{sp}/urllib3-1.26.4.dist-info/METADATA"), meta("urllib3", "1.26.4", "MIT")),
        (format!("{sp}/Jinja2-2.11.2.dist-info/METADATA"), meta("Jinja2", "2.11.2", "BSD-3-Clause")),
        (format!("{sp}/certifi-2023.7.22.dist-info/METADATA"), meta("certifi", "2023.7.22", "MPL-2.0")),
        (format!("{sp}/PyYAML-5.3.1-py3.11.egg-info/PKG-INFO"), b"Metadata-Version: 1.1\nName: PyYAML\nVersion: 5.3.1\nClassifier: License :: OSI Approved :: MIT License\n".to_vec()),
    ];
    let entries: Vec<Entry<'_>> = files.iter().map(|(p, d)| file(p, d)).collect();
    vec![(gz(&tar(&entries)), GZ)]
}

fn rust_layers() -> Vec<(Vec<u8>, &'static str)> {
    let bin = fx("rust/scanapp-rs");
    vec![(gz(&tar(&[exec("usr/local/bin/scanapp-rs", &bin)])), GZ)]
}

/// npm (lockfile + node_modules) and Java (a fat jar with a nested jar), plain tar.
fn app_layers() -> Vec<(Vec<u8>, &'static str)> {
    let lock = br#"{"name":"web","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{
        "":{"name":"web","version":"1.0.0","dependencies":{"lodash":"^4.17.0","@babel/traverse":"7.22.0"},"devDependencies":{"minimist":"1.2.5"}},
        "node_modules/lodash":{"version":"4.17.20","resolved":"https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz","license":"MIT"},
        "node_modules/@babel/traverse":{"version":"7.22.0","license":"MIT"},
        "node_modules/minimist":{"version":"1.2.5","dev":true,"license":"MIT"}}}"#;
    let lodash = br#"{"name":"lodash","version":"4.17.20","license":"MIT","main":"lodash.js"}"#;
    let inner = jar(&[
        (
            "META-INF/MANIFEST.MF",
            b"Manifest-Version: 1.0\nBundle-SymbolicName: org.yaml.snakeyaml\n",
            true,
        ),
        (
            "META-INF/maven/org.yaml/snakeyaml/pom.properties",
            b"groupId=org.yaml\nartifactId=snakeyaml\nversion=1.33\n",
            true,
        ),
    ]);
    let outer = jar(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\nMain-Class: org.springframework.boot.loader.JarLauncher\n", true),
        ("META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties", b"#Created by Apache Maven\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion=2.14.1\n", true),
        ("org/apache/logging/log4j/core/Logger.class", &[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52], true),
        ("BOOT-INF/lib/snakeyaml-1.33.jar", &inner, false),
    ]);
    let l = tar(&[
        file("app/package-lock.json", lock),
        file("app/node_modules/lodash/package.json", lodash),
        file(
            "app/node_modules/lodash/fp/package.json",
            br#"{"name":"lodash-fp-internal","version":"0.0.0"}"#,
        ),
        file("opt/app/app.jar", &outer),
    ]);
    vec![(l, TAR)]
}

/// A zip written like Java's ZipOutputStream (deflated entries with data descriptors).
fn jar(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, deflate) in entries {
        let mut h = flate2::Crc::new();
        h.update(data);
        let crc = h.sum();
        let body = if *deflate {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.to_vec()
        };
        out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0]);
        out.extend_from_slice(&(if *deflate { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&(if *deflate { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
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
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06]);
    out.extend_from_slice(&[0u8; 18]);
    out
}

/// An AlmaLinux-style root: os-release and an rpmdb.sqlite written by SQLite itself.
async fn rpm_layers() -> Vec<(Vec<u8>, &'static str)> {
    use atcr::scan::inventory::rpm::{build_header, tags};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpmdb.sqlite");
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
    )
    .await
    .unwrap();
    #[allow(clippy::type_complexity)]
    let pkgs: [(&[(u32, &str)], Option<u32>); 4] = [
        (
            &[
                (tags::NAME, "openssl-libs"),
                (tags::VERSION, "3.0.7"),
                (tags::RELEASE, "24.el9"),
                (tags::ARCH, "x86_64"),
                (tags::LICENSE, "ASL 2.0"),
                (tags::SOURCERPM, "openssl-3.0.7-24.el9.src.rpm"),
            ],
            Some(1),
        ),
        (
            &[
                (tags::NAME, "bash"),
                (tags::VERSION, "5.1.8"),
                (tags::RELEASE, "6.el9_1"),
                (tags::ARCH, "x86_64"),
                (tags::LICENSE, "GPLv3+"),
                (tags::SOURCERPM, "bash-5.1.8-6.el9_1.src.rpm"),
            ],
            None,
        ),
        (
            &[
                (tags::NAME, "zlib"),
                (tags::VERSION, "1.2.11"),
                (tags::RELEASE, "40.el9"),
                (tags::ARCH, "x86_64"),
                (tags::LICENSE, "zlib and Boost"),
                (tags::SOURCERPM, "zlib-1.2.11-40.el9.src.rpm"),
            ],
            None,
        ),
        (
            &[
                (tags::NAME, "gpg-pubkey"),
                (tags::VERSION, "b86b3716"),
                (tags::RELEASE, "61e69f29"),
            ],
            None,
        ),
    ];
    for (t, epoch) in pkgs {
        conn.execute(
            "INSERT INTO Packages (blob) VALUES (?1)",
            libsql::params![build_header(t, epoch)],
        )
        .await
        .unwrap();
    }
    drop(conn);
    drop(db);
    let rpmdb = std::fs::read(&path).unwrap();
    let osr = b"NAME=\"AlmaLinux\"\nVERSION=\"9.3 (Shamrock Pampas Cat)\"\nID=\"almalinux\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"AlmaLinux 9.3 (Shamrock Pampas Cat)\"\n";
    let l = tar(&[
        file("etc/os-release", osr),
        file("usr/lib/sysimage/rpm/rpmdb.sqlite", &rpmdb),
        symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm"),
    ]);
    vec![(gz(&l), GZ)]
}

/// Builds the Go fixture program when a Go toolchain is installed; `None` otherwise.
fn go_binary(out: &std::path::Path) -> Option<(Vec<u8>, String)> {
    let go = std::process::Command::new("go")
        .arg("env")
        .arg("GOVERSION")
        .output();
    let version = match go {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            assert!(
                std::env::var_os("ATCR_TEST_REQUIRE_GO").is_none(),
                "ATCR_TEST_REQUIRE_GO is set but there is no go toolchain"
            );
            eprintln!("SKIPPED: the Go binary image (no go toolchain; install golang-go)");
            return None;
        }
    };
    let bin = out.join("scanapp");
    let status = std::process::Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(fixture_path("scan/go"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        // Kept between runs (the standard library is compiled once).
        .env(
            "GOCACHE",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
        )
        .env(
            "GOPATH",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gopath"),
        )
        .status()
        .expect("go build runs");
    assert!(status.success(), "go build failed");
    Some((std::fs::read(&bin).unwrap(), version))
}

/// Every image of the module doc, on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scans_images_built_here() {
    let s = TestServer::start_with(|c| c.scan.max_layer_mib = 8).await;
    let scanner = s
        .running
        .state
        .scanner
        .clone()
        .expect("scanner runs with the hold");
    let vdb_dir = s.dir.path().join("vulndb");
    let r = atcr::scan::vulndb::import(&vdb_dir, &[fixture_path("scan/osv")], false).unwrap();
    assert_eq!((r.generation, r.imported, r.failed), (1, 31, 0), "{r:?}");
    assert_eq!(scanner.check_database().await, 0, "nothing scanned yet");

    // --- Debian-style root filesystem.
    let deb = push(&s, "debian-style", "12", &debian_layers()).await;
    let rec = record(&s, &deb, None).await;
    let (sbom, report) = check_record(&s, &rec, &deb, "debian-style", "debian").await;
    assert_eq!(
        packages(&sbom),
        [
            "deb:base-files@12.4+deb12u11",
            "deb:libc6@2.36-9+deb12u14",
            "deb:libexpat1@2.5.0-1+deb12u1",
            "deb:libssl3@3.0.19-1~deb12u2",
            "deb:openssl@3.0.19-1~deb12u2",
            "deb:python3-six@1.16.0-4",
            "deb:zlib1g@1:1.2.13.dfsg-1",
            "pypi:six@1.16.0 [python3-six]",
        ]
    );
    assert_eq!(
        vulns(&report),
        [
            "critical CVE-2099-1001 libssl3@3.0.19-1~deb12u2 -> 3.0.20-1~deb12u1",
            "critical CVE-2099-1001 openssl@3.0.19-1~deb12u2 -> 3.0.20-1~deb12u1",
            "medium CVE-2099-1006 libssl3@3.0.19-1~deb12u2 -> none",
            "medium CVE-2099-1006 openssl@3.0.19-1~deb12u2 -> none",
            "low CVE-2099-1003 libc6@2.36-9+deb12u14 -> none",
        ]
    );
    assert_eq!(
        report["distro"],
        json!({"id": "debian", "versionId": "12", "prettyName": "Debian GNU/Linux 12 (bookworm)"})
    );
    let m0 = &report["matches"][0];
    assert_eq!(m0["package"]["ecosystem"], "Debian:12");
    assert_eq!(m0["cvssScore"], 9.8);
    assert_eq!(m0["severitySource"], "CVSS_V3");
    assert_eq!(report["matches"][2]["severitySource"], "distribution");
    let aliases: Vec<&str> = m0["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["DEBIAN-CVE-2099-1001"]);
    let spdx: Value = serde_json::from_slice(&sbom).unwrap();
    let lic: BTreeMap<&str, &str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["licenseDeclared"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lic["zlib1g"], "Zlib");
    assert_eq!(lic["libexpat1"], "MIT");
    assert_eq!(lic["base-files"], "NOASSERTION");
    assert_eq!(lic["six"], "MIT");

    // --- Alpine-style (zstd).
    let alp = push(&s, "alpine-style", "3.19", &alpine_layers()).await;
    let rec = record(&s, &alp, None).await;
    let (sbom, report) = check_record(&s, &rec, &alp, "alpine-style", "alpine").await;
    assert_eq!(
        packages(&sbom),
        [
            "apk:alpine-baselayout-data@3.4.3-r2",
            "apk:apk-tools@2.14.0-r5",
            "apk:busybox@1.36.1-r15",
            "apk:libcrypto3@3.1.4-r5",
            "apk:libssl3@3.1.4-r5",
            "apk:musl@1.2.4_git20230717-r4",
            "apk:ssl_client@1.36.1-r15",
            "apk:zlib@1.3.1-r0",
        ]
    );
    assert_eq!(
        vulns(&report),
        [
            "medium ALPINE-CVE-2099-2004 zlib@1.3.1-r0 -> 1.3.1-r1",
            "unknown CVE-2099-2001 libcrypto3@3.1.4-r5 -> 3.1.4-r6",
            "unknown CVE-2099-2001 libssl3@3.1.4-r5 -> 3.1.4-r6",
        ]
    );
    assert_eq!(rec["value"]["total"], 3);
    assert_eq!(rec["value"]["medium"], 1);
    assert_eq!(report["summary"]["unknown"], 2);

    // --- Python environment.
    let py = push(&s, "python-env", "3.11", &python_layers()).await;
    let rec = record(&s, &py, None).await;
    let (sbom, report) = check_record(&s, &rec, &py, "python-env", "python").await;
    assert_eq!(
        packages(&sbom),
        [
            "pypi:Jinja2@2.11.2",
            "pypi:PyYAML@5.3.1",
            "pypi:certifi@2023.7.22",
            "pypi:requests@2.25.0",
            "pypi:urllib3@1.26.4"
        ]
    );
    assert_eq!(
        vulns(&report),
        [
            "critical PYSEC-2099-32 PyYAML@5.3.1 -> none",
            "high PYSEC-2099-31 Jinja2@2.11.2 -> 2.11.3",
            "medium CVE-2099-3001 requests@2.25.0 -> 2.31.0",
        ]
    );
    assert_eq!(report["distro"], Value::Null);
    let req = &report["matches"][2];
    let mut al: Vec<&str> = req["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    al.sort();
    assert_eq!(al, ["GHSA-9999-aaaa-0001", "PYSEC-2099-30"]);

    // --- Rust binary built with cargo-auditable.
    let rs = push(&s, "rust-bin", "v1", &rust_layers()).await;
    let rec = record(&s, &rs, None).await;
    let (sbom, report) = check_record(&s, &rec, &rs, "rust-bin", "rust").await;
    assert_eq!(
        packages(&sbom),
        [
            "cargo:hex@0.4.2",
            "cargo:itoa@1.0.1",
            "cargo:scanapp-rs@0.1.0"
        ]
    );
    assert_eq!(
        vulns(&report),
        ["high RUSTSEC-2099-0001 hex@0.4.2 -> 0.4.3"]
    );

    // --- npm and Java application.
    let app = push(&s, "node-java", "v1", &app_layers()).await;
    let rec = record(&s, &app, None).await;
    let (sbom, report) = check_record(&s, &rec, &app, "node-java", "node-java").await;
    assert_eq!(
        packages(&sbom),
        [
            "npm:@babel/traverse@7.22.0",
            "npm:lodash@4.17.20",
            "maven:org.apache.logging.log4j:log4j-core@2.14.1",
            "maven:org.yaml:snakeyaml@1.33",
        ]
    );
    assert_eq!(
        vulns(&report),
        [
            "critical CVE-2099-5002 @babel/traverse@7.22.0 -> 7.23.2",
            "critical CVE-2099-6001 org.apache.logging.log4j:log4j-core@2.14.1 -> 2.15.0",
            "critical CVE-2099-6002 org.yaml:snakeyaml@1.33 -> 2.0",
            "high CVE-2099-5001 lodash@4.17.20 -> 4.17.21",
        ]
    );
    assert_eq!(report["matches"][2]["severitySource"], "CVSS_V4");
    assert_eq!(report["matches"][2]["cvssScore"], 9.3);
    let view = atcr::scan::sbom::read(&sbom).unwrap();
    let lodash = view
        .packages
        .iter()
        .find(|e| e.package.package.name == "lodash")
        .unwrap();
    assert_eq!(
        lodash.package.package.locations,
        [
            "app/node_modules/lodash/package.json",
            "app/package-lock.json"
        ]
    );
    assert_eq!(lodash.license, "MIT");

    // --- AlmaLinux-style (rpmdb.sqlite).
    let alma = push(&s, "alma-style", "9", &rpm_layers().await).await;
    let rec = record(&s, &alma, None).await;
    let (sbom, report) = check_record(&s, &rec, &alma, "alma-style", "rpm").await;
    assert_eq!(
        packages(&sbom),
        [
            "rpm:bash@5.1.8-6.el9_1",
            "rpm:openssl-libs@1:3.0.7-24.el9",
            "rpm:zlib@1.2.11-40.el9"
        ]
    );
    assert_eq!(
        vulns(&report),
        ["high ALSA-2099:0001 openssl-libs@1:3.0.7-24.el9 -> 1:3.0.7-25.el9_3"]
    );

    // --- Go binary (built here).
    let tmp = tempfile::tempdir().unwrap();
    let mut scanned_images = 6;
    if let Some((bin, goversion)) = go_binary(tmp.path()) {
        scanned_images += 1;
        let layer = gz(&tar(&[
            exec("usr/local/bin/scanapp", &bin),
            hardlink("usr/bin/scanapp", "usr/local/bin/scanapp"),
        ]));
        let go = push(&s, "go-bin", "v1", &[(layer, GZ)]).await;
        let rec = record(&s, &go, None).await;
        let (sbom, report) = check_record(&s, &rec, &go, "go-bin", "go").await;
        let stdlib = atcr::scan::inventory::gobin::stdlib_version(&goversion).unwrap();
        assert_eq!(
            packages(&sbom),
            [
                "golang:example.com/vulnlib@v1.2.3".to_string(),
                format!("golang:stdlib@{stdlib}")
            ]
        );
        assert_eq!(
            vulns(&report),
            [
                "unknown CVE-2099-4001 example.com/vulnlib@v1.2.3 -> 1.2.4".to_string(),
                format!("unknown GO-2099-0002 stdlib@{stdlib} -> 99.0.0"),
            ]
        );
        let view = atcr::scan::sbom::read(&sbom).unwrap();
        assert_eq!(
            view.packages[0].package.package.locations,
            ["usr/bin/scanapp", "usr/local/bin/scanapp"]
        );
    }

    // --- A multi-platform index: each platform is scanned, the index itself is not.
    let name = format!("{USER}/multi");
    let mut children = Vec::new();
    for (arch, layers) in [("amd64", alpine_layers()), ("arm64", debian_layers())] {
        let d = push(&s, "multi", &format!("only-{arch}"), &layers).await;
        children.push(json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 0, "platform": {"os": "linux", "architecture": arch}}));
    }
    for c in &mut children {
        let d = c["digest"].as_str().unwrap().to_string();
        let bytes = get(&s, &format!("/v2/{name}/manifests/{d}"))
            .await
            .bytes()
            .await
            .unwrap();
        c["size"] = json!(bytes.len());
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}),
    )
    .unwrap();
    let idx = push_manifest(&s, &name, "latest", OCI_INDEX, &index).await;
    for c in &children {
        record(&s, c["digest"].as_str().unwrap(), None).await;
    }

    // --- An artifact (not an image): skipped with a reason.
    let helm_cfg = br#"{"name":"chart","version":"1.0.0"}"#;
    push_blob(&s, &format!("{USER}/chart"), helm_cfg).await;
    let chart = b"not really a chart";
    push_blob(&s, &format!("{USER}/chart"), chart).await;
    let m = image_manifest(
        descriptor("application/vnd.cncf.helm.config.v1+json", helm_cfg),
        vec![descriptor(
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            chart,
        )],
    );
    let art = push_manifest(&s, &format!("{USER}/chart"), "1.0.0", OCI_MANIFEST, &m).await;
    let rec = record(&s, &art, None).await;
    assert_eq!(rec["value"]["status"], "skipped");
    assert_eq!(
        rec["value"]["reason"],
        "not a container image (config application/vnd.cncf.helm.config.v1+json)"
    );
    assert_eq!(rec["value"]["total"], 0);
    assert!(rec["value"].get("sbomBlob").is_none());
    dump_out("skipped", &rec, b"", &Value::Null);

    // --- A corrupt layer and a decompression bomb: failed with a reason, nothing else.
    let bad = push(
        &s,
        "broken",
        "v1",
        &[(gz(b"this is not a tar archive, it is text"), GZ)],
    )
    .await;
    let rec = record(&s, &bad, None).await;
    assert_eq!(rec["value"]["status"], "failed");
    assert!(
        rec["value"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("layer 1: tar:"),
        "{}",
        rec["value"]
    );
    dump_out("failed", &rec, b"", &Value::Null);
    let zeros = vec![0u8; 20 << 20];
    let bomb = gz(&tar(&[file("zeros", &zeros)]));
    assert!(bomb.len() < 200 << 10);
    let b = push(&s, "bomb", "v1", &[(bomb, GZ)]).await;
    let rec = record(&s, &b, None).await;
    assert_eq!(rec["value"]["status"], "failed");
    assert!(
        rec["value"]["reason"]
            .as_str()
            .unwrap()
            .contains("scan.max_layer_mib"),
        "{}",
        rec["value"]
    );

    // --- The web UI (the browser test covers the same in Chromium).
    let page = |p: String| {
        let s = &s;
        async move {
            let r = get(s, &p).await;
            assert_eq!(r.status(), 200, "{p}");
            r.text().await.unwrap()
        }
    };
    let html = page(format!("/r/{USER}/debian-style")).await;
    assert!(
        html.contains("2 critical"),
        "severity badge on the repository page"
    );
    let html = page(format!("/r/{USER}/multi")).await;
    assert!(
        html.contains("2 critical"),
        "the index's badge is its worst platform's"
    );
    let html = page(format!("/r/{USER}/debian-style/manifests/{deb}")).await;
    for id in [
        "CVE-2099-1001",
        "CVE-2099-1006",
        "CVE-2099-1003",
        "3.0.20-1~deb12u1",
    ] {
        assert!(html.contains(id), "manifest page lacks {id}");
    }
    let html = page(format!("/r/{USER}/debian-style/manifests/{deb}/sbom?q=lib")).await;
    assert!(
        html.contains("libexpat1") && html.contains("zlib1g") && !html.contains("base-files"),
        "SBOM filter"
    );
    assert!(html.contains("MIT") && html.contains("Zlib"));
    let html = page(format!("/compare/{USER}/multi?a=only-amd64&b=only-arm64")).await;
    assert!(
        html.contains("libexpat1") && html.contains("CVE-2099-1001") && html.contains("busybox"),
        "compare page"
    );
    let html = page("/search?q=&critical=1".into()).await;
    for (repo, shown) in [
        ("debian-style", true),
        ("node-java", true),
        ("multi", true),
        ("alpine-style", false),
        ("python-env", true),
        ("rust-bin", false),
    ] {
        assert_eq!(
            html.contains(&format!("/r/{USER}/{repo}\"")),
            shown,
            "search filter critical: {repo}"
        );
    }
    let _ = idx;

    // --- A database update: the stored SBOMs are matched again, no layer is read.
    let r =
        atcr::scan::vulndb::import(&vdb_dir, &[fixture_path("scan/osv-update")], false).unwrap();
    assert_eq!((r.generation, r.imported, r.withdrawn), (2, 1, 1));
    let before = record(&s, &deb, None).await;
    let queued = scanner.check_database().await;
    // One rematch per scan with an SBOM (the index's platforms are the Debian and Alpine
    // images' bytes: the same digests, the same records).
    assert_eq!(queued, scanned_images, "rematch queued");
    let after = record(&s, &deb, Some(&before)).await;
    let (_, report) = check_record(&s, &after, &deb, "debian-style", "debian-rematched").await;
    assert_eq!(
        vulns(&report),
        [
            "critical CVE-2099-1001 libssl3@3.0.19-1~deb12u2 -> 3.0.20-1~deb12u1",
            "critical CVE-2099-1001 openssl@3.0.19-1~deb12u2 -> 3.0.20-1~deb12u1",
            "high CVE-2099-1007 zlib1g@1:1.2.13.dfsg-1 -> 1:1.2.13.dfsg-2",
            "medium CVE-2099-1006 libssl3@3.0.19-1~deb12u2 -> none",
            "medium CVE-2099-1006 openssl@3.0.19-1~deb12u2 -> none",
        ]
    );
    assert_eq!(report["database"]["generation"], 2);
    assert_eq!(
        after["value"]["sbomBlob"], before["value"]["sbomBlob"],
        "the SBOM is unchanged"
    );

    // --- Garbage collection keeps every scan's blobs (and removes the replaced report).
    let swept = atcr::gc::collect_garbage(
        &s.running.state.registry,
        s.running.state.hold_api.as_deref(),
        false,
    )
    .await
    .unwrap();
    let old_report = before["value"]["vulnReportBlob"]["ref"]["$link"]
        .as_str()
        .unwrap();
    let old_digest = atcr::scan::service::digest_of_cid(old_report).unwrap();
    assert!(
        swept.contains(&old_digest),
        "the replaced report is garbage"
    );
    blob(&s, &after, "sbomBlob").await;
    blob(&s, &after, "vulnReportBlob").await;
}
