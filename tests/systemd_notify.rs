//! `atcr serve` under a fake systemd: a notify socket receives READY=1 (after the listener is
//! bound), WATCHDOG=1 at half of WATCHDOG_USEC and STOPPING=1 on SIGTERM; with
//! JOURNAL_STREAM naming its stderr, log lines carry `<N>` priorities and no colours or
//! timestamps. The real binary, as systemd/atcr.service runs it.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn recv_until(sock: &UnixDatagram, want: &str, deadline: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {deadline:?}; got {seen:?}");
}

#[test]
fn notify_ready_watchdog_stopping_and_journal_format() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atcr"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ATCR_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .env("ATCR_SERVER_LISTEN", "127.0.0.1:0")
        .env("ATCR_SERVER_DATA_DIR", dir.path().join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let ready = recv_until(&sock, "READY=1", Duration::from_secs(30));
    assert!(
        ready
            .iter()
            .any(|m| m.contains("STATUS=listening on 127.0.0.1:")),
        "{ready:?}"
    );
    // WATCHDOG_USEC = 1 s: a ping every 0.5 s.
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));

    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let listening = text
        .lines()
        .find(|l| l.contains("atcr listening"))
        .unwrap_or_else(|| panic!("no 'atcr listening' line in {text:?}"));
    assert!(listening.starts_with("<6>"), "{listening:?}");
    assert!(!text.contains('\u{1b}'), "ANSI escape in {text:?}");
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority prefix: {text:?}"
    );
    assert!(
        !text.lines().any(|l| l[3..].trim_start().starts_with("20")),
        "no timestamps: {text:?}"
    );
}

/// One journal entry of the native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): `KEY=value`
/// lines, or `KEY\n` + little-endian u64 length + bytes + `\n` for values with newlines.
fn parse_journal_entry(mut b: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &b[nl + 9..nl + 9 + len];
            out.insert(key, String::from_utf8_lossy(value).into_owned());
            b = &b[(nl + 9 + len + 1).min(b.len())..];
        }
    }
    out
}

/// Under systemd with a reachable journal, entries go over the native protocol with the
/// request's fields. The journal socket is the test's own: `atcr serve` runs in a private
/// mount namespace (`unshare -m`, needs root) where `/run/systemd/journal` is bind-mounted
/// from a temp dir holding a datagram socket the test reads.
#[test]
fn journald_native_entries_carry_request_fields() {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIPPED: unshare -m is not permitted here (needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Read the socket all along, as journald does: a datagram socket queues only
    // `net.unix.max_dgram_qlen` entries (often 10) before the sender blocks.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (received, stop) = (received.clone(), stop.clone());
        let journal = journal.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = journal.recv(&mut buf) {
                    received
                        .lock()
                        .unwrap()
                        .push(parse_journal_entry(&buf[..n]));
                }
            }
        })
    };
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut cmd = Command::new("unshare");
    for (k, _) in std::env::vars() {
        if k.starts_with("ATCR_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal \
             && mount --bind \"$J\" /run/systemd/journal && exec \"$BIN\" serve",
        )
        .env("J", &journal_dir)
        .env("BIN", env!("CARGO_BIN_EXE_atcr"))
        .env("ATCR_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATCR_SERVER_DATA_DIR", dir.path().join("data"))
        .env("ATCR_AUTH_MODE", "none")
        .env("ATCR_LOG_LEVEL", "info,atcr=debug")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let digest = format!("sha256:{}", "ab".repeat(32));
    let request = format!(
        "GET /v2/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nX-Request-Id: journal-test-1\r\nConnection: close\r\n\r\n"
    );
    let start = Instant::now();
    let response = loop {
        use std::io::{Read, Write};
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c.write_all(request.as_bytes()).unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            break out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "atcr did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response
        .to_ascii_lowercase()
        .contains("x-request-id: journal-test-1"));

    let deadline = Instant::now() + Duration::from_secs(10);
    let request_entry = loop {
        let entries = received.lock().unwrap().clone();
        if let Some(e) = entries.iter().find(|e| {
            e.get("REQUEST_ID").map(String::as_str) == Some("journal-test-1")
                && e.contains_key("STATUS")
        }) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no request entry in {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let entries = received.lock().unwrap().clone();

    let field = |k: &str| request_entry.get(k).map(String::as_str);
    assert_eq!(field("REPOSITORY"), Some("team/app"), "{request_entry:#?}");
    assert_eq!(field("DIGEST"), Some(digest.as_str()));
    assert_eq!(field("STATUS"), Some("404"));
    assert_eq!(field("METHOD"), Some("GET"));
    assert_eq!(field("ROUTE"), Some("oci_blob"));
    assert_eq!(field("PRIORITY"), Some("6"), "debug is journal priority 6");
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("atcr"));
    assert!(field("MESSAGE").is_some_and(|m| m.starts_with("request ") && m.contains("status=404")));
    let listening = entries
        .iter()
        .find(|e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.contains("atcr listening"))
        })
        .unwrap_or_else(|| panic!("no 'atcr listening' entry in {entries:#?}"));
    assert_eq!(listening.get("PRIORITY").map(String::as_str), Some("5"));
    // Nothing went to stderr: the journal had it all.
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
}

/// Outside systemd: plain text without ANSI codes when stderr is a file, and with
/// `log.format = "json"` one JSON object per line carrying the request span's fields.
#[test]
fn text_without_colours_and_json_lines() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("stderr.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atcr"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ATCR_") || k == "RUST_LOG" || k == "JOURNAL_STREAM" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .arg("serve")
            .env("ATCR_SERVER_LISTEN", format!("127.0.0.1:{port}"))
            .env("ATCR_SERVER_DATA_DIR", dir.path().join("data"))
            .env("ATCR_AUTH_MODE", "none")
            .env("ATCR_LOG_LEVEL", "info,atcr=debug")
            .env("ATCR_LOG_FORMAT", format)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            use std::io::{Read, Write};
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                c.write_all(b"DELETE /v2/team/app/manifests/latest HTTP/1.1\r\nHost: x\r\nX-Request-Id: fmt-1\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let _ = c.read_to_string(&mut String::new());
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "atcr did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(!text.contains('\u{1b}'), "ANSI escape in {text:?}");
        let line = text
            .lines()
            .find(|l| l.contains("fmt-1"))
            .unwrap_or_else(|| panic!("no request line in {text}"));
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["fields"]["message"], "request", "{v}");
            assert_eq!(v["fields"]["status"], 404, "{v}");
            assert_eq!(v["span"]["request_id"], "fmt-1", "{v}");
            assert_eq!(v["span"]["repository"], "team/app", "{v}");
            assert_eq!(v["level"], "INFO");
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        } else {
            assert!(line.contains("request_id=fmt-1"), "{line}");
            assert!(line.contains("repository=team/app"), "{line}");
            assert!(line.contains("status=404"), "{line}");
        }
    }
}
