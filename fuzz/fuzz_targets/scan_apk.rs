//! Alpine's installed database (packages and the file list).
#![no_main]

use atcr::scan::inventory::apk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for p in apk::parse_installed(data) {
        assert!(!p.name.is_empty() && !p.version.is_empty());
    }
    let _ = apk::owned_paths(data);
});
