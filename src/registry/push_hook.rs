//! What the registry asks and tells the hold in this process: may this user upload (crew
//! rules), may this reader pull (a private hold), and the manifest push itself (design.md
//! section 4, push order: ... -> tag record -> local index -> hold `notifyManifest`). The
//! registry only knows this trait; the hold implements it (`hold::registry_hook`).

use crate::oci::types::manifest::ParsedManifest;
use crate::oci::types::{Digest, Name};

/// Whatever the hook must hold from `before_push` until `after_push` has returned (or the
/// push failed): dropped by the registry then. E.g. a per-user lock, so a quota checked in
/// `before_push` still holds when the push lands.
pub type PushPermit = Box<dyn std::any::Any + Send>;

/// Why the hold refuses a blob read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRefusal {
    /// Anonymous reader of a private hold: log in.
    AuthRequired(String),
    /// Authenticated, but without `blob:read` on the hold.
    Denied(String),
}

#[async_trait::async_trait]
pub trait PushHook: Send + Sync {
    /// Before a blob upload or mount into `name` starts (the hold's crew rules).
    /// `Err(message)`: refused with OCI `DENIED`.
    async fn before_upload(&self, _name: &Name) -> Result<(), String> {
        Ok(())
    }

    /// Before a blob of the hold is served to `reader` (the authenticated DID, `None` when
    /// anonymous): a private hold serves its crew only.
    async fn may_read(&self, _reader: Option<&str>) -> Result<(), ReadRefusal> {
        Ok(())
    }

    /// Before anything of the push becomes visible. `Err(message)`: the push is refused
    /// with OCI `DENIED` (e.g. the user's storage quota).
    async fn before_push(
        &self,
        name: &Name,
        manifest: &ParsedManifest,
    ) -> Result<Option<PushPermit>, String>;

    /// After the manifest is stored. Never fails the push: the hook logs its own failures.
    /// `manifest_uri`: the AT-URI of the owner's `io.atcr.manifest` record (`None` without
    /// a PDS, `auth.mode = "none"`).
    async fn after_push(
        &self,
        name: &Name,
        digest: &Digest,
        manifest: &ParsedManifest,
        tag: Option<&str>,
        manifest_uri: Option<&str>,
    );

    /// A manifest was pulled by tag (a `GET`, not `HEAD`): the pull counting rule lives in
    /// the hold's stats (`hold::stats`). Only enqueues; never blocks a pull.
    fn pulled(&self, _name: &Name) {}
}
