//! The index at scale (issue 17): a temp libSQL index generated through the index's own
//! apply path (`Index::apply_records`, one transaction per user, as the backfill applies a
//! repository), then latency percentiles of search and of the home / repository / user
//! pages (the real handlers: index queries + askama), and the firehose ingest rate with
//! real signed commits (parse the frame, verify the commit signature and MST ops, apply in
//! one transaction with the cursor). Prints one table, with this machine's own limits.
//!
//! `cargo bench --bench index-scale`; `INDEX_SCALE_REPOS` (default 100000) repositories of
//! 10 manifests and 10 tags each, users of 10 repositories, one user with REPOS/100
//! repositories and one repository with 1000 tags; `INDEX_SCALE_EVENTS` (default 20000)
//! firehose commits. `INDEX_SCALE_DIR` keeps the generated index there (reused when it
//! exists: generation of 100k repositories takes minutes).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atcr::atproto::repo::{dagcbor, datamodel, KeyAlgorithm, MemoryBlockstore, Repo, SigningKey};
use atcr::atproto::repo::{PublicKey, Write};
use atcr::config::Config;
use atcr::index::apply::RecordChange;
use atcr::index::firehose::{ingest, parse_frame, verify_commit, Frame, SigningKeys};
use atcr::index::Index;
use atcr::web::Ctx;
use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "nginx",
    "redis",
    "postgres",
    "python",
    "node",
    "golang",
    "alpine",
    "ubuntu",
    "debian",
    "mysql",
    "mongo",
    "rabbitmq",
    "kafka",
    "grafana",
    "prometheus",
    "traefik",
    "caddy",
    "haproxy",
    "vault",
    "consul",
];
const ADJ: &[&str] = &[
    "small",
    "fast",
    "secure",
    "minimal",
    "hardened",
    "distroless",
    "debug",
    "slim",
];
const NOUN: &[&str] = &[
    "webserver",
    "database",
    "cache",
    "queue",
    "proxy",
    "runtime",
    "toolbox",
    "gateway",
    "scheduler",
    "exporter",
    "builder",
];
const TAGS_PER_REPO: usize = 10;
const BIG_REPO_TAGS: usize = 1000;

/// The repo keys, handed to the consumer as its resolver would (cached DID documents).
struct BenchKeys(std::collections::HashMap<String, PublicKey>);

impl SigningKeys for BenchKeys {
    fn key<'a>(
        &'a self,
        did: &'a str,
        _fresh: bool,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<PublicKey>, String>> {
        Box::pin(std::future::ready(Ok(self.0.get(did).cloned())))
    }
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(d)
}

fn did_of(u: usize) -> String {
    format!("did:plc:bench{u:019}")
}
fn handle_of(u: usize) -> String {
    if u == 0 {
        "big.test".into()
    } else {
        format!("user{u}.test")
    }
}
fn repo_name(i: usize) -> String {
    format!("{}-{i}", WORDS[i % WORDS.len()])
}
fn digest_hex(seed: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

fn manifest(repo: &str, i: usize, j: usize) -> (String, Value) {
    let hex = digest_hex(&format!("{repo}/{j}"));
    let desc = format!(
        "A {} {} image",
        ADJ[(i / 3 + j) % ADJ.len()],
        NOUN[(i * 7 + j) % NOUN.len()]
    );
    let v = json!({
        "$type": "io.atcr.manifest", "repository": repo, "digest": format!("sha256:{hex}"),
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1500,
                   "digest": format!("sha256:{}", digest_hex(&format!("{repo}/{j}/c")))},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 3_000_000,
             "digest": format!("sha256:{}", digest_hex(&format!("{repo}/{j}/l0")))},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1_000_000,
             "digest": format!("sha256:{}", digest_hex(&format!("{repo}/{j}/l1")))},
        ],
        "annotations": {"org.opencontainers.image.description": desc},
        "createdAt": format!("2026-{:02}-{:02}T10:{:02}:00Z", 1 + i % 12, 1 + j % 28, i % 60),
    });
    (hex, v)
}

fn tag(did: &str, repo: &str, tag: &str, mkey: &str, at: &str) -> Value {
    json!({"$type": "io.atcr.tag", "repository": repo, "tag": tag,
           "manifest": format!("at://{did}/io.atcr.manifest/{mkey}"), "updatedAt": at})
}

/// All records of one repository, manifests first (as the backfill orders them).
fn repo_changes(did: &str, i: usize, tags: usize) -> Vec<RecordChange> {
    let repo = repo_name(i);
    let mut out = Vec::with_capacity(TAGS_PER_REPO + tags);
    let mut keys = Vec::new();
    for j in 0..TAGS_PER_REPO {
        let (hex, v) = manifest(&repo, i, j);
        out.push(RecordChange::Upsert {
            collection: "io.atcr.manifest".into(),
            rkey: hex.clone(),
            value: v,
        });
        keys.push(hex);
    }
    for t in 0..tags {
        // Seconds from the repository number: recent pushes are spread over the whole set.
        let at = format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            1 + (i / 100_000) % 12,
            1 + (i / 3600) % 28,
            (i / 60) % 24,
            i % 60,
            t % 60
        );
        let name = format!("v{t}");
        out.push(RecordChange::Upsert {
            collection: "io.atcr.tag".into(),
            rkey: format!("{repo}:{name}"),
            value: tag(did, &repo, &name, &keys[t % keys.len()], &at),
        });
    }
    out
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

/// Up to `iters` runs of `f` (stops after `budget`), after 3 warm-up runs.
fn sample(iters: usize, budget: Duration, mut f: impl FnMut()) -> Stats {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut v = Vec::with_capacity(iters);
    while v.len() < iters && (v.len() < 20 || start.elapsed() < budget) {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    percentiles(v)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    // Nothing listens there: no identity lookup leaves the machine.
    c.identity.plc_url = "http://127.0.0.1:9".into();
    c.auth.mode = "atproto".into();
    c
}

struct Row {
    what: String,
    figure: String,
    goal: String,
    limit: String,
}

fn row(rows: &mut Vec<Row>, what: &str, figure: String, goal: &str, limit: &str) {
    eprintln!("  {what}: {figure}");
    rows.push(Row {
        what: what.into(),
        figure,
        goal: goal.into(),
        limit: limit.into(),
    });
}

fn page_row(rows: &mut Vec<Row>, what: &str, s: &Stats, goal_ms: f64, limit: &str) {
    let ok = if s.p99.as_secs_f64() * 1000.0 < goal_ms {
        "met"
    } else {
        "MISSED"
    };
    row(
        rows,
        what,
        format!("p50 {} p99 {} (n={})", ms(s.p50), ms(s.p99), s.n),
        &format!("p99 < {goal_ms} ms: {ok}"),
        limit,
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let repos = env_usize("INDEX_SCALE_REPOS", 100_000).max(200);
    let events = env_usize("INDEX_SCALE_EVENTS", 20_000).max(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_tmp, dir): (Option<tempfile::TempDir>, PathBuf) = match std::env::var("INDEX_SCALE_DIR") {
        Ok(d) => (None, PathBuf::from(d)),
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let mut rows = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("index-scale: {repos} repositories in {}", dir.display());

    // --- Generation = the backfill's apply path -------------------------------------
    let big_user_repos = (repos / 100).max(10);
    let users = 1 + (repos - big_user_repos).div_ceil(10);
    let generated = dir.join("index.db").exists();
    let cfg = config(&dir);
    if !generated {
        let ix = rt.block_on(Index::open_beside_server(&cfg)).unwrap();
        let start = Instant::now();
        let mut records = 0usize;
        let mut last_report = Instant::now();
        let mut next_repo = 0usize;
        for u in 0..users {
            let did = did_of(u);
            let n = if u == 0 { big_user_repos } else { 10 };
            let mut changes = Vec::new();
            for i in next_repo..(next_repo + n).min(repos) {
                let tags = if i == 0 { BIG_REPO_TAGS } else { TAGS_PER_REPO };
                changes.extend(repo_changes(&did, i, tags));
            }
            next_repo += n;
            // Every user stars one repository of someone else (home page: popular).
            let star_of = (u * 7919 + 13) % repos;
            let owner = if star_of < big_user_repos {
                0
            } else {
                1 + (star_of - big_user_repos) / 10
            };
            changes.push(RecordChange::Upsert {
                collection: "io.atcr.sailor.star".into(),
                rkey: format!("3star{u}"),
                value: json!({"$type": "io.atcr.sailor.star", "createdAt": "2026-01-01T00:00:00Z",
                    "subject": {"did": did_of(owner), "repository": repo_name(star_of)}}),
            });
            records += changes.len();
            rt.block_on(async {
                // The identity first: the user row exists, so no handle lookup is spawned.
                ix.set_user_identity(&did, Some(&handle_of(u)), Some("http://127.0.0.1:9"))
                    .await
                    .unwrap();
                ix.apply_records(&did, &changes, None).await.unwrap();
            });
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "  generated {next_repo}/{repos} repositories, {records} records, {:.0} records/s",
                    records as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
        let took = start.elapsed();
        rt.block_on(ix.close());
        drop(ix);
        row(
            &mut rows,
            "backfill apply (generation)",
            format!(
                "{:.0} records/s ({records} records in {:.0} s)",
                records as f64 / took.as_secs_f64(),
                took.as_secs_f64()
            ),
            "rate (no goal)",
            "one writer; the PDS listRecords round trips are not in it",
        );
    } else {
        eprintln!("  reusing the generated index");
    }
    let db_size = std::fs::metadata(dir.join("index.db")).map_or(0, |m| m.len());

    // --- Machine baselines -----------------------------------------------------------
    let point_select = rt.block_on(async {
        let db = libsql::Builder::new_local(dir.join("index.db"))
            .build()
            .await
            .unwrap();
        let c = db.connect().unwrap();
        let mut v = Vec::new();
        for k in 0..2000i64 {
            let t = Instant::now();
            let mut r = c
                .query(
                    "SELECT name FROM repositories WHERE rowid = ?1",
                    [1 + (k * 7919) % repos as i64],
                )
                .await
                .unwrap();
            black_box(r.next().await.unwrap());
            v.push(t.elapsed());
        }
        percentiles(v)
    });
    let verify_rate = |alg: KeyAlgorithm| {
        let key = SigningKey::from_bytes(alg, &[7u8; 32]).unwrap();
        let pk: PublicKey = key.public_key();
        let msg = [1u8; 200];
        let sig = key.sign(&msg);
        let t = Instant::now();
        let n = 2000;
        for _ in 0..n {
            pk.verify(black_box(&msg), &sig).unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let (p256_rate, k256_rate) = (
        verify_rate(KeyAlgorithm::P256),
        verify_rate(KeyAlgorithm::K256),
    );
    let point = format!(
        "raw SQLite point SELECT p50 {:.1} us",
        point_select.p50.as_secs_f64() * 1e6
    );

    // --- Pages and search through the real handlers ----------------------------------
    // (`INDEX_SCALE_ONLY=firehose` skips them.)
    if std::env::var("INDEX_SCALE_ONLY").as_deref() != Ok("firehose") {
        let state = rt.block_on(atcr::app::build_state(cfg.clone())).unwrap();
        let ctx = Ctx::anonymous("registry.example.com");
        let budget = Duration::from_secs(20);
        let status = |r: atcr::web::WebResult| r.map(|r| r.status().as_u16()).unwrap_or(0);
        let home = sample(200, budget, || {
            let s = rt.block_on(atcr::web::catalog::home(&state, &ctx));
            assert_eq!(status(s), 200);
        });
        page_row(&mut rows, "home page", &home, 10.0, &point);
        let big_repo = repo_name(0);
        let repo_page = sample(200, budget, || {
            let s = rt.block_on(atcr::web::catalog::repo_or_manifest(
                &state, &ctx, "big.test", &big_repo, 0,
            ));
            assert_eq!(status(s), 200);
        });
        page_row(
            &mut rows,
            &format!("repository page ({BIG_REPO_TAGS} tags)"),
            &repo_page,
            10.0,
            &point,
        );
        let user_page = sample(200, budget, || {
            let s = rt.block_on(atcr::web::catalog::user(&state, &ctx, "big.test", 1));
            assert_eq!(status(s), 200);
        });
        page_row(
            &mut rows,
            &format!(
                "user page, first {} of {big_user_repos} repositories",
                atcr::web::catalog::USER_PAGE
            ),
            &user_page,
            10.0,
            &point,
        );
        let searches = [
            ("search: name prefix \"redi\"", "redi".to_string()),
            (
                "search: description word \"database\"",
                "database".to_string(),
            ),
            (
                "search: name + number",
                format!("{} {}", WORDS[(repos / 2) % WORDS.len()], repos / 2),
            ),
            ("search: miss", "zzqxj".to_string()),
            ("search: empty (all, newest first)", String::new()),
        ];
        for (what, q) in searches {
            let uri = format!(
                "/search?q={}",
                percent_encoding::utf8_percent_encode(&q, percent_encoding::NON_ALPHANUMERIC)
            );
            let req = http::Request::builder().uri(uri).body(()).unwrap();
            let s = sample(200, budget, || {
                let s = rt.block_on(atcr::web::catalog::search(&state, &ctx, &req));
                assert_eq!(status(s), 200);
            });
            page_row(&mut rows, what, &s, 20.0, &point);
        }
        rt.block_on(state.index.close());
        drop(state);
    }

    // --- Firehose ingest: real signed commits ----------------------------------------
    // DIDs of their own (new users), each with a secp256k1 repo key (the common key of
    // network accounts); every commit creates one record (manifest, then its tag).
    let dids = 200usize;
    let mut accounts: Vec<(String, Repo<MemoryBlockstore>, PublicKey)> = (0..dids)
        .map(|d| {
            let did = format!("did:plc:fire{d:020}");
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(d as u64 + 1).to_be_bytes());
            seed[31] = 1;
            let key = SigningKey::from_bytes(KeyAlgorithm::K256, &seed).unwrap();
            let pk = key.public_key();
            let (repo, _) = Repo::create(&did, key, MemoryBlockstore::new()).unwrap();
            (did, repo, pk)
        })
        .collect();
    eprintln!("  signing {events} firehose commits");
    let mut frames = Vec::with_capacity(events);
    for e in 0..events {
        let a = e % dids;
        let k = e / dids;
        let (did, repo, _) = &mut accounts[a];
        let rname = format!("fire-{a}");
        let (hex, mval) = manifest(&rname, a, k / 2);
        let (collection, rkey, value) = if k % 2 == 0 {
            ("io.atcr.manifest", hex, mval)
        } else {
            let t = format!("t{}", k / 2);
            (
                "io.atcr.tag",
                format!("{rname}:{t}"),
                tag(did, &rname, &t, &hex, "2026-12-01T00:00:00Z"),
            )
        };
        let ipld = datamodel::record_from_json(&value).unwrap();
        let r = repo
            .apply_writes(&[Write::Create {
                collection: collection.into(),
                rkey,
                record: bytes::Bytes::from(dagcbor::encode(&ipld).unwrap()),
            }])
            .unwrap();
        let bytes =
            atcr::pds::encode_commit_frame(e as u64 + 1, did, &r, "2026-12-01T00:00:00Z").unwrap();
        frames.push((a, bytes));
    }
    let keys: Vec<PublicKey> = accounts.iter().map(|a| a.2.clone()).collect();
    let known = |ix: &Index| {
        // Users known (as the consumer's resolver would have them cached).
        rt.block_on(async {
            for (did, _, _) in &accounts {
                ix.set_user_identity(did, Some(&format!("{did}.test")), None)
                    .await
                    .unwrap();
            }
        })
    };

    // 1. The consumer itself (`firehose::ingest`, as on a websocket): a reader task parses
    //    and verifies on every core ahead of the writer, which applies what is waiting in
    //    one transaction per batch with the cursor. Into a copy of the generated index (the
    //    index at scale, not an empty one).
    for sub in ["firehose", "firehose-grouped", "firehose-single"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let fire_dir = dir.join("firehose");
    std::fs::create_dir_all(&fire_dir).unwrap();
    for name in ["index.db", "index.db-wal"] {
        if dir.join(name).exists() {
            std::fs::copy(dir.join(name), fire_dir.join(name)).unwrap();
            // On disk before the clock starts, as an index at rest is: otherwise the first
            // checkpoint's fsync writes back the whole 2.7 GB copy and is counted as ingest.
            std::fs::File::open(fire_dir.join(name))
                .unwrap()
                .sync_all()
                .unwrap();
        }
    }
    let fire_cfg = config(&fire_dir);
    let ix = rt.block_on(Index::open_beside_server(&fire_cfg)).unwrap();
    known(&ix);
    let bench_keys = Arc::new(BenchKeys(
        accounts
            .iter()
            .map(|(did, _, pk)| (did.clone(), pk.clone()))
            .collect(),
    ));
    let messages: Vec<Result<bytes::Bytes, String>> = frames
        .iter()
        .map(|(_, b)| Ok(bytes::Bytes::from(b.clone())))
        .collect();
    let start = Instant::now();
    rt.block_on(ingest(
        &ix,
        "bench",
        futures_util::stream::iter(messages),
        bench_keys,
        1 << 20,
    ))
    .unwrap();
    let took = start.elapsed();
    assert_eq!(
        rt.block_on(ix.ingest_cursor("bench")).unwrap(),
        Some(events as i64),
        "the cursor is the last frame's"
    );
    let rate = events as f64 / took.as_secs_f64();
    rt.block_on(ix.close());
    row(
        &mut rows,
        "firehose ingest into this index (the consumer: parse + verify + apply)",
        format!("{rate:.0} events/s ({events} commits, k256)"),
        &format!(
            ">= 10000 events/s: {}",
            if rate >= 10_000.0 { "met" } else { "MISSED" }
        ),
        &format!("raw verify k256 {k256_rate:.0}/s, p256 {p256_rate:.0}/s per core"),
    );

    // 2. Its parts apart: parse + verify on one core ...
    let start = Instant::now();
    let mut verified = Vec::with_capacity(events);
    for (a, bytes) in &frames {
        let Frame::Commit(c) = parse_frame(bytes, 1 << 20).unwrap() else {
            panic!("not a commit")
        };
        let v = verify_commit(&c, &keys[*a], c.blocks.len().max(1)).unwrap();
        verified.push((c.seq, v));
    }
    let verify_only = events as f64 / start.elapsed().as_secs_f64();
    row(
        &mut rows,
        "  parse + verify alone, one core",
        format!("{verify_only:.0} events/s"),
        "",
        "",
    );
    // ... the writer alone, in the consumer's batches (an empty index) ...
    let grouped_cfg = config(&dir.join("firehose-grouped"));
    let gx = rt
        .block_on(Index::open_beside_server(&grouped_cfg))
        .unwrap();
    known(&gx);
    let start = Instant::now();
    for chunk in verified.chunks(512) {
        let batch: Vec<(&str, &[RecordChange])> = chunk
            .iter()
            .map(|(_, v)| (v.did.as_str(), v.changes.as_slice()))
            .collect();
        let seq = chunk.last().unwrap().0;
        rt.block_on(gx.apply_batch(&batch, Some(("bench", seq))))
            .unwrap();
    }
    let grouped = events as f64 / start.elapsed().as_secs_f64();
    rt.block_on(gx.close());
    row(
        &mut rows,
        "  apply alone, 512 commits per tx (empty index)",
        format!("{grouped:.0} events/s"),
        "",
        "",
    );
    // ... and one transaction per commit (the consumer before batching).
    let single_cfg = config(&dir.join("firehose-single"));
    let sx = rt.block_on(Index::open_beside_server(&single_cfg)).unwrap();
    known(&sx);
    let start = Instant::now();
    for (seq, v) in verified.iter().take(events / 4) {
        rt.block_on(sx.apply_records(&v.did, &v.changes, Some(("bench", *seq))))
            .unwrap();
    }
    let single = (events / 4) as f64 / start.elapsed().as_secs_f64();
    rt.block_on(sx.close());
    row(
        &mut rows,
        "  apply alone, 1 commit per tx (empty index)",
        format!("{single:.0} events/s"),
        "",
        "",
    );

    // --- The table -------------------------------------------------------------------
    println!();
    println!(
        "index-scale: {repos} repositories, {} manifests, {} tags, {} users; index.db {} MB; {cores} cores ({})",
        repos * TAGS_PER_REPO,
        repos * TAGS_PER_REPO + BIG_REPO_TAGS - TAGS_PER_REPO,
        users,
        db_size / 1_000_000,
        cpu_model()
    );
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.figure.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.goal.len()).max().unwrap_or(0);
    println!(
        "| {:w0$} | {:w1$} | {:w2$} | machine |",
        "measure", "figure", "goal"
    );
    println!(
        "|{}|{}|{}|---|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 2),
        "-".repeat(w2 + 2)
    );
    for r in &rows {
        println!(
            "| {:w0$} | {:w1$} | {:w2$} | {} |",
            r.what, r.figure, r.goal, r.limit
        );
    }
}
