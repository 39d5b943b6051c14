//! The web UI over real HTTP against the real server: assets and caching, HTML errors,
//! CSRF on every POST, session cookies, and the hold admin panel (crew add/edit/remove with
//! confirmation, captain settings, GC preview and run) checked in the hold's records.
//! Password logins against a real PDS are covered by tests/ui/browser.sh (reference PDS).

mod common;

use atcr::pds::records::{crew_rkey, CAPTAIN, CREW, SELF};
use common::oci::{push_blob, sha256};
use common::TestServer;

const OWNER: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bobbobbobbobbobbobbobbob";

async fn start() -> TestServer {
    TestServer::start_with(|c| c.hold.owner_did = OWNER.into()).await
}

/// A browser session for `did`, made the way the login handler makes them.
async fn session(s: &TestServer, did: &str) -> (String, String) {
    let (id, sess) = s
        .running
        .state
        .web
        .sessions
        .create(did, "captain.test", "web_ui test")
        .await
        .unwrap();
    (format!("atcr_session={id}"), sess.csrf)
}

async fn get(s: &TestServer, path: &str, cookie: &str) -> reqwest::Response {
    s.client
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn post(
    s: &TestServer,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn crew(s: &TestServer, did: &str) -> Option<serde_json::Value> {
    let hold = s.running.state.hold.clone().unwrap();
    hold.get_record(CREW, &crew_rkey(did))
        .await
        .unwrap()
        .map(|r| r.value)
}

#[tokio::test]
async fn assets_errors_and_csrf() {
    let s = start().await;
    let css = s.client.get(s.url("/static/app.css")).send().await.unwrap();
    assert_eq!(css.status(), 200);
    let etag = css.headers()["etag"].to_str().unwrap().to_string();
    assert!(css.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
    let again = s
        .client
        .get(s.url("/static/htmx.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let cached = s
        .client
        .get(s.url("/static/app.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    // Unknown pages: HTML 404 for browsers, the registry's JSON error under /v2.
    let nf = s.client.get(s.url("/no/such/page")).send().await.unwrap();
    assert_eq!(nf.status(), 404);
    assert!(nf.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(nf.text().await.unwrap().contains("Not found"));
    let v2 = s.client.get(s.url("/v2/a/b/c/nope")).send().await.unwrap();
    assert!(v2.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("json"));

    // The login form hands out a CSRF cookie; a POST without the matching field is refused.
    let form = s.client.get(s.url("/login")).send().await.unwrap();
    // Pages cannot be framed (clickjacking): CSP frame-ancestors and, for old browsers,
    // X-Frame-Options.
    assert_eq!(form.headers()["x-frame-options"], "DENY");
    let csp = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let set = form.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    let token = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("atcr_csrf=")
        .to_string();
    let html = form.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf\" value=\"{token}\"")));
    let cookie = format!("atcr_csrf={token}");
    let r = post(
        &s,
        "/login",
        &cookie,
        &[("identifier", "x.test"), ("password", "p")],
    )
    .await;
    assert_eq!(r.status(), 403, "no token");
    let r = post(
        &s,
        "/login",
        &cookie,
        &[
            ("csrf", "wrong"),
            ("identifier", "x.test"),
            ("password", "p"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403, "wrong token");
    // Right token: reaches the login logic (this server has auth.mode = "none").
    let r = post(
        &s,
        "/login",
        &cookie,
        &[
            ("csrf", &token),
            ("identifier", "x.test"),
            ("password", "p"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("This registry runs in local mode"));
    // A token without its cookie does not count.
    let r = post(
        &s,
        "/login",
        "",
        &[
            ("csrf", &token),
            ("identifier", "x.test"),
            ("password", "p"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);

    // Members-only pages send anonymous visitors to the login.
    let r = s.client.get(s.url("/settings")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?next=/settings");
    let r = s.client.get(s.url("/admin")).send().await.unwrap();
    assert_eq!(location(&r), "/admin/login");

    // Logout needs the session's token; with it the session is gone.
    let (cookie, csrf) = session(&s, OWNER).await;
    let r = post(&s, "/logout", &cookie, &[("csrf", "nope")]).await;
    assert_eq!(r.status(), 403);
    let r = get(&s, "/install", &cookie).await;
    assert!(r.text().await.unwrap().contains("Log out"));
    let r = post(&s, "/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = get(&s, "/admin", &cookie).await;
    assert_eq!(r.status(), 303, "the old cookie no longer logs in");
}

#[tokio::test]
async fn admin_panel_manages_crew_settings_and_gc() {
    let s = start().await;

    // Not the captain: refused.
    let (other, _) = session(&s, BOB).await;
    let r = get(&s, "/admin", &other).await;
    assert_eq!(r.status(), 403);

    let (cookie, csrf) = session(&s, OWNER).await;
    let page = get(&s, "/admin", &cookie).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(OWNER) && html.contains("Crew (1)"));

    // Add bob by DID (a DID needs no network lookup) as read-only with a tier.
    let r = post(
        &s,
        "/admin/crew/add",
        &cookie,
        &[("member", BOB), ("role", "read"), ("tier", "deckhand")],
    )
    .await;
    assert_eq!(r.status(), 403, "CSRF token required");
    assert!(crew(&s, BOB).await.is_none());
    let r = post(
        &s,
        "/admin/crew/add",
        &cookie,
        &[
            ("csrf", &csrf),
            ("member", BOB),
            ("role", "read"),
            ("tier", "deckhand"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/admin?ok="));
    let rec = crew(&s, BOB).await.expect("crew record written");
    assert_eq!(rec["role"], "read");
    assert_eq!(rec["permissions"], serde_json::json!(["blob:read"]));
    assert_eq!(rec["tier"], "deckhand");
    let r = post(
        &s,
        "/admin/crew/add",
        &cookie,
        &[("csrf", &csrf), ("member", BOB), ("role", "read")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="), "already crew");
    let r = post(
        &s,
        "/admin/crew/add",
        &cookie,
        &[("csrf", &csrf), ("member", "did:bad"), ("role", "read")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="), "invalid DID");

    // Edit: read + write, another tier.
    let r = post(
        &s,
        "/admin/crew/edit",
        &cookie,
        &[
            ("csrf", &csrf),
            ("member", BOB),
            ("perm", "blob:read"),
            ("perm", "blob:write"),
            ("perm", "bogus"),
            ("tier", "bosun"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let rec = crew(&s, BOB).await.unwrap();
    assert_eq!(
        rec["permissions"],
        serde_json::json!(["blob:read", "blob:write"])
    );
    assert_eq!(rec["tier"], "bosun");
    // The crew list shows each member's limit from the configured tiers (defaults:
    // deckhand=5GB, bosun=50GB, quartermaster=100GB); the captain is never limited.
    let html = get(&s, "/admin", &cookie).await.text().await.unwrap();
    assert!(html.contains("of 50.0 GiB (bosun)"), "bob's quota shown");
    assert!(html.contains("of unlimited (captain)"), "captain unlimited");
    // The captain keeps every permission.
    let r = post(
        &s,
        "/admin/crew/edit",
        &cookie,
        &[("csrf", &csrf), ("member", OWNER), ("perm", "blob:read")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="));

    // Remove: a confirmation page first; an unconfirmed POST does nothing.
    let q = format!("/admin/crew/remove?member={BOB}");
    let confirm = get(&s, &q, &cookie).await;
    assert_eq!(confirm.status(), 200);
    assert!(confirm
        .text()
        .await
        .unwrap()
        .contains("name=\"confirm\" value=\"yes\""));
    let r = post(
        &s,
        "/admin/crew/remove",
        &cookie,
        &[("csrf", &csrf), ("member", BOB)],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="));
    assert!(crew(&s, BOB).await.is_some());
    let r = post(
        &s,
        "/admin/crew/remove",
        &cookie,
        &[("csrf", &csrf), ("member", BOB), ("confirm", "yes")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?ok="));
    assert!(crew(&s, BOB).await.is_none());
    let r = post(
        &s,
        "/admin/crew/remove",
        &cookie,
        &[("csrf", &csrf), ("member", OWNER), ("confirm", "yes")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="), "captain stays");

    // Usage comes from io.atcr.hold.layer records when the hold has them (unique digests).
    let layer = |digest: &str, size: u64| atcr::atproto::repo::Write::Create {
        collection: "io.atcr.hold.layer".into(),
        rkey: atcr::atproto::repo::tid::Tid::now().as_str().to_string(),
        record: atcr::pds::record_cbor(&serde_json::json!({
            "$type": "io.atcr.hold.layer", "digest": digest, "size": size,
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "manifest": format!("at://{OWNER}/io.atcr.manifest/abc"),
            "userDid": OWNER, "createdAt": "2026-01-01T00:00:00Z"}))
        .unwrap(),
    };
    let hold = s.running.state.hold.clone().unwrap();
    hold.apply_writes(vec![
        layer("sha256:aa", 3 * 1024 * 1024),
        layer("sha256:aa", 3 * 1024 * 1024),
        layer("sha256:bb", 1024 * 1024),
    ])
    .await
    .unwrap();
    // A blob pushed by a user who is not crew (the test server runs in local mode).
    push_blob(&s, "dave/tools", b"dave's layer").await;
    let html = get(&s, "/admin", &cookie).await.text().await.unwrap();
    assert!(
        html.contains("4.0 MiB") && html.contains("io.atcr.hold.layer records"),
        "layer usage shown"
    );
    // The counts say what they count: the crew's unique layers, the store's blobs.
    assert!(
        html.contains(r#"<span class="muted crew-count">2 layers</span>"#),
        "{html}"
    );
    assert!(html.contains("blobs stored</span>"));
    assert!(html.contains("Blobs in their repositories"));
    // Top users: dave is marked as not crew; the hold's name is readable.
    let dave_row = html
        .split("<tr>")
        .find(|r| r.contains("<strong>dave</strong>"))
        .expect("dave among the top users");
    assert!(dave_row.contains("not crew"), "{dave_row}");
    let hold_did = s.running.state.hold.as_ref().unwrap().did().to_string();
    let name = hold_did.trim_start_matches("did:web:").replace("%3A", ":");
    assert!(html.contains(&format!(r#"<strong class="hold-name">{name}</strong>"#)));

    // Settings: unchecked boxes are false; the successor must be a DID.
    let r = post(
        &s,
        "/admin/settings",
        &cookie,
        &[
            ("csrf", &csrf),
            ("allowAllCrew", "on"),
            ("successor", "did:web:next.example.com"),
        ],
    )
    .await;
    assert!(location(&r).starts_with("/admin?ok="));
    let hold = s.running.state.hold.clone().unwrap();
    let cap = hold.get_record(CAPTAIN, SELF).await.unwrap().unwrap().value;
    assert_eq!(cap["public"], false);
    assert_eq!(cap["allowAllCrew"], true);
    assert_eq!(cap["enableBlueskyPosts"], false);
    assert_eq!(cap["successor"], "did:web:next.example.com");
    assert_eq!(cap["owner"], OWNER, "other fields kept");
    let r = post(
        &s,
        "/admin/settings",
        &cookie,
        &[("csrf", &csrf), ("successor", "not a did")],
    )
    .await;
    assert!(location(&r).starts_with("/admin?err="));

    // GC: unlinked blobs show in the preview and survive it; the run deletes exactly what
    // the preview listed, minus what a push linked again in between.
    let mut orphans = Vec::new();
    for data in [&b"orphan layer one"[..], b"orphan layer two"] {
        let digest = push_blob(&s, "test/orphan", data).await;
        assert_eq!(digest, sha256(data));
        let r = s
            .client
            .delete(s.url(&format!("/v2/test/orphan/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        orphans.push(digest);
    }
    let (gone, relinked) = (orphans[0].clone(), orphans[1].clone());
    let preview = get(&s, "/admin/gc", &cookie).await;
    let html = preview.text().await.unwrap();
    for d in &orphans {
        assert!(html.contains(d.as_str()), "preview lists {d}");
    }
    let stat = |d: String| {
        let state = s.running.state.clone();
        async move {
            let d: atcr::oci::types::Digest = d.parse().unwrap();
            state.registry.blob_stat(&d).await.unwrap().is_some()
        }
    };
    assert!(stat(gone.clone()).await, "dry run deletes nothing");
    // The digests the preview's form sends back.
    let listed: Vec<String> = html
        .split("name=\"digest\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 2, "{html}");
    // After the preview: a new orphan appears, and one listed blob is pushed again.
    let late = push_blob(&s, "test/late", b"orphan after preview").await;
    let r = s
        .client
        .delete(s.url(&format!("/v2/test/late/blobs/{late}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    push_blob(&s, "test/relinked", b"orphan layer two").await;

    let r = post(&s, "/admin/gc", &cookie, &[("csrf", "x")]).await;
    assert_eq!(r.status(), 403);
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    form.extend(listed.iter().map(|d| ("digest", d.as_str())));
    let r = post(&s, "/admin/gc", &cookie, &form).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Deleted 1 blob(s)"), "{page}");
    assert!(
        page.contains("1 blob(s) of the preview were kept"),
        "{page}"
    );
    assert!(!stat(gone).await, "the run deleted the listed orphan");
    assert!(
        stat(relinked).await,
        "a blob linked again after the preview survives"
    );
    assert!(stat(late).await, "a blob the preview did not list survives");
}

#[tokio::test]
async fn settings_lists_and_signs_out_only_the_users_own_sessions() {
    use atcr::web::session::key_of;
    let s = start().await;
    let (here, csrf) = session(&s, OWNER).await;
    let (laptop, _) = session(&s, OWNER).await;
    let (phone, _) = session(&s, OWNER).await;
    let (bobs, _) = session(&s, BOB).await;
    let key = |cookie: &str| key_of(cookie.trim_start_matches("atcr_session="));

    let r = get(&s, "/settings", &here).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("this browser"));
    for other in [&laptop, &phone] {
        assert!(page.contains(&key(other)), "own session listed");
    }
    assert!(
        !page.contains(&key(&here)),
        "no revoke button for this session"
    );
    assert!(!page.contains(&key(&bobs)), "bob's session is not listed");
    assert!(page.contains("Sign out all other browsers"));
    assert!(page.contains("7 days"), "a new session ends in a week");

    // CSRF is checked, bob's session cannot be named, the current one is not revoked here.
    let r = post(
        &s,
        "/settings/sessions",
        &here,
        &[("csrf", "x"), ("revoke", "others")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post(
        &s,
        "/settings/sessions",
        &here,
        &[("csrf", &csrf), ("revoke", &key(&bobs))],
    )
    .await;
    assert_eq!(location(&r), "/settings?revoked=0#sessions-h");
    assert_eq!(
        get(&s, "/settings", &bobs).await.status(),
        200,
        "bob is still in"
    );
    let r = post(
        &s,
        "/settings/sessions",
        &here,
        &[("csrf", &csrf), ("revoke", &key(&here))],
    )
    .await;
    assert_eq!(r.status(), 400);

    // One named session, then all the others.
    let r = post(
        &s,
        "/settings/sessions",
        &here,
        &[("csrf", &csrf), ("revoke", &key(&laptop))],
    )
    .await;
    assert_eq!(location(&r), "/settings?revoked=1#sessions-h");
    assert_eq!(
        get(&s, "/settings", &laptop).await.status(),
        303,
        "laptop signed out"
    );
    assert_eq!(get(&s, "/settings", &phone).await.status(), 200);
    let r = post(
        &s,
        "/settings/sessions",
        &here,
        &[("csrf", &csrf), ("revoke", "others")],
    )
    .await;
    assert_eq!(location(&r), "/settings?revoked=1#sessions-h");
    assert_eq!(
        get(&s, "/settings", &phone).await.status(),
        303,
        "phone signed out"
    );
    assert_eq!(
        get(&s, "/settings", &bobs).await.status(),
        200,
        "bob is still in"
    );
    let r = get(&s, "/settings?revoked=1", &here).await;
    let page = r.text().await.unwrap();
    assert!(page.contains("Signed out 1 session."));
    assert!(
        !page.contains("Sign out all other browsers"),
        "only this one is left"
    );
}

/// The newcomer's path through the UI in local mode (the test server's auth mode): a push
/// shows up under its local owner, every page (errors too) warns that authentication is off,
/// `/r/<owner>` goes to the owner's page, the favicon is served, and the manifest page shows
/// the image config, a pull-by-digest command, the tags and the source as a link.
#[tokio::test]
async fn local_mode_pages_and_manifest_details() {
    let s = TestServer::start().await;
    let config = br#"{"architecture":"arm64","os":"linux","variant":"v8",
        "config":{"Entrypoint":["/bin/hello"],"Cmd":["--port","8080"],"Env":["PATH=/usr/bin","MODE=demo"],
        "ExposedPorts":{"8080/tcp":{}},"User":"app","WorkingDir":"/srv","Labels":{"org.example.team":"tools"}},
        "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"COPY hello /bin/hello"}]}"#;
    let layer = b"layer bytes of the hello image";
    push_blob(&s, "alice/hello", config).await;
    push_blob(&s, "alice/hello", layer).await;
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": sha256(b), "size": b.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        "annotations": {"org.opencontainers.image.source": "https://example.com/hello",
                        "org.opencontainers.image.description": "A tiny greeter"}
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = s
        .client
        .put(s.url("/v2/alice/hello/manifests/1.0"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let digest = sha256(&body);

    // The push appears under the local owner, with its platform from the config.
    let mut html = String::new();
    for _ in 0..100 {
        html = get(&s, "/r/alice/hello", "").await.text().await.unwrap();
        if html.contains("linux/arm64/v8") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        html.contains("linux/arm64/v8"),
        "platform on the tag row: {html}"
    );
    assert!(
        html.contains("id=\"local-mode-banner\""),
        "banner on the repo page"
    );
    assert!(!html.contains("Log in to star"), "no sign-in in local mode");
    assert!(html.contains("size-note\">compressed</small>"));
    let home = get(&s, "/", "").await.text().await.unwrap();
    assert!(home.contains("/r/alice/hello") && home.contains("local-mode-banner"));
    let search = get(&s, "/search?q=&arch=arm64", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        search.contains("/r/alice/hello"),
        "arch filter finds a single image"
    );
    assert!(
        search.contains("A tiny greeter"),
        "card shows the description annotation"
    );
    let search = get(&s, "/search?q=&arch=amd64", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(!search.contains("/r/alice/hello"));

    // Error pages, the 404 of unknown paths and the login page warn too.
    let nf = get(&s, "/no/such/page", "").await;
    assert_eq!(nf.status(), 404);
    assert!(nf.text().await.unwrap().contains("local-mode-banner"));
    let login = get(&s, "/login", "").await.text().await.unwrap();
    assert!(login.contains("This registry runs in local mode"));
    let install = get(&s, "/install", "").await.text().await.unwrap();
    assert!(install.contains("docker import") && install.contains("/alice/hello:1"));

    // /r/<owner> is the owner's page.
    for path in ["/r/alice", "/r/alice/"] {
        let r = get(&s, path, "").await;
        assert_eq!(r.status(), 301, "{path}");
        assert_eq!(location(&r), "/u/alice");
    }
    assert!(get(&s, "/u/alice", "")
        .await
        .text()
        .await
        .unwrap()
        .contains("/r/alice/hello"));

    // The favicon: linked from every page and at the conventional path.
    assert!(home.contains(r#"<link rel="icon" href="/static/favicon.svg""#));
    let ico = get(&s, "/favicon.ico", "").await;
    assert_eq!(ico.status(), 200);
    assert_eq!(ico.headers()["content-type"], "image/vnd.microsoft.icon");
    assert_eq!(&ico.bytes().await.unwrap()[..4], &[0, 0, 1, 0]);
    let svg = get(&s, "/static/favicon.svg", "").await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");

    // The manifest page: config, pull by digest, tags, source link, copyable digest.
    let m = get(&s, &format!("/r/alice/hello/manifests/{digest}"), "")
        .await
        .text()
        .await
        .unwrap();
    let host = s
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    for want in [
        "<dt>Entrypoint</dt><dd><code>[&#34;/bin/hello&#34;]</code></dd>".to_string(),
        "<dt>Cmd</dt><dd><code>[&#34;--port&#34;,&#34;8080&#34;]</code></dd>".to_string(),
        "<li><code>MODE=demo</code></li>".to_string(),
        r#"<span class="badge">8080/tcp</span>"#.to_string(),
        "<dt>User</dt><dd><code>app</code></dd>".to_string(),
        "<dt>Working dir</dt><dd><code>/srv</code></dd>".to_string(),
        "<code>org.example.team</code> = <code>tools</code>".to_string(),
        format!("docker pull {host}/alice/hello@{digest}"),
        format!("docker pull {host}/alice/hello:1.0"),
        r#"title="1.0">1.0</a>"#.to_string(),
        r#"<a id="source-link" href="https://example.com/hello""#.to_string(),
        r#"<a href="https://example.com/hello" rel="nofollow noopener noreferrer">https://example.com/hello</a>"#.to_string(),
        format!(r#"data-copy="{digest}""#),
        r#"<span class="badge">linux/arm64/v8</span>"#.to_string(),
    ] {
        assert!(m.contains(&want), "manifest page lacks {want}:\n{m}");
    }
}

/// The user page lists 60 repositories a page, most recently pushed first: 130
/// repositories are 60 + 60 + 10, each exactly once, with an "Older" link on every page
/// but the last and a "Newer" link on every page but the first.
#[tokio::test]
async fn user_page_is_paged() {
    use atcr::index::apply::RecordChange;
    let s = start().await;
    let ix = &s.running.state.index;
    let did = "did:plc:manymanymanymanymanymany";
    // The identity first: the user row exists, so no handle lookup goes to the network.
    ix.set_user_identity(did, Some("many.test"), Some("http://127.0.0.1:9"))
        .await
        .unwrap();
    let changes: Vec<RecordChange> = (0..130)
        .map(|i| {
            let hex = format!("{i:064x}");
            RecordChange::Upsert {
                collection: "io.atcr.manifest".into(),
                rkey: hex.clone(),
                // Pairs of repositories pushed in the same minute: the name breaks the tie.
                value: serde_json::json!({
                    "$type": "io.atcr.manifest", "repository": format!("repo{i:03}"),
                    "digest": format!("sha256:{hex}"),
                    "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "size": 10, "digest": format!("sha256:{:064x}", 1000 + i)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "size": 100, "digest": format!("sha256:{:064x}", 2000 + i)}],
                    "createdAt": format!("2026-01-01T{:02}:{:02}:00Z", i / 2 / 60, i / 2 % 60),
                }),
            }
        })
        .collect();
    ix.apply_records(did, &changes, None).await.unwrap();

    let repo_links = |html: &str| -> Vec<String> {
        html.split("href=\"/r/many.test/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    };
    let mut seen = Vec::new();
    for (page, path, want) in [
        (1, "/u/many.test", 60),
        (2, "/u/many.test?page=2", 60),
        (3, "/u/many.test?page=3", 10),
    ] {
        let r = get(&s, path, "").await;
        assert_eq!(r.status(), 200, "{path}");
        let html = r.text().await.unwrap();
        let names = repo_links(&html);
        assert_eq!(names.len(), want, "{path}: {names:?}");
        seen.extend(names);
        let older = format!("href=\"/u/many.test?page={}\"", page + 1);
        assert_eq!(html.contains(&older), page < 3, "{path}: Older link");
        assert_eq!(html.contains("rel=\"next\""), page < 3, "{path}: rel=next");
        assert_eq!(html.contains("rel=\"prev\""), page > 1, "{path}: rel=prev");
    }
    // Newest first (the highest numbers were pushed last), ties by name, none twice.
    let want: Vec<String> = (0..65)
        .rev()
        .flat_map(|m| [format!("repo{:03}", 2 * m), format!("repo{:03}", 2 * m + 1)])
        .collect();
    assert_eq!(seen, want);

    // Bad or out-of-range page numbers: page 1, or an empty page that links back.
    for bad in [
        "/u/many.test?page=0",
        "/u/many.test?page=x",
        "/u/many.test?page=-2",
    ] {
        let html = get(&s, bad, "").await.text().await.unwrap();
        assert_eq!(
            repo_links(&html).first().map(String::as_str),
            Some("repo128")
        );
        assert!(!html.contains("rel=\"prev\""), "{bad}");
    }
    let html = get(&s, "/u/many.test?page=9", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(repo_links(&html).is_empty());
    assert!(html.contains("href=\"/u/many.test?page=8\""));
}
