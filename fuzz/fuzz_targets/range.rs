//! `Range` and `Content-Range` headers: resolved ranges always lie inside the blob.
#![no_main]

use atcr::oci::types::range::{parse_content_range, parse_range, RangeOutcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let Ok(h) = std::str::from_utf8(&data[8..]) else { return };
    if let RangeOutcome::Partial(r) = parse_range(h, size) {
        assert!(r.start <= r.end && r.end < size, "{h:?} size {size} gave {r:?}");
    }
    if let Some(r) = parse_content_range(h) {
        assert!(r.start <= r.end);
    }
});
