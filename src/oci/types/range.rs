//! The two range headers the API takes: `Range: bytes=a-b` on blob GET (RFC 9110, a single
//! range only) and `Content-Range: a-b` on upload PATCH (the OCI form, no unit).

/// A resolved, inclusive byte range inside a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable Range header (absent, another unit, or multiple ranges): send the whole body.
    Full,
    Partial(ByteRange),
    /// Syntactically fine but outside the blob: 416.
    Unsatisfiable,
}

/// Resolve a `Range` request header against a blob of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeOutcome {
    if header.len() > 256 {
        return RangeOutcome::Full;
    }
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        // Multipart byteranges are not worth their complexity for blobs; RFC 9110 lets a
        // server ignore Range and answer 200.
        return RangeOutcome::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match parse(suffix) {
            Some(0) => RangeOutcome::Unsatisfiable,
            Some(n) if size == 0 => {
                let _ = n;
                RangeOutcome::Unsatisfiable
            }
            Some(n) => RangeOutcome::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
            None => RangeOutcome::Full,
        },
        (start, "") => match parse(start) {
            Some(s) if s < size => RangeOutcome::Partial(ByteRange {
                start: s,
                end: size - 1,
            }),
            Some(_) => RangeOutcome::Unsatisfiable,
            None => RangeOutcome::Full,
        },
        (start, end) => match (parse(start), parse(end)) {
            (Some(s), Some(e)) if s > e => RangeOutcome::Full,
            (Some(s), Some(_)) if s >= size => RangeOutcome::Unsatisfiable,
            (Some(s), Some(e)) => RangeOutcome::Partial(ByteRange {
                start: s,
                end: e.min(size - 1),
            }),
            _ => RangeOutcome::Full,
        },
    }
}

/// Parse an upload `Content-Range: <start>-<end>` (inclusive). Returns None if malformed.
pub fn parse_content_range(header: &str) -> Option<ByteRange> {
    if header.len() > 64 {
        return None;
    }
    // Some clients send the RFC form `bytes a-b/*`; accept it too.
    let h = header.trim();
    let h = h
        .strip_prefix("bytes ")
        .or_else(|| h.strip_prefix("bytes="))
        .unwrap_or(h);
    let h = h.split('/').next()?;
    let (a, b) = h.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let (start, end) = (num(a)?, num(b)?);
    (start <= end).then_some(ByteRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Partial(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            Partial(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Partial(ByteRange { start: 50, end: 99 })
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("bytes=9-1", 100), Full);
        assert_eq!(parse_range("bytes=x-1", 100), Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("0-99"),
            Some(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ByteRange {
                start: 100,
                end: 199
            })
        );
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("-4"), None);
        assert_eq!(parse_content_range("abc"), None);
    }
}
