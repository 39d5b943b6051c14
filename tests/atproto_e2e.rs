//! Token auth and manifest records against the real reference PDS + PLC (`tests/support/
//! atnet`). Skipped unless `ATCR_TEST_ATNET` is set; `bash tests/atproto-e2e.sh` runs them.

#[path = "support/atnet.rs"]
mod atnet;
mod common;

use atnet::Atnet;
use base64::Engine;
use common::oci::{self, OCI_MANIFEST};
use common::TestServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn server(net: &Atnet) -> TestServer {
    let (plc, pds) = (net.plc.clone(), net.pds.clone());
    TestServer::start_with(move |c| {
        c.server.listen = format!("127.0.0.1:{}", free_port());
        c.auth.mode = "atproto".into();
        c.identity.plc_url = plc;
        c.identity.handle_resolver = pds;
        // The hold has no captain here: pushers join its crew with their first push.
        c.hold.allow_all_crew = true;
        // Every server of this suite (and the binary of atproto-e2e.sh) is one hold,
        // did:web:localhost: the sailor profile alice's first login writes names it, and a
        // profile naming another server's hold would send her pushes there (federation).
        c.hold.public_host = "localhost".into();
    })
    .await
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

async fn token(s: &TestServer, user: &str, pass: &str, scope: &str) -> reqwest::Response {
    s.client
        .get(s.url("/auth/token"))
        .query(&[("service", "x"), ("scope", scope)])
        .header("Authorization", basic(user, pass))
        .send()
        .await
        .unwrap()
}

async fn token_ok(s: &TestServer, user: &str, pass: &str, scope: &str) -> String {
    let resp = token(s, user, pass, scope).await;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "token: {body}");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    body["token"].as_str().unwrap().to_string()
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The same server, with every request carrying `Authorization: Bearer <token>`.
fn with_token(mut s: TestServer, token: &str) -> TestServer {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    s.client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(h)
        .build()
        .unwrap();
    s
}

async fn list_records(net: &Atnet, did: &str, collection: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/xrpc/com.atproto.repo.listRecords", net.pds))
        .query(&[("repo", did), ("collection", collection), ("limit", "100")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn login_with_app_password_and_challenges() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;

    // /v2/ without a token: 401 + a Bearer challenge (docker login starts here).
    let resp = s.client.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let ch = oci::header(&resp, "www-authenticate").unwrap();
    assert!(ch.starts_with("Bearer realm=\"http://"), "{ch}");
    assert!(ch.contains("/auth/token\",service=\""), "{ch}");

    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        "repository:alice.test/app:pull,push",
    )
    .await;
    let c = claims(&t);
    assert_eq!(c["sub"], alice.did);
    assert_eq!(c["iss"], c["aud"]);
    assert_eq!(c["access"][0]["name"], "alice.test/app");
    assert_eq!(
        c["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);

    let resp = s
        .client
        .get(s.url("/v2/"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A tampered token is refused.
    let resp = s
        .client
        .get(s.url("/v2/"))
        .bearer_auth(format!("{t}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Login by DID works too.
    let t = token_ok(
        &s,
        &alice.did,
        &alice.app_password,
        "repository:alice.test/app:pull",
    )
    .await;
    assert_eq!(claims(&t)["sub"], alice.did);

    // Wrong password: 401 UNAUTHORIZED.
    let resp = token(
        &s,
        "alice.test",
        "wrong-password",
        "repository:alice.test/app:pull",
    )
    .await;
    oci::assert_error(resp, 401, "UNAUTHORIZED").await;
    // Unknown handle: 401.
    let resp = token(&s, "nobody.test", "x", "").await;
    oci::assert_error(resp, 401, "UNAUTHORIZED").await;

    // The first login created the sailor profile with this registry's hold.
    let profiles = list_records(&net, &alice.did, "io.atcr.sailor.profile").await;
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    let p = &profiles[0]["value"];
    assert!(profiles[0]["uri"]
        .as_str()
        .unwrap()
        .ends_with("/io.atcr.sailor.profile/self"));
    assert_eq!(p["defaultHold"], "did:web:localhost");
    assert!(p["createdAt"].is_string());
    s.running.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;
    for _ in 0..5 {
        let resp = token(&s, "alice.test", "not-it", "").await;
        assert_eq!(resp.status().as_u16(), 401);
    }
    // Even the right password waits now (per address and per identity).
    let resp = token(&s, "alice.test", &alice.app_password, "").await;
    oci::assert_error(resp, 429, "TOOMANYREQUESTS").await;
    s.running.stop().await;
}

#[tokio::test]
async fn push_writes_records_and_pull_fetches_them() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;
    let repo = "alice.test/records-test";
    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        &format!("repository:{repo}:pull,push"),
    )
    .await;
    let s = with_token(s, &t);
    let (body, digest) = oci::push_image(&s, repo, "v1", 7).await;
    let hex = digest.strip_prefix("sha256:").unwrap();

    // Records in alice's PDS, field for field.
    let manifests = list_records(&net, &alice.did, "io.atcr.manifest").await;
    let m = manifests
        .iter()
        .find(|r| r["uri"].as_str().unwrap().ends_with(hex))
        .unwrap_or_else(|| panic!("no manifest record: {manifests:?}"));
    assert_eq!(
        m["uri"],
        format!("at://{}/io.atcr.manifest/{hex}", alice.did)
    );
    let v = &m["value"];
    assert_eq!(v["$type"], "io.atcr.manifest");
    assert_eq!(v["repository"], "records-test");
    assert_eq!(v["digest"], digest);
    assert_eq!(v["mediaType"], OCI_MANIFEST);
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["manifestBlob"]["$type"], "blob");
    assert_eq!(v["manifestBlob"]["mimeType"], OCI_MANIFEST);
    assert_eq!(v["manifestBlob"]["size"], body.len());
    assert_eq!(v["config"]["mediaType"], oci::OCI_CONFIG);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    assert!(v["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(v["holdDid"], "did:web:localhost");
    assert!(v["createdAt"].is_string());
    let tags = list_records(&net, &alice.did, "io.atcr.tag").await;
    let tag = tags
        .iter()
        .find(|r| r["value"]["repository"] == "records-test" && r["value"]["tag"] == "v1")
        .unwrap_or_else(|| panic!("no tag record: {tags:?}"));
    assert_eq!(tag["value"]["$type"], "io.atcr.tag");
    assert_eq!(tag["value"]["manifest"], m["uri"]);
    assert!(tag["value"]["updatedAt"].is_string());
    assert!(tag["uri"]
        .as_str()
        .unwrap()
        .ends_with("/io.atcr.tag/records-test:v1"));

    // Anonymous pull from the local copy.
    let anon = reqwest::Client::new();
    let resp = anon
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), body);

    // Another registry (empty local store) fetches it from the PDS, digest-checked.
    let other = server(&net).await;
    for reference in ["v1", digest.as_str()] {
        let resp = anon
            .get(other.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "pull {reference} from the PDS");
        assert_eq!(oci::header(&resp, "docker-content-digest").unwrap(), digest);
        assert_eq!(resp.bytes().await.unwrap().to_vec(), body);
    }
    let resp = anon
        .get(other.url(&format!("/v2/{repo}/manifests/nope")))
        .send()
        .await
        .unwrap();
    oci::assert_error(resp, 404, "MANIFEST_UNKNOWN").await;

    // Tag delete and manifest delete update the PDS.
    let resp = oci::delete(&s, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(resp.status().as_u16(), 202);
    let tags = list_records(&net, &alice.did, "io.atcr.tag").await;
    assert!(!tags
        .iter()
        .any(|r| r["value"]["repository"] == "records-test"));
    let resp = oci::delete(&s, &format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 202);
    let manifests = list_records(&net, &alice.did, "io.atcr.manifest").await;
    assert!(!manifests
        .iter()
        .any(|r| r["uri"].as_str().unwrap().ends_with(hex)));
    other.running.stop().await;
    s.running.stop().await;
}

#[tokio::test]
async fn bob_cannot_push_into_alices_namespace() {
    let Some(net) = atnet::atnet() else { return };
    let bob = net.account("bob.test");
    let s = server(&net).await;
    let t = token_ok(
        &s,
        "bob.test",
        &bob.app_password,
        "repository:alice.test/app:pull,push",
    )
    .await;
    // Bob gets pull only on alice's repository.
    assert_eq!(
        claims(&t)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let resp = s
        .client
        .post(s.url("/v2/alice.test/app/blobs/uploads/"))
        .bearer_auth(&t)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    oci::assert_error(resp, 403, "DENIED").await;
    // By DID as well.
    let alice = net.account("alice.test");
    let resp = s
        .client
        .put(s.url(&format!("/v2/{}/app/manifests/x", alice.did)))
        .bearer_auth(&t)
        .body("{}")
        .send()
        .await
        .unwrap();
    oci::assert_error(resp, 403, "DENIED").await;
    // Without a token: 401 with a push scope in the challenge.
    let resp = s
        .client
        .post(s.url("/v2/alice.test/app/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let ch = oci::header(&resp, "www-authenticate").unwrap();
    assert!(
        ch.contains("scope=\"repository:alice.test/app:pull,push\""),
        "{ch}"
    );
    // Anonymous token: pull only.
    let resp = s
        .client
        .get(s.url("/auth/token"))
        .query(&[("scope", "repository:alice.test/app:pull,push")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let c = claims(v["token"].as_str().unwrap());
    assert_eq!(c["sub"], "");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["pull"]));
    s.running.stop().await;
}

/// Stops the network: run last and alone (`ATCR_TEST_ATNET_STOP=1`, see atproto-e2e.sh).
#[tokio::test]
async fn pds_down_fails_the_manifest_put_cleanly() {
    if std::env::var("ATCR_TEST_ATNET_STOP").is_err() {
        eprintln!("SKIPPED: needs ATCR_TEST_ATNET_STOP=1 (it stops the test network)");
        return;
    }
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;
    let repo = "alice.test/down";
    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        &format!("repository:{repo}:pull,push"),
    )
    .await;
    let s = with_token(s, &t);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = oci::bytes(5000, 3);
    oci::push_blob(&s, repo, &config).await;
    oci::push_blob(&s, repo, &layer).await;
    let body = oci::image_manifest(
        oci::descriptor(oci::OCI_CONFIG, &config),
        vec![oci::descriptor(oci::OCI_LAYER, &layer)],
    );
    // A pull miss: neither here nor in alice's PDS. The answer is remembered for a while,
    // so a client polling for it does not reach the PDS each time: with the PDS down, the
    // same miss is still a 404 while a name not asked before needs the PDS (503).
    let anon = reqwest::Client::new();
    let pull = |reference: &'static str| {
        let req = anon.get(s.url(&format!("/v2/{repo}/manifests/{reference}")));
        async move { req.send().await.unwrap() }
    };
    oci::assert_error(pull("not-yet").await, 404, "MANIFEST_UNKNOWN").await;
    Atnet::down();
    oci::assert_error(pull("not-yet").await, 404, "MANIFEST_UNKNOWN").await;
    let resp = pull("never-asked").await;
    assert_eq!(
        resp.status().as_u16(),
        503,
        "{}",
        resp.text().await.unwrap()
    );
    let resp = oci::put_manifest(&s, repo, "latest", OCI_MANIFEST, &body).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("UNAVAILABLE"), "{text}");
    assert!(text.contains("PDS of did:plc:"), "{text}");
    assert!(text.contains("retry the push"), "{text}");
    // Nothing visible locally; the blobs are kept.
    let local = s
        .running
        .state
        .registry
        .tags(&repo.parse().unwrap(), None, None)
        .await;
    assert!(local.map(|(t, _)| t.is_empty()).unwrap_or(true));
    let resp = oci::head(&s, &format!("/v2/{repo}/blobs/{}", oci::sha256(&layer))).await;
    assert_eq!(resp.status().as_u16(), 200);
    s.running.stop().await;
}

#[tokio::test]
async fn identity_and_xrpc_against_the_reference_pds() {
    use atcr::atproto::identity::{IdentityConfig, Resolver};
    use atcr::atproto::xrpc::XrpcClient;
    use atcr::auth::sessions::{PdsSession, SessionStore};
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let xrpc = XrpcClient::default();
    let resolver = Resolver::new(
        IdentityConfig {
            plc_url: net.plc.clone(),
            handle_resolver: Some(net.pds.clone()),
            ..Default::default()
        },
        xrpc.clone(),
    );
    // Handle -> DID -> document -> PDS + key, round trip checked.
    let id = resolver.resolve("Alice.Test").await.unwrap();
    assert_eq!(id.did, alice.did);
    assert_eq!(id.handle.as_deref(), Some("alice.test"));
    // The PDS's public URL is localhost with the port it listens on.
    let port = net.pds.rsplit(':').next().unwrap();
    assert_eq!(id.pds, format!("http://localhost:{port}"));
    assert!(id.doc.signing_key().is_some());
    let by_did = resolver.resolve(&alice.did).await.unwrap();
    assert_eq!(by_did.handle.as_deref(), Some("alice.test"));
    assert!(resolver.resolve("nobody.test").await.is_err());
    assert!(resolver
        .resolve("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
        .await
        .is_err());

    // Sessions: wrong password keeps the XRPC error name; refresh gives new tokens.
    let e = xrpc
        .create_session(&id.pds, &alice.did, "wrong")
        .await
        .unwrap_err();
    assert!(e.is_auth_failure(), "{e}");
    assert_eq!(e.error_name(), Some("AuthenticationRequired"), "{e}");
    let session = xrpc
        .create_session(&id.pds, "alice.test", &alice.app_password)
        .await
        .unwrap();
    assert_eq!(session.did, alice.did);

    // Service auth for a hold DID (did:web, as holds use).
    let t = xrpc
        .get_service_auth(
            &id.pds,
            &session.access_jwt,
            "did:web:registry.test",
            Some("com.atproto.repo.uploadBlob"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(t.split('.').count(), 3);

    // Sealed session store: a stale access token is refreshed once and stored again.
    let dir = tempfile::tempdir().unwrap();
    let store = atcr::registry::store::MetaStore::open(&dir.path().join("r.redb")).unwrap();
    let ss = SessionStore::new(store, [9u8; 32], xrpc.clone());
    let stale = PdsSession {
        pds: id.pds.clone(),
        session,
    };
    ss.put(&stale).await.unwrap();
    let fresh = ss.refresh(&stale).await.unwrap();
    // (Access JWTs minted in the same second can be identical; refresh JWTs carry a jti.)
    assert_ne!(fresh.session.refresh_jwt, stale.session.refresh_jwt);
    assert_eq!(ss.get(&alice.did).await.unwrap(), fresh);
    // The old refresh token is spent; the stored one works.
    let recs = ss
        .with_session(&alice.did, |s| {
            let xrpc = xrpc.clone();
            async move {
                xrpc.list_records(&s.pds, &s.session.did, "io.atcr.sailor.profile", 10, None)
                    .await
            }
        })
        .await
        .unwrap();
    assert!(recs.records.len() <= 1);
}

/// Service tokens minted by the reference PDS (`com.atproto.server.getServiceAuth`) for
/// alice are accepted by the hold; a forged, an expired and a wrong-audience one are not.
#[tokio::test]
async fn hold_accepts_service_tokens_from_the_reference_pds() {
    use atcr::atproto::repo::crypto::KeyAlgorithm;
    use atcr::atproto::repo::SigningKey;
    use atcr::atproto::xrpc::XrpcClient;
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let bob = net.account("bob.test");
    let owner = alice.did.clone();
    let (plc, pds) = (net.plc.clone(), net.pds.clone());
    let s = TestServer::start_with(move |c| {
        c.server.listen = format!("127.0.0.1:{}", free_port());
        c.auth.mode = "atproto".into();
        c.identity.plc_url = plc;
        c.identity.handle_resolver = pds;
        c.hold.owner_did = owner;
        c.hold.public = false;
    })
    .await;
    let hold_did = s.running.state.hold.as_ref().unwrap().did().to_string();
    assert!(hold_did.starts_with("did:web:localhost%3A"), "{hold_did}");
    let xrpc = XrpcClient::default();
    let session = xrpc
        .create_session(&net.pds, "alice.test", &alice.app_password)
        .await
        .unwrap();
    let mint = |aud: String, lxm: Option<&'static str>, exp: Option<u64>| {
        let (xrpc, pds, jwt) = (xrpc.clone(), net.pds.clone(), session.access_jwt.clone());
        async move { xrpc.get_service_auth(&pds, &jwt, &aud, lxm, exp).await }
    };
    let call = |nsid: &'static str, token: String| {
        let req = s
            .client
            .get(s.url(&format!("/xrpc/{nsid}")))
            .query(&[("userDid", alice.did.as_str())])
            .bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v)
        }
    };
    const QUOTA: &str = "io.atcr.hold.getQuota";

    // Accepted: the real PDS's ES256K token, bound to the method.
    let good = mint(hold_did.clone(), Some(QUOTA), None).await.unwrap();
    let r = call(QUOTA, good.clone()).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["userDid"], alice.did);
    let c = claims(&good);
    assert_eq!(c["iss"], alice.did);
    assert_eq!(c["aud"], hold_did);
    assert_eq!(c["lxm"], QUOTA);
    // The same token for another method: refused.
    let r = call("io.atcr.hold.exportUserData", good.clone()).await;
    assert_eq!(r.0, 401, "{}", r.1);
    assert_eq!(r.1["error"], "BadJwtLexiconMethod");

    // Wrong audience.
    let other = mint("did:web:elsewhere.test".into(), Some(QUOTA), None)
        .await
        .unwrap();
    let r = call(QUOTA, other).await;
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (401, Some("BadJwtAudience")),
        "{}",
        r.1
    );

    // Forged: the PDS's claims, signed by a key that is not alice's.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forger = SigningKey::from_bytes(KeyAlgorithm::K256, &[77u8; 32]).unwrap();
    let forged = atcr::pds::service_auth::sign_token(&forger, &c);
    let r = call(QUOTA, forged).await;
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (401, Some("BadJwtSignature")),
        "{}",
        r.1
    );
    // Tampered: alice's signature over claims changed to bob's DID.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut as_bob = c.clone();
    as_bob["iss"] = bob.did.clone().into();
    parts[1] = b64.encode(serde_json::to_vec(&as_bob).unwrap());
    let r = call(QUOTA, parts.join(".")).await;
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (401, Some("BadJwtSignature")),
        "{}",
        r.1
    );

    // Crew rules apply to PDS-minted tokens: bob is not crew of this private hold.
    let bob_session = xrpc
        .create_session(&net.pds, "bob.test", &bob.app_password)
        .await
        .unwrap();
    let bob_token = xrpc
        .get_service_auth(
            &net.pds,
            &bob_session.access_jwt,
            &hold_did,
            Some("io.atcr.hold.initiateUpload"),
            None,
        )
        .await
        .unwrap();
    let r = s
        .client
        .post(s.url("/xrpc/io.atcr.hold.initiateUpload"))
        .bearer_auth(bob_token)
        .json(&serde_json::json!({"digest": oci::sha256(b"x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Expired: the PDS refuses an exp in the past, so ask for a short one and outlive it
    // (plus the hold's clock leeway).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let past = mint(hold_did.clone(), Some(QUOTA), Some(now - 30)).await;
    assert_eq!(past.unwrap_err().error_name(), Some("BadExpiration"));
    let short = mint(hold_did.clone(), Some(QUOTA), Some(now + 2))
        .await
        .unwrap();
    assert_eq!(call(QUOTA, short.clone()).await.0, 200);
    let wait = 2 + atcr::pds::service_auth::LEEWAY_SECS + 1;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = call(QUOTA, short).await;
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (401, Some("ExpiredToken")),
        "{}",
        r.1
    );
}
