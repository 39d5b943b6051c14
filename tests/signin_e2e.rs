//! Sign-in against the real reference PDS + PLC (`tests/support/atnet`): session reuse
//! counted in the PDS's own request log, brute-force limits under concurrency, main
//! passwords refused, revoked app passwords, and (after the browser test signed alice in
//! with OAuth) record writes and service tokens through the OAuth session.
//!
//! Skipped unless `ATCR_TEST_ATNET` is set; `bash tests/signin-e2e.sh` runs them with
//! `ATCR_TEST_ATNET_LOG` naming the PDS log (started with `LOG_LEVEL=info`, one
//! "request completed" line per request).

#[path = "support/atnet.rs"]
mod atnet;
mod common;

use std::time::{Duration, Instant};

use atnet::Atnet;
use base64::Engine;
use common::TestServer;

/// Tests that count PDS calls run one at a time (the log is shared).
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn server(net: &Atnet, tweak: impl FnOnce(&mut atcr::config::Config)) -> TestServer {
    let (plc, pds) = (net.plc.clone(), net.pds.clone());
    TestServer::start_with(move |c| {
        c.server.listen = format!("127.0.0.1:{}", free_port());
        c.auth.mode = "atproto".into();
        c.identity.plc_url = plc;
        c.identity.handle_resolver = pds;
        tweak(c);
    })
    .await
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A token request as the client at `addr` (the server trusts X-Forwarded-For from
/// loopback, as from the appliance's reverse proxy).
async fn token_from(
    s: &TestServer,
    addr: &str,
    user: &str,
    pass: &str,
) -> (u16, serde_json::Value) {
    let r = s
        .client
        .get(s.url("/auth/token"))
        .query(&[
            ("service", "x"),
            ("scope", "repository:alice.test/app:pull,push"),
        ])
        .header("Authorization", basic(user, pass))
        .header("X-Forwarded-For", addr)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// How many times the PDS answered `method` so far, from its request log. Waits until the
/// log stops growing (pino writes asynchronously).
async fn pds_calls(method: &str) -> usize {
    let Ok(path) = std::env::var("ATCR_TEST_ATNET_LOG") else {
        panic!("ATCR_TEST_ATNET_LOG must name the PDS log (run tests/signin-e2e.sh)");
    };
    let needle = format!("\"url\":\"/xrpc/{method}\"");
    let needle_oauth = format!("\"url\":\"{method}\"");
    let count = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("\"msg\":\"request completed\"")
                    && (l.contains(&needle) || l.contains(&needle_oauth))
            })
            .count()
    };
    let mut last = count();
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

const CREATE_SESSION: &str = "com.atproto.server.createSession";

#[tokio::test]
async fn hundred_token_requests_cost_one_create_session() {
    let Some(net) = atnet::atnet() else { return };
    let _serial = COUNTING.lock().await;
    let alice = net.account("alice.test");
    let s = server(&net, |_| {}).await;
    let before = pds_calls(CREATE_SESSION).await;
    let started = Instant::now();
    for i in 0..100 {
        // Handle and DID are the same identity and the same stored session.
        let user = if i % 2 == 0 {
            "alice.test"
        } else {
            alice.did.as_str()
        };
        let (status, body) = token_from(&s, "192.0.2.10", user, &alice.app_password).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let took = started.elapsed();
    let calls = pds_calls(CREATE_SESSION).await - before;
    println!(
        "session reuse: 100 token requests -> {calls} createSession call(s) at the PDS, {} ms in total",
        took.as_millis()
    );
    assert_eq!(
        calls, 1,
        "100 token requests must cost exactly one PDS login"
    );

    // A wrong password is still checked at the PDS (it may be a new app password) and
    // does not disturb the stored session.
    let (status, _) = token_from(&s, "192.0.2.10", "alice.test", "wrong-pass-word").await;
    assert_eq!(status, 401);
    let (status, _) = token_from(&s, "192.0.2.10", "alice.test", &alice.app_password).await;
    assert_eq!(status, 200);
    assert_eq!(pds_calls(CREATE_SESSION).await - before, 2);
    s.running.stop().await;
}

#[tokio::test]
async fn forty_concurrent_wrong_passwords_reach_the_pds_at_most_five_times() {
    let Some(net) = atnet::atnet() else { return };
    let _serial = COUNTING.lock().await;
    let alice = net.account("alice.test");
    let s = server(&net, |_| {}).await;
    let before = pds_calls(CREATE_SESSION).await;
    let attempts = (0..40).map(|i| {
        let s = &s;
        async move {
            token_from(s, "203.0.113.66", "alice.test", &format!("guess-{i}"))
                .await
                .0
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let refused_401 = statuses.iter().filter(|&&c| c == 401).count();
    let limited_429 = statuses.iter().filter(|&&c| c == 429).count();
    let calls = pds_calls(CREATE_SESSION).await - before;
    println!(
        "40 concurrent wrong passwords from one address: {refused_401} x 401 (asked the PDS), \
         {limited_429} x 429 (refused before the PDS), {calls} createSession call(s) at the PDS"
    );
    assert_eq!(refused_401 + limited_429, 40, "{statuses:?}");
    assert_eq!(refused_401, 5, "{statuses:?}");
    assert_eq!(calls, 5);

    // The attacker's address is done for alice, by handle and by DID...
    let (status, _) = token_from(&s, "203.0.113.66", "alice.test", &alice.app_password).await;
    assert_eq!(status, 429);
    let (status, _) = token_from(&s, "203.0.113.66", &alice.did, "x").await;
    assert_eq!(status, 429);
    // ...but alice from her own address is not locked out.
    let (status, body) = token_from(&s, "198.51.100.20", "alice.test", &alice.app_password).await;
    assert_eq!(status, 200, "{body}");
    // Bob, from the attacker's address, is a different identity (the per-address limit is
    // wider than the per-identity one).
    let bob = net.account("bob.test");
    let (status, _) = token_from(&s, "203.0.113.66", "bob.test", &bob.app_password).await;
    assert_eq!(status, 200);
    s.running.stop().await;
}

#[tokio::test]
async fn main_password_is_refused_and_its_session_deleted() {
    let Some(net) = atnet::atnet() else { return };
    let _serial = COUNTING.lock().await;
    let bob = net.account("bob.test");
    let s = server(&net, |_| {}).await;
    let deleted_before = pds_calls("com.atproto.server.deleteSession").await;
    let (status, body) = token_from(&s, "192.0.2.30", "bob.test", &bob.password).await;
    assert_eq!(status, 401, "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("app password"), "{msg}");
    assert!(
        msg.contains("App passwords"),
        "says where to create one: {msg}"
    );
    assert_eq!(
        pds_calls("com.atproto.server.deleteSession").await - deleted_before,
        1,
        "the main-password session is deleted at the PDS"
    );
    // Nothing was kept: the app password still logs in (and is the only one that does).
    let (status, _) = token_from(&s, "192.0.2.30", "bob.test", &bob.app_password).await;
    assert_eq!(status, 200);
    s.running.stop().await;
}

async fn xrpc_post(
    net: &Atnet,
    method: &str,
    jwt: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut r = reqwest::Client::new()
        .post(format!("{}/xrpc/{method}", net.pds))
        .json(&body);
    if let Some(t) = jwt {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method}: {status} {v}");
    v
}

#[tokio::test]
async fn a_revoked_app_password_ends_the_reuse() {
    let Some(net) = atnet::atnet() else { return };
    let _serial = COUNTING.lock().await;
    let bob = net.account("bob.test");
    // Revalidate at every reuse, so the test need not wait for the interval.
    let s = server(&net, |c| c.auth.session_revalidate_secs = 0).await;
    let main = xrpc_post(
        &net,
        CREATE_SESSION,
        None,
        serde_json::json!({"identifier": "bob.test", "password": bob.password}),
    )
    .await;
    let jwt = main["accessJwt"].as_str().unwrap().to_string();
    let name = format!("revoke-test-{}", std::process::id());
    let app = xrpc_post(
        &net,
        "com.atproto.server.createAppPassword",
        Some(&jwt),
        serde_json::json!({"name": name}),
    )
    .await;
    let pw = app["password"].as_str().unwrap().to_string();
    let before = pds_calls(CREATE_SESSION).await;
    for _ in 0..3 {
        let (status, _) = token_from(&s, "192.0.2.40", "bob.test", &pw).await;
        assert_eq!(status, 200);
    }
    assert_eq!(pds_calls(CREATE_SESSION).await - before, 1);
    xrpc_post(
        &net,
        "com.atproto.server.revokeAppPassword",
        Some(&jwt),
        serde_json::json!({"name": name}),
    )
    .await;
    // The stored session's refresh fails at the PDS: it is dropped, and the password, asked
    // at the PDS again, is refused.
    let (status, body) = token_from(&s, "192.0.2.40", "bob.test", &pw).await;
    assert_eq!(
        status, 401,
        "a revoked app password must stop working: {body}"
    );
    assert!(s.running.state.auth.sessions.get(&bob.did).await.is_err());
    s.running.stop().await;
}

/// Runs after the browser test signed alice in with OAuth on a real atcr (stopped since):
/// opens that data dir and uses alice's OAuth session (DPoP-bound) for a record write, a
/// refresh, and a service token that the hold's verifier accepts.
#[tokio::test]
async fn oauth_session_writes_records_and_gets_service_tokens() {
    use atcr::atproto::identity::{IdentityConfig, Resolver};
    use atcr::atproto::xrpc::XrpcClient;
    use atcr::auth::sessions::SessionStore;
    let Some(net) = atnet::atnet() else { return };
    let (Ok(data), Ok(public_url)) = (
        std::env::var("ATCR_TEST_OAUTH_DATA"),
        std::env::var("ATCR_TEST_OAUTH_PUBLIC_URL"),
    ) else {
        eprintln!(
            "SKIPPED: ATCR_TEST_OAUTH_DATA is set by tests/signin-e2e.sh after the browser sign-in"
        );
        return;
    };
    let alice = net.account("alice.test");
    let data = std::path::PathBuf::from(data);
    let keys = data.join("keys");
    let xrpc = XrpcClient::default();
    let resolver = Resolver::new(
        IdentityConfig {
            plc_url: net.plc.clone(),
            handle_resolver: Some(net.pds.clone()),
            cache_ttl: Duration::from_secs(60),
            dns: false,
        },
        xrpc.clone(),
    );
    let store = atcr::registry::store::MetaStore::open(&data.join("registry.redb")).unwrap();
    let sessions = std::sync::Arc::new(SessionStore::new(
        store,
        atcr::auth::keys::session_seal_key(&keys).unwrap(),
        xrpc.clone(),
    ));
    let client = atcr::auth::oauth::OAuthClient::new(
        &public_url,
        "atcr",
        "atproto transition:generic",
        atcr::auth::keys::oauth_client_key(&keys).unwrap(),
        resolver.clone(),
        sessions.clone(),
    );
    sessions.set_oauth_refresher(client);

    let agent = sessions.agent(&alice.did).await.unwrap();
    assert!(agent.is_oauth(), "alice signed in with OAuth");
    // A record write with the DPoP-bound token.
    let rec = serde_json::json!({"$type": "io.atcr.sailor.star", "subject": format!("at://{}/io.atcr.repo.page/oauth-probe", alice.did), "createdAt": "2026-01-01T00:00:00.000Z"});
    let rkey = "3lzzzzzzzzz2a";
    let x = xrpc.clone();
    sessions
        .with_agent(&alice.did, |a| {
            let (x, rec) = (x.clone(), rec.clone());
            async move {
                x.put_record(&a.pds, &a.auth, &a.did, "io.atcr.sailor.star", rkey, &rec)
                    .await
            }
        })
        .await
        .unwrap();
    let got = xrpc
        .get_record(&net.pds, &alice.did, "io.atcr.sailor.star", rkey)
        .await
        .unwrap()
        .expect("written through the OAuth session");
    assert_eq!(got.value["subject"], rec["subject"]);

    // Refresh: an access token about to expire is replaced before use.
    let mut s = sessions.get_oauth(&alice.did).await.unwrap().unwrap();
    let old = s.access_token.clone();
    s.expires_unix = 0;
    sessions.put_oauth(&s).await.unwrap();
    let fresh = sessions.agent(&alice.did).await.unwrap();
    let now = sessions.get_oauth(&alice.did).await.unwrap().unwrap();
    assert_ne!(
        now.access_token, old,
        "refreshed at the authorization server"
    );
    assert!(now.expires_unix > atcr::registry::store::now_unix());
    assert!(fresh.is_oauth());

    // A service token for a hold, through the same abstraction, accepted by the hold's
    // verifier (signature against alice's DID document key, aud, lxm).
    let hold = "did:web:localhost%3A5000";
    let token = sessions
        .service_token(&alice.did, hold, Some("io.atcr.hold.getQuota"), None)
        .await
        .unwrap();
    let verifier = atcr::pds::service_auth::ServiceAuth::new(hold, resolver.clone());
    let iss = verifier
        .verify(&token, "io.atcr.hold.getQuota")
        .await
        .unwrap();
    assert_eq!(iss, alice.did);
    println!("OAuth session: record write, refresh and service token for {hold}: ok");

    let x = xrpc.clone();
    sessions
        .with_agent(&alice.did, |a| {
            let x = x.clone();
            async move {
                x.delete_record(&a.pds, &a.auth, &a.did, "io.atcr.sailor.star", rkey)
                    .await
            }
        })
        .await
        .unwrap();
}
