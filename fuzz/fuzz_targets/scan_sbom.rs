//! Reading SPDX documents back (rematch, UI) and package URLs.
#![no_main]

use atcr::scan::{purl, sbom};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = sbom::read(data) {
        let _ = sbom::to_inventory(&view);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some((p, d)) = purl::parse(s) {
            // What we parse, we write back to something we parse the same.
            let again = purl::of(&p, d.as_ref());
            assert_eq!(purl::parse(&again).map(|x| x.0), Some(p));
        }
    }
});
