//! The vulnerability scanner (in-process, no external service).
pub mod engine;
pub mod inventory;
pub mod layout;
pub mod license;
pub mod matcher;
pub mod purl;
pub mod report;
pub mod sbom;
pub mod service;
pub mod tar;
pub mod version;
pub mod vulndb;
pub mod walk;
