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
                k.verify(msg, &s).map_err(|_| CryptoError::VerifyFailed)
            }
        }
    }
}

/// Verifies a signature against a `did:key`.
pub fn verify_did_key_signature(did_key: &str, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    PublicKey::from_did_key(did_key)?.verify(msg, sig)
}
