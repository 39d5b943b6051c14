//! The `com.atproto.sync.subscribeRepos` consumer: one task per configured endpoint (a
//! relay or a PDS), each resuming from its cursor in `ingest_cursor`.
//!
//! Frames are parsed and commits verified by the pure [`crate::atproto::firehose`] (fuzzed).
//! For a `#commit` the CAR slice in `blocks` is read with limits, the commit's
//! signature is checked against the `#atproto` key of the repo DID's document (resolved
//! through `atproto/identity`, re-resolved once on failure for key rotation), each op on an
//! `io.atcr.*` collection is checked against the signed MST root, and the changes are applied
//! with the new cursor in one transaction. `tooBig` commits and `#sync` events re-read the
//! repository with the backfill; `#identity` re-resolves the DID; `#account` with status
//! `deleted`/`takendown` forgets the account. A frame that does not check out is logged and
//! skipped; the connection is retried with exponential backoff (1 s .. 60 s). A
//! `FutureCursor` error (the source was reset, e.g. a new PDS on the same URL) makes the
//! consumer replay from seq 0. Frames without `io.atcr.*` changes advance the stored cursor
//! at most every 5 s (replaying them is harmless).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::apply::{RecordChange, COLLECTIONS};
use super::Index;
use crate::atproto::firehose::{self, OpChange};
pub use crate::atproto::firehose::{parse_frame, CommitFrame, CommitOp, Frame, FrameError};

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
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tracing::info!(%endpoint, cursor = ?cursor, "firehose connected");
    index.set_connected(endpoint, true);
    let mut last_saved = Instant::now();
    let mut pending_seq: Option<i64> = None;
    loop {
        // Relays send frames continuously; a PDS may be idle for long: no read timeout,
        // but websocket pings keep the TCP connection checked.
        let msg = match ws.next().await {
            None => return Ok(()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => m,
        };
        use tokio_tungstenite::tungstenite::Message;
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        let frame = match parse_frame(&data, max_frame) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "bad firehose frame skipped");
                continue;
            }
        };
        crate::metrics::firehose_event(endpoint, frame.seq(), frame.time());
        if let Frame::Error { error, message } = &frame {
            tracing::warn!(%endpoint, %error, message = ?message, "firehose error frame");
            if error == "FutureCursor" {
                // Our cursor is ahead of the source: it was reset (a new PDS, a relay that
                // lost its log). Replay what it still has from the start; records are
                // idempotent upserts.
                tracing::info!(%endpoint, "cursor ahead of the source: replaying from 0");
                index
                    .set_cursor(endpoint, 0)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Err(format!("error frame {error}"));
        }
        match handle_frame(index, endpoint, frame).await {
            Ok(Handled::Saved) => {
                pending_seq = None;
                last_saved = Instant::now();
            }
            Ok(Handled::Unsaved(seq)) => pending_seq = seq.or(pending_seq),
            Err(e) => {
                // A database error: do not advance past the frame; reconnect from the cursor.
                return Err(format!("applying a frame: {e}"));
            }
        }
        if let Some(seq) = pending_seq {
            if last_saved.elapsed() >= IDLE_CURSOR_SAVE {
                index
                    .set_cursor(endpoint, seq)
                    .await
                    .map_err(|e| e.to_string())?;
                pending_seq = None;
                last_saved = Instant::now();
            }
        }
    }
}

enum Handled {
    /// The cursor was stored with the frame's changes.
    Saved,
    /// Nothing for the index (or skipped); the seq to store eventually.
    Unsaved(Option<i64>),
}

async fn handle_frame(index: &Index, endpoint: &str, frame: Frame) -> super::Result<Handled> {
    match frame {
        Frame::Commit(c) => {
            let relevant = c.ops.iter().any(|o| {
                o.path
                    .split_once('/')
                    .is_some_and(|(col, _)| COLLECTIONS.contains(&col))
            });
            if !relevant && !c.too_big {
                return Ok(Handled::Unsaved(Some(c.seq)));
            }
            if c.too_big {
                tracing::info!(did = %c.repo, "tooBig commit: re-reading the repository");
                index.backfill_repo(&c.repo).await?;
                return Ok(Handled::Unsaved(Some(c.seq)));
            }
            match verified(index, &c).await {
                Some(v) => {
                    index
                        .apply_records(&v.did, &v.changes, Some((endpoint, c.seq)))
                        .await?;
                    tracing::debug!(did = %v.did, seq = c.seq, changes = v.changes.len(), "firehose commit indexed");
                    Ok(Handled::Saved)
                }
                None => Ok(Handled::Unsaved(Some(c.seq))),
            }
        }
        Frame::Identity { seq, did, handle } => {
            tracing::debug!(%did, handle = ?handle, "firehose identity event");
            index.resolver().invalidate(&did);
            if index.user_by_handle_or_did(&did).await?.is_some() {
                index.refresh_user(&did).await;
            }
            Ok(Handled::Unsaved(Some(seq)))
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
            Ok(Handled::Unsaved(Some(seq)))
        }
        Frame::Sync { seq, did } => {
            index.backfill_repo(&did).await?;
            Ok(Handled::Unsaved(Some(seq)))
        }
        Frame::Info { name, message } => {
            tracing::info!(%endpoint, %name, message = ?message, "firehose info");
            Ok(Handled::Unsaved(None))
        }
        Frame::Error { .. } => Ok(Handled::Unsaved(None)),
        Frame::Other { seq, .. } => Ok(Handled::Unsaved(seq)),
    }
}

/// The commit's changes if its signature checks out (the key re-resolved once on failure).
async fn verified(index: &Index, c: &CommitFrame) -> Option<VerifiedChanges> {
    let max = c.blocks.len().max(1);
    for attempt in 0..2 {
        if attempt == 1 {
            index.resolver().invalidate(&c.repo);
        }
        let key = match index.resolver().resolve_did(&c.repo).await {
            Ok(doc) => doc.signing_key(),
            Err(e) => {
                tracing::warn!(did = %c.repo, error = %e, "firehose commit skipped: DID not resolved");
                return None;
            }
        };
        let Some(key) = key else {
            tracing::warn!(did = %c.repo, "firehose commit skipped: no #atproto key");
            return None;
        };
        match verify_commit(c, &key, max) {
            Ok(v) => return Some(v),
            Err(e) if attempt == 1 => {
                tracing::warn!(did = %c.repo, seq = c.seq, error = %e, "firehose commit skipped");
            }
            Err(_) => {}
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
