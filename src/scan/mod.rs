//! The vulnerability scanner (in-process, no external service).
pub mod version;
