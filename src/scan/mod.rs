//! The vulnerability scanner, in this process: every image pushed to the hold gets an SBOM
//! (SPDX 2.3) and a vulnerability report matched against a local OSV database, stored as an
//! `io.atcr.hold.scan` record with the two documents as its blobs. No scanner service, no
//! network at scan time.
//!
//! - [`walk`] reads an image's layers as streams (gzip, zstd, plain tar; our bounded
//!   [`tar`] reader), applies whiteouts in layer order, hands wanted files to the
//!   [`inventory`] parsers in memory and keeps only their results; caps on bytes, entries
//!   and file sizes stop decompression bombs and hostile archives.
//! - [`inventory`] has one parser per package database or metadata format (dpkg, apk, rpm,
//!   os-release, Python, npm, Go and Rust binaries, Java archives); each is fuzzed.
//! - [`version`] orders versions the way each ecosystem does; [`vulndb`] keeps OSV
//!   advisories (imported from export archives or directories, refreshed from URLs) and
//!   evaluates their ranges; [`matcher`] turns an inventory into findings.
//! - [`sbom`] and [`purl`] write (and read back) the SPDX document, [`license`] turns
//!   declared licences into SPDX expressions, [`report`] writes the vulnerability report
//!   (schema: `vulnerabilities.schema.json`).
//! - [`engine`] is one scan from layers to documents, without I/O of its own; [`service`]
//!   runs scans for the hold (bounded queue, low-priority workers, records and blobs, the
//!   database watcher, re-matching stored SBOMs after a database update); [`layout`] scans
//!   OCI layout directories for `atcr scan oci:<dir>`.
//!
//! Data flow and decisions: `ARCHITECTURE.md` ("Data flow: a scan", "The scanner").

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
