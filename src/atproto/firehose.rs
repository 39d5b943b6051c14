//! `com.atproto.sync.subscribeRepos` frames, pure: no I/O, no index, fuzzed (target
//! `firehose`).
//!
//! A frame is two DAG-CBOR items, a header `{op, t}` and a body ([`parse_frame`]).
//! [`verify_commit`] reads a `#commit`'s CAR slice with limits, checks the commit's
//! signature with the repo's key and keeps the ops on the wanted collections that the signed
//! MST confirms. The index's consumer (`index/firehose.rs`) does the I/O around it.

use serde::Deserialize;
use serde_json::Value;

use crate::atproto::repo::car::{read_car, CarLimits};
use crate::atproto::repo::dagcbor::{self, DecodeLimits};
use crate::atproto::repo::datamodel::ipld_to_json;
use crate::atproto::repo::{Cid, Commit, MemoryBlockstore, Mst, PublicKey};

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
    /// When the source stamped the event (RFC 3339), for the consumer's lag.
    pub time: Option<String>,
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
    /// The event's time stamp (commits only).
    pub fn time(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => c.time.as_deref(),
            _ => None,
        }
    }

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
    #[serde(default)]
    time: Option<String>,
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
                time: c.time,
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

/// One record change of a verified commit.
#[derive(Debug, Clone, PartialEq)]
pub enum OpChange {
    Upsert {
        collection: String,
        rkey: String,
        /// The record as JSON (the ATProto data model's JSON form).
        value: Value,
    },
    Delete {
        collection: String,
        rkey: String,
    },
}

/// The changes of a commit whose signature and ops checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCommit {
    pub did: String,
    pub changes: Vec<OpChange>,
}

/// Checks a commit frame against the repo's signing key and extracts the changes on the
/// collections `wanted` accepts. Ops that the signed MST does not confirm are dropped.
pub fn verify_commit(
    c: &CommitFrame,
    key: &PublicKey,
    max_bytes: usize,
    wanted: impl Fn(&str) -> bool,
) -> Result<VerifiedCommit, FrameError> {
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
        if !wanted(collection) {
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
                changes.push(OpChange::Upsert {
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
                changes.push(OpChange::Delete {
                    collection: collection.into(),
                    rkey: rkey.into(),
                });
            }
            _ => {}
        }
    }
    Ok(VerifiedCommit {
        did: c.repo.clone(),
        changes,
    })
}

/// Fuzz entry point: arbitrary bytes are parsed as a frame and, when they form a commit,
/// verified against a fixed key (every collection wanted); only errors, never panics.
pub fn fuzz_frame(data: &[u8]) {
    if let Ok(Frame::Commit(c)) = parse_frame(data, 1 << 20) {
        if let Some(key) = crate::atproto::repo::fuzz::fuzz_key() {
            let _ = verify_commit(&c, &key, 1 << 20, |_| true);
        }
    }
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
}
