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
    assert!(
        p["registryDomain"]
            .as_str()
            .unwrap()
            .starts_with("localhost:"),
        "{p}"
    );
    // A login from podman (containers/image's User-Agent) names the client in the profile.
    let resp = s
        .client
        .get(s.url("/auth/token"))
        .query(&[("service", "x"), ("scope", "")])
        .header("Authorization", basic("alice.test", &alice.app_password))
        .header(
            "User-Agent",
            "containers/5.23.1 (github.com/containers/image)",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let profiles = list_records(&net, &alice.did, "io.atcr.sailor.profile").await;
    assert_eq!(profiles[0]["value"]["ociClient"], "podman");
    assert!(profiles[0]["value"]["updatedAt"].is_string());
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
    // This address is done guessing for alice, even with the right password...
    let resp = token(&s, "alice.test", &alice.app_password, "").await;
    oci::assert_error(resp, 429, "TOOMANYREQUESTS").await;
    // ...and by DID (the limit is keyed by the resolved DID, not by what was typed)...
    let resp = token(&s, &alice.did, "not-it-either", "").await;
    oci::assert_error(resp, 429, "TOOMANYREQUESTS").await;
    // ...but alice, from her own address (through the proxy on this host), is not locked out.
    let resp = s
        .client
        .get(s.url("/auth/token"))
        .header("Authorization", basic("alice.test", &alice.app_password))
        .header("X-Forwarded-For", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
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

    // Records in alice's PDS, field for field; the manifest record's key is a TID.
    let manifests = list_records(&net, &alice.did, "io.atcr.manifest").await;
    let m = manifests
        .iter()
        .find(|r| r["value"]["digest"] == digest && r["value"]["repository"] == "records-test")
        .unwrap_or_else(|| panic!("no manifest record: {manifests:?}"));
    let uri = m["uri"].as_str().unwrap();
    let rkey = uri.rsplit('/').next().unwrap();
    assert!(
        uri.starts_with(&format!("at://{}/io.atcr.manifest/", alice.did)),
        "{uri}"
    );
    atcr::atproto::repo::Tid::parse(rkey).unwrap_or_else(|e| panic!("{rkey} is not a TID: {e}"));
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
    assert_eq!(tag["value"]["mediaType"], OCI_MANIFEST);
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
    assert!(!manifests.iter().any(|r| r["uri"] == uri));
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
    // The PDS's public URL (its port follows ATNET_PDS_PORT).
    assert_eq!(id.pds, net.pds_public_url);
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
            &atcr::atproto::xrpc::Credential::Bearer(session.access_jwt.clone()),
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
        login: None,
    };
    ss.put(&stale).await.unwrap();
    let fresh = ss.refresh(&stale).await.unwrap();
    // (Access JWTs minted in the same second can be identical; refresh JWTs carry a jti.)
    assert_ne!(fresh.session.refresh_jwt, stale.session.refresh_jwt);
    assert_eq!(ss.get(&alice.did).await.unwrap(), fresh);
    // The old refresh token is spent; the stored one works.
    let recs = ss
        .with_agent(&alice.did, |s| {
            let xrpc = xrpc.clone();
            async move {
                xrpc.list_records(&s.pds, &s.did, "io.atcr.sailor.profile", 10, None)
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
        async move {
            let auth = atcr::atproto::xrpc::Credential::Bearer(jwt);
            xrpc.get_service_auth(&pds, &auth, &aud, lxm, exp).await
        }
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
            &atcr::atproto::xrpc::Credential::Bearer(bob_session.access_jwt.clone()),
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

// ---- records as atcr.io's lexicons define them (issue 15) ---------------------------------

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A session on the PDS with the main password (for writes that are not atcr's).
async fn pds_session(net: &Atnet, handle: &str) -> String {
    let acct = net.account(handle);
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.server.createSession", net.pds))
        .json(&serde_json::json!({"identifier": acct.handle, "password": acct.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["accessJwt"].as_str().expect("session").to_string()
}

async fn pds_post(
    net: &Atnet,
    jwt: &str,
    method: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/xrpc/{method}", net.pds))
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method}: {v}");
    v
}

async fn get_record(
    net: &Atnet,
    did: &str,
    collection: &str,
    rkey: &str,
) -> Option<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get(format!("{}/xrpc/com.atproto.repo.getRecord", net.pds))
        .query(&[("repo", did), ("collection", collection), ("rkey", rkey)])
        .send()
        .await
        .unwrap();
    resp.status().is_success().then_some(())?;
    resp.json().await.ok()
}

/// Pushes a config + layer (distinct per seed) and an image manifest with `annotations`.
async fn push_annotated(
    s: &TestServer,
    repo: &str,
    reference: &str,
    seed: u64,
    annotations: serde_json::Value,
) -> (Vec<u8>, String) {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let layer = oci::bytes(700 + seed as usize % 50, seed);
    oci::push_blob(s, repo, &config).await;
    oci::push_blob(s, repo, &layer).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": oci::descriptor(oci::OCI_CONFIG, &config),
        "layers": [oci::descriptor(oci::OCI_LAYER, &layer)],
        "annotations": annotations,
    }))
    .unwrap();
    let digest = oci::push_manifest(s, repo, reference, OCI_MANIFEST, &body).await;
    (body, digest)
}

/// One image pushed into two repositories of one user is two manifest records, each named
/// by its own repository's tag; a re-push into the same repository reuses its record.
#[tokio::test]
async fn one_image_in_two_repositories_is_two_manifest_records() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;
    let sfx = rand_suffix();
    let (single, late) = (format!("single-{sfx}"), format!("late-{sfx}"));
    let scope = |r: &str| format!("repository:alice.test/{r}:pull,push");
    let t = token_ok(&s, "alice.test", &alice.app_password, &scope(&single)).await;
    let s = with_token(s, &t);
    let (body, digest) = oci::push_image(&s, &format!("alice.test/{single}"), "v1", 31).await;
    // The same bytes into the second repository.
    let t = token_ok(&s, "alice.test", &alice.app_password, &scope(&late)).await;
    let s = with_token(s, &t);
    let (body2, digest2) = oci::push_image(&s, &format!("alice.test/{late}"), "v1", 31).await;
    assert_eq!((&body2, &digest2), (&body, &digest));
    let records = list_records(&net, &alice.did, "io.atcr.manifest").await;
    let mine: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["value"]["digest"] == digest)
        .collect();
    let mut repos: Vec<&str> = mine
        .iter()
        .map(|r| r["value"]["repository"].as_str().unwrap())
        .collect();
    repos.sort();
    let mut want = vec![late.as_str(), single.as_str()];
    want.sort();
    assert_eq!(repos, want, "{mine:?}");
    let uri_of = |repo: &str| {
        mine.iter()
            .find(|r| r["value"]["repository"] == repo)
            .unwrap()["uri"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (u_single, u_late) = (uri_of(&single), uri_of(&late));
    assert_ne!(u_single, u_late);
    for u in [&u_single, &u_late] {
        let rkey = u.rsplit('/').next().unwrap();
        atcr::atproto::repo::Tid::parse(rkey).unwrap();
    }
    // Each tag names its own repository's record.
    let tags = list_records(&net, &alice.did, "io.atcr.tag").await;
    let tag_uri = |repo: &str, tag: &str| {
        tags.iter()
            .find(|r| r["value"]["repository"] == repo && r["value"]["tag"] == tag)
            .map(|r| r["value"]["manifest"].as_str().unwrap().to_string())
    };
    assert_eq!(tag_uri(&late, "v1").as_deref(), Some(u_late.as_str()));
    assert_eq!(tag_uri(&single, "v1").as_deref(), Some(u_single.as_str()));
    // The record a tag names says the tag's repository.
    let rec = get_record(
        &net,
        &alice.did,
        "io.atcr.manifest",
        u_late.rsplit('/').next().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(rec["value"]["repository"], late.as_str());

    // A re-push of the same manifest into `single` under another tag: the same record.
    let t = token_ok(&s, "alice.test", &alice.app_password, &scope(&single)).await;
    let s = with_token(s, &t);
    let resp = oci::put_manifest(
        &s,
        &format!("alice.test/{single}"),
        "v2",
        OCI_MANIFEST,
        &body,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let records = list_records(&net, &alice.did, "io.atcr.manifest").await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["value"]["digest"] == digest)
            .count(),
        2,
        "a re-push made a new record"
    );
    let tags = list_records(&net, &alice.did, "io.atcr.tag").await;
    let v2 = tags
        .iter()
        .find(|r| r["value"]["repository"] == single.as_str() && r["value"]["tag"] == "v2")
        .unwrap();
    assert_eq!(v2["value"]["manifest"], u_single.as_str());

    // Another registry (nothing local) pulls `late:v1` through its own record.
    let other = server(&net).await;
    let resp = reqwest::Client::new()
        .get(other.url(&format!("/v2/alice.test/{late}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(oci::header(&resp, "docker-content-digest").unwrap(), digest);
    other.running.stop().await;
    s.running.stop().await;
}

/// Records written the old way (manifest rkey = digest hex, tags naming that key, or only
/// the digest), straight into the PDS, are still pulled by tag and by digest, and shown in
/// the UI; deleting the image through the registry finds and removes them.
#[tokio::test]
async fn records_with_old_digest_keys_are_still_pulled_and_shown() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let jwt = pds_session(&net, "alice.test").await;
    let repo = format!("legacy-{}", rand_suffix());
    let config = br#"{"architecture":"amd64","os":"linux","legacy":true}"#.to_vec();
    let layer = oci::bytes(900, 77);
    let body = oci::image_manifest(
        oci::descriptor(oci::OCI_CONFIG, &config),
        vec![oci::descriptor(oci::OCI_LAYER, &layer)],
    );
    let digest = oci::sha256(&body);
    let hex = digest.trim_start_matches("sha256:").to_string();
    let blob: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", net.pds))
        .bearer_auth(&jwt)
        .header("Content-Type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = |collection: &str, rkey: &str, record: serde_json::Value| {
        pds_post(
            &net,
            &jwt,
            "com.atproto.repo.putRecord",
            serde_json::json!({"repo": alice.did, "collection": collection, "rkey": rkey, "record": record}),
        )
    };
    put("io.atcr.manifest", &hex, serde_json::json!({
        "$type": "io.atcr.manifest", "repository": repo, "digest": digest, "mediaType": OCI_MANIFEST,
        "schemaVersion": 2, "manifestBlob": blob["blob"],
        "config": oci::descriptor(oci::OCI_CONFIG, &config),
        "layers": [oci::descriptor(oci::OCI_LAYER, &layer)],
        "holdDid": "did:web:elsewhere.example", "createdAt": "2025-06-01T00:00:00.000Z"})).await;
    put(
        "io.atcr.tag",
        &format!("{repo}_v1"),
        serde_json::json!({
        "$type": "io.atcr.tag", "repository": repo, "tag": "v1",
        "manifest": format!("at://{}/io.atcr.manifest/{hex}", alice.did),
        "updatedAt": "2025-06-01T00:00:01.000Z"}),
    )
    .await;
    // An older tag record still: only the digest.
    put(
        "io.atcr.tag",
        &format!("{repo}_v0"),
        serde_json::json!({
        "$type": "io.atcr.tag", "repository": repo, "tag": "v0", "manifestDigest": digest,
        "updatedAt": "2025-05-01T00:00:01.000Z"}),
    )
    .await;

    // Pulled by a registry that has never seen them: by tag (both kinds) and by digest.
    let s = server(&net).await;
    let anon = reqwest::Client::new();
    for reference in ["v1", "v0", digest.as_str()] {
        let resp = anon
            .get(s.url(&format!("/v2/alice.test/{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "pull {reference}");
        assert_eq!(oci::header(&resp, "docker-content-digest").unwrap(), digest);
        assert_eq!(resp.bytes().await.unwrap().to_vec(), body);
    }
    // Shown: the index reads them (backfill of alice's repo), the UI lists the tags.
    let ix = s.running.state.index.clone();
    ix.backfill_repo(&alice.did).await.unwrap();
    let mut tags: Vec<(String, String)> = ix
        .tags(&alice.did, &repo, 10, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.tag, t.digest))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec![("v0".into(), digest.clone()), ("v1".into(), digest.clone())]
    );
    let page = anon
        .get(s.url(&format!("/r/alice.test/{repo}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(">v1<") && html.contains(">v0<"), "{html}");
    let page = anon
        .get(s.url(&format!("/r/alice.test/{repo}/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);

    // Deleting the image through the registry finds the old records by their fields.
    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        &format!("repository:alice.test/{repo}:pull,push"),
    )
    .await;
    let s = with_token(s, &t);
    let resp = oci::delete(&s, &format!("/v2/alice.test/{repo}/manifests/{digest}")).await;
    assert_eq!(
        resp.status().as_u16(),
        202,
        "{}",
        resp.text().await.unwrap()
    );
    assert!(get_record(&net, &alice.did, "io.atcr.manifest", &hex)
        .await
        .is_none());
    let tags = list_records(&net, &alice.did, "io.atcr.tag").await;
    assert!(
        !tags
            .iter()
            .any(|r| r["value"]["repository"] == repo.as_str()),
        "old tag records left: {tags:?}"
    );
    s.running.stop().await;
}

/// `GET /login` then `POST /login`: the session cookie and the page's CSRF token.
async fn ui_login(s: &TestServer, handle: &str, app_password: &str) -> (String, String) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = c.get(s.url("/login")).send().await.unwrap();
    let anon = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("atcr_csrf="))
        .unwrap();
    let token = anon["atcr_csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let resp = c
        .post(s.url("/login"))
        .header("Cookie", format!("atcr_csrf={token}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={token}&identifier={handle}&password={app_password}&next=/"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        303,
        "login: {}",
        resp.text().await.unwrap()
    );
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("atcr_session="))
        .unwrap();
    let cookie = session.split(';').next().unwrap().to_string();
    let html = c
        .get(s.url("/settings"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

/// A `multipart/form-data` body of text fields and an optional file.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----atcr-test-boundary-7d1";
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, content_type, bytes)) = file {
        out.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        out.extend(bytes);
        out.extend(b"\r\n");
    }
    out.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The repository page: created on the first push (README from the image's description
/// annotation), edited by its owner from the UI (README + avatar, `userEdited`), left
/// alone by later pushes, refused to others; a star names it and the name resolves.
#[tokio::test]
async fn repo_page_created_edited_in_the_ui_and_starred() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let bob = net.account("bob.test");
    let s = server(&net).await;
    let repo = format!("paged-{}", rand_suffix());
    let name = format!("alice.test/{repo}");
    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        &format!("repository:{name}:pull,push"),
    )
    .await;
    let pusher = with_token(s, &t);
    let s = &pusher;
    push_annotated(
        &pusher,
        &name,
        "v1",
        51,
        serde_json::json!({
        "org.opencontainers.image.description": "Made by the first push"}),
    )
    .await;
    let page = get_record(&net, &alice.did, "io.atcr.repo.page", &repo)
        .await
        .expect("the first push created the repo page");
    assert_eq!(page["value"]["repository"], repo.as_str());
    assert_eq!(page["value"]["description"], "Made by the first push");
    assert!(page["value"]["createdAt"].is_string() && page["value"]["updatedAt"].is_string());
    // An unedited page follows a new description.
    push_annotated(
        &pusher,
        &name,
        "v2",
        52,
        serde_json::json!({
        "org.opencontainers.image.description": "Second description"}),
    )
    .await;
    let page = get_record(&net, &alice.did, "io.atcr.repo.page", &repo)
        .await
        .unwrap();
    assert_eq!(page["value"]["description"], "Second description");

    // The owner edits the page in the UI: README and avatar.
    let (cookie, csrf) = ui_login(s, "alice.test", &alice.app_password).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = c
        .get(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("enctype=\"multipart/form-data\""),
        "no edit form for the owner"
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(PNG_1X1)
        .unwrap();
    let readme = "# Paged\r\n\r\nEdited **by hand**.";
    let (ct, body) = multipart(
        &[("csrf", &csrf), ("description", readme)],
        Some(("avatar", "image/png", &png)),
    );
    let resp = c
        .post(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &cookie)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        303,
        "{}",
        resp.text().await.unwrap()
    );
    let page = get_record(&net, &alice.did, "io.atcr.repo.page", &repo)
        .await
        .unwrap();
    let v = &page["value"];
    assert_eq!(v["description"], "# Paged\n\nEdited **by hand**.");
    assert_eq!(v["userEdited"], true);
    assert_eq!(v["avatar"]["mimeType"], "image/png");
    assert_eq!(v["avatar"]["size"], png.len());
    // The UI shows the page record: the README rendered, the avatar served from here.
    let html = c
        .get(s.url(&format!("/r/alice.test/{repo}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<strong>by hand</strong>"), "{html}");
    let avatar = c
        .get(s.url(&format!("/avatar/{}?repo={repo}", alice.did)))
        .send()
        .await
        .unwrap();
    assert_eq!(avatar.status().as_u16(), 200);
    assert_eq!(oci::header(&avatar, "content-type").unwrap(), "image/png");
    assert_eq!(avatar.bytes().await.unwrap().to_vec(), png);

    // A push with yet another description leaves the edited page alone.
    push_annotated(
        &pusher,
        &name,
        "v3",
        53,
        serde_json::json!({
        "org.opencontainers.image.description": "Automatic, must not win"}),
    )
    .await;
    let page = get_record(&net, &alice.did, "io.atcr.repo.page", &repo)
        .await
        .unwrap();
    assert_eq!(
        page["value"]["description"],
        "# Paged\n\nEdited **by hand**."
    );

    // Not an image, or too big: refused, nothing changes.
    let (ct, body) = multipart(
        &[("csrf", &csrf), ("description", "x")],
        Some(("avatar", "image/gif", b"GIF89a\x01\x00\x01\x00")),
    );
    let resp = c
        .post(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &cookie)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let big = vec![0u8; 3_000_001];
    let (ct, body) = multipart(&[("csrf", &csrf)], Some(("avatar", "image/png", &big)));
    let resp = c
        .post(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &cookie)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (ct, body) = multipart(&[("csrf", "wrong"), ("description", "x")], None);
    let resp = c
        .post(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &cookie)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let page = get_record(&net, &alice.did, "io.atcr.repo.page", &repo)
        .await
        .unwrap();
    assert_eq!(
        page["value"]["description"],
        "# Paged\n\nEdited **by hand**."
    );

    // Bob may not edit it, but he can star it: the star's subject resolves to the page.
    let (bcookie, bcsrf) = ui_login(s, "bob.test", &bob.app_password).await;
    let (ct, body) = multipart(&[("csrf", &bcsrf), ("description", "bob was here")], None);
    let resp = c
        .post(s.url(&format!("/r/alice.test/{repo}")))
        .header("Cookie", &bcookie)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = c
        .post(s.url("/star"))
        .header("Cookie", &bcookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={bcsrf}&owner={}&repo={repo}&action=star&back=/",
            alice.did
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let stars = list_records(&net, &bob.did, "io.atcr.sailor.star").await;
    let star = stars
        .iter()
        .find(|r| {
            r["value"]["subject"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/io.atcr.repo.page/{repo}")))
        })
        .expect("bob's star");
    let subject = star["value"]["subject"].as_str().unwrap();
    let (did, collection, rkey) = atcr::registry::records::parse_at_uri(subject).unwrap();
    assert_eq!((did, collection), (alice.did.as_str(), "io.atcr.repo.page"));
    assert!(
        get_record(&net, did, collection, rkey).await.is_some(),
        "the star's subject {subject} does not resolve"
    );
    pusher.running.stop().await;
}

/// A sha512 manifest cannot be described by a valid io.atcr.manifest record (digest is at
/// most 128 characters): in ATProto mode it is refused with a clear error, nothing written.
#[tokio::test]
async fn sha512_manifests_are_refused_in_atproto_mode() {
    let Some(net) = atnet::atnet() else { return };
    let alice = net.account("alice.test");
    let s = server(&net).await;
    let repo = format!("alice.test/sha512-{}", rand_suffix());
    let t = token_ok(
        &s,
        "alice.test",
        &alice.app_password,
        &format!("repository:{repo}:pull,push"),
    )
    .await;
    let s = with_token(s, &t);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = oci::bytes(600, 5);
    oci::push_blob(&s, &repo, &config).await;
    oci::push_blob(&s, &repo, &layer).await;
    let body = oci::image_manifest(
        oci::descriptor(oci::OCI_CONFIG, &config),
        vec![oci::descriptor(oci::OCI_LAYER, &layer)],
    );
    let d512 = oci::sha512(&body);
    let resp = oci::put_manifest(&s, &repo, &d512, OCI_MANIFEST, &body).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("MANIFEST_INVALID") && text.contains("sha512"),
        "{text}"
    );
    let records = list_records(&net, &alice.did, "io.atcr.manifest").await;
    assert!(!records
        .iter()
        .any(|r| r["value"]["digest"] == d512.as_str()));
    // The same manifest by tag (sha256) is fine.
    let resp = oci::put_manifest(&s, &repo, "ok", OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    s.running.stop().await;
}
