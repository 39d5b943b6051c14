//! What the index can do right now, for `/_health` (and a future `/metrics`): whether the
//! primary (or the local file) takes writes, the outbox depth, and counters. Also the one
//! place that turns a libSQL error into a cause an operator can act on, naming the
//! configuration key it concerns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Monotonic counters (never reset while the process runs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Index write transactions committed (locally, or shipped to the primary as one
    /// request each). A push costs exactly one.
    pub write_transactions: AtomicU64,
    /// Replica syncs that succeeded / failed.
    pub syncs: AtomicU64,
    pub sync_failures: AtomicU64,
    /// Requests sent to the primary (handshakes, frame fetches, writes).
    pub primary_requests: AtomicU64,
    /// Outbox entries applied, dropped because the outbox was full, and dropped because the
    /// index refused them repeatedly (not because it was unreachable).
    pub outbox_applied: AtomicU64,
    pub outbox_dropped: AtomicU64,
    pub outbox_rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the index does not take writes (or reads) right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Cause {
    /// The primary does not answer (refused, timed out, DNS, TLS).
    Unreachable(String),
    /// The primary refused the token (`index.auth_token` / `index.auth_token_file`).
    AuthRefused(String),
    /// The token reads but may not write.
    ReadOnlyToken(String),
    /// The local index file cannot be written (permissions, read-only or full disk).
    LocalUnwritable(String),
    Other(String),
}

impl Cause {
    /// A sentence naming the configuration key involved.
    pub fn explain(&self, primary_url: &str, path: &str) -> String {
        match self {
            Cause::Unreachable(d) => format!(
                "index.primary_url {primary_url} is unreachable ({d}); reads are served from the local replica and writes are queued"
            ),
            Cause::AuthRefused(d) => format!(
                "the primary at index.primary_url {primary_url} refused index.auth_token ({d}); replace the token (index.auth_token_file is re-read on failure and on SIGHUP)"
            ),
            Cause::ReadOnlyToken(d) => format!(
                "index.auth_token may read but not write at index.primary_url {primary_url} ({d}); writes are queued until a read-write token is configured"
            ),
            Cause::LocalUnwritable(d) => {
                format!("the index file {path} (index.path) cannot be written ({d}); writes are queued")
            }
            Cause::Other(d) => format!("index: {d}"),
        }
    }

    /// Worth re-reading the token file for.
    pub fn is_auth(&self) -> bool {
        matches!(self, Cause::AuthRefused(_) | Cause::ReadOnlyToken(_))
    }
}

/// Classify a libSQL error. `writing`: the error came from a write (a refusal of a write
/// by a token that can sync means a read-only token).
pub fn classify(e: &libsql::Error, writing: bool) -> Cause {
    let text = format!("{e}");
    let dbg = format!("{e:?}");
    let has = |needle: &str| text.contains(needle) || dbg.contains(needle);
    if let libsql::Error::SqliteFailure(code, msg) = e {
        // SQLITE_READONLY (8), SQLITE_IOERR (10), SQLITE_CANTOPEN (14), SQLITE_FULL (13),
        // SQLITE_PERM (3) with their extended codes.
        let primary = code & 0xff;
        if matches!(primary, 3 | 8 | 10 | 13 | 14) {
            return Cause::LocalUnwritable(msg.clone());
        }
    }
    if has("Unauthenticated") || has("JWT") || has("Unauthorized") || has("401") || has("AuthError")
    {
        return Cause::AuthRefused(short(&text));
    }
    if writing && (has("PermissionDenied") || has("NotAuthorized") || has("not authorized")) {
        return Cause::ReadOnlyToken(short(&text));
    }
    if has("Connection refused")
        || has("tcp connect")
        || has("dns error")
        || has("timed out")
        || has("Timeout performing handshake")
        || has("Unavailable")
        || has("connection closed")
        || has("error trying to connect")
        || has("broken pipe")
        || has("Connection reset")
    {
        return Cause::Unreachable(short(&text));
    }
    if has("readonly database") || has("disk I/O error") || has("database or disk is full") {
        return Cause::LocalUnwritable(short(&text));
    }
    Cause::Other(short(&text))
}

/// Errors are one line in logs and health: the first 300 characters.
fn short(s: &str) -> String {
    let s = s.replace('\n', " ");
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The mutable part of the state (transitions are logged once, by the caller).
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    /// Replica: the last sync succeeded. Local: always true.
    pub primary_reachable: bool,
    /// The last write (or readiness check) succeeded.
    pub writable: bool,
    /// The local file holds the schema (reads can be served).
    pub local_copy: bool,
    pub cause: Option<Cause>,
    pub since: String,
    pub last_sync: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Health {
    pub counters: Counters,
    pub state: Mutex<State>,
}

impl Health {
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A snapshot for `/_health` and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStatus {
    /// `local` or `replica`.
    pub mode: &'static str,
    /// `ok`: reads and writes work. `degraded`: reads are served (local copy) but writes
    /// are queued. `unavailable`: no local copy to read yet.
    pub state: &'static str,
    pub writable: bool,
    /// Replica only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_reachable: Option<bool>,
    /// Why it is not `ok`, naming the configuration key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// When the current state began (RFC 3339).
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    pub outbox: OutboxStatus,
    /// Pull counts in memory, not yet in the outbox.
    pub pending_pulls: u64,
    pub write_transactions: u64,
    pub syncs: u64,
    pub sync_failures: u64,
    pub primary_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStatus {
    pub entries: u64,
    pub bytes: u64,
    pub max_entries: u64,
    pub max_bytes: u64,
    pub applied: u64,
    pub dropped: u64,
    pub rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_told_apart_and_name_the_key() {
        let refused = libsql::Error::WriteDelegation(
            "status: Unavailable, message: \"error trying to connect: tcp connect error: Connection refused (os error 111)\"".into(),
        );
        assert!(matches!(classify(&refused, true), Cause::Unreachable(_)));
        let jwt = libsql::Error::WriteDelegation(
            "status: Unauthenticated, message: \"AuthError: The JWT is invalid\"".into(),
        );
        let c = classify(&jwt, true);
        assert!(matches!(c, Cause::AuthRefused(_)), "{c:?}");
        assert!(c
            .explain("libsql://x", "/d/index.db")
            .contains("index.auth_token"));
        let ro = libsql::Error::WriteDelegation(
            "status: PermissionDenied, message: \"Not authorized to execute query: write\"".into(),
        );
        let c = classify(&ro, true);
        assert!(matches!(c, Cause::ReadOnlyToken(_)), "{c:?}");
        assert!(c.explain("libsql://x", "p").contains("read but not write"));
        let hs = libsql::Error::Replication("Timeout performing handshake with primary".into());
        let c = classify(&hs, false);
        assert!(matches!(c, Cause::Unreachable(_)));
        assert!(c
            .explain("http://127.0.0.1:1", "p")
            .contains("index.primary_url"));
        let ro_file =
            libsql::Error::SqliteFailure(8, "attempt to write a readonly database".into());
        let c = classify(&ro_file, true);
        assert!(matches!(c, Cause::LocalUnwritable(_)));
        assert!(c.explain("", "/d/index.db").contains("index.path"));
        assert!(matches!(
            classify(
                &libsql::Error::SqliteFailure(1, "no such table: x".into()),
                true
            ),
            Cause::Other(_)
        ));
    }
}
