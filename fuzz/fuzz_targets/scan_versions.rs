//! Every version ordering is total and antisymmetric on arbitrary strings.
#![no_main]

use atcr::scan::version::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut parts = s.splitn(3, '\n');
    let (a, b, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    for scheme in [Scheme::Dpkg, Scheme::Apk, Scheme::Rpm, Scheme::Semver, Scheme::Pep440, Scheme::Maven] {
        let ab = scheme.compare(a, b);
        assert_eq!(ab, scheme.compare(b, a).reverse(), "{scheme:?} {a:?} {b:?}");
        assert_eq!(scheme.compare(a, a), std::cmp::Ordering::Equal, "{scheme:?} {a:?}");
        let _ = scheme.compare(b, c);
    }
});
