//! npm lockfiles and installed package.json files.
#![no_main]

use atcr::scan::inventory::npm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for p in npm::parse_lock(data) {
        assert!(!p.name.is_empty() && !p.version.is_empty());
    }
    let _ = npm::parse_package_json(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = npm::is_installed_package_json(s);
    }
});
