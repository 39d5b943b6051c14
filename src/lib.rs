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
//! - [`redb_file`]: opens every redb file (so `atcr backup` can snapshot them while in use).
//! - [`backup`]: `atcr backup` / `atcr restore`: consistent online snapshots of the data dir.
//! - [`ttl_map`]: the bounded expiring map behind the identity caches and the pull-miss memory.
//! - [`web`]: the browser UI (askama + htmx, embedded assets, cookie sessions, CSRF) and the
//!   hold admin panel at `/admin`.
//!
//! See `ARCHITECTURE.md` for the data flow of a push and a pull.

pub mod app;
pub mod atproto;
pub mod auth;
pub mod backup;
pub mod blob;
pub mod config;
pub mod gc;
pub mod hold;
pub mod index;
pub mod oci;
pub mod pds;
pub mod redb_file;
pub mod registry;
pub mod server;
pub mod ttl_map;
pub mod web;
