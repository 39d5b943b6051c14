//! Shared test harness: a real server on 127.0.0.1:0 over a temp data dir, driven with a
//! real HTTP client.
#![allow(dead_code)]

pub mod s3;

use atcr::config::Config;
use atcr::server::Running;

pub struct TestServer {
    pub running: Running,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with a config tweak applied to the defaults.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(dir.path());
        tweak(&mut config);
        let running = atcr::server::spawn(config).await.expect("server starts");
        let base = running.base_url();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestServer {
            running,
            base,
            client,
            dir,
        }
    }

    /// Stop and start again on the same data dir (restart survival tests).
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// Stops the server, runs `while_stopped` (offline changes to its data dir), starts it
    /// again with the same config.
    pub async fn restart_with(self, while_stopped: impl FnOnce(&Config)) -> TestServer {
        let TestServer {
            running,
            dir,
            client,
            ..
        } = self;
        let config = running.state.config.clone();
        running.stop().await;
        while_stopped(&config);
        let running = atcr::server::spawn(config).await.expect("server restarts");
        let base = running.base_url();
        TestServer {
            running,
            base,
            client,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

// ---------------------------------------------------------------------------------------
// OCI conformance helpers (shared by tests/oci_conformance*.rs).
// ---------------------------------------------------------------------------------------

pub mod oci {
    use super::TestServer;
    use sha2::Digest as _;

    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const EMPTY_DIGEST: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    pub fn sha256(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
    }

    pub fn sha512(data: &[u8]) -> String {
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
    }

    /// Deterministic pseudo-random bytes (covers every byte value).
    pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Resolve a `Location` header (absolute or relative) against the server.
    pub fn resolve(s: &TestServer, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            s.url(location)
        }
    }

    /// Path (with query) of a `Location` header, so it survives a restart on a new port.
    pub fn path_of(location: &str) -> String {
        if let Some(rest) = location
            .strip_prefix("http://")
            .or_else(|| location.strip_prefix("https://"))
        {
            match rest.find('/') {
                Some(i) => rest[i..].to_string(),
                None => "/".to_string(),
            }
        } else {
            location.to_string()
        }
    }

    /// Append a query parameter to an opaque location that may already carry a query.
    pub fn with_query(location: &str, kv: &str) -> String {
        if location.contains('?') {
            format!("{location}&{kv}")
        } else {
            format!("{location}?{kv}")
        }
    }

    pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_string())
    }

    pub fn location(resp: &reqwest::Response) -> String {
        let loc = header(resp, "Location").unwrap_or_default();
        assert!(
            !loc.is_empty(),
            "response {} lacks a Location header",
            resp.status()
        );
        loc
    }

    /// Assert an OCI error response: status, JSON `{"errors":[{"code","message","detail"}]}`
    /// and that `code` appears among the errors.
    pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
        let got = resp.status().as_u16();
        let body = resp.text().await.expect("error body");
        assert_eq!(got, status, "status (body: {body})");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {body}"));
        assert!(!errors.is_empty(), "empty errors array: {body}");
        for e in errors {
            let c = e["code"]
                .as_str()
                .unwrap_or_else(|| panic!("error without code: {body}"));
            assert!(
                !c.is_empty() && c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'),
                "code must be uppercase letters and underscores: {c}"
            );
            if let Some(m) = e.get("message") {
                assert!(m.is_string(), "message must be a string: {body}");
            }
        }
        assert!(
            errors.iter().any(|e| e["code"] == code),
            "expected error code {code}, got {body}"
        );
    }

    /// The first error code of an error response (status is not checked).
    pub async fn error_code(resp: reqwest::Response) -> String {
        let body = resp.text().await.expect("error body");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// POST to start an upload session; returns the Location.
    pub async fn start_upload(s: &TestServer, repo: &str) -> String {
        let resp = s
            .client
            .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "POST upload start");
        location(&resp)
    }

    /// Monolithic POST+PUT upload; returns the sha256 digest.
    pub async fn push_blob(s: &TestServer, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        push_blob_as(s, repo, data, &digest).await;
        digest
    }

    pub async fn push_blob_as(s: &TestServer, repo: &str, data: &[u8], digest: &str) {
        let loc = start_upload(s, repo).await;
        let resp = s
            .client
            .put(resolve(s, &with_query(&loc, &format!("digest={digest}"))))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            201,
            "PUT blob: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
        serde_json::json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
    }

    /// An image manifest over the given config and layers (already-built descriptors).
    pub fn image_manifest(config: serde_json::Value, layers: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
        }))
        .unwrap()
    }

    pub async fn put_manifest(
        s: &TestServer,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        s.client
            .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Push a manifest expecting 201; returns its digest.
    pub async fn push_manifest(
        s: &TestServer,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = put_manifest(s, repo, reference, media_type, body).await;
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            201,
            "PUT manifest {reference}: {}",
            resp.text().await.unwrap_or_default()
        );
        sha256(body)
    }

    /// Push a config blob and a layer blob (distinct per `seed`) and an image manifest
    /// over them under `reference`. Returns (manifest bytes, manifest digest).
    pub async fn push_image(
        s: &TestServer,
        repo: &str,
        reference: &str,
        seed: u64,
    ) -> (Vec<u8>, String) {
        let config =
            format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
        let layer = bytes(1000 + seed as usize % 97, seed);
        push_blob(s, repo, &config).await;
        push_blob(s, repo, &layer).await;
        let body = image_manifest(
            descriptor(OCI_CONFIG, &config),
            vec![descriptor(OCI_LAYER, &layer)],
        );
        let digest = push_manifest(s, repo, reference, OCI_MANIFEST, &body).await;
        (body, digest)
    }

    pub async fn get(s: &TestServer, path: &str) -> reqwest::Response {
        s.client.get(s.url(path)).send().await.unwrap()
    }

    pub async fn head(s: &TestServer, path: &str) -> reqwest::Response {
        s.client.head(s.url(path)).send().await.unwrap()
    }

    pub async fn delete(s: &TestServer, path: &str) -> reqwest::Response {
        s.client.delete(s.url(path)).send().await.unwrap()
    }

    pub async fn json(resp: reqwest::Response) -> serde_json::Value {
        let body = resp.text().await.unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    /// The `tags` array of a tags list response (null counts as empty).
    pub fn tags_of(v: &serde_json::Value) -> Vec<String> {
        match &v["tags"] {
            serde_json::Value::Null => vec![],
            t => t
                .as_array()
                .unwrap_or_else(|| panic!("tags is not an array: {v}"))
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
        }
    }

    /// The target of a `Link: <url>; rel="next"` header, if present.
    pub fn next_link(resp: &reqwest::Response) -> Option<String> {
        let link = header(resp, "Link")?;
        assert!(
            link.contains("rel=\"next\""),
            "Link header without rel=\"next\": {link}"
        );
        let start = link.find('<').expect("Link has <url>") + 1;
        let end = link.find('>').expect("Link has <url>");
        Some(link[start..end].to_string())
    }
}

// ---- ATProto interop vector fixtures (tests/fixtures, CC0) ----------------------------------

pub fn fixture_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_path(rel)).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Vector lines: `#` comments and blank lines skipped, everything else kept verbatim
/// (leading/trailing spaces are part of some invalid vectors).
pub fn read_lines(rel: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture_path(rel)).expect("fixture readable");
    text.split('\n')
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.to_string())
        .collect()
}
