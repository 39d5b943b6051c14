//! From the outbox into the index: the direct-write API the registry and the UI call
//! ([`Index::enqueue_records`], [`Index::apply_direct`], pull counting), the drainer task that
//! applies queued entries in order, and the pull-count flusher.
//!
//! The drainer applies one entry per write transaction, and that transaction also records
//! the entry's sequence number in `outbox_applied` (see [`record_applied`]); an entry whose
//! number is already recorded is removed without being applied again. While the index cannot
//! take writes (primary unreachable, token refused, local file unwritable) entries wait and
//! the drainer retries with backoff (1/4 s doubling to 60 s); for a replica it waits for the
//! lifecycle task to see the primary again. An entry the index refuses for another reason
//! (an SQL error, not an outage) is retried [`MAX_ATTEMPTS`] times, then dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::apply::{self, RecordChange};
use super::outbox::{Op, OutboxError};
use super::status::{Cause, Counters};
use super::write::Conn;
use super::{Index, IndexError, Inner, Result};

/// Attempts at an entry the index refuses (not an outage) before it is dropped.
pub const MAX_ATTEMPTS: u32 = 3;
/// How long the UI waits for its own write (a star) to be applied before answering anyway.
pub const DIRECT_WAIT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The outbox entry a write transaction applies (set by the drainer around the apply, so the
/// commit records it in the same transaction).
#[derive(Debug, Clone)]
pub(super) struct Marker {
    outbox: String,
    seq: u64,
}

tokio::task_local! {
    static MARKER: Marker;
}

pub(super) fn current_marker() -> Option<Marker> {
    MARKER.try_with(Marker::clone).ok()
}

/// Record an entry as applied, inside the transaction that applies it.
pub(super) async fn record_applied(conn: &Conn, _ix: &Index, m: Marker) -> Result<()> {
    conn.execute(
        "INSERT INTO outbox_applied (outbox, seq, applied_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (outbox) DO UPDATE SET seq = MAX(seq, excluded.seq),
            applied_at = excluded.applied_at",
        (m.outbox.as_str(), m.seq as i64, crate::pds::now_rfc3339()),
    )
    .await?;
    Ok(())
}

impl Index {
    /// Queue record changes of one DID durably; the drainer applies them in order. Returns
    /// the entry's sequence number.
    pub(crate) async fn enqueue_records(&self, did: &str, changes: &[RecordChange]) -> Result<u64> {
        let op = Op::Records {
            did: did.to_string(),
            changes: changes.iter().map(Into::into).collect(),
        };
        self.enqueue(op).await
    }

    async fn enqueue(&self, op: Op) -> Result<u64> {
        let outbox = self.inner.outbox.clone();
        let pushed = tokio::task::spawn_blocking(move || outbox.push(&op))
            .await
            .map_err(|e| IndexError::Network(format!("outbox task: {e}")))?;
        match pushed {
            Ok(seq) => {
                self.inner.drain_wake.notify_one();
                Ok(seq)
            }
            Err(e) => {
                if let OutboxError::Full { .. } = e {
                    Counters::bump(&self.inner.health.counters.outbox_dropped);
                    tracing::warn!(error = %e, "index write dropped: the outbox is full (`atcr index backfill` rebuilds it)");
                }
                Err(e.into())
            }
        }
    }

    /// Queue record changes and wait (at most [`DIRECT_WAIT`]) until they are applied, so
    /// the page shown next reads them. Queued is success: they are applied once the index
    /// takes writes again.
    pub(crate) async fn apply_direct(&self, did: &str, changes: &[RecordChange]) -> Result<()> {
        let seq = self.enqueue_records(did, changes).await?;
        // Waiting only helps while the index takes writes.
        if !self.status().writable || !self.wait_applied(seq, DIRECT_WAIT).await {
            tracing::info!(%did, seq, "index write queued; it is applied once the index takes writes again");
        }
        Ok(())
    }

    /// Shut down: pull counts still in memory go to the outbox, then the outbox file is
    /// closed (so a restart in the same process can open it while stray handles live on).
    pub async fn close(&self) {
        // Bounded: a handle to resolve must not hold up the shutdown.
        match tokio::time::timeout(Duration::from_secs(5), self.seal_pulls()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "pull counts of the last seconds not saved"),
            Err(_) => tracing::warn!("pull counts of the last seconds not saved: timed out"),
        }
        let outbox = self.inner.outbox.clone();
        let _ = tokio::task::spawn_blocking(move || outbox.close()).await;
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.drain_wake.notify_one();
    }

    /// Wait until the outbox entry `seq` (and every earlier one) has left the outbox.
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|done| *done >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Count one manifest pull (GET by tag or digest). Only an in-memory counter is touched;
    /// the flusher moves the counters to the outbox within [`super::PULL_FLUSH`].
    pub fn note_pull(&self, identity: &str, repository: &str) {
        let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        *p.entry((identity.to_string(), repository.to_string()))
            .or_insert(0) += 1;
    }

    /// Pulls counted in memory, not yet in the outbox.
    pub fn pending_pulls(&self) -> u64 {
        let p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        p.values().sum()
    }

    /// Move the in-memory pull counters into the outbox (one entry). Counters leave memory
    /// only once the entry is durable; on failure they are merged back.
    pub async fn seal_pulls(&self) -> Result<Option<u64>> {
        let pending: Vec<((String, String), u64)> = {
            let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
            p.drain().collect()
        };
        if pending.is_empty() {
            return Ok(None);
        }
        let mut counts = Vec::with_capacity(pending.len());
        for ((identity, repo), n) in &pending {
            match self.did_of(identity).await {
                Some(did) => counts.push((did, repo.clone(), *n)),
                None => {
                    tracing::debug!(%identity, "pull not counted: identity does not resolve")
                }
            }
        }
        if counts.is_empty() {
            return Ok(None);
        }
        let op = Op::Pulls {
            counts,
            at: crate::pds::now_rfc3339(),
        };
        match self.enqueue(op).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
                for (k, n) in pending {
                    *p.entry(k).or_insert(0) += n;
                }
                Err(e)
            }
        }
    }

    /// Write the pending pull counters now and wait (at most [`DIRECT_WAIT`]) until the index
    /// holds them. `Err` when they are still queued (the index does not take writes).
    pub async fn flush_pulls(&self) -> Result<()> {
        let Some(seq) = self.seal_pulls().await? else {
            return Ok(());
        };
        if self.wait_applied(seq, DIRECT_WAIT).await {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }

    /// The error for "not applied (yet)": the current cause, naming its key.
    pub(super) fn unavailable(&self) -> IndexError {
        let cause = self
            .inner
            .health
            .state()
            .cause
            .unwrap_or(Cause::Other("the index has not taken the write yet".into()));
        IndexError::Unavailable(self.explain(&cause))
    }

    /// Whether the entry is recorded as applied (reads the local copy, synced first).
    async fn already_applied(&self, seq: u64) -> Result<bool> {
        if self.is_replica() && self.inner.unsynced.load(Ordering::SeqCst) {
            self.sync().await?;
        }
        let conn = self.reader().await;
        let mut rows = conn
            .query(
                "SELECT seq FROM outbox_applied WHERE outbox = ?1",
                [self.inner.outbox.id()],
            )
            .await?;
        let done: Option<i64> = match rows.next().await? {
            Some(r) => Some(r.get(0)?),
            None => None,
        };
        Ok(done.is_some_and(|d| d >= seq as i64))
    }

    async fn apply_op(&self, op: Op) -> Result<()> {
        match op {
            Op::Records { did, changes } => {
                let changes: Vec<RecordChange> = changes.into_iter().map(Into::into).collect();
                self.apply_records(&did, &changes, None).await
            }
            Op::Pulls { counts, at } => {
                let conn = self.writer().await;
                let tx = conn.transaction().await?;
                for (did, repo, n) in counts {
                    apply::add_pulls(&tx, &did, &repo, n as i64, &at).await?;
                }
                tx.commit().await
            }
        }
    }

    async fn remove_entry(&self, seq: u64) -> Result<()> {
        let outbox = self.inner.outbox.clone();
        tokio::task::spawn_blocking(move || outbox.remove(seq))
            .await
            .map_err(|e| IndexError::Network(format!("outbox task: {e}")))??;
        self.inner.applied.send_modify(|v| *v = (*v).max(seq));
        Ok(())
    }

    /// Apply entries until the outbox is empty or the index refuses one.
    async fn drain_all(&self, attempts: &mut HashMap<u64, u32>) -> Result<(), Cause> {
        let outbox = self.inner.outbox.clone();
        let as_cause = |e: IndexError| self.cause_of(&e);
        loop {
            let o = outbox.clone();
            let first = tokio::task::spawn_blocking(move || o.first())
                .await
                .map_err(|e| Cause::Other(format!("outbox task: {e}")))?
                .map_err(|e| Cause::Other(e.to_string()))?;
            let Some((seq, op)) = first else {
                return Ok(());
            };
            let op = match op {
                Ok(op) => op,
                Err(e) => {
                    tracing::warn!(seq, error = %e, "outbox entry not understood by this build; dropped");
                    Counters::bump(&self.inner.health.counters.outbox_rejected);
                    self.remove_entry(seq).await.map_err(as_cause)?;
                    continue;
                }
            };
            self.ensure_ready().await.map_err(as_cause)?;
            if self.already_applied(seq).await.map_err(as_cause)? {
                self.remove_entry(seq).await.map_err(as_cause)?;
                continue;
            }
            let marker = Marker {
                outbox: outbox.id().to_string(),
                seq,
            };
            match MARKER.scope(marker, self.apply_op(op)).await {
                Ok(()) => {
                    Counters::bump(&self.inner.health.counters.outbox_applied);
                    attempts.remove(&seq);
                    self.remove_entry(seq).await.map_err(as_cause)?;
                    self.set_writable();
                }
                Err(e) => {
                    let cause = self.cause_of(&e);
                    if let Cause::Other(m) = &cause {
                        let n = attempts.entry(seq).or_insert(0);
                        *n += 1;
                        if *n >= MAX_ATTEMPTS {
                            tracing::warn!(seq, error = %m, "index refused an outbox entry {MAX_ATTEMPTS} times; dropped");
                            Counters::bump(&self.inner.health.counters.outbox_rejected);
                            attempts.remove(&seq);
                            self.remove_entry(seq).await.map_err(as_cause)?;
                            continue;
                        }
                    }
                    return Err(cause);
                }
            }
        }
    }

    pub(super) fn spawn_drainer(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let wake = self.inner.drain_wake.clone();
        tokio::spawn(drainer(weak, wake));
    }

    pub(super) fn spawn_pull_flusher(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::PULL_FLUSH);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let index = Index { inner };
                if index.inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = index.seal_pulls().await {
                    tracing::warn!(error = %e, "pull counts kept in memory: the outbox did not take them");
                }
            }
        });
    }
}

async fn drainer(weak: Weak<Inner>, wake: std::sync::Arc<tokio::sync::Notify>) {
    let retry_now = match weak.upgrade() {
        Some(inner) => inner.retry_now.clone(),
        None => return,
    };
    let mut backoff = MIN_BACKOFF;
    let mut attempts = HashMap::new();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let ix = Index { inner };
        if ix.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let idle = ix.inner.outbox.is_empty()
            || (ix.is_replica() && !ix.inner.health.state().primary_reachable);
        if idle {
            // Woken by an enqueue, by the lifecycle task (primary back) or by the last
            // handle dropping.
            drop(ix);
            wake.notified().await;
            continue;
        }
        match ix.drain_all(&mut attempts).await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(cause) => {
                ix.set_unwritable(cause.clone());
                match &cause {
                    Cause::LocalUnwritable(_) => {
                        let mut w = ix.writer().await;
                        if let Err(e) = w.reconnect().await {
                            tracing::debug!(error = %e, "index writer reconnect failed");
                        }
                    }
                    c if c.is_auth() => {
                        ix.reload_credentials();
                    }
                    _ => {}
                }
                drop(ix);
                // New entries do not cut the backoff short; a new token or the primary
                // coming back does.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = retry_now.notified() => backoff = MIN_BACKOFF,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
