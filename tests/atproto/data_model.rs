//! interop-vectors/data-model: JSON -> DAG-CBOR bytes -> CID, and valid/invalid lists.
use atcr::atproto::repo::dagcbor::{decode_canonical, decode_ipld, encode, Ipld};
use atcr::atproto::repo::datamodel::{ipld_to_json, json_to_ipld, record_from_json};
use atcr::atproto::repo::{cid_for_dag_cbor, fuzz_dagcbor};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

#[test]
fn fixtures_json_to_cbor_to_cid() {
    let fixtures = crate::common::read_json("data-model/data-model-fixtures.json");
    let list = fixtures.as_array().unwrap();
    assert!(!list.is_empty());
    for f in list {
        let ipld = record_from_json(&f["json"]).unwrap();
        let bytes = encode(&ipld).unwrap();
        let expected = STANDARD_NO_PAD
            .decode(f["cbor_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, expected, "cbor for {}", f["json"]);
        assert_eq!(
            cid_for_dag_cbor(&bytes).to_string(),
            f["cid"].as_str().unwrap()
        );
        // decode side: canonical bytes round-trip to the same value and JSON
        let back: Ipld = decode_canonical(&expected).unwrap();
        assert_eq!(back, ipld);
        assert_eq!(ipld_to_json(&back), f["json"]);
        fuzz_dagcbor(&expected);
    }
}

#[test]
fn valid_records_accepted() {
    let list = crate::common::read_json("data-model/data-model-valid.json");
    for f in list.as_array().unwrap() {
        let ipld = record_from_json(&f["json"]).unwrap_or_else(|e| panic!("{}: {e}", f["note"]));
        let bytes = encode(&ipld).unwrap();
        assert_eq!(decode_ipld(&bytes).unwrap(), ipld);
    }
}

#[test]
fn invalid_records_rejected() {
    let list = crate::common::read_json("data-model/data-model-invalid.json");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 12);
    for f in list {
        assert!(
            record_from_json(&f["json"]).is_err(),
            "accepted: {}",
            f["note"]
        );
    }
}

#[test]
fn non_canonical_and_hostile_cbor_rejected() {
    // map with keys out of canonical order: {"b":1,"a":2}
    let unsorted = [0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02];
    // serde_ipld_dagcbor already enforces key order; decode_canonical is the backstop.
    assert!(decode_ipld(&unsorted).is_err());
    assert!(decode_canonical(&unsorted).is_err());
    // non-minimal integer head
    assert!(decode_ipld(&[0x18, 0x01]).is_err());
    // indefinite-length map, unknown tag, trailing bytes, truncation
    assert!(decode_ipld(&[0xbf, 0xff]).is_err());
    assert!(decode_ipld(&[0xc1, 0x00]).is_err());
    assert!(decode_ipld(&[0x01, 0x01]).is_err());
    assert!(decode_ipld(&[0x62, b'a']).is_err());
    // oversized block
    let big = vec![0u8; atcr::atproto::repo::dagcbor::MAX_BLOCK_SIZE + 1];
    assert!(decode_ipld(&big).is_err());
    assert!(json_to_ipld(&serde_json::json!({"a": 1.5})).is_err());
}

#[test]
fn fuzz_dagcbor_never_panics_on_mutations() {
    let fixtures = crate::common::read_json("data-model/data-model-fixtures.json");
    for f in fixtures.as_array().unwrap() {
        let bytes = STANDARD_NO_PAD
            .decode(f["cbor_base64"].as_str().unwrap())
            .unwrap();
        for i in 0..bytes.len() {
            for delta in [1u8, 0x20, 0x80, 0xff] {
                let mut m = bytes.clone();
                m[i] = m[i].wrapping_add(delta);
                fuzz_dagcbor(&m);
                fuzz_dagcbor(&m[..i]);
            }
        }
    }
}
