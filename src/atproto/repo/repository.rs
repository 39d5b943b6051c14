//! High-level repo: signed commits over an MST of DAG-CBOR records, with everything a
//! firehose `#commit` event and `com.atproto.sync.*` endpoints need.

use super::blockstore::{BlockMap, Blockstore, BlockstoreError};
use super::car::{write_car, CarError};
use super::cid::{cid_for_dag_cbor, Cid};
use super::commit::{Commit, CommitError, UnsignedCommit};
use super::crypto::SigningKey;
use super::dagcbor::{self, DagCborError};
use super::datamodel::{self, DataModelError};
use super::mst::{Mst, MstError};
use super::syntax::{validate_nsid, validate_record_key, SyntaxError};
use super::tid::Tid;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] BlockstoreError),
    #[error(transparent)]
    Mst(#[from] MstError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Car(#[from] CarError),
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("record is not valid DAG-CBOR: {0}")]
    RecordCbor(#[from] DagCborError),
    #[error("record violates the data model: {0}")]
    RecordData(#[from] DataModelError),
    #[error("record {0} already exists")]
    AlreadyExists(String),
    #[error("record {0} not found")]
    NotFound(String),
    #[error("block {0} missing from the blockstore")]
    MissingBlock(Cid),
    #[error("MST is not in canonical form")]
    NonCanonicalMst,
    #[error("commit is signed by a different key than this repo's")]
    KeyMismatch,
}

/// One record write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Create {
        collection: String,
        rkey: String,
        record: Bytes,
    },
    Update {
        collection: String,
        rkey: String,
        record: Bytes,
    },
    Delete {
        collection: String,
        rkey: String,
    },
}

impl Write {
    fn path(&self) -> String {
        let (c, r) = match self {
            Write::Create {
                collection, rkey, ..
            }
            | Write::Update {
                collection, rkey, ..
            }
            | Write::Delete { collection, rkey } => (collection, rkey),
        };
        format!("{c}/{r}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// A firehose `repoOp`: `cid` is the new record (None for deletes), `prev` the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOp {
    pub action: Action,
    pub path: String,
    pub cid: Option<Cid>,
    pub prev: Option<Cid>,
}

/// Everything produced by one commit.
#[derive(Debug, Clone)]
pub struct CommitResult {
    pub commit_cid: Cid,
    pub rev: String,
    /// Rev of the previous commit (`since` in the firehose event).
    pub since: Option<String>,
    /// MST root before this commit (`prevData` in the firehose event).
    pub prev_data: Option<Cid>,
    pub data: Cid,
    /// Blocks written to the store by this commit (commit, new MST nodes, new records).
    pub new_blocks: BlockMap,
    pub ops: Vec<RepoOp>,
    /// CAR rooted at the commit with the new blocks plus covering proofs of every op,
    /// i.e. the `blocks` field of a sync 1.1 `#commit` event.
    pub car: Vec<u8>,
}

/// A record read from the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    pub rkey: String,
    pub cid: Cid,
    pub value: Bytes,
}

/// A repo owned by this process. All I/O goes through the blockstore; the caller
/// persists `head()` (e.g. in the same transaction as the blocks).
pub struct Repo<S: Blockstore> {
    store: S,
    key: SigningKey,
    commit: Commit,
    head: Cid,
}

impl<S: Blockstore> Repo<S> {
    /// Creates an empty repo with its first signed commit.
    pub fn create(
        did: &str,
        key: SigningKey,
        store: S,
    ) -> Result<(Repo<S>, CommitResult), RepoError> {
        let mut mst = Mst::new();
        let (data, mut blocks) = mst.commit()?;
        let rev = Tid::now();
        let commit = UnsignedCommit::new(did, data, rev.as_str(), None)?.sign(&key)?;
        let (head, commit_bytes) = commit.to_block()?;
        blocks.insert(head, commit_bytes.into());
        store.put_many(&blocks)?;
        let car = write_car(head, &blocks)?;
        let result = CommitResult {
            commit_cid: head,
            rev: commit.rev.clone(),
            since: None,
            prev_data: None,
            data,
            new_blocks: blocks,
            ops: Vec::new(),
            car,
        };
        Ok((
            Repo {
                store,
                key,
                commit,
                head,
            },
            result,
        ))
    }

    /// Opens an existing repo at commit `head`; the key must match the commit signature.
    pub fn load(store: S, key: SigningKey, head: Cid) -> Result<Repo<S>, RepoError> {
        let bytes = store.get(&head)?.ok_or(RepoError::MissingBlock(head))?;
        let commit = Commit::decode(&bytes)?;
        commit
            .verify(&key.public_key())
            .map_err(|_| RepoError::KeyMismatch)?;
        Ok(Repo {
            store,
            key,
            commit,
            head,
        })
    }

    pub fn did(&self) -> &str {
        &self.commit.did
    }
    pub fn head(&self) -> Cid {
        self.head
    }
    pub fn rev(&self) -> &str {
        &self.commit.rev
    }
    pub fn commit(&self) -> &Commit {
        &self.commit
    }
    pub fn data_root(&self) -> Cid {
        self.commit.data
    }
    pub fn store(&self) -> &S {
        &self.store
    }
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    fn mst(&self) -> Result<Mst, RepoError> {
        Ok(Mst::load(&self.store, self.commit.data)?)
    }

    fn next_rev(&self) -> Tid {
        let now = Tid::now();
        match Tid::parse(&self.commit.rev) {
            Ok(prev) if now <= prev => prev.successor(),
            _ => now,
        }
    }

    /// Applies writes atomically as one commit. Records must be canonical DAG-CBOR that
    /// satisfies the data model; creates of existing and updates/deletes of missing
    /// records fail the whole batch and leave the repo unchanged.
    pub fn apply_writes(&mut self, writes: &[Write]) -> Result<CommitResult, RepoError> {
        let mut mst = self.mst()?;
        let mut new_blocks = BlockMap::new();
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            let (collection, rkey) = match w {
                Write::Create {
                    collection, rkey, ..
                }
                | Write::Update {
                    collection, rkey, ..
                }
                | Write::Delete { collection, rkey } => (collection, rkey),
            };
            validate_nsid(collection)?;
            validate_record_key(rkey)?;
            let path = w.path();
            let op = match w {
                Write::Create { record, .. } | Write::Update { record, .. } => {
                    let value = dagcbor::decode_canonical(record)?;
                    datamodel::validate(&value)?;
                    let cid = cid_for_dag_cbor(record);
                    new_blocks.insert(cid, record.clone());
                    let prev = mst.insert(&self.store, &path, cid)?;
                    let action = match (w, prev) {
                        (Write::Create { .. }, Some(_)) => {
                            return Err(RepoError::AlreadyExists(path))
                        }
                        (Write::Update { .. }, None) => return Err(RepoError::NotFound(path)),
                        (Write::Create { .. }, None) => Action::Create,
                        _ => Action::Update,
                    };
                    RepoOp {
                        action,
                        path,
                        cid: Some(cid),
                        prev,
                    }
                }
                Write::Delete { .. } => {
                    let prev = mst.delete(&self.store, &path)?;
                    if prev.is_none() {
                        return Err(RepoError::NotFound(path));
                    }
                    RepoOp {
                        action: Action::Delete,
                        path,
                        cid: None,
                        prev,
                    }
                }
            };
            ops.push(op);
        }
        let (data, node_blocks) = mst.commit()?;
        new_blocks.extend(node_blocks);

        // Sync 1.1: ship the covering proof of every op so consumers can invert the commit.
        let mut relevant = new_blocks.clone();
        for op in &ops {
            relevant.extend(mst.covering_proof(&self.store, &op.path)?);
        }

        let rev = self.next_rev();
        let commit =
            UnsignedCommit::new(&self.commit.did, data, rev.as_str(), None)?.sign(&self.key)?;
        let (head, commit_bytes) = commit.to_block()?;
        let commit_bytes = Bytes::from(commit_bytes);
        new_blocks.insert(head, commit_bytes.clone());
        relevant.insert(head, commit_bytes);
        self.store.put_many(&new_blocks)?;

        let result = CommitResult {
            commit_cid: head,
            rev: commit.rev.clone(),
            since: Some(self.commit.rev.clone()),
            prev_data: Some(self.commit.data),
            data,
            new_blocks,
            ops,
            car: write_car(head, &relevant)?,
        };
        self.commit = commit;
        self.head = head;
        Ok(result)
    }

    /// The record at `collection/rkey` (CID and DAG-CBOR bytes).
    pub fn get_record(
        &self,
        collection: &str,
        rkey: &str,
    ) -> Result<Option<(Cid, Bytes)>, RepoError> {
        let path = format!("{collection}/{rkey}");
        let Some(cid) = self.mst()?.get(&self.store, &path)? else {
            return Ok(None);
        };
        let value = self.store.get(&cid)?.ok_or(RepoError::MissingBlock(cid))?;
        Ok(Some((cid, value)))
    }

    /// `com.atproto.repo.listRecords`: records of one collection ordered by rkey,
    /// ascending (or descending with `reverse`), starting after the `cursor` rkey.
    pub fn list_records(
        &self,
        collection: &str,
        limit: usize,
        cursor: Option<&str>,
        reverse: bool,
    ) -> Result<Vec<RecordEntry>, RepoError> {
        let prefix = format!("{collection}/");
        let cursor_key = cursor.map(|c| format!("{prefix}{c}"));
        let entries =
            self.mst()?
                .list_prefix(&self.store, &prefix, cursor_key.as_deref(), reverse, limit)?;
        entries
            .into_iter()
            .map(|(key, cid)| {
                let value = self.store.get(&cid)?.ok_or(RepoError::MissingBlock(cid))?;
                Ok(RecordEntry {
                    rkey: key[prefix.len()..].to_string(),
                    cid,
                    value,
                })
            })
            .collect()
    }

    /// All (path, record CID) pairs in key order.
    pub fn list_all(&self) -> Result<Vec<(String, Cid)>, RepoError> {
        Ok(self.mst()?.entries(&self.store)?)
    }

    /// `com.atproto.sync.getRepo`: CAR with the commit, every MST node and every record.
    pub fn export_car(&self) -> Result<Vec<u8>, RepoError> {
        let mst = self.mst()?;
        let mut blocks = BlockMap::new();
        mst.collect_blocks(&self.store, &mut blocks)?;
        for (_, cid) in mst.entries(&self.store)? {
            let value = self.store.get(&cid)?.ok_or(RepoError::MissingBlock(cid))?;
            blocks.insert(cid, value);
        }
        let (_, commit_bytes) = self.commit.to_block()?;
        blocks.insert(self.head, commit_bytes.into());
        Ok(write_car(self.head, &blocks)?)
    }

    /// `com.atproto.sync.getRecord`: CAR rooted at the commit with the MST path to the
    /// record and the record itself (or the path proving its absence).
    pub fn record_proof_car(&self, collection: &str, rkey: &str) -> Result<Vec<u8>, RepoError> {
        let path = format!("{collection}/{rkey}");
        let mst = self.mst()?;
        let mut blocks = mst.path_proof(&self.store, &path)?;
        if let Some(cid) = mst.get(&self.store, &path)? {
            let value = self.store.get(&cid)?.ok_or(RepoError::MissingBlock(cid))?;
            blocks.insert(cid, value);
        }
        let (_, commit_bytes) = self.commit.to_block()?;
        blocks.insert(self.head, commit_bytes.into());
        Ok(write_car(self.head, &blocks)?)
    }
}
