//! A whole layer through the walker (gzip/zstd/plain detection, tar, whiteouts, every
//! inventory parser the paths select) under small caps: never a panic, never more than the
//! caps, and the inventory of a second layer applies on top.
#![no_main]

use atcr::scan::walk::{Limits, Walker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_layer_bytes: 8 << 20,
        max_image_bytes: 16 << 20,
        max_entries: 10_000,
        max_file_bytes: 1 << 20,
        max_binary_bytes: 4 << 20,
        max_layers: 4,
    };
    let mut w = Walker::new(limits);
    let half = data.len() / 2;
    let _ = w.add_layer(&data[..half]);
    let _ = w.add_layer(&data[half..]);
    let inv = w.finish();
    assert!(inv.stats.bytes <= 16 << 20 || inv.stats.layers <= 2);
    for p in &inv.packages {
        assert!(!p.package.name.is_empty() && !p.package.version.is_empty());
    }
});
