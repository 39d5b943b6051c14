//! The registry at scale (issue 17): `REGISTRY_SCALE_REPOS` (default 100000) repositories
//! pushed through the registry's own domain functions (`Registry::upload_monolithic` of a
//! tiny per-repository config, `blob_mount` of one shared layer, `manifest_put` with a tag)
//! into a temp local blob store and `registry.redb`, plus one repository with
//! `REGISTRY_SCALE_TAGS` (default 10000) tags. Then `/v2/_catalog` and tag-list paging
//! (`Registry::catalog` / `Registry::tags`, what the handlers call, plus the JSON body),
//! walking the whole catalog, and the GC's mark (`referenced_digests`) and dry-run sweep
//! (mark + blob listing) with their time and peak memory. Prints one table with this
//! machine's own limits (a raw redb point read, a raw redb range scan).
//!
//! `cargo bench --bench registry-scale`.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atcr::blob::fs::FsBlobStore;
use atcr::blob::{BlobStore, ChunkStream};
use atcr::oci::types::{Digest, Name, Reference};
use atcr::registry::store::MetaStore;
use atcr::registry::{Limits, Registry, Uploader};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(d)
}

fn repo_name(i: usize) -> String {
    format!("team{:03}/app-{i:06}", i % 1000)
}

fn body(b: Vec<u8>) -> ChunkStream {
    Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(
        bytes::Bytes::from(b),
    )]))
}

fn manifest(config: &(Digest, usize), layer: &(Digest, usize)) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.0.to_string(), "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer.0.to_string(), "size": layer.1}],
    }))
    .unwrap()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    n: usize,
}

fn percentiles(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        n: v.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Row {
    what: String,
    figure: String,
    limit: String,
}

fn row(rows: &mut Vec<Row>, what: &str, figure: String, limit: &str) {
    eprintln!("  {what}: {figure}");
    rows.push(Row {
        what: what.into(),
        figure,
        limit: limit.into(),
    });
}

fn main() {
    let repos = env_usize("REGISTRY_SCALE_REPOS", 100_000).max(100);
    let tag_count = env_usize("REGISTRY_SCALE_TAGS", 10_000).max(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(tmp.path().join("blobs")).unwrap());
    let store = MetaStore::open(&tmp.path().join("registry.redb")).unwrap();
    let registry = Registry::new(blobs.clone(), store.clone(), Limits::default());
    let who = Uploader {
        identity: "bench".into(),
        address: None,
    };
    let mut rows = Vec::new();
    eprintln!(
        "registry-scale: {repos} repositories in {}",
        tmp.path().display()
    );

    // --- Generation through the push path ---------------------------------------------
    let upload = |name: &Name, bytes: Vec<u8>| {
        let d = Digest::sha256_of(&bytes);
        let len = bytes.len();
        let (r, d2) = (registry.clone(), d.clone());
        let (name, who) = (name.clone(), &who);
        async move {
            r.upload_monolithic(&name, &d2, Some(len as u64), body(bytes), who)
                .await
                .unwrap();
            (d, len)
        }
    };
    let seed: Name = "seed/base".parse().unwrap();
    let layer = rt.block_on(upload(&seed, vec![7u8; 1024]));
    let start = Instant::now();
    let mut last_report = Instant::now();
    // A few pushes in flight, as concurrent clients would have.
    const IN_FLIGHT: usize = 4;
    for chunk in (0..repos).collect::<Vec<_>>().chunks(IN_FLIGHT) {
        rt.block_on(async {
            let pushes = chunk.iter().map(|&i| {
                let name: Name = repo_name(i).parse().unwrap();
                let (registry, layer, seed) = (&registry, &layer, &seed);
                let upload = &upload;
                async move {
                    let config = upload(
                        &name,
                        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{i}}}")
                            .into_bytes(),
                    )
                    .await;
                    assert!(registry
                        .blob_mount(&name, &layer.0, Some(seed))
                        .await
                        .unwrap());
                    registry
                        .manifest_put(
                            &name,
                            &Reference::Tag("latest".parse().unwrap()),
                            "application/vnd.oci.image.manifest.v1+json",
                            manifest(&config, layer),
                        )
                        .await
                        .unwrap();
                }
            });
            futures_util::future::join_all(pushes).await;
        });
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let done = chunk[chunk.len() - 1] + 1;
            eprintln!(
                "  pushed {done}/{repos} repositories, {:.0}/s",
                done as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let took = start.elapsed();
    row(
        &mut rows,
        "generation: pushes (config upload + layer mount + manifest put)",
        format!(
            "{:.0} repositories/s ({repos} in {:.0} s)",
            repos as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        ),
        "each push is ~4 durable redb commits",
    );
    // One repository with many tags (one manifest, tagged tag_count times).
    let big: Name = "big/tags".parse().unwrap();
    rt.block_on(async {
        let config = upload(&big, b"{\"big\":true}".to_vec()).await;
        assert!(registry
            .blob_mount(&big, &layer.0, Some(&seed))
            .await
            .unwrap());
        let m = manifest(&config, &layer);
        for t in 0..tag_count {
            registry
                .manifest_put(
                    &big,
                    &Reference::Tag(format!("v{t:05}").parse().unwrap()),
                    "application/vnd.oci.image.manifest.v1+json",
                    m.clone(),
                )
                .await
                .unwrap();
        }
    });
    let redb_size = std::fs::metadata(tmp.path().join("registry.redb")).map_or(0, |m| m.len());

    // --- Machine baselines: raw redb reads --------------------------------------------
    let point = {
        let mut v = Vec::new();
        for k in 0..2000usize {
            let name = repo_name((k * 7919) % repos);
            let t = Instant::now();
            black_box(store.repo_exists(&name).unwrap());
            v.push(t.elapsed());
        }
        percentiles(v)
    };
    let raw_scan = {
        let t = Instant::now();
        let all = store.list_repos(None, usize::MAX).unwrap();
        assert_eq!(all.len(), repos + 2);
        t.elapsed()
    };
    let point_limit = format!(
        "raw redb point read p50 {:.1} us",
        point.p50.as_secs_f64() * 1e6
    );
    let scan_limit = format!("raw redb scan of all {} names {}", repos + 2, ms(raw_scan));

    // --- Catalog paging ----------------------------------------------------------------
    let all = store.list_repos(None, usize::MAX).unwrap();
    for n in [100usize, 1000] {
        let mut v = Vec::new();
        for k in 0..300usize {
            // Pages from everywhere in the keyspace (the first, and after random names).
            let last = (k > 0).then(|| all[(k * 7919) % all.len()].clone());
            let t = Instant::now();
            let (names, _more) = rt.block_on(registry.catalog(Some(n), last)).unwrap();
            black_box(serde_json::to_vec(&serde_json::json!({ "repositories": names })).unwrap());
            v.push(t.elapsed());
        }
        let s = percentiles(v);
        row(
            &mut rows,
            &format!("/v2/_catalog page n={n}"),
            format!("p50 {} p99 {} (n={})", ms(s.p50), ms(s.p99), s.n),
            &point_limit,
        );
    }
    {
        let t = Instant::now();
        let (mut last, mut seen, mut pages) = (None, 0usize, 0usize);
        loop {
            let (names, more) = rt.block_on(registry.catalog(Some(1000), last)).unwrap();
            seen += names.len();
            pages += 1;
            last = names.last().cloned();
            if !more {
                break;
            }
        }
        assert_eq!(seen, repos + 2);
        row(
            &mut rows,
            "/v2/_catalog walk of everything, n=1000",
            format!("{} ({pages} pages)", ms(t.elapsed())),
            &scan_limit,
        );
    }

    // --- Tag-list paging -----------------------------------------------------------------
    {
        let (all_tags, _) = rt.block_on(registry.tags(&big, None, None)).unwrap();
        assert_eq!(all_tags.len(), tag_count);
        let mut v = Vec::new();
        for k in 0..300usize {
            let last = (k > 0).then(|| all_tags[(k * 7919) % all_tags.len()].clone());
            let t = Instant::now();
            let (tags, _) = rt.block_on(registry.tags(&big, Some(100), last)).unwrap();
            black_box(serde_json::to_vec(&serde_json::json!({ "tags": tags })).unwrap());
            v.push(t.elapsed());
        }
        let s = percentiles(v);
        row(
            &mut rows,
            &format!("tags/list page n=100 ({tag_count} tags)"),
            format!("p50 {} p99 {} (n={})", ms(s.p50), ms(s.p99), s.n),
            &point_limit,
        );
        let t = Instant::now();
        let (mut last, mut seen) = (None, 0usize);
        loop {
            let (tags, more) = rt.block_on(registry.tags(&big, Some(1000), last)).unwrap();
            seen += tags.len();
            last = tags.last().cloned();
            if !more {
                break;
            }
        }
        assert_eq!(seen, tag_count);
        row(
            &mut rows,
            "tags/list walk of everything, n=1000",
            ms(t.elapsed()),
            "",
        );
    }

    // --- GC --------------------------------------------------------------------------------
    // Peak memory: VmHWM reset (`5` > /proc/self/clear_refs) before each step, then VmHWM
    // minus the VmRSS at the start of the step.
    let reset_peak = || {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        status_kb("VmRSS:")
    };
    let rss0 = reset_peak();
    let t = Instant::now();
    let marked = rt
        .block_on(store.run(|s| s.referenced_digests()))
        .unwrap()
        .len();
    let mark = t.elapsed();
    let mark_peak = status_kb("VmHWM:").saturating_sub(rss0);
    row(
        &mut rows,
        "GC mark (referenced digests)",
        format!(
            "{} for {marked} digests, peak +{} MB",
            ms(mark),
            mark_peak / 1024
        ),
        &scan_limit,
    );
    let rss0 = reset_peak();
    let t = Instant::now();
    let swept = rt
        .block_on(registry.gc_keeping(true, &HashSet::new(), None))
        .unwrap();
    let sweep = t.elapsed();
    let sweep_peak = status_kb("VmHWM:").saturating_sub(rss0);
    row(
        &mut rows,
        "GC dry run (mark + blob listing)",
        format!(
            "{} ({} to sweep), peak +{} MB",
            ms(sweep),
            swept.len(),
            sweep_peak / 1024
        ),
        "",
    );

    println!();
    println!(
        "registry-scale: {repos} repositories + 1 with {tag_count} tags; registry.redb {} MB; {} cores; peak memory = VmHWM after a clear_refs reset, minus VmRSS before",
        redb_size / 1_000_000,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.figure.len()).max().unwrap_or(0);
    println!("| {:w0$} | {:w1$} | machine |", "measure", "figure");
    println!("|{}|{}|---|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for r in &rows {
        println!("| {:w0$} | {:w1$} | {} |", r.what, r.figure, r.limit);
    }
}
