//! Garbage collection across the registry and the hold, as domain logic (no HTTP): used by
//! `atcr gc` and the admin panel. A blob is kept when a repository links it, when a hold
//! layer record names it, or when it was completed through the hold API in the last 24 h
//! and no `notifyManifest` has named it yet (see `ARCHITECTURE.md`, invariants).

use std::collections::HashSet;

use crate::hold::HoldService;
use crate::oci::types::Digest;
use crate::registry::Registry;

/// Blobs no repository links and no hold layer record names are removed (or listed with
/// `dry_run`). If the hold's records cannot be read nothing is removed.
pub async fn collect_garbage(
    registry: &Registry,
    hold: Option<&HoldService>,
    dry_run: bool,
) -> Result<Vec<Digest>, String> {
    collect_garbage_among(registry, hold, dry_run, None).await
}

/// [`collect_garbage`] limited to the blobs in `only` (when given): what a reviewed preview
/// listed, minus whatever became referenced since.
pub async fn collect_garbage_among(
    registry: &Registry,
    hold: Option<&HoldService>,
    dry_run: bool,
    only: Option<&HashSet<String>>,
) -> Result<Vec<Digest>, String> {
    let result = sweep(registry, hold, dry_run, only).await;
    crate::metrics::gc_run(dry_run, result.as_ref().map(Vec::len).map_err(|_| ()));
    result
}

async fn sweep(
    registry: &Registry,
    hold: Option<&HoldService>,
    dry_run: bool,
    only: Option<&HashSet<String>>,
) -> Result<Vec<Digest>, String> {
    let keep = match hold {
        Some(h) => h
            .referenced_digests()
            .await
            .map_err(|e| format!("cannot read the hold's layer records: {e}"))?,
        None => Default::default(),
    };
    registry
        .gc_keeping(dry_run, &keep, only)
        .await
        .map_err(|e| e.to_string())
}
