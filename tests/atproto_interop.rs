//! The pure ATProto repo code (`atcr::atproto::repo`) against the official interop vectors
//! copied into `tests/fixtures/` (CC0): syntax, data model, crypto, MST, commit proofs, CAR.

mod common;

mod atproto {
    mod crypto;
    mod data_model;
    mod mst;
    mod repo_car;
    mod syntax;
}
