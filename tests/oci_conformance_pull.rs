//! OCI Distribution Spec v1.1 conformance: blob pull (end-2, end-10), manifests (end-3,
//! end-7, end-9). Mirrors `conformance/01_pull_test.go`, the manifest part of
//! `02_push_test.go` and `04_management_test.go`.

mod common;

use common::oci::*;
use common::TestServer;
use serde_json::json;

const REPO: &str = "alice.test/conformance";
const OTHER: &str = "alice.test/other";
const SPEC_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

// --- blobs -----------------------------------------------------------------------------

/// end-2 `GET`/`HEAD /v2/<name>/blobs/<digest>` -> 200; content is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_and_head() {
    let s = TestServer::start().await;
    let data = bytes(200_000, 21);
    let digest = push_blob(&s, REPO, &data).await;

    let resp = get(&s, &format!("/v2/{REPO}/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("200000"));
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);
    assert_eq!(body.as_ref(), data.as_slice());

    let resp = head(&s, &format!("/v2/{REPO}/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("200000"));
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

    // The empty blob is a blob too.
    let empty = push_blob(&s, REPO, b"").await;
    let resp = get(&s, &format!("/v2/{REPO}/blobs/{empty}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("0"));
}

/// Detail "Fetch Blob Part": "This endpoint MAY also support RFC7233 compliant range
/// requests"; a satisfiable range is `206` with `Content-Range`, an unsatisfiable one
/// `416 Requested Range Not Satisfiable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_range_requests() {
    let s = TestServer::start().await;
    let data = bytes(1000, 22);
    let digest = push_blob(&s, REPO, &data).await;
    let url = s.url(&format!("/v2/{REPO}/blobs/{digest}"));
    let ranged = |r: &'static str| s.client.get(&url).header("Range", r).send();

    let resp = ranged("bytes=10-19").await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        header(&resp, "Content-Range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("10"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);

    let resp = ranged("bytes=990-").await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        header(&resp, "Content-Range").as_deref(),
        Some("bytes 990-999/1000")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[990..]);

    let resp = ranged("bytes=-5").await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        header(&resp, "Content-Range").as_deref(),
        Some("bytes 995-999/1000")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[995..]);

    let resp = ranged("bytes=990-5000").await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        206,
        "last-byte-pos past the end is clamped"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[990..]);

    let resp = ranged("bytes=1000-").await.unwrap();
    assert_eq!(resp.status().as_u16(), 416);
    let cr = header(&resp, "Content-Range");
    assert!(
        cr.is_none() || cr.as_deref() == Some("bytes */1000"),
        "{cr:?}"
    );
    let resp = ranged("bytes=5000-6000").await.unwrap();
    assert_eq!(resp.status().as_u16(), 416);
}

/// end-2 failure `404`; code-1 `BLOB_UNKNOWN` "blob unknown to registry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_blob_is_404_blob_unknown() {
    let s = TestServer::start().await;
    push_blob(&s, REPO, b"repo exists").await;
    let missing = sha256(b"hello world");
    let resp = get(&s, &format!("/v2/{REPO}/blobs/{missing}")).await;
    assert_error(resp, 404, "BLOB_UNKNOWN").await;
    let resp = head(&s, &format!("/v2/{REPO}/blobs/{missing}")).await;
    assert_eq!(resp.status().as_u16(), 404);
    let resp = get(&s, &format!("/v2/alice.test/no-such-repo/blobs/{missing}")).await;
    assert_eq!(resp.status().as_u16(), 404);
}

/// Blobs are linked per repository: a blob pushed into A is not served from B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_scoped_per_repository() {
    let s = TestServer::start().await;
    let data = b"only in A";
    let digest = push_blob(&s, REPO, data).await;
    push_blob(&s, OTHER, b"B has something else").await;
    let resp = get(&s, &format!("/v2/{OTHER}/blobs/{digest}")).await;
    assert_error(resp, 404, "BLOB_UNKNOWN").await;
    let resp = head(&s, &format!("/v2/{OTHER}/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 404);
    let resp = get(&s, &format!("/v2/alice.test/never/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 404);
    // ...and a manifest in B cannot reference it.
    let config = b"{}";
    push_blob(&s, OTHER, config).await;
    let body = image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![descriptor(OCI_LAYER, data)],
    );
    assert_error(
        put_manifest(&s, OTHER, "v1", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

/// end-10 `DELETE /v2/<name>/blobs/<digest>` -> 202; "If the blob is not found, a `404 Not
/// Found` code MUST be returned."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_delete_then_404() {
    let s = TestServer::start().await;
    let digest = push_blob(&s, REPO, b"delete me").await;
    let keep = push_blob(&s, REPO, b"keep me").await;
    let resp = delete(&s, &format!("/v2/{REPO}/blobs/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_error(
        get(&s, &format!("/v2/{REPO}/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        head(&s, &format!("/v2/{REPO}/blobs/{digest}"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_error(
        delete(&s, &format!("/v2/{REPO}/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/blobs/{keep}"))
            .await
            .status()
            .as_u16(),
        200
    );
}

// --- manifests -------------------------------------------------------------------------

/// Push config + layer, returning their descriptors.
async fn blobs_for_manifest(
    s: &TestServer,
    repo: &str,
    seed: u64,
) -> (serde_json::Value, serde_json::Value) {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{seed}}}").into_bytes();
    let layer = bytes(777, seed);
    push_blob(s, repo, &config).await;
    push_blob(s, repo, &layer).await;
    (
        descriptor(OCI_CONFIG, &config),
        descriptor(OCI_LAYER, &layer),
    )
}

async fn assert_manifest(
    s: &TestServer,
    repo: &str,
    reference: &str,
    body: &[u8],
    media_type: &str,
) {
    let digest = sha256(body);
    let resp = get(s, &format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(resp.status().as_u16(), 200, "GET manifest {reference}");
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(media_type));
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        header(&resp, "Content-Length"),
        Some(body.len().to_string())
    );
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        body,
        "manifest bytes are unmodified"
    );

    let resp = head(s, &format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(resp.status().as_u16(), 200, "HEAD manifest {reference}");
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(media_type));
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        header(&resp, "Content-Length"),
        Some(body.len().to_string())
    );
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// spec "Pushing Manifests": "Upon a successful upload, the registry MUST return response
/// code `201 Created`, and MUST have the following header: Location"; pulls return the
/// pushed bytes unchanged (the digest is over those bytes) with the pushed media type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_manifest_put_by_tag_and_get_by_tag_and_digest() {
    let s = TestServer::start().await;
    let (config, layer) = blobs_for_manifest(&s, REPO, 31).await;
    // Odd but valid formatting: the bytes must survive as-is.
    let body = format!(
        "{{\n  \"schemaVersion\" : 2,\n\t\"mediaType\": \"{OCI_MANIFEST}\",  \"config\": {config},\n\"layers\": [ {layer} ],\n\"annotations\": {{\"z\":\"1\",\"a\":\"2\"}} }}\n"
    )
    .into_bytes();
    let digest = sha256(&body);
    let resp = put_manifest(&s, REPO, "v1.0", OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let loc = location(&resp);
    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "Location is pullable");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    assert_manifest(&s, REPO, "v1.0", &body, OCI_MANIFEST).await;
    assert_manifest(&s, REPO, &digest, &body, OCI_MANIFEST).await;

    // With an Accept header as the official suite sends.
    let resp = s
        .client
        .get(s.url(&format!("/v2/{REPO}/manifests/{digest}")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Push the same manifest under 4 tags (official suite), all 201 with Location.
    for i in 0..4 {
        let resp = put_manifest(&s, REPO, &format!("test{i}"), OCI_MANIFEST, &body).await;
        assert_eq!(resp.status().as_u16(), 201);
        location(&resp);
    }
}

/// end-7 with a digest reference -> 201; no tag is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_manifest_put_by_digest() {
    let s = TestServer::start().await;
    let (config, layer) = blobs_for_manifest(&s, REPO, 32).await;
    let body = image_manifest(config, vec![layer]);
    let digest = sha256(&body);
    let resp = put_manifest(&s, REPO, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let loc = location(&resp);
    assert_eq!(
        s.client
            .get(resolve(&s, &loc))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_manifest(&s, REPO, &digest, &body, OCI_MANIFEST).await;
    let resp = get(&s, &format!("/v2/{REPO}/tags/list")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(tags_of(&json(resp).await).is_empty());
}

/// The official suite: "Registry should accept a manifest upload with no layers" (warns
/// otherwise); spec: "the list of blobs MAY be empty".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_no_layers_is_accepted() {
    let s = TestServer::start().await;
    let config = b"{\"os\":\"linux\"}";
    push_blob(&s, REPO, config).await;
    let body = image_manifest(descriptor(OCI_CONFIG, config), vec![]);
    push_manifest(&s, REPO, "emptylayer", OCI_MANIFEST, &body).await;
    assert_manifest(&s, REPO, "emptylayer", &body, OCI_MANIFEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_and_manifest_list() {
    let s = TestServer::start().await;
    let config = b"{\"architecture\":\"arm64\",\"os\":\"linux\"}";
    let layer = bytes(500, 33);
    push_blob(&s, REPO, config).await;
    push_blob(&s, REPO, &layer).await;
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    let digest = push_manifest(&s, REPO, "docker", DOCKER_MANIFEST, &body).await;
    assert_manifest(&s, REPO, "docker", &body, DOCKER_MANIFEST).await;

    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST, "digest": digest, "size": body.len(),
            "platform": {"architecture": "arm64", "os": "linux"}
        }],
    }))
    .unwrap();
    push_manifest(&s, REPO, "docker-list", DOCKER_LIST, &list).await;
    assert_manifest(&s, REPO, "docker-list", &list, DOCKER_LIST).await;
    assert_manifest(&s, REPO, &sha256(&list), &list, DOCKER_LIST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_index_referencing_two_platform_manifests() {
    let s = TestServer::start().await;
    let mut entries = vec![];
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (config, layer) = blobs_for_manifest(&s, REPO, 40 + i as u64).await;
        let body = image_manifest(config, vec![layer]);
        let digest = push_manifest(&s, REPO, &sha256(&body), OCI_MANIFEST, &body).await;
        entries.push(json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let index = serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    let resp = put_manifest(&s, REPO, "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(header(&resp, "Docker-Content-Digest"), Some(sha256(&index)));
    location(&resp);
    assert_manifest(&s, REPO, "multi", &index, OCI_INDEX).await;
    assert_manifest(&s, REPO, &sha256(&index), &index, OCI_INDEX).await;
}

/// code-5 `MANIFEST_BLOB_UNKNOWN` "This error MAY be returned when a manifest blob is
/// unknown to the registry": an index whose child manifest is not in the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_missing_child_is_400_manifest_blob_unknown() {
    let s = TestServer::start().await;
    let missing = sha256(b"no such manifest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 100,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let resp = put_manifest(&s, REPO, "broken", OCI_INDEX, &index).await;
    assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/broken"))
            .await
            .status()
            .as_u16(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_missing_blob_is_400_manifest_blob_unknown() {
    let s = TestServer::start().await;
    let (config, _layer) = blobs_for_manifest(&s, REPO, 50).await;
    let missing_layer = descriptor(OCI_LAYER, b"never uploaded");
    let body = image_manifest(config.clone(), vec![missing_layer]);
    assert_error(
        put_manifest(&s, REPO, "v1", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;

    let missing_config = descriptor(OCI_CONFIG, b"{\"never\":true}");
    let body = image_manifest(missing_config, vec![]);
    assert_error(
        put_manifest(&s, REPO, "v2", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/v1"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/v2"))
            .await
            .status()
            .as_u16(),
        404
    );
}

/// end-7 PUT by digest whose digest does not match the body: code-4 `DIGEST_INVALID`
/// "provided digest did not match uploaded content" (400); nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_put_by_mismatched_digest_is_400_digest_invalid() {
    let s = TestServer::start().await;
    let (config, layer) = blobs_for_manifest(&s, REPO, 51).await;
    let body = image_manifest(config, vec![layer]);
    let wrong = sha256(b"not the manifest");
    assert_error(
        put_manifest(&s, REPO, &wrong, OCI_MANIFEST, &body).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/{wrong}"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/{}", sha256(&body)))
            .await
            .status()
            .as_u16(),
        404
    );
}

/// code-6 `MANIFEST_INVALID` "manifest invalid".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_400_manifest_invalid() {
    let s = TestServer::start().await;
    let (config, layer) = blobs_for_manifest(&s, REPO, 52).await;
    let cases: Vec<Vec<u8>> = vec![
        b"this is not json {".to_vec(),
        b"".to_vec(),
        b"[1,2,3]".to_vec(),
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "nope", "layers": []}),
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer]}),
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": config, "layers": []}),
        )
        .unwrap(),
    ];
    for (i, body) in cases.iter().enumerate() {
        let resp = put_manifest(&s, REPO, &format!("bad{i}"), OCI_MANIFEST, body).await;
        assert_error(resp, 400, "MANIFEST_INVALID").await;
        assert_eq!(
            get(&s, &format!("/v2/{REPO}/manifests/bad{i}"))
                .await
                .status()
                .as_u16(),
            404
        );
    }
}

/// spec: "If a manifest includes a `mediaType` field, clients MUST set the `Content-Type`
/// header to the value specified by the `mediaType` field" -> a mismatch is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_type_not_matching_content_type_is_400_manifest_invalid() {
    let s = TestServer::start().await;
    let (config, layer) = blobs_for_manifest(&s, REPO, 53).await;
    let body = image_manifest(config, vec![layer]);
    for ct in [OCI_INDEX, DOCKER_MANIFEST] {
        let resp = put_manifest(&s, REPO, "mismatch", ct, &body).await;
        assert_error(resp, 400, "MANIFEST_INVALID").await;
    }
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/mismatch"))
            .await
            .status()
            .as_u16(),
        404
    );
    // Parameters on Content-Type "SHOULD" be ignored.
    let resp = put_manifest(
        &s,
        REPO,
        "params",
        &format!("{OCI_MANIFEST}; charset=utf-8"),
        &body,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
}

/// A manifest that is valid apart from its size, padded with an annotation to `size` bytes.
fn padded_manifest(config: &serde_json::Value, size: usize) -> Vec<u8> {
    let base = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
        "annotations": {"pad": ""}
    }))
    .unwrap();
    let pad = "x".repeat(size - base.len());
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
        "annotations": {"pad": pad}
    }))
    .unwrap();
    assert_eq!(body.len(), size);
    body
}

/// spec: "Registries SHOULD enforce a maximum manifest size ... respond with `413 Payload
/// Too Large`"; "Clients and registries SHOULD expect to support manifest uploads of at
/// least 4 MiB."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_size_limit_is_4mib_and_larger_is_413() {
    let s = TestServer::start().await;
    let config = b"{}";
    push_blob(&s, REPO, config).await;
    let cd = descriptor(OCI_CONFIG, config);

    let at_limit = padded_manifest(&cd, 4 * 1024 * 1024);
    let resp = put_manifest(&s, REPO, "big", OCI_MANIFEST, &at_limit).await;
    assert_eq!(resp.status().as_u16(), 201, "a 4 MiB manifest is accepted");
    assert_manifest(&s, REPO, "big", &at_limit, OCI_MANIFEST).await;

    let over = padded_manifest(&cd, 4 * 1024 * 1024 + 1);
    // The client must get to read the 413: a connection reset mid-body is a failure.
    let resp = s
        .client
        .put(s.url(&format!("/v2/{REPO}/manifests/too-big")))
        .header("Content-Type", OCI_MANIFEST)
        .body(over.clone())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!("no 413 response could be read for an oversized manifest: {e:?}")
        });
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/too-big"))
            .await
            .status()
            .as_u16(),
        404
    );
    let resp = get(&s, &format!("/v2/{REPO}/manifests/{}", sha256(&over))).await;
    assert_eq!(resp.status().as_u16(), 404, "oversized body is not stored");
}

/// end-3 failure `404`; code-7 `MANIFEST_UNKNOWN` "manifest unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_manifest_is_404_manifest_unknown() {
    let s = TestServer::start().await;
    push_image(&s, REPO, "exists", 54).await;
    // 01_pull_test.go "Error codes": `sha256:totallywrong` -> 400 or 404; a 400 carries a
    // spec error code.
    let resp = get(&s, &format!("/v2/{REPO}/manifests/sha256:totallywrong")).await;
    let status = resp.status().as_u16();
    assert!(status == 400 || status == 404, "{status}");
    if status == 400 {
        let code = error_code(resp).await;
        assert!(SPEC_CODES.contains(&code.as_str()), "{code}");
    }
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/nonexistent")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let missing = sha256(b"hello world");
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/{missing}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        head(&s, &format!("/v2/{REPO}/manifests/nonexistent"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        head(&s, &format!("/v2/{REPO}/manifests/{missing}"))
            .await
            .status()
            .as_u16(),
        404
    );
    // "An attempt to pull a nonexistent repository MUST return response code 404 Not Found"
    let resp = get(&s, "/v2/alice.test/nonexistent/manifests/latest").await;
    assert_eq!(resp.status().as_u16(), 404);
    let code = error_code(resp).await;
    assert!(
        code == "NAME_UNKNOWN" || code == "MANIFEST_UNKNOWN",
        "{code}"
    );
}

/// Official suite (01_pull_test.go and 02_push_test.go, "GET nonexistent manifest should
/// return 404"): `GET /v2/<name>/manifests/.INVALID_MANIFEST_NAME` must be `404`; end-3
/// lists only `404` as failure for GET/HEAD manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_manifest_by_invalid_tag_is_404() {
    let s = TestServer::start().await;
    push_image(&s, REPO, "exists", 61).await;
    let resp = get(&s, &format!("/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME")).await;
    assert_eq!(resp.status().as_u16(), 404, "GET .INVALID_MANIFEST_NAME");
    let resp = head(&s, &format!("/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME")).await;
    assert_eq!(resp.status().as_u16(), 404, "HEAD .INVALID_MANIFEST_NAME");
}

/// spec "Deleting Manifests": "Upon success, the registry MUST respond with a `202 Accepted`
/// code"; "Once deleted, a `GET` to `/v2/<name>/manifests/<digest>` and any tag pointing to
/// that digest will return a 404."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_manifest_by_digest_removes_it_and_its_tags() {
    let s = TestServer::start().await;
    let (body, digest) = push_image(&s, REPO, "t1", 55).await;
    push_manifest(&s, REPO, "t2", OCI_MANIFEST, &body).await;
    push_image(&s, REPO, "keep", 56).await;

    let resp = delete(&s, &format!("/v2/{REPO}/manifests/{digest}")).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        head(&s, &format!("/v2/{REPO}/manifests/{digest}"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/t1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/t2")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags = tags_of(&json(get(&s, &format!("/v2/{REPO}/tags/list")).await).await);
    assert_eq!(tags, vec!["keep"]);
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/manifests/keep"))
            .await
            .status()
            .as_u16(),
        200
    );

    assert_error(
        delete(&s, &format!("/v2/{REPO}/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // "If the repository does not exist, the response MUST return 404 Not Found."
    let resp = delete(
        &s,
        &format!("/v2/alice.test/nonexistent/manifests/{digest}"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 404);
}

/// spec "Deleting tags": "Upon success, the registry MUST respond with a `202 Accepted`
/// code"; "Once deleted, a `GET` to `/v2/<name>/manifests/<tag>` will return a 404." The
/// manifest and its other tags stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_tag_removes_only_the_tag() {
    let s = TestServer::start().await;
    let (body, digest) = push_image(&s, REPO, "a", 57).await;
    push_manifest(&s, REPO, "b", OCI_MANIFEST, &body).await;
    let resp = delete(&s, &format!("/v2/{REPO}/manifests/a")).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_error(
        get(&s, &format!("/v2/{REPO}/manifests/a")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_manifest(&s, REPO, "b", &body, OCI_MANIFEST).await;
    assert_manifest(&s, REPO, &digest, &body, OCI_MANIFEST).await;
    assert_eq!(
        tags_of(&json(get(&s, &format!("/v2/{REPO}/tags/list")).await).await),
        vec!["b"]
    );
    assert_error(
        delete(&s, &format!("/v2/{REPO}/manifests/a")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// Pushing a different manifest under an existing tag moves the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retagging_moves_the_tag() {
    let s = TestServer::start().await;
    let (body1, d1) = push_image(&s, REPO, "latest", 58).await;
    let (body2, d2) = push_image(&s, REPO, "latest", 59).await;
    assert_ne!(d1, d2);
    assert_manifest(&s, REPO, "latest", &body2, OCI_MANIFEST).await;
    assert_manifest(&s, REPO, &d1, &body1, OCI_MANIFEST).await;
    assert_eq!(
        tags_of(&json(get(&s, &format!("/v2/{REPO}/tags/list")).await).await),
        vec!["latest"]
    );
    // Deleting the old digest must not take the moved tag with it.
    assert_eq!(
        delete(&s, &format!("/v2/{REPO}/manifests/{d1}"))
            .await
            .status()
            .as_u16(),
        202
    );
    assert_manifest(&s, REPO, "latest", &body2, OCI_MANIFEST).await;
}

/// Manifests and tags persist across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_blobs_survive_restart() {
    let s = TestServer::start().await;
    let (body, digest) = push_image(&s, REPO, "persist", 60).await;
    let s = s.restart().await;
    assert_manifest(&s, REPO, "persist", &body, OCI_MANIFEST).await;
    assert_manifest(&s, REPO, &digest, &body, OCI_MANIFEST).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        get(&s, &format!("/v2/{REPO}/blobs/{layer}"))
            .await
            .status()
            .as_u16(),
        200
    );
}
