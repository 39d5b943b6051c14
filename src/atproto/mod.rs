//! The ATProto layer: the pure repository code ([`repo`]: DAG-CBOR, CIDs, MST, signed
//! commits, CAR, identifier syntax, keys), firehose frames ([`firehose`], pure), the XRPC
//! client ([`xrpc`]), identity resolution ([`identity`]), and the DPoP proofs and ES256 JWTs
//! of ATProto OAuth ([`dpop`]). Nothing here knows about HTTP servers, redb or the registry.

pub mod dpop;
pub mod firehose;
pub mod identity;
pub mod repo;
pub mod xrpc;
