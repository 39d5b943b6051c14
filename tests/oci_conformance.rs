//! OCI Distribution Spec v1.1 conformance, written from the spec text and the official
//! conformance suite (opencontainers/distribution-spec `conformance/`), not from this
//! implementation. This file: API version check, routing, repository names, the
//! `Docker-Distribution-API-Version` header, tag listing and the catalog.
//!
//! Sibling files: `oci_conformance_push.rs` (blob uploads), `oci_conformance_pull.rs`
//! (blob pulls, manifests, deletion), `oci_conformance_referrers.rs` (artifacts, referrers).
//! Shared helpers live in `tests/common/mod.rs` (`common::oci`).

mod common;

use common::oci::*;
use common::TestServer;

const REPO: &str = "alice.test/conformance";
const DID_REPO: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz/app";

// --- end-1: API version check --------------------------------------------------------

/// spec "Determining Support": "If the response is `200 OK`, then the registry implements
/// this specification." end-1 `GET /v2/` -> 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_returns_200() {
    let s = TestServer::start().await;
    let resp = get(&s, "/v2/").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404() {
    let s = TestServer::start().await;
    for path in [
        "/v2/alice.test/conformance/unknown/thing",
        "/v2/alice.test/conformance/tags/other",
        "/not-the-api",
    ] {
        let resp = get(&s, path).await;
        assert_eq!(resp.status().as_u16(), 404, "GET {path}");
    }
}

/// Legacy header: "When a `200 OK` or `401 Unauthorized` response is returned, the
/// \"Docker-Distribution-API-Version\" header SHOULD be set to \"registry/2.0\"." The brief
/// asks for it on every response below `/v2`, errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v2_response_carries_api_version_header() {
    let s = TestServer::start().await;
    let (_, digest) = push_image(&s, REPO, "v1", 1).await;
    let upload = start_upload(&s, REPO).await;
    let responses = vec![
        get(&s, "/v2/").await,
        get(&s, "/v2").await,
        get(&s, &format!("/v2/{REPO}/manifests/v1")).await,
        head(&s, &format!("/v2/{REPO}/manifests/{digest}")).await,
        get(&s, &format!("/v2/{REPO}/manifests/nope")).await,
        get(&s, &format!("/v2/{REPO}/blobs/{}", sha256(b"missing"))).await,
        get(&s, &format!("/v2/{REPO}/tags/list")).await,
        get(&s, &format!("/v2/{REPO}/referrers/{digest}")).await,
        get(&s, "/v2/_catalog").await,
        get(&s, "/v2/UPPER/tags/list").await,
        get(&s, "/v2/alice.test/conformance/unknown/thing").await,
        s.client.get(resolve(&s, &upload)).send().await.unwrap(),
        s.client
            .post(s.url(&format!("/v2/{REPO}/blobs/uploads/")))
            .send()
            .await
            .unwrap(),
    ];
    for resp in responses {
        assert_eq!(
            header(&resp, "Docker-Distribution-API-Version").as_deref(),
            Some("registry/2.0"),
            "{} {}",
            resp.status(),
            resp.url()
        );
    }
}

// --- repository names --------------------------------------------------------------------

/// spec: "`<name>` MUST match the following regular expression:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`"; error
/// code-8 `NAME_INVALID` "invalid repository name". The brief fixes the length limit at 255.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_400_name_invalid() {
    let s = TestServer::start().await;
    let long = format!("alice.test/{}", vec!["abcdefghij"; 25].join("/"));
    assert!(long.len() > 255);
    for name in [
        "Alice.test/Repo",
        "alice.test/a..b",
        "alice.test/-lead",
        "alice.test/trail-",
        long.as_str(),
    ] {
        let resp = get(&s, &format!("/v2/{name}/tags/list")).await;
        assert_error(resp, 400, "NAME_INVALID").await;
        let resp = s
            .client
            .post(s.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "NAME_INVALID").await;
        let resp = put_manifest(&s, name, "v1", OCI_MANIFEST, b"{}").await;
        assert_error(resp, 400, "NAME_INVALID").await;
    }
}

/// A name of exactly 255 characters is within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_of_255_chars_is_accepted() {
    let s = TestServer::start().await;
    let mut name = "alice.test/".to_string();
    while name.len() < 255 {
        name.push('a');
    }
    assert_eq!(name.len(), 255);
    let data = b"long name blob";
    let digest = push_blob(&s, &name, data).await;
    let resp = get(&s, &format!("/v2/{name}/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 200);
}

/// The first path segment may be a DID (`did:plc:...`): push and pull work under it, both
/// with the raw colon and percent-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn did_repository_names_work() {
    let s = TestServer::start().await;
    let (body, digest) = push_image(&s, DID_REPO, "latest", 7).await;
    let resp = get(&s, &format!("/v2/{DID_REPO}/manifests/latest")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    let encoded = DID_REPO.replace(':', "%3A");
    let resp = get(&s, &format!("/v2/{encoded}/manifests/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 200);

    let resp = get(&s, &format!("/v2/{DID_REPO}/tags/list")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let v = json(resp).await;
    assert_eq!(v["name"], DID_REPO);
    assert_eq!(tags_of(&v), vec!["latest"]);
}

// --- end-8a/8b: tags ---------------------------------------------------------------------

async fn push_tags(s: &TestServer, repo: &str, tags: &[&str]) -> String {
    let (body, digest) = push_image(s, repo, tags[0], 11).await;
    for t in &tags[1..] {
        push_manifest(s, repo, t, OCI_MANIFEST, &body).await;
    }
    digest
}

/// spec "Content Discovery": "the response MUST be a json body in the following format:
/// {"name": "<name>", "tags": [...]}" and "the tags MUST be in lexical order".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_is_sorted() {
    let s = TestServer::start().await;
    push_tags(&s, REPO, &["v2", "latest", "a1", "v10", "b_2", "1.0"]).await;
    let resp = get(&s, &format!("/v2/{REPO}/tags/list")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "Content-Type")
        .unwrap_or_default()
        .starts_with("application/json"));
    let v = json(resp).await;
    assert_eq!(v["name"], REPO);
    assert_eq!(tags_of(&v), vec!["1.0", "a1", "b_2", "latest", "v10", "v2"]);
}

/// spec: "the response MUST include `<int>` results" unless fewer exist or a `Link` header
/// is returned; "If more tags are available, the registry MAY include a `Link` header";
/// "When `n` is zero, this endpoint MUST return an empty list, and MUST NOT include a
/// `Link` header."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_n_limits_and_links_next_page() {
    let s = TestServer::start().await;
    push_tags(&s, REPO, &["t1", "t2", "t3", "t4", "t5"]).await;

    let resp = get(&s, &format!("/v2/{REPO}/tags/list?n=2")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let link = next_link(&resp).expect("Link rel=next when more tags exist");
    assert_eq!(tags_of(&json(resp).await), vec!["t1", "t2"]);
    assert!(
        link.contains("last=t2"),
        "next link continues after t2: {link}"
    );
    assert!(link.contains("n=2"), "next link keeps n: {link}");

    let resp = s.client.get(resolve(&s, &link)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(next_link(&resp).is_some());
    assert_eq!(tags_of(&json(resp).await), vec!["t3", "t4"]);

    let resp = get(&s, &format!("/v2/{REPO}/tags/list?n=2&last=t4")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(next_link(&resp).is_none(), "no Link on the last page");
    assert_eq!(tags_of(&json(resp).await), vec!["t5"]);

    let resp = get(&s, &format!("/v2/{REPO}/tags/list?n=0")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        header(&resp, "Link").is_none(),
        "n=0 MUST NOT include a Link header"
    );
    assert!(tags_of(&json(resp).await).is_empty());

    let resp = get(&s, &format!("/v2/{REPO}/tags/list?n=10")).await;
    assert!(header(&resp, "Link").is_none());
    assert_eq!(tags_of(&json(resp).await).len(), 5);
}

/// spec: "A request of this sort will return up to `<int>` tags, beginning non-inclusively
/// with `<tagname>`"; "When using the `last` query parameter, the `n` parameter is OPTIONAL."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_last_continues_after_tag() {
    let s = TestServer::start().await;
    push_tags(&s, REPO, &["a", "b", "c", "d"]).await;
    let v = json(get(&s, &format!("/v2/{REPO}/tags/list?last=b")).await).await;
    assert_eq!(tags_of(&v), vec!["c", "d"]);
    let v = json(get(&s, &format!("/v2/{REPO}/tags/list?n=1&last=a")).await).await;
    assert_eq!(tags_of(&v), vec!["b"]);
    // `last` need not be an existing tag: continue lexically after it.
    let v = json(get(&s, &format!("/v2/{REPO}/tags/list?last=bb")).await).await;
    assert_eq!(tags_of(&v), vec!["c", "d"]);
    let v = json(get(&s, &format!("/v2/{REPO}/tags/list?last=d")).await).await;
    assert!(tags_of(&v).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_paging_with_n2_reconstructs_full_list() {
    let s = TestServer::start().await;
    let mut all: Vec<String> = (0..7).map(|i| format!("tag-{i:02}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    push_tags(&s, REPO, &refs).await;
    all.sort();

    // Via `last`.
    let mut got: Vec<String> = vec![];
    loop {
        let url = match got.last() {
            Some(l) => format!("/v2/{REPO}/tags/list?n=2&last={l}"),
            None => format!("/v2/{REPO}/tags/list?n=2"),
        };
        let page = tags_of(&json(get(&s, &url).await).await);
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        got.extend(page);
        assert!(got.len() <= all.len(), "paging does not terminate: {got:?}");
    }
    assert_eq!(got, all);

    // Via the Link header.
    let mut got: Vec<String> = vec![];
    let mut url = s.url(&format!("/v2/{REPO}/tags/list?n=2"));
    loop {
        let resp = s.client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let next = next_link(&resp);
        got.extend(tags_of(&json(resp).await));
        assert!(
            got.len() <= all.len(),
            "Link paging does not terminate: {got:?}"
        );
        match next {
            Some(n) => url = resolve(&s, &n),
            None => break,
        }
    }
    assert_eq!(got, all);
}

/// end-8a failure `404`; code-9 `NAME_UNKNOWN` "repository name not known to registry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_of_unknown_repo_is_404_name_unknown() {
    let s = TestServer::start().await;
    let resp = get(&s, "/v2/alice.test/never-pushed/tags/list").await;
    assert_error(resp, 404, "NAME_UNKNOWN").await;
}

// --- catalog (Docker registry extension) ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_repositories_with_paging() {
    let s = TestServer::start().await;
    let repos = ["alice.test/one", "bob.test/two", DID_REPO];
    for (i, r) in repos.iter().enumerate() {
        push_image(&s, r, "v1", i as u64 + 20).await;
    }
    let mut sorted: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    sorted.sort();

    let resp = get(&s, "/v2/_catalog").await;
    assert_eq!(resp.status().as_u16(), 200);
    let v = json(resp).await;
    let list: Vec<String> = v["repositories"]
        .as_array()
        .expect("repositories array")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(list, sorted);

    let resp = get(&s, "/v2/_catalog?n=1").await;
    assert_eq!(resp.status().as_u16(), 200);
    let link = next_link(&resp).expect("Link rel=next when more repositories exist");
    let v = json(resp).await;
    assert_eq!(v["repositories"], serde_json::json!([sorted[0]]));

    let v = json(s.client.get(resolve(&s, &link)).send().await.unwrap()).await;
    assert_eq!(v["repositories"], serde_json::json!([sorted[1]]));

    let v = json(get(&s, &format!("/v2/_catalog?n=5&last={}", sorted[1])).await).await;
    assert_eq!(v["repositories"], serde_json::json!([sorted[2]]));
}

// --- uploads started right after startup ---------------------------------------------------

/// An upload session started while the startup housekeeping pass runs must not lose its
/// staged data: POST (202) followed by PUT must be 201, never 404 `BLOB_UPLOAD_UNKNOWN`
/// (spec: end-6 succeeds with 201 for an active session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_started_right_after_startup_completes() {
    let mut failures = vec![];
    for i in 0..15u64 {
        let s = TestServer::start().await;
        let data = bytes(1000, i);
        let loc = start_upload(&s, REPO).await;
        let resp = s
            .client
            .put(resolve(
                &s,
                &with_query(&loc, &format!("digest={}", sha256(&data))),
            ))
            .body(data)
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() != 201 {
            failures.push(format!(
                "start {i}: {} {}",
                resp.status(),
                resp.text().await.unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
