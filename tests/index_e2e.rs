//! The index fed from the network, against the real reference PDS + PLC
//! (`tests/support/atnet`): records written straight to alice's PDS (as another AppView
//! would) reach the index through the firehose; a restart resumes from the stored cursor;
//! a deleted `index.db` is rebuilt by the backfill; the consumer survives a PDS restart.
//! Skipped unless `ATCR_TEST_ATNET` is set; `bash tests/atproto-e2e.sh` runs them.

#[path = "support/atnet.rs"]
mod atnet;
mod common;

use std::time::Duration;

use atcr::config::Config;
use atnet::Atnet;
use common::TestServer;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ws_of(pds: &str) -> String {
    pds.replacen("http://", "ws://", 1)
}

fn configure(c: &mut Config, net: &Atnet) {
    c.server.listen = format!("127.0.0.1:{}", free_port());
    c.auth.mode = "atproto".into();
    c.identity.plc_url = net.plc.clone();
    c.identity.handle_resolver = net.pds.clone();
    c.identity.cache_ttl_secs = 1;
    c.index.firehose = vec![ws_of(&net.pds)];
    c.index.backfill_hosts = vec![net.pds.clone()];
}

async fn server(net: &Atnet) -> TestServer {
    let net = net.clone();
    TestServer::start_with(move |c| configure(c, &net)).await
}

/// Stop the server, run `between` while it is down, start it again on the same data dir.
async fn restart_with<F: std::future::Future<Output = ()>>(
    s: TestServer,
    between: impl FnOnce(std::path::PathBuf) -> F,
) -> TestServer {
    let TestServer {
        running,
        dir,
        client,
        ..
    } = s;
    let mut config = running.state.config.clone();
    running.stop().await;
    between(dir.path().to_path_buf()).await;
    config.server.listen = format!("127.0.0.1:{}", free_port());
    config.index.backfill_when_empty = true;
    let running = atcr::server::spawn(config).await.expect("server restarts");
    let base = running.base_url();
    TestServer {
        running,
        base,
        client,
        dir,
    }
}

async fn session(net: &Atnet, handle: &str) -> String {
    let acct = net.account(handle);
    let v: Value = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.server.createSession", net.pds))
        .json(&json!({"identifier": acct.handle, "password": acct.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["accessJwt"].as_str().expect("session").to_string()
}

/// `com.atproto.repo.putRecord` straight to the PDS (not through atcr).
async fn put_record(net: &Atnet, jwt: &str, did: &str, collection: &str, rkey: &str, value: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.repo.putRecord", net.pds))
        .bearer_auth(jwt)
        .json(&json!({"repo": did, "collection": collection, "rkey": rkey, "record": value}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "putRecord {collection}: {}",
        resp.text().await.unwrap()
    );
}

/// `com.atproto.repo.createRecord` straight to the PDS.
async fn create_record(net: &Atnet, jwt: &str, did: &str, collection: &str, value: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.repo.createRecord", net.pds))
        .bearer_auth(jwt)
        .json(&json!({"repo": did, "collection": collection, "record": value}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "createRecord {collection}: {}",
        resp.text().await.unwrap()
    );
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if check().await {
            eprintln!("{what}: after {} ms", t.elapsed().as_millis());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

async fn wait_connected(s: &TestServer, net: &Atnet) {
    let ix = s.running.state.index.clone();
    let ep = ws_of(&net.pds);
    eventually("firehose connected", 30, || {
        let ix = ix.clone();
        let ep = ep.clone();
        async move { ix.firehose_connected(&ep) }
    })
    .await;
}

fn rand_hex(n: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for b in uuid::Uuid::new_v4().as_bytes().iter().cycle().take(n / 2) {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

fn manifest_record(repo: &str, digest_hex: &str, description: &str) -> Value {
    json!({
        "$type": "io.atcr.manifest",
        "repository": repo,
        "digest": format!("sha256:{digest_hex}"),
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "c".repeat(64)), "size": 321},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", "d".repeat(64)), "size": 4096}],
        "annotations": {"org.opencontainers.image.description": description},
        "holdDid": "did:web:elsewhere.example",
        "createdAt": "2026-01-01T00:00:00.000Z",
    })
}

/// A manifest record key as atcr.io writes them: a TID.
fn tid() -> String {
    atcr::atproto::repo::Tid::now().to_string()
}

fn tag_record(did: &str, repo: &str, tag: &str, manifest_rkey: &str) -> Value {
    json!({
        "$type": "io.atcr.tag", "repository": repo, "tag": tag,
        "manifest": format!("at://{did}/io.atcr.manifest/{manifest_rkey}"),
        "updatedAt": "2026-01-01T00:00:01.000Z",
    })
}

/// Everything the rebuild must reproduce: repositories, tags (with digests), stars.
async fn snapshot(
    ix: &atcr::index::Index,
    alice: &str,
    bob: &str,
) -> (
    Vec<String>,
    Vec<(String, String, String)>,
    Vec<(String, String)>,
) {
    let repos: Vec<String> = ix
        .user_repos(alice)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let mut tags = Vec::new();
    for r in &repos {
        for t in ix.tags(alice, r, 500, 0).await.unwrap() {
            tags.push((r.clone(), t.tag, t.digest));
        }
    }
    tags.sort();
    let mut stars: Vec<(String, String)> = ix
        .user_stars(bob)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.did, r.name))
        .collect();
    stars.sort();
    (repos, tags, stars)
}

#[tokio::test]
async fn firehose_cursor_and_backfill_against_the_reference_pds() {
    let Some(net) = atnet::atnet() else { return };
    if std::env::var("ATCR_TEST_ATNET_RESTART").is_ok() {
        return; // the restart test below runs alone
    }
    let alice = net.account("alice.test").clone();
    let bob = net.account("bob.test").clone();
    let (ajwt, bjwt) = (
        session(&net, "alice.test").await,
        session(&net, "bob.test").await,
    );
    let repo = format!("elsewhere-{}", &rand_hex(8));
    let word = format!("zanzibar{}", rand_hex(6));
    let h1 = rand_hex(64);
    let k1 = tid();

    // alice has a Bluesky profile with an avatar: the index shows it for her.
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    )
    .unwrap();
    let blob: Value = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", net.pds))
        .bearer_auth(&ajwt)
        .header("Content-Type", "image/png")
        .body(png)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    put_record(
        &net,
        &ajwt,
        &alice.did,
        "app.bsky.actor.profile",
        "self",
        json!({
        "$type": "app.bsky.actor.profile", "displayName": "Alice", "avatar": blob["blob"]}),
    )
    .await;
    let avatar_cid = blob["blob"]["ref"]["$link"].as_str().unwrap().to_string();

    // No start-up backfill this time: what arrives below comes through the firehose.
    let net1 = net.clone();
    let s = TestServer::start_with(move |c| {
        configure(c, &net1);
        c.index.backfill_when_empty = false;
    })
    .await;
    wait_connected(&s, &net).await;
    let ix = s.running.state.index.clone();

    // 1. Written directly to the PDS (another AppView): manifest, tag, repo page, bob's star.
    put_record(
        &net,
        &ajwt,
        &alice.did,
        "io.atcr.manifest",
        &k1,
        manifest_record(&repo, &h1, &format!("made elsewhere {word}")),
    )
    .await;
    put_record(
        &net,
        &ajwt,
        &alice.did,
        "io.atcr.tag",
        &format!("{repo}:v1"),
        tag_record(&alice.did, &repo, "v1", &k1),
    )
    .await;
    put_record(&net, &ajwt, &alice.did, "io.atcr.repo.page", &repo, json!({
        "$type": "io.atcr.repo.page", "repository": repo, "description": format!("# Readme\nabout {word}"),
        "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"})).await;
    create_record(&net, &bjwt, &bob.did, "io.atcr.sailor.star", json!({
        "$type": "io.atcr.sailor.star", "subject": format!("at://{}/io.atcr.repo.page/{repo}", alice.did),
        "createdAt": "2026-01-02T00:00:00.000Z"})).await;
    eventually("records from the PDS in the index via the firehose", 15, || {
        let (ix, did, repo) = (ix.clone(), alice.did.clone(), repo.clone());
        async move {
            matches!(ix.repository(&did, &repo).await.unwrap(), Some(r)
                if r.tag_count == 1 && r.summary.star_count == 1 && r.description_source.as_deref() == Some("page")
                    // The handle comes from resolving the DID, a task of its own: wait for it too.
                    && r.summary.handle.as_deref() == Some("alice.test"))
        }
    })
    .await;
    let r = ix.repository(&alice.did, &repo).await.unwrap().unwrap();
    assert_eq!(r.summary.handle.as_deref(), Some("alice.test"));
    assert_eq!(r.summary.latest_tag.as_deref(), Some("v1"));
    assert!(r.summary.description.unwrap().contains(&word));
    let m = ix
        .manifest(&alice.did, &repo, &format!("sha256:{h1}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.layers.len(), m.layers[0].size), (1, 4096));
    assert!(ix.is_starred(&bob.did, &alice.did, &repo).await.unwrap());
    // Search finds it by a word of its description, its name and the owner's handle.
    let found = ix.search(&word, &Default::default(), 10, 0).await.unwrap();
    assert_eq!(
        (found.total, found.results[0].name.as_str()),
        (1, repo.as_str())
    );
    let found = ix
        .search(&format!("alice {repo}"), &Default::default(), 10, 0)
        .await
        .unwrap();
    assert_eq!(found.total, 1);
    eventually("alice's avatar from her profile", 10, || {
        let (ix, cid) = (ix.clone(), avatar_cid.clone());
        async move {
            let u = ix.user_by_handle_or_did("alice.test").await.unwrap();
            u.and_then(|u| u.avatar)
                .is_some_and(|a| a.contains("com.atproto.sync.getBlob") && a.ends_with(&cid))
        }
    })
    .await;
    let cursor1 = ix
        .ingest_cursor(&ws_of(&net.pds))
        .await
        .unwrap()
        .expect("cursor stored");

    // 2. A restart resumes from the cursor: a tag written while atcr was down arrives, and
    // nothing is counted twice.
    let (net2, ajwt2, did2, repo2) = (net.clone(), ajwt.clone(), alice.did.clone(), repo.clone());
    let h1b = k1.clone();
    let s = restart_with(s, move |_| async move {
        put_record(
            &net2,
            &ajwt2,
            &did2,
            "io.atcr.tag",
            &format!("{repo2}:v2"),
            tag_record(&did2, &repo2, "v2", &h1b),
        )
        .await;
    })
    .await;
    let ix = s.running.state.index.clone();
    eventually(
        "the tag written while down (replayed from the cursor)",
        20,
        || {
            let (ix, did, repo) = (ix.clone(), alice.did.clone(), repo.clone());
            async move { ix.tags(&did, &repo, 10, 0).await.unwrap().len() == 2 }
        },
    )
    .await;
    let r = ix.repository(&alice.did, &repo).await.unwrap().unwrap();
    assert_eq!(
        (
            r.tag_count,
            r.manifest_count,
            r.summary.star_count,
            r.summary.push_count
        ),
        (2, 1, 1, 1)
    );
    assert!(ix.ingest_cursor(&ws_of(&net.pds)).await.unwrap().unwrap() > cursor1);
    // The full picture before the rebuild: this run's records (from the firehose) plus
    // whatever earlier runs left on the network (an explicit backfill).
    let report = ix.backfill(std::slice::from_ref(&net.pds)).await.unwrap();
    assert!(
        report.repos_indexed >= 2 && report.failures == 0,
        "{report:?}"
    );
    let before = snapshot(&ix, &alice.did, &bob.did).await;
    assert!(before.0.contains(&repo) && before.2.contains(&(alice.did.clone(), repo.clone())));

    // 3. index.db deleted: the start-up backfill rebuilds the same repositories, tags, stars.
    let s = restart_with(s, |dir| async move {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("index.db")
            {
                std::fs::remove_file(&p).unwrap();
            }
        }
    })
    .await;
    let ix = s.running.state.index.clone();
    let want = before.clone();
    eventually("backfill rebuilt the index", 30, || {
        let (ix, a, b, want) = (ix.clone(), alice.did.clone(), bob.did.clone(), want.clone());
        async move { snapshot(&ix, &a, &b).await == want }
    })
    .await;
    let found = ix.search(&word, &Default::default(), 10, 0).await.unwrap();
    assert_eq!(found.total, 1);
    let r = ix.repository(&alice.did, &repo).await.unwrap().unwrap();
    assert_eq!(r.summary.handle.as_deref(), Some("alice.test"));

    // 4. Deleting the records on the PDS removes them from the index.
    let resp = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.repo.deleteRecord", net.pds))
        .bearer_auth(&ajwt)
        .json(
            &json!({"repo": alice.did, "collection": "io.atcr.tag", "rkey": format!("{repo}:v2")}),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    wait_connected(&s, &net).await;
    eventually("a tag deleted on the PDS leaves the index", 15, || {
        let (ix, did, repo) = (ix.clone(), alice.did.clone(), repo.clone());
        async move { ix.tags(&did, &repo, 10, 0).await.unwrap().len() == 1 }
    })
    .await;
    s.running.stop().await;
}

/// Restarts the network (`ATCR_TEST_ATNET_RESTART=1`, run alone by atproto-e2e.sh): the
/// consumer sees the connection drop, reconnects by itself (backoff) and indexes what the
/// new PDS publishes, including records written before it reconnected (cursor replay; the
/// fresh PDS answers our old cursor with FutureCursor, so the consumer replays from 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_survives_a_pds_restart() {
    if std::env::var("ATCR_TEST_ATNET_RESTART").is_err() {
        eprintln!("SKIPPED: needs ATCR_TEST_ATNET_RESTART=1 (it restarts the test network)");
        return;
    }
    let Some(net) = atnet::atnet() else { return };
    let s = server(&net).await;
    wait_connected(&s, &net).await;
    let ix = s.running.state.index.clone();
    let ep = ws_of(&net.pds);

    // Something indexed before the restart, so the consumer holds a cursor.
    let alice = net.account("alice.test").clone();
    let jwt = session(&net, "alice.test").await;
    let (h0, repo0) = (rand_hex(64), format!("before-restart-{}", rand_hex(6)));
    put_record(
        &net,
        &jwt,
        &alice.did,
        "io.atcr.manifest",
        &tid(),
        manifest_record(&repo0, &h0, "before"),
    )
    .await;
    eventually("a record before the restart is indexed", 15, || {
        let (ix, did, repo) = (ix.clone(), alice.did.clone(), repo0.clone());
        async move { ix.repository(&did, &repo).await.unwrap().is_some() }
    })
    .await;
    assert!(ix.ingest_cursor(&ep).await.unwrap().is_some());

    let restarting = tokio::task::spawn_blocking(Atnet::restart);
    eventually("consumer notices the PDS went away", 30, || {
        let (ix, ep) = (ix.clone(), ep.clone());
        async move { !ix.firehose_connected(&ep) }
    })
    .await;
    let net = restarting.await.unwrap();
    // Written as soon as the new PDS is up, possibly before the consumer is back.
    let alice = net.account("alice.test").clone();
    let jwt = session(&net, "alice.test").await;
    let h = rand_hex(64);
    let k = tid();
    let repo = format!("after-restart-{}", rand_hex(6));
    put_record(
        &net,
        &jwt,
        &alice.did,
        "io.atcr.manifest",
        &k,
        manifest_record(&repo, &h, "after restart"),
    )
    .await;
    put_record(
        &net,
        &jwt,
        &alice.did,
        "io.atcr.tag",
        &format!("{repo}:v1"),
        tag_record(&alice.did, &repo, "v1", &k),
    )
    .await;
    eventually("consumer reconnected", 60, || {
        let (ix, ep) = (ix.clone(), ep.clone());
        async move { ix.firehose_connected(&ep) }
    })
    .await;
    eventually(
        "a record published after the PDS restart is indexed",
        60,
        || {
            let (ix, did, repo) = (ix.clone(), alice.did.clone(), repo.clone());
            async move { ix.tags(&did, &repo, 10, 0).await.unwrap().len() == 1 }
        },
    )
    .await;
    s.running.stop().await;
}
