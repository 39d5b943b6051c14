//! Entry points for cargo-fuzz style harnesses: arbitrary input must only ever produce
//! errors, never panics.

use super::car::{read_car, CarLimits};
use super::commit::Commit;
use super::dagcbor::{decode_canonical, decode_ipld};
use super::datamodel::validate;
use super::verify::verify_repo_car;

/// Parses arbitrary bytes as a CAR (and, if that works, as a repo export).
pub fn fuzz_car(data: &[u8]) {
    let limits = CarLimits {
        max_blocks: 10_000,
        max_total_bytes: 16 << 20,
        ..CarLimits::default()
    };
    if let Ok((roots, blocks)) = read_car(data, limits) {
        let _ = (roots.len(), blocks.len());
        if let Some(key) = fuzz_key() {
            let _ = verify_repo_car(data, None, &key, limits);
        }
    }
}

/// Decodes arbitrary bytes as DAG-CBOR, as a record, and as a commit.
pub fn fuzz_dagcbor(data: &[u8]) {
    if let Ok(v) = decode_ipld(data) {
        let _ = validate(&v);
    }
    let _ = decode_canonical(data);
    let _ = Commit::decode(data);
}

/// The key the fuzz entry points verify with: the W3C did:key P-256 test vector, whose
/// private key is public, so the seed corpus (`fuzz/seeds/`) is signed with it and mutations
/// get past the signature into commit decoding and MST loading.
pub const FUZZ_DID_KEY: &str = "did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb";

pub fn fuzz_key() -> Option<super::crypto::PublicKey> {
    super::crypto::PublicKey::from_did_key(FUZZ_DID_KEY).ok()
}
