//! Regression tests of issue 14 (hardening), against a real server on loopback with tight
//! limits: every connection phase has a deadline, idle and stalled connections never lock
//! others out, a full server answers 503 at once, slow bodies are cut off and their uploads
//! removed, a full disk answers 507, upload sessions are capped and expire.
//! The floods at full size (1,100 connections) are in `tests/reliability/run.sh`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atcr::config::Config;
use common::{oci, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Short deadlines: 1 s for the first bytes and headers, 2 s idle, 1000 B/s over 1 s windows.
fn tight(c: &mut Config) {
    c.server.protocol_timeout_secs = 1;
    c.server.header_timeout_secs = 1;
    c.server.keepalive_timeout_secs = 2;
    c.server.min_transfer_rate = 1000;
    c.server.transfer_window_secs = 1;
}

fn addr(s: &TestServer) -> SocketAddr {
    s.running.addr
}

fn staged(s: &TestServer) -> Vec<String> {
    std::fs::read_dir(s.dir.path().join("blobs/uploads"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// One response from a raw socket: (status, head, body). Reads to the end of the body (or
/// of the connection) within `limit`.
async fn read_response(conn: &mut TcpStream, limit: Duration) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, head.to_string(), body.to_string()));
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server closes the connection; returns how long that took (None: still
/// open after `limit`).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            conn.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// `GET /_health` on a fresh connection from `source`: (status, latency).
async fn health_from(source: &str, to: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let mut c = connect_from(source, to).await;
    c.write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let status = read_response(&mut c, Duration::from_secs(5))
        .await
        .map(|r| r.0)
        .unwrap_or(0);
    (status, started.elapsed())
}

/// An upload body that keeps moving: `chunk` bytes every `every` until told to stop (then
/// it stalls, holding the connection). Returns the socket task's handle.
fn moving_upload(
    to: SocketAddr,
    source: &'static str,
    path: String,
    chunk: usize,
    every: Duration,
    stop_after: Option<Duration>,
) -> tokio::task::JoinHandle<Option<(u16, String, String)>> {
    tokio::spawn(async move {
        let mut c = connect_from(source, to).await;
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 100000000\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.ok()?;
        let started = Instant::now();
        let data = vec![b'x'; chunk];
        loop {
            if stop_after.is_none_or(|d| started.elapsed() < d) && c.write_all(&data).await.is_err()
            {
                break;
            }
            tokio::select! {
                r = read_response(&mut c, every) => if r.is_some() { return r },
                _ = tokio::time::sleep(every) => {}
            }
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        read_response(&mut c, Duration::from_secs(5)).await
    })
}

#[tokio::test]
async fn quiet_connections_are_closed_per_phase_and_never_lock_out() {
    let s = TestServer::start_with(|c| {
        tight(c);
        c.server.max_connections = 8;
    })
    .await;
    let to = addr(&s);
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(to).await.unwrap());
    }
    // The HTTP/2 preface, then nothing.
    let mut h2 = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        h2.push(c);
    }
    // Headers trickled a byte at a time: moving, but never done.
    let mut trickle = Vec::new();
    for _ in 0..5 {
        let c = TcpStream::connect(to).await.unwrap();
        trickle.push(tokio::spawn(async move {
            let mut c = c;
            let started = Instant::now();
            let _ = c.write_all(b"GET /_health HTTP/1.1\r\n").await;
            while started.elapsed() < Duration::from_secs(6) {
                if c.write_all(b"X").await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }));
    }
    // 20 hostile connections on 8 slots: others still get answers, at once.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let (status, took) = health_from("127.0.0.1", to).await;
        assert_eq!(status, 200);
        worst = worst.max(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(worst < Duration::from_secs(1), "worst /_health {worst:?}");
    // And every hostile one is gone within its phase's deadline (1 s, plus the tick).
    for c in silent.iter_mut().chain(h2.iter_mut()) {
        let took = closed_within(c, Duration::from_secs(3)).await;
        assert!(took.is_some(), "a quiet connection is still open");
    }
    for t in trickle {
        let cut = t.await.unwrap();
        assert!(
            cut.is_some_and(|d| d < Duration::from_secs(4)),
            "trickled headers held the connection: {cut:?}"
        );
    }
}

#[tokio::test]
async fn keep_alive_idle_is_bounded() {
    let s = TestServer::start_with(tight).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    c.write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut c, Duration::from_secs(3))
            .await
            .unwrap()
            .0,
        200
    );
    let idle = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("idle keep-alive connection closed");
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_millis(3500),
        "closed after {idle:?}, keepalive_timeout_secs = 2"
    );
}

#[tokio::test]
async fn slow_bodies_are_cut_off_and_their_uploads_removed_steady_ones_pass() {
    let s = TestServer::start_with(tight).await;
    let to = addr(&s);
    // Monolithic POST ?digest= trickling 1 byte every 300 ms (the floor is 1000 B/s).
    let digest = oci::sha256(b"never sent");
    let mut c = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v2/alice/slow/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n\
         Content-Length: 1000000\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if c.write_all(b"x").await.is_err() {
                break;
            }
        }
        c
    });
    let mut c = writer.await.unwrap();
    let (status, head, body) = read_response(&mut c, Duration::from_secs(5))
        .await
        .expect("an answer to the slow body");
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(
        body.contains("BLOB_UPLOAD_INVALID") && body.contains("too slow"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(staged(&s).is_empty(), "staged data left: {:?}", staged(&s));
    assert_eq!(s.running.state.registry.open_uploads(), 0);

    // A chunked upload whose PATCH stalls: cut off, the session and its bytes are gone.
    let loc = oci::start_upload(&s, "alice/slow").await;
    let path = oci::path_of(&loc);
    let patch = moving_upload(
        to,
        "127.0.0.1",
        path.clone(),
        500,
        Duration::from_millis(200),
        Some(Duration::from_millis(10)),
    );
    let (status, _, body) = patch.await.unwrap().expect("an answer");
    assert_eq!(status, 408, "{body}");
    let gone = s.client.get(oci::resolve(&s, &loc)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert!(staged(&s).is_empty(), "staged data left: {:?}", staged(&s));

    // Slow but steady (1500 B every 500 ms, above the floor): accepted, byte-exact.
    let data = oci::bytes(9000, 7);
    let digest = oci::sha256(&data);
    let mut c = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v2/alice/steady/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    for part in data.chunks(1500) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.write_all(part).await.unwrap();
    }
    let (status, _, body) = read_response(&mut c, Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let got = oci::get(&s, &format!("/v2/alice/steady/blobs/{digest}")).await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn a_full_server_answers_503_at_once_then_evicts_stalled_bodies() {
    let s = TestServer::start_with(|c| {
        tight(c);
        // Long windows: the stalled body below is evicted for room, not for its rate.
        c.server.transfer_window_secs = 30;
        c.server.max_connections = 2;
    })
    .await;
    let to = addr(&s);
    let a = oci::path_of(&oci::start_upload(&s, "alice/a").await);
    let b = oci::path_of(&oci::start_upload(&s, "alice/b").await);
    let every = Duration::from_millis(100);
    let busy = moving_upload(to, "127.0.0.1", a, 2000, every, None);
    let stalls = moving_upload(
        to,
        "127.0.0.1",
        b,
        2000,
        every,
        Some(Duration::from_millis(300)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Both slots busy and (for now) moving: refused at once, with Retry-After.
    let started = Instant::now();
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut c, Duration::from_secs(3)).await.unwrap();
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 2"),
        "{head}"
    );
    assert!(body.contains("UNAVAILABLE"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Once the second body has not moved for 2 s, a newcomer takes its slot.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, took) = health_from("127.0.0.1", to).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (status, _, body) = stalls
        .await
        .unwrap()
        .expect("the evicted upload is answered");
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("server was full"), "{body}");
    busy.abort();
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let s = TestServer::start_with(|c| {
        tight(c);
        c.server.transfer_window_secs = 30;
        c.server.max_connections_per_address = 2;
        c.server.per_address_exempt = vec![];
    })
    .await;
    let to = addr(&s);
    let every = Duration::from_millis(100);
    let mut hogs = Vec::new();
    for repo in ["alice/a", "alice/b"] {
        let p = oci::path_of(&oci::start_upload(&s, repo).await);
        hogs.push(moving_upload(to, "127.0.0.1", p, 2000, every, None));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = health_from("127.0.0.1", to).await;
    assert_eq!(status, 503, "the third connection of 127.0.0.1");
    assert!(took < Duration::from_secs(1));
    let (status, took) = health_from("127.0.0.2", to).await;
    assert_eq!(status, 200, "another address");
    assert!(took < Duration::from_secs(1));
    for h in hogs {
        h.abort();
    }
}

async fn post_upload(s: &TestServer, repo: &str) -> reqwest::Response {
    s.client
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn upload_sessions_are_capped_per_identity_and_per_address() {
    let s = TestServer::start_with(|c| {
        c.registry.max_uploads_per_identity = 3;
        c.registry.max_uploads_per_address = 5;
        c.server.per_address_exempt = vec![];
    })
    .await;
    let mut alice = Vec::new();
    for _ in 0..3 {
        let r = post_upload(&s, "alice/app").await;
        assert_eq!(r.status(), 202);
        alice.push(oci::location(&r));
    }
    let r = post_upload(&s, "alice/other").await;
    assert_eq!(oci::header(&r, "retry-after").as_deref(), Some("30"));
    let body = r.text().await.unwrap();
    assert!(
        body.contains("TOOMANYREQUESTS") && body.contains("alice already has 3 uploads"),
        "{body}"
    );
    // Another identity from the same address, up to the address's 5.
    for _ in 0..2 {
        assert_eq!(post_upload(&s, "bob/app").await.status(), 202);
    }
    let r = post_upload(&s, "carol/app").await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("your address"));
    // Finishing or cancelling frees a place.
    let del = oci::delete(&s, &oci::path_of(&alice[0])).await;
    assert_eq!(del.status(), 204);
    let data = b"a small layer".to_vec();
    let digest = oci::sha256(&data);
    let put = s
        .client
        .put(oci::resolve(
            &s,
            &oci::with_query(&alice[1], &format!("digest={digest}")),
        ))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(post_upload(&s, "carol/app").await.status(), 202);
    assert_eq!(post_upload(&s, "alice/app").await.status(), 202);
    assert_eq!(s.running.state.registry.open_uploads(), 5);
}

#[tokio::test]
async fn idle_upload_sessions_expire_in_use_ones_stay() {
    let s = TestServer::start_with(tight).await;
    let reg = s.running.state.registry.clone();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let abandoned = oci::start_upload(&s, "alice/app").await;
    let patch = s
        .client
        .patch(oci::resolve(&s, &abandoned))
        .body(vec![7u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 202);
    let empty = oci::start_upload(&s, "alice/app").await;
    assert_eq!(staged(&s).len(), 2);
    assert_eq!(
        reg.cleanup_uploads_at(now() + 29 * 60).await.unwrap(),
        0,
        "not idle for 30 min yet"
    );
    // One more upload, busy streaming a PATCH while the sweep runs.
    let busy = oci::path_of(&oci::start_upload(&s, "alice/busy").await);
    let streaming = moving_upload(
        s.running.addr,
        "127.0.0.1",
        busy.clone(),
        2000,
        Duration::from_millis(100),
        None,
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reg.cleanup_uploads_at(now() + 31 * 60).await.unwrap(), 2);
    for loc in [&abandoned, &empty] {
        let r = s.client.get(oci::resolve(&s, loc)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{loc} expired");
    }
    assert_eq!(
        staged(&s).len(),
        1,
        "only the busy upload's bytes stay: {:?}",
        staged(&s)
    );
    streaming.abort();
    // Sessions of an earlier run count and expire too.
    let left = oci::start_upload(&s, "alice/left").await;
    drop(reg); // it holds the databases
    let s = s.restart().await;
    let reg = s.running.state.registry.clone();
    reg.cleanup_uploads().await.unwrap();
    assert!(reg.open_uploads() >= 1);
    assert!(reg.cleanup_uploads_at(now() + 31 * 60).await.unwrap() >= 1);
    let r = s.client.get(oci::resolve(&s, &left)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(staged(&s).is_empty(), "{:?}", staged(&s));
}

#[tokio::test]
async fn disk_watermark_refuses_uploads_with_507_reads_go_on() {
    let s = TestServer::start_with(|c| c.storage.min_free_mib = 0).await;
    let data = oci::bytes(100_000, 9);
    let config_blob = oci::bytes(300, 10);
    let digest = oci::push_blob(&s, "alice/app", &data).await;
    let config_digest = oci::push_blob(&s, "alice/app", &config_blob).await;
    let open = oci::start_upload(&s, "alice/app").await;
    // Restart with a watermark no disk can meet.
    let TestServer {
        running,
        dir,
        client,
        ..
    } = s;
    let mut config = running.state.config.clone();
    running.stop().await;
    config.storage.min_free_mib = 1 << 40;
    let running = atcr::server::spawn(config).await.unwrap();
    let s = TestServer {
        base: running.base_url(),
        running,
        client,
        dir,
    };
    let r = post_upload(&s, "alice/app").await;
    assert_eq!(r.status(), 507);
    assert_eq!(oci::header(&r, "retry-after").as_deref(), Some("60"));
    let v: serde_json::Value = r.json().await.unwrap();
    let e = &v["errors"][0];
    assert_eq!(e["code"], "UNAVAILABLE");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("insufficient storage"),
        "{v}"
    );
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("storage.min_free_mib"),
        "{v}"
    );
    // A session opened before: its next chunk is refused and the session removed.
    let patch = s
        .client
        .patch(oci::resolve(&s, &open))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 507);
    let gone = s.client.get(oci::resolve(&s, &open)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let mono = s
        .client
        .post(s.url(&format!(
            "/v2/alice/app/blobs/uploads/?digest={}",
            oci::sha256(b"x")
        )))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(mono.status(), 507);
    assert!(staged(&s).is_empty(), "{:?}", staged(&s));
    // Pulls go on, and a manifest of blobs already here can still be pushed.
    let got = oci::get(&s, &format!("/v2/alice/app/blobs/{digest}")).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
    let manifest = oci::image_manifest(
        serde_json::json!({"mediaType": oci::OCI_CONFIG, "digest": config_digest, "size": config_blob.len()}),
        vec![
            serde_json::json!({"mediaType": oci::OCI_LAYER, "digest": digest, "size": data.len()}),
        ],
    );
    let put = oci::put_manifest(&s, "alice/app", "v1", oci::OCI_MANIFEST, &manifest).await;
    assert_eq!(put.status(), 201);
}

#[tokio::test]
async fn failed_monolithic_uploads_leave_nothing() {
    let s = TestServer::start().await;
    let lie = oci::sha256(b"something else");
    let r = s
        .client
        .post(s.url(&format!("/v2/alice/app/blobs/uploads/?digest={lie}")))
        .body(b"the real bytes".to_vec())
        .send()
        .await
        .unwrap();
    oci::assert_error(r, 400, "DIGEST_INVALID").await;
    // A body that breaks off half-way.
    let mut c = TcpStream::connect(s.running.addr).await.unwrap();
    let head = format!(
        "POST /v2/alice/app/blobs/uploads/?digest={lie} HTTP/1.1\r\nHost: x\r\n\
         Content-Length: 100000\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&[1u8; 5000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    for _ in 0..50 {
        if staged(&s).is_empty() && s.running.state.registry.open_uploads() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(staged(&s).is_empty(), "{:?}", staged(&s));
    assert_eq!(s.running.state.registry.open_uploads(), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let s = TestServer::start_with(tight).await;
    let data = oci::bytes(48 << 20, 5);
    let digest = oci::push_blob(&s, "alice/big", &data).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    // No reads at all: the response stalls once the socket buffers are full.
    let req = format!("GET /v2/alice/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Wait until the server gave up (the socket reports EOF/reset once we drain it).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the stalled response was not cut off");
    assert!(
        total < data.len(),
        "all {total} bytes arrived: nothing stalled"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The server is fine and serves others.
    assert_eq!(health_from("127.0.0.1", addr(&s)).await.0, 200);
}

#[tokio::test]
async fn http2_requests_work_many_streams_at_once_and_after_the_idle_close() {
    let s = TestServer::start_with(tight).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = h2.get(s.url("/_health")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
    }
    // Several streams at once on one connection, then idle: closed with GOAWAY after the
    // keep-alive time; the client simply opens a new connection.
    let data = oci::bytes(200_000, 1);
    let digest = oci::push_blob(&s, "alice/h2", &data).await;
    let url = s.url(&format!("/v2/alice/h2/blobs/{digest}"));
    let gets = (0..5).map(|_| h2.get(&url).send());
    for r in futures_util::future::join_all(gets).await {
        assert_eq!(r.unwrap().bytes().await.unwrap().len(), data.len());
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let r = h2.get(s.url("/_health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
