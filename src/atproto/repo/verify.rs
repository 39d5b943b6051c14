//! Verification of repos and record proofs received as CARs (e.g. from a PDS):
//! structure, block hashes, commit signature and MST contents.

use super::blockstore::{BlockMap, MemoryBlockstore};
use super::car::{read_car_with_root, CarLimits};
use super::cid::Cid;
use super::commit::{Commit, CommitError};
use super::crypto::PublicKey;
use super::mst::Mst;
use super::repository::RepoError;
use bytes::Bytes;

/// A repo CAR that passed verification.
#[derive(Debug, Clone)]
pub struct VerifiedRepo {
    pub commit_cid: Cid,
    pub commit: Commit,
    /// (path, record CID) in key order.
    pub records: Vec<(String, Cid)>,
    pub blocks: BlockMap,
}

fn verified_commit(
    blocks: &BlockMap,
    root: Cid,
    did: Option<&str>,
    key: &PublicKey,
) -> Result<Commit, RepoError> {
    let bytes = blocks.get(&root).ok_or(RepoError::MissingBlock(root))?;
    let commit = Commit::decode(bytes)?;
    if let Some(did) = did {
        if commit.did != did {
            return Err(CommitError::WrongDid {
                expected: did.to_string(),
                found: commit.did,
            }
            .into());
        }
    }
    commit.verify(key)?;
    Ok(commit)
}

/// Verifies a full repo export (`com.atproto.sync.getRepo`): every block hash, the
/// commit signature, the MST, and the presence of every record block.
pub fn verify_repo_car(
    car: &[u8],
    did: Option<&str>,
    key: &PublicKey,
    limits: CarLimits,
) -> Result<VerifiedRepo, RepoError> {
    let (root, blocks) = read_car_with_root(car, limits)?;
    let commit = verified_commit(&blocks, root, did, key)?;
    let store = MemoryBlockstore::from_blocks(blocks.clone());
    let mst = Mst::load(&store, commit.data)?;
    let records = mst.entries(&store)?;
    for (_, cid) in &records {
        if !blocks.contains_key(cid) {
            return Err(RepoError::MissingBlock(*cid));
        }
    }
    // The MST shape is a function of its keys: rebuilding must give the signed root,
    // otherwise the tree is non-canonical (keys on wrong layers, unsorted, ...).
    let rebuilt = Mst::from_entries(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
    if rebuilt.root_cid()? != commit.data {
        return Err(RepoError::NonCanonicalMst);
    }
    Ok(VerifiedRepo {
        commit_cid: root,
        commit,
        records,
        blocks,
    })
}

/// Verifies a `com.atproto.sync.getRecord` CAR; returns the record if the proof shows it
/// exists, `None` if the proof shows it does not.
pub fn verify_record_proof(
    car: &[u8],
    did: Option<&str>,
    key: &PublicKey,
    collection: &str,
    rkey: &str,
) -> Result<Option<(Cid, Bytes)>, RepoError> {
    let (root, blocks) = read_car_with_root(car, CarLimits::default())?;
    let commit = verified_commit(&blocks, root, did, key)?;
    let store = MemoryBlockstore::from_blocks(blocks.clone());
    let mst = Mst::load(&store, commit.data)?;
    match mst.get(&store, &format!("{collection}/{rkey}"))? {
        None => Ok(None),
        Some(cid) => {
            let value = blocks.get(&cid).ok_or(RepoError::MissingBlock(cid))?;
            Ok(Some((cid, value.clone())))
        }
    }
}
