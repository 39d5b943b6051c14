//! ATProto signing keys: P-256 (ES256) and secp256k1 (ES256K), `did:key` / Multikey
//! encodings, and the signature rules (sha-256 prehash, 64-byte compact r||s, low-S only).

use p256::ecdsa::signature::{Signer, Verifier};

/// Multicodec `p256-pub` (0x1200) as an unsigned varint.
const P256_PUB_PREFIX: [u8; 2] = [0x80, 0x24];
/// Multicodec `secp256k1-pub` (0xe7) as an unsigned varint.
const K256_PUB_PREFIX: [u8; 2] = [0xe7, 0x01];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("not a did:key")]
    NotDidKey,
    #[error("bad multibase encoding")]
    Multibase,
    #[error("unsupported key type (multicodec prefix)")]
    UnsupportedKeyType,
    #[error("invalid public key bytes")]
    BadPublicKey,
    #[error("invalid private key bytes")]
    BadPrivateKey,
    #[error("signature must be 64 bytes (compact r||s)")]
    BadSignatureLength,
    #[error("signature is malformed")]
    BadSignature,
    #[error("high-S signature rejected (ATProto requires low-S)")]
    HighS,
    #[error("signature does not verify")]
    VerifyFailed,
}

/// Which curve a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    P256,
    K256,
}

/// A private signing key. Repos created by this crate use P-256.
#[derive(Clone)]
pub enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    K256(k256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret material.
        write!(f, "SigningKey({})", self.public_key().did_key())
    }
}

impl SigningKey {
    /// A new random P-256 key from the OS RNG.
    pub fn generate_p256() -> SigningKey {
        SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// Loads a 32-byte big-endian private scalar.
    pub fn from_bytes(alg: KeyAlgorithm, bytes: &[u8]) -> Result<SigningKey, CryptoError> {
        Ok(match alg {
            KeyAlgorithm::P256 => SigningKey::P256(
                p256::ecdsa::SigningKey::from_slice(bytes)
                    .map_err(|_| CryptoError::BadPrivateKey)?,
            ),
            KeyAlgorithm::K256 => SigningKey::K256(
                k256::ecdsa::SigningKey::from_slice(bytes)
                    .map_err(|_| CryptoError::BadPrivateKey)?,
            ),
        })
    }

    /// The 32-byte private scalar, for persisting the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        match self {
            SigningKey::P256(k) => k.to_bytes().into(),
            SigningKey::K256(k) => k.to_bytes().into(),
        }
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            SigningKey::P256(_) => KeyAlgorithm::P256,
            SigningKey::K256(_) => KeyAlgorithm::K256,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            SigningKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            SigningKey::K256(k) => PublicKey::K256(*k.verifying_key()),
        }
    }

    /// Signs sha256(msg); returns the 64-byte low-S compact signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        match self {
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            SigningKey::K256(k) => {
                let sig: k256::ecdsa::Signature = k.sign(msg);
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
        }
    }
}

/// A public verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    K256(k256::ecdsa::VerifyingKey),
}

impl PublicKey {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PublicKey::P256(_) => KeyAlgorithm::P256,
            PublicKey::K256(_) => KeyAlgorithm::K256,
        }
    }

    /// SEC1 compressed point (33 bytes).
    pub fn compressed(&self) -> Vec<u8> {
        match self {
            PublicKey::P256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
            PublicKey::K256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
        }
    }

    /// Multikey form (`z` + base58btc(multicodec varint + compressed point)); this is the
    /// `publicKeyMultibase` of a `Multikey` verification method in a DID document.
    pub fn multikey(&self) -> String {
        let prefix = match self {
            PublicKey::P256(_) => P256_PUB_PREFIX,
            PublicKey::K256(_) => K256_PUB_PREFIX,
        };
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&self.compressed());
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// `did:key:z...`
    pub fn did_key(&self) -> String {
        format!("did:key:{}", self.multikey())
    }

    /// Legacy `publicKeyMultibase` (no multicodec prefix) used with the
    /// `EcdsaSecp256r1VerificationKey2019` / `EcdsaSecp256k1VerificationKey2019` suites.
    pub fn legacy_multibase(&self) -> String {
        multibase::encode(multibase::Base::Base58Btc, self.compressed())
    }

    pub fn from_sec1(alg: KeyAlgorithm, bytes: &[u8]) -> Result<PublicKey, CryptoError> {
        Ok(match alg {
            KeyAlgorithm::P256 => PublicKey::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map_err(|_| CryptoError::BadPublicKey)?,
            ),
            KeyAlgorithm::K256 => PublicKey::K256(
                k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map_err(|_| CryptoError::BadPublicKey)?,
            ),
        })
    }

    /// Parses a Multikey string (`z...` with multicodec prefix).
    pub fn from_multikey(s: &str) -> Result<PublicKey, CryptoError> {
        if !s.starts_with('z') {
            return Err(CryptoError::Multibase);
        }
        let (_, bytes) = multibase::decode(s).map_err(|_| CryptoError::Multibase)?;
        if bytes.len() < 2 {
            return Err(CryptoError::UnsupportedKeyType);
        }
        let (prefix, point) = bytes.split_at(2);
        let alg = if prefix == P256_PUB_PREFIX {
            KeyAlgorithm::P256
        } else if prefix == K256_PUB_PREFIX {
            KeyAlgorithm::K256
        } else {
            return Err(CryptoError::UnsupportedKeyType);
        };
        // ATProto did:keys carry compressed points only.
        if point.len() != 33 {
            return Err(CryptoError::BadPublicKey);
        }
        PublicKey::from_sec1(alg, point)
    }

    /// Parses `did:key:z...`.
    pub fn from_did_key(did: &str) -> Result<PublicKey, CryptoError> {
        let mb = did.strip_prefix("did:key:").ok_or(CryptoError::NotDidKey)?;
        PublicKey::from_multikey(mb)
    }

    /// Verifies a 64-byte compact low-S signature over sha256(msg). DER and high-S
    /// signatures are rejected, as ATProto requires.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        if sig.len() != 64 {
            return Err(CryptoError::BadSignatureLength);
        }
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| CryptoError::BadSignature)?;
                if s.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                k.verify(msg, &s).map_err(|_| CryptoError::VerifyFailed)
            }
            PublicKey::K256(k) => {
                let s = k256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| CryptoError::BadSignature)?;
                if s.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                verify_k256_fast(k, msg, &s.to_bytes())
            }
        }
    }
}

/// ES256K through libsecp256k1 (the `secp256k1` crate): the same check as `k256`'s
/// `Verifier` (SHA-256 prehash, low-S already enforced by the caller) at ~3x its rate.
/// Most network repositories sign with secp256k1 and the firehose checks one signature per
/// commit, so this is the consumer's hottest function.
fn verify_k256_fast(
    key: &k256::ecdsa::VerifyingKey,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    use sha2::{Digest, Sha256};
    static CONTEXT: std::sync::LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::LazyLock::new(secp256k1::Secp256k1::verification_only);
    // Uncompressed: parsing it is an on-curve check, no square root.
    let point = key.to_encoded_point(false);
    let pk = secp256k1::PublicKey::from_slice(point.as_bytes())
        .map_err(|_| CryptoError::BadPublicKey)?;
    let sig =
        secp256k1::ecdsa::Signature::from_compact(sig).map_err(|_| CryptoError::BadSignature)?;
    let digest: [u8; 32] = Sha256::digest(msg).into();
    CONTEXT
        .verify_ecdsa(&secp256k1::Message::from_digest(digest), &sig, &pk)
        .map_err(|_| CryptoError::VerifyFailed)
}

/// Verifies a signature against a `did:key`.
pub fn verify_did_key_signature(did_key: &str, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    PublicKey::from_did_key(did_key)?.verify(msg, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The libsecp256k1 path says what `k256`'s own verifier says, for good signatures and
    /// for every kind of bad one.
    #[test]
    fn k256_fast_path_agrees_with_k256() {
        for seed in 1u8..=20 {
            let key = SigningKey::from_bytes(KeyAlgorithm::K256, &[seed; 32]).unwrap();
            let pk = key.public_key();
            let PublicKey::K256(vk) = &pk else {
                panic!("a k256 key")
            };
            let msg = format!("commit {seed}").into_bytes();
            let sig = key.sign(&msg);
            let reference = |m: &[u8], s: &[u8]| {
                let s = k256::ecdsa::Signature::from_slice(s).unwrap();
                vk.verify(m, &s).is_ok()
            };
            assert!(reference(&msg, &sig));
            assert_eq!(pk.verify(&msg, &sig), Ok(()));
            // Another message, a flipped bit in r and in s, another key.
            assert!(!reference(b"other", &sig));
            assert_eq!(pk.verify(b"other", &sig), Err(CryptoError::VerifyFailed));
            for bit in [3usize, 35 * 8 + 1] {
                let mut bad = sig;
                bad[bit / 8] ^= 1 << (bit % 8);
                let fast = pk.verify(&msg, &bad);
                if k256::ecdsa::Signature::from_slice(&bad).is_ok_and(|s| s.normalize_s().is_none())
                {
                    assert_eq!(fast.is_ok(), reference(&msg, &bad), "bit {bit}");
                }
                assert!(fast.is_err());
            }
            let other = SigningKey::from_bytes(KeyAlgorithm::K256, &[seed + 100; 32]).unwrap();
            assert_eq!(
                other.public_key().verify(&msg, &sig),
                Err(CryptoError::VerifyFailed)
            );
            // The same signature with s replaced by n - s (high-S) is refused.
            let s = k256::ecdsa::Signature::from_slice(&sig).unwrap();
            let (r, low_s) = s.split_scalars();
            let high = k256::ecdsa::Signature::from_scalars(r, -*low_s).unwrap();
            assert_eq!(pk.verify(&msg, &high.to_bytes()), Err(CryptoError::HighS));
        }
    }
}
