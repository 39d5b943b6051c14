//! DAG-CBOR encoding and bounded decoding (one CBOR stack: `serde_ipld_dagcbor`).
//!
//! Encoding is canonical by construction (the serializer sorts map keys length-first and
//! uses minimal integer heads). Decoding of outside bytes first runs a cheap structural
//! scan so that oversized blocks, deep nesting, indefinite lengths and absurd length
//! claims are rejected before any allocation or recursion happens in serde.

use super::cid::{cid_for_dag_cbor, Cid};
pub use ipld_core::ipld::Ipld;
use serde::{de::DeserializeOwned, Serialize};

/// Largest block we accept from outside (records are far smaller; the limit bounds memory).
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;
/// Deepest nesting of arrays/maps/tags we accept. ATProto records are shallow; serde
/// recursion is bounded here far below the stack size of small (2 MiB) threads.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DagCborError {
    #[error("block too large: {size} bytes > {max}")]
    TooLarge { size: usize, max: usize },
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
    #[error("malformed CBOR: {0}")]
    Malformed(&'static str),
    #[error("DAG-CBOR decode failed: {0}")]
    Decode(String),
    #[error("DAG-CBOR encode failed: {0}")]
    Encode(String),
    #[error("block is not canonical DAG-CBOR")]
    NotCanonical,
}

/// Limits applied when decoding untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_size: usize,
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_size: MAX_BLOCK_SIZE,
            max_depth: MAX_DEPTH,
        }
    }
}

/// Serializes any serde value to DAG-CBOR.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DagCborError> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| DagCborError::Encode(e.to_string()))
}

/// Serializes and returns the block's CID along with its bytes.
pub fn encode_with_cid<T: Serialize + ?Sized>(value: &T) -> Result<(Cid, Vec<u8>), DagCborError> {
    let bytes = encode(value)?;
    Ok((cid_for_dag_cbor(&bytes), bytes))
}

/// Decodes untrusted bytes with the default limits.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DagCborError> {
    decode_with_limits(bytes, DecodeLimits::default())
}

pub fn decode_with_limits<T: DeserializeOwned>(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<T, DagCborError> {
    if bytes.len() > limits.max_size {
        return Err(DagCborError::TooLarge {
            size: bytes.len(),
            max: limits.max_size,
        });
    }
    let end = scan_item(bytes, limits.max_depth)?;
    if end != bytes.len() {
        return Err(DagCborError::Malformed("trailing bytes after item"));
    }
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DagCborError::Decode(e.to_string()))
}

/// Decodes to the generic IPLD data model.
pub fn decode_ipld(bytes: &[u8]) -> Result<Ipld, DagCborError> {
    decode(bytes)
}

/// Decodes and re-encodes, failing unless the input was byte-for-byte canonical
/// (sorted map keys, no duplicate keys). Used where a CID must be reproducible.
pub fn decode_canonical(bytes: &[u8]) -> Result<Ipld, DagCborError> {
    let value: Ipld = decode(bytes)?;
    if encode(&value)? != bytes {
        return Err(DagCborError::NotCanonical);
    }
    Ok(value)
}

/// Walks one CBOR item starting at `buf[0]` without recursion and returns its length.
/// Rejects indefinite lengths, reserved additional-info values, tags other than 42,
/// nesting beyond `max_depth` and length claims that exceed the remaining input.
pub fn scan_item(buf: &[u8], max_depth: usize) -> Result<usize, DagCborError> {
    // Each stack entry is the number of items still owed by an open array/map/tag.
    let mut stack: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    loop {
        let (major, arg, head_len) = read_head(&buf[pos..])?;
        pos += head_len;
        let remaining = (buf.len() - pos) as u64;
        let mut opened = None;
        match major {
            0 | 1 | 7 => {}
            2 | 3 => {
                if arg > remaining {
                    return Err(DagCborError::Malformed("string longer than input"));
                }
                pos += arg as usize;
            }
            4 => opened = Some(arg),
            5 => {
                let items = arg
                    .checked_mul(2)
                    .ok_or(DagCborError::Malformed("map length overflow"))?;
                opened = Some(items);
            }
            6 => {
                if arg != 42 {
                    return Err(DagCborError::Malformed("only tag 42 (CID) is allowed"));
                }
                opened = Some(1);
            }
            _ => return Err(DagCborError::Malformed("unknown major type")),
        }
        if let Some(items) = opened {
            // Every item takes at least one byte, so a claim beyond the input is a lie.
            if items > remaining {
                return Err(DagCborError::Malformed("container longer than input"));
            }
            if items > 0 {
                if stack.len() >= max_depth {
                    return Err(DagCborError::TooDeep(max_depth));
                }
                stack.push(items);
                continue;
            }
        }
        // One item finished: pop every container it completes.
        loop {
            match stack.last_mut() {
                None => return Ok(pos),
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        stack.pop();
                    } else {
                        break;
                    }
                }
            }
        }
    }
}

/// Returns (major type, argument, head length).
fn read_head(buf: &[u8]) -> Result<(u8, u64, usize), DagCborError> {
    let first = *buf
        .first()
        .ok_or(DagCborError::Malformed("unexpected end"))?;
    let major = first >> 5;
    let info = first & 0x1f;
    let extra = match info {
        0..=23 => return Ok((major, u64::from(info), 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Err(DagCborError::Malformed("indefinite length not allowed")),
        _ => return Err(DagCborError::Malformed("reserved additional info")),
    };
    let bytes = buf
        .get(1..1 + extra)
        .ok_or(DagCborError::Malformed("unexpected end"))?;
    let mut arg = 0u64;
    for b in bytes {
        arg = (arg << 8) | u64::from(*b);
    }
    // Major type 7 carries float bits, not a length; leave it to serde.
    Ok((major, arg, 1 + extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_deep_nesting() {
        let mut buf = vec![0x81u8; 100];
        buf.push(0x00);
        assert_eq!(
            decode_ipld(&buf).unwrap_err(),
            DagCborError::TooDeep(MAX_DEPTH)
        );
    }

    #[test]
    fn rejects_huge_claims() {
        // array claiming 2^63 entries
        let buf = [0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_ipld(&buf).is_err());
        assert!(decode_ipld(&[0x5f]).is_err());
    }
}
