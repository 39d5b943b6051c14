//! OCI Distribution Spec v1.1 conformance: artifacts with `subject`, the `OCI-Subject`
//! header and the referrers API (end-12a/12b). Mirrors the referrers part of
//! `conformance/03_discovery_test.go` and `04_management_test.go`.

mod common;

use common::oci::*;
use common::TestServer;
use serde_json::json;

const REPO: &str = "alice.test/conformance";
const DID_REPO: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz/app";
const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";

/// Push the empty config blob `{}` and check its well-known digest.
async fn push_empty_config(s: &TestServer, repo: &str) {
    assert_eq!(sha256(b"{}"), EMPTY_DIGEST);
    push_blob(s, repo, b"{}").await;
}

fn empty_config() -> serde_json::Value {
    json!({"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2})
}

/// An artifact manifest: `artifactType`, empty config, one layer, `subject`, annotations.
async fn artifact(
    s: &TestServer,
    repo: &str,
    artifact_type: &str,
    subject: (&str, usize),
    note: &str,
) -> (Vec<u8>, serde_json::Value) {
    push_empty_config(s, repo).await;
    let layer = format!("artifact payload {note}").into_bytes();
    push_blob(s, repo, &layer).await;
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_config(),
        "layers": [descriptor("application/vnd.example.payload", &layer)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
        "annotations": {"org.example.note": note, "org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }))
    .unwrap();
    let annotations = json!({"org.example.note": note, "org.opencontainers.image.created": "2024-01-01T00:00:00Z"});
    (body, annotations)
}

/// GET the referrers list, checking the envelope; returns (`OCI-Filters-Applied`, manifests).
async fn referrers(
    s: &TestServer,
    repo: &str,
    digest: &str,
    query: &str,
) -> (Option<String>, Vec<serde_json::Value>) {
    let resp = get(s, &format!("/v2/{repo}/referrers/{digest}{query}")).await;
    assert_eq!(resp.status().as_u16(), 200, "GET referrers");
    assert_eq!(header(&resp, "Content-Type").as_deref(), Some(OCI_INDEX));
    let filters = header(&resp, "OCI-Filters-Applied");
    let text = resp.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    if let Some(mt) = v.get("mediaType") {
        assert_eq!(mt, OCI_INDEX);
    }
    let manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests array: {text}"))
        .clone();
    (filters, manifests)
}

fn find<'a>(list: &'a [serde_json::Value], digest: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not in {list:?}"))
}

/// spec "Pushing Manifests with Subject": "When processing a request for an image manifest
/// with the `subject` field, a registry implementation that supports the referrers API MUST
/// respond with the response header `OCI-Subject: <subject digest>`"; "Listing Referrers":
/// the response is an image index with `Content-Type: application/vnd.oci.image.index.v1+json`
/// whose descriptors carry `artifactType` and all annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_with_subject_is_listed_as_referrer() {
    let s = TestServer::start().await;
    for repo in [REPO, DID_REPO] {
        let (subject_body, subject) = push_image(&s, repo, "v1", 70).await;
        let (body, annotations) =
            artifact(&s, repo, SBOM, (&subject, subject_body.len()), "sbom").await;
        let digest = sha256(&body);
        let resp = put_manifest(&s, repo, &digest, OCI_MANIFEST, &body).await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(
            header(&resp, "OCI-Subject").as_deref(),
            Some(subject.as_str())
        );
        assert_eq!(
            header(&resp, "Docker-Content-Digest").as_deref(),
            Some(digest.as_str())
        );

        let (_, list) = referrers(&s, repo, &subject, "").await;
        assert_eq!(list.len(), 1, "{list:?}");
        let d = &list[0];
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert_eq!(d["digest"], digest);
        assert_eq!(d["size"], body.len());
        assert_eq!(d["artifactType"], SBOM);
        assert_eq!(d["annotations"], annotations);

        // The artifact itself is an ordinary manifest.
        let resp = get(&s, &format!("/v2/{repo}/manifests/{digest}")).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }
}

/// The official suite pushes a referrer whose subject does not exist and expects 2xx with
/// `OCI-Subject`, and the referrers list of the missing digest to contain it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_need_not_exist() {
    let s = TestServer::start().await;
    let missing = sha256(b"subject pushed later");
    let (body, _) = artifact(&s, REPO, SIG, (&missing, 1234), "early").await;
    let digest = sha256(&body);
    let resp = put_manifest(&s, REPO, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(missing.as_str())
    );
    let (_, list) = referrers(&s, REPO, &missing, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], digest);
    assert_eq!(list[0]["artifactType"], SIG);
}

/// spec: "The registry SHOULD support filtering on `artifactType`"; "If filtering is
/// requested and applied, the response MUST include a header `OCI-Filters-Applied:
/// artifactType`".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_filter_by_artifact_type() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 71).await;
    let subj = (subject.as_str(), subject_body.len());
    let mut sboms = vec![];
    for note in ["sbom-1", "sbom-2"] {
        let (body, _) = artifact(&s, REPO, SBOM, subj, note).await;
        sboms.push(push_manifest(&s, REPO, &sha256(&body), OCI_MANIFEST, &body).await);
    }
    let (sig_body, _) = artifact(&s, REPO, SIG, subj, "sig").await;
    let sig = push_manifest(&s, REPO, &sha256(&sig_body), OCI_MANIFEST, &sig_body).await;

    let (filters, all) = referrers(&s, REPO, &subject, "").await;
    assert_eq!(all.len(), 3);
    assert!(filters.is_none(), "no filter requested, none applied");
    assert_ne!(all[0]["digest"], all[1]["digest"]);

    let (filters, only_sboms) =
        referrers(&s, REPO, &subject, &format!("?artifactType={SBOM}")).await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(only_sboms.len(), 2, "{only_sboms:?}");
    for d in &sboms {
        assert_eq!(find(&only_sboms, d)["artifactType"], SBOM);
    }

    let (filters, only_sig) = referrers(&s, REPO, &subject, &format!("?artifactType={SIG}")).await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(only_sig.len(), 1);
    assert_eq!(only_sig[0]["digest"], sig);

    let (filters, none) = referrers(
        &s,
        REPO,
        &subject,
        "?artifactType=application/vnd.example.none",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert!(none.is_empty());
}

/// spec "Listing Referrers": "If the registry supports the referrers API, the registry
/// MUST NOT return a `404 Not Found` to a referrers API requests"; with no referrers the
/// result is an image index with an empty `manifests` list (suite: "GET request to
/// nonexistent blob should result in empty 200 response").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_unreferenced_digest_is_empty_index() {
    let s = TestServer::start().await;
    let (_, subject) = push_image(&s, REPO, "v1", 72).await;
    let (_, list) = referrers(&s, REPO, &subject, "").await;
    assert!(list.is_empty());
    let (_, list) = referrers(&s, REPO, &sha256(b"hello world"), "").await;
    assert!(list.is_empty());
}

/// spec: "If the request is invalid, such as a `<digest>` with an invalid syntax, a
/// `400 Bad Request` MUST be returned."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_with_invalid_digest_is_400() {
    let s = TestServer::start().await;
    push_image(&s, REPO, "v1", 73).await;
    for bad in [
        "sha256:zzz",
        "notadigest",
        "sha256:abc",
        "md5:0a2a6b2a4d1bd6a4c4e6ea7b3f4d5c6e",
    ] {
        let resp = get(&s, &format!("/v2/{REPO}/referrers/{bad}")).await;
        assert_eq!(resp.status().as_u16(), 400, "referrers/{bad}");
        let code = error_code(resp).await;
        assert!(code == "DIGEST_INVALID" || code == "UNSUPPORTED", "{code}");
    }
}

/// Deleting the referring manifest removes it from the referrers list (04_management:
/// referrers teardown) and the subject can be deleted independently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_referrer_removes_it_from_list() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 74).await;
    let subj = (subject.as_str(), subject_body.len());
    let (a, _) = artifact(&s, REPO, SBOM, subj, "a").await;
    let (b, _) = artifact(&s, REPO, SIG, subj, "b").await;
    let da = push_manifest(&s, REPO, &sha256(&a), OCI_MANIFEST, &a).await;
    let db = push_manifest(&s, REPO, &sha256(&b), OCI_MANIFEST, &b).await;
    assert_eq!(referrers(&s, REPO, &subject, "").await.1.len(), 2);

    assert_eq!(
        delete(&s, &format!("/v2/{REPO}/manifests/{da}"))
            .await
            .status()
            .as_u16(),
        202
    );
    let (_, list) = referrers(&s, REPO, &subject, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], db);

    assert_eq!(
        delete(&s, &format!("/v2/{REPO}/manifests/{db}"))
            .await
            .status()
            .as_u16(),
        202
    );
    assert!(referrers(&s, REPO, &subject, "").await.1.is_empty());
}

/// spec: "If the `artifactType` is empty or missing in the image manifest, the value of
/// `artifactType` MUST be set to the config descriptor `mediaType` value."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrer_without_artifact_type_reports_config_media_type() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 75).await;
    let config = b"{\"signature\":\"abc\"}";
    push_blob(&s, REPO, config).await;
    let config_type = "application/vnd.example.config.v1+json";
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len()},
        "annotations": {"org.example.kind": "config-typed"},
    }))
    .unwrap();
    let resp = put_manifest(&s, REPO, &sha256(&body), OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(subject.as_str())
    );
    let (_, list) = referrers(&s, REPO, &subject, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["artifactType"], config_type);
    assert_eq!(
        list[0]["annotations"],
        json!({"org.example.kind": "config-typed"})
    );
}

/// The `artifactType` filter applies to the descriptor's `artifactType`, which for an image
/// manifest without one is its config `mediaType`. The official suite (03_discovery_test.go
/// "GET request to existing blob with filter should yield 200") filters on
/// `testRefArtifactTypeA` and expects 2 results: one manifest with that `artifactType` and one
/// whose config `mediaType` is it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_filter_matches_config_media_type() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 80).await;
    let type_a = "application/vnd.example.type-a";
    // A: artifactType field.
    let (a_layer, _) = artifact(&s, REPO, type_a, (&subject, subject_body.len()), "layer-a").await;
    let da = push_manifest(&s, REPO, &sha256(&a_layer), OCI_MANIFEST, &a_layer).await;
    // B: no artifactType, config mediaType = type A.
    let config = b"{\"kind\":\"a\"}";
    push_blob(&s, REPO, config).await;
    let b = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(type_a, config),
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len()},
    }))
    .unwrap();
    let db = push_manifest(&s, REPO, &sha256(&b), OCI_MANIFEST, &b).await;
    // C: another type.
    let (c, _) = artifact(&s, REPO, SIG, (&subject, subject_body.len()), "c").await;
    push_manifest(&s, REPO, &sha256(&c), OCI_MANIFEST, &c).await;

    let (filters, list) = referrers(&s, REPO, &subject, &format!("?artifactType={type_a}")).await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(find(&list, &da)["artifactType"], type_a);
    assert_eq!(find(&list, &db)["artifactType"], type_a);
}

/// An image index may carry `subject` too (the suite's `refsIndexArtifact`). With an
/// `artifactType` it is reported; without one, spec: "If the `artifactType` is empty or
/// missing in an index, the `artifactType` MUST be omitted."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_subject_is_a_referrer() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 76).await;
    let (child_body, child) = push_image(&s, REPO, "child", 77).await;
    let mut digests = vec![];
    for artifact_type in [Some("application/vnd.example.index-artifact"), None] {
        let mut v = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_body.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len()},
            "annotations": {"org.example.index": artifact_type.unwrap_or("untyped")},
        });
        if let Some(t) = artifact_type {
            v["artifactType"] = json!(t);
        }
        let body = serde_json::to_vec(&v).unwrap();
        let resp = put_manifest(&s, REPO, &sha256(&body), OCI_INDEX, &body).await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(
            header(&resp, "OCI-Subject").as_deref(),
            Some(subject.as_str())
        );
        digests.push((sha256(&body), body.len(), artifact_type));
    }
    let (_, list) = referrers(&s, REPO, &subject, "").await;
    assert_eq!(list.len(), 2);
    for (digest, size, artifact_type) in digests {
        let d = find(&list, &digest);
        assert_eq!(d["mediaType"], OCI_INDEX);
        assert_eq!(d["size"], size);
        match artifact_type {
            Some(t) => assert_eq!(d["artifactType"], t),
            None => assert!(d.get("artifactType").is_none(), "artifactType omitted: {d}"),
        }
    }
}

/// spec: the response lists "all manifests or indexes in `<name>`" with the subject: a
/// referrer pushed to another repository is not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_scoped_per_repository() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 78).await;
    let other = "alice.test/elsewhere";
    let (body, _) = artifact(&s, other, SBOM, (&subject, subject_body.len()), "elsewhere").await;
    push_manifest(&s, other, &sha256(&body), OCI_MANIFEST, &body).await;
    assert!(referrers(&s, REPO, &subject, "").await.1.is_empty());
    assert_eq!(referrers(&s, other, &subject, "").await.1.len(), 1);
}

/// A tagged artifact is a referrer too, and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_survive_restart() {
    let s = TestServer::start().await;
    let (subject_body, subject) = push_image(&s, REPO, "v1", 79).await;
    let (body, _) = artifact(&s, REPO, SBOM, (&subject, subject_body.len()), "tagged").await;
    let resp = put_manifest(&s, REPO, "sbom", OCI_MANIFEST, &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "OCI-Subject").as_deref(),
        Some(subject.as_str())
    );
    let s = s.restart().await;
    let (_, list) = referrers(&s, REPO, &subject, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sha256(&body));
}
