//! interop-vectors/crypto: signature fixtures and W3C did:key vectors.
use atcr::atproto::repo::crypto::{verify_did_key_signature, KeyAlgorithm, PublicKey, SigningKey};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;

fn b64(s: &str) -> Vec<u8> {
    STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(s))
        .unwrap()
}

#[test]
fn signature_fixtures() {
    let list = crate::common::read_json("crypto/signature-fixtures.json");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 6);
    for f in list {
        let msg = b64(f["messageBase64"].as_str().unwrap());
        let sig = b64(f["signatureBase64"].as_str().unwrap());
        let did = f["publicKeyDid"].as_str().unwrap();
        let valid = f["validSignature"].as_bool().unwrap();
        let result = verify_did_key_signature(did, &msg, &sig);
        assert_eq!(result.is_ok(), valid, "{}: {result:?}", f["comment"]);

        // The legacy publicKeyMultibase (no multicodec) must match the did:key's point.
        let key = PublicKey::from_did_key(did).unwrap();
        let expected_alg = match f["algorithm"].as_str().unwrap() {
            "ES256" => KeyAlgorithm::P256,
            "ES256K" => KeyAlgorithm::K256,
            other => panic!("unknown alg {other}"),
        };
        assert_eq!(key.algorithm(), expected_alg);
        assert_eq!(
            key.legacy_multibase(),
            f["publicKeyMultibase"].as_str().unwrap()
        );
        assert_eq!(key.did_key(), did);
    }
}

#[test]
fn didkey_p256_vectors() {
    let list = crate::common::read_json("crypto/w3c_didkey_P256.json");
    for f in list.as_array().unwrap() {
        let b58 = f["privateKeyBytesBase58"].as_str().unwrap();
        let (_, priv_bytes) = multibase::decode(format!("z{b58}")).unwrap();
        let key = SigningKey::from_bytes(KeyAlgorithm::P256, &priv_bytes).unwrap();
        assert_eq!(
            key.public_key().did_key(),
            f["publicDidKey"].as_str().unwrap()
        );
    }
}

#[test]
fn didkey_k256_vectors() {
    let list = crate::common::read_json("crypto/w3c_didkey_K256.json");
    for f in list.as_array().unwrap() {
        let priv_bytes = hex::decode(f["privateKeyBytesHex"].as_str().unwrap()).unwrap();
        let key = SigningKey::from_bytes(KeyAlgorithm::K256, &priv_bytes).unwrap();
        let did = key.public_key().did_key();
        assert_eq!(did, f["publicDidKey"].as_str().unwrap());
        assert_eq!(PublicKey::from_did_key(&did).unwrap(), key.public_key());
    }
}

#[test]
fn sign_verify_low_s_roundtrip() {
    for alg in [KeyAlgorithm::P256, KeyAlgorithm::K256] {
        let key = SigningKey::from_bytes(alg, &[7u8; 32]).unwrap();
        let pubkey = PublicKey::from_multikey(&key.public_key().multikey()).unwrap();
        for i in 0..64u32 {
            let msg = i.to_le_bytes();
            let sig = key.sign(&msg);
            pubkey.verify(&msg, &sig).unwrap();
            let mut bad = sig;
            bad[10] ^= 1;
            assert!(pubkey.verify(&msg, &bad).is_err());
        }
    }
    let generated = SigningKey::generate_p256();
    let again = SigningKey::from_bytes(KeyAlgorithm::P256, &generated.to_bytes()).unwrap();
    assert_eq!(generated.public_key(), again.public_key());
    assert!(PublicKey::from_did_key("did:web:example.com").is_err());
    assert!(PublicKey::from_did_key("did:key:zQ3").is_err());
}
