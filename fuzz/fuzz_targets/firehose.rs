//! Firehose frames (`com.atproto.sync.subscribeRepos`): arbitrary bytes must be refused
//! cleanly, within the size limits, including commit verification of what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    atcr::atproto::firehose::fuzz_frame(data);
});
