//! The ATProto layer: the pure repository code ([`repo`]: DAG-CBOR, CIDs, MST, signed
//! commits, CAR, identifier syntax, keys), firehose frames ([`firehose`], pure), the XRPC
//! client ([`xrpc`]), identity resolution ([`identity`]), the `io.atcr.*` records as typed
//! structs checked against their lexicons ([`records`]), and the DPoP proofs and ES256 JWTs
//! of ATProto OAuth ([`dpop`]). Nothing here knows about HTTP servers, redb or the registry.

pub mod dpop;
pub mod firehose;
pub mod identity;
pub mod records;
pub mod repo;
pub mod xrpc;
