//! libSQL's own log lines, filtered to the warnings that matter and re-emitted under the
//! target `libsql` (so they never read like our HTTP errors).
//!
//! Left out: its info-level handshake line (one per sync and write), the "Unusually long ...
//! fetch" timing warnings (noise on loopback), `tower_http` failure lines of its gRPC client
//! (`ERROR tower_http ... Connection refused`), and the per-retry "error connecting to
//! primary" warnings: the index reports the cause itself, once per state change, naming
//! `index.primary_url` / `index.auth_token` ([`super::status::Cause`]). The last such cause is
//! kept for that report ([`recent_primary_error`]): libSQL's handshake error only says
//! "Timeout performing handshake". Other warnings and errors pass, at most once per five
//! minutes per message.
//!
//! `main.rs` installs [`layer`] and keeps the raw events out of the formatter with
//! [`is_libsql_target`].

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target libSQL's kept lines appear under.
pub const TARGET: &str = "libsql";
const REPEAT_AFTER: Duration = Duration::from_secs(300);

static LAST_PRIMARY_ERROR: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// Targets of libSQL and the gRPC stack it alone uses (`tower_http`, `tonic`).
pub fn is_libsql_target(target: &str) -> bool {
    (target.starts_with("libsql") && target != TARGET)
        || target.starts_with("tower_http")
        || target.starts_with("tonic")
}

/// The last error libSQL met talking to the primary, if it is recent.
pub fn recent_primary_error(within: Duration) -> Option<String> {
    let g = LAST_PRIMARY_ERROR.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref()
        .filter(|(at, _)| at.elapsed() <= within)
        .map(|(_, m)| m.clone())
}

fn remember_primary_error(msg: &str) {
    *LAST_PRIMARY_ERROR.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((Instant::now(), msg.to_string()));
}

/// What becomes of one libSQL event.
#[derive(Debug, PartialEq)]
enum Verdict {
    Drop,
    /// A failure talking to the primary: kept as the cause, not logged.
    Cause,
    Keep,
}

fn judge(target: &str, level: Level, msg: &str) -> Verdict {
    if level > Level::WARN
        || msg.contains("Unusually long")
        || msg.contains("Attempting to perform handshake")
        || msg.contains("replicator sync error")
    {
        return Verdict::Drop;
    }
    if target.starts_with("tower_http")
        || target.starts_with("tonic")
        || msg.contains("error connecting to primary")
        || msg.contains("Failed handshake")
        || msg.contains("Failed frames fetch")
        || msg.contains("Failed snapshot fetch")
    {
        return Verdict::Cause;
    }
    Verdict::Keep
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

/// The layer that judges libSQL's events (filtered to them, so other events cost nothing).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    LibsqlLog::default().with_filter(tracing_subscriber::filter::filter_fn(|m| {
        is_libsql_target(m.target()) && *m.level() <= Level::WARN
    }))
}

#[derive(Default)]
struct LibsqlLog {
    seen: Mutex<HashMap<String, Instant>>,
}

impl<S: Subscriber> Layer<S> for LibsqlLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut m = Message::default();
        event.record(&mut m);
        match judge(meta.target(), *meta.level(), &m.0) {
            Verdict::Drop => {}
            Verdict::Cause => remember_primary_error(&m.0),
            Verdict::Keep => {
                let key: String = m.0.chars().take(80).collect();
                {
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.len() > 1000 {
                        seen.clear();
                    }
                    if seen.get(&key).is_some_and(|at| at.elapsed() < REPEAT_AFTER) {
                        return;
                    }
                    seen.insert(key, Instant::now());
                }
                if *meta.level() == Level::ERROR {
                    tracing::error!(target: "libsql", origin = meta.target(), "{}", m.0);
                } else {
                    tracing::warn!(target: "libsql", origin = meta.target(), "{}", m.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_dropped_causes_kept_the_rest_passes() {
        let rc = "libsql::replication::remote_client";
        assert_eq!(
            judge(
                rc,
                Level::INFO,
                "Attempting to perform handshake with primary."
            ),
            Verdict::Drop
        );
        assert_eq!(
            judge(
                rc,
                Level::WARN,
                "Unusually long frames fetch. Took 12 ms, average 3 ms"
            ),
            Verdict::Drop
        );
        assert_eq!(
            judge(
                "libsql_replication::replicator",
                Level::WARN,
                "error connecting to primary. retrying. error: status: Unauthenticated, message: \"AuthError: The JWT is invalid\""
            ),
            Verdict::Cause
        );
        assert_eq!(
            judge(
                "tower_http::trace::on_failure",
                Level::ERROR,
                "response failed classification=Error: Connection refused"
            ),
            Verdict::Cause
        );
        assert_eq!(
            judge(
                "libsql::replication",
                Level::WARN,
                "injector: frame checksum mismatch"
            ),
            Verdict::Keep
        );
        assert!(is_libsql_target("libsql_replication::replicator"));
        assert!(is_libsql_target("tower_http::trace::on_failure"));
        assert!(!is_libsql_target(TARGET), "kept lines pass the formatter");
        assert!(!is_libsql_target("atcr::index"));
    }

    #[test]
    fn the_layer_keeps_the_cause_and_renames_what_it_logs() {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "libsql_replication::replicator", "error connecting to primary. retrying. error: status: Unauthenticated, message: \"AuthError: The JWT has expired\"");
        });
        let cause = recent_primary_error(Duration::from_secs(5)).expect("kept");
        assert!(cause.contains("The JWT has expired"), "{cause}");
    }
}
