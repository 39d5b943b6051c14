//! The hold's embedded PDS over real HTTP: did:web documents, every com.atproto read/sync
//! endpoint and its error paths, restart survival, config sync into the captain record,
//! the websocket firehose (live + cursor replay + FutureCursor) and CAR export/import.

mod common;

use std::sync::Arc;

use atcr::atproto::repo::dagcbor::{self, Ipld};
use atcr::atproto::repo::{
    read_car_with_root, verify_record_proof, verify_repo_car, CarLimits, PublicKey, Write,
};
use atcr::pds::records::{crew_rkey, CAPTAIN, CREW, PROFILE};
use atcr::pds::{record_cbor, HoldPds};
use common::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};

const OWNER: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const DID: &str = "did:web:localhost";

async fn start() -> TestServer {
    TestServer::start_with(|c| c.hold.owner_did = OWNER.into()).await
}

fn hold(s: &TestServer) -> Arc<HoldPds> {
    s.running.state.hold.clone().expect("hold enabled")
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client.get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get_bytes(s: &TestServer, path: &str) -> (u16, String, Vec<u8>) {
    let r = s.client.get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

fn assert_err(got: &(u16, Value), status: u16, name: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["error"], name, "{:?}", got.1);
    assert!(got.1["message"].is_string(), "{:?}", got.1);
}

async fn served_key(s: &TestServer) -> PublicKey {
    let (_, doc) = get(s, "/.well-known/did.json").await;
    PublicKey::from_multikey(
        doc["verificationMethod"][0]["publicKeyMultibase"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn record(collection: &str, n: usize) -> bytes::Bytes {
    record_cbor(&json!({"$type": collection, "n": n, "createdAt": "2026-01-01T00:00:00Z"})).unwrap()
}

async fn put_records(s: &TestServer, collection: &str, rkeys: &[&str]) {
    let writes = rkeys
        .iter()
        .enumerate()
        .map(|(i, k)| Write::Create {
            collection: collection.into(),
            rkey: (*k).into(),
            record: record(collection, i),
        })
        .collect();
    hold(s).apply_writes(writes).await.unwrap().unwrap();
}

#[tokio::test]
async fn did_documents() {
    let s = start().await;
    let (st, doc) = get(&s, "/.well-known/did.json").await;
    assert_eq!(st, 200);
    assert_eq!(doc["id"], DID);
    assert_eq!(doc["@context"][0], "https://www.w3.org/ns/did/v1");
    assert_eq!(doc["alsoKnownAs"], json!(["at://localhost"]));
    let vm = &doc["verificationMethod"][0];
    assert_eq!(vm["id"], format!("{DID}#atproto"));
    assert_eq!(vm["type"], "Multikey");
    assert_eq!(vm["controller"], DID);
    let key = PublicKey::from_multikey(vm["publicKeyMultibase"].as_str().unwrap()).unwrap();
    assert_eq!(&key, hold(&s).public_key());
    assert_eq!(doc["service"][0]["id"], "#atproto_pds");
    assert_eq!(doc["service"][0]["type"], "AtprotoPersonalDataServer");
    assert_eq!(doc["service"][0]["serviceEndpoint"], s.base);
    assert_eq!(doc["service"][1]["id"], "#atcr_hold");
    assert_eq!(doc["service"][1]["type"], "AtcrHoldService");
    assert_eq!(doc["service"][1]["serviceEndpoint"], s.base);
    let r = s
        .client
        .get(s.url("/.well-known/atproto-did"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), DID);
}

#[tokio::test]
async fn configured_public_url_and_host() {
    let s = TestServer::start_with(|c| {
        c.server.public_url = "https://registry.example.com".into();
        c.hold.public_host = "hold.example.com:8443".into();
    })
    .await;
    let (_, doc) = get(&s, "/.well-known/did.json").await;
    assert_eq!(doc["id"], "did:web:hold.example.com%3A8443");
    assert_eq!(doc["alsoKnownAs"], json!(["at://hold.example.com"]));
    assert_eq!(
        doc["service"][0]["serviceEndpoint"],
        "https://registry.example.com"
    );
    // The captain owner defaults to the hold itself; no crew record without an owner.
    let (_, rec) = get(
        &s,
        "/xrpc/com.atproto.repo.getRecord?repo=hold.example.com&collection=io.atcr.hold.captain&rkey=self",
    )
    .await;
    assert_eq!(rec["value"]["owner"], "did:web:hold.example.com%3A8443");
    let (_, list) = get(
        &s,
        "/xrpc/com.atproto.repo.listRecords?repo=hold.example.com&collection=io.atcr.hold.crew",
    )
    .await;
    assert_eq!(list["records"], json!([]));
}

#[tokio::test]
async fn health_describe_server_and_resolve_handle() {
    let s = start().await;
    let (st, h) = get(&s, "/xrpc/_health").await;
    assert_eq!(st, 200);
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    let (st, d) = get(&s, "/xrpc/com.atproto.server.describeServer").await;
    assert_eq!(st, 200);
    assert_eq!(d["did"], DID);
    assert_eq!(d["availableUserDomains"], json!([]));
    let (st, r) = get(
        &s,
        "/xrpc/com.atproto.identity.resolveHandle?handle=localhost",
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(r["did"], DID);
    assert_err(
        &get(
            &s,
            "/xrpc/com.atproto.identity.resolveHandle?handle=alice.test",
        )
        .await,
        400,
        "HandleNotFound",
    );
    assert_err(
        &get(&s, "/xrpc/com.atproto.identity.resolveHandle").await,
        400,
        "InvalidRequest",
    );
}

#[tokio::test]
async fn unknown_methods_wrong_verbs_and_disabled_hold() {
    let s = start().await;
    assert_err(
        &get(&s, "/xrpc/com.atproto.repo.nothingHere").await,
        501,
        "MethodNotImplemented",
    );
    let r = s
        .client
        .post(s.url("/xrpc/com.atproto.repo.getRecord"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "InvalidRequest");
    assert_err(
        &get(&s, "/xrpc/com.atproto.sync.subscribeRepos").await,
        400,
        "InvalidRequest",
    );

    let off = TestServer::start_with(|c| c.hold.enabled = false).await;
    assert!(off.running.state.hold.is_none());
    assert_err(
        &get(&off, "/xrpc/_health").await,
        501,
        "MethodNotImplemented",
    );
    assert_eq!(get(&off, "/.well-known/did.json").await.0, 404);
    assert_eq!(get(&off, "/.well-known/atproto-did").await.0, 404);
    assert!(!off.dir.path().join("hold.redb").exists());
}

#[tokio::test]
async fn bootstrap_records_and_describe_repo() {
    let s = start().await;
    let (st, d) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.describeRepo?repo={DID}"),
    )
    .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["did"], DID);
    assert_eq!(d["handle"], "localhost");
    assert_eq!(d["handleIsCorrect"], true);
    assert_eq!(d["didDoc"]["id"], DID);
    assert_eq!(d["collections"], json!([PROFILE, CAPTAIN, CREW]));
    // By handle too.
    assert_eq!(
        get(&s, "/xrpc/com.atproto.repo.describeRepo?repo=localhost")
            .await
            .0,
        200
    );
    assert_err(
        &get(
            &s,
            "/xrpc/com.atproto.repo.describeRepo?repo=did:plc:someoneelse",
        )
        .await,
        400,
        "RepoNotFound",
    );
    assert_err(
        &get(&s, "/xrpc/com.atproto.repo.describeRepo").await,
        400,
        "InvalidRequest",
    );

    let (st, cap) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=self"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(cap["uri"], format!("at://{DID}/{CAPTAIN}/self"));
    let v = &cap["value"];
    assert_eq!(v["$type"], CAPTAIN);
    assert_eq!(v["owner"], OWNER);
    assert_eq!(v["public"], true);
    assert_eq!(v["allowAllCrew"], false);
    assert_eq!(v["enableBlueskyPosts"], false);
    assert!(v["deployedAt"].as_str().unwrap().ends_with('Z'));

    let rkey = crew_rkey(OWNER);
    let (st, crew) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CREW}&rkey={rkey}"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(crew["value"]["member"], OWNER);
    assert_eq!(crew["value"]["role"], "owner");
    assert_eq!(
        crew["value"]["permissions"],
        json!(["blob:read", "blob:write", "crew:admin"])
    );
    let (st, prof) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={PROFILE}&rkey=self"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(prof["value"]["$type"], PROFILE);

    // cid pinning: the right cid matches, another one is RecordNotFound.
    let cid = cap["cid"].as_str().unwrap();
    let pinned =
        format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=self&cid=");
    assert_eq!(get(&s, &format!("{pinned}{cid}")).await.0, 200);
    assert_err(
        &get(&s, &format!("{pinned}{}", crew["cid"].as_str().unwrap())).await,
        400,
        "RecordNotFound",
    );
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=other"),
        )
        .await,
        400,
        "RecordNotFound",
    );
    for bad in [
        "collection=not_an_nsid&rkey=self",
        "collection=io.atcr.hold.captain&rkey=..",
        "collection=io.atcr.hold.captain",
    ] {
        assert_err(
            &get(
                &s,
                &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&{bad}"),
            )
            .await,
            400,
            "InvalidRequest",
        );
    }
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.repo.getRecord?repo=did:web:other&collection={CAPTAIN}&rkey=self"),
        )
        .await,
        400,
        "RepoNotFound",
    );
}

#[tokio::test]
async fn list_records_pages_cursors_and_limits() {
    let s = start().await;
    let coll = "io.atcr.hold.layer";
    let keys = ["3k2a", "3k2b", "3k2c", "3k2d", "3k2e"];
    put_records(&s, coll, &keys).await;
    let list = |q: String| {
        let s = &s;
        async move {
            get(
                s,
                &format!("/xrpc/com.atproto.repo.listRecords?repo={DID}&collection={coll}{q}"),
            )
            .await
        }
    };
    let (st, all) = list(String::new()).await;
    assert_eq!(st, 200);
    let rkeys = |v: &Value| -> Vec<String> {
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["uri"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(rkeys(&all), keys);
    assert!(all.get("cursor").is_none());
    assert_eq!(all["records"][0]["value"]["n"], 0);
    assert!(all["records"][0]["cid"]
        .as_str()
        .unwrap()
        .starts_with("bafyrei"));

    // Forward pages of 2.
    let (_, p1) = list("&limit=2".into()).await;
    assert_eq!(rkeys(&p1), ["3k2a", "3k2b"]);
    assert_eq!(p1["cursor"], "3k2b");
    let (_, p2) = list("&limit=2&cursor=3k2b".into()).await;
    assert_eq!(rkeys(&p2), ["3k2c", "3k2d"]);
    let (_, p3) = list("&limit=2&cursor=3k2d".into()).await;
    assert_eq!(rkeys(&p3), ["3k2e"]);
    assert!(p3.get("cursor").is_none());
    // Reverse.
    let (_, r1) = list("&limit=3&reverse=true".into()).await;
    assert_eq!(rkeys(&r1), ["3k2e", "3k2d", "3k2c"]);
    let (_, r2) = list(format!(
        "&limit=3&reverse=true&cursor={}",
        r1["cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(rkeys(&r2), ["3k2b", "3k2a"]);
    // Limits and bad parameters.
    assert_eq!(rkeys(&list("&limit=100".into()).await.1).len(), 5);
    for bad in [
        "&limit=0",
        "&limit=101",
        "&limit=x",
        "&reverse=maybe",
        "&cursor=a/b",
    ] {
        assert_err(&list(bad.into()).await, 400, "InvalidRequest");
    }
    // Unknown collection: empty list.
    let (st, none) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.listRecords?repo={DID}&collection=io.atcr.nothing"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(none["records"], json!([]));
}

#[tokio::test]
async fn sync_get_repo_and_record_verify() {
    let s = start().await;
    put_records(&s, "io.atcr.hold.layer", &["3k2a", "3k2b"]).await;
    let key = served_key(&s).await;
    let (st, ct, car) = get_bytes(&s, &format!("/xrpc/com.atproto.sync.getRepo?did={DID}")).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "application/vnd.ipld.car");
    let v = verify_repo_car(&car, Some(DID), &key, CarLimits::default()).unwrap();
    let paths: Vec<&str> = v.records.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(paths.contains(&"io.atcr.hold.captain/self"));
    let (_, latest) = get(
        &s,
        &format!("/xrpc/com.atproto.sync.getLatestCommit?did={DID}"),
    )
    .await;
    assert_eq!(latest["cid"], v.commit_cid.to_string());
    assert_eq!(latest["rev"], v.commit.rev);

    let (st, ct, proof) = get_bytes(
        &s,
        &format!("/xrpc/com.atproto.sync.getRecord?did={DID}&collection={CAPTAIN}&rkey=self"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(ct, "application/vnd.ipld.car");
    let (cid, bytes) = verify_record_proof(&proof, Some(DID), &key, CAPTAIN, "self")
        .unwrap()
        .expect("proof shows the record");
    let (_, rec) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=self"),
    )
    .await;
    assert_eq!(rec["cid"], cid.to_string());
    assert_eq!(atcr::pds::record_json(&bytes).unwrap(), rec["value"]);

    // A missing record: a proof of absence (200, a CAR), as the reference PDS answers.
    let (st, ct, proof) = get_bytes(
        &s,
        &format!("/xrpc/com.atproto.sync.getRecord?did={DID}&collection={CAPTAIN}&rkey=nope"),
    )
    .await;
    assert_eq!((st, ct.as_str()), (200, "application/vnd.ipld.car"));
    assert!(
        verify_record_proof(&proof, Some(DID), &key, CAPTAIN, "nope")
            .unwrap()
            .is_none(),
        "the proof shows the record is absent"
    );

    // listBlobs: the blobs the records name (none yet), then one a record references.
    let (st, b) = get(&s, &format!("/xrpc/com.atproto.sync.listBlobs?did={DID}")).await;
    assert_eq!((st, b), (200, serde_json::json!({"cids": []})));
    let blob_cid = "bafkreia53ulf3e26uvu54nzvtknlqswvrl65msmp6scwtvwathlujwuv3u";
    let before_rev = latest["rev"].as_str().unwrap().to_string();
    let with_blob = serde_json::json!({"$type": "app.bsky.actor.profile", "displayName": "hold",
        "avatar": {"$type": "blob", "ref": {"$link": blob_cid}, "mimeType": "image/png", "size": 3}});
    hold(&s)
        .apply_writes(vec![Write::Update {
            collection: "app.bsky.actor.profile".into(),
            rkey: "self".into(),
            record: atcr::pds::record_cbor(&with_blob).unwrap(),
        }])
        .await
        .unwrap();
    let (_, b) = get(&s, &format!("/xrpc/com.atproto.sync.listBlobs?did={DID}")).await;
    assert_eq!(
        b,
        serde_json::json!({"cids": [blob_cid], "cursor": blob_cid})
    );
    let (_, b) = get(
        &s,
        &format!("/xrpc/com.atproto.sync.listBlobs?did={DID}&since={before_rev}&limit=1"),
    )
    .await;
    assert_eq!(b["cids"], serde_json::json!([blob_cid]));
    let (_, b) = get(
        &s,
        &format!("/xrpc/com.atproto.sync.listBlobs?did={DID}&cursor={blob_cid}"),
    )
    .await;
    assert_eq!(b, serde_json::json!({"cids": []}));
    let (_, latest2) = get(
        &s,
        &format!("/xrpc/com.atproto.sync.getLatestCommit?did={DID}"),
    )
    .await;
    let (_, b) = get(
        &s,
        &format!(
            "/xrpc/com.atproto.sync.listBlobs?did={DID}&since={}",
            latest2["rev"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(b["cids"], serde_json::json!([]));
    assert_err(
        &get(&s, "/xrpc/com.atproto.sync.listBlobs?did=did:plc:nobody").await,
        400,
        "RepoNotFound",
    );
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.sync.getRecord?did={DID}&collection=bad&rkey=self"),
        )
        .await,
        400,
        "InvalidRequest",
    );
    for ep in ["getRepo", "getLatestCommit", "getRepoStatus", "getRecord"] {
        assert_err(
            &get(
                &s,
                &format!(
                    "/xrpc/com.atproto.sync.{ep}?did=did:plc:nobody&collection={CAPTAIN}&rkey=self"
                ),
            )
            .await,
            400,
            "RepoNotFound",
        );
        assert_err(
            &get(&s, &format!("/xrpc/com.atproto.sync.{ep}")).await,
            400,
            "InvalidRequest",
        );
    }
}

#[tokio::test]
async fn sync_status_list_repos_and_get_blob() {
    let s = start().await;
    let (head, rev) = hold(&s).latest_commit();
    let (st, status) = get(
        &s,
        &format!("/xrpc/com.atproto.sync.getRepoStatus?did={DID}"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(status, json!({"did": DID, "active": true, "rev": rev}));
    let (st, repos) = get(&s, "/xrpc/com.atproto.sync.listRepos").await;
    assert_eq!(st, 200);
    assert_eq!(
        repos["repos"],
        json!([{"did": DID, "head": head.to_string(), "rev": rev, "active": true}])
    );
    let (_, after) = get(&s, "/xrpc/com.atproto.sync.listRepos?cursor=x").await;
    assert_eq!(after["repos"], json!([]));
    assert_err(
        &get(&s, "/xrpc/com.atproto.sync.listRepos?limit=0").await,
        400,
        "InvalidRequest",
    );

    let blob = "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy";
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.sync.getBlob?did={DID}&cid={blob}"),
        )
        .await,
        400,
        "BlobNotFound",
    );
    assert_err(
        &get(
            &s,
            &format!(
                "/xrpc/com.atproto.sync.getBlob?did={DID}&cid=sha256:{}",
                "a".repeat(64)
            ),
        )
        .await,
        400,
        "BlobNotFound",
    );
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.sync.getBlob?did={DID}&cid=notacid"),
        )
        .await,
        400,
        "InvalidRequest",
    );
    assert_err(
        &get(
            &s,
            &format!("/xrpc/com.atproto.sync.getBlob?did=did:plc:x&cid={blob}"),
        )
        .await,
        400,
        "RepoNotFound",
    );
}

#[tokio::test]
async fn restart_keeps_repo_key_and_syncs_config_changes() {
    let s = start().await;
    put_records(&s, "io.atcr.hold.layer", &["3k2a"]).await;
    let key = served_key(&s).await;
    let (head, rev) = hold(&s).latest_commit();
    let s = s.restart().await;
    assert_eq!(served_key(&s).await, key);
    assert_eq!(
        hold(&s).latest_commit(),
        (head, rev.clone()),
        "unchanged config writes nothing"
    );
    let (st, _) = get(
        &s,
        &format!(
            "/xrpc/com.atproto.repo.getRecord?repo={DID}&collection=io.atcr.hold.layer&rkey=3k2a"
        ),
    )
    .await;
    assert_eq!(st, 200);

    // Flip the captain flags: one new commit, the rest of the record kept.
    let (_, before) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=self"),
    )
    .await;
    let TestServer { running, dir, .. } = s;
    let mut config = running.state.config.clone();
    running.stop().await;
    config.hold.public = false;
    config.hold.allow_all_crew = true;
    config.hold.enable_bluesky_posts = true;
    let running = atcr::server::spawn(config).await.unwrap();
    let s = TestServer {
        base: running.base_url(),
        running,
        client: reqwest::Client::new(),
        dir,
    };
    let (_, after) = get(
        &s,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={DID}&collection={CAPTAIN}&rkey=self"),
    )
    .await;
    assert_eq!(after["value"]["public"], false);
    assert_eq!(after["value"]["allowAllCrew"], true);
    assert_eq!(after["value"]["enableBlueskyPosts"], true);
    assert_eq!(after["value"]["deployedAt"], before["value"]["deployedAt"]);
    assert_ne!(after["cid"], before["cid"]);
    let (_, new_rev) = hold(&s).latest_commit();
    assert!(new_rev > rev);
    let car = get_bytes(&s, &format!("/xrpc/com.atproto.sync.getRepo?did={DID}"))
        .await
        .2;
    verify_repo_car(&car, Some(DID), &key, CarLimits::default()).unwrap();
}

// ---- firehose -------------------------------------------------------------------------------

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &TestServer, query: &str) -> WsStream {
    let url = format!(
        "ws://{}/xrpc/com.atproto.sync.subscribeRepos{query}",
        s.running.addr
    );
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects");
    assert_eq!(resp.status(), 101);
    ws
}

/// Splits a frame into (header, body).
fn decode_frame(frame: &[u8]) -> (Ipld, Ipld) {
    let n = dagcbor::scan_item(frame, 64).unwrap();
    (
        dagcbor::decode_ipld(&frame[..n]).unwrap(),
        dagcbor::decode_ipld(&frame[n..]).unwrap(),
    )
}

fn field<'a>(v: &'a Ipld, k: &str) -> &'a Ipld {
    match v {
        Ipld::Map(m) => m.get(k).unwrap_or_else(|| panic!("no field {k} in {v:?}")),
        _ => panic!("not a map: {v:?}"),
    }
}

fn int(v: &Ipld) -> i128 {
    match v {
        Ipld::Integer(i) => *i,
        _ => panic!("not an integer: {v:?}"),
    }
}

async fn next_frame(ws: &mut WsStream) -> (Ipld, Ipld) {
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .expect("stream open")
        .expect("no ws error");
    match msg {
        tokio_tungstenite::tungstenite::Message::Binary(b) => decode_frame(&b),
        other => panic!("unexpected message {other:?}"),
    }
}

#[tokio::test]
async fn firehose_live_commit_replay_and_future_cursor() {
    let s = start().await;
    let key = served_key(&s).await;
    let mut live = connect(&s, "").await;
    // Give the server a moment to register the subscriber before writing.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let committed = hold(&s)
        .apply_writes(vec![Write::Create {
            collection: "io.atcr.hold.layer".into(),
            rkey: "3k2a".into(),
            record: record("io.atcr.hold.layer", 1),
        }])
        .await
        .unwrap()
        .unwrap();

    let (header, body) = next_frame(&mut live).await;
    assert_eq!(int(field(&header, "op")), 1);
    assert_eq!(field(&header, "t"), &Ipld::String("#commit".into()));
    assert_eq!(int(field(&body, "seq")), committed.seq as i128);
    assert_eq!(field(&body, "rebase"), &Ipld::Bool(false));
    assert_eq!(field(&body, "tooBig"), &Ipld::Bool(false));
    assert_eq!(field(&body, "repo"), &Ipld::String(DID.into()));
    assert_eq!(field(&body, "commit"), &Ipld::Link(committed.commit));
    assert_eq!(field(&body, "rev"), &Ipld::String(committed.rev.clone()));
    assert!(matches!(field(&body, "since"), Ipld::String(_)));
    assert_eq!(field(&body, "blobs"), &Ipld::List(vec![]));
    assert!(matches!(field(&body, "time"), Ipld::String(t) if t.ends_with('Z')));
    assert!(matches!(field(&body, "prevData"), Ipld::Link(_)));
    let Ipld::List(ops) = field(&body, "ops") else {
        panic!("ops")
    };
    assert_eq!(ops.len(), 1);
    assert_eq!(field(&ops[0], "action"), &Ipld::String("create".into()));
    assert_eq!(
        field(&ops[0], "path"),
        &Ipld::String("io.atcr.hold.layer/3k2a".into())
    );
    assert_eq!(
        field(&ops[0], "cid"),
        &Ipld::Link(committed.ops[0].cid.unwrap())
    );
    // blocks: a CAR rooted at the signed commit, containing the new record.
    let Ipld::Bytes(car) = field(&body, "blocks") else {
        panic!("blocks")
    };
    let (root, blocks) = read_car_with_root(car, CarLimits::default()).unwrap();
    assert_eq!(root, committed.commit);
    let commit = atcr::atproto::repo::Commit::decode(&blocks[&root]).unwrap();
    commit.verify(&key).unwrap();
    assert!(blocks.contains_key(&committed.ops[0].cid.unwrap()));

    // An update shows up with its prev.
    let upd = hold(&s)
        .apply_writes(vec![Write::Update {
            collection: "io.atcr.hold.layer".into(),
            rkey: "3k2a".into(),
            record: record("io.atcr.hold.layer", 2),
        }])
        .await
        .unwrap()
        .unwrap();
    let (_, body) = next_frame(&mut live).await;
    assert_eq!(int(field(&body, "seq")), upd.seq as i128);
    let Ipld::List(ops) = field(&body, "ops") else {
        panic!("ops")
    };
    assert_eq!(field(&ops[0], "action"), &Ipld::String("update".into()));
    assert_eq!(
        field(&ops[0], "prev"),
        &Ipld::Link(committed.ops[0].cid.unwrap())
    );

    // Replay from cursor 0: every event from seq 1 (repo creation, bootstrap, the two writes).
    let mut replay = connect(&s, "?cursor=0").await;
    let mut seqs = Vec::new();
    for _ in 0..upd.seq {
        let (h, b) = next_frame(&mut replay).await;
        assert_eq!(int(field(&h, "op")), 1);
        seqs.push(int(field(&b, "seq")) as u64);
    }
    assert_eq!(seqs, (1..=upd.seq).collect::<Vec<_>>());
    // Replay from the middle, then live events continue on the same socket.
    let mut mid = connect(&s, &format!("?cursor={}", committed.seq)).await;
    let (_, b) = next_frame(&mut mid).await;
    assert_eq!(int(field(&b, "seq")), upd.seq as i128);
    let del = hold(&s)
        .apply_writes(vec![Write::Delete {
            collection: "io.atcr.hold.layer".into(),
            rkey: "3k2a".into(),
        }])
        .await
        .unwrap()
        .unwrap();
    let (_, b) = next_frame(&mut mid).await;
    assert_eq!(int(field(&b, "seq")), del.seq as i128);
    let Ipld::List(ops) = field(&b, "ops") else {
        panic!("ops")
    };
    assert_eq!(field(&ops[0], "action"), &Ipld::String("delete".into()));
    assert_eq!(field(&ops[0], "cid"), &Ipld::Null);
    let (_, b) = next_frame(&mut replay).await;
    assert_eq!(int(field(&b, "seq")), del.seq as i128);

    // A cursor in the future: error frame, then close.
    let mut fut = connect(&s, "?cursor=999999").await;
    let (h, b) = next_frame(&mut fut).await;
    assert_eq!(int(field(&h, "op")), -1);
    assert_eq!(field(&b, "error"), &Ipld::String("FutureCursor".into()));
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), fut.next())
        .await
        .unwrap();
    assert!(
        matches!(
            end,
            None | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_))
        ),
        "{end:?}"
    );
    // A bad cursor is refused before the upgrade.
    assert_err(
        &get(&s, "/xrpc/com.atproto.sync.subscribeRepos?cursor=-1").await,
        400,
        "InvalidRequest",
    );

    // Open subscriptions do not keep the database open across a restart.
    let s = s.restart().await;
    assert_eq!(hold(&s).latest_commit().0, del.commit);
    drop((live, replay, mid));
}

// ---- export / import ------------------------------------------------------------------------

#[tokio::test]
async fn export_import_round_trip_with_the_cli() {
    let a = start().await;
    put_records(&a, "io.atcr.hold.layer", &["3k2a", "3k2b", "3k2c"]).await;
    let a_config = a.running.state.config.clone();
    let a_dir_keep = a.dir.path().to_path_buf();
    let bin = env!("CARGO_BIN_EXE_atcr");
    // While the server holds the database, the CLI refuses with a clear message.
    let busy = std::process::Command::new(bin)
        .args(["hold", "export"])
        .env("ATCR_SERVER_DATA_DIR", &a_dir_keep)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("in use by another atcr process"), "{err}");
    a.running.stop().await;

    let export = std::process::Command::new(bin)
        .args(["hold", "export"])
        .env("ATCR_SERVER_DATA_DIR", &a_dir_keep)
        .env("ATCR_SERVER_LISTEN", &a_config.server.listen)
        .env("ATCR_HOLD_OWNER_DID", OWNER)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let car = export.stdout;
    let (root, _) = read_car_with_root(&car, CarLimits::default()).unwrap();
    let car_path = a.dir.path().join("export.car");
    std::fs::write(&car_path, &car).unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let import = |path: &std::path::Path| {
        std::process::Command::new(bin)
            .arg("hold")
            .arg("import")
            .arg(path)
            .env("ATCR_SERVER_DATA_DIR", b_dir.path())
            .env("ATCR_SERVER_LISTEN", "127.0.0.1:0")
            .env("ATCR_HOLD_OWNER_DID", OWNER)
            .output()
            .unwrap()
    };
    let out = import(&car_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // b's own bootstrap made captain/crew/profile with different content (deployedAt), so
    // those are updated; the three layers are created.
    assert!(stdout.contains("imported"), "{stdout}");
    // Importing again changes nothing.
    let again = import(&car_path);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to import"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let garbage = b_dir.path().join("garbage.car");
    std::fs::write(&garbage, b"not a car").unwrap();
    let bad = import(&garbage);
    assert!(!bad.status.success());

    // b serves a's records, signed by b's key.
    let b = TestServer::start_with(|c| {
        c.server.data_dir = b_dir.path().to_path_buf();
        c.hold.owner_did = OWNER.into();
    })
    .await;
    let key = served_key(&b).await;
    let bcar = get_bytes(&b, &format!("/xrpc/com.atproto.sync.getRepo?did={DID}"))
        .await
        .2;
    let v = verify_repo_car(&bcar, Some(DID), &key, CarLimits::default()).unwrap();
    let (_, ablocks) = read_car_with_root(&car, CarLimits::default()).unwrap();
    let a_commit = atcr::atproto::repo::Commit::decode(&ablocks[&root]).unwrap();
    assert_eq!(v.commit.data, a_commit.data, "same records, same MST root");
    let (_, list) = get(
        &b,
        &format!("/xrpc/com.atproto.repo.listRecords?repo={DID}&collection=io.atcr.hold.layer"),
    )
    .await;
    assert_eq!(list["records"].as_array().unwrap().len(), 3);
}

// ---- permissions over the real records ------------------------------------------------------

#[tokio::test]
async fn permissions_follow_captain_and_crew_records() {
    use atcr::pds::permissions::{Action, Decision, Deny, Permission};
    let s = TestServer::start_with(|c| {
        c.hold.owner_did = OWNER.into();
        c.hold.public = false;
    })
    .await;
    let h = hold(&s);
    let alice = "did:plc:alice";
    assert_eq!(
        h.authorize(Some(OWNER), Action::Admin).await.unwrap(),
        Decision::Allow
    );
    assert_eq!(
        h.authorize(None, Action::ReadBlob).await.unwrap(),
        Decision::Deny(Deny::AuthRequired)
    );
    assert_eq!(
        h.authorize(Some(alice), Action::ReadBlob).await.unwrap(),
        Decision::Deny(Deny::Forbidden(Permission::BlobRead))
    );
    assert_eq!(
        h.authorize(Some(alice), Action::RequestCrew).await.unwrap(),
        Decision::Deny(Deny::RegistrationDisabled)
    );
    // Add alice as a reader at her deterministic rkey.
    let rec = record_cbor(&json!({
        "$type": CREW, "member": alice, "role": "read",
        "permissions": ["blob:read"], "addedAt": "2026-01-01T00:00:00Z",
    }))
    .unwrap();
    h.apply_writes(vec![Write::Create {
        collection: CREW.into(),
        rkey: crew_rkey(alice),
        record: rec,
    }])
    .await
    .unwrap();
    assert_eq!(h.crew_member(alice).await.unwrap().unwrap().role, "read");
    assert_eq!(
        h.authorize(Some(alice), Action::ReadBlob).await.unwrap(),
        Decision::Allow
    );
    assert_eq!(
        h.authorize(Some(alice), Action::WriteBlob).await.unwrap(),
        Decision::Deny(Deny::Forbidden(Permission::BlobWrite))
    );
    assert_eq!(
        h.authorize(Some(alice), Action::RequestCrew).await.unwrap(),
        Decision::AlreadyMember
    );
    assert_eq!(
        h.crew_member(OWNER)
            .await
            .unwrap()
            .unwrap()
            .permissions
            .len(),
        3
    );
}

#[tokio::test]
async fn get_repo_streams_a_large_repo() {
    let s = start().await;
    let keys: Vec<String> = (0..1500).map(|i| format!("3k{i:05}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    put_records(&s, "io.atcr.hold.layer", &refs).await;
    let key = served_key(&s).await;
    let r = s
        .client
        .get(s.url(&format!("/xrpc/com.atproto.sync.getRepo?did={DID}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let car = r.bytes().await.unwrap();
    assert!(car.len() > 64 * 1024, "spans several chunks: {}", car.len());
    let v = verify_repo_car(&car, Some(DID), &key, CarLimits::default()).unwrap();
    assert_eq!(v.records.len(), 1503);
    // Same block set as the in-memory export.
    let h = hold(&s);
    let full = tokio::task::spawn_blocking(move || h.export_car_blocking().unwrap())
        .await
        .unwrap();
    let (_, expected) = read_car_with_root(&full, CarLimits::default()).unwrap();
    assert_eq!(v.blocks, expected);
    // `atcr hold export` writes the same walk to a writer.
    let h = hold(&s);
    let written = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let n = h.write_car_blocking(&mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    })
    .await
    .unwrap();
    assert_eq!(written, car);
}

#[tokio::test]
async fn changing_the_host_re_signs_the_repo_under_the_new_did() {
    let s = TestServer::start_with(|c| {
        c.hold.owner_did = OWNER.into();
        c.hold.public_host = "old.example.com".into();
    })
    .await;
    put_records(&s, "io.atcr.hold.layer", &["3k2a"]).await;
    let key = served_key(&s).await;
    let TestServer { running, dir, .. } = s;
    let mut config = running.state.config.clone();
    running.stop().await;
    config.hold.public_host = "new.example.com".into();
    let running = atcr::server::spawn(config).await.unwrap();
    let s = TestServer {
        base: running.base_url(),
        running,
        client: reqwest::Client::new(),
        dir,
    };
    let new_did = "did:web:new.example.com";
    assert_eq!(hold(&s).did(), new_did);
    let car = get_bytes(&s, &format!("/xrpc/com.atproto.sync.getRepo?did={new_did}"))
        .await
        .2;
    let v = verify_repo_car(&car, Some(new_did), &key, CarLimits::default()).unwrap();
    assert!(v
        .records
        .iter()
        .any(|(p, _)| p == "io.atcr.hold.layer/3k2a"));
    assert_err(
        &get(
            &s,
            "/xrpc/com.atproto.sync.getRepo?did=did:web:old.example.com",
        )
        .await,
        400,
        "RepoNotFound",
    );
}
