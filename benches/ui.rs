//! Server time of the repository page (target: under 5 ms on this machine): a temp index
//! populated through the index's own ingest path with one user, 40 repositories and 60
//! tagged manifests of 5 layers in the benchmarked repository (50 tags shown per page),
//! then the whole page handler (index queries + askama rendering) per iteration.
//! `cargo bench --bench ui`.

use std::hint::black_box;

use atcr::config::Config;
use atcr::index::apply::RecordChange;
use atcr::web::catalog::repo_or_manifest;
use atcr::web::Ctx;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const HANDLE: &str = "alice.test";

fn digest(seed: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(seed.as_bytes()))
    )
}

fn manifest_record(repo: &str, i: usize) -> (String, serde_json::Value) {
    let d = digest(&format!("{repo}-{i}"));
    let layers: Vec<_> = (0..5)
        .map(|l| {
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "size": 1_000_000 * (l + 1), "digest": digest(&format!("{repo}-{i}-layer{l}"))})
        })
        .collect();
    let rec = json!({
        "$type": "io.atcr.manifest",
        "repository": repo,
        "digest": d,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "createdAt": "2026-11-01T10:00:00Z",
        "holdDid": "did:web:localhost",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1500,
                   "digest": digest(&format!("{repo}-{i}-config"))},
        "layers": layers,
        "annotations": {"org.opencontainers.image.description": "A benchmark image"},
    });
    (d, rec)
}

fn populate(rt: &tokio::runtime::Runtime, state: &atcr::app::AppState) {
    rt.block_on(async {
        let ix = &state.index;
        ix.set_user_identity(DID, Some(HANDLE), Some("http://localhost:2583"))
            .await
            .unwrap();
        for r in 0..40 {
            let repo = if r == 0 {
                "app".to_string()
            } else {
                format!("repo{r}")
            };
            let n = if r == 0 { 60 } else { 2 };
            let mut changes = Vec::new();
            for i in 0..n {
                let (d, rec) = manifest_record(&repo, i);
                let hex = d.trim_start_matches("sha256:").to_string();
                changes.push(RecordChange::Upsert {
                    collection: "io.atcr.manifest".into(),
                    rkey: hex.clone(),
                    value: rec,
                });
                changes.push(RecordChange::Upsert {
                    collection: "io.atcr.tag".into(),
                    rkey: format!("{repo}:v{i}"),
                    value: json!({
                        "$type": "io.atcr.tag", "repository": repo, "tag": format!("v{i}"),
                        "manifest": format!("at://{DID}/io.atcr.manifest/{hex}"),
                        "updatedAt": format!("2026-11-01T10:{:02}:00Z", i % 60),
                    }),
                });
            }
            ix.apply_records(DID, &changes, None).await.unwrap();
        }
    });
}

fn repository_page(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_data_dir(dir.path());
    let state = rt.block_on(atcr::app::build_state(config)).unwrap();
    populate(&rt, &state);
    let ctx = Ctx::anonymous("registry.example.com");
    // One warm-up request checks the page really is the populated repository.
    let resp = rt
        .block_on(repo_or_manifest(&state, &ctx, HANDLE, "app", 0))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut g = c.benchmark_group("ui");
    g.sample_size(50);
    g.bench_function("repository_page", |b| {
        b.iter(|| {
            let resp = rt
                .block_on(repo_or_manifest(&state, &ctx, HANDLE, black_box("app"), 0))
                .unwrap();
            assert_eq!(resp.status(), 200);
            black_box(resp)
        })
    });
    g.finish();
}

criterion_group!(benches, repository_page);
criterion_main!(benches);
