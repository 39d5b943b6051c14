//! The HTTP server: accept loop with a connection cap and graceful drain, and the single
//! route table ([`router`]). The state it serves is built by [`crate::app::build_state`].

pub mod router;
pub mod systemd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{build_state, AppState, StartError};
use crate::config::Config;

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
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Bind(addr, e))?;
    Ok(spawn_on(listener, state))
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
    let permits = Arc::new(Semaphore::new(state.config.server.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(1 << 20);
    let builder = Arc::new(builder);
    match state.registry.cleanup_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed stale upload sessions"),
        Err(e) => tracing::warn!(error = %e, "upload cleanup failed"),
    }
    let housekeeping = spawn_housekeeping(state.clone());
    state.index.start_ingest(&state.config);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = &mut shutdown => break,
        };
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
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(router::dispatch(state, req, peer).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // The housekeeping task holds the state (and with it the databases): end it with us.
    housekeeping.abort();
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; dropping open connections"),
    }
    if let Some(scanner) = &state.scanner {
        scanner.stop().await; // its worker threads hold the hold's databases
    }
    if let Some(hold) = &state.hold {
        hold.close().await; // ends firehose websockets (upgraded, so not drained above)
    }
    state.index.stop_ingest();
}

/// Hourly cleanup of abandoned upload sessions after the first, which [`run`] does before
/// accepting connections.
fn spawn_housekeeping(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_secs(3600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            match state.registry.cleanup_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed stale upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload cleanup failed"),
            }
        }
    })
}
