//! What one client connection is doing, shared by the server's connection watchdog
//! (`server/limits.rs`) and the request-body readers ([`guard_body`], used by every body
//! helper in [`super::http`]): requests in flight, when it went idle, when its headers
//! started, whether it waits on the client for body bytes or for the client to read, and
//! the eviction flag.
//!
//! The minimum transfer rate ([`TransferRate`]) is measured over time spent *waiting on the
//! client*: a body read that returns Pending, a socket write that returns Pending. Time the
//! server itself is busy (disk, PDS) is never held against the client.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::Stream;

/// A body, or a response, that has seen no byte for this long while we wait on the client is
/// "stalled": when the server is full it is closed before an active connection is refused.
pub const STALLED_AFTER: Duration = Duration::from_secs(2);

/// Milliseconds since the first call (never 0, so 0 can mean "not set").
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The slowest transfer accepted: at least `min_bytes_per_sec * window` bytes in every
/// `window` spent waiting on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRate {
    pub min_bytes_per_sec: u64,
    pub window: Duration,
}

impl TransferRate {
    fn bytes_per_window(&self) -> u64 {
        (self.min_bytes_per_sec as u128 * self.window.as_millis() / 1000) as u64
    }
}

/// One direction's rate bookkeeping: waiting time and bytes in the current window.
#[derive(Debug, Clone)]
pub struct RateWindow {
    rate: TransferRate,
    waited: Duration,
    bytes: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooSlow {
    pub bytes: u64,
    pub rate: TransferRate,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "only {} bytes in {} s of waiting on the client; the minimum is {} bytes/s",
            self.bytes,
            self.rate.window.as_secs(),
            self.rate.min_bytes_per_sec
        )
    }
}

impl RateWindow {
    pub fn new(rate: TransferRate) -> Self {
        RateWindow {
            rate,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    pub fn add_bytes(&mut self, n: u64) {
        self.bytes = self.bytes.saturating_add(n);
    }

    /// Count waiting time; a full window with too few bytes is an error, a full window with
    /// enough starts the next one.
    pub fn add_wait(&mut self, d: Duration) -> Result<(), TooSlow> {
        self.waited += d;
        if self.waited < self.rate.window {
            return Ok(());
        }
        if self.bytes < self.rate.bytes_per_window() {
            return Err(TooSlow {
                bytes: self.bytes,
                rate: self.rate,
            });
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }

    /// Waiting time left in the current window.
    pub fn remaining(&self) -> Duration {
        self.rate.window.saturating_sub(self.waited)
    }
}

/// The shared state of one connection (atomics: the connection task, its IO and its
/// request bodies update it from different tasks).
#[derive(Debug)]
pub struct Activity {
    pub accepted_ms: u64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    idle_since_ms: AtomicU64,
    header_started_ms: AtomicU64,
    body_waiting_since_ms: AtomicU64,
    write_pending_since_ms: AtomicU64,
    bytes_written: AtomicU64,
    evicted: AtomicBool,
    body_waker: AtomicWaker,
    evict_notify: tokio::sync::Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        let now = now_ms();
        Activity {
            accepted_ms: now,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            header_started_ms: AtomicU64::new(0),
            body_waiting_since_ms: AtomicU64::new(0),
            write_pending_since_ms: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            body_waker: AtomicWaker::new(),
            evict_notify: tokio::sync::Notify::new(),
        }
    }

    /// A request was handed to the service; the guard ends it when the response is done.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.header_started_ms.store(0, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn idle_since_ms(&self) -> u64 {
        self.idle_since_ms.load(Ordering::SeqCst)
    }

    /// When the bytes of the next request started arriving (0: none yet).
    pub fn header_started_ms(&self) -> u64 {
        self.header_started_ms.load(Ordering::SeqCst)
    }

    /// The IO read bytes: if no request is in flight they start the next request's headers.
    pub fn note_read(&self) {
        if self.in_flight() == 0 {
            let _ = self.header_started_ms.compare_exchange(
                0,
                now_ms(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// Since when a body read has been waiting on the client (0: not waiting).
    pub fn body_waiting_since_ms(&self) -> u64 {
        self.body_waiting_since_ms.load(Ordering::SeqCst)
    }

    pub fn note_write(&self, result: Poll<usize>) {
        match result {
            Poll::Ready(n) => {
                self.bytes_written.fetch_add(n as u64, Ordering::SeqCst);
                self.write_pending_since_ms.store(0, Ordering::SeqCst);
            }
            Poll::Pending => {
                let _ = self.write_pending_since_ms.compare_exchange(
                    0,
                    now_ms(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
    }

    /// Since when a socket write has been waiting for the client to read (0: not waiting).
    pub fn write_pending_since_ms(&self) -> u64 {
        self.write_pending_since_ms.load(Ordering::SeqCst)
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::SeqCst)
    }

    /// Whether the connection may be closed to make room, and since when it has made no
    /// progress (the oldest goes first): nothing in flight (since it went idle, or since
    /// its next request's first byte), or a body or response that has not moved for
    /// [`STALLED_AFTER`]. A fresh connection whose request the server has not read yet is
    /// young, so the stalest ones go before it.
    pub fn eviction_rank(&self, now: u64) -> Option<u64> {
        if self.evicted() {
            return None;
        }
        if self.in_flight() == 0 {
            return Some(match self.header_started_ms() {
                0 => self.idle_since_ms(),
                h => h,
            });
        }
        let stalled = STALLED_AFTER.as_millis() as u64;
        [self.body_waiting_since_ms(), self.write_pending_since_ms()]
            .into_iter()
            .filter(|&t| t != 0 && now.saturating_sub(t) >= stalled)
            .min()
    }

    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Close this connection to make room: body readers fail at once, the watchdog closes.
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.body_waker.wake();
        self.evict_notify.notify_one();
    }

    /// Resolves once [`Activity::evict`] was called.
    pub async fn evicted_notified(&self) {
        loop {
            let notified = self.evict_notify.notified();
            if self.evicted() {
                return;
            }
            notified.await;
        }
    }
}

/// Ends a request (in flight until the response body is dropped) when dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.body_waiting_since_ms.store(0, Ordering::SeqCst);
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.idle_since_ms.store(now_ms(), Ordering::SeqCst);
            a.header_started_ms.store(0, Ordering::SeqCst);
        }
    }
}

/// What a request body reader needs to know about its connection.
#[derive(Debug, Clone)]
pub struct ConnContext {
    pub activity: Arc<Activity>,
    pub rate: TransferRate,
}

tokio::task_local! {
    /// Set by the server around each request; body helpers pick it up.
    pub static CONNECTION: ConnContext;
}

/// Why a guarded body ended early (an `io::Error` of kind `TimedOut` carries it).
pub fn is_body_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
}

/// A request body that fails (io `TimedOut`) when the client sends slower than the
/// connection's [`TransferRate`] while we wait on it, or when the connection is evicted.
/// Outside a server connection (no [`CONNECTION`]), the body passes through unchanged.
pub fn guard_body<S>(inner: S) -> GuardedBody<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let ctx = CONNECTION.try_with(|c| c.clone()).ok();
    GuardedBody {
        inner,
        window: ctx.as_ref().map(|c| RateWindow::new(c.rate)),
        ctx,
        pending_since: None,
        deadline: None,
        done: false,
    }
}

pub struct GuardedBody<S> {
    inner: S,
    ctx: Option<ConnContext>,
    window: Option<RateWindow>,
    pending_since: Option<tokio::time::Instant>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl<S> GuardedBody<S> {
    fn fail(&mut self, msg: String) -> Poll<Option<std::io::Result<Bytes>>> {
        self.done = true;
        self.stop_waiting();
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            msg,
        ))))
    }

    fn stop_waiting(&mut self) {
        if let Some(ctx) = &self.ctx {
            ctx.activity
                .body_waiting_since_ms
                .store(0, Ordering::SeqCst);
        }
    }
}

impl<S> Stream for GuardedBody<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let Some(ctx) = this.ctx.clone() else {
            return Pin::new(&mut this.inner).poll_next(cx);
        };
        if ctx.activity.evicted() {
            return this.fail(
                "the request body stalled while the server was full; the connection was closed"
                    .into(),
            );
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let window = this.window.as_mut().expect("set with ctx");
                window.add_bytes(chunk.len() as u64);
                if let Some(since) = this.pending_since.take() {
                    let judged = window.add_wait(since.elapsed());
                    this.deadline = None;
                    this.stop_waiting();
                    if let Err(slow) = judged {
                        return this.fail(format!("request body too slow: {slow}"));
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.done = true;
                this.stop_waiting();
                Poll::Ready(other)
            }
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                let since = *this.pending_since.get_or_insert_with(|| {
                    ctx.activity
                        .body_waiting_since_ms
                        .store(now_ms(), Ordering::SeqCst);
                    now
                });
                ctx.activity.body_waker.register(cx.waker());
                loop {
                    let window = this.window.as_mut().expect("set with ctx");
                    let waited = now.saturating_duration_since(since);
                    if waited >= window.remaining() {
                        // A whole window of waiting: judge it, then wait on in a fresh one.
                        if let Err(slow) = window.add_wait(waited) {
                            return this.fail(format!("request body too slow: {slow}"));
                        }
                        this.pending_since = Some(now);
                        this.deadline = None;
                        continue;
                    }
                    let at = since + window.remaining();
                    let sleep = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        // Re-evaluated on the next poll, which this wake-up brings.
                        this.deadline = None;
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bps: u64, secs: u64) -> TransferRate {
        TransferRate {
            min_bytes_per_sec: bps,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn rate_window_judges_whole_windows_only() {
        let mut w = RateWindow::new(rate(100, 10));
        w.add_bytes(50);
        assert!(
            w.add_wait(Duration::from_secs(9)).is_ok(),
            "window not over"
        );
        assert_eq!(w.remaining(), Duration::from_secs(1));
        let e = w.add_wait(Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.bytes, 50);
        assert!(e.to_string().contains("100 bytes/s"), "{e}");

        let mut w = RateWindow::new(rate(100, 10));
        w.add_bytes(1000);
        assert!(w.add_wait(Duration::from_secs(10)).is_ok(), "enough bytes");
        assert_eq!(w.remaining(), Duration::from_secs(10), "a fresh window");
        assert!(
            w.add_wait(Duration::from_secs(10)).is_err(),
            "nothing since"
        );
    }

    #[test]
    fn eviction_rank_is_the_start_of_idleness_or_of_a_stall() {
        let a = Arc::new(Activity::new());
        assert_eq!(
            a.eviction_rank(now_ms()),
            Some(a.accepted_ms),
            "idle since accepted"
        );
        let g = a.request_started();
        assert_eq!(a.eviction_rank(now_ms()), None, "busy and moving");
        a.body_waiting_since_ms.store(1, Ordering::SeqCst);
        let now = 1 + STALLED_AFTER.as_millis() as u64;
        assert_eq!(a.eviction_rank(now), Some(1), "stalled body");
        assert_eq!(
            a.eviction_rank(now - 1),
            None,
            "not stalled for long enough"
        );
        drop(g);
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.body_waiting_since_ms(), 0);
        a.evict();
        assert_eq!(a.eviction_rank(now_ms()), None, "already evicted");
    }

    async fn body_from(
        chunks: Vec<(u64, &'static [u8])>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        Box::pin(futures_util::stream::unfold(
            chunks.into_iter(),
            |mut it| async move {
                let (delay_ms, bytes) = it.next()?;
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Some((Ok(Bytes::from_static(bytes)), it))
            },
        ))
    }

    async fn drain(
        ctx: ConnContext,
        chunks: Vec<(u64, &'static [u8])>,
    ) -> Result<usize, std::io::Error> {
        use futures_util::StreamExt;
        let body = body_from(chunks).await;
        CONNECTION
            .scope(ctx, async move {
                let mut b = guard_body(body);
                let mut n = 0;
                while let Some(c) = b.next().await {
                    n += c?.len();
                }
                Ok(n)
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_fails_and_steady_body_passes() {
        let ctx = ConnContext {
            activity: Arc::new(Activity::new()),
            rate: rate(10, 4),
        };
        // 1 byte every 3 s: 2 bytes after 4 s of waiting, under 40.
        let slow = vec![(3000, &b"x"[..]); 10];
        let e = drain(ctx.clone(), slow).await.unwrap_err();
        assert!(is_body_timeout(&e), "{e}");
        assert!(e.to_string().contains("too slow"), "{e}");
        // 20 bytes every 1 s (twice the floor): never cut off, however long.
        let steady = vec![(1000, &b"0123456789abcdefghij"[..]); 30];
        assert_eq!(drain(ctx.clone(), steady).await.unwrap(), 600);
        // A server that stops reading is not waiting on the client: fine.
        let burst = vec![(0, &b"0123456789"[..]); 5];
        assert_eq!(drain(ctx, burst).await.unwrap(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn evicted_body_fails_at_once() {
        let activity = Arc::new(Activity::new());
        let ctx = ConnContext {
            activity: activity.clone(),
            rate: rate(1, 3600),
        };
        let evictor = {
            let a = activity.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                a.evict();
            })
        };
        let started = tokio::time::Instant::now();
        let e = drain(ctx, vec![(60_000, &b"x"[..])]).await.unwrap_err();
        assert!(e.to_string().contains("server was full"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(6));
        evictor.await.unwrap();
    }
}
