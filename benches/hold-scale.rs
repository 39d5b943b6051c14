//! The hold at scale: a hold repo grown to `HOLD_SCALE_RECORDS` `io.atcr.hold.layer`
//! records (default 1,000,000; 1,000 users, 5 layers per manifest) in big batched commits,
//! measured at checkpoints (10k, 100k, 1M, and N):
//!
//! - `notifyManifest`: `HoldService::record_push` (the domain function behind it: quota
//!   under the writer lock, the manifest's existing records, one commit of 5 layer records),
//! - the quota check (`HoldService::check_quota`, a tier is configured),
//! - `getLayersForManifest` (`HoldService::layers_for_manifest`),
//! - one single-record commit (`HoldPds::write_blocking`),
//! - the walk of the whole layer collection that each of the above did before the layer
//!   index (`collection_where`, once: what a quota check cost then),
//! - the CAR export (`HoldPds::write_car_blocking`, the walk of `getRepo` and `atcr hold
//!   export`) into a counting sink: time, size, and its memory: the peak of live heap bytes
//!   above the start of the export (a counting global allocator; includes redb's page cache,
//!   which redb bounds itself) and VmHWM (reset through /proc/self/clear_refs before).
//!
//! Next to them, the machine's own limits: a raw redb one-row write transaction (the floor
//! of any commit, same disk, same durability) and the raw SHA-256 rate (every commit hashes
//! its new blocks).
//!
//!   cargo bench --bench hold-scale           (HOLD_SCALE_RECORDS=100000 for a quick run)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atcr::atproto::repo::{Tid, Write};
use atcr::hold::manifest::{Descriptor, ManifestSummary, NotifyManifest};
use atcr::hold::HoldService;
use atcr::pds::{record_cbor, HoldPds};
use serde_json::json;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USERS: u64 = 1000;
const LAYERS_PER_MANIFEST: u64 = 5;
const SAMPLES: usize = 200;
const OWNER: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

fn user(i: u64) -> String {
    format!("did:plc:benchuser{:08}", i % USERS)
}

fn manifest_uri(m: u64) -> String {
    format!(
        "at://{}/io.atcr.manifest/3m{m:011}",
        user(m) // a manifest belongs to user(m)
    )
}

fn digest(i: u64) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(i.to_le_bytes());
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn layer_record(i: u64) -> bytes::Bytes {
    let m = i / LAYERS_PER_MANIFEST;
    record_cbor(&json!({
        "$type": "io.atcr.hold.layer",
        "digest": digest(i),
        "size": 1_000_000 + (i * 7919) % 50_000_000,
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "manifest": manifest_uri(m),
        "userDid": user(m),
        "createdAt": "2025-06-01T12:00:00.000Z",
    }))
    .unwrap()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

struct Counter(u64);
impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Row {
    records: u64,
    notify: (f64, f64),
    /// CPU time of the process during each notify (everything but waiting for the disk).
    notify_cpu: (f64, f64),
    /// A raw redb one-row commit right after each notify: the disk's floor at that moment.
    raw_beside: (f64, f64),
    quota: (f64, f64),
    layers: (f64, f64),
    commit1: (f64, f64),
    scan_ms: f64,
    export_s: f64,
    export_mb: f64,
    export_heap_mb: f64,
    export_hwm_mb: f64,
    file_mb: f64,
}

const RAW: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");

/// One raw redb write transaction of one 300-byte row (the disk's commit floor); its time.
fn raw_commit(db: &redb::Database, key: u64) -> Duration {
    let t0 = Instant::now();
    let txn = db.begin_write().unwrap();
    txn.open_table(RAW)
        .unwrap()
        .insert(key, [7u8; 300].as_slice())
        .unwrap();
    txn.commit().unwrap();
    t0.elapsed()
}

/// CPU time of this process (all threads).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn baseline(dir: &std::path::Path) -> ((f64, f64), f64) {
    let db = redb::Database::create(dir.join("baseline.redb")).unwrap();
    let times: Vec<Duration> = (0..SAMPLES as u64).map(|i| raw_commit(&db, i)).collect();
    use sha2::Digest as _;
    let buf = vec![0x5au8; 64 << 20];
    let t0 = Instant::now();
    std::hint::black_box(sha2::Sha256::digest(&buf));
    let sha_mb_s = 64.0 / t0.elapsed().as_secs_f64();
    (pct(times), sha_mb_s)
}

fn main() {
    let n: u64 = std::env::var("HOLD_SCALE_RECORDS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let mut checkpoints: Vec<u64> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|c| *c < n)
        .collect();
    checkpoints.push(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (redb_commit, sha_mb_s) = baseline(dir.path());
    let raw_db = redb::Database::create(dir.path().join("beside.redb")).unwrap();

    let mut config = atcr::config::Config::default();
    config.server.data_dir = dir.path().join("data");
    config.hold.owner_did = OWNER.into();
    config.hold.public = true;
    config.hold.tiers = "deckhand=1PB".into();
    config.hold.default_tier = "deckhand".into();
    let pds = HoldPds::open(&config).unwrap();
    let resolver = atcr::atproto::identity::Resolver::new(
        atcr::atproto::identity::IdentityConfig {
            dns: false,
            ..Default::default()
        },
        atcr::atproto::xrpc::XrpcClient::default(),
    );
    let blobs = Arc::new(atcr::blob::fs::FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let svc = HoldService::new(
        pds.clone(),
        blobs,
        resolver,
        atcr::hold::Tiers::parse(&config.hold.tiers, &config.hold.default_tier).unwrap(),
        Default::default(),
    );

    let mut rows = Vec::new();
    let mut have = 0u64;
    let mut tid = Tid::now();
    // Pushes measured get manifest numbers past every generated one.
    let mut next_manifest = 1u64 << 40;
    let gen_started = Instant::now();
    for &cp in &checkpoints {
        while have < cp {
            let batch = (cp - have).min(10_000);
            let writes: Vec<Write> = (have..have + batch)
                .map(|i| {
                    let w = Write::Create {
                        collection: "io.atcr.hold.layer".into(),
                        rkey: tid.to_string(),
                        record: layer_record(i),
                    };
                    tid = tid.successor();
                    w
                })
                .collect();
            pds.write_blocking(|_| Ok(writes)).unwrap();
            have += batch;
            eprintln!(
                "generated {have} records ({:.0} s)",
                gen_started.elapsed().as_secs_f64()
            );
        }
        let mut row = Row {
            records: cp,
            ..Default::default()
        };
        // notifyManifest: a new manifest of 5 layers each time (2 of them new to the user).
        // Each one is followed by a raw one-row redb commit on the same disk, so the disk's
        // own latency at that moment stands beside it, and its process CPU time is taken
        // (what it costs apart from waiting for fsync).
        let mut times = Vec::new();
        let mut cpu_times = Vec::new();
        let mut raw_times = Vec::new();
        for k in 0..SAMPLES as u64 {
            let u = user(k * 7);
            let m = next_manifest;
            next_manifest += 1;
            let layers = (0..LAYERS_PER_MANIFEST)
                .map(|j| Descriptor {
                    digest: if j < 3 {
                        digest((k * 7 % USERS) * LAYERS_PER_MANIFEST + j)
                    } else {
                        digest(m * 10 + j)
                    },
                    size: 10_000_000,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                })
                .collect();
            let req = NotifyManifest {
                repository: "bench/app".into(),
                user_did: u.clone(),
                manifest_digest: digest(m).clone(),
                manifest: ManifestSummary {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    config: None,
                    layers,
                    manifests: Vec::new(),
                },
                tag: None,
                operation: None,
                manifest_uri: Some(format!("at://{u}/io.atcr.manifest/3z{m:011}")),
            };
            let c0 = process_cpu();
            let t0 = Instant::now();
            let out = rt
                .block_on(svc.record_push(req, "https://bench.example"))
                .unwrap();
            times.push(t0.elapsed());
            cpu_times.push(process_cpu() - c0);
            assert_eq!(out.layers_created, Some(LAYERS_PER_MANIFEST as usize));
            raw_times.push(raw_commit(&raw_db, k + cp * 1000));
        }
        row.notify = pct(times);
        row.notify_cpu = pct(cpu_times);
        row.raw_beside = pct(raw_times);
        // Quota check of a push of 5 layers.
        let mut times = Vec::new();
        for k in 0..SAMPLES as u64 {
            let layers: Vec<Descriptor> = (0..LAYERS_PER_MANIFEST)
                .map(|j| Descriptor {
                    digest: digest(k * 1000 + j),
                    size: 1000,
                    media_type: String::new(),
                })
                .collect();
            let t0 = Instant::now();
            rt.block_on(svc.check_quota(&user(k * 13), &layers))
                .unwrap();
            times.push(t0.elapsed());
        }
        row.quota = pct(times);
        // getLayersForManifest of generated manifests.
        let manifests = cp / LAYERS_PER_MANIFEST;
        let mut times = Vec::new();
        for k in 0..SAMPLES as u64 {
            let m = (k * 104_729) % manifests;
            let t0 = Instant::now();
            let v = rt
                .block_on(svc.layers_for_manifest(Some(OWNER), &manifest_uri(m)))
                .unwrap();
            times.push(t0.elapsed());
            assert_eq!(
                v["layers"].as_array().map(Vec::len),
                Some(LAYERS_PER_MANIFEST as usize)
            );
        }
        row.layers = pct(times);
        // One record, one commit.
        let mut times = Vec::new();
        for k in 0..SAMPLES as u64 {
            // Records of manifests past the generated ones (getLayersForManifest counts 5).
            let rec = layer_record((1 << 41) + cp * 1000 + k);
            let rkey = tid.to_string();
            tid = tid.successor();
            let t0 = Instant::now();
            pds.write_blocking(|_| {
                Ok(vec![Write::Create {
                    collection: "io.atcr.hold.layer".into(),
                    rkey,
                    record: rec,
                }])
            })
            .unwrap();
            times.push(t0.elapsed());
        }
        row.commit1 = pct(times);
        // What each quota check / notifyManifest paid before the layer index.
        let t0 = Instant::now();
        let target = user(42);
        let mine = rt
            .block_on(pds.read(move |repo| {
                atcr::pds::collection_where(repo, "io.atcr.hold.layer", |v| {
                    v["userDid"] == target.as_str()
                })
            }))
            .unwrap();
        row.scan_ms = t0.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(mine);
        // CAR export.
        let hwm_reset = reset_hwm();
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut sink = Counter(0);
        let written = pds.write_car_blocking(&mut sink).unwrap();
        row.export_s = t0.elapsed().as_secs_f64();
        row.export_mb = written as f64 / 1e6;
        row.export_heap_mb = (PEAK.load(Ordering::Relaxed) - base) as f64 / (1 << 20) as f64;
        row.export_hwm_mb = if hwm_reset {
            vm_hwm_kib() as f64 / 1024.0
        } else {
            f64::NAN
        };
        row.file_mb = std::fs::metadata(config.server.data_dir.join("hold.redb"))
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0);
        eprintln!(
            "checkpoint {cp}: notify p99 {:.2} ms, export {:.1} s",
            row.notify.1, row.export_s
        );
        rows.push(row);
    }

    println!();
    println!(
        "hold-scale: {} users, {} layers/manifest, {} samples per latency; machine: {} CPUs",
        USERS,
        LAYERS_PER_MANIFEST,
        SAMPLES,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "baseline: raw redb 1-row write txn p50/p99 {:.2}/{:.2} ms (same disk, default durability); raw SHA-256 {:.0} MB/s",
        redb_commit.0, redb_commit.1, sha_mb_s
    );
    println!(
        "{:>9} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>11} | {:>20} | {:>17} | {:>8}",
        "records",
        "notify p50/p99",
        "its CPU p50/p99",
        "raw commit b/s",
        "quota p50/p99",
        "layers4m p50/99",
        "commit1 p50/p99",
        "old scan ms",
        "CAR export s (MB)",
        "exp heap/HWM MiB",
        "redb MB"
    );
    for r in &rows {
        println!(
            "{:>9} | {:>7.2}/{:<7.2} | {:>7.2}/{:<7.2} | {:>7.2}/{:<7.2} | {:>7.3}/{:<7.3} | {:>7.3}/{:<7.3} | {:>7.2}/{:<7.2} | {:>11.0} | {:>9.1} ({:>7.1}) | {:>8.1}/{:<8.0} | {:>8.0}",
            r.records,
            r.notify.0,
            r.notify.1,
            r.notify_cpu.0,
            r.notify_cpu.1,
            r.raw_beside.0,
            r.raw_beside.1,
            r.quota.0,
            r.quota.1,
            r.layers.0,
            r.layers.1,
            r.commit1.0,
            r.commit1.1,
            r.scan_ms,
            r.export_s,
            r.export_mb,
            r.export_heap_mb,
            r.export_hwm_mb,
            r.file_mb
        );
    }
    println!("latencies in ms; 'its CPU': process CPU time during each notifyManifest (all but the wait for the disk); 'raw commit b/s': a raw one-row redb commit right after each notify, same disk (the floor at that moment); 'old scan': one walk of the layer collection (what every quota check, notifyManifest and getLayersForManifest did before the layer index); exp heap: peak live heap above the export's start (counting allocator, incl. redb's cache); HWM: VmHWM of the process after a clear_refs reset");
}
