//! The HTTP server: the accept loop with connection limits, per-phase timeouts, eviction and
//! load shedding ([`limits`]), graceful drain, and the single route table ([`router`]). The
//! state it serves is built by [`crate::app::build_state`].

pub mod limits;
pub mod logging;
pub mod router;
pub mod systemd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};

use crate::app::conn::{now_ms, Activity, ConnContext, CONNECTION};
use crate::app::{build_state, AppState, StartError};
use crate::config::Config;
use limits::{ConnSettings, ConnTracker, Shedder, TrackedIo, Verdict, Watchdog};

/// A server started in the background (tests, benches, `serve`).
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight requests finish, and wait.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        // Connection tasks drop their state handles just after the drain; wait (briefly)
        // until ours is the last one, so the databases are closed when this returns.
        for _ in 0..500 {
            if Arc::strong_count(&self.state) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Bind the configured address and serve in the background.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let addr = config.listen_addr();
    let state = build_state(config).await?;
    let listener = bind(addr).map_err(|e| StartError::Bind(addr, e))?;
    Ok(spawn_on(listener, state))
}

/// Listen on `addr` with a deep accept queue (4096; the kernel caps it at somaxconn): under
/// a connection flood the accept loop may fall behind for a moment, and a full queue drops
/// SYNs, which costs an honest client a one-second retransmit.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

pub fn spawn_on(listener: TcpListener, state: Arc<AppState>) -> Running {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let s = state.clone();
    let task = tokio::spawn(async move {
        let mut rx = rx;
        run(listener, s, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await
    });
    Running {
        addr,
        state,
        shutdown: tx,
        task,
    }
}

/// Serve until `shutdown` resolves, then drain for at most `shutdown_grace_secs`.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    raise_fd_limit(state.config.server.max_connections);
    let tracker = ConnTracker::new(&state.config.server);
    let shedder = Shedder::default();
    let settings = ConnSettings::from_config(&state.config.server);
    let builder = Arc::new(http_builder(&state.config.server));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    cleanup_uploads(&state).await;
    let housekeeping = spawn_housekeeping(state.clone());
    state.index.start_ingest(&state.config);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let slot = match tracker.admit(peer.ip(), activity.clone()) {
            Ok(slot) => slot,
            Err(why) => {
                shedder.refuse(stream, why);
                continue;
            }
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            state.clone(),
            builder.clone(),
            settings.clone(),
            activity,
            slot,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    // The housekeeping task holds the state (and with it the databases): end it with us.
    housekeeping.abort();
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    tokio::select! {
        _ = tracker.wait_empty() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
            tracker.evict_all();
        }
    }
    state.flush_counters().await;
    if let Some(scanner) = &state.scanner {
        scanner.stop().await; // its worker threads hold the hold's databases
    }
    if let Some(hold) = &state.hold {
        hold.close().await; // ends firehose websockets (upgraded, so not drained above)
    }
    state.index.stop_ingest();
    state.index.close().await;
}

fn http_builder(c: &crate::config::ServerConfig) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header timer runs from the end of the previous response; ours (the
    // watchdog) is exact per phase, this one is the backstop.
    let header_backstop = Duration::from_secs(c.header_timeout_secs + c.keepalive_timeout_secs);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_backstop)
        .max_buf_size(1 << 20);
    let ping = (c.http2_ping_secs > 0).then(|| Duration::from_secs(c.http2_ping_secs));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(c.http2_max_streams)
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping.unwrap_or(Duration::from_secs(20)))
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// One connection from accept to close: protocol detection under its deadline, then hyper,
/// watched by the [`Watchdog`] and closed when evicted or when the server stops.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    builder: Arc<Builder<TokioExecutor>>,
    settings: ConnSettings,
    activity: Arc<Activity>,
    slot: limits::Slot,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let detected = tokio::select! {
        r = tokio::time::timeout(settings.protocol_timeout, limits::detect(&mut stream)) => r,
        _ = activity.evicted_notified() => return,
        _ = stop.wait_for(|s| *s) => return,
    };
    let (protocol, prefix) = match detected {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "connection failed before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request bytes in time; closed");
            return;
        }
    };
    let io = TokioIo::new(TrackedIo::new(stream, prefix, activity.clone()));
    let context = ConnContext {
        activity: activity.clone(),
        rate: settings.rate,
    };
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let context = context.clone();
        // In flight until hyper drops the response body (sent, or the client went away).
        let guard = context.activity.request_started();
        async move {
            let resp = CONNECTION
                .scope(context, router::dispatch(state, req, peer))
                .await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                body.map_frame(move |frame| {
                    let _in_flight = &guard;
                    frame
                })
                .boxed_unsync()
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut watchdog = Watchdog::new(protocol, settings.clone(), activity.clone());
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Once closing was asked for (shutdown, eviction), the latest moment to drop it.
    let mut close_by: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                match close_by {
                    Some(t) if now >= t => break,
                    Some(_) => {}
                    None => {
                        if let Verdict::Close(why) = watchdog.check(now_ms()) {
                            tracing::debug!(%peer, reason = why, "connection closed");
                            if protocol == limits::Protocol::Http1 {
                                break;
                            }
                            // HTTP/2: GOAWAY first, so a request crossing it is refused
                            // cleanly (and retried by the client) rather than lost.
                            conn.as_mut().graceful_shutdown();
                            close_by = Some(now + Duration::from_secs(1));
                        }
                    }
                }
            }
            _ = activity.evicted_notified(), if close_by.is_none() => {
                if activity.in_flight() == 0 {
                    break;
                }
                // Its stalled body fails now and the error response goes out; then it closes.
                conn.as_mut().graceful_shutdown();
                close_by = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

/// Expired upload sessions of the registry and of the hold API.
async fn cleanup_uploads(state: &AppState) {
    match state.registry.cleanup_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired upload sessions"),
        Err(e) => tracing::warn!(error = %e, "upload cleanup failed"),
    }
    if let Some(hold) = &state.hold_api {
        let n = hold.expire_uploads().await;
        if n > 0 {
            tracing::info!(removed = n, "removed expired hold upload sessions");
        }
    }
}

/// Upload cleanup every `registry.upload_cleanup_secs` after the first, which [`run`] does
/// before accepting connections.
fn spawn_housekeeping(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_secs(state.config.registry.upload_cleanup_secs);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            cleanup_uploads(&state).await;
        }
    })
}

/// Like Go's runtime: raise the soft open-files limit to the hard one, since every
/// connection is a descriptor (systemd's default soft limit is 1024). Warns when the
/// connection cap cannot be reached.
fn raise_fd_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // Room for the databases, blob files in flight and refused connections being answered.
    let needed = max_connections as u64 + 512;
    let limit: u64 = lim.rlim_cur;
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-files limit is below server.max_connections + 512; raise LimitNOFILE"
        );
    }
}
