//! The `com.atproto.sync.subscribeRepos` consumer: one task per configured endpoint (a
//! relay or a PDS), each resuming from its cursor in `ingest_cursor`.
//!
//! Frames are parsed and commits verified by the pure [`crate::atproto::firehose`] (fuzzed).
//! For a `#commit` the CAR slice in `blocks` is read with limits, the commit's
//! signature is checked against the `#atproto` key of the repo DID's document (resolved
//! through `atproto/identity`, re-resolved once on failure for key rotation), each op on an
//! `io.atcr.*` collection is checked against the signed MST root, and the changes are applied
//! with the new cursor in one transaction. The consumer is a pipeline ([`ingest`]): a reader
//! task verifies frames ahead on every core (stream order kept) while the writer applies what
//! has been verified in batches, one transaction for all the frames waiting (up to 512), with
//! the cursor of the last. `tooBig` commits and `#sync` events re-read the
//! repository with the backfill; `#identity` re-resolves the DID; `#account` with status
//! `deleted`/`takendown` forgets the account. A frame that does not check out is logged and
//! skipped; the connection is retried with exponential backoff (1 s .. 60 s). A
//! `FutureCursor` error (the source was reset, e.g. a new PDS on the same URL) makes the
//! consumer replay from seq 0. Frames without `io.atcr.*` changes advance the stored cursor
//! at most every 5 s (replaying them is harmless).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::apply::{RecordChange, COLLECTIONS};
use super::Index;
use crate::atproto::firehose::{self, OpChange};
pub use crate::atproto::firehose::{parse_frame, CommitFrame, CommitOp, Frame, FrameError};
use crate::atproto::repo::PublicKey;

/// Frames without index-relevant changes move the stored cursor at most this often.
const IDLE_CURSOR_SAVE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a verified commit means for the index.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedChanges {
    pub did: String,
    pub changes: Vec<RecordChange>,
}

/// Checks a commit frame against the repo's signing key and extracts the `io.atcr.*`
/// changes ([`firehose::verify_commit`] over the index's collections).
pub fn verify_commit(
    c: &CommitFrame,
    key: &crate::atproto::repo::PublicKey,
    max_bytes: usize,
) -> Result<VerifiedChanges, FrameError> {
    let v = firehose::verify_commit(c, key, max_bytes, |col| COLLECTIONS.contains(&col))?;
    let changes = v
        .changes
        .into_iter()
        .map(|change| match change {
            OpChange::Upsert {
                collection,
                rkey,
                value,
            } => RecordChange::Upsert {
                collection,
                rkey,
                value,
            },
            OpChange::Delete { collection, rkey } => RecordChange::Delete { collection, rkey },
        })
        .collect();
    Ok(VerifiedChanges {
        did: v.did,
        changes,
    })
}

/// Start one consumer per configured endpoint. They run for the life of the process; the
/// returned handles let the server (and tests) stop them.
pub fn spawn_consumers(
    index: &Index,
    endpoints: &[String],
    max_frame: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    endpoints
        .iter()
        .map(|e| {
            let (ix, e) = (index.clone(), e.clone());
            tokio::spawn(async move { consume(ix, e, max_frame).await })
        })
        .collect()
}

/// `ws(s)://host[/...]` -> the subscribeRepos URL with the cursor.
fn subscribe_url(endpoint: &str, cursor: Option<i64>) -> String {
    let base = endpoint.trim_end_matches('/');
    let base = if base.contains("/xrpc/") {
        base.to_string()
    } else {
        format!("{base}/xrpc/com.atproto.sync.subscribeRepos")
    };
    match cursor {
        Some(c) => format!("{base}?cursor={c}"),
        None => base,
    }
}

/// Runs forever: connect, read frames, apply; on any connection error wait and reconnect.
pub async fn consume(index: Index, endpoint: String, max_frame: usize) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let result = run_once(&index, &endpoint, max_frame).await;
        index.set_connected(&endpoint, false);
        match result {
            Ok(()) => tracing::info!(%endpoint, "firehose closed by the server; reconnecting"),
            Err(e) => tracing::warn!(%endpoint, error = %e, "firehose connection failed"),
        }
        // A connection that lived a while resets the backoff.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn run_once(index: &Index, endpoint: &str, max_frame: usize) -> Result<(), String> {
    let cursor = index
        .ingest_cursor(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let url = subscribe_url(endpoint, cursor);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tracing::info!(%endpoint, cursor = ?cursor, "firehose connected");
    index.set_connected(endpoint, true);
    use tokio_tungstenite::tungstenite::Message;
    // Relays send frames continuously; a PDS may be idle for long: no read timeout, but
    // websocket pings keep the TCP connection checked. A close frame ends the stream.
    let messages = ws
        .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(b)),
                Ok(_) => None,
                Err(e) => Some(Err(e.to_string())),
            })
        });
    let keys = Arc::new(ResolverKeys(index.clone()));
    ingest(index, endpoint, messages, keys, max_frame).await
}

/// Where the consumer finds a repository's signing key: the identity resolver (cached DID
/// documents) in the server; a bench hands its keys over directly.
pub trait SigningKeys: Send + Sync + 'static {
    /// The `#atproto` key of `did`. `fresh`: past every cache (a signature did not check
    /// out: the key may have been rotated). `Err`: the DID did not resolve.
    fn key<'a>(
        &'a self,
        did: &'a str,
        fresh: bool,
    ) -> BoxFuture<'a, Result<Option<PublicKey>, String>>;
}

/// [`SigningKeys`] from the index's resolver.
struct ResolverKeys(Index);

impl SigningKeys for ResolverKeys {
    fn key<'a>(
        &'a self,
        did: &'a str,
        fresh: bool,
    ) -> BoxFuture<'a, Result<Option<PublicKey>, String>> {
        Box::pin(async move {
            if fresh {
                self.0.resolver().invalidate(did);
            }
            let doc = self
                .0
                .resolver()
                .resolve_did(did)
                .await
                .map_err(|e| e.to_string())?;
            Ok(doc.signing_key())
        })
    }
}

/// Frames read ahead of the writer: their keys are resolved and their signatures checked
/// while the writer applies earlier ones.
const READ_AHEAD: usize = 256;
/// ... and at most this many KiB of them (frames are up to `max_frame_bytes`).
const READ_AHEAD_KIB: u32 = 64 * 1024;
/// Verified frames waiting for the writer.
const QUEUE: usize = 1024;
/// At most this many frames in one index transaction.
const MAX_BATCH: usize = 512;

/// A frame, read and checked, as the writer sees it.
enum Step {
    /// A verified commit with index changes.
    Apply {
        seq: i64,
        did: String,
        changes: Vec<RecordChange>,
    },
    /// Nothing for the index: only the cursor moves (`None`: not even that).
    Skip(Option<i64>),
    /// Handled by the writer in stream order (identity, account, sync, `tooBig`, error).
    Ordered(Frame),
}

/// Consume a stream of firehose messages from `source` until it ends: the pipeline the
/// server runs on each websocket (and the bench on frames in memory).
///
/// A reader task parses each message, looks up the repo's key and checks the commit on the
/// blocking pool (as many at once as there are cores, up to [`READ_AHEAD`] frames ahead,
/// stream order kept); the calling task is the writer: it takes whatever verified frames are
/// waiting (up to [`MAX_BATCH`]) and applies them in one transaction with the cursor of the
/// last. Frames that need the index in order (identity, account, sync, `tooBig`, error)
/// flush the batch before them. One commit per batch instead of one per frame is what lets
/// the index keep up with a relay (issue 17: 10k events/s on 2 cores).
pub async fn ingest<S>(
    index: &Index,
    source: &str,
    messages: S,
    keys: Arc<dyn SigningKeys>,
    max_frame: usize,
) -> Result<(), String>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, String>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Step>(QUEUE);
    let reader = tokio::spawn(read_and_verify(
        source.to_string(),
        messages,
        keys,
        max_frame,
        tx,
    ));
    // The reader goes when the writer does (an error here ends the connection).
    let mut reader = AbortOnDrop(reader);
    let mut last_saved = Instant::now();
    let mut pending_seq: Option<i64> = None;
    let mut steps = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut steps, MAX_BATCH).await > 0 {
        let mut batch: Vec<(String, Vec<RecordChange>)> = Vec::new();
        for step in steps.drain(..) {
            match step {
                Step::Apply { seq, did, changes } => {
                    batch.push((did, changes));
                    pending_seq = Some(seq);
                }
                Step::Skip(seq) => pending_seq = seq.or(pending_seq),
                Step::Ordered(frame) => {
                    if !batch.is_empty() {
                        apply(index, source, &mut batch, pending_seq).await?;
                        last_saved = Instant::now();
                    }
                    if let Frame::Error { error, message } = &frame {
                        tracing::warn!(endpoint = %source, %error, message = ?message, "firehose error frame");
                        if error == "FutureCursor" {
                            // Our cursor is ahead of the source: it was reset (a new PDS, a
                            // relay that lost its log). Replay what it still has from the
                            // start; records are idempotent upserts.
                            tracing::info!(endpoint = %source, "cursor ahead of the source: replaying from 0");
                            index
                                .set_cursor(source, 0)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        return Err(format!("error frame {error}"));
                    }
                    // A database error: do not advance past the frame; reconnect from the
                    // cursor.
                    let seq = handle_ordered(index, frame)
                        .await
                        .map_err(|e| format!("applying a frame: {e}"))?;
                    pending_seq = seq.or(pending_seq);
                }
            }
        }
        if !batch.is_empty() {
            apply(index, source, &mut batch, pending_seq).await?;
            pending_seq = None;
            last_saved = Instant::now();
        }
        // Frames without index changes move the stored cursor now and then.
        if let Some(seq) = pending_seq {
            if last_saved.elapsed() >= IDLE_CURSOR_SAVE {
                index
                    .set_cursor(source, seq)
                    .await
                    .map_err(|e| e.to_string())?;
                pending_seq = None;
                last_saved = Instant::now();
            }
        }
    }
    if let Some(seq) = pending_seq {
        // The stream ended: keep what was read (harmless to replay, cheaper not to).
        let _ = index.set_cursor(source, seq).await;
    }
    match (&mut reader.0).await {
        Ok(result) => result,
        Err(e) => Err(format!("firehose reader: {e}")),
    }
}

/// Apply a batch of verified commits with the cursor in one transaction.
async fn apply(
    index: &Index,
    source: &str,
    batch: &mut Vec<(String, Vec<RecordChange>)>,
    seq: Option<i64>,
) -> Result<(), String> {
    let refs: Vec<(&str, &[RecordChange])> = batch
        .iter()
        .map(|(d, c)| (d.as_str(), c.as_slice()))
        .collect();
    let cursor = seq.map(|s| (source, s));
    index
        .apply_batch(&refs, cursor)
        .await
        .map_err(|e| format!("applying {} frames: {e}", batch.len()))?;
    tracing::debug!(frames = batch.len(), seq = ?seq, "firehose commits indexed");
    batch.clear();
    Ok(())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reader half of [`ingest`]: messages in, [`Step`]s out in stream order.
async fn read_and_verify<S>(
    source: String,
    messages: S,
    keys: Arc<dyn SigningKeys>,
    max_frame: usize,
    tx: tokio::sync::mpsc::Sender<Step>,
) -> Result<(), String>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, String>> + Send + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let verifiers = Arc::new(tokio::sync::Semaphore::new(cpus));
    let budget = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_KIB as usize));
    let failed: Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let steps = {
        let failed = failed.clone();
        let source = source.clone();
        messages
            .take_while(move |m| {
                let ok = match m {
                    Ok(_) => true,
                    Err(e) => {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                        false
                    }
                };
                std::future::ready(ok)
            })
            .map(move |m| {
                let data = m.unwrap_or_default();
                let (keys, verifiers, budget) = (keys.clone(), verifiers.clone(), budget.clone());
                let source = source.clone();
                async move {
                    let kib = (data.len() / 1024 + 1).min(READ_AHEAD_KIB as usize) as u32;
                    let _held = budget.acquire_many(kib).await;
                    prepare(&source, &data, max_frame, keys.as_ref(), &verifiers).await
                }
            })
            .buffered(READ_AHEAD)
    };
    futures_util::pin_mut!(steps);
    while let Some(step) = steps.next().await {
        if tx.send(step).await.is_err() {
            return Ok(()); // the writer is gone (it reports its own error)
        }
    }
    let failure = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Parse one message and, for a relevant commit, check it against its repo's key.
async fn prepare(
    source: &str,
    data: &[u8],
    max_frame: usize,
    keys: &dyn SigningKeys,
    verifiers: &Arc<tokio::sync::Semaphore>,
) -> Step {
    let frame = match parse_frame(data, max_frame) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(endpoint = %source, error = %e, "bad firehose frame skipped");
            return Step::Skip(None);
        }
    };
    crate::metrics::firehose_event(source, frame.seq(), frame.time());
    let c = match frame {
        Frame::Commit(c) if !c.too_big => c,
        Frame::Info { name, message } => {
            tracing::info!(endpoint = %source, %name, message = ?message, "firehose info");
            return Step::Skip(None);
        }
        Frame::Other { seq, .. } => return Step::Skip(seq),
        other => return Step::Ordered(other),
    };
    let relevant = c.ops.iter().any(|o| {
        o.path
            .split_once('/')
            .is_some_and(|(col, _)| COLLECTIONS.contains(&col))
    });
    if !relevant {
        return Step::Skip(Some(c.seq));
    }
    let seq = c.seq;
    match verified(keys, verifiers, c).await {
        Some(v) => Step::Apply {
            seq,
            did: v.did,
            changes: v.changes,
        },
        None => Step::Skip(Some(seq)),
    }
}

/// The frames the writer handles in order, one at a time; the seq to store eventually.
async fn handle_ordered(index: &Index, frame: Frame) -> super::Result<Option<i64>> {
    match frame {
        Frame::Commit(c) => {
            // `tooBig`: the ops are not all in the frame; read the repository instead.
            tracing::info!(did = %c.repo, "tooBig commit: re-reading the repository");
            index.backfill_repo(&c.repo).await?;
            Ok(Some(c.seq))
        }
        Frame::Identity { seq, did, handle } => {
            tracing::debug!(%did, handle = ?handle, "firehose identity event");
            index.resolver().invalidate(&did);
            if index.user_by_handle_or_did(&did).await?.is_some() {
                index.refresh_user(&did).await;
            }
            Ok(Some(seq))
        }
        Frame::Account {
            seq,
            did,
            active,
            status,
        } => {
            if !active && matches!(status.as_deref(), Some("deleted") | Some("takendown")) {
                tracing::info!(%did, status = ?status, "account gone: removing it from the index");
                index.forget_account(&did).await?;
            }
            Ok(Some(seq))
        }
        Frame::Sync { seq, did } => {
            index.backfill_repo(&did).await?;
            Ok(Some(seq))
        }
        Frame::Info { .. } | Frame::Error { .. } => Ok(None),
        Frame::Other { seq, .. } => Ok(seq),
    }
}

/// The commit's changes if its signature checks out (the key looked up once more, past the
/// caches, on failure: key rotation). The check runs on the blocking pool, at most one per
/// core at a time.
async fn verified(
    keys: &dyn SigningKeys,
    verifiers: &Arc<tokio::sync::Semaphore>,
    c: CommitFrame,
) -> Option<VerifiedChanges> {
    let max = c.blocks.len().max(1);
    let c = Arc::new(c);
    for attempt in 0..2 {
        let key = match keys.key(&c.repo, attempt == 1).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                tracing::warn!(did = %c.repo, "firehose commit skipped: no #atproto key");
                return None;
            }
            Err(e) => {
                tracing::warn!(did = %c.repo, error = %e, "firehose commit skipped: DID not resolved");
                return None;
            }
        };
        let result = {
            let _permit = verifiers.acquire().await;
            let c = c.clone();
            tokio::task::spawn_blocking(move || verify_commit(&c, &key, max)).await
        };
        match result {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) if attempt == 1 => {
                tracing::warn!(did = %c.repo, seq = c.seq, error = %e, "firehose commit skipped");
            }
            Ok(Err(_)) => {}
            Err(e) => {
                tracing::warn!(did = %c.repo, error = %e, "firehose commit check failed");
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atproto::repo::{dagcbor, MemoryBlockstore};

    #[test]
    fn verifies_commits_from_a_real_repo() {
        use crate::atproto::repo::{Repo, SigningKey, Write};
        let key = SigningKey::generate_p256();
        let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
        let (mut repo, _) = Repo::create(did, key.clone(), MemoryBlockstore::new()).unwrap();
        let record = |v: serde_json::Value| {
            let ipld = crate::atproto::repo::datamodel::record_from_json(&v).unwrap();
            bytes::Bytes::from(dagcbor::encode(&ipld).unwrap())
        };
        let create = |c: &str, k: &str, v| Write::Create {
            collection: c.into(),
            rkey: k.into(),
            record: record(v),
        };
        let r = repo
            .apply_writes(&[
                create(
                    "io.atcr.sailor.profile",
                    "self",
                    serde_json::json!({"$type": "io.atcr.sailor.profile", "createdAt": "2026-01-01T00:00:00Z"}),
                ),
                create("app.bsky.feed.post", "3kxyz", serde_json::json!({"$type": "app.bsky.feed.post", "text": "hi"})),
            ])
            .unwrap();
        let bytes = crate::pds::encode_commit_frame(12, did, &r, "2026-01-01T00:00:00Z").unwrap();
        let Frame::Commit(c) = parse_frame(&bytes, 1 << 20).unwrap() else {
            panic!("not a commit")
        };
        assert_eq!((c.seq, c.repo.as_str()), (12, did));
        let v = verify_commit(&c, &key.public_key(), 1 << 20).unwrap();
        assert_eq!(v.changes.len(), 1, "only io.atcr.* ops: {v:?}");
        match &v.changes[0] {
            RecordChange::Upsert {
                collection,
                rkey,
                value,
            } => {
                assert_eq!(
                    (collection.as_str(), rkey.as_str()),
                    ("io.atcr.sailor.profile", "self")
                );
                assert_eq!(value["createdAt"], "2026-01-01T00:00:00Z");
            }
            other => panic!("{other:?}"),
        }
        // Another key: refused.
        let other = SigningKey::generate_p256();
        assert!(verify_commit(&c, &other.public_key(), 1 << 20).is_err());
        // A record block swapped for another one: the op no longer matches the tree.
        let mut forged = c.clone();
        forged.ops[0].cid = Some(crate::atproto::repo::cid_for_dag_cbor(b"\xa0"));
        let v = verify_commit(&forged, &key.public_key(), 1 << 20).unwrap();
        assert!(v.changes.is_empty());
    }
}
