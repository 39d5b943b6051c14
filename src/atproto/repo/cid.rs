//! CIDv1 helpers restricted to what ATProto allows: sha2-256 multihash with either the
//! dag-cbor (records, MST nodes, commits) or raw (blobs) codec.

pub use ::cid::Cid;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes (blobs).
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidError {
    #[error("invalid CID: {0}")]
    Parse(String),
    #[error("CID is not version 1")]
    NotV1,
    #[error("unsupported CID codec 0x{0:x}")]
    Codec(u64),
    #[error("unsupported multihash 0x{0:x} (only sha2-256)")]
    Hash(u64),
    #[error("block content does not match CID {0}")]
    Mismatch(Cid),
}

fn sha256_cid(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    // wrap() fails only when the digest exceeds the 64-byte multihash capacity; sha256 is 32.
    let mh = ::cid::multihash::Multihash::<64>::wrap(SHA2_256, &digest)
        .expect("32-byte digest fits a 64-byte multihash");
    Cid::new_v1(codec, mh)
}

/// CID of a DAG-CBOR block.
pub fn cid_for_dag_cbor(bytes: &[u8]) -> Cid {
    sha256_cid(DAG_CBOR, bytes)
}

/// CID of a raw block (blob).
pub fn cid_for_raw(bytes: &[u8]) -> Cid {
    sha256_cid(RAW, bytes)
}

/// Checks that a CID is of the shape ATProto accepts (v1, dag-cbor or raw, sha2-256/32 bytes).
pub fn check_atproto_cid(cid: &Cid) -> Result<(), CidError> {
    if cid.version() != ::cid::Version::V1 {
        return Err(CidError::NotV1);
    }
    if cid.codec() != DAG_CBOR && cid.codec() != RAW {
        return Err(CidError::Codec(cid.codec()));
    }
    let mh = cid.hash();
    if mh.code() != SHA2_256 || mh.size() != 32 {
        return Err(CidError::Hash(mh.code()));
    }
    Ok(())
}

/// Verifies that `bytes` hash to `cid` (the codec in the CID is kept as given).
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<(), CidError> {
    check_atproto_cid(cid)?;
    let expected = sha256_cid(cid.codec(), bytes);
    if expected.hash().digest() != cid.hash().digest() {
        return Err(CidError::Mismatch(*cid));
    }
    Ok(())
}

/// Parses a CID string (any multibase) and checks that it is an ATProto-shaped CID.
pub fn parse_cid(s: &str) -> Result<Cid, CidError> {
    let cid = Cid::try_from(s).map_err(|e| CidError::Parse(e.to_string()))?;
    check_atproto_cid(&cid)?;
    Ok(cid)
}
