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
