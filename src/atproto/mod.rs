//! The ATProto layer: today the pure repository code ([`repo`]: DAG-CBOR, CIDs, MST, signed
//! commits, CAR, identifier syntax, keys); identity resolution and the XRPC client join it
//! with the auth issue. Nothing here knows about HTTP servers, redb or the registry.

pub mod repo;
