//! Scanner throughput and memory: builds a ~500 MB image (uncompressed) on disk, then scans
//! it in a child process (so the peak RSS measured is the scan's alone, not the builder's)
//! with the scanner's defaults: gzip and zstd layers, a real dpkg database, Python and npm
//! packages, ELF executables (one a cargo-auditable binary), compressible text and
//! incompressible data; matched against the OSV fixture plus 20,000 generated advisories.
//!
//!   cargo bench --bench scan              (ATCR_BENCH_SCAN_MB=500 to change the size)
//!
//! Prints one table row per compression: sizes, files, packages, vulnerabilities, scan
//! time, throughput over the uncompressed bytes, and the child's peak RSS (VmHWM).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use atcr::scan::tar::build::{exec, file, tar, Entry};

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn text(len: usize, seed: &mut u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "container",
        "registry",
        "layer",
        "manifest",
        "digest",
        "vulnerability",
        "package",
        "library",
        "function",
        "return",
        "value",
        "error",
        "config",
        "the",
        "of",
        "and",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[(rng(seed) % 16) as usize].as_bytes());
        out.push(if rng(seed) % 12 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: &mut u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&rng(seed).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One layer of about `mb` MB of files; the first also holds the package databases.
fn layer(index: usize, mb: usize, seed: &mut u64) -> (Vec<u8>, usize) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scan");
    let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
    if index == 0 {
        let status = std::fs::read("/var/lib/dpkg/status")
            .unwrap_or_else(|_| std::fs::read(fixtures.join("debian/status")).expect("fixture"));
        files.push(("var/lib/dpkg/status".into(), status, false));
        files.push((
            "etc/os-release".into(),
            std::fs::read(fixtures.join("debian/os-release")).unwrap(),
            false,
        ));
        for i in 0..300 {
            let m = format!(
                "Metadata-Version: 2.1\nName: pkg{i}\nVersion: 1.{i}.0\nLicense: MIT\n\n{}",
                String::from_utf8(text(2000, seed)).unwrap()
            );
            files.push((
                format!("usr/local/lib/python3.11/site-packages/pkg{i}-1.{i}.0.dist-info/METADATA"),
                m.into_bytes(),
                false,
            ));
        }
        for i in 0..1000 {
            let j = format!("{{\"name\":\"mod{i}\",\"version\":\"2.{i}.1\",\"license\":\"ISC\"}}");
            files.push((
                format!("app/node_modules/mod{i}/package.json"),
                j.into_bytes(),
                false,
            ));
        }
        files.push((
            "usr/local/bin/scanapp-rs".into(),
            std::fs::read(fixtures.join("rust/scanapp-rs")).unwrap(),
            true,
        ));
    }
    let budget = mb << 20;
    let mut used: usize = files.iter().map(|f| f.1.len()).sum();
    let mut n = 0;
    while used < budget {
        let kind = rng(seed) % 10;
        let (data, exe) = match kind {
            // An ELF executable of random code: the worst case for the binary scan.
            0 => {
                let mut d = b"\x7fELF".to_vec();
                d.extend(random(4 << 20, seed));
                (d, true)
            }
            1..=3 => (random(256 << 10, seed), false),
            _ => (text(128 << 10, seed), false),
        };
        used += data.len();
        files.push((format!("usr/share/data{index}/f{n}.bin"), data, exe));
        n += 1;
    }
    let entries: Vec<Entry<'_>> = files
        .iter()
        .map(|(p, d, x)| if *x { exec(p, d) } else { file(p, d) })
        .collect();
    (tar(&entries), files.len())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The child: scans the layers in `dir` and prints `packages vulns secs rss_kib`.
fn child(dir: &Path) {
    let mut layers: Vec<PathBuf> = std::fs::read_dir(dir.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    layers.sort();
    let vdb = atcr::scan::vulndb::VulnDb::new(&dir.join("vulndb"));
    let reader = vdb.reader();
    let image = atcr::scan::sbom::ImageRef {
        repository: "bench".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        user_did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
        host: "localhost".into(),
    };
    let started = Instant::now();
    let sources = layers
        .iter()
        .map(|p| -> atcr::scan::engine::LayerSource<'static> {
            Ok(Box::new(std::io::BufReader::new(
                std::fs::File::open(p).map_err(|e| e.to_string())?,
            )))
        });
    let out = atcr::scan::engine::scan_image(
        &image,
        sources,
        &atcr::scan::walk::Limits::default(),
        reader.as_ref(),
        "2024-01-01T00:00:00Z",
    );
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        out.status,
        atcr::scan::engine::Status::Ok,
        "{:?}",
        out.reason
    );
    println!(
        "{} {} {secs:.3} {} {}",
        out.packages,
        out.summary.total,
        peak_rss_kib(),
        out.stats.entries
    );
}

fn main() {
    if let Ok(dir) = std::env::var("ATCR_BENCH_SCAN_CHILD") {
        child(Path::new(&dir));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total_mb: usize = std::env::var("ATCR_BENCH_SCAN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let tmp = tempfile::tempdir().expect("tempdir");
    // The database: the fixture and 20,000 generated advisories over Debian, PyPI, npm.
    let gen = tmp.path().join("osv-generated");
    std::fs::create_dir_all(&gen).unwrap();
    for i in 0..20_000u32 {
        let (eco, name) = match i % 3 {
            0 => ("Debian:12", format!("src{}", i % 2000)),
            1 => ("PyPI", format!("pkg{}", i % 300)),
            _ => ("npm", format!("mod{}", i % 1000)),
        };
        let rec = serde_json::json!({
            "id": format!("BENCH-{i}"), "modified": "2024-01-01T00:00:00Z",
            "summary": "generated", "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}],
            "affected": [{"package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.5.0"}]}]}],
        });
        std::fs::write(
            gen.join(format!("BENCH-{i}.json")),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scan/osv");
    let t = Instant::now();
    let r = atcr::scan::vulndb::import(&tmp.path().join("vulndb"), &[fixtures, gen], false)
        .expect("import");
    println!(
        "vulnerability database: {} advisories imported in {:.2} s",
        r.advisories,
        t.elapsed().as_secs_f64()
    );
    println!(
        "| layers | compressed | uncompressed | files | packages | vulnerabilities | scan time | throughput | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for compression in ["gzip", "zstd"] {
        let ldir = tmp.path().join("layers");
        let _ = std::fs::remove_dir_all(&ldir);
        std::fs::create_dir_all(&ldir).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut raw, mut packed, mut files) = (0usize, 0u64, 0usize);
        let layers = 5;
        for i in 0..layers {
            let (t, n) = layer(i, total_mb / layers, &mut seed);
            raw += t.len();
            files += n;
            let path = ldir.join(format!("{i:02}"));
            let f = std::fs::File::create(&path).unwrap();
            match compression {
                "gzip" => {
                    let mut e = flate2::write::GzEncoder::new(
                        BufWriter::new(f),
                        flate2::Compression::default(),
                    );
                    e.write_all(&t).unwrap();
                    e.finish().unwrap().flush().unwrap();
                }
                _ => {
                    let z = ruzstd::encoding::compress_to_vec(
                        &t[..],
                        ruzstd::encoding::CompressionLevel::Fastest,
                    );
                    BufWriter::new(f).write_all(&z).unwrap();
                }
            }
            packed += std::fs::metadata(&path).unwrap().len();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("ATCR_BENCH_SCAN_CHILD", tmp.path())
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let (pkgs, vulns, secs, rss): (usize, u64, f64, u64) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        println!(
            "| {layers} × {compression} | {:.0} MB | {:.0} MB | {files} | {pkgs} | {vulns} | {secs:.2} s | {:.0} MB/s | {:.1} MiB |",
            packed as f64 / 1e6,
            raw as f64 / 1e6,
            raw as f64 / 1e6 / secs,
            rss as f64 / 1024.0
        );
    }
}
