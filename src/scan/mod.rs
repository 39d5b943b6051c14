//! The vulnerability scanner (in-process, no external service).
pub mod inventory;
pub mod license;
pub mod matcher;
pub mod purl;
pub mod report;
pub mod sbom;
pub mod tar;
pub mod version;
pub mod vulndb;
pub mod walk;
