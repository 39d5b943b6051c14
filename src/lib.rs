//! atcr: an OCI container registry on the AT Protocol.
//!
//! # Layout
//! - [`config`]: typed configuration (TOML + `ATCR_*` env overrides), validation, `config init`.
//! - [`app`]: the floor below the handlers: `AppState`, the composition root
//!   (`build_state`) and the HTTP helpers every handler shares.
//! - [`server`]: hyper accept loop and the single route table (above the handlers).
//! - [`gc`]: garbage collection across the registry and the hold (domain logic).
//! - [`oci`]: the OCI Distribution API surface: types (digest, name, manifest), the error
//!   table, thin handlers.
//! - [`registry`]: registry domain logic with no HTTP in it: upload sessions, blob links,
//!   the local manifest/tag store, referrers.
//! - [`blob`]: blob storage backends behind one trait (filesystem today).
//! - [`atproto`]: the ATProto layer; [`atproto::repo`] is pure (DAG-CBOR, CID, MST, commits, CAR),
//!   [`atproto::xrpc`] is the XRPC client, [`atproto::identity`] resolves handles and DIDs.
//! - [`auth`]: Docker token auth (`/auth/token`, registry JWTs, PDS sessions sealed at rest).
//! - [`pds`]: the hold's embedded PDS (redb carstore, records, XRPC read/sync API, firehose).
//! - [`hold`]: the `io.atcr.hold.*` API (service tokens, crew rules, uploads, notifyManifest, quotas).
//! - [`metrics`]: process-wide Prometheus metrics (bounded labels) and the `/metrics` text.
//! - [`scan`]: the in-process vulnerability scanner (layers streamed, package inventories,
//!   SPDX SBOMs, a local OSV database, `io.atcr.hold.scan` records).
//! - [`redb_file`]: opens every redb file (so `atcr backup` can snapshot them while in use).
//! - [`backup`]: `atcr backup` / `atcr restore`: consistent online snapshots of the data dir.
//! - [`ttl_map`]: the bounded expiring map behind the identity caches and the pull-miss memory.
//! - [`web`]: the browser UI (askama + htmx, embedded assets, cookie sessions, CSRF) and the
//!   hold admin panel at `/admin`.
//!
//! See `ARCHITECTURE.md` for the data flow of a push and a pull.

// Feature `server` (on by default) is the whole program. Without it (`default-features =
// false`, how `fuzz/` builds the crate) only the pure parsers of outside data compile: no
// libsql, reqwest, rust-s3, hyper, askama, tungstenite or hickory, so the sanitizer build
// instruments none of them. A new module goes under `server` unless it is a pure parser
// that a fuzz target needs; then it is listed in the `not(server)` blocks too.

pub mod ttl_map;

#[cfg(all(test, feature = "server"))]
mod fuzz_seeds;

#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod atproto;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod backup;
#[cfg(feature = "server")]
pub mod blob;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod gc;
#[cfg(feature = "server")]
pub mod hold;
#[cfg(feature = "server")]
pub mod hold_client;
#[cfg(feature = "server")]
pub mod index;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod oci;
#[cfg(feature = "server")]
pub mod pds;
#[cfg(feature = "server")]
pub mod redb_file;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod scan;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod web;

/// The pure parsers only (fuzz build).
#[cfg(not(feature = "server"))]
pub mod atproto {
    pub mod firehose;
    pub mod repo;
}
/// The pure parsers only (fuzz build).
#[cfg(not(feature = "server"))]
pub mod oci {
    pub mod error;
    pub mod route;
    pub mod types;
}
/// The pure parsers only (fuzz build).
#[cfg(not(feature = "server"))]
pub mod web {
    pub mod markdown;
    pub mod page_form;
}
/// The pure parsers only (fuzz build): layers, package inventories, versions, SBOMs, OSV.
#[cfg(not(feature = "server"))]
pub mod scan {
    pub mod inventory;
    pub mod license;
    pub mod purl;
    pub mod sbom;
    pub mod tar;
    pub mod version;
    pub mod walk;
    pub mod vulndb {
        pub mod osv;
    }
}
