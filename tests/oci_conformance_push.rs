//! OCI Distribution Spec v1.1 conformance: blob push (end-4a/4b, end-5, end-6, end-11,
//! end-13, end-14). Mirrors `conformance/02_push_test.go` and the spec section "Push".

mod common;

use common::oci::*;
use common::TestServer;

const REPO: &str = "alice.test/conformance";
const OTHER: &str = "alice.test/cross-mount";
const DID_REPO: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz/app";

async fn patch(s: &TestServer, loc: &str, range: Option<&str>, data: &[u8]) -> reqwest::Response {
    let mut req = s
        .client
        .patch(resolve(s, loc))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string());
    if let Some(r) = range {
        req = req.header("Content-Range", r);
    }
    req.body(data.to_vec()).send().await.unwrap()
}

async fn put_digest(s: &TestServer, loc: &str, digest: &str, data: &[u8]) -> reqwest::Response {
    s.client
        .put(resolve(s, &with_query(loc, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

async fn blob_content(s: &TestServer, repo: &str, digest: &str) -> Option<Vec<u8>> {
    let resp = get(s, &format!("/v2/{repo}/blobs/{digest}")).await;
    match resp.status().as_u16() {
        200 => Some(resp.bytes().await.unwrap().to_vec()),
        404 => None,
        other => panic!("GET blob: unexpected {other}"),
    }
}

/// spec "POST then PUT": POST "MUST return 202 Accepted" with `Location`; PUT
/// `<location>?digest=<digest>` "MUST return 201 Created" with `Location: <blob-location>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_post_then_put() {
    let s = TestServer::start().await;
    for repo in [REPO, DID_REPO] {
        let data = bytes(70_000, 1);
        let digest = sha256(&data);
        assert_eq!(
            blob_content(&s, repo, &digest).await,
            None,
            "GET nonexistent blob -> 404"
        );

        let resp = s
            .client
            .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let loc = location(&resp);
        assert!(
            header(&resp, "Docker-Upload-UUID").is_some_and(|u| !u.is_empty()),
            "Docker-Upload-UUID"
        );

        let resp = put_digest(&s, &loc, &digest, &data).await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );
        let blob_loc = location(&resp);
        let resp = s.client.get(resolve(&s, &blob_loc)).send().await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "Location is a pullable blob URL"
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
        assert_eq!(
            blob_content(&s, repo, &digest).await.as_deref(),
            Some(data.as_slice())
        );
    }
}

/// end-4b `POST /v2/<name>/blobs/uploads/?digest=<digest>` -> `201`/`202` (the official
/// suite accepts either); after 202 the blob is not there yet and the session completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_post_monolithic_upload() {
    let s = TestServer::start().await;
    let data = bytes(4096, 2);
    let digest = sha256(&data);
    let resp = s
        .client
        .post(s.url(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(status == 201 || status == 202, "single POST: {status}");
    let loc = location(&resp);
    if status == 201 {
        assert_eq!(
            blob_content(&s, REPO, &digest).await.as_deref(),
            Some(data.as_slice())
        );
        let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    } else {
        assert_eq!(blob_content(&s, REPO, &digest).await, None);
        assert_eq!(
            put_digest(&s, &loc, &digest, &data).await.status().as_u16(),
            201
        );
        assert_eq!(
            blob_content(&s, REPO, &digest).await.as_deref(),
            Some(data.as_slice())
        );
    }
}

/// spec "Pushing a blob in chunks": each PATCH "MUST be `202 Accepted`, and MUST have the
/// following headers: Location, Range: 0-<end-of-range>"; GET on the session "MUST be a
/// `204 No Content` response code, and MUST have ... Location, Range"; the closing PUT may
/// carry the final chunk and "MUST be `201 Created`".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_patch_patch_put_with_final_chunk() {
    let s = TestServer::start().await;
    let data = bytes(30_000, 3);
    let digest = sha256(&data);
    let (c1, rest) = data.split_at(10_000);
    let (c2, c3) = rest.split_at(12_345);

    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("0-9999"), c1).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-9999"));
    assert!(header(&resp, "Docker-Upload-UUID").is_some());
    let loc = location(&resp);

    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204, "upload status");
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-9999"));
    assert!(header(&resp, "Docker-Upload-UUID").is_some());
    let loc = location(&resp);

    let resp = patch(&s, &loc, Some("10000-22344"), c2).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-22344"));
    let loc = location(&resp);

    let resp = s
        .client
        .put(resolve(&s, &with_query(&loc, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("22345-{}", data.len() - 1))
        .header("Content-Length", c3.len().to_string())
        .body(c3.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    location(&resp);
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(data.as_slice())
    );
}

/// `02_push_test.go` "Blob Upload Streamed": PATCH without Content-Range -> 202, then PUT
/// with the digest and no body -> 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_patch_without_content_range() {
    let s = TestServer::start().await;
    let data = bytes(50_000, 4);
    let digest = sha256(&data);
    let loc = start_upload(&s, REPO).await;
    let resp = s
        .client
        .patch(resolve(&s, &loc))
        .header("Content-Type", "application/octet-stream")
        .body(data[..20_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-19999"));
    let loc = location(&resp);
    let resp = patch(&s, &loc, None, &data[20_000..]).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-49999"));
    let loc = location(&resp);
    let resp = s
        .client
        .put(resolve(&s, &with_query(&loc, &format!("digest={digest}"))))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    location(&resp);
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(data.as_slice())
    );
}

/// spec: "If a chunk is uploaded out of order, the registry MUST respond with a `416
/// Requested Range Not Satisfiable` code." The official suite also retries the first chunk
/// (416) and then reads the status (204, Range unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_chunk_is_416() {
    let s = TestServer::start().await;
    let data = b"Hello, how are you today?";
    let digest = sha256(data);

    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("3-24"), &data[3..]).await;
    assert_eq!(
        resp.status().as_u16(),
        416,
        "chunk that does not start at 0"
    );

    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("0-2"), &data[..3]).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-2"));
    let resp = patch(&s, &loc, Some("0-2"), &data[..3]).await;
    assert_eq!(resp.status().as_u16(), 416, "retry of the previous chunk");
    let resp = patch(&s, &loc, Some("5-24"), &data[5..]).await;
    assert_eq!(resp.status().as_u16(), 416, "gap after the previous chunk");

    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        header(&resp, "Range").as_deref(),
        Some("0-2"),
        "416s do not change the offset"
    );
    let loc = location(&resp);
    let resp = patch(&s, &loc, Some("3-24"), &data[3..]).await;
    assert_eq!(resp.status().as_u16(), 202);
    let loc = location(&resp);
    assert_eq!(
        put_digest(&s, &loc, &digest, b"").await.status().as_u16(),
        201
    );
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(&data[..])
    );
}

/// spec: "The final chunk MAY be uploaded using a `PATCH` request or it MAY be uploaded in
/// the closing `PUT` request", and "If a chunk is uploaded out of order, the registry MUST
/// respond with a `416 Requested Range Not Satisfiable` code." A closing PUT whose
/// `Content-Range` does not continue the upload is 416, and the session survives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_final_chunk_in_put_is_416() {
    let s = TestServer::start().await;
    let data = b"Hello, how are you today?";
    let digest = sha256(data);
    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("0-2"), &data[..3]).await;
    assert_eq!(resp.status().as_u16(), 202);
    let loc = location(&resp);
    let resp = s
        .client
        .put(resolve(&s, &with_query(&loc, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "5-24")
        .header("Content-Length", "20")
        .body(data[5..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        416,
        "out-of-order final chunk in PUT"
    );
    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204, "session survives the 416");
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-2"));
    let resp = s
        .client
        .put(resolve(&s, &with_query(&loc, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "3-24")
        .header("Content-Length", "22")
        .body(data[3..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(&data[..])
    );
}

/// end-13 `GET /v2/<name>/blobs/uploads/<reference>` -> 204 with Location (fresh session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_status_of_fresh_session_is_204() {
    let s = TestServer::start().await;
    let loc = start_upload(&s, REPO).await;
    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    location(&resp);
    assert!(
        header(&resp, "Range").is_some(),
        "Range header on upload status"
    );
    assert!(header(&resp, "Docker-Upload-UUID").is_some());
}

/// end-14 `DELETE <location>` -> 204; afterwards the session is unknown: code-3
/// `BLOB_UPLOAD_UNKNOWN` "blob upload unknown to registry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_upload_then_session_is_unknown() {
    let s = TestServer::start().await;
    let loc = start_upload(&s, REPO).await;
    assert_eq!(
        patch(&s, &loc, Some("0-3"), b"abcd")
            .await
            .status()
            .as_u16(),
        202
    );
    let resp = s
        .client
        .delete(resolve(&s, &loc))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);

    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch(&s, &loc, Some("4-7"), b"efgh").await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = put_digest(&s, &loc, &sha256(b"abcd"), b"").await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = s.client.delete(resolve(&s, &loc)).send().await.unwrap();
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;

    let resp = get(
        &s,
        &format!("/v2/{REPO}/blobs/uploads/00000000-0000-4000-8000-000000000000"),
    )
    .await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

/// code-4 `DIGEST_INVALID` "provided digest did not match uploaded content"; end-6 failure
/// `400`. The blob must not become visible under either digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_wrong_digest_is_400_and_blob_not_visible() {
    let s = TestServer::start().await;
    let data = bytes(1000, 5);
    let wrong = sha256(b"something else");
    let loc = start_upload(&s, REPO).await;
    let resp = put_digest(&s, &loc, &wrong, &data).await;
    assert_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(blob_content(&s, REPO, &wrong).await, None);
    assert_eq!(blob_content(&s, REPO, &sha256(&data)).await, None);
    let resp = head(&s, &format!("/v2/{REPO}/blobs/{}", sha256(&data))).await;
    assert_eq!(resp.status().as_u16(), 404);

    // Same through the single-POST path.
    let resp = s
        .client
        .post(s.url(&format!("/v2/{REPO}/blobs/uploads/?digest={wrong}")))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    if resp.status().as_u16() != 202 {
        assert_error(resp, 400, "DIGEST_INVALID").await;
    }
    assert_eq!(blob_content(&s, REPO, &wrong).await, None);
    assert_eq!(blob_content(&s, REPO, &sha256(&data)).await, None);
}

/// Digests that are malformed or use an unsupported algorithm are `DIGEST_INVALID` (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_and_malformed_digests_are_400_digest_invalid() {
    let s = TestServer::start().await;
    let data = b"digest checks";
    let hex = &sha256(data)[7..];
    let bad = [
        "md5:0a2a6b2a4d1bd6a4c4e6ea7b3f4d5c6e".to_string(),
        "sha256:zzzz".to_string(),
        format!("sha256:{}", &hex[..60]),
        format!("sha256:{hex}00"),
        format!("sha256:{}", hex.to_uppercase()),
        hex.to_string(),
        "sha256:".to_string(),
    ];
    for d in &bad {
        let loc = start_upload(&s, REPO).await;
        let resp = put_digest(&s, &loc, d, data).await;
        assert_error(resp, 400, "DIGEST_INVALID").await;
        let resp = s
            .client
            .post(s.url(&format!("/v2/{REPO}/blobs/uploads/?digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "DIGEST_INVALID").await;
    }
    // Closing PUT without any digest.
    let loc = start_upload(&s, REPO).await;
    let resp = s
        .client
        .put(resolve(&s, &loc))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "PUT without ?digest");
    let code = error_code(resp).await;
    assert!(
        code == "DIGEST_INVALID" || code == "BLOB_UPLOAD_INVALID",
        "{code}"
    );
}

/// sha512 is a registered algorithm (image-spec descriptor): upload, pull, HEAD and a
/// manifest addressed by a sha512 digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_digests_work_end_to_end() {
    let s = TestServer::start().await;
    let data = bytes(9000, 6);
    let d512 = sha512(&data);

    // Chunked, closed with a sha512 digest.
    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("0-4999"), &data[..5000]).await;
    assert_eq!(resp.status().as_u16(), 202);
    let loc = location(&resp);
    let resp = put_digest(&s, &loc, &d512, &data[5000..]).await;
    assert_eq!(resp.status().as_u16(), 201);
    let resp = get(&s, &format!("/v2/{REPO}/blobs/{d512}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let dcd = header(&resp, "Docker-Content-Digest").unwrap_or_default();
    assert!(
        dcd == d512 || dcd == sha256(&data),
        "Docker-Content-Digest {dcd}"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = head(&s, &format!("/v2/{REPO}/blobs/{d512}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("9000"));

    // Wrong sha512 is rejected.
    let loc = start_upload(&s, REPO).await;
    let resp = put_digest(&s, &loc, &sha512(b"other"), &data).await;
    assert_error(resp, 400, "DIGEST_INVALID").await;

    // A manifest pushed and pulled by its sha512 digest.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    push_blob(&s, REPO, config).await;
    let layer = serde_json::json!({"mediaType": OCI_LAYER, "digest": d512, "size": data.len()});
    let body = image_manifest(descriptor(OCI_CONFIG, config), vec![layer]);
    let md = sha512(&body);
    let resp = put_manifest(&s, REPO, &md, OCI_MANIFEST, &body).await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let resp = get(&s, &format!("/v2/{REPO}/manifests/{md}")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
}

/// Upload sessions belong to the repository they were started in: using the session id
/// under another repository name is `404` (`BLOB_UPLOAD_UNKNOWN`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_is_bound_to_its_repository() {
    let s = TestServer::start().await;
    let data = b"session scoping";
    let digest = sha256(data);
    push_blob(&s, OTHER, b"make the other repo exist").await;
    let loc = start_upload(&s, REPO).await;
    let path = path_of(&loc);
    let path = path.split('?').next().unwrap();
    let prefix = format!("/v2/{REPO}/blobs/uploads/");
    assert!(
        path.starts_with(&prefix),
        "Location {path} is under the repository"
    );
    let foreign = format!("/v2/{OTHER}/blobs/uploads/{}", &path[prefix.len()..]);

    let resp = get(&s, &foreign).await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch(&s, &foreign, Some("0-14"), data).await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = put_digest(&s, &foreign, &digest, data).await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = delete(&s, &foreign).await;
    assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(blob_content(&s, OTHER, &digest).await, None);

    // The session is intact in its own repository.
    assert_eq!(
        put_digest(&s, &loc, &digest, data).await.status().as_u16(),
        201
    );
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(&data[..])
    );
    assert_eq!(blob_content(&s, OTHER, &digest).await, None);
}

/// spec "Mounting a blob from another repository": "The response to a successful mount
/// MUST be `201 Created`, and MUST contain ... Location: <blob-location>"; the official suite
/// checks Location == `/v2/<name>/blobs/<digest>` and that GET on it is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repo_mount_with_from() {
    let s = TestServer::start().await;
    let data = bytes(3000, 7);
    let digest = push_blob(&s, REPO, &data).await;
    let resp = s
        .client
        .post(s.url(&format!(
            "/v2/{OTHER}/blobs/uploads/?mount={digest}&from={REPO}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let loc = location(&resp);
    assert_eq!(path_of(&loc), format!("/v2/{OTHER}/blobs/{digest}"));
    assert_eq!(
        header(&resp, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let resp = s.client.get(resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    // Mounting into a DID-named repository as well.
    let resp = s
        .client
        .post(s.url(&format!(
            "/v2/{DID_REPO}/blobs/uploads/?mount={digest}&from={REPO}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        blob_content(&s, DID_REPO, &digest).await.as_deref(),
        Some(data.as_slice())
    );
}

/// spec: "if a registry ... is unable to mount the requested blob, it SHOULD return a
/// `202`"; the suite checks the Location is an upload session of the target repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_of_nonexistent_blob_starts_a_session() {
    let s = TestServer::start().await;
    push_blob(&s, REPO, b"source repo exists").await;
    let data = b"not yet anywhere";
    let digest = sha256(data);
    let resp = s
        .client
        .post(s.url(&format!(
            "/v2/{OTHER}/blobs/uploads/?mount={digest}&from={REPO}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = location(&resp);
    assert!(
        path_of(&loc).starts_with(&format!("/v2/{OTHER}/blobs/uploads/")),
        "{loc}"
    );
    assert_eq!(
        put_digest(&s, &loc, &digest, data).await.status().as_u16(),
        201
    );
    assert_eq!(
        blob_content(&s, OTHER, &digest).await.as_deref(),
        Some(&data[..])
    );
}

/// spec: "The registry MAY treat the `from` parameter as optional, and it MAY cross-mount
/// the blob if it can be found." -> 201 (mounted) or 202 (session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_without_from_is_201_or_202() {
    let s = TestServer::start().await;
    let data = b"automatic content discovery";
    let digest = push_blob(&s, REPO, data).await;
    let resp = s
        .client
        .post(s.url(&format!("/v2/{OTHER}/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let loc = location(&resp);
    match status {
        201 => assert_eq!(
            blob_content(&s, OTHER, &digest).await.as_deref(),
            Some(&data[..])
        ),
        202 => {
            assert!(path_of(&loc).starts_with(&format!("/v2/{OTHER}/blobs/uploads/")));
            assert_eq!(blob_content(&s, OTHER, &digest).await, None);
        }
        other => panic!("mount without from: {other}"),
    }
}

/// An upload in progress survives a restart ("Resumable Push").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_restart() {
    let s = TestServer::start().await;
    let data = bytes(40_000, 8);
    let digest = sha256(&data);
    let loc = start_upload(&s, REPO).await;
    let resp = patch(&s, &loc, Some("0-14999"), &data[..15_000]).await;
    assert_eq!(resp.status().as_u16(), 202);
    let loc = path_of(&location(&resp));

    let s = s.restart().await;
    let resp = get(&s, &loc).await;
    assert_eq!(
        resp.status().as_u16(),
        204,
        "session still known after restart"
    );
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-14999"));
    let resp = patch(&s, &loc, Some("15000-29999"), &data[15_000..30_000]).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(header(&resp, "Range").as_deref(), Some("0-29999"));
    let loc = path_of(&location(&resp));
    let resp = put_digest(&s, &loc, &digest, &data[30_000..]).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        blob_content(&s, REPO, &digest).await.as_deref(),
        Some(data.as_slice())
    );
}
