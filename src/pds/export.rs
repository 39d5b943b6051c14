//! `com.atproto.sync.getRepo` as a stream: the CAR is written block by block on a blocking
//! thread into a bounded channel (8 chunks of ~64 KiB), so memory stays flat whatever the
//! repo size and a slow client only slows the walk. Order: header, commit, then the MST in
//! pre-order, each node followed by its records. Blocks are immutable and never deleted, so
//! the walk needs no lock once the head is read.
//!
//! Memory does not grow with the repo: the walk keeps the MST path it is on (depth x
//! fanout CIDs), one chunk, and a bounded set of the record CIDs written last
//! ([`RECENT_RECORDS`]) so a record block shared by neighbouring keys is written once; a
//! block shared by keys further apart may be written twice, which CAR readers accept
//! (CARv1 allows duplicate blocks; ours keeps one). `atcr hold export` writes the same walk
//! to stdout ([`write_car_to`]).

use std::collections::HashSet;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::store::HoldStore;
use super::HoldError;
use crate::atproto::repo::{dagcbor, CarWriter, Cid, Commit, RepoError};
use crate::blob::ChunkStream;

const CHUNK: usize = 64 * 1024;
/// Record CIDs remembered for de-duplication (then forgotten all at once): ~3 MiB at most.
const RECENT_RECORDS: usize = 32 * 1024;
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

struct Out<'a> {
    buf: Vec<u8>,
    /// Takes each full chunk; `Err(Gone)` stops the walk.
    emit: Box<dyn FnMut(Bytes) -> Result<(), Gone> + 'a>,
}

/// The receiver went away (client disconnected): stop walking.
struct Gone;

impl Out<'_> {
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
        (self.emit)(chunk)
    }
}

fn walk(store: &HoldStore, head: Cid, out: &mut Out<'_>) -> Result<Result<(), Gone>, HoldError> {
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
    let mut seen_records = HashSet::with_capacity(RECENT_RECORDS);
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
            if seen_records.len() >= RECENT_RECORDS {
                seen_records.clear();
            }
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
        let chunks = tx.clone();
        let mut out = Out {
            buf: Vec::with_capacity(CHUNK),
            emit: Box::new(move |chunk| chunks.blocking_send(Ok(chunk)).map_err(|_| Gone)),
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

/// The same CAR as [`car_stream`], written to `w` on the calling thread (blocking). Returns
/// the bytes written.
pub fn write_car_to(
    store: &HoldStore,
    head: Cid,
    w: &mut dyn std::io::Write,
) -> Result<u64, HoldError> {
    let mut written = 0u64;
    let mut failed: Option<std::io::Error> = None;
    let result = {
        let mut out = Out {
            buf: Vec::with_capacity(CHUNK),
            emit: Box::new(|chunk: Bytes| {
                written += chunk.len() as u64;
                w.write_all(&chunk).map_err(|e| {
                    failed = Some(e);
                    Gone
                })
            }),
        };
        walk(store, head, &mut out)?
    };
    match (result, failed) {
        (Ok(()), _) => Ok(written),
        (Err(Gone), e) => Err(HoldError::Internal(format!(
            "writing the CAR: {}",
            e.map(|e| e.to_string()).unwrap_or_default()
        ))),
    }
}
