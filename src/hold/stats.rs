//! Pull and push counts of the repositories whose blobs this hold stores
//! (`io.atcr.hold.stats`, one record per (owner, repository), rkey
//! [`crate::pds::records::stats_rkey`]), counted in memory and written in batches: one
//! hold commit per [`FLUSH_EVERY`] for everything counted since, never a commit per pull.
//! A graceful stop writes what is pending; a crash loses at most that interval's counts.
//!
//! The counting rule (README "Pull and push counts"):
//! - **pulls**: one per manifest `GET` by tag (see [`crate::registry::pulls`]: `HEAD` and
//!   digest reads are parts of a pull; Docker's `HEAD` tag + `GET` digest counts once).
//! - **pushes**: one per manifest reference the client pushed: every manifest `PUT` by tag
//!   is a push, and so is a `PUT` by digest of an index. An image manifest `PUT` by digest is
//!   a push unless, within [`CHILD_GRACE`], an index naming it is pushed into the same
//!   repository: then it was a child of that multi-arch push (counted once, as the index).
//! - `lastPull` / `lastPush`: the time of the latest counted pull / push.
//!
//! [`StatsSink`] is the small interface the counting goes through; [`StatsBatcher`] is the
//! in-process hold's. A remote hold would be fed by an AppView-side sink that keeps the
//! same per-(hold, owner, repository) deltas and, per flush, reads the hold's stats record
//! (public `com.atproto.repo.getRecord`), adds them and sends `io.atcr.hold.setStats` with
//! the owner's service token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::json;

use super::manifest::stats_write;
use crate::pds::{now_rfc3339, HoldError, HoldPds};

/// How often pending counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// How long an image manifest pushed by digest waits for an index that names it.
pub const CHILD_GRACE: Duration = Duration::from_secs(30);
/// Bound on digest pushes waiting for their index (a flood of them is counted early).
const MAX_WAITING: usize = 10_000;

/// Where pulls and pushes are counted. Only enqueues: never blocks a pull or a push.
pub trait StatsSink: Send + Sync {
    /// One pull of `owner`'s `repository`.
    fn pull(&self, owner: &str, repository: &str);
    /// A manifest `PUT`: `by_tag` when the client pushed a tag; `children`: the digests an
    /// index names (empty for image manifests).
    fn push(&self, owner: &str, repository: &str, digest: &str, by_tag: bool, children: &[String]);
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Delta {
    pulls: u64,
    pushes: u64,
    last_pull: Option<String>,
    last_push: Option<String>,
}

impl Delta {
    fn merge(&mut self, o: Delta) {
        self.pulls += o.pulls;
        self.pushes += o.pushes;
        self.last_pull = self.last_pull.take().max(o.last_pull);
        self.last_push = self.last_push.take().max(o.last_push);
    }
}

struct Waiting {
    owner: String,
    repository: String,
    digest: String,
    since: Instant,
    at: String,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<(String, String), Delta>,
    waiting: Vec<Waiting>,
}

impl Pending {
    fn count_push(&mut self, owner: &str, repository: &str, at: &str) {
        let d = self
            .counts
            .entry((owner.to_string(), repository.to_string()))
            .or_default();
        d.pushes += 1;
        d.last_push = d.last_push.take().max(Some(at.to_string()));
    }

    /// Digest pushes older than `grace` become pushes (all of them with a zero grace).
    fn mature(&mut self, grace: Duration) {
        let (ripe, young): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.since.elapsed() >= grace);
        self.waiting = young;
        for w in ripe {
            self.count_push(&w.owner, &w.repository, &w.at);
        }
    }
}

/// The in-process hold's [`StatsSink`]: counts in memory, [`StatsBatcher::flush`] writes
/// them in one commit. [`StatsBatcher::start`] flushes every [`FLUSH_EVERY`].
pub struct StatsBatcher {
    pds: Arc<HoldPds>,
    pending: Mutex<Pending>,
    grace: Duration,
}

impl StatsBatcher {
    pub fn new(pds: Arc<HoldPds>) -> Arc<StatsBatcher> {
        Self::with_grace(pds, CHILD_GRACE)
    }

    /// With another child grace (tests).
    pub fn with_grace(pds: Arc<HoldPds>, grace: Duration) -> Arc<StatsBatcher> {
        Arc::new(StatsBatcher {
            pds,
            pending: Mutex::new(Pending::default()),
            grace,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flush every [`FLUSH_EVERY`] while the batcher lives (the task holds it weakly, so
    /// the hold's database closes when the server drops it).
    pub fn start(self: &Arc<Self>) {
        let weak: Weak<StatsBatcher> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.flush().await {
                    tracing::warn!(error = %e, "writing hold stats failed; kept for the next try");
                }
            }
        });
    }

    /// Writes the counts pending now (digest pushes still within their grace wait) in one
    /// commit; on failure they are kept for the next flush. Returns how many stats records
    /// were written.
    pub async fn flush(&self) -> Result<usize, HoldError> {
        self.flush_with(self.grace).await
    }

    /// Writes everything, also digest pushes still in their grace (shutdown).
    pub async fn flush_all(&self) -> Result<usize, HoldError> {
        self.flush_with(Duration::ZERO).await
    }

    async fn flush_with(&self, grace: Duration) -> Result<usize, HoldError> {
        let counts = {
            let mut p = self.pending();
            p.mature(grace);
            std::mem::take(&mut p.counts)
        };
        if counts.is_empty() {
            return Ok(0);
        }
        let n = counts.len();
        let now = now_rfc3339();
        let batch: Vec<((String, String), Delta)> = counts.into_iter().collect();
        let written = batch.clone();
        let result = self
            .pds
            .clone()
            .write_async(move |repo| {
                let mut writes = Vec::with_capacity(batch.len());
                for ((owner, repository), d) in &batch {
                    writes.push(stats_write(repo, owner, repository, &now, |s| {
                        let add = |s: &mut serde_json::Value, key: &str, n: u64| {
                            s[key] = json!(s[key].as_u64().unwrap_or(0) + n);
                        };
                        add(s, "pullCount", d.pulls);
                        add(s, "pushCount", d.pushes);
                        let later = |s: &mut serde_json::Value, key: &str, t: &Option<String>| {
                            if let Some(t) = t {
                                if s[key].as_str().is_none_or(|old| old < t.as_str()) {
                                    s[key] = json!(t);
                                }
                            }
                        };
                        later(s, "lastPull", &d.last_pull);
                        later(s, "lastPush", &d.last_push);
                    })?);
                }
                Ok(writes)
            })
            .await;
        match result {
            Ok(_) => Ok(n),
            Err(e) => {
                let mut p = self.pending();
                for (k, d) in written {
                    p.counts.entry(k).or_default().merge(d);
                }
                Err(e)
            }
        }
    }

    /// Counts not written yet (tests, the admin page).
    pub fn pending_counts(&self, owner: &str, repository: &str) -> (u64, u64) {
        let p = self.pending();
        let d = p
            .counts
            .get(&(owner.to_string(), repository.to_string()))
            .cloned()
            .unwrap_or_default();
        let waiting = p
            .waiting
            .iter()
            .filter(|w| w.owner == owner && w.repository == repository)
            .count() as u64;
        (d.pulls, d.pushes + waiting)
    }
}

impl StatsSink for StatsBatcher {
    fn pull(&self, owner: &str, repository: &str) {
        let at = now_rfc3339();
        let mut p = self.pending();
        let d = p
            .counts
            .entry((owner.to_string(), repository.to_string()))
            .or_default();
        d.pulls += 1;
        d.last_pull = d.last_pull.take().max(Some(at));
    }

    fn push(&self, owner: &str, repository: &str, digest: &str, by_tag: bool, children: &[String]) {
        let at = now_rfc3339();
        let mut p = self.pending();
        if !children.is_empty() {
            // The children were parts of this push, not pushes of their own.
            p.waiting.retain(|w| {
                !(w.owner == owner && w.repository == repository && children.contains(&w.digest))
            });
        }
        if by_tag || !children.is_empty() {
            p.count_push(owner, repository, &at);
            return;
        }
        if p.waiting.len() >= MAX_WAITING {
            p.mature(Duration::ZERO);
        }
        p.waiting.push(Waiting {
            owner: owner.to_string(),
            repository: repository.to_string(),
            digest: digest.to_string(),
            since: Instant::now(),
            at,
        });
    }
}
