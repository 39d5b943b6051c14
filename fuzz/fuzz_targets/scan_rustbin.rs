//! cargo-auditable dependency lists: the JSON, and zlib streams inside binaries.
#![no_main]

use atcr::scan::inventory::{binary::BinaryScanner, rustbin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rustbin::parse_json(data);
    let mut s = BinaryScanner::default();
    for c in data.chunks(97) {
        s.feed(c);
    }
    for p in s.finish() {
        assert!(!p.name.is_empty());
    }
});
