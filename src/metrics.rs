//! Process-wide Prometheus metrics (the `prometheus` crate's default registry) and their
//! text rendering for `/metrics`. Every label has a bounded set of values: routes come from
//! the route table, statuses are HTTP codes, hosts are capped at [`MAX_HOSTS`] (then
//! `other`), firehose endpoints come from the config. No repository names, DIDs or digests.
//!
//! Recording functions are cheap (atomics behind a lazily built registry) and safe to call
//! from any layer; nothing here knows about HTTP servers or storage.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};

/// Distinct PDS/hold host label values; further hosts are counted as `other`.
pub const MAX_HOSTS: usize = 64;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

struct Metrics {
    http_requests: IntCounterVec,
    http_duration: prometheus::HistogramVec,
    http_received: IntCounter,
    http_sent: IntCounterVec,
    uploads_in_flight: IntGauge,
    blob_errors: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_failures: IntCounterVec,
    firehose_cursor: IntGaugeVec,
    firehose_lag: prometheus::GaugeVec,
    firehose_last_event: prometheus::GaugeVec,
    gc_runs: IntCounterVec,
    gc_removed: IntCounter,
    gc_last_run: prometheus::Gauge,
    hosts: Mutex<HashSet<String>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = prometheus::default_registry();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &prometheus::Registry,
            c: C,
        ) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let hist = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid histogram"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        Metrics {
            http_requests: counter_vec(
                "atcr_http_requests_total",
                "HTTP requests answered, by route, method and status code.",
                &["route", "method", "status"],
            ),
            http_duration: hist(
                "atcr_http_request_duration_seconds",
                "Time from request to response headers, by route and method.",
                &["route", "method"],
            ),
            http_received: reg(
                r,
                IntCounter::new(
                    "atcr_http_received_bytes_total",
                    "Request body bytes read (uploads, manifests, API bodies).",
                )
                .expect("valid counter"),
            ),
            http_sent: counter_vec(
                "atcr_http_sent_bytes_total",
                "Response body bytes sent, by route.",
                &["route"],
            ),
            uploads_in_flight: reg(
                r,
                IntGauge::new(
                    "atcr_uploads_in_flight",
                    "Blob upload requests (POST/PATCH/PUT) being received now.",
                )
                .expect("valid gauge"),
            ),
            blob_errors: counter_vec(
                "atcr_blob_store_errors_total",
                "Blob store failures (I/O, S3), by the component that saw them.",
                &["component"],
            ),
            upstream_duration: hist(
                "atcr_upstream_request_duration_seconds",
                "XRPC calls to PDSes and holds, by host (first 64 hosts, then 'other').",
                &["host"],
            ),
            upstream_failures: counter_vec(
                "atcr_upstream_failures_total",
                "Failed XRPC calls to PDSes and holds, by host and kind (transport, 4xx, 5xx).",
                &["host", "kind"],
            ),
            firehose_cursor: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "atcr_index_firehose_cursor",
                        "Last sequence number read from each configured firehose.",
                    ),
                    &["endpoint"],
                )
                .expect("valid gauge"),
            ),
            firehose_lag: reg(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "atcr_index_firehose_lag_seconds",
                        "Now minus the time stamped on the last event read from each firehose.",
                    ),
                    &["endpoint"],
                )
                .expect("valid gauge"),
            ),
            firehose_last_event: reg(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "atcr_index_firehose_last_event_timestamp_seconds",
                        "When the last event was read from each firehose (Unix time).",
                    ),
                    &["endpoint"],
                )
                .expect("valid gauge"),
            ),
            gc_runs: counter_vec(
                "atcr_gc_runs_total",
                "Garbage collection runs, by mode (dry_run, delete) and result (ok, error).",
                &["mode", "result"],
            ),
            gc_removed: reg(
                r,
                IntCounter::new(
                    "atcr_gc_removed_blobs_total",
                    "Blobs deleted by garbage collection.",
                )
                .expect("valid counter"),
            ),
            gc_last_run: reg(
                r,
                prometheus::Gauge::new(
                    "atcr_gc_last_run_timestamp_seconds",
                    "When garbage collection last finished (Unix time).",
                )
                .expect("valid gauge"),
            ),
            hosts: Mutex::new(HashSet::new()),
        }
    })
}

/// Builds every metric now, so the first scrape lists them all (at zero).
pub fn init() {
    let _ = metrics();
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One answered HTTP request. `route` is a route-table name, never a path.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let m = metrics();
    let method = match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
        _ => "other",
    };
    m.http_requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
    m.http_duration
        .with_label_values(&[route, method])
        .observe(elapsed.as_secs_f64());
}

pub fn bytes_received(n: usize) {
    metrics().http_received.inc_by(n as u64);
}

/// A response body that adds its bytes to its route's `atcr_http_sent_bytes_total`.
pub struct CountSent<B> {
    inner: B,
    counter: IntCounter,
}

impl<B> CountSent<B> {
    pub fn new(inner: B, route: &str) -> CountSent<B> {
        CountSent {
            inner,
            counter: metrics().http_sent.with_label_values(&[route]),
        }
    }
}

impl<B> http_body::Body for CountSent<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts an upload request from creation to drop.
pub struct UploadInFlight(());

impl UploadInFlight {
    pub fn start() -> UploadInFlight {
        metrics().uploads_in_flight.inc();
        UploadInFlight(())
    }
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        metrics().uploads_in_flight.dec();
    }
}

/// A blob store failure seen by `component` (`registry`, `hold`).
pub fn blob_store_error(component: &'static str) {
    metrics().blob_errors.with_label_values(&[component]).inc();
}

/// The host label: the first [`MAX_HOSTS`] distinct hosts keep their name.
fn host_label(host: &str) -> String {
    let mut hosts = metrics().hosts.lock().unwrap_or_else(|e| e.into_inner());
    if hosts.contains(host) {
        return host.to_string();
    }
    if hosts.len() < MAX_HOSTS {
        hosts.insert(host.to_string());
        return host.to_string();
    }
    "other".to_string()
}

/// How an outbound XRPC call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Ok,
    /// No HTTP answer (connect, TLS, timeout).
    Transport,
    /// An HTTP error status.
    Status(u16),
}

/// One XRPC call to a PDS or hold (`host` with its port, if any).
pub fn upstream_call(host: &str, elapsed: Duration, outcome: Upstream) {
    let m = metrics();
    let host = host_label(host);
    m.upstream_duration
        .with_label_values(&[&host])
        .observe(elapsed.as_secs_f64());
    let kind = match outcome {
        Upstream::Ok => return,
        Upstream::Transport => "transport",
        Upstream::Status(s) if s >= 500 => "5xx",
        Upstream::Status(_) => "4xx",
    };
    m.upstream_failures.with_label_values(&[&host, kind]).inc();
}

/// An event read from a configured firehose `endpoint`: its seq and, when it has one, the
/// RFC 3339 time it was stamped with.
pub fn firehose_event(endpoint: &str, seq: Option<i64>, time: Option<&str>) {
    let m = metrics();
    if let Some(seq) = seq {
        m.firehose_cursor.with_label_values(&[endpoint]).set(seq);
    }
    let now = unix_now();
    m.firehose_last_event
        .with_label_values(&[endpoint])
        .set(now);
    if let Some(t) = time.and_then(rfc3339_unix) {
        m.firehose_lag
            .with_label_values(&[endpoint])
            .set((now - t).max(0.0));
    }
}

/// A garbage collection run finished.
pub fn gc_run(dry_run: bool, removed: Result<usize, ()>) {
    let m = metrics();
    let mode = if dry_run { "dry_run" } else { "delete" };
    let result = match removed {
        Ok(n) => {
            if !dry_run {
                m.gc_removed.inc_by(n as u64);
            }
            "ok"
        }
        Err(()) => "error",
    };
    m.gc_runs.with_label_values(&[mode, result]).inc();
    m.gc_last_run.set(unix_now());
}

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> (String, Vec<u8>) {
    init();
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = encoder.encode(&families, &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    (encoder.format_type().to_string(), out)
}

/// `2026-01-02T03:04:05.678Z` (or with an offset) -> Unix seconds.
pub fn rfc3339_unix(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            rfc3339_unix("2026-01-01T00:00:00.500Z"),
            Some(1_767_225_600.5)
        );
        assert_eq!(
            rfc3339_unix("2026-01-01T02:00:00+02:00"),
            Some(1_767_225_600.0)
        );
        assert_eq!(rfc3339_unix("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_unix("yesterday"), None);
    }

    #[test]
    fn host_labels_are_capped() {
        for i in 0..MAX_HOSTS + 10 {
            upstream_call(
                &format!("pds{i}.example"),
                Duration::from_millis(1),
                Upstream::Ok,
            );
        }
        let (_, text) = render();
        let text = String::from_utf8(text).unwrap();
        let hosts: HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("atcr_upstream_request_duration_seconds_count"))
            .filter_map(|l| l.split("host=\"").nth(1)?.split('"').next())
            .collect();
        assert!(hosts.len() <= MAX_HOSTS + 1, "{}", hosts.len());
        assert!(hosts.contains("other"));
    }
}
