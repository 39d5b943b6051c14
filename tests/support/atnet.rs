//! The local ATProto test network (PLC + reference PDS, `tests/support/atnet/`) for tests.
//!
//! Tests that need it call [`atnet()`], which returns `None` (and prints why) unless
//! `ATCR_TEST_ATNET` is set: `1` starts the network (or reuses a running one) through
//! `tests/support/atnet/atnet up`; any other value is taken as the path of the JSON line
//! `atnet up` printed. `bash tests/atproto-e2e.sh` installs, starts, runs and stops it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub handle: String,
    pub did: String,
    pub password: String,
    pub app_password: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Atnet {
    pub plc: String,
    pub pds: String,
    #[serde(default)]
    pub pds_public_url: String,
    pub accounts: Vec<Account>,
}

impl Atnet {
    pub fn account(&self, handle: &str) -> &Account {
        self.accounts
            .iter()
            .find(|a| a.handle == handle)
            .unwrap_or_else(|| panic!("atnet has no account {handle}"))
    }

    /// The `atnet` control script.
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/atnet/atnet")
    }

    /// Stop the network (for the PDS-down test, which must run last).
    pub fn down() {
        let st = Command::new("sh")
            .arg(Self::script())
            .arg("down")
            .status()
            .expect("run atnet down");
        assert!(st.success(), "atnet down failed");
    }
}

impl Atnet {
    /// Stop the network and start a fresh one on the same ports (the PLC is in memory, so
    /// accounts get new DIDs). When `ATCR_TEST_ATNET` names a JSON file, it is rewritten
    /// with the new network, so later test binaries see the live accounts.
    pub fn restart() -> Atnet {
        Self::down();
        let out = Command::new("sh")
            .arg(Self::script())
            .arg("up")
            .output()
            .expect("run atnet up");
        assert!(
            out.status.success(),
            "atnet up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = String::from_utf8(out.stdout).expect("utf-8");
        let line = json
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .expect("atnet printed a JSON line")
            .to_string();
        if let Ok(v) = std::env::var("ATCR_TEST_ATNET") {
            if v != "1" {
                std::fs::write(&v, format!("{line}\n")).expect("rewrite ATCR_TEST_ATNET");
            }
        }
        serde_json::from_str(&line).expect("atnet JSON")
    }
}

/// The running network, or `None` with a message when `ATCR_TEST_ATNET` is unset. Started
/// (or found) once per test binary, so parallel tests do not race `atnet up`.
pub fn atnet() -> Option<Atnet> {
    static NET: std::sync::OnceLock<Option<Atnet>> = std::sync::OnceLock::new();
    NET.get_or_init(start_or_find).clone()
}

fn start_or_find() -> Option<Atnet> {
    let Ok(v) = std::env::var("ATCR_TEST_ATNET") else {
        eprintln!(
            "SKIPPED: ATCR_TEST_ATNET is not set; run `bash tests/atproto-e2e.sh` for the \
             tests against the reference PDS + PLC"
        );
        return None;
    };
    let json = if v == "1" {
        let out = Command::new("sh")
            .arg(Atnet::script())
            .arg("up")
            .output()
            .expect("run tests/support/atnet/atnet up");
        assert!(
            out.status.success(),
            "atnet up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    } else {
        std::fs::read_to_string(&v).unwrap_or_else(|e| panic!("ATCR_TEST_ATNET={v}: {e}"))
    };
    let line = json
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .expect("atnet printed a JSON line");
    Some(serde_json::from_str(line).expect("atnet JSON"))
}
