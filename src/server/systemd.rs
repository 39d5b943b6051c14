//! Running under systemd: `sd_notify` readiness, watchdog pings, stop notification, and
//! journald-friendly log lines. Every function is a no-op when the process was not started
//! by systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC` and `JOURNAL_STREAM` unset), so running by
//! hand, in tests or in a container behaves exactly as before.
//!
//! `systemd/atcr.service` is `Type=notify` with `WatchdogSec=`: systemd considers the unit
//! started only after [`notify_ready`] (listener bound, storage open), and restarts it when
//! the pings from [`spawn_watchdog`] stop for `WatchdogSec`.

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` (plus a status line): call once the listener is bound and the state is built.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: call when SIGTERM arrives, before draining in-flight requests.
pub fn notify_stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining in-flight requests"),
    ]);
}

/// The interval between watchdog pings: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends; `None` when the watchdog is off (or meant for another PID).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Ping the watchdog (`WATCHDOG=1`) from a tokio task at half of `WATCHDOG_USEC`. The pings
/// stop, and systemd restarts the service, when the runtime can no longer schedule this task.
/// Does nothing when the watchdog is off. Needs a running tokio runtime.
pub fn spawn_watchdog() {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tracing::debug!(?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    });
}

/// True when stderr is connected to the journal: `JOURNAL_STREAM` (`<dev>:<inode>`, set by
/// systemd for `StandardError=journal`) names the same file as fd 2. A child process that
/// inherited the variable but has stderr redirected elsewhere is not treated as journald.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Log line format for the journal: no ANSI colours and no timestamp (journald records both
/// the time and the unit), and a `<N>` syslog priority prefix that journald turns into the
/// entry's `PRIORITY` (so `journalctl -u atcr -p warning` works).
pub struct JournalFormat {
    inner: Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: Format::default().without_time().with_ansi(false),
        }
    }
}

/// The sd-daemon(3) priority prefix for a tracing level.
pub fn syslog_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(syslog_prefix(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(syslog_prefix(&Level::ERROR), "<3>");
        assert_eq!(syslog_prefix(&Level::WARN), "<4>");
        assert_eq!(syslog_prefix(&Level::INFO), "<6>");
        assert_eq!(syslog_prefix(&Level::TRACE), "<7>");
    }

    #[test]
    fn not_under_systemd_everything_is_a_no_op() {
        // The test runner is not a notify service: no socket, no watchdog, no journal.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            notify_ready("test");
            notify_stopping();
        }
        if std::env::var_os("WATCHDOG_USEC").is_none() {
            assert_eq!(watchdog_interval(), None);
        }
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
