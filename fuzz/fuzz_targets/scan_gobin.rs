//! Go build info: the block parser, and the streaming binary scanner fed in odd chunks.
#![no_main]

use atcr::scan::inventory::{binary::BinaryScanner, gobin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut block = gobin::MAGIC.to_vec();
    block.extend_from_slice(data);
    let _ = gobin::parse(&block);
    let _ = gobin::stdlib_version(&String::from_utf8_lossy(data));
    let mut s = BinaryScanner::default();
    let step = 1 + data.first().copied().unwrap_or(0) as usize;
    for c in block.chunks(step) {
        s.feed(c);
    }
    let _ = s.finish();
});
