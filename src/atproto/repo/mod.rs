//! ATProto repository (`crate::atproto::repo`): DAG-CBOR and CIDs, the Merkle Search
//! Tree, signed commits, CAR import/export, identifier syntax, keys and the high-level
//! [`Repo`]. Pure logic: it does no I/O except through the [`Blockstore`] trait.

pub mod blockstore;
pub mod car;
pub mod cid;
pub mod commit;
pub mod crypto;
pub mod dagcbor;
pub mod datamodel;
pub mod fuzz;
pub mod mst;
pub mod repository;
pub mod syntax;
pub mod tid;
pub mod verify;

pub use self::blockstore::{BlockMap, Blockstore, BlockstoreError, MemoryBlockstore};
pub use self::car::{
    read_car, read_car_with_root, write_car, CarError, CarLimits, CarReader, CarWriter,
};
pub use self::cid::{cid_for_dag_cbor, cid_for_raw, Cid};
pub use self::commit::{Commit, CommitError, UnsignedCommit};
pub use self::crypto::{CryptoError, KeyAlgorithm, PublicKey, SigningKey};
pub use self::fuzz::{fuzz_car, fuzz_dagcbor};
pub use self::mst::{diff_trees, Mst, MstDiff, MstError};
pub use self::repository::{Action, CommitResult, RecordEntry, Repo, RepoError, RepoOp, Write};
pub use self::tid::Tid;
pub use self::verify::{verify_record_proof, verify_repo_car, VerifiedRepo};
