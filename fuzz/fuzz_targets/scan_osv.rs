//! OSV records: parsing, compaction (ecosystems, severities, CVSS) and range evaluation
//! with every ecosystem's version ordering.
#![no_main]

use atcr::scan::version::Scheme;
use atcr::scan::vulndb::osv::{affects, compact, Osv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Osv>(data) else { return };
    let (info, entries) = compact(&v);
    assert_eq!(info.keys.len(), entries.len());
    for (key, e) in &entries {
        let eco = key.split('\0').next().unwrap();
        let scheme = Scheme::for_ecosystem(eco).expect("only known ecosystems are kept");
        for probe in ["0", "1.0.0", "2.36-9", "1:3.0.7-24.el9", "1.0a1", "3.1.4-r5"] {
            let (hit, fixed) = affects(e, scheme, probe);
            if let Some(f) = fixed {
                assert!(hit, "a fixed version without a hit");
                assert!(!f.is_empty());
            }
        }
    }
});
