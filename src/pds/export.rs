//! `com.atproto.sync.getRepo` as a stream: the CAR is written block by block on a blocking
//! thread into a bounded channel (8 chunks of ~64 KiB), so memory stays flat whatever the
//! repo size and a slow client only slows the walk. Order: header, commit, then the MST in
//! pre-order, each node followed by its records (each record block once). Blocks are
//! immutable and never deleted, so the walk needs no lock once the head is read.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::store::HoldStore;
use super::HoldError;
use crate::atproto::repo::{dagcbor, CarWriter, Cid, Commit, RepoError};
use crate::blob::ChunkStream;

const CHUNK: usize = 64 * 1024;
/// Deeper than any MST over a hold-sized key set (keys sit on layer = leading zero
/// 2-bit groups of their hash); a guard against a corrupt store.
const MAX_NODES_ON_STACK: usize = 1 << 20;

#[derive(Deserialize)]
struct Entry {
    v: Cid,
    t: Option<Cid>,
}

#[derive(Deserialize)]
struct Node {
    l: Option<Cid>,
    e: Vec<Entry>,
}

struct Out {
    buf: Vec<u8>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

/// The receiver went away (client disconnected): stop walking.
struct Gone;

impl Out {
    fn block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Gone> {
        let cid_bytes = cid.to_bytes();
        let mut len = (cid_bytes.len() + data.len()) as u64;
        while len >= 0x80 {
            self.buf.push((len as u8) | 0x80);
            len >>= 7;
        }
        self.buf.push(len as u8);
        self.buf.extend_from_slice(&cid_bytes);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| Gone)
    }
}

fn walk(store: &HoldStore, head: Cid, out: &mut Out) -> Result<Result<(), Gone>, HoldError> {
    let get = |cid: Cid| -> Result<Bytes, HoldError> {
        store
            .get_block(&cid)?
            .ok_or(HoldError::Repo(RepoError::MissingBlock(cid)))
    };
    out.buf.extend(CarWriter::new(&[head])?.finish());
    let commit_bytes = get(head)?;
    let commit = Commit::decode(&commit_bytes).map_err(RepoError::from)?;
    if out.block(&head, &commit_bytes).is_err() {
        return Ok(Err(Gone));
    }
    let mut seen_records = HashSet::new();
    let mut stack = vec![commit.data];
    while let Some(cid) = stack.pop() {
        let bytes = get(cid)?;
        let node: Node = dagcbor::decode(&bytes)
            .map_err(|e| HoldError::Internal(format!("MST node {cid}: {e}")))?;
        if out.block(&cid, &bytes).is_err() {
            return Ok(Err(Gone));
        }
        let mut children = Vec::with_capacity(node.e.len() + 1);
        children.extend(node.l);
        for e in &node.e {
            if seen_records.insert(e.v) {
                let record = get(e.v)?;
                if out.block(&e.v, &record).is_err() {
                    return Ok(Err(Gone));
                }
            }
            children.extend(e.t);
        }
        // Reverse, so the leftmost subtree is walked first (pre-order).
        stack.extend(children.into_iter().rev());
        if stack.len() > MAX_NODES_ON_STACK {
            return Err(HoldError::Internal("MST walk exceeded its bound".into()));
        }
    }
    Ok(out.flush())
}

/// Streams the CAR of the repo at `head`.
pub fn car_stream(store: std::sync::Arc<HoldStore>, head: Cid) -> ChunkStream {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = Out {
            buf: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        if let Err(e) = walk(&store, head, &mut out) {
            tracing::warn!(error = %e, "repo export failed mid-stream");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
