//! Parsers and newtypes for everything the OCI API takes from outside: digests, repository
//! names, tags, references, manifests, and the `Range`/`Content-Range` headers. All of them
//! bound their input size and are fuzzed (`fuzz/`).

pub mod digest;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use name::{Name, NameError, Reference, Tag};
