//! Signed repo commit objects (version 3): `{did, version, data, rev, prev, sig}` where
//! `sig` signs the DAG-CBOR encoding of the same object without `sig`.

use super::cid::Cid;
use super::crypto::{CryptoError, PublicKey, SigningKey};
use super::dagcbor::{self, DagCborError};
use super::syntax::{validate_did, validate_tid, SyntaxError};
use serde::{Deserialize, Serialize};

pub const COMMIT_VERSION: i64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("commit decode/encode failed: {0}")]
    Cbor(#[from] DagCborError),
    #[error("unsupported commit version {0}")]
    Version(i64),
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("commit signature: {0}")]
    Signature(#[from] CryptoError),
    #[error("commit is for {found}, expected {expected}")]
    WrongDid { expected: String, found: String },
}

/// The commit without its signature: the exact bytes that get signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsignedCommit {
    pub did: String,
    pub version: i64,
    /// Root CID of the MST.
    pub data: Cid,
    /// TID of this revision; increases with every commit.
    pub rev: String,
    /// Always present on the wire; `null` in v3 repos written by current software.
    pub prev: Option<Cid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub did: String,
    pub version: i64,
    pub data: Cid,
    pub rev: String,
    pub prev: Option<Cid>,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

impl UnsignedCommit {
    pub fn new(did: &str, data: Cid, rev: &str, prev: Option<Cid>) -> Result<Self, CommitError> {
        validate_did(did)?;
        validate_tid(rev)?;
        Ok(UnsignedCommit {
            did: did.to_string(),
            version: COMMIT_VERSION,
            data,
            rev: rev.to_string(),
            prev,
        })
    }

    pub fn sign(self, key: &SigningKey) -> Result<Commit, CommitError> {
        let bytes = dagcbor::encode(&self)?;
        let sig = key.sign(&bytes).to_vec();
        Ok(Commit {
            did: self.did,
            version: self.version,
            data: self.data,
            rev: self.rev,
            prev: self.prev,
            sig,
        })
    }
}

impl Commit {
    pub fn unsigned(&self) -> UnsignedCommit {
        UnsignedCommit {
            did: self.did.clone(),
            version: self.version,
            data: self.data,
            rev: self.rev.clone(),
            prev: self.prev,
        }
    }

    /// (CID, bytes) of the signed commit block.
    pub fn to_block(&self) -> Result<(Cid, Vec<u8>), CommitError> {
        Ok(dagcbor::encode_with_cid(self)?)
    }

    /// Decodes an untrusted commit block and checks its fields' syntax. Version 2
    /// commits share the layout and are accepted for reading.
    pub fn decode(bytes: &[u8]) -> Result<Commit, CommitError> {
        let c: Commit = dagcbor::decode(bytes)?;
        if c.version != 3 && c.version != 2 {
            return Err(CommitError::Version(c.version));
        }
        validate_did(&c.did)?;
        validate_tid(&c.rev)?;
        Ok(c)
    }

    pub fn verify(&self, key: &PublicKey) -> Result<(), CommitError> {
        let bytes = dagcbor::encode(&self.unsigned())?;
        key.verify(&bytes, &self.sig)?;
        Ok(())
    }

    /// Verifies against a `did:key:z...` string (e.g. from the DID document).
    pub fn verify_did_key(&self, did_key: &str) -> Result<(), CommitError> {
        self.verify(&PublicKey::from_did_key(did_key)?)
    }
}
