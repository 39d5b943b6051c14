//! The only I/O boundary of the repo module: a content-addressed block store. It is
//! synchronous on purpose; an async caller wraps a real store (redb) in spawn_blocking.

use super::cid::Cid;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// Blocks keyed by CID, ordered so that CAR output and diffs are deterministic.
pub type BlockMap = BTreeMap<Cid, Bytes>;

#[derive(Debug, thiserror::Error)]
pub enum BlockstoreError {
    /// Failure of the backing store (database, lock poisoning...).
    #[error("blockstore backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub trait Blockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError>;

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.get(cid)?.is_some())
    }

    /// Stores all blocks; callers guarantee that each key is the CID of its bytes.
    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError>;
}

impl<T: Blockstore + ?Sized> Blockstore for &T {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        (**self).get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        (**self).has(cid)
    }
    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError> {
        (**self).put_many(blocks)
    }
}

impl<T: Blockstore + ?Sized> Blockstore for std::sync::Arc<T> {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        (**self).get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        (**self).has(cid)
    }
    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError> {
        (**self).put_many(blocks)
    }
}

/// In-memory store for tests, benches and building proofs.
#[derive(Debug, Default)]
pub struct MemoryBlockstore {
    blocks: RwLock<HashMap<Cid, Bytes>>,
}

#[derive(Debug, thiserror::Error)]
#[error("memory blockstore lock poisoned")]
struct Poisoned;

impl MemoryBlockstore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_blocks(blocks: BlockMap) -> Self {
        MemoryBlockstore {
            blocks: RwLock::new(blocks.into_iter().collect()),
        }
    }

    pub fn len(&self) -> usize {
        self.blocks.read().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Blockstore for MemoryBlockstore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        let map = self
            .blocks
            .read()
            .map_err(|_| BlockstoreError::Backend(Box::new(Poisoned)))?;
        Ok(map.get(cid).cloned())
    }

    fn put_many(&self, blocks: &BlockMap) -> Result<(), BlockstoreError> {
        let mut map = self
            .blocks
            .write()
            .map_err(|_| BlockstoreError::Backend(Box::new(Poisoned)))?;
        for (cid, bytes) in blocks {
            map.insert(*cid, bytes.clone());
        }
        Ok(())
    }
}
