//! Python core metadata (METADATA / PKG-INFO).
#![no_main]

use atcr::scan::inventory::python;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = python::parse_metadata(data) {
        assert!(!p.name.is_empty() && !p.version.is_empty());
        let n = python::normalize_name(&p.name);
        assert_eq!(python::normalize_name(&n), n);
    }
});
