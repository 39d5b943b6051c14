//! The repository page's edit form (`multipart/form-data` from any logged-in browser): the
//! first line of the input is the Content-Type, the rest the body. Whatever arrives, the
//! parser ends with a form inside the limits or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(content_type) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or_default();
    if let Ok(form) = atcr::web::page_form::parse_page_form_bytes(content_type, body) {
        if let Some(a) = &form.avatar {
            assert!(a.len() <= atcr::web::page_form::MAX_PAGE_AVATAR_BYTES);
        }
        assert!(form.field("description").len() <= 100_000 + 4096);
    }
});
