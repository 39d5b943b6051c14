//! The scanner's tar reader: any bytes give entries or a clean error; entry data never
//! runs past what the header promised, and extension headers stay under their caps.
#![no_main]

use std::io::Read;

use atcr::scan::tar::{Kind, TarReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = TarReader::new(data);
    for _ in 0..10_000 {
        match r.next_entry() {
            Ok(Some(h)) => {
                assert!(h.path.len() <= 1 << 20);
                if h.kind == Kind::File && h.size < 1 << 20 {
                    let mut buf = Vec::new();
                    if r.by_ref().take(1 << 20).read_to_end(&mut buf).is_ok() {
                        assert!(buf.len() as u64 <= h.size);
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
