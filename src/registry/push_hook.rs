//! What the registry tells the hold about a manifest push (design.md section 4, push order:
//! ... -> tag record -> local index -> hold `notifyManifest`). The registry only knows this
//! trait; the hold implements it (`hold::registry_hook`).

use crate::oci::types::manifest::ParsedManifest;
use crate::oci::types::{Digest, Name};

#[async_trait::async_trait]
pub trait PushHook: Send + Sync {
    /// Before anything of the push becomes visible. `Err(message)`: the push is refused
    /// with OCI `DENIED` (e.g. the user's storage quota).
    async fn before_push(&self, name: &Name, manifest: &ParsedManifest) -> Result<(), String>;

    /// After the manifest is stored. Never fails the push: the hook logs its own failures.
    async fn after_push(
        &self,
        name: &Name,
        digest: &Digest,
        manifest: &ParsedManifest,
        tag: Option<&str>,
    );
}
