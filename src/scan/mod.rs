//! The vulnerability scanner (in-process, no external service).
pub mod inventory;
pub mod tar;
pub mod version;
pub mod vulndb;
pub mod walk;
