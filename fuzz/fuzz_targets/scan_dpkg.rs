//! dpkg status / status.d files and DEP-5 copyright files.
#![no_main]

use atcr::scan::inventory::dpkg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for p in dpkg::parse_status(data) {
        assert!(!p.name.is_empty() && !p.version.is_empty());
        assert!(p.name.len() <= 256 && p.version.len() <= 256);
    }
    for l in dpkg::parse_copyright(data) {
        assert!(!l.is_empty() && l.len() <= 64);
    }
});
