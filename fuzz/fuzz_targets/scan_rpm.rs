//! rpmdb.sqlite through the bounded SQLite reader, and raw RPM header blobs.
#![no_main]

use atcr::scan::inventory::{rpm, sqlite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pkgs) = rpm::parse_rpmdb_sqlite(data) {
        for p in pkgs {
            assert!(!p.name.is_empty());
        }
    }
    let _ = rpm::parse_header(data);
    if let Ok(db) = sqlite::Db::open(data) {
        let _ = db.scan_table(1, 1000, |_, _| true);
    }
    let _ = sqlite::record(data);
});
