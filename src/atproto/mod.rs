//! The ATProto layer: the pure repository code ([`repo`]: DAG-CBOR, CIDs, MST, signed
//! commits, CAR, identifier syntax, keys), the XRPC client ([`xrpc`]) and identity
//! resolution ([`identity`]), DPoP proofs and ES256 JWTs of ATProto OAuth ([`dpop`]). Nothing
//! here knows about HTTP servers, redb or the registry.

pub mod dpop;
pub mod identity;
pub mod repo;
pub mod xrpc;
