//! /etc/os-release.
#![no_main]

use atcr::scan::inventory::os_release;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = os_release::parse(data) {
        assert!(!d.id.is_empty() && d.id.len() <= 256);
    }
});
