//! The index under real faults, without a real primary: a `primary_url` at a closed port, a
//! local index file that cannot be written, restarts with writes still queued, and the
//! number of write transactions (requests to a primary) per push.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::apply::{RecordChange, MANIFEST_NSID, STAR_NSID, TAG_NSID};
use super::*;
use crate::oci::types::{Digest, Name};

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";

fn config(dir: &Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    // Nothing listens there: identity lookups of test DIDs fail at once, offline.
    c.identity.plc_url = "http://127.0.0.1:9".into();
    c
}

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn hex(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn image(repo: &str, n: u8) -> RecordChange {
    RecordChange::Upsert {
        collection: MANIFEST_NSID.into(),
        rkey: hex(n),
        value: json!({
            "$type": MANIFEST_NSID, "repository": repo, "digest": format!("sha256:{}", hex(n)),
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", hex(n + 100)), "size": 100},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": format!("sha256:{}", hex(n + 101)), "size": 1000}],
            "createdAt": "2026-01-01T00:00:00Z",
        }),
    }
}

/// A pushed image manifest (what the registry stores), its digest and name.
fn pushed(repo: &str, n: u8) -> (Name, Digest, Vec<u8>) {
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", hex(n + 100)), "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", hex(n + 101)), "size": 1000}],
    }))
    .unwrap();
    let name: Name = format!("{ALICE}/{repo}").parse().unwrap();
    (name, Digest::sha256_of(&bytes), bytes)
}

async fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tag_count(ix: &Index, repo: &str) -> usize {
    ix.tags(ALICE, repo, 100, 0).await.unwrap().len()
}

/// A local index with one repository, closed again.
async fn populated(dir: &Path) {
    let ix = Index::open(&config(dir)).await.unwrap();
    ix.apply_records(ALICE, &[image("before", 1)], None)
        .await
        .unwrap();
    // As at shutdown: the outbox file is free for the next open at once.
    ix.close().await;
}

/// Turn a local index file into what an embedded replica leaves behind (its copy plus
/// libSQL's replication position file), as if it had synced from a primary before. Without a
/// primary to sync from, this is how a test gets a populated replica.
fn as_replica_copy(c: &Config) {
    let meta = format!("{}-client_wal_index", c.index_path().display());
    std::fs::write(meta, b"").unwrap();
}

#[tokio::test]
async fn replica_with_the_primary_at_a_closed_port_starts_serves_queues_then_drains() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let port = closed_port();
    let mut c = config(dir.path());
    as_replica_copy(&c);
    c.index.primary_url = format!("http://127.0.0.1:{port}");
    c.index.sync_interval_secs = 1;

    // Start: no waiting for the primary.
    let started = Instant::now();
    let ix = Index::open(&c).await.unwrap();
    assert!(ix.is_replica());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "opening waited {:?} for the primary",
        started.elapsed()
    );
    // Reads come from the local copy at once.
    assert!(ix.repository(ALICE, "before").await.unwrap().is_some());

    // The background sync fails; the state says why, naming the key, once.
    eventually("the first sync to fail", 20, || {
        ix.status().sync_failures >= 1
    })
    .await;
    let s = ix.status();
    assert_eq!(
        (s.mode, s.state, s.writable),
        ("replica", "degraded", false)
    );
    assert_eq!(s.primary_reachable, Some(false));
    assert!(matches!(s.cause, Some(Cause::Unreachable(_))), "{s:?}");
    let error = s.error.unwrap();
    assert!(error.contains("index.primary_url"), "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
    assert!(error.contains("refused"), "{error}");

    // Writes are queued durably: a push, and pull counts.
    let (name, digest, bytes) = pushed("during", 2);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    ix.note_manifest_put(&name, &digest, mt, &bytes, Some("v1"), None, None);
    ix.note_pull(ALICE, "before");
    ix.note_pull(ALICE, "before");
    let e = ix.flush_pulls().await.unwrap_err();
    assert!(e.to_string().contains("index.primary_url"), "{e}");
    eventually("both writes queued", 10, || ix.status().outbox.entries == 2).await;
    assert_eq!(ix.status().pending_pulls, 0, "pulls moved to the outbox");
    assert!(ix.repository(ALICE, "during").await.unwrap().is_none());
    drop(ix);

    // Restart, still unreachable: the queue survives and the index still serves.
    let ix = Index::open(&c).await.unwrap();
    assert_eq!(ix.status().outbox.entries, 2);
    assert!(ix.repository(ALICE, "before").await.unwrap().is_some());
    drop(ix);

    // The index becomes writable (here: the operator turns the replica back into a local
    // index): the queue drains in order, each entry once.
    c.index.primary_url = String::new();
    let ix = Index::open(&c).await.unwrap();
    eventually("the outbox to drain", 10, || {
        ix.status().outbox.entries == 0
    })
    .await;
    let s = ix.status();
    assert_eq!(
        (s.state, s.outbox.applied, s.write_transactions),
        ("ok", 2, 2)
    );
    assert_eq!(tag_count(&ix, "during").await, 1);
    let r = ix.repository(ALICE, "before").await.unwrap().unwrap();
    assert_eq!(r.summary.pull_count, 2, "pull counts not lost, not doubled");
    drop(ix);
    // Applied entries are not applied again after another restart.
    let ix = Index::open(&c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ix.repository(ALICE, "before").await.unwrap().unwrap();
    assert_eq!(r.summary.pull_count, 2);
}

/// `primary_url` set over a data dir that held a local index: the file is moved aside (not
/// refused, not overwritten) and the replica starts without a local copy.
#[tokio::test]
async fn a_local_index_under_a_primary_url_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let mut c = config(dir.path());
    c.index.primary_url = format!("http://127.0.0.1:{}", closed_port());
    let ix = Index::open(&c).await.unwrap();
    let s = ix.status();
    assert_eq!((s.mode, s.state), ("replica", "unavailable"), "{s:?}");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("index.db.local-"))
        .collect();
    assert!(!aside.is_empty(), "moved aside");
    // The moved file still holds the old rows.
    let db = libsql::Builder::new_local(dir.path().join(&aside[0]))
        .build()
        .await
        .unwrap();
    let mut rows = db
        .connect()
        .unwrap()
        .query("SELECT COUNT(*) FROM repositories", ())
        .await
        .unwrap();
    let n: i64 = rows.next().await.unwrap().unwrap().get(0).unwrap();
    assert_eq!(n, 1);
}

/// Makes a file unwritable for real: permissions, or the immutable attribute for root
/// (which permissions do not stop). Undone on drop.
struct Unwritable(Vec<PathBuf>);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Unwritable {
    fn new(paths: &[PathBuf]) -> Unwritable {
        let paths: Vec<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
        for p in &paths {
            set_writable(p, false);
        }
        // The fault is real: the file cannot be opened for writing.
        assert!(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&paths[0])
                .is_err(),
            "could not make {} unwritable",
            paths[0].display()
        );
        Unwritable(paths)
    }
}

fn set_writable(p: &Path, writable: bool) {
    if is_root() {
        let ok = std::process::Command::new("chattr")
            .arg(if writable { "-i" } else { "+i" })
            .arg(p)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr on {} failed", p.display());
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = if writable { 0o644 } else { 0o444 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        for p in &self.0 {
            set_writable(p, true);
        }
    }
}

#[tokio::test]
async fn an_unwritable_local_file_queues_writes_until_it_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let c = config(dir.path());
    let db = c.index_path();
    // The database and its log (not the shared-memory index SQLite maps: a file it
    // cannot extend there is a crash, not a write error).
    let files = [db.clone(), PathBuf::from(format!("{}-wal", db.display()))];
    let fault = Unwritable::new(&files);

    let ix = Index::open(&c).await.unwrap();
    // Known at once, not at the first write; reads still work.
    assert!(!ix.status().writable, "{:?}", ix.status());
    assert!(ix.repository(ALICE, "before").await.unwrap().is_some());
    let (name, digest, bytes) = pushed("later", 3);
    ix.note_manifest_put(
        &name,
        &digest,
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
        Some("v1"),
        None,
        None,
    );
    ix.note_pull(ALICE, "before");
    assert!(ix.flush_pulls().await.is_err());
    eventually("the write to fail", 10, || !ix.status().writable).await;
    let s = ix.status();
    assert_eq!(s.state, "degraded");
    assert!(matches!(s.cause, Some(Cause::LocalUnwritable(_))), "{s:?}");
    assert!(s.error.as_deref().unwrap().contains("index.path"), "{s:?}");
    assert_eq!(s.outbox.entries, 2);

    // Restart with the queue non-empty and the file still unwritable.
    drop(ix);
    let ix = Index::open(&c).await.unwrap();
    assert_eq!(ix.status().outbox.entries, 2);

    drop(fault);
    eventually("the outbox to drain", 30, || {
        ix.status().outbox.entries == 0
    })
    .await;
    assert_eq!(ix.status().state, "ok");
    assert_eq!(tag_count(&ix, "later").await, 1);
    let r = ix.repository(ALICE, "before").await.unwrap().unwrap();
    assert_eq!(r.summary.pull_count, 1);
}

#[tokio::test]
async fn an_entry_recorded_as_applied_is_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let c = config(dir.path());
    // The process died after the index committed entry N but before the outbox removed it.
    let path = outbox_path(&c.index_path());
    let (seq, id) = tokio::task::spawn_blocking(move || {
        let outbox = outbox::Outbox::open(&path).unwrap();
        let seq = outbox
            .push(&outbox::Op::Pulls {
                counts: vec![(ALICE.into(), "before".into(), 5)],
                at: "2026-01-02T00:00:00Z".into(),
            })
            .unwrap();
        (seq, outbox.id().to_string())
    })
    .await
    .unwrap();
    {
        let db = libsql::Builder::new_local(c.index_path())
            .build()
            .await
            .unwrap();
        let conn = db.connect().unwrap();
        conn.execute(
            "UPDATE repository_stats SET pull_count = 5 WHERE did = ?1",
            [ALICE],
        )
        .await
        .unwrap();
        conn.execute(
            "INSERT INTO outbox_applied (outbox, seq, applied_at) VALUES (?1, ?2, 'x')",
            (id.as_str(), seq as i64),
        )
        .await
        .unwrap();
    }
    let ix = Index::open(&c).await.unwrap();
    eventually("the outbox to drain", 10, || {
        ix.status().outbox.entries == 0
    })
    .await;
    let r = ix.repository(ALICE, "before").await.unwrap().unwrap();
    assert_eq!(r.summary.pull_count, 5, "applied once, not twice");
    assert_eq!(ix.status().write_transactions, 0);
}

/// What the UI reads after the same writes, by (table, row) without the moment they ran.
async fn dump(ix: &Index) -> Vec<String> {
    let queries = [
        "SELECT did, name FROM repositories ORDER BY 1, 2",
        "SELECT did, repository, digest, media_type, total_size, hold_did, subject_digest FROM manifests ORDER BY 1, 2, 3",
        "SELECT * FROM layers ORDER BY 1, 2, 3, 4",
        "SELECT * FROM manifest_references ORDER BY 1, 2, 3, 4",
        "SELECT * FROM manifest_annotations ORDER BY 1, 2, 3, 4",
        "SELECT did, repository, tag, digest, rkey FROM tags ORDER BY 1, 2, 3",
        "SELECT did, repository, key, value FROM repository_annotations ORDER BY 1, 2, 3",
        "SELECT starrer_did, rkey, owner_did, repository FROM stars ORDER BY 1, 2",
        "SELECT did, repository, pull_count, push_count, last_push FROM repository_stats ORDER BY 1, 2",
        "SELECT did, handle, default_hold FROM users ORDER BY 1",
        "SELECT rowid, handle, name, description, annotations FROM search_fts ORDER BY 1",
    ];
    let conn = ix.reader().await;
    let mut out = Vec::new();
    for q in queries {
        let mut rows = conn.query(q, ()).await.unwrap();
        while let Some(r) = rows.next().await.unwrap() {
            let cols: Vec<String> = (0..r.column_count())
                .map(|i| format!("{:?}", r.get_value(i).unwrap()))
                .collect();
            out.push(format!("{q}: {}", cols.join("|")));
        }
    }
    out
}

/// Every kind of change, as the firehose and direct writes deliver them.
fn workload() -> Vec<(&'static str, Vec<RecordChange>, Option<i64>)> {
    let up = |c: &str, k: &str, v: serde_json::Value| RecordChange::Upsert {
        collection: c.into(),
        rkey: k.into(),
        value: v,
    };
    let del = |c: &str, k: &str| RecordChange::Delete {
        collection: c.into(),
        rkey: k.into(),
    };
    let tag = |repo: &str, t: &str, n: u8| {
        up(
            TAG_NSID,
            &crate::registry::records::tag_rkey(repo, t),
            json!({"repository": repo, "tag": t, "updatedAt": "2026-01-03T00:00:00Z",
                   "manifest": format!("at://{ALICE}/{MANIFEST_NSID}/{}", hex(n))}),
        )
    };
    vec![
        (ALICE, vec![image("app", 1), tag("app", "v1", 1)], Some(1)),
        (
            ALICE,
            vec![image("app", 2), tag("app", "v1", 2), tag("app", "it's", 1)],
            Some(2),
        ),
        (
            ALICE,
            vec![up(
                MANIFEST_NSID,
                &hex(3),
                json!({"repository": "app", "digest": format!("sha256:{}", hex(3)),
                       "mediaType": "application/vnd.oci.image.index.v1+json", "schemaVersion": 2,
                       "createdAt": "2026-01-04T00:00:00Z",
                       "annotations": {"org.opencontainers.image.description": "O'Reilly \"quoted\" ?1 -- text\u{0}nul"},
                       "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": format!("sha256:{}", hex(1)), "size": 5,
                                      "platform": {"os": "linux", "architecture": "arm64"}}]}),
            )],
            None,
        ),
        (
            BOB,
            vec![up(
                STAR_NSID,
                "3kstar",
                json!({"subject": format!("at://{ALICE}/io.atcr.repo.page/app"), "createdAt": "2026-02-01T00:00:00Z"}),
            )],
            None,
        ),
        (ALICE, vec![image("app", 1)], Some(3)), // an echo: no second push counted
        (
            ALICE,
            vec![
                del(TAG_NSID, &crate::registry::records::tag_rkey("app", "v1")),
                del(MANIFEST_NSID, &hex(2)),
            ],
            None,
        ),
        (ALICE, vec![image("gone", 4)], None),
        (ALICE, vec![del(MANIFEST_NSID, &hex(4))], None),
    ]
}

/// The statements a replica ships (planned, then sent as one batch with literals) leave the
/// same rows as the same transactions run directly, and each costs one write transaction.
#[tokio::test]
async fn planned_transactions_leave_the_rows_direct_ones_do() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let direct = Index::open(&config(d1.path())).await.unwrap();
    let planned = Index::open_with_options(
        &config(d2.path()),
        crate::atproto::identity::Resolver::new(
            crate::atproto::identity::IdentityConfig {
                plc_url: "http://127.0.0.1:9".into(),
                handle_resolver: None,
                cache_ttl: Duration::from_secs(60),
                dns: false,
            },
            crate::atproto::xrpc::XrpcClient::default(),
        ),
        OpenOptions {
            plan_writes: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let work = workload();
    for ix in [&direct, &planned] {
        let before = ix.status().write_transactions;
        for (did, changes, cursor) in &work {
            ix.apply_records(did, changes, cursor.map(|c| ("ws://relay", c)))
                .await
                .unwrap();
        }
        ix.set_user_identity(ALICE, Some("alice.test"), Some("http://pds"))
            .await
            .unwrap();
        assert_eq!(
            ix.status().write_transactions - before,
            work.len() as u64 + 1,
            "one write transaction per apply (push or firehose frame)"
        );
    }
    let (a, b) = (dump(&direct).await, dump(&planned).await);
    assert!(a.len() > 12, "{a:?}");
    assert_eq!(a, b);
    assert_eq!(planned.ingest_cursor("ws://relay").await.unwrap(), Some(3));
}

/// A push costs one write transaction (one request to a primary), its pulls one more per
/// flush however many there were.
#[tokio::test]
async fn a_push_is_one_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    for n in 1..=3u8 {
        let before = ix.status().write_transactions;
        let (name, digest, bytes) = pushed("app", n);
        ix.note_manifest_put(
            &name,
            &digest,
            mt,
            &bytes,
            Some(&format!("v{n}")),
            None,
            None,
        );
        eventually("the push to be indexed", 10, || {
            ix.status().outbox.applied == u64::from(n)
        })
        .await;
        assert_eq!(ix.status().write_transactions - before, 1, "push {n}");
    }
    assert_eq!(tag_count(&ix, "app").await, 3);
    let before = ix.status().write_transactions;
    for _ in 0..50 {
        ix.note_pull(ALICE, "app");
    }
    ix.flush_pulls().await.unwrap();
    assert_eq!(ix.status().write_transactions - before, 1);
    let r = ix.repository(ALICE, "app").await.unwrap().unwrap();
    assert_eq!((r.summary.pull_count, r.summary.push_count), (50, 3));
}
