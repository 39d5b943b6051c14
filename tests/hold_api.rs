//! The `io.atcr.hold.*` API over real HTTP: service tokens (signed in the test with real
//! secp256k1 / P-256 keys, issuer documents served over HTTP by a DID directory started
//! here, which the server's resolver reaches as its PLC), crew rules on every endpoint,
//! quotas, multipart uploads on the filesystem and on S3 (s3s-fs), notifyManifest layer
//! records reaching a firehose client, the registry's push hook, Bluesky posts.
//! The same checks against tokens minted by the reference PDS are in `atproto_e2e.rs`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atcr::atproto::repo::crypto::KeyAlgorithm;
use atcr::atproto::repo::{SigningKey, Write};
use atcr::pds::records::{crew_rkey, CREW};
use atcr::pds::service_auth::sign_token;
use atcr::pds::{record_cbor, HoldPds};
use common::oci::{self, sha256};
use common::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};

const HOLD: &str = "did:web:localhost";
const OWNER: &str = "did:plc:ownerownerownerownerowne";
const WRITER: &str = "did:plc:writerwriterwriterwriter";
const READER: &str = "did:plc:readerreaderreaderreader";
const ADMIN: &str = "did:plc:adminadminadminadminadmi";
const STRANGER: &str = "did:plc:strangerstrangerstranger";

// ---- a DID directory over HTTP (the server resolves did:plc documents from it) ----------

type Docs = Arc<Mutex<HashMap<String, Value>>>;

struct Directory {
    url: String,
    docs: Docs,
    keys: Mutex<HashMap<String, SigningKey>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn did_doc(did: &str, key: &SigningKey) -> Value {
    json!({
        "id": did,
        "alsoKnownAs": [],
        "verificationMethod": [{
            "id": format!("{did}#atproto"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.public_key().multikey(),
        }],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "http://127.0.0.1:9"}],
    })
}

impl Directory {
    async fn start() -> Directory {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let docs: Docs = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = docs.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let docs = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let did = req.uri().path().trim_start_matches('/').to_string();
                        let doc = docs.lock().unwrap().get(&did).cloned();
                        async move {
                            let (status, body) = match doc {
                                Some(d) => (200, d.to_string()),
                                None => (404, "{\"message\":\"DID not registered\"}".into()),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        let dir = Directory {
            url,
            docs,
            keys: Mutex::default(),
            task,
        };
        // secp256k1 for most users (like the reference PDS), P-256 for one.
        for (i, did) in [OWNER, WRITER, READER, ADMIN, STRANGER].iter().enumerate() {
            let key = if *did == READER {
                SigningKey::generate_p256()
            } else {
                SigningKey::from_bytes(KeyAlgorithm::K256, &[i as u8 + 1; 32]).unwrap()
            };
            dir.register(did, key);
        }
        dir
    }

    fn register(&self, did: &str, key: SigningKey) {
        self.docs
            .lock()
            .unwrap()
            .insert(did.to_string(), did_doc(did, &key));
        self.keys.lock().unwrap().insert(did.to_string(), key);
    }

    fn key(&self, did: &str) -> SigningKey {
        self.keys.lock().unwrap()[did].clone()
    }

    /// A service token as a user's PDS mints it.
    fn token(&self, did: &str, lxm: &str) -> String {
        let now = now();
        sign_token(
            &self.key(did),
            &json!({"iss": did, "aud": HOLD, "exp": now + 60, "iat": now, "lxm": lxm, "jti": uuid::Uuid::new_v4().to_string()}),
        )
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- server + helpers ---------------------------------------------------------------------

struct Hold {
    s: TestServer,
    dir: Directory,
}

async fn start(public: bool, tweak: impl FnOnce(&mut atcr::config::Config)) -> Hold {
    let dir = Directory::start().await;
    let plc = dir.url.clone();
    let s = TestServer::start_with(move |c| {
        c.hold.owner_did = OWNER.into();
        c.hold.public = public;
        c.identity.plc_url = plc;
        tweak(c);
    })
    .await;
    add_crew(&hold(&s), WRITER, &["blob:read", "blob:write"], None).await;
    add_crew(&hold(&s), READER, &["blob:read"], None).await;
    add_crew(&hold(&s), ADMIN, &["crew:admin"], None).await;
    Hold { s, dir }
}

fn hold(s: &TestServer) -> Arc<HoldPds> {
    s.running.state.hold.clone().expect("hold enabled")
}

async fn add_crew(h: &Arc<HoldPds>, did: &str, perms: &[&str], tier: Option<&str>) {
    let mut rec = json!({"$type": CREW, "member": did, "role": "write", "permissions": perms, "addedAt": "2026-01-01T00:00:00Z"});
    if let Some(t) = tier {
        rec["tier"] = json!(t);
    }
    let rkey = crew_rkey(did);
    let write = if h.get_record(CREW, &rkey).await.unwrap().is_some() {
        Write::Update {
            collection: CREW.into(),
            rkey,
            record: record_cbor(&rec).unwrap(),
        }
    } else {
        Write::Create {
            collection: CREW.into(),
            rkey,
            record: record_cbor(&rec).unwrap(),
        }
    };
    h.apply_writes(vec![write]).await.unwrap();
}

impl Hold {
    fn url(&self, nsid: &str) -> String {
        self.s.url(&format!("/xrpc/{nsid}"))
    }

    /// POST a JSON procedure as `who` (None: anonymous).
    async fn post(&self, who: Option<&str>, nsid: &str, body: Value) -> (u16, Value) {
        let mut r = self.s.client.post(self.url(nsid)).json(&body);
        if let Some(did) = who {
            r = r.bearer_auth(self.dir.token(did, nsid));
        }
        reply(r.send().await.unwrap()).await
    }

    async fn get(&self, who: Option<&str>, nsid: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self.s.client.get(self.url(nsid)).query(query);
        if let Some(did) = who {
            r = r.bearer_auth(self.dir.token(did, nsid));
        }
        reply(r.send().await.unwrap()).await
    }

    async fn put_part(&self, who: &str, id: &str, part: u32, data: Vec<u8>) -> (u16, Value) {
        let nsid = "io.atcr.hold.uploadPart";
        let r = self
            .s
            .client
            .put(self.url(nsid))
            .bearer_auth(self.dir.token(who, nsid))
            .header("X-Upload-Id", id)
            .header("X-Part-Number", part.to_string())
            .body(data)
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    /// initiate -> parts (via the URL getPartUploadUrl returns) -> complete.
    async fn upload(&self, who: &str, data: &[u8], part_size: usize) -> (u16, Value) {
        let digest = sha256(data);
        let (st, v) = self
            .post(
                Some(who),
                "io.atcr.hold.initiateUpload",
                json!({"digest": digest}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let id = v["uploadId"].as_str().unwrap().to_string();
        let mut parts = Vec::new();
        for (i, chunk) in data.chunks(part_size).enumerate() {
            let n = i as u32 + 1;
            let (st, u) = self
                .post(
                    Some(who),
                    "io.atcr.hold.getPartUploadUrl",
                    json!({"uploadId": id, "partNumber": n}),
                )
                .await;
            assert_eq!(st, 200, "{u}");
            assert_eq!(u["method"], "PUT");
            let url = u["url"].as_str().unwrap();
            assert!(url.contains("/xrpc/io.atcr.hold.uploadPart"), "{url}");
            let url = oci::resolve(&self.s, &oci::path_of(url));
            let mut req = self
                .s
                .client
                .put(url)
                .body(chunk.to_vec())
                .bearer_auth(self.dir.token(who, "io.atcr.hold.uploadPart"));
            for (k, v) in u["headers"].as_object().unwrap() {
                req = req.header(k.as_str(), v.as_str().unwrap());
            }
            let (st, e) = reply(req.send().await.unwrap()).await;
            assert_eq!(st, 200, "{e}");
            parts.push(json!({"partNumber": n, "etag": e["etag"]}));
        }
        self.post(
            Some(who),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": digest, "parts": parts}),
        )
        .await
    }

    async fn get_blob(&self, who: Option<&str>, digest: &str) -> reqwest::Response {
        let nsid = "com.atproto.sync.getBlob";
        let mut r = self
            .s
            .client
            .get(self.url(nsid))
            .query(&[("did", HOLD), ("cid", digest)]);
        if let Some(did) = who {
            r = r.bearer_auth(self.dir.token(did, nsid));
        }
        r.send().await.unwrap()
    }
}

async fn reply(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_err(got: &(u16, Value), status: u16, name: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["error"], name, "{:?}", got.1);
    assert!(got.1["message"].is_string(), "{:?}", got.1);
}

fn manifest_body(user: &str, repo: &str, layers: &[(&str, u64)], tag: Option<&str>) -> Value {
    let mut v = json!({
        "repository": repo,
        "userDid": user,
        "manifestDigest": sha256(format!("{user}{repo}{layers:?}").as_bytes()),
        "manifest": {
            "mediaType": oci::OCI_MANIFEST,
            "config": {"digest": sha256(b"config"), "size": 6, "mediaType": oci::OCI_CONFIG},
            "layers": layers.iter().map(|(d, s)| json!({"digest": d, "size": s, "mediaType": oci::OCI_LAYER})).collect::<Vec<_>>(),
        },
    });
    if let Some(t) = tag {
        v["tag"] = json!(t);
    }
    v
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn service_tokens_are_verified() {
    let h = start(false, |_| {}).await;
    let nsid = "io.atcr.hold.getQuota";
    let call = |token: Option<String>| {
        let mut r = h.s.client.get(h.url(nsid)).query(&[("userDid", WRITER)]);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { reply(r.send().await.unwrap()).await }
    };
    let t = now();
    let key = h.dir.key(WRITER);
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": WRITER, "aud": HOLD, "exp": t + 60, "iat": t, "lxm": nsid});
        f(&mut c);
        c
    };
    // A valid ES256K token, also with a #fragment on iss; a P-256 (ES256) one for READER.
    let ok = call(Some(sign_token(&key, &claims(&|_| {})))).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(ok.1["userDid"], WRITER);
    let frag = claims(&|c| c["iss"] = json!(format!("{WRITER}#atproto_pds")));
    assert_eq!(call(Some(sign_token(&key, &frag))).await.0, 200);
    let r = h.get(Some(READER), nsid, &[("userDid", READER)]).await;
    assert_eq!(r.0, 200, "{}", r.1);

    assert_err(&call(None).await, 401, "AuthRequired");
    let wrong_aud = claims(&|c| c["aud"] = json!("did:web:elsewhere.example"));
    assert_err(
        &call(Some(sign_token(&key, &wrong_aud))).await,
        401,
        "BadJwtAudience",
    );
    let wrong_lxm = claims(&|c| c["lxm"] = json!("io.atcr.hold.notifyManifest"));
    assert_err(
        &call(Some(sign_token(&key, &wrong_lxm))).await,
        401,
        "BadJwtLexiconMethod",
    );
    let expired = claims(&|c| {
        c["iat"] = json!(t - 400);
        c["exp"] = json!(t - 300);
    });
    assert_err(
        &call(Some(sign_token(&key, &expired))).await,
        401,
        "ExpiredToken",
    );
    let forever = claims(&|c| c["exp"] = json!(t + 86400 * 365));
    assert_err(
        &call(Some(sign_token(&key, &forever))).await,
        401,
        "InvalidToken",
    );
    // Key rotation: the cached document has the old key; a token with the new key is
    // accepted after one re-resolution.
    let rotated = SigningKey::from_bytes(KeyAlgorithm::K256, &[42; 32]).unwrap();
    h.dir.register(WRITER, rotated.clone());
    let r = call(Some(sign_token(&rotated, &claims(&|_| {})))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    // ... and the old key no longer works.
    assert_err(
        &call(Some(sign_token(&key, &claims(&|_| {})))).await,
        401,
        "BadJwtSignature",
    );
    // Re-resolution is rate limited per DID: a second rotation within the interval is
    // not picked up yet (bad tokens cannot make us fetch documents in a loop).
    let again = SigningKey::from_bytes(KeyAlgorithm::K256, &[43; 32]).unwrap();
    h.dir.register(WRITER, again.clone());
    assert_err(
        &call(Some(sign_token(&again, &claims(&|_| {})))).await,
        401,
        "BadJwtSignature",
    );
    let key = rotated;
    // Forged: WRITER's claims signed by another key.
    let forged = sign_token(
        &SigningKey::from_bytes(KeyAlgorithm::K256, &[99; 32]).unwrap(),
        &claims(&|_| {}),
    );
    assert_err(&call(Some(forged)).await, 401, "BadJwtSignature");
    assert_err(&call(Some("not.a.jwt".into())).await, 401, "InvalidToken");
    assert_err(&call(Some("x".repeat(9000))).await, 401, "InvalidToken");
    // An issuer nobody knows.
    let ghost = claims(&|c| c["iss"] = json!("did:plc:ghostghostghostghostghos"));
    assert_err(
        &call(Some(sign_token(&key, &ghost))).await,
        401,
        "InvalidToken",
    );
}

/// Every endpoint against every kind of caller, on a private hold.
#[tokio::test]
async fn crew_rules_on_every_endpoint_private_hold() {
    let h = start(false, |_| {}).await;
    let data = oci::bytes(1000, 1);
    let (st, v) = h.upload(WRITER, &data, 400).await;
    assert_eq!(st, 200, "{v}");
    let digest = sha256(&data);

    // Blob writes: uploads, notifyManifest, setStats need blob:write.
    let writers = [
        (OWNER, true),
        (WRITER, true),
        (READER, false),
        (ADMIN, false),
        (STRANGER, false),
    ];
    for (who, allowed) in writers {
        let r = h
            .post(
                Some(who),
                "io.atcr.hold.initiateUpload",
                json!({"digest": digest}),
            )
            .await;
        if allowed {
            assert_eq!(r.0, 200, "{who}: {}", r.1);
        } else {
            assert_err(&r, 403, "Forbidden");
        }
        let r = h
            .post(
                Some(who),
                "io.atcr.hold.notifyManifest",
                manifest_body(who, "app", &[(&digest, 1000)], None),
            )
            .await;
        if allowed {
            assert_eq!(r.0, 200, "{who}: {}", r.1);
        } else {
            assert_err(&r, 403, "Forbidden");
        }
        let r = h
            .post(
                Some(who),
                "io.atcr.hold.setStats",
                json!({"ownerDid": who, "repository": "app", "pullCount": 5}),
            )
            .await;
        if allowed {
            assert_eq!(r.0, 200, "{who}: {}", r.1);
        } else {
            assert_err(&r, 403, "Forbidden");
        }
    }
    // Anonymous: 401 everywhere that needs a caller.
    for nsid in [
        "io.atcr.hold.initiateUpload",
        "io.atcr.hold.getPartUploadUrl",
        "io.atcr.hold.completeUpload",
        "io.atcr.hold.abortUpload",
        "io.atcr.hold.notifyManifest",
        "io.atcr.hold.requestCrew",
        "io.atcr.hold.deleteUserData",
        "io.atcr.hold.setStats",
    ] {
        let r = h
            .post(
                None,
                nsid,
                json!({"digest": digest, "uploadId": "x", "partNumber": 1}),
            )
            .await;
        assert_err(&r, 401, "AuthRequired");
    }
    for nsid in ["io.atcr.hold.getQuota", "io.atcr.hold.exportUserData"] {
        assert_err(
            &h.get(None, nsid, &[("userDid", WRITER)]).await,
            401,
            "AuthRequired",
        );
    }
    let anon_part =
        h.s.client
            .put(h.url("io.atcr.hold.uploadPart"))
            .header("X-Upload-Id", "hold-x")
            .header("X-Part-Number", "1")
            .body("x")
            .send()
            .await
            .unwrap();
    assert_err(&reply(anon_part).await, 401, "AuthRequired");
    // A crew member without blob:write cannot upload a part even with a real upload id.
    let (_, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await;
    let id = v["uploadId"].as_str().unwrap();
    assert_err(&h.put_part(READER, id, 1, vec![1]).await, 403, "Forbidden");
    // The other upload procedures: blob:write first, whatever the upload id.
    for who in [READER, ADMIN, STRANGER] {
        for nsid in [
            "io.atcr.hold.getPartUploadUrl",
            "io.atcr.hold.completeUpload",
            "io.atcr.hold.abortUpload",
        ] {
            let body = json!({"uploadId": id, "partNumber": 1, "digest": digest, "parts": []});
            assert_err(&h.post(Some(who), nsid, body).await, 403, "Forbidden");
        }
    }
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.getPartUploadUrl",
            json!({"uploadId": id, "partNumber": 1}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    // Someone else's upload id is unknown to another writer.
    let r = h
        .post(
            Some(OWNER),
            "io.atcr.hold.abortUpload",
            json!({"uploadId": id}),
        )
        .await;
    assert_err(&r, 400, "InvalidUploadId");
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.abortUpload",
            json!({"uploadId": id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"], "aborted");

    // Blob reads on a private hold: blob:read (or captain).
    for (who, allowed) in [
        (Some(OWNER), true),
        (Some(WRITER), true),
        (Some(READER), true),
        (Some(ADMIN), false),
        (Some(STRANGER), false),
        (None, false),
    ] {
        let r = h.get_blob(who, &digest).await;
        let st = r.status().as_u16();
        if allowed {
            assert_eq!(st, 200, "{who:?}");
            assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
        } else {
            let e = reply(r).await;
            if who.is_none() {
                assert_err(&e, 401, "AuthRequired");
            } else {
                assert_err(&e, 403, "Forbidden");
            }
        }
        let uri = format!("at://{WRITER}/io.atcr.manifest/{}", "ab".repeat(32));
        let r = h
            .get(
                who,
                "io.atcr.hold.getLayersForManifest",
                &[("manifest", &uri)],
            )
            .await;
        assert_eq!(r.0 == 200, allowed, "{who:?} {:?}", r);
    }

    // getQuota: oneself, or an admin / the captain for others.
    assert_eq!(
        h.get(
            Some(WRITER),
            "io.atcr.hold.getQuota",
            &[("userDid", WRITER)]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.get(Some(ADMIN), "io.atcr.hold.getQuota", &[("userDid", WRITER)])
            .await
            .0,
        200
    );
    assert_eq!(
        h.get(Some(OWNER), "io.atcr.hold.getQuota", &[("userDid", WRITER)])
            .await
            .0,
        200
    );
    assert_err(
        &h.get(
            Some(READER),
            "io.atcr.hold.getQuota",
            &[("userDid", WRITER)],
        )
        .await,
        403,
        "Forbidden",
    );
    assert_err(
        &h.get(
            Some(WRITER),
            "io.atcr.hold.getQuota",
            &[("userDid", "nope")],
        )
        .await,
        400,
        "InvalidUserDid",
    );
    // setStats for someone else's repository: only admins.
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.setStats",
            json!({"ownerDid": OWNER, "repository": "app"}),
        )
        .await;
    assert_err(&r, 400, "InvalidOwner");

    // requestCrew: closed hold -> only the captain (who is already crew) may.
    assert_err(
        &h.post(Some(STRANGER), "io.atcr.hold.requestCrew", json!({}))
            .await,
        403,
        "RegistrationDisabled",
    );
    let r = h
        .post(Some(OWNER), "io.atcr.hold.requestCrew", json!({}))
        .await;
    assert_eq!(r.1["status"], "already_member", "{}", r.1);
    let r = h
        .post(Some(WRITER), "io.atcr.hold.requestCrew", json!({}))
        .await;
    assert_eq!(r.1["status"], "already_member", "{}", r.1);

    // listTiers is public.
    let r = h.get(None, "io.atcr.hold.listTiers", &[]).await;
    assert_eq!(r.0, 200);
    assert_eq!(r.1["tiers"][0]["name"], "deckhand");
    assert_eq!(r.1["tiers"][0]["quota"], 5u64 << 30);
    assert_eq!(r.1["defaultTier"], "deckhand");
    // Wrong HTTP method.
    let r = reply(
        h.s.client
            .get(h.url("io.atcr.hold.notifyManifest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.0, 405);
}

#[tokio::test]
async fn public_hold_and_open_registration() {
    let h = start(true, |c| c.hold.allow_all_crew = true).await;
    let data = oci::bytes(300, 2);
    assert_eq!(h.upload(OWNER, &data, 300).await.0, 200);
    let digest = sha256(&data);
    // Anyone reads blobs of a public hold; HEAD answers the size without a body.
    let r = h.get_blob(None, &digest).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    let head =
        h.s.client
            .head(h.url("com.atproto.sync.getBlob"))
            .query(&[("did", HOLD), ("cid", digest.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(oci::header(&head, "content-length").unwrap(), "300");
    assert_eq!(
        h.get_blob(Some(STRANGER), &digest).await.status().as_u16(),
        200
    );
    let missing = reply(h.get_blob(None, &sha256(b"nope")).await).await;
    assert_err(&missing, 400, "BlobNotFound");
    // A CID names a blob of the hold repo (none stored).
    let cid = "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy";
    assert_err(
        &reply(h.get_blob(None, cid).await).await,
        400,
        "BlobNotFound",
    );
    // Writes still need crew.
    let r = h
        .post(
            Some(STRANGER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await;
    assert_err(&r, 403, "Forbidden");
    // allowAllCrew: a stranger joins (read + write, default tier), then may write; a
    // request for crew:admin is refused.
    let r = h
        .post(
            Some(STRANGER),
            "io.atcr.hold.requestCrew",
            json!({"permissions": ["crew:admin"]}),
        )
        .await;
    assert_err(&r, 400, "InvalidRequest");
    let r = h
        .post(Some(STRANGER), "io.atcr.hold.requestCrew", json!({}))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"], "created");
    assert!(r.1["uri"]
        .as_str()
        .unwrap()
        .starts_with(&format!("at://{HOLD}/io.atcr.hold.crew/")));
    let member = hold(&h.s).crew_member(STRANGER).await.unwrap().unwrap();
    assert_eq!(member.tier.as_deref(), Some("deckhand"));
    assert_eq!(member.permissions.len(), 2);
    let r = h
        .post(Some(STRANGER), "io.atcr.hold.requestCrew", json!({}))
        .await;
    assert_eq!(r.1["status"], "already_member");
    let r = h
        .post(
            Some(STRANGER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
}

async fn upload_checks(h: &Hold) {
    // Three parts, streamed; the blob is invisible until completeUpload.
    let data = oci::bytes(5 * 1024 * 1024 + 123_457, 3);
    let digest = sha256(&data);
    let (_, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await;
    let id = v["uploadId"].as_str().unwrap().to_string();
    let chunks: Vec<&[u8]> = data.chunks(2 * 1024 * 1024 + 7).collect();
    assert_eq!(chunks.len(), 3);
    // Out of order is refused.
    assert_err(
        &h.put_part(WRITER, &id, 2, chunks[1].to_vec()).await,
        400,
        "InvalidPartNumber",
    );
    assert_err(
        &h.put_part(WRITER, &id, 0, chunks[1].to_vec()).await,
        400,
        "InvalidPartNumber",
    );
    let mut parts = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let (st, e) = h.put_part(WRITER, &id, i as u32 + 1, c.to_vec()).await;
        assert_eq!(st, 200, "{e}");
        parts.push(json!({"partNumber": i + 1, "etag": e["etag"]}));
    }
    assert_err(
        &reply(h.get_blob(Some(WRITER), &digest).await).await,
        400,
        "BlobNotFound",
    );
    // A part list that does not match what was uploaded.
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": digest, "parts": &parts[..2]}),
        )
        .await;
    assert_err(&r, 400, "MissingParts");
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": sha256(b"other"), "parts": parts}),
        )
        .await;
    assert_err(&r, 400, "InvalidDigest");
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": digest, "parts": parts}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1, json!({"status": "completed", "digest": digest}));
    assert_err(
        &h.post(
            Some(WRITER),
            "io.atcr.hold.abortUpload",
            json!({"uploadId": id}),
        )
        .await,
        400,
        "InvalidUploadId",
    );
    // Bytes whose hash is not the declared digest are dropped, never visible.
    let lie = sha256(b"what the client claims");
    let (_, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": lie}),
        )
        .await;
    let id2 = v["uploadId"].as_str().unwrap().to_string();
    let (_, e) = h
        .put_part(WRITER, &id2, 1, b"something else".to_vec())
        .await;
    let r = h
        .post(Some(WRITER), "io.atcr.hold.completeUpload", json!({"uploadId": id2, "digest": lie, "parts": [{"partNumber": 1, "etag": e["etag"]}]}))
        .await;
    assert_err(&r, 400, "InvalidDigest");
    assert_err(
        &reply(h.get_blob(Some(WRITER), &lie).await).await,
        400,
        "BlobNotFound",
    );
    assert_err(
        &h.post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": "sha256:xyz"}),
        )
        .await,
        400,
        "InvalidDigest",
    );
    // Through the URLs getPartUploadUrl hands out.
    let small = oci::bytes(70_000, 4);
    let r = h.upload(WRITER, &small, 30_000).await;
    assert_eq!(r.0, 200, "{}", r.1);
}

#[tokio::test]
async fn multipart_upload_round_trip_fs() {
    let h = start(false, |_| {}).await;
    upload_checks(&h).await;
    let data = oci::bytes(5 * 1024 * 1024 + 123_457, 3);
    let r = h.get_blob(Some(READER), &sha256(&data)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
}

#[tokio::test]
async fn multipart_upload_round_trip_s3() {
    let s3 = common::s3::S3Server::start().await;
    let h = start(false, |c| s3.configure(c, "hold-api")).await;
    upload_checks(&h).await;
    // On S3 getBlob answers 307 to a presigned URL that serves the bytes.
    let data = oci::bytes(5 * 1024 * 1024 + 123_457, 3);
    let r = h.get_blob(Some(READER), &sha256(&data)).await;
    assert_eq!(r.status().as_u16(), 307);
    // HEAD answers the size from metadata, never a redirect (AppViews ask before pulls).
    let nsid = "com.atproto.sync.getBlob";
    let digest = sha256(&data);
    let head =
        h.s.client
            .head(h.url(nsid))
            .query(&[("did", HOLD), ("cid", digest.as_str())])
            .bearer_auth(h.dir.token(READER, nsid))
            .send()
            .await
            .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        oci::header(&head, "content-length").unwrap(),
        data.len().to_string()
    );
    let loc = oci::header(&r, "location").unwrap();
    assert!(loc.starts_with(&s3.endpoint), "{loc}");
    let got = reqwest::get(&loc).await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    // Denied readers never see the URL.
    assert_err(
        &reply(h.get_blob(None, &sha256(&data)).await).await,
        401,
        "AuthRequired",
    );
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Ops paths of the next `#commit` frame.
async fn next_commit_paths(ws: &mut WsStream) -> Vec<String> {
    use atcr::atproto::repo::dagcbor::{self, Ipld};
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .unwrap()
        .unwrap();
    let tokio_tungstenite::tungstenite::Message::Binary(b) = msg else {
        panic!("binary frame expected")
    };
    let n = dagcbor::scan_item(&b, 64).unwrap();
    let body = dagcbor::decode_ipld(&b[n..]).unwrap();
    let Ipld::Map(m) = body else { panic!() };
    let Some(Ipld::List(ops)) = m.get("ops") else {
        panic!("ops")
    };
    ops.iter()
        .map(|op| match op {
            Ipld::Map(o) => match o.get("path") {
                Some(Ipld::String(p)) => p.clone(),
                _ => panic!("path"),
            },
            _ => panic!("op"),
        })
        .collect()
}

#[tokio::test]
async fn notify_manifest_quota_stats_firehose_and_user_data() {
    let h = start(false, |c| {
        c.hold.tiers = "tiny=1KB, big=1MB".into();
        c.hold.default_tier = "tiny".into();
    })
    .await;
    let ws_url = format!(
        "{}/xrpc/com.atproto.sync.subscribeRepos",
        h.s.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let (a, b, c) = (sha256(b"a"), sha256(b"b"), sha256(b"c"));

    let body = manifest_body(WRITER, "app", &[(&a, 600), (&b, 300)], Some("v1"));
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", body.clone())
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["success"], true);
    assert_eq!(r.1["operation"], "push");
    assert_eq!(r.1["statsUpdated"], true);
    assert_eq!(r.1["layersCreated"], 2);
    assert!(r.1.get("postCreated").is_none(), "posts are off: {}", r.1);
    // One commit with both layer records reaches the firehose; the push is counted in
    // memory (the stats record is written by the next batch).
    let mut paths = next_commit_paths(&mut ws).await;
    paths.sort();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("io.atcr.hold.layer/")));

    // Re-notifying the same manifest adds no layer records (usage counts digests once).
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", body)
        .await;
    assert_eq!(r.1["layersCreated"], 0, "{}", r.1);
    // A new manifest reusing a (600) and adding c (200): 1100 > 1024 -> QuotaExceeded, and
    // nothing is written.
    let over = manifest_body(WRITER, "other", &[(&a, 600), (&c, 200)], None);
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", over)
        .await;
    assert_err(&r, 400, "QuotaExceeded");
    assert!(
        r.1["message"].as_str().unwrap().contains("tier tiny"),
        "{}",
        r.1
    );
    // The captain has no limit; a bigger tier lifts the user's.
    let r = h
        .post(
            Some(OWNER),
            "io.atcr.hold.notifyManifest",
            manifest_body(OWNER, "huge", &[(&c, 1 << 40)], None),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    add_crew(
        &hold(&h.s),
        WRITER,
        &["blob:read", "blob:write"],
        Some("big"),
    )
    .await;
    let ok = manifest_body(WRITER, "other", &[(&a, 600), (&c, 200)], None);
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", ok.clone())
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    // notifyManifest for another user is refused.
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.notifyManifest",
            manifest_body(OWNER, "x", &[], None),
        )
        .await;
    assert_err(&r, 400, "UserMismatch");
    let mut bad = manifest_body(WRITER, "x", &[], None);
    bad["operation"] = json!("delete");
    assert_err(
        &h.post(Some(WRITER), "io.atcr.hold.notifyManifest", bad)
            .await,
        400,
        "InvalidOperation",
    );
    // A pull bumps the pull count.
    let mut pull = manifest_body(WRITER, "app", &[], None);
    pull["operation"] = json!("pull");
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", pull)
        .await;
    assert_eq!(r.1["operation"], "pull", "{}", r.1);

    let q = h
        .get(
            Some(WRITER),
            "io.atcr.hold.getQuota",
            &[("userDid", WRITER)],
        )
        .await;
    assert_eq!(q.1["uniqueBlobs"], 3, "{}", q.1);
    assert_eq!(q.1["totalSize"], 1100);
    assert_eq!(q.1["tier"], "big");
    assert_eq!(q.1["limit"], 1 << 20);
    let q = h
        .get(Some(OWNER), "io.atcr.hold.getQuota", &[("userDid", OWNER)])
        .await;
    assert!(q.1.get("limit").is_none(), "captain is unlimited: {}", q.1);

    let uri = format!(
        "at://{WRITER}/io.atcr.manifest/{}",
        ok["manifestDigest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let l = h
        .get(
            Some(READER),
            "io.atcr.hold.getLayersForManifest",
            &[("manifest", &uri)],
        )
        .await;
    let layers = l.1["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{}", l.1);
    assert!(layers
        .iter()
        .all(|x| x["userDid"] == WRITER && x["manifest"] == uri.as_str()));

    let e = h
        .get(Some(WRITER), "io.atcr.hold.exportUserData", &[])
        .await;
    assert_eq!(e.0, 200, "{}", e.1);
    assert_eq!(e.1["holdDid"], HOLD);
    assert_eq!(e.1["isCaptain"], false);
    assert_eq!(e.1["crewRecord"]["tier"], "big");
    assert_eq!(e.1["layerRecords"].as_array().unwrap().len(), 4);
    let stats = e.1["statsRecords"].as_array().unwrap();
    let app = stats.iter().find(|s| s["repository"] == "app").unwrap();
    assert_eq!(app["pushCount"], 2);
    assert_eq!(app["pullCount"], 1);

    // deleteUserData: the user's records go (not the blobs, not anyone else's).
    let d = h
        .post(Some(WRITER), "io.atcr.hold.deleteUserData", json!({}))
        .await;
    assert_eq!(
        d.1,
        json!({"success": true, "crewDeleted": true, "layersDeleted": 4, "statsDeleted": 2})
    );
    assert!(hold(&h.s).crew_member(WRITER).await.unwrap().is_none());
    let q = h
        .get(Some(OWNER), "io.atcr.hold.getQuota", &[("userDid", WRITER)])
        .await;
    assert_eq!(q.1["totalSize"], 0);
    // The captain keeps their crew record.
    let d = h
        .post(Some(OWNER), "io.atcr.hold.deleteUserData", json!({}))
        .await;
    assert_eq!(d.1["crewDeleted"], false, "{}", d.1);
    assert_eq!(d.1["layersDeleted"], 1);
    assert!(hold(&h.s).crew_member(OWNER).await.unwrap().is_some());
}

#[tokio::test]
async fn bluesky_post_announces_a_tagged_push() {
    let h = start(false, |c| c.hold.enable_bluesky_posts = true).await;
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.notifyManifest",
            manifest_body(WRITER, "app", &[(&sha256(b"l"), 10)], Some("v2")),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["postCreated"], true);
    let uri = r.1["postUri"].as_str().unwrap();
    let rkey = uri.rsplit('/').next().unwrap();
    assert!(uri.starts_with(&format!("at://{HOLD}/app.bsky.feed.post/")));
    let rec = hold(&h.s)
        .get_record("app.bsky.feed.post", rkey)
        .await
        .unwrap()
        .unwrap()
        .value;
    let text = rec["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{WRITER} pushed app:v2\n")),
        "{text}"
    );
    let f = &rec["facets"][0];
    let (start, end) = (
        f["index"]["byteStart"].as_u64().unwrap() as usize,
        f["index"]["byteEnd"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[start..end], f["features"][0]["uri"].as_str().unwrap());
    assert_eq!(f["features"][0]["$type"], "app.bsky.richtext.facet#link");
    // Untagged pushes are not announced.
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.notifyManifest",
            manifest_body(WRITER, "app", &[], None),
        )
        .await;
    assert!(r.1.get("postCreated").is_none(), "{}", r.1);
    let e = h
        .get(Some(WRITER), "io.atcr.hold.exportUserData", &[])
        .await;
    assert_eq!(e.1["blueskyPosts"].as_array().unwrap().len(), 1, "{}", e.1);
}

/// The registry's own push path reports to the hold: layer records after the push; a push
/// over quota is DENIED before anything is visible.
#[tokio::test]
async fn registry_push_records_layers_and_enforces_quota() {
    let h = start(false, |c| {
        c.hold.tiers = "tiny=2KB".into();
        c.hold.default_tier = "tiny".into();
    })
    .await;
    let name = format!("{WRITER}/app");
    let push = |tag: &'static str, layer: Vec<u8>| {
        let (s, name) = (&h.s, name.clone());
        async move {
            let config = b"{}".to_vec();
            oci::push_blob(s, &name, &config).await;
            oci::push_blob(s, &name, &layer).await;
            let body = oci::image_manifest(
                oci::descriptor(oci::OCI_CONFIG, &config),
                vec![oci::descriptor(oci::OCI_LAYER, &layer)],
            );
            let resp = oci::put_manifest(s, &name, tag, oci::OCI_MANIFEST, &body).await;
            let status = resp.status().as_u16();
            (status, sha256(&body), resp.text().await.unwrap())
        }
    };
    let layer = oci::bytes(1500, 9);
    let (status, digest, text) = push("v1", layer.clone()).await;
    assert_eq!(status, 201, "{text}");
    let uri = format!(
        "at://{WRITER}/io.atcr.manifest/{}",
        digest.trim_start_matches("sha256:")
    );
    let l = h
        .get(
            Some(WRITER),
            "io.atcr.hold.getLayersForManifest",
            &[("manifest", &uri)],
        )
        .await;
    assert_eq!(l.1["layers"].as_array().unwrap().len(), 1, "{}", l.1);
    assert_eq!(l.1["layers"][0]["digest"], sha256(&layer));
    assert_eq!(l.1["layers"][0]["size"], 1500);
    // A second image with another 1500-byte layer goes over 2 KB: DENIED, tag not visible.
    let (status, _, text) = push("v2", oci::bytes(1500, 10)).await;
    assert_eq!(status, 403, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["errors"][0]["code"], "DENIED");
    assert!(text.contains("quota"), "{text}");
    let resp = oci::get(&h.s, &format!("/v2/{name}/manifests/v2")).await;
    assert_eq!(resp.status().as_u16(), 404);
    // Re-pushing the first layer under another tag is fine (it is already counted).
    let (status, _, text) = push("v1b", layer).await;
    assert_eq!(status, 201, "{text}");
}

/// Concurrent pushes of one user cannot overrun the quota together: each fits alone, only
/// one fits with the others.
#[tokio::test]
async fn concurrent_pushes_cannot_overrun_the_quota() {
    let h = start(false, |c| {
        c.hold.tiers = "tiny=2KB".into();
        c.hold.default_tier = "tiny".into();
    })
    .await;
    let name = format!("{WRITER}/app");
    let config = b"{}".to_vec();
    oci::push_blob(&h.s, &name, &config).await;
    let mut bodies = Vec::new();
    for seed in 0..4 {
        let layer = oci::bytes(1500, 40 + seed);
        oci::push_blob(&h.s, &name, &layer).await;
        bodies.push(oci::image_manifest(
            oci::descriptor(oci::OCI_CONFIG, &config),
            vec![oci::descriptor(oci::OCI_LAYER, &layer)],
        ));
    }
    let puts = bodies.iter().enumerate().map(|(i, body)| {
        let (s, name) = (&h.s, name.clone());
        async move {
            let tag = format!("t{i}");
            oci::put_manifest(s, &name, &tag, oci::OCI_MANIFEST, body)
                .await
                .status()
                .as_u16()
        }
    });
    let mut statuses = futures_util::future::join_all(puts).await;
    statuses.sort();
    assert_eq!(statuses, vec![201, 403, 403, 403]);
    let q = h
        .get(
            Some(WRITER),
            "io.atcr.hold.getQuota",
            &[("userDid", WRITER)],
        )
        .await;
    assert!(q.1["totalSize"].as_u64().unwrap() <= 2000, "{}", q.1);
}

/// Quota counts the sizes the blob store knows, not the sizes a caller claims.
#[tokio::test]
async fn quota_uses_stored_sizes() {
    let h = start(false, |c| {
        c.hold.tiers = "tiny=1KB".into();
        c.hold.default_tier = "tiny".into();
    })
    .await;
    let data = oci::bytes(2000, 11);
    assert_eq!(h.upload(WRITER, &data, 2000).await.0, 200);
    let lie = manifest_body(WRITER, "app", &[(&sha256(&data), 10)], None);
    let r = h
        .post(Some(WRITER), "io.atcr.hold.notifyManifest", lie)
        .await;
    assert_err(&r, 400, "QuotaExceeded");
    assert!(
        r.1["message"].as_str().unwrap().contains("adds 2000"),
        "{}",
        r.1
    );
}

async fn upload_survives_restart(h: Hold) {
    let data = oci::bytes(6 * 1024 * 1024 + 5, 12);
    let digest = sha256(&data);
    let (split1, split2) = (5 * 1024 * 1024 + 1, 6 * 1024 * 1024);
    let (_, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await;
    let id = v["uploadId"].as_str().unwrap().to_string();
    let (st, e1) = h.put_part(WRITER, &id, 1, data[..split1].to_vec()).await;
    assert_eq!(st, 200, "{e1}");
    let Hold { s, dir } = h;
    let s = s.restart().await;
    let h = Hold { s, dir };
    // Part 2 after the restart, then the next part number is still checked.
    assert_err(
        &h.put_part(WRITER, &id, 3, data[split1..split2].to_vec())
            .await,
        400,
        "InvalidPartNumber",
    );
    let (st, e2) = h
        .put_part(WRITER, &id, 2, data[split1..split2].to_vec())
        .await;
    assert_eq!(st, 200, "{e2}");
    let (st, e3) = h.put_part(WRITER, &id, 3, data[split2..].to_vec()).await;
    assert_eq!(st, 200, "{e3}");
    let parts = json!([
        {"partNumber": 1, "etag": e1["etag"]},
        {"partNumber": 2, "etag": e2["etag"]},
        {"partNumber": 3, "etag": e3["etag"]},
    ]);
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": digest, "parts": parts}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = h.get_blob(Some(WRITER), &digest).await;
    let status = r.status().as_u16();
    let bytes = if status == 307 {
        let loc = oci::header(&r, "location").unwrap();
        reqwest::get(&loc).await.unwrap().bytes().await.unwrap()
    } else {
        assert_eq!(status, 200);
        r.bytes().await.unwrap()
    };
    assert_eq!(bytes.as_ref(), &data[..]);
    // Finished sessions do not come back after another restart.
    let Hold { s, dir } = h;
    let s = s.restart().await;
    let h = Hold { s, dir };
    assert_err(
        &h.post(
            Some(WRITER),
            "io.atcr.hold.abortUpload",
            json!({"uploadId": id}),
        )
        .await,
        400,
        "InvalidUploadId",
    );
}

#[tokio::test]
async fn upload_survives_restart_fs() {
    upload_survives_restart(start(false, |_| {}).await).await;
}

#[tokio::test]
async fn upload_survives_restart_s3() {
    let s3 = common::s3::S3Server::start().await;
    upload_survives_restart(start(false, |c| s3.configure(c, "hold-restart")).await).await;
}

/// `atcr gc` keeps blobs the hold's layer records name, though no OCI repository links them.
#[tokio::test]
async fn gc_keeps_blobs_of_hold_layer_records() {
    let h = start(false, |_| {}).await;
    let (kept, orphan) = (oci::bytes(500, 20), oci::bytes(600, 21));
    assert_eq!(h.upload(WRITER, &kept, 500).await.0, 200);
    assert_eq!(h.upload(WRITER, &orphan, 600).await.0, 200);
    let r = h
        .post(
            Some(WRITER),
            "io.atcr.hold.notifyManifest",
            manifest_body(WRITER, "app", &[(&sha256(&kept), 500)], None),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    // Just completed and not yet named by a notifyManifest: kept for a grace period, since
    // the AppView sends notifyManifest only after its manifest write.
    let swept = atcr::gc::collect_garbage(
        &h.s.running.state.registry,
        h.s.running.state.hold_api.as_deref(),
        false,
    )
    .await
    .unwrap();
    assert!(swept.is_empty(), "swept {swept:?} during the grace period");
    // The grace period is kept in the hold's redb: a restart does not end it.
    let Hold { s, dir } = h;
    let h = Hold {
        s: s.restart().await,
        dir,
    };
    let swept = atcr::gc::collect_garbage(
        &h.s.running.state.registry,
        h.s.running.state.hold_api.as_deref(),
        false,
    )
    .await
    .unwrap();
    assert!(
        swept.is_empty(),
        "swept {swept:?} after a restart during the grace period"
    );
    // Past the grace period only layer records keep blobs. Aging the completion record is the
    // one thing done behind the server's back (waiting 24 h is not an option): the store is
    // reopened while the server is stopped.
    let Hold { s, dir } = h;
    let s = s
        .restart_with(|config| {
            let path = config.server.data_dir.join("hold.redb");
            let store = atcr::pds::store::HoldStore::open(&path).unwrap();
            let long_ago = 1_000_000;
            for d in [sha256(&kept), sha256(&orphan)] {
                store.note_completed(&d, long_ago, 0).unwrap();
            }
            assert!(store.completed_since(long_ago + 1).unwrap().is_empty());
        })
        .await;
    let h = Hold { s, dir };
    let swept = atcr::gc::collect_garbage(
        &h.s.running.state.registry,
        h.s.running.state.hold_api.as_deref(),
        false,
    )
    .await
    .unwrap();
    let swept: Vec<String> = swept.iter().map(|d| d.to_string()).collect();
    assert_eq!(swept, vec![sha256(&orphan)]);
    assert_eq!(
        h.get_blob(Some(WRITER), &sha256(&kept))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_err(
        &reply(h.get_blob(Some(WRITER), &sha256(&orphan)).await).await,
        400,
        "BlobNotFound",
    );
}

/// The hold's own upload sessions: capped per caller and per address, removed at once when a
/// part fails, and expired when idle (issue 14).
#[tokio::test]
async fn hold_uploads_are_capped_removed_on_failure_and_expire() {
    let h = start(false, |c| {
        c.registry.max_uploads_per_identity = 2;
        c.registry.max_uploads_per_address = 3;
        c.server.per_address_exempt = vec![];
    })
    .await;
    let uploads_dir = h.s.dir.path().join("blobs/uploads");
    async fn initiate(h: &Hold, who: &str, seed: u64) -> (u16, Value) {
        let digest = sha256(&oci::bytes(10, seed));
        h.post(
            Some(who),
            "io.atcr.hold.initiateUpload",
            json!({"digest": digest}),
        )
        .await
    }
    let staged = || -> Vec<String> {
        std::fs::read_dir(&uploads_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hold-"))
            .collect()
    };
    let mut ids = Vec::new();
    for seed in 0..2 {
        let (st, v) = initiate(&h, WRITER, seed).await;
        assert_eq!(st, 200, "{v}");
        ids.push(v["uploadId"].as_str().unwrap().to_string());
    }
    let r = initiate(&h, WRITER, 9).await;
    assert_err(&r, 429, "RateLimitExceeded");
    assert!(r.1["message"]
        .as_str()
        .unwrap()
        .contains("already has 2 uploads"));
    // The address holds 3 at most, whoever asks.
    assert_eq!(initiate(&h, OWNER, 10).await.0, 200);
    let r = initiate(&h, OWNER, 11).await;
    assert_err(&r, 429, "RateLimitExceeded");
    assert!(r.1["message"].as_str().unwrap().contains("your address"));
    assert_eq!(staged().len(), 3);

    // A part whose body breaks off: the upload is removed at once, bytes and all.
    let nsid = "io.atcr.hold.uploadPart";
    {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(h.s.running.addr)
            .await
            .unwrap();
        let head = format!(
            "PUT /xrpc/{nsid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             X-Upload-Id: {}\r\nX-Part-Number: 1\r\nContent-Length: 1000000\r\n\r\n",
            h.dir.token(WRITER, nsid),
            ids[0]
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&[1u8; 64 * 1024]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    } // the client gives up: the connection closes mid-body
    for _ in 0..50 {
        if !staged().contains(&ids[0]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!staged().contains(&ids[0]), "{:?}", staged());
    assert_err(
        &h.put_part(WRITER, &ids[0], 1, vec![1]).await,
        400,
        "InvalidUploadId",
    );
    // Idle sessions expire (30 minutes by default); the caps free up.
    let svc = h.s.running.state.hold_api.clone().unwrap();
    assert_eq!(svc.expire_uploads_at(now() + 29 * 60).await, 0);
    assert_eq!(svc.expire_uploads_at(now() + 31 * 60).await, 2);
    assert!(staged().is_empty(), "{:?}", staged());
    assert_err(
        &h.put_part(WRITER, &ids[1], 1, vec![1]).await,
        400,
        "InvalidUploadId",
    );
    assert_eq!(initiate(&h, WRITER, 12).await.0, 200);
}

/// Pull and push counts follow the documented rule and are written in batches: pulls make
/// no commit, one flush writes everything since in one commit. A multi-arch push counts
/// once (its children pushed by digest are parts of it); a manifest pushed by digest alone
/// counts once its grace for an index has passed. A GET by tag is a pull; Docker's HEAD by
/// tag + GET by digest is one; a GET of a child by digest and a bare HEAD are not.
#[tokio::test]
async fn stats_follow_the_counting_rule_in_batches() {
    // No scanner: its records would be commits of their own.
    let h = start(false, |c| {
        c.hold.tiers = String::new();
        c.scan.enabled = false;
    })
    .await;
    let api = h.s.running.state.hold_api.clone().unwrap();
    let pds = hold(&h.s);
    let name = format!("{WRITER}/app");
    let s = &h.s;
    let config = b"{}".to_vec();
    oci::push_blob(s, &name, &config).await;
    let mut children = Vec::new();
    for (seed, arch) in [(1u64, "amd64"), (2, "arm64")] {
        let layer = oci::bytes(100, seed);
        oci::push_blob(s, &name, &layer).await;
        let body = oci::image_manifest(
            oci::descriptor(oci::OCI_CONFIG, &config),
            vec![oci::descriptor(oci::OCI_LAYER, &layer)],
        );
        let d = oci::push_manifest(s, &name, &sha256(&body), oci::OCI_MANIFEST, &body).await;
        children.push(
            json!({"mediaType": oci::OCI_MANIFEST, "digest": d, "size": body.len(),
                             "platform": {"os": "linux", "architecture": arch}}),
        );
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": children}),
    )
    .unwrap();
    oci::push_manifest(s, &name, "v1", oci::OCI_INDEX, &index).await;
    let (_, solo) = oci::push_image(s, &name, "solo", 3).await;
    // Pushed by digest only, nothing names it: a push of its own, after the grace.
    let layer = oci::bytes(100, 4);
    oci::push_blob(s, &name, &layer).await;
    let lone = oci::image_manifest(
        oci::descriptor(oci::OCI_CONFIG, &config),
        vec![oci::descriptor(oci::OCI_LAYER, &layer)],
    );
    oci::push_manifest(s, &name, &sha256(&lone), oci::OCI_MANIFEST, &lone).await;

    let before = pds.latest_commit();
    let ok = |r: reqwest::Response| assert_eq!(r.status().as_u16(), 200);
    ok(oci::get(s, &format!("/v2/{name}/manifests/v1")).await); // pull 1
    let child = children[0]["digest"].as_str().unwrap();
    ok(oci::get(s, &format!("/v2/{name}/manifests/{child}")).await); // part of pull 1
    ok(oci::head(s, &format!("/v2/{name}/manifests/solo")).await); // docker resolves...
    ok(oci::get(s, &format!("/v2/{name}/manifests/{solo}")).await); // ...and fetches: pull 2
    ok(oci::head(s, &format!("/v2/{name}/manifests/v1")).await); // a HEAD alone: nothing
    let mut waited = 0;
    while api.stats().pending_counts(WRITER, "app").0 < 2 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(api.stats().pending_counts(WRITER, "app"), (2, 3));
    assert_eq!(pds.latest_commit(), before, "pulls made a commit");
    let stats_rkey = atcr::pds::records::stats_rkey(WRITER, "app");
    assert!(pds
        .get_record("io.atcr.hold.stats", &stats_rkey)
        .await
        .unwrap()
        .is_none());

    // One flush, one commit; the lone digest push is still within its grace.
    assert_eq!(api.stats().flush().await.unwrap(), 1);
    let after = pds.latest_commit();
    assert_ne!(after, before);
    let rec = pds
        .get_record("io.atcr.hold.stats", &stats_rkey)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        (rec["pullCount"].as_u64(), rec["pushCount"].as_u64()),
        (Some(2), Some(2)),
        "{rec}"
    );
    assert!(
        rec["lastPull"].is_string() && rec["lastPush"].is_string(),
        "{rec}"
    );
    assert_eq!(rec["ownerDid"], WRITER);
    assert_eq!(rec["repository"], "app");
    // Nothing pending: no commit.
    assert_eq!(api.stats().flush().await.unwrap(), 0);
    // At shutdown the waiting digest push is written too.
    assert_eq!(api.stats().flush_all().await.unwrap(), 1);
    let rec = pds
        .get_record("io.atcr.hold.stats", &stats_rkey)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(rec["pushCount"], 3, "{rec}");
    assert_eq!(rec["pullCount"], 2, "{rec}");
    // A graceful stop writes pending pulls: pull once more, restart, the count is there.
    ok(oci::get(s, &format!("/v2/{name}/manifests/v1")).await);
    let mut waited = 0;
    while api.stats().pending_counts(WRITER, "app").0 < 1 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    drop((api, pds));
    let Hold { s, dir } = h;
    let s = s.restart().await;
    let rec = hold(&s)
        .get_record("io.atcr.hold.stats", &stats_rkey)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(rec["pullCount"], 3, "{rec}");
    drop(dir);
}

/// An AppView that learns the digest only at the end of an OCI upload starts the hold's
/// upload under a temporary name (`uploads/temp-<id>`) and names the digest at completion.
#[tokio::test]
async fn uploads_started_under_a_temporary_name() {
    let h = start(false, |_| {}).await;
    let data = oci::bytes(70_000, 9);
    let digest = sha256(&data);
    let start_temp = |name: &'static str| {
        h.post(
            Some(WRITER),
            "io.atcr.hold.initiateUpload",
            json!({ "digest": name }),
        )
    };
    let (st, v) = start_temp("uploads/temp-0b9f2c1e-aaaa").await;
    assert_eq!(st, 200, "{v}");
    let id = v["uploadId"].as_str().unwrap().to_string();
    let (st, e) = h.put_part(WRITER, &id, 1, data.clone()).await;
    assert_eq!(st, 200, "{e}");
    let parts = json!([{"partNumber": 1, "etag": e["etag"]}]);
    // Not visible before completion.
    assert_eq!(
        h.get_blob(Some(READER), &digest).await.status().as_u16(),
        400
    );
    // A sha512 completion of a sha256-hashed upload is refused, the upload stays usable.
    let (st, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": oci::sha512(&data), "parts": parts}),
        )
        .await;
    assert_err(&(st, v), 400, "InvalidDigest");
    let (st, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": digest, "parts": parts}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["digest"], digest);
    let r = h.get_blob(Some(READER), &digest).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    // A wrong digest at completion discards the bytes.
    let (_, v) = start_temp("uploads/temp-second").await;
    let id = v["uploadId"].as_str().unwrap().to_string();
    let (_, e) = h.put_part(WRITER, &id, 1, b"other bytes".to_vec()).await;
    let wrong = sha256(b"not these");
    let (st, v) = h
        .post(
            Some(WRITER),
            "io.atcr.hold.completeUpload",
            json!({"uploadId": id, "digest": wrong, "parts": [{"partNumber": 1, "etag": e["etag"]}]}),
        )
        .await;
    assert_err(&(st, v), 400, "InvalidDigest");
    assert_eq!(
        h.get_blob(Some(READER), &wrong).await.status().as_u16(),
        400
    );
    // Only that shape of name is a temporary name.
    for bad in [
        "uploads/temp-",
        "uploads/temp-../../x",
        "uploads/other",
        "temp-1",
    ] {
        let (st, v) = h
            .post(
                Some(WRITER),
                "io.atcr.hold.initiateUpload",
                json!({ "digest": bad }),
            )
            .await;
        assert_err(&(st, v), 400, "InvalidDigest");
    }
}

/// The AppView's hold client (`atcr::hold_client`) against the real hold API: the same calls
/// a remote AppView makes (temporary-name upload in streamed parts, completion, HEAD/GET
/// getBlob with and without a token, refusals keeping the hold's error names, notify,
/// quota), and an unreachable hold reported as unavailable.
#[tokio::test]
async fn the_hold_client_speaks_the_hold_api() {
    use atcr::hold_client::{
        self as hc, BlobAt, BlobFetch, HoldClient, HoldClientConfig, HoldEndpoint, UploadedPart,
    };
    let h = start(false, |_| {}).await;
    let client = HoldClient::new(HoldClientConfig {
        allow_private: true,
        backoff: std::time::Duration::from_millis(10),
        ..Default::default()
    });
    let ep = HoldEndpoint {
        did: HOLD.into(),
        url: h.s.url(""),
    };
    let tok = |who: &str, nsid: &str| h.dir.token(who, nsid);
    let data = oci::bytes(3 * 1024 * 1024 + 17, 21);
    let digest = sha256(&data);
    let id = client
        .initiate_upload(
            &ep,
            &tok(WRITER, hc::INITIATE_UPLOAD),
            "uploads/temp-client-1",
        )
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(1024 * 1024 + 3).enumerate() {
        let n = i as u32 + 1;
        // A stream of small pieces, like an OCI client's body.
        let pieces: Vec<std::io::Result<bytes::Bytes>> = chunk
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body: atcr::blob::ChunkStream = Box::pin(futures_util::stream::iter(pieces));
        let etag = client
            .upload_part(
                &ep,
                &tok(WRITER, hc::UPLOAD_PART),
                &id,
                n,
                body,
                Some(chunk.len() as u64),
            )
            .await
            .unwrap();
        parts.push(UploadedPart {
            part_number: n,
            etag,
        });
    }
    assert_eq!(
        client
            .blob_at(&ep, Some(&tok(READER, hc::GET_BLOB)), &digest)
            .await
            .unwrap(),
        BlobAt::Missing,
        "nothing visible before completion"
    );
    client
        .complete_upload(&ep, &tok(WRITER, hc::COMPLETE_UPLOAD), &id, &digest, &parts)
        .await
        .unwrap();
    assert_eq!(
        client
            .blob_at(&ep, Some(&tok(READER, hc::GET_BLOB)), &digest)
            .await
            .unwrap(),
        BlobAt::Here {
            size: Some(data.len() as u64)
        }
    );
    match client
        .get_blob(&ep, Some(&tok(READER, hc::GET_BLOB)), &digest)
        .await
        .unwrap()
    {
        BlobFetch::Stream { len, stream } => {
            use futures_util::TryStreamExt;
            assert_eq!(len, Some(data.len() as u64));
            let got: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
            assert_eq!(got.concat(), data);
        }
        _ => panic!("the filesystem hold streams the bytes"),
    }
    // This hold is private: anonymous reads need a login.
    let e = client.blob_at(&ep, None, &digest).await.unwrap_err();
    assert!(e.is_auth_required(), "{e}");
    // A stranger is refused with the hold's own error name and reason.
    let e = client
        .initiate_upload(&ep, &tok(STRANGER, hc::INITIATE_UPLOAD), &digest)
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    assert!(e.reason().contains("blob:write"), "{e}");
    let e = client
        .request_crew(&ep, &tok(STRANGER, hc::REQUEST_CREW))
        .await
        .unwrap_err();
    assert_eq!(e.error_name(), Some("RegistrationDisabled"), "{e}");
    // A token for another method is refused (lxm).
    let e = client
        .initiate_upload(&ep, &tok(WRITER, hc::UPLOAD_PART), &digest)
        .await
        .unwrap_err();
    assert!(e.is_auth_required(), "{e}");
    // Abort, quota, notify.
    let id = client
        .initiate_upload(&ep, &tok(WRITER, hc::INITIATE_UPLOAD), &digest)
        .await
        .unwrap();
    client
        .abort_upload(&ep, &tok(WRITER, hc::ABORT_UPLOAD), &id)
        .await
        .unwrap();
    let q = client
        .get_quota(&ep, &tok(WRITER, hc::GET_QUOTA), WRITER)
        .await
        .unwrap();
    assert_eq!(q.total_size, 0);
    assert_eq!(q.tier.as_deref(), Some("deckhand"));
    let out = client
        .notify_manifest(
            &ep,
            &tok(WRITER, hc::NOTIFY_MANIFEST),
            &json!({
                "repository": "app", "userDid": WRITER, "manifestDigest": sha256(b"m"),
                "manifest": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "layers": [{"digest": digest, "size": data.len(), "mediaType": "application/vnd.oci.image.layer.v1.tar"}]},
                "operation": "push"}),
        )
        .await
        .unwrap();
    assert_eq!(out["layersCreated"], 1, "{out}");
    let q = client
        .get_quota(&ep, &tok(WRITER, hc::GET_QUOTA), WRITER)
        .await
        .unwrap();
    assert_eq!(q.total_size, data.len() as u64);
    // Nobody listening: unavailable, naming the hold, after the retries.
    let gone = HoldEndpoint {
        did: "did:web:gone.example".into(),
        url: "http://127.0.0.1:9".into(),
    };
    let e = client.blob_at(&gone, None, &digest).await.unwrap_err();
    assert!(
        e.is_unavailable() && e.to_string().contains("did:web:gone.example"),
        "{e}"
    );
}
