//! Where log events go (`[log] format`):
//! - `journald` (and `auto` under systemd): the journal's native protocol through
//!   `systemd-journal-logger`. Each entry carries the event's and its spans' fields as journal
//!   fields (`REQUEST_ID`, `METHOD`, `ROUTE`, `REPOSITORY`, `DIGEST`, `DID`, `STATUS`,
//!   `ERROR`, ...; names upper-cased), so `journalctl -u atcr REPOSITORY=alice.test/app`
//!   works, and `PRIORITY` from the level. `MESSAGE` is the text line without the time.
//!   If the journal socket cannot be reached, lines go to stderr with `<N>` priority prefixes
//!   ([`super::systemd::JournalFormat`]), which journald also understands.
//! - `text` (and `auto` elsewhere): plain lines on stderr, ANSI colours only on a terminal.
//! - `json`: one JSON object per line on stderr (fields and spans included).

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::systemd;
use crate::config::LogConfig;

/// Which output [`init`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Journald,
    /// stderr is the journal but its socket is unreachable: `<N>`-prefixed lines.
    JournalStderr,
    Text,
    Json,
}

/// Installs the global subscriber for `config` (`RUST_LOG` overrides `level`). Call once.
pub fn init(config: &LogConfig) -> LogOutput {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let under_systemd = systemd::stderr_is_journal();
    let wants_journal = match config.format.as_str() {
        "journald" => true,
        "auto" => under_systemd,
        _ => false,
    };
    let journal = if wants_journal {
        systemd_journal_logger::JournalLog::new().ok()
    } else {
        None
    };
    // libSQL's own events reach the output only through its filter (re-emitted under target
    // `libsql` by `index::libsql_log`), unless RUST_LOG names libsql (debugging the replica:
    // then they pass as they are).
    let raw_libsql = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("libsql"));
    let not_libsql = tracing_subscriber::filter::filter_fn(move |m| {
        raw_libsql || !crate::index::libsql_log::is_libsql_target(m.target())
    });
    let registry = tracing_subscriber::registry().with(crate::index::libsql_log::layer());
    let stderr_text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    };
    match (journal, config.format.as_str()) {
        (Some(journal), _) => {
            registry
                .with(
                    JournaldLayer { journal }
                        .with_filter(not_libsql)
                        .with_filter(filter),
                )
                .init();
            LogOutput::Journald
        }
        (None, "json") => {
            let json = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr);
            registry
                .with(json.with_filter(not_libsql).with_filter(filter))
                .init();
            LogOutput::Json
        }
        (None, _) if wants_journal || under_systemd => {
            let lines = tracing_subscriber::fmt::layer()
                .event_format(systemd::JournalFormat::default())
                .with_writer(std::io::stderr);
            registry
                .with(lines.with_filter(not_libsql).with_filter(filter))
                .init();
            LogOutput::JournalStderr
        }
        (None, _) => {
            registry
                .with(stderr_text().with_filter(not_libsql).with_filter(filter))
                .init();
            LogOutput::Text
        }
    }
}

/// Sends every event to the journal with its fields and its spans' fields.
pub struct JournaldLayer {
    journal: systemd_journal_logger::JournalLog,
}

/// A span's recorded fields, kept in its extensions.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, String)>);

struct Collect<'a> {
    fields: &'a mut Vec<(&'static str, String)>,
    message: Option<&'a mut String>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            if let Some(m) = self.message.as_deref_mut() {
                *m = value;
                return;
            }
        }
        // Later values replace earlier ones (a span field recorded twice, or an event field
        // that repeats a span field): one value per journal field.
        match self.fields.iter_mut().find(|(k, _)| *k == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field.name(), value)),
        }
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// The journal's view of a tracing level (sd-daemon(3) priorities via the `log` levels that
/// systemd-journal-logger maps: error 3, warn 4, info 5, debug 6, trace 7).
fn log_level(level: &Level) -> log::Level {
    match *level {
        Level::ERROR => log::Level::Error,
        Level::WARN => log::Level::Warn,
        Level::INFO => log::Level::Info,
        Level::DEBUG => log::Level::Debug,
        Level::TRACE => log::Level::Trace,
    }
}

impl<S> Layer<S> for JournaldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attrs.record(&mut Collect {
            fields: &mut fields.0,
            message: None,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(&mut Collect {
                    fields: &mut fields.0,
                    message: None,
                });
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields: Vec<(&'static str, String)> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &f.0 {
                        match fields.iter_mut().find(|(key, _)| key == k) {
                            Some(slot) => slot.1 = v.clone(),
                            None => fields.push((k, v.clone())),
                        }
                    }
                }
            }
        }
        let span_count = fields.len();
        let mut message = String::new();
        event.record(&mut Collect {
            fields: &mut fields,
            message: Some(&mut message),
        });
        // MESSAGE reads like the text format: the message, then the event's own fields
        // (span fields stay journal fields only, to keep `journalctl` lines short).
        let mut text = message;
        for (k, v) in fields.iter().skip(span_count) {
            let _ = write!(text, " {k}={v}");
        }
        let meta = event.metadata();
        let kvs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // A lost log line must not take the service down.
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(log_level(meta.level()))
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kvs)
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_journal_priorities() {
        assert_eq!(log_level(&Level::ERROR), log::Level::Error);
        assert_eq!(log_level(&Level::INFO), log::Level::Info);
        assert_eq!(log_level(&Level::TRACE), log::Level::Trace);
    }
}
