//! Syntax validators for ATProto identifiers (handle, DID, NSID, record key, TID, AT-URI).
//! Hand-written rather than regex-based so the crate needs no regex engine; the rules
//! follow atproto.com/specs and are checked against the interop `syntax/` vectors.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind}: {reason}")]
pub struct SyntaxError {
    pub kind: &'static str,
    pub reason: &'static str,
}

fn err(kind: &'static str, reason: &'static str) -> SyntaxError {
    SyntaxError { kind, reason }
}

/// One DNS-style label: 1-63 chars of [a-zA-Z0-9-], no leading/trailing hyphen.
fn dns_label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

pub fn validate_handle(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "handle";
    if s.len() > 253 {
        return Err(err(K, "longer than 253 characters"));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(err(K, "needs at least two labels"));
    }
    if !labels.iter().all(|l| dns_label_ok(l)) {
        return Err(err(K, "bad DNS label"));
    }
    let tld = labels[labels.len() - 1];
    if !tld.as_bytes()[0].is_ascii_alphabetic() {
        return Err(err(K, "top-level domain must start with a letter"));
    }
    Ok(())
}

pub fn validate_did(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "DID";
    if s.len() > 2048 {
        return Err(err(K, "longer than 2048 characters"));
    }
    let rest = s
        .strip_prefix("did:")
        .ok_or(err(K, "must start with did:"))?;
    let (method, id) = rest.split_once(':').ok_or(err(K, "missing method"))?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(err(K, "method must be lowercase letters"));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if id.is_empty() || !id.bytes().all(|b| ok(b) || b == b':' || b == b'%') {
        return Err(err(K, "bad identifier characters"));
    }
    if !id.bytes().last().is_some_and(ok) {
        return Err(err(K, "must not end in ':' or '%'"));
    }
    Ok(())
}

pub fn validate_at_identifier(s: &str) -> Result<(), SyntaxError> {
    if s.starts_with("did:") {
        validate_did(s)
    } else {
        validate_handle(s)
    }
}

pub fn validate_nsid(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "NSID";
    // Only the overall length (253 + 1 + 63) is limited; the vectors accept authorities
    // longer than a DNS name.
    if s.len() > 317 {
        return Err(err(K, "too long"));
    }
    let segs: Vec<&str> = s.split('.').collect();
    if segs.len() < 3 {
        return Err(err(K, "needs at least three segments"));
    }
    let (name, authority) = segs.split_last().ok_or(err(K, "empty"))?;
    if !authority.iter().all(|l| dns_label_ok(l)) {
        return Err(err(K, "bad domain segment"));
    }
    if authority[0].as_bytes()[0].is_ascii_digit() {
        return Err(err(K, "first segment must not start with a digit"));
    }
    if name.is_empty()
        || name.len() > 63
        || !name.as_bytes()[0].is_ascii_alphabetic()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(err(K, "bad name segment"));
    }
    Ok(())
}

pub fn validate_record_key(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "record key";
    if s.is_empty() || s.len() > 512 {
        return Err(err(K, "length must be 1-512"));
    }
    if s == "." || s == ".." {
        return Err(err(K, "'.' and '..' are not allowed"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'.' | b':' | b'-'))
    {
        return Err(err(K, "bad characters"));
    }
    Ok(())
}

/// base32-sortable alphabet used by TIDs.
pub(crate) const S32: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

pub fn validate_tid(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "TID";
    let b = s.as_bytes();
    if b.len() != 13 {
        return Err(err(K, "must be 13 characters"));
    }
    if !b.iter().all(|c| S32.contains(c)) {
        return Err(err(K, "bad characters"));
    }
    // The top bit of the 64-bit value must be zero, so the first char is at most 'j'.
    if !b"234567abcdefghij".contains(&b[0]) {
        return Err(err(K, "high bit set"));
    }
    Ok(())
}

/// Strict AT-URI: `at://<did|handle>[/<nsid>[/<rkey>]]` with an optional `#/fragment`.
pub fn validate_at_uri(s: &str) -> Result<(), SyntaxError> {
    const K: &str = "AT-URI";
    if s.len() > 8 * 1024 {
        return Err(err(K, "too long"));
    }
    let (path, fragment) = match s.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (s, None),
    };
    let rest = path
        .strip_prefix("at://")
        .ok_or(err(K, "must start with at://"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() > 3 {
        return Err(err(K, "too many path segments"));
    }
    validate_at_identifier(parts[0]).map_err(|_| err(K, "bad authority"))?;
    if let Some(coll) = parts.get(1) {
        validate_nsid(coll).map_err(|_| err(K, "bad collection"))?;
    }
    if let Some(rkey) = parts.get(2) {
        validate_record_key(rkey).map_err(|_| err(K, "bad record key"))?;
    }
    if let Some(f) = fragment {
        let ok = f.starts_with('/')
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~:@!$&')(*+,;=-[]/\\".contains(&b));
        if !ok {
            return Err(err(K, "bad fragment"));
        }
    }
    Ok(())
}
