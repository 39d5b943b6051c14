//! Connection limits: the slot table with per-address shares and eviction
//! ([`ConnTracker`]), protocol detection with its own deadline ([`detect`]), the per-phase
//! watchdog of an open connection ([`Watchdog`]), the IO wrapper that feeds it
//! ([`TrackedIo`]), and the quick `503` for connections we cannot take ([`Shedder`]).
//!
//! Phases and their limits (all from `[server]`):
//! - protocol detection: the first bytes within `protocol_timeout_secs`;
//! - headers: a complete request head within `header_timeout_secs` of its first byte (the
//!   first request: of the accept); HTTP/2: the first request within the same time;
//! - body: `min_transfer_rate` over `transfer_window_secs` of waiting (`app/conn.rs`);
//! - response: the same rate for what the client reads;
//! - idle: `keepalive_timeout_secs` between requests (HTTP/2: without open streams), plus
//!   hyper's HTTP/2 pings.
//!
//! A full table (or a full per-address share) first closes the connection that has been idle
//! (or stalled) the longest; only when every connection is busy and moving is the newcomer
//! refused, with a `503` and `Retry-After` written at once.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::app::conn::{now_ms, Activity, RateWindow, TransferRate};
use crate::config::{Cidr, ServerConfig};

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `Retry-After` of the `503` a refused connection gets.
pub const SHED_RETRY_AFTER_SECS: u64 = 2;
/// Refused connections being answered at once; beyond this they are closed unanswered.
const MAX_SHEDDING: usize = 128;

/// The limits of one connection, from `[server]`.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub protocol_timeout: Duration,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub rate: TransferRate,
    /// How often the watchdog looks at a connection.
    pub tick: Duration,
}

impl ConnSettings {
    pub fn from_config(c: &ServerConfig) -> Self {
        let protocol_timeout = Duration::from_secs(c.protocol_timeout_secs);
        let header_timeout = Duration::from_secs(c.header_timeout_secs);
        let keepalive_timeout = Duration::from_secs(c.keepalive_timeout_secs);
        let rate = TransferRate {
            min_bytes_per_sec: c.min_transfer_rate,
            window: Duration::from_secs(c.transfer_window_secs),
        };
        let shortest = [header_timeout, keepalive_timeout, rate.window]
            .into_iter()
            .min()
            .unwrap_or(Duration::from_secs(1));
        ConnSettings {
            protocol_timeout,
            header_timeout,
            keepalive_timeout,
            rate,
            tick: (shortest / 5).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }
}

/// What the per-address share is keyed by: an IPv4 address, or an IPv6 /64 (one customer's
/// network; addresses inside it are free to pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4(u32),
    V6(u64),
}

fn addr_key(ip: IpAddr) -> AddrKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
        IpAddr::V6(v6) => AddrKey::V6((u128::from(v6) >> 64) as u64),
    }
}

struct Entry {
    key: Option<AddrKey>,
    activity: Arc<Activity>,
}

#[derive(Default)]
struct Table {
    conns: HashMap<u64, Entry>,
    per_addr: HashMap<AddrKey, usize>,
    next_id: u64,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(k) = e.key {
            if let Some(n) = self.per_addr.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.per_addr.remove(&k);
                }
            }
        }
        Some(e)
    }

    /// Close the connection (among those `wanted`) that has been idle or stalled the
    /// longest, to make room. Returns whether one was found. (A linear scan: it runs only
    /// when the table or a share is full, over at most `max_connections` entries.)
    fn evict_one(&mut self, wanted: impl Fn(&Entry) -> bool) -> bool {
        let now = now_ms();
        let victim = self
            .conns
            .iter()
            .filter(|(_, e)| wanted(e))
            .filter_map(|(id, e)| e.activity.eviction_rank(now).map(|r| (r, *id)))
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.activity.evict();
                true
            }
            None => false,
        }
    }
}

/// The slot table: every open connection, counted globally and per client address.
pub struct ConnTracker {
    table: Mutex<Table>,
    max_total: usize,
    max_per_addr: usize,
    exempt: Vec<Cidr>,
    emptied: tokio::sync::Notify,
    evictions: AtomicU64,
    refusals: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The table is full of busy connections.
    Full,
    /// This address's share is full of busy connections.
    AddressFull,
}

/// A slot: dropping it frees the slot (if eviction did not already).
pub struct Slot {
    tracker: Arc<ConnTracker>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.tracker.table.lock().unwrap_or_else(|p| p.into_inner());
        t.remove(self.id);
        if t.conns.is_empty() {
            self.tracker.emptied.notify_waiters();
        }
    }
}

impl ConnTracker {
    pub fn new(c: &ServerConfig) -> Arc<Self> {
        Arc::new(ConnTracker {
            table: Mutex::new(Table::default()),
            max_total: c.max_connections,
            max_per_addr: c.max_connections_per_address,
            exempt: c
                .per_address_exempt
                .iter()
                .filter_map(|s| Cidr::parse(s))
                .collect(),
            emptied: tokio::sync::Notify::new(),
            evictions: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        })
    }

    /// Take a slot for a connection from `ip`, closing an idle or stalled one if that is
    /// what it takes.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, activity: Arc<Activity>) -> Result<Slot, Refusal> {
        let key = (self.max_per_addr > 0 && !self.exempt.iter().any(|c| c.contains(ip)))
            .then(|| addr_key(ip));
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = key {
            if t.per_addr.get(&k).copied().unwrap_or(0) >= self.max_per_addr {
                if !t.evict_one(|e| e.key == Some(k)) {
                    self.refusals.fetch_add(1, Ordering::Relaxed);
                    return Err(Refusal::AddressFull);
                }
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if t.conns.len() >= self.max_total {
            if !t.evict_one(|_| true) {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Full);
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let id = t.next_id;
        t.next_id += 1;
        t.conns.insert(id, Entry { key, activity });
        if let Some(k) = key {
            *t.per_addr.entry(k).or_default() += 1;
        }
        Ok(Slot {
            tracker: self.clone(),
            id,
        })
    }

    pub fn open(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .len()
    }

    /// (connections closed to make room, connections refused) since start.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.evictions.load(Ordering::Relaxed),
            self.refusals.load(Ordering::Relaxed),
        )
    }

    /// Resolves when no connection holds a slot.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Every open connection is asked to close (its watchdog does it): evicted ones fail
    /// their bodies at once. Used when the drain after SIGTERM runs out of time.
    pub fn evict_all(&self) {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for e in t.conns.values() {
            e.activity.evict();
        }
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Read the first bytes (until they tell HTTP/1 from the HTTP/2 preface). `None`: the client
/// closed first. The bytes read are returned to be replayed.
pub async fn detect(stream: &mut TcpStream) -> io::Result<Option<(Protocol, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some((Protocol::Http1, buf)));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((Protocol::Http2, buf)));
        }
    }
}

/// The connection's socket: replays the bytes [`detect`] read, and tells the
/// [`Activity`] about reads (next request's headers started) and writes (progress, or
/// waiting for the client to read).
pub struct TrackedIo {
    stream: TcpStream,
    prefix: Vec<u8>,
    pos: usize,
    activity: Arc<Activity>,
}

impl TrackedIo {
    pub fn new(stream: TcpStream, prefix: Vec<u8>, activity: Arc<Activity>) -> Self {
        TrackedIo {
            stream,
            prefix,
            pos: 0,
            activity,
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.note_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        match &r {
            Poll::Ready(Ok(n)) => self.activity.note_write(Poll::Ready(*n)),
            Poll::Pending => self.activity.note_write(Poll::Pending),
            Poll::Ready(Err(_)) => {}
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        match &r {
            Poll::Ready(Ok(n)) => self.activity.note_write(Poll::Ready(*n)),
            Poll::Pending => self.activity.note_write(Poll::Pending),
            Poll::Ready(Err(_)) => {}
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What the watchdog found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Close: the phase named ran out of time.
    Close(&'static str),
}

/// Looks at one connection every tick and says when a phase ran out of time.
pub struct Watchdog {
    protocol: Protocol,
    settings: ConnSettings,
    activity: Arc<Activity>,
    send: RateWindow,
    last_tick_ms: u64,
    written_seen: u64,
}

impl Watchdog {
    pub fn new(protocol: Protocol, settings: ConnSettings, activity: Arc<Activity>) -> Self {
        if protocol == Protocol::Http1 {
            // The detected bytes are the first request's; its head is due in time from the accept.
            activity.note_read();
        }
        Watchdog {
            protocol,
            send: RateWindow::new(settings.rate),
            settings,
            last_tick_ms: now_ms(),
            written_seen: activity.bytes_written(),
            activity,
        }
    }

    pub fn check(&mut self, now: u64) -> Verdict {
        let a = &self.activity;
        let elapsed = |since: u64| Duration::from_millis(now.saturating_sub(since));
        let last_tick = std::mem::replace(&mut self.last_tick_ms, now);
        let written = a.bytes_written();
        self.send
            .add_bytes(written.saturating_sub(self.written_seen));
        self.written_seen = written;
        if a.in_flight() == 0 {
            self.send = RateWindow::new(self.settings.rate);
            let first = a.requests() == 0;
            return match (self.protocol, a.header_started_ms()) {
                (Protocol::Http1, h) if h != 0 => {
                    let started = if first { a.accepted_ms } else { h };
                    if elapsed(started) >= self.settings.header_timeout {
                        Verdict::Close("request headers not complete in time")
                    } else {
                        Verdict::Fine
                    }
                }
                _ => {
                    let limit = if first {
                        self.settings.header_timeout
                    } else {
                        self.settings.keepalive_timeout
                    };
                    if elapsed(a.idle_since_ms()) >= limit {
                        Verdict::Close(if first {
                            "no request in time"
                        } else {
                            "idle for too long"
                        })
                    } else {
                        Verdict::Fine
                    }
                }
            };
        }
        // A request is in flight: its body has its own guard; here, the response.
        let pending = a.write_pending_since_ms();
        if pending != 0 {
            let waited = Duration::from_millis(now.saturating_sub(pending.max(last_tick)));
            if self.send.add_wait(waited).is_err() {
                return Verdict::Close("the client reads the response too slowly");
            }
        }
        Verdict::Fine
    }
}

/// Answers refused connections with a `503` right away, a bounded number at a time.
pub struct Shedder {
    permits: Arc<tokio::sync::Semaphore>,
    last_log_ms: AtomicU64,
    since_log: AtomicU64,
}

impl Default for Shedder {
    fn default() -> Self {
        Shedder {
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_SHEDDING)),
            last_log_ms: AtomicU64::new(0),
            since_log: AtomicU64::new(0),
        }
    }
}

impl Shedder {
    pub fn refuse(&self, mut stream: TcpStream, why: Refusal) {
        self.log(why);
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return; // dropped: closed unanswered
        };
        tokio::spawn(async move {
            let detail = match why {
                Refusal::Full => "the server is at its connection limit; retry shortly",
                Refusal::AddressFull => {
                    "your address holds its share of connections; retry after some finish"
                }
            };
            let body = crate::oci::OciError::new(crate::oci::ErrorCode::Unavailable, detail).body();
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 retry-after: {SHED_RETRY_AFTER_SECS}\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            );
            let answer = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await?;
                stream.shutdown().await?;
                // Read what the client sent, so closing does not reset the connection
                // before it has read the answer.
                let mut sink = [0u8; 4096];
                let mut seen = 0;
                while seen < 64 * 1024 {
                    match stream.read(&mut sink).await? {
                        0 => break,
                        n => seen += n,
                    }
                }
                io::Result::Ok(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
            drop(permit);
        });
    }

    /// At most one line every 10 s, with the count since the last.
    fn log(&self, why: Refusal) {
        let n = self.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since_log.store(0, Ordering::Relaxed);
            tracing::warn!(refused = n, reason = ?why, "connections refused with 503: every slot is busy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(total: usize, per_addr: usize, exempt: &[&str]) -> ServerConfig {
        ServerConfig {
            max_connections: total,
            max_connections_per_address: per_addr,
            per_address_exempt: exempt.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn idle_connections_make_room_oldest_first() {
        let t = ConnTracker::new(&config(2, 0, &[]));
        let a1 = Arc::new(Activity::new());
        std::thread::sleep(Duration::from_millis(3));
        let a2 = Arc::new(Activity::new());
        let _s1 = t.admit(ip("10.0.0.1"), a1.clone()).unwrap();
        let _s2 = t.admit(ip("10.0.0.1"), a2.clone()).unwrap();
        let _s3 = t.admit(ip("10.0.0.2"), Arc::new(Activity::new())).unwrap();
        assert!(a1.evicted() && !a2.evicted(), "the oldest idle goes first");
        assert_eq!(t.open(), 2);
        assert_eq!(t.counters(), (1, 0));
    }

    #[test]
    fn busy_connections_are_kept_and_the_newcomer_refused() {
        let t = ConnTracker::new(&config(1, 0, &[]));
        let a = Arc::new(Activity::new());
        let slot = t.admit(ip("10.0.0.1"), a.clone()).unwrap();
        let guard = a.request_started();
        assert_eq!(
            t.admit(ip("10.0.0.2"), Arc::new(Activity::new())).err(),
            Some(Refusal::Full)
        );
        assert!(!a.evicted());
        drop(guard); // idle again: it may go
        let _newcomer = t.admit(ip("10.0.0.2"), Arc::new(Activity::new())).unwrap();
        assert!(a.evicted());
        drop(slot);
        assert_eq!(t.open(), 1, "an evicted slot is not freed twice");
    }

    #[test]
    fn per_address_share_is_separate_and_exempt_addresses_skip_it() {
        let t = ConnTracker::new(&config(100, 2, &["127.0.0.0/8"]));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::new(Activity::new());
                let g = a.request_started();
                (t.admit(ip("10.0.0.1"), a).unwrap(), g)
            })
            .collect();
        assert_eq!(
            t.admit(ip("10.0.0.1"), Arc::new(Activity::new())).err(),
            Some(Refusal::AddressFull)
        );
        let _other = t.admit(ip("10.0.0.2"), Arc::new(Activity::new())).unwrap();
        for _ in 0..5 {
            let a = Arc::new(Activity::new());
            std::mem::forget(a.request_started());
            std::mem::forget(t.admit(ip("127.0.0.1"), a).unwrap());
        }
        // IPv6: one /64 is one share.
        let _v6 = t
            .admit(ip("2001:db8::1"), Arc::new(Activity::new()))
            .unwrap();
        let _v6b = t
            .admit(ip("2001:db8::2"), Arc::new(Activity::new()))
            .unwrap();
        let a = Arc::new(Activity::new());
        let _v6c = t.admit(ip("2001:db8::3"), a).unwrap();
        assert_eq!(
            t.open(),
            2 + 1 + 5 + 2,
            "the third v6 evicted an idle one of its /64"
        );
        drop(busy);
    }

    #[test]
    fn watchdog_phases() {
        let s = ConnSettings::from_config(&ServerConfig {
            header_timeout_secs: 10,
            keepalive_timeout_secs: 30,
            ..ServerConfig::default()
        });
        let a = Arc::new(Activity::new());
        let mut w = Watchdog::new(Protocol::Http1, s.clone(), a.clone());
        let t0 = a.accepted_ms;
        assert_eq!(w.check(t0 + 9_000), Verdict::Fine);
        assert!(matches!(w.check(t0 + 10_000), Verdict::Close(m) if m.contains("headers")));
        // Keep-alive: idle after a request, then trickled headers of the next one.
        let g = a.request_started();
        assert_eq!(w.check(t0 + 60_000), Verdict::Fine, "busy, nothing to send");
        drop(g);
        let idle = a.idle_since_ms();
        assert_eq!(w.check(idle + 29_000), Verdict::Fine);
        assert!(matches!(w.check(idle + 30_000), Verdict::Close(m) if m.contains("idle")));
        a.note_read();
        let h = a.header_started_ms();
        assert_eq!(w.check(h + 9_000), Verdict::Fine);
        assert!(matches!(w.check(h + 10_000), Verdict::Close(m) if m.contains("headers")));
        // HTTP/2: the first request within the header time, then the keep-alive time.
        let b = Arc::new(Activity::new());
        let mut w2 = Watchdog::new(Protocol::Http2, s, b.clone());
        assert!(
            matches!(w2.check(b.accepted_ms + 10_000), Verdict::Close(m) if m.contains("no request"))
        );
    }
}
