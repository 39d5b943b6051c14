//! The hold's carstore on redb (`<data_dir>/hold.redb`).
//!
//! Tables:
//! ```text
//! blocks  CID bytes -> block bytes     (every repo block ever written; no GC yet)
//! meta    "head" -> CID bytes, "rev" -> rev TID, "did" -> repo DID
//! events  seq (u64, from 1) -> one encoded firehose frame (header + #commit, #sync,
//!                                #identity or #account body)
//! uploads upload id -> JSON state of an io.atcr.hold multipart upload (hold/uploads.rs)
//! completed_uploads digest -> unix time it was completed through the hold API
//! record_blobs (record path, blob CID) -> rev of the commit that wrote the record
//! layer_*  derived tables over the io.atcr.hold.layer records (see `layer_index`)
//! ```
//! A logical change (a commit) is written by [`HoldStore::commit_change`]: its blocks, the
//! new head and rev, its sequenced event and the changes of the derived tables
//! (`record_blobs`, `layer_*`) in **one** write transaction, so a crash leaves
//! either the old repo or the new one, never a head pointing at missing blocks or a commit
//! without its event.
//!
//! Every method blocks; async callers go through [`HoldStore::run`] (spawn_blocking).
//! [`StagedStore`] is the [`Blockstore`] the in-memory [`Repo`](crate::atproto::repo::Repo)
//! writes to: it keeps new blocks in memory until the change is committed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};

use crate::atproto::repo::{BlockMap, Blockstore, BlockstoreError, Cid};

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const META_TABLE: TableDefinition<&str, &[u8]> = META;
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// Digests completed through the hold's upload API -> unix time of completion.
const COMPLETED: TableDefinition<&str, u64> = TableDefinition::new("completed_uploads");
/// (record path, blob CID) -> rev of the commit that wrote the record: the repo's blobs for
/// `com.atproto.sync.listBlobs`, kept in the transaction of each commit.
const RECORD_BLOBS: TableDefinition<(&str, &str), &str> = TableDefinition::new("record_blobs");

#[derive(Debug, thiserror::Error)]
#[error("hold store: {0}")]
pub struct HoldStoreError(pub String);

macro_rules! impl_from {
    ($($t:ty),*) => {$(
        impl From<$t> for HoldStoreError {
            fn from(e: $t) -> Self { HoldStoreError(e.to_string()) }
        }
    )*};
}
impl_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<HoldStoreError> for BlockstoreError {
    fn from(e: HoldStoreError) -> Self {
        BlockstoreError::Backend(Box::new(e))
    }
}

/// The persisted repo head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub did: String,
    pub commit: Cid,
    pub rev: String,
}

pub struct HoldStore {
    db: Arc<Database>,
}

/// Meta key set once `record_blobs` covers the whole repo.
const BLOB_REFS_MARKER: &str = "record_blobs_ready";

/// Builds one firehose frame from the seq it is given.
pub type EventMaker<'a> = &'a dyn Fn(u64) -> Result<Vec<u8>, HoldStoreError>;

/// The blobs one record references after a commit (empty: the record was deleted or names
/// none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRefs {
    pub path: String,
    pub cids: Vec<String>,
}

fn replace_blob_refs(
    txn: &redb::WriteTransaction,
    refs: &[BlobRefs],
    rev: &str,
) -> Result<(), HoldStoreError> {
    if refs.is_empty() {
        return Ok(());
    }
    let mut t = txn.open_table(RECORD_BLOBS)?;
    for r in refs {
        let old: Vec<String> = t
            .range((r.path.as_str(), "")..)?
            .map_while(|row| {
                let (k, _) = row.ok()?;
                let (path, cid) = k.value();
                (path == r.path).then(|| cid.to_string())
            })
            .collect();
        for cid in old {
            t.remove((r.path.as_str(), cid.as_str()))?;
        }
        for cid in &r.cids {
            t.insert((r.path.as_str(), cid.as_str()), rev)?;
        }
    }
    Ok(())
}

/// Appends events with the next seqs inside `txn`.
fn sequence(
    txn: &redb::WriteTransaction,
    make_events: &[EventMaker<'_>],
) -> Result<Vec<(u64, Vec<u8>)>, HoldStoreError> {
    let mut out = Vec::with_capacity(make_events.len());
    if make_events.is_empty() {
        return Ok(out);
    }
    let mut e = txn.open_table(EVENTS)?;
    let mut seq = e.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    for make in make_events {
        seq += 1;
        let bytes = make(seq)?;
        e.insert(seq, bytes.as_slice())?;
        out.push((seq, bytes));
    }
    Ok(out)
}

impl HoldStore {
    pub fn open(path: &Path) -> Result<Arc<HoldStore>, HoldStoreError> {
        let db = crate::redb_file::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => HoldStoreError(format!(
                "{} is in use by another atcr process (stop `atcr serve` first)",
                path.display()
            )),
            e => e.into(),
        })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(BLOCKS)?;
            txn.open_table(META)?;
            txn.open_table(EVENTS)?;
            txn.open_table(UPLOADS)?;
            txn.open_table(COMPLETED)?;
            txn.open_table(RECORD_BLOBS)?;
            super::layer_index::apply_open_all(&txn)?;
        }
        txn.commit()?;
        Ok(Arc::new(HoldStore { db }))
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    /// Runs blocking store work on the blocking pool.
    pub async fn run<T: Send + 'static, E: From<HoldStoreError> + Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<HoldStore>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| E::from(HoldStoreError(format!("store task failed: {e}"))))?
    }

    pub fn head(&self) -> Result<Option<Head>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, HoldStoreError> {
            Ok(t.get(k)?.map(|v| v.value().to_vec()))
        };
        let (Some(cid), Some(rev), Some(did)) = (get("head")?, get("rev")?, get("did")?) else {
            return Ok(None);
        };
        let commit =
            Cid::try_from(cid.as_slice()).map_err(|e| HoldStoreError(format!("bad head: {e}")))?;
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| HoldStoreError("bad meta".into()));
        Ok(Some(Head {
            did: text(did)?,
            commit,
            rev: text(rev)?,
        }))
    }

    /// One logical change in one write transaction: the blocks, the new head, the derived
    /// rows of the records it changed (`record_blobs`, the layer index), and the events
    /// (each built from the seq it is assigned, in order: consecutive seqs). Returns the
    /// assigned seqs and the event bytes.
    pub fn commit_change(
        &self,
        blocks: &BlockMap,
        head: &Head,
        blob_refs: &[BlobRefs],
        layers: &[super::layer_index::LayerChange],
        make_events: &[EventMaker<'_>],
    ) -> Result<Vec<(u64, Vec<u8>)>, HoldStoreError> {
        let txn = self.db.begin_write()?;
        let out;
        {
            replace_blob_refs(&txn, blob_refs, &head.rev)?;
            super::layer_index::apply(&txn, layers)?;
            let mut t = txn.open_table(BLOCKS)?;
            for (cid, data) in blocks {
                t.insert(cid.to_bytes().as_slice(), data.as_ref())?;
            }
            let mut m = txn.open_table(META)?;
            m.insert("head", head.commit.to_bytes().as_slice())?;
            m.insert("rev", head.rev.as_bytes())?;
            m.insert("did", head.did.as_bytes())?;
            out = sequence(&txn, make_events)?;
        }
        txn.commit()?;
        Ok(out)
    }

    /// Events that go with no repo change (`#identity`, `#account`), sequenced in one
    /// transaction, together with a meta value (what was announced).
    pub fn append_events(
        &self,
        make_events: &[EventMaker<'_>],
        meta: Option<(&str, &[u8])>,
    ) -> Result<Vec<(u64, Vec<u8>)>, HoldStoreError> {
        let txn = self.db.begin_write()?;
        let out = sequence(&txn, make_events)?;
        if let Some((k, v)) = meta {
            txn.open_table(META)?.insert(k, v)?;
        }
        txn.commit()?;
        Ok(out)
    }

    /// `com.atproto.sync.listBlobs`: distinct blob CIDs referenced by records written at a
    /// rev after `since` (all with `None`), in CID order, after `cursor`, at most `limit`.
    pub fn list_blobs(
        &self,
        since: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORD_BLOBS)?;
        let mut cids = std::collections::BTreeSet::new();
        for row in t.iter()? {
            let (k, rev) = row?;
            if since.is_some_and(|s| rev.value() <= s) {
                continue;
            }
            let cid = k.value().1;
            if cursor.is_some_and(|c| cid <= c) {
                continue;
            }
            cids.insert(cid.to_string());
        }
        Ok(cids.into_iter().take(limit).collect())
    }

    /// Fills `record_blobs` for records written before it existed (once; in one
    /// transaction with the marker).
    pub fn backfill_blob_refs(&self, refs: &[BlobRefs], rev: &str) -> Result<(), HoldStoreError> {
        let txn = self.db.begin_write()?;
        replace_blob_refs(&txn, refs, rev)?;
        txn.open_table(META)?
            .insert(BLOB_REFS_MARKER, b"1".as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Whether `record_blobs` covers every record (false for a repo from before it).
    pub fn blob_refs_ready(&self) -> Result<bool, HoldStoreError> {
        Ok(self.get_meta(BLOB_REFS_MARKER)?.is_some())
    }

    /// Stores (or replaces) the state of a hold upload.
    pub fn put_upload(&self, id: &str, state: &[u8]) -> Result<(), HoldStoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.insert(id, state)?;
        txn.commit()?;
        Ok(())
    }

    pub fn delete_upload(&self, id: &str) -> Result<(), HoldStoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    pub fn list_uploads(&self) -> Result<Vec<(String, Vec<u8>)>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// A small value kept beside the repo head (not part of the repo).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        let value = t.get(key)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), HoldStoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// Records that `digest` was completed at `now` (unix seconds), and forgets completions
    /// from before `forget_before`.
    pub fn note_completed(
        &self,
        digest: &str,
        now: u64,
        forget_before: u64,
    ) -> Result<(), HoldStoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(COMPLETED)?;
            t.retain(|_, at| at >= forget_before)?;
            t.insert(digest, now)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Digests completed at or after `since` (unix seconds).
    pub fn completed_since(&self, since: u64) -> Result<Vec<String>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(COMPLETED)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (digest, at) = item?;
            if at.value() >= since {
                out.push(digest.value().to_string());
            }
        }
        Ok(out)
    }

    /// Highest assigned event seq (0 when there are none).
    pub fn last_seq(&self) -> Result<u64, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
        Ok(last)
    }

    /// Up to `limit` events with seq > `after`, in order.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in t.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, HoldStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOCKS)?;
        Ok(t.get(cid.to_bytes().as_slice())?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }
}

/// Writing blocks directly (one transaction per call) keeps `HoldStore` a complete
/// [`Blockstore`]; the hold itself writes through [`StagedStore`] + `commit_change`.
impl Blockstore for HoldStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        Ok(self.get_block(cid)?)
    }

    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError> {
        let run = || -> Result<(), HoldStoreError> {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(BLOCKS)?;
                for (cid, data) in blocks {
                    t.insert(cid.to_bytes().as_slice(), data.as_ref())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        Ok(run()?)
    }
}

/// Reads from redb, keeps writes in memory until [`StagedStore::take_pending`] hands them to
/// `commit_change`. Only the single writer (under the hold's lock) ever has pending blocks.
pub struct StagedStore {
    inner: Arc<HoldStore>,
    pending: Mutex<BlockMap>,
}

#[derive(Debug, thiserror::Error)]
#[error("staged blockstore lock poisoned")]
struct Poisoned;

impl StagedStore {
    pub fn new(inner: Arc<HoldStore>) -> StagedStore {
        StagedStore {
            inner,
            pending: Mutex::new(BlockMap::new()),
        }
    }

    pub fn take_pending(&self) -> BlockMap {
        match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    pub fn inner(&self) -> &Arc<HoldStore> {
        &self.inner
    }
}

impl Blockstore for StagedStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        {
            let p = self
                .pending
                .lock()
                .map_err(|_| BlockstoreError::Backend(Box::new(Poisoned)))?;
            if let Some(b) = p.get(cid) {
                return Ok(Some(b.clone()));
            }
        }
        self.inner.get(cid)
    }

    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError> {
        let mut p = self
            .pending
            .lock()
            .map_err(|_| BlockstoreError::Backend(Box::new(Poisoned)))?;
        for (cid, b) in blocks {
            p.insert(*cid, b.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atproto::repo::cid_for_dag_cbor;

    #[test]
    fn change_is_atomic_and_sequenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = HoldStore::open(&dir.path().join("h.redb")).unwrap();
        assert_eq!(store.head().unwrap(), None);
        let data = Bytes::from_static(&[0xa0]);
        let cid = cid_for_dag_cbor(&data);
        let mut blocks = BlockMap::new();
        blocks.insert(cid, data.clone());
        let head = Head {
            did: "did:web:example.com".into(),
            commit: cid,
            rev: "3jzfcijpj2z2a".into(),
        };
        let ev = |seq: u64| Ok(seq.to_be_bytes().to_vec());
        let refs = |path: &str, cids: &[&str]| BlobRefs {
            path: path.into(),
            cids: cids.iter().map(|c| c.to_string()).collect(),
        };
        let out = store
            .commit_change(
                &blocks,
                &head,
                &[refs("a/1", &["bafyb", "bafya"])],
                &[],
                &[&ev],
            )
            .unwrap();
        assert_eq!(out[0].0, 1);
        let head2 = Head {
            rev: "3jzfcijpj2z2c".into(),
            ..head.clone()
        };
        let out = store
            .commit_change(
                &blocks,
                &head2,
                &[refs("a/2", &["bafyc", "bafya"])],
                &[],
                &[&ev],
            )
            .unwrap();
        assert_eq!(out[0].0, 2);
        let all = |since, cursor, n| store.list_blobs(since, cursor, n).unwrap();
        assert_eq!(all(None, None, 10), vec!["bafya", "bafyb", "bafyc"]);
        assert_eq!(all(None, Some("bafya"), 1), vec!["bafyb"]);
        assert_eq!(all(Some("3jzfcijpj2z2a"), None, 10), vec!["bafya", "bafyc"]);
        // A record rewritten without blobs (or deleted) names none any more.
        store
            .commit_change(&blocks, &head2, &[refs("a/1", &[])], &[], &[])
            .unwrap();
        assert_eq!(all(None, None, 10), vec!["bafya", "bafyc"]);
        let head = head2;
        assert_eq!(store.head().unwrap(), Some(head.clone()));
        assert_eq!(store.get_block(&cid).unwrap(), Some(data));
        assert_eq!(store.last_seq().unwrap(), 2);
        let evs = store.events_after(1, 10).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].0, 2);
        // A failing event builder aborts the whole change.
        let bad = |_: u64| Err(HoldStoreError("boom".into()));
        let other = Head {
            rev: "3jzfcijpj2z2b".into(),
            ..head.clone()
        };
        assert!(store
            .commit_change(&blocks, &other, &[], &[], &[&ev, &bad])
            .is_err());
        assert_eq!(store.head().unwrap(), Some(head));
        assert_eq!(store.last_seq().unwrap(), 2);
        // Several events of one change get consecutive seqs; events without a change too.
        let out = store
            .commit_change(&blocks, &other, &[], &[], &[&ev, &ev])
            .unwrap();
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4]);
        let out = store.append_events(&[&ev], Some(("k", b"v"))).unwrap();
        assert_eq!(out[0].0, 5);
        assert_eq!(store.get_meta("k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
