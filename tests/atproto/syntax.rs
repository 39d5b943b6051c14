//! interop-vectors/syntax: every valid line accepted, every invalid line rejected.
use atcr::atproto::repo::syntax::*;
use atcr::atproto::repo::{cid::parse_cid, Tid};

fn check(name: &str, f: impl Fn(&str) -> bool) {
    let valid = crate::common::read_lines(&format!("syntax/{name}_syntax_valid.txt"));
    let invalid = crate::common::read_lines(&format!("syntax/{name}_syntax_invalid.txt"));
    assert!(!valid.is_empty() && !invalid.is_empty());
    let bad_valid: Vec<_> = valid.iter().filter(|v| !f(v)).collect();
    let bad_invalid: Vec<_> = invalid.iter().filter(|v| f(v)).collect();
    assert!(bad_valid.is_empty(), "{name}: rejected valid {bad_valid:?}");
    assert!(
        bad_invalid.is_empty(),
        "{name}: accepted invalid {bad_invalid:?}"
    );
}

#[test]
fn handle_vectors() {
    check("handle", |s| validate_handle(s).is_ok());
}

#[test]
fn did_vectors() {
    check("did", |s| validate_did(s).is_ok());
}

#[test]
fn atidentifier_vectors() {
    check("atidentifier", |s| validate_at_identifier(s).is_ok());
}

#[test]
fn nsid_vectors() {
    check("nsid", |s| validate_nsid(s).is_ok());
}

#[test]
fn recordkey_vectors() {
    check("recordkey", |s| validate_record_key(s).is_ok());
}

#[test]
fn tid_vectors() {
    check("tid", |s| validate_tid(s).is_ok() && Tid::parse(s).is_ok());
}

#[test]
fn aturi_vectors() {
    check("aturi", |s| validate_at_uri(s).is_ok());
}

/// The CID syntax vectors include CIDv0 and non-sha256 CIDs, which are valid CID
/// strings but not ATProto data-model CIDs; only the invalid list applies to parse_cid.
#[test]
fn cid_invalid_vectors() {
    for s in crate::common::read_lines("syntax/cid_syntax_invalid.txt") {
        assert!(parse_cid(&s).is_err(), "accepted {s:?}");
    }
    let valid = crate::common::read_lines("syntax/cid_syntax_valid.txt");
    let parsed = valid
        .iter()
        .filter(|s| atcr::atproto::repo::Cid::try_from(s.as_str()).is_ok())
        .count();
    assert!(parsed >= 1);
}
