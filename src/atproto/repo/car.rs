//! CAR v1: a DAG-CBOR header `{version: 1, roots: [cid]}` followed by blocks, each
//! `varint(len) || cid bytes || data`. The reader pulls from any `Read` one block at a
//! time, bounds every length before allocating, and checks each block's hash.

use super::blockstore::BlockMap;
use super::cid::{verify_block, Cid, CidError};
use super::dagcbor::{self, DagCborError, DecodeLimits};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("CAR read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("CAR truncated")]
    Truncated,
    #[error("bad varint in CAR")]
    Varint,
    #[error("CAR header of {0} bytes exceeds the limit")]
    HeaderTooLarge(u64),
    #[error("CAR header: {0}")]
    Header(#[from] DagCborError),
    #[error("unsupported CAR version {0}")]
    Version(u64),
    #[error("CAR must have exactly one root, found {0}")]
    RootCount(usize),
    #[error("CAR block of {0} bytes exceeds the limit")]
    BlockTooLarge(u64),
    #[error("CAR has more than {0} blocks")]
    TooManyBlocks(usize),
    #[error("CAR is larger than {0} bytes")]
    TooLarge(u64),
    #[error("CAR block CID: {0}")]
    Cid(String),
    #[error(transparent)]
    Block(#[from] CidError),
    #[error("CAR root {0} is not among its blocks")]
    MissingRoot(Cid),
}

#[derive(Serialize, Deserialize)]
struct CarHeader {
    version: u64,
    roots: Vec<Cid>,
}

/// Limits for reading untrusted CARs.
#[derive(Debug, Clone, Copy)]
pub struct CarLimits {
    pub max_header_size: usize,
    pub max_block_size: usize,
    pub max_blocks: usize,
    pub max_total_bytes: u64,
}

impl Default for CarLimits {
    fn default() -> Self {
        CarLimits {
            max_header_size: 1024,
            max_block_size: dagcbor::MAX_BLOCK_SIZE,
            max_blocks: 1_000_000,
            max_total_bytes: 1 << 30,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds a CAR in memory.
#[derive(Debug)]
pub struct CarWriter {
    buf: Vec<u8>,
}

impl CarWriter {
    pub fn new(roots: &[Cid]) -> Result<CarWriter, CarError> {
        let header = dagcbor::encode(&CarHeader {
            version: 1,
            roots: roots.to_vec(),
        })?;
        let mut buf = Vec::with_capacity(header.len() + 4096);
        put_varint(&mut buf, header.len() as u64);
        buf.extend_from_slice(&header);
        Ok(CarWriter { buf })
    }

    pub fn add(&mut self, cid: &Cid, data: &[u8]) {
        let cid_bytes = cid.to_bytes();
        put_varint(&mut self.buf, (cid_bytes.len() + data.len()) as u64);
        self.buf.extend_from_slice(&cid_bytes);
        self.buf.extend_from_slice(data);
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A CAR with one root and the given blocks, in CID order (deterministic output).
pub fn write_car(root: Cid, blocks: &BlockMap) -> Result<Vec<u8>, CarError> {
    let mut w = CarWriter::new(&[root])?;
    for (cid, data) in blocks {
        w.add(cid, data);
    }
    Ok(w.finish())
}

/// Streaming reader: the header is read by [`CarReader::new`], blocks by `next()`.
pub struct CarReader<R: Read> {
    reader: R,
    limits: CarLimits,
    roots: Vec<Cid>,
    blocks_read: usize,
    bytes_read: u64,
}

/// Reads an unsigned LEB128 varint; `Ok(None)` on clean EOF before the first byte.
fn read_varint<R: Read>(r: &mut R) -> Result<Option<(u64, u64)>, CarError> {
    let mut v: u64 = 0;
    for i in 0..10u32 {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(CarError::Truncated)
            };
        }
        let byte = b[0];
        if i == 9 && byte > 1 {
            return Err(CarError::Varint);
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(CarError::Varint); // non-minimal
            }
            return Ok(Some((v, u64::from(i) + 1)));
        }
    }
    Err(CarError::Varint)
}

fn read_exact_vec<R: Read>(r: &mut R, len: usize) -> Result<Vec<u8>, CarError> {
    let mut buf = Vec::new();
    // take() + read_to_end grows the buffer only as data actually arrives.
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(CarError::Truncated);
    }
    Ok(buf)
}

impl<R: Read> CarReader<R> {
    pub fn new(mut reader: R, limits: CarLimits) -> Result<CarReader<R>, CarError> {
        let (len, vlen) = read_varint(&mut reader)?.ok_or(CarError::Truncated)?;
        if len > limits.max_header_size as u64 {
            return Err(CarError::HeaderTooLarge(len));
        }
        let raw = read_exact_vec(&mut reader, len as usize)?;
        let header: CarHeader = dagcbor::decode_with_limits(
            &raw,
            DecodeLimits {
                max_size: limits.max_header_size,
                max_depth: 4,
            },
        )?;
        if header.version != 1 {
            return Err(CarError::Version(header.version));
        }
        Ok(CarReader {
            reader,
            limits,
            roots: header.roots,
            blocks_read: 0,
            bytes_read: vlen + len,
        })
    }

    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        let Some((len, vlen)) = read_varint(&mut self.reader)? else {
            return Ok(None);
        };
        // A CIDv1 sha256 is 36 bytes; allow some slack for other CIDs before rejecting.
        if len > self.limits.max_block_size as u64 + 64 {
            return Err(CarError::BlockTooLarge(len));
        }
        self.bytes_read += vlen + len;
        if self.bytes_read > self.limits.max_total_bytes {
            return Err(CarError::TooLarge(self.limits.max_total_bytes));
        }
        if self.blocks_read >= self.limits.max_blocks {
            return Err(CarError::TooManyBlocks(self.limits.max_blocks));
        }
        self.blocks_read += 1;
        let section = read_exact_vec(&mut self.reader, len as usize)?;
        let mut cursor = std::io::Cursor::new(&section[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::Cid(e.to_string()))?;
        let data = &section[cursor.position() as usize..];
        if data.len() > self.limits.max_block_size {
            return Err(CarError::BlockTooLarge(data.len() as u64));
        }
        verify_block(&cid, data)?;
        Ok(Some((cid, Bytes::copy_from_slice(data))))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Bytes), CarError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

/// Reads a whole CAR into memory.
pub fn read_car(bytes: &[u8], limits: CarLimits) -> Result<(Vec<Cid>, BlockMap), CarError> {
    let mut reader = CarReader::new(bytes, limits)?;
    let mut blocks = BlockMap::new();
    for block in reader.by_ref() {
        let (cid, data) = block?;
        blocks.insert(cid, data);
    }
    Ok((reader.roots, blocks))
}

/// Reads a CAR that must have exactly one root, present among its blocks.
pub fn read_car_with_root(bytes: &[u8], limits: CarLimits) -> Result<(Cid, BlockMap), CarError> {
    let (roots, blocks) = read_car(bytes, limits)?;
    if roots.len() != 1 {
        return Err(CarError::RootCount(roots.len()));
    }
    let root = roots[0];
    if !blocks.contains_key(&root) {
        return Err(CarError::MissingRoot(root));
    }
    Ok((root, blocks))
}
