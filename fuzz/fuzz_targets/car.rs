//! ATProto car: arbitrary bytes must be refused cleanly, within the size limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    atcr::atproto::repo::fuzz_car(data);
});
