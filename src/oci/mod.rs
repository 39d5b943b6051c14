//! The OCI Distribution API surface: the types it parses from outside, the error table, the
//! path grammar under `/v2/`, and thin handlers that call into [`crate::registry`].
//!
//! Handlers translate HTTP to domain calls and back; they hold no storage logic.

pub mod error;
pub mod handlers;
pub mod route;
pub mod types;

pub use error::{ErrorCode, OciError};
