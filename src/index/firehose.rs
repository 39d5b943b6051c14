//! The `com.atproto.sync.subscribeRepos` consumer: one task per configured endpoint (a
//! relay or a PDS), each resuming from its cursor in `ingest_cursor`.
//!
//! A frame is two DAG-CBOR items, a header `{op, t}` and a body ([`parse_frame`], pure and
//! fuzzed). For a `#commit` the CAR slice in `blocks` is read with limits, the commit's
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
use serde::Deserialize;
use serde_json::Value;

use super::apply::{RecordChange, COLLECTIONS};
use super::Index;
use crate::atproto::repo::car::{read_car, CarLimits};
use crate::atproto::repo::dagcbor::{self, DecodeLimits};
use crate::atproto::repo::datamodel::ipld_to_json;
use crate::atproto::repo::{Cid, Commit, MemoryBlockstore, Mst};

/// Frames without index-relevant changes move the stored cursor at most this often.
const IDLE_CURSOR_SAVE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("frame header: {0}")]
    Header(String),
    #[error("frame body: {0}")]
    Body(String),
    #[error("commit: {0}")]
    Commit(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommitOp {
    pub action: String,
    pub path: String,
    pub cid: Option<Cid>,
}

/// A `#commit` body (the fields the index uses).
#[derive(Debug, Clone, PartialEq)]
pub struct CommitFrame {
    pub seq: i64,
    pub repo: String,
    pub commit: Cid,
    pub rev: String,
    pub too_big: bool,
    pub blocks: Vec<u8>,
    pub ops: Vec<CommitOp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Commit(CommitFrame),
    Identity {
        seq: i64,
        did: String,
        handle: Option<String>,
    },
    Account {
        seq: i64,
        did: String,
        active: bool,
        status: Option<String>,
    },
    /// `#sync`: the repo's state was reset; re-read it.
    Sync {
        seq: i64,
        did: String,
    },
    Info {
        name: String,
        message: Option<String>,
    },
    /// `op: -1`.
    Error {
        error: String,
        message: Option<String>,
    },
    /// A message type this consumer does not use (its seq still advances the cursor).
    Other {
        seq: Option<i64>,
        t: String,
    },
}

impl Frame {
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Identity { seq, .. } | Frame::Account { seq, .. } | Frame::Sync { seq, .. } => {
                Some(*seq)
            }
            Frame::Other { seq, .. } => *seq,
            Frame::Info { .. } | Frame::Error { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    op: i64,
    #[serde(default)]
    t: Option<String>,
}

#[derive(Deserialize)]
struct OpIn {
    action: String,
    path: String,
    #[serde(default)]
    cid: Option<Cid>,
}

#[derive(Deserialize)]
struct CommitIn {
    seq: i64,
    repo: String,
    commit: Cid,
    rev: String,
    #[serde(rename = "tooBig", default)]
    too_big: bool,
    #[serde(with = "serde_bytes", default)]
    blocks: Vec<u8>,
    #[serde(default)]
    ops: Vec<OpIn>,
}

#[derive(Deserialize)]
struct IdentityIn {
    seq: i64,
    did: String,
    #[serde(default)]
    handle: Option<String>,
}

#[derive(Deserialize)]
struct AccountIn {
    seq: i64,
    did: String,
    active: bool,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct SeqDid {
    seq: i64,
    did: String,
}

#[derive(Deserialize)]
struct InfoIn {
    name: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorIn {
    error: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct SeqOnly {
    #[serde(default)]
    seq: Option<i64>,
}

/// Most ops one commit may carry (the lexicon allows 200; relays may batch more).
const MAX_OPS: usize = 1000;

/// Parses one websocket binary message. Bounded: `max` bytes, CBOR nesting depth limited,
/// at most [`MAX_OPS`] ops.
pub fn parse_frame(bytes: &[u8], max: usize) -> Result<Frame, FrameError> {
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let limits = DecodeLimits {
        max_size: max,
        max_depth: dagcbor::MAX_DEPTH,
    };
    let header_len = dagcbor::scan_item(bytes, limits.max_depth)
        .map_err(|e| FrameError::Header(e.to_string()))?;
    let header: Header = dagcbor::decode_with_limits(&bytes[..header_len], limits)
        .map_err(|e| FrameError::Header(e.to_string()))?;
    let body = &bytes[header_len..];
    fn decode<T: serde::de::DeserializeOwned>(b: &[u8], l: DecodeLimits) -> Result<T, FrameError> {
        dagcbor::decode_with_limits(b, l).map_err(|e| FrameError::Body(e.to_string()))
    }
    if header.op == -1 {
        let e: ErrorIn = decode(body, limits)?;
        return Ok(Frame::Error {
            error: e.error,
            message: e.message,
        });
    }
    if header.op != 1 {
        return Err(FrameError::Header(format!("unknown op {}", header.op)));
    }
    let t = header
        .t
        .ok_or_else(|| FrameError::Header("message frame without t".into()))?;
    Ok(match t.as_str() {
        "#commit" => {
            let c: CommitIn = decode(body, limits)?;
            if c.ops.len() > MAX_OPS {
                return Err(FrameError::Body(format!("{} ops", c.ops.len())));
            }
            Frame::Commit(CommitFrame {
                seq: c.seq,
                repo: c.repo,
                commit: c.commit,
                rev: c.rev,
                too_big: c.too_big,
                blocks: c.blocks,
                ops: c
                    .ops
                    .into_iter()
                    .map(|o| CommitOp {
                        action: o.action,
                        path: o.path,
                        cid: o.cid,
                    })
                    .collect(),
            })
        }
        "#identity" => {
            let i: IdentityIn = decode(body, limits)?;
            Frame::Identity {
                seq: i.seq,
                did: i.did,
                handle: i.handle,
            }
        }
        "#account" => {
            let a: AccountIn = decode(body, limits)?;
            Frame::Account {
                seq: a.seq,
                did: a.did,
                active: a.active,
                status: a.status,
            }
        }
        "#sync" => {
            let s: SeqDid = decode(body, limits)?;
            Frame::Sync {
                seq: s.seq,
                did: s.did,
            }
        }
        "#info" => {
            let i: InfoIn = decode(body, limits)?;
            Frame::Info {
                name: i.name,
                message: i.message,
            }
        }
        _ => {
            let s: SeqOnly = decode(body, limits).unwrap_or(SeqOnly { seq: None });
            Frame::Other { seq: s.seq, t }
        }
    })
}

/// What a verified commit means for the index.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedChanges {
    pub did: String,
    pub changes: Vec<RecordChange>,
}

/// Checks a commit frame against the repo's signing key and extracts the `io.atcr.*`
/// changes. Ops that the signed MST does not confirm are dropped.
pub fn verify_commit(
    c: &CommitFrame,
    key: &crate::atproto::repo::PublicKey,
    max_bytes: usize,
) -> Result<VerifiedChanges, FrameError> {
    let err = |m: String| FrameError::Commit(m);
    let limits = CarLimits {
        max_blocks: 10_000,
        max_total_bytes: max_bytes as u64,
        ..CarLimits::default()
    };
    let (_, blocks) = read_car(&c.blocks, limits).map_err(|e| err(format!("CAR: {e}")))?;
    let commit_bytes = blocks
        .get(&c.commit)
        .ok_or_else(|| err("commit block missing".into()))?;
    let commit = Commit::decode(commit_bytes).map_err(|e| err(e.to_string()))?;
    if commit.did != c.repo {
        return Err(err(format!(
            "commit is for {}, frame says {}",
            commit.did, c.repo
        )));
    }
    commit
        .verify(key)
        .map_err(|e| err(format!("signature: {e}")))?;
    let store = MemoryBlockstore::from_blocks(blocks.clone());
    let mst = Mst::load(&store, commit.data).map_err(|e| err(format!("MST root: {e}")))?;
    let mut changes = Vec::new();
    for op in &c.ops {
        let Some((collection, rkey)) = op.path.split_once('/') else {
            continue;
        };
        if !COLLECTIONS.contains(&collection) {
            continue;
        }
        let in_tree = mst.get(&store, &op.path);
        match op.action.as_str() {
            "create" | "update" => {
                let Some(cid) = op.cid else { continue };
                if !matches!(in_tree, Ok(Some(t)) if t == cid) {
                    tracing::info!(did = %c.repo, path = %op.path, "firehose op not in the signed tree; skipped");
                    continue;
                }
                let Some(bytes) = blocks.get(&cid) else {
                    continue;
                };
                let Ok(ipld) = dagcbor::decode_ipld(bytes) else {
                    continue;
                };
                let value: Value = ipld_to_json(&ipld);
                changes.push(RecordChange::Upsert {
                    collection: collection.into(),
                    rkey: rkey.into(),
                    value,
                });
            }
            "delete" => {
                // A delete is refused only when the signed tree still holds the record;
                // a partial tree (missing nodes) cannot prove either way.
                if matches!(in_tree, Ok(Some(_))) {
                    continue;
                }
                changes.push(RecordChange::Delete {
                    collection: collection.into(),
                    rkey: rkey.into(),
                });
            }
            _ => {}
        }
    }
    Ok(VerifiedChanges {
        did: c.repo.clone(),
        changes,
    })
}

/// Fuzz entry point: arbitrary bytes are parsed as a frame and, when they form a commit,
/// verified against a fixed key; only errors, never panics.
pub fn fuzz_frame(data: &[u8]) {
    if let Ok(Frame::Commit(c)) = parse_frame(data, 1 << 20) {
        if let Ok(key) = crate::atproto::repo::PublicKey::from_did_key(
            "did:key:zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo",
        ) {
            let _ = verify_commit(&c, &key, 1 << 20);
        }
    }
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

    fn frame(header: &impl serde::Serialize, body: &impl serde::Serialize) -> Vec<u8> {
        let mut out = dagcbor::encode(header).unwrap();
        out.extend(dagcbor::encode(body).unwrap());
        out
    }

    #[test]
    fn parses_frames_and_refuses_bad_ones() {
        let f = frame(
            &serde_json::json!({"op": 1, "t": "#identity"}),
            &serde_json::json!({"seq": 5, "did": "did:plc:x", "handle": "a.test", "time": "t"}),
        );
        assert_eq!(
            parse_frame(&f, 1024).unwrap(),
            Frame::Identity {
                seq: 5,
                did: "did:plc:x".into(),
                handle: Some("a.test".into())
            }
        );
        let f = frame(
            &serde_json::json!({"op": 1, "t": "#account"}),
            &serde_json::json!({"seq": 6, "did": "did:plc:x", "active": false, "status": "deleted"}),
        );
        assert!(matches!(
            parse_frame(&f, 1024).unwrap(),
            Frame::Account {
                seq: 6,
                active: false,
                ..
            }
        ));
        let f = frame(
            &serde_json::json!({"op": -1}),
            &serde_json::json!({"error": "FutureCursor", "message": "m"}),
        );
        assert!(
            matches!(parse_frame(&f, 1024).unwrap(), Frame::Error { error, .. } if error == "FutureCursor")
        );
        let f = frame(
            &serde_json::json!({"op": 1, "t": "#labels"}),
            &serde_json::json!({"seq": 9}),
        );
        assert_eq!(
            parse_frame(&f, 1024).unwrap(),
            Frame::Other {
                seq: Some(9),
                t: "#labels".into()
            }
        );
        assert!(matches!(
            parse_frame(&f, 4),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_frame(&[0xff, 0x00], 1024),
            Err(FrameError::Header(_))
        ));
        let id = frame(
            &serde_json::json!({"op": 1, "t": "#identity"}),
            &serde_json::json!({"seq": 5, "did": "did:plc:x"}),
        );
        assert!(matches!(
            parse_frame(&id[..id.len() - 1], 1024),
            Err(FrameError::Body(_))
        ));
        let mut trailing = id.clone();
        trailing.push(0);
        assert!(matches!(
            parse_frame(&trailing, 1024),
            Err(FrameError::Body(_))
        ));
        let f = frame(&serde_json::json!({"op": 2}), &serde_json::json!({}));
        assert!(matches!(parse_frame(&f, 1024), Err(FrameError::Header(_))));
        // Random garbage never panics.
        for n in 0..2000u32 {
            let bytes: Vec<u8> = (0..(n % 64))
                .map(|i| (n.wrapping_mul(31) ^ (i * 7)) as u8)
                .collect();
            fuzz_frame(&bytes);
        }
    }

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
