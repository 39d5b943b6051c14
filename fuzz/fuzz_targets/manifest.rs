//! Manifest and index parsing: arbitrary bytes under each manifest media type must parse or
//! fail cleanly, and whatever parses must describe itself consistently.
#![no_main]

use atcr::oci::types::manifest::{self, parse_manifest};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 6] = [
    manifest::OCI_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_MANIFEST,
    manifest::DOCKER_MANIFEST_LIST,
    "",
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let content_type = TYPES[data[0] as usize % TYPES.len()];
    if let Ok(m) = parse_manifest(content_type, &data[1..]) {
        match m.kind {
            manifest::ManifestKind::Image => assert!(m.config.is_some() && m.manifests.is_empty()),
            manifest::ManifestKind::Index => assert!(m.config.is_none() && m.layers.is_empty()),
        }
        let _ = m.referrer_artifact_type();
        let _ = m.required_blobs().count();
    }
});
