//! Merkle Search Tree (ATProto repo spec): keys `<collection>/<rkey>` are placed on the
//! layer given by the number of leading zero 2-bit groups of sha256(key) (fanout 4).
//! The shape depends only on the key set, so the root CID is a pure function of content.

mod diff;
mod node;
mod proof;
mod tree;

pub use diff::{diff_trees, MstDiff};
pub use node::{common_prefix_len, key_height};
pub use tree::Mst;

use super::blockstore::BlockstoreError;
use super::cid::Cid;
use super::dagcbor::DagCborError;

/// Longest MST key accepted; keeps prefix-compressed nodes and proofs bounded.
pub const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MstError {
    #[error("invalid MST key {0:?}")]
    InvalidKey(String),
    #[error("MST block {0} missing from the blockstore")]
    MissingBlock(Cid),
    #[error("malformed MST node {cid}: {reason}")]
    BadNode { cid: Cid, reason: &'static str },
    #[error("MST node decode failed: {0}")]
    Decode(#[from] DagCborError),
    #[error("MST deeper than any valid tree")]
    TooDeep,
    #[error(transparent)]
    Store(#[from] BlockstoreError),
}

/// Checks the repo-path shape: `<collection>/<rkey>`, printable ASCII record-key chars.
pub fn validate_key(key: &str) -> Result<(), MstError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && matches!(key.split_once('/'), Some((c, r)) if !c.is_empty() && !r.is_empty() && !r.contains('/'))
        && key.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'.' | b':' | b'-' | b'/')
        });
    if ok {
        Ok(())
    } else {
        Err(MstError::InvalidKey(key.to_string()))
    }
}
