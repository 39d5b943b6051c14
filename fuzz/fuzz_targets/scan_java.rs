//! Java archives read as a stream (nested jars too), pom.properties, MANIFEST.MF.
#![no_main]

use atcr::scan::inventory::java;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pkgs = java::scan_archive(&mut &data[..], "fuzz.jar");
    assert!(pkgs.len() <= 10_000);
    let _ = java::parse_pom_properties(data);
    let _ = java::parse_manifest(data);
});
