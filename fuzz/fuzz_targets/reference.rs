//! Names, tags, references, digests and OCI paths: never panic, and every accepted value
//! prints back to exactly the accepted text.
#![no_main]

use atcr::oci::types::{Digest, Name, Reference, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
    }
    if let Ok(n) = s.parse::<Name>() {
        assert_eq!(n.as_str(), s);
        assert!(n.as_str().len() <= 255);
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
    let _ = atcr::oci::route::parse(s);
});
