//! `/metrics` scraped over HTTP from a real server: the Prometheus text format, requests by
//! route/method/status with latency histograms, bytes in and out, uploads in flight, XRPC
//! calls by host, the index firehose cursor and lag (the index of a second server reads the
//! first server's hold firehose), GC runs, process RSS and FDs; no repository names or
//! digests in any label; the bearer token when configured.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::oci::*;
use common::TestServer;

/// `name{b="1",a="2"}` -> `name{a="2",b="1"}` (the encoder sorts labels by name).
fn normalize(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_string();
    };
    let mut parts: Vec<String> = labels
        .trim_end_matches('}')
        .split("\",")
        .map(|p| p.trim_end_matches('"').to_string() + "\"")
        .collect();
    parts.sort();
    format!("{name}{{{}}}", parts.join(","))
}

/// Every sample line `name{labels} value` -> value (labels sorted by name).
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.insert(normalize(series), value);
    }
    out
}

async fn scrape(s: &TestServer, token: Option<&str>) -> reqwest::Response {
    let mut req = s.client.get(s.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    let series = &normalize(series);
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", m.keys().collect::<Vec<_>>()))
}

#[tokio::test]
async fn metrics_are_scraped_in_the_prometheus_text_format() {
    let s = TestServer::start().await;
    let before = samples(&scrape(&s, None).await.text().await.unwrap());
    let blobs_sent_before = before
        .get("atcr_http_sent_bytes_total{route=\"oci_blob\"}")
        .copied()
        .unwrap_or(0.0);
    let received_before = value(&before, "atcr_http_received_bytes_total");

    let layer = bytes(300_000, 7);
    let digest = push_blob(&s, "metrics/app", &layer).await;
    let (_, manifest_digest) = push_image(&s, "metrics/app", "v1", 3).await;
    let r = get(&s, &format!("/v2/metrics/app/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());
    let r = get(&s, "/v2/metrics/app/manifests/nope").await;
    assert_eq!(r.status(), 404);
    atcr::gc::collect_garbage(
        &s.running.state.registry,
        s.running.state.hold_api.as_deref(),
        true,
    )
    .await
    .unwrap();

    let resp = scrape(&s, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    let m = samples(&text);
    assert!(
        value(
            &m,
            "atcr_http_requests_total{route=\"oci_blob\",method=\"GET\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "atcr_http_requests_total{route=\"oci_manifest\",method=\"PUT\",status=\"201\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "atcr_http_requests_total{route=\"oci_manifest\",method=\"GET\",status=\"404\"}"
        ) >= 1.0
    );
    // The latency histogram: cumulative buckets ending in +Inf = count.
    let count = value(
        &m,
        "atcr_http_request_duration_seconds_count{route=\"oci_blob\",method=\"GET\"}",
    );
    let inf = value(
        &m,
        "atcr_http_request_duration_seconds_bucket{route=\"oci_blob\",method=\"GET\",le=\"+Inf\"}",
    );
    assert!(count >= 1.0 && inf == count, "{count} {inf}");
    assert!(
        value(&m, "atcr_http_sent_bytes_total{route=\"oci_blob\"}") - blobs_sent_before
            >= layer.len() as f64
    );
    assert!(value(&m, "atcr_http_received_bytes_total") - received_before >= layer.len() as f64);
    assert_eq!(value(&m, "atcr_uploads_in_flight"), 0.0);
    assert!(value(&m, "atcr_gc_runs_total{mode=\"dry_run\",result=\"ok\"}") >= 1.0);
    assert!(value(&m, "atcr_gc_last_run_timestamp_seconds") > 1.7e9);
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    assert!(value(&m, "process_open_fds") >= 3.0);
    // Scrape-safe: nothing user-controlled in a label.
    for secret in ["metrics/app", digest.as_str(), manifest_digest.as_str()] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    // Every response says which request it was.
    let r = s
        .client
        .get(s.url("/v2/"))
        .header("x-request-id", "scrape-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("scrape-test-1"));
    let r = get(&s, "/v2/").await;
    assert_eq!(header(&r, "x-request-id").map(|v| v.len()), Some(16));
}

#[tokio::test]
async fn xrpc_calls_and_the_firehose_are_measured() {
    // Server A's hold is the firehose server B's index reads, and the XRPC service we call.
    let a = TestServer::start().await;
    let ws = a.base.replacen("http://", "ws://", 1);
    let b = TestServer::start_with(|c| c.index.firehose = vec![ws.clone()]).await;
    let xrpc = atcr::atproto::xrpc::XrpcClient::new(Default::default());
    let host = a.base.trim_start_matches("http://").to_string();
    let did: serde_json::Value = xrpc
        .query(&a.base, "com.atproto.server.describeServer", &[], None)
        .await
        .unwrap();
    assert!(did["did"].is_string(), "{did}");
    let missing: Result<serde_json::Value, _> = xrpc
        .query(
            &a.base,
            "com.atproto.repo.getRecord",
            &[
                ("repo", "did:web:nobody.example"),
                ("collection", "x.y.z"),
                ("rkey", "self"),
            ],
            None,
        )
        .await;
    assert!(missing.is_err());
    let refused: Result<serde_json::Value, _> = xrpc
        .query(
            "http://127.0.0.1:9",
            "com.atproto.server.describeServer",
            &[],
            None,
        )
        .await;
    assert!(refused.is_err());

    // A push to A is a hold commit (layer records) on A's firehose, which B's index reads
    // (a consumer without a cursor gets only new events: push until one arrives).
    let cursor = format!("atcr_index_firehose_cursor{{endpoint=\"{ws}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let hold = a.running.state.hold.clone().expect("the hold runs");
    let mut n = 0;
    let m = loop {
        n += 1;
        let record = atcr::atproto::repo::datamodel::record_from_json(&serde_json::json!({
            "$type": "io.atcr.hold.layer", "digest": format!("sha256:{n:064x}"), "size": n,
            "createdAt": "2026-01-01T00:00:00Z"}))
        .unwrap();
        hold.apply_writes(vec![atcr::atproto::repo::Write::Create {
            collection: "io.atcr.hold.layer".into(),
            rkey: format!("3k2a{n}"),
            record: atcr::atproto::repo::dagcbor::encode(&record)
                .unwrap()
                .into(),
        }])
        .await
        .unwrap();
        let m = samples(&scrape(&b, None).await.text().await.unwrap());
        if m.get(&normalize(&cursor)).is_some_and(|v| *v >= 1.0) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no firehose cursor in {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let lag = value(
        &m,
        &format!("atcr_index_firehose_lag_seconds{{endpoint=\"{ws}\"}}"),
    );
    assert!((0.0..3600.0).contains(&lag), "lag {lag}");
    assert!(
        value(
            &m,
            &format!("atcr_index_firehose_last_event_timestamp_seconds{{endpoint=\"{ws}\"}}")
        ) > 1.7e9
    );
    assert!(
        value(
            &m,
            &format!("atcr_upstream_request_duration_seconds_count{{host=\"{host}\"}}")
        ) >= 2.0
    );
    assert!(
        value(
            &m,
            &format!("atcr_upstream_failures_total{{host=\"{host}\",kind=\"4xx\"}}")
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "atcr_upstream_failures_total{host=\"127.0.0.1:9\",kind=\"transport\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let s =
        TestServer::start_with(|c| c.metrics.token = atcr::config::Secret("s3cret-scrape".into()))
            .await;
    let r = scrape(&s, None).await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(scrape(&s, Some("wrong")).await.status(), 401);
    let r = scrape(&s, Some("s3cret-scrape")).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("atcr_http_requests_total"));

    let off = TestServer::start_with(|c| c.metrics.enabled = false).await;
    assert_eq!(scrape(&off, None).await.status(), 404);
}
