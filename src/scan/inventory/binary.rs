//! One streaming pass over an executable that finds both Go build info
//! ([`super::gobin`]) and a cargo-auditable dependency list ([`super::rustbin`]), with
//! bounded memory: a small carry-over between chunks, at most [`gobin::MAX_BUILDINFO`]
//! bytes captured after a Go magic and [`rustbin::MAX_JSON`] bytes of inflated JSON.
//!
//! The cargo-auditable data is found without the ELF section table: every zlib header
//! (`0x78` and a valid flag byte) is tried by inflating a few bytes, and only a stream that
//! starts with `{"packages":[` is taken.

use flate2::{Decompress, FlushDecompress, Status};

use super::gobin::{self, BuildInfo, Parsed};
use super::{rustbin, Package};

/// Bytes kept from one chunk to the next, so a marker split by a chunk edge is still seen.
const LOOKAHEAD: usize = 64;

enum Go {
    Searching,
    Capturing(Vec<u8>),
    Done(BuildInfo),
}

enum Rust {
    Searching,
    Inflating { dec: Box<Decompress>, out: Vec<u8> },
    Done(Vec<Package>),
    Given,
}

pub struct BinaryScanner {
    /// The tail of what was already fed (at most [`LOOKAHEAD`] bytes), at absolute
    /// offset `tail_at`.
    tail: Vec<u8>,
    tail_at: u64,
    /// Zlib candidates before this absolute offset were tried already.
    tried_upto: u64,
    go: Go,
    rust: Rust,
    trial: Box<Decompress>,
}

impl Default for BinaryScanner {
    fn default() -> Self {
        BinaryScanner {
            tail: Vec::new(),
            tail_at: 0,
            tried_upto: 0,
            go: Go::Searching,
            rust: Rust::Searching,
            trial: Box::new(Decompress::new(false)),
        }
    }
}

/// A zlib stream header without a preset dictionary, as deflate encoders write it.
fn zlib_header(b0: u8, b1: u8) -> bool {
    b0 == 0x78 && matches!(b1, 0x01 | 0x5e | 0x9c | 0xda)
}

impl BinaryScanner {
    /// True once nothing more can be learnt from further bytes.
    pub fn finished(&self) -> bool {
        matches!(self.go, Go::Done(_)) && matches!(self.rust, Rust::Done(_) | Rust::Given)
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() || self.finished() {
            return;
        }
        let mut buf = std::mem::take(&mut self.tail);
        let base = self.tail_at;
        buf.extend_from_slice(chunk);
        self.feed_go(&buf, chunk);
        self.feed_rust(&buf, base, chunk, false);
        let keep = buf.len().min(LOOKAHEAD);
        self.tail_at = base + (buf.len() - keep) as u64;
        self.tail = buf[buf.len() - keep..].to_vec();
    }

    fn feed_go(&mut self, buf: &[u8], chunk: &[u8]) {
        match &mut self.go {
            Go::Capturing(cap) => {
                let room = gobin::MAX_BUILDINFO + 64 - cap.len().min(gobin::MAX_BUILDINFO + 64);
                cap.extend_from_slice(&chunk[..chunk.len().min(room)]);
                self.settle_go();
            }
            Go::Searching => {
                if let Some(i) = memchr::memmem::find(buf, gobin::MAGIC) {
                    self.go = Go::Capturing(buf[i..].to_vec());
                    self.settle_go();
                }
            }
            Go::Done(_) => {}
        }
    }

    /// Parses the captured block; on a false magic, looks for the next one in it.
    fn settle_go(&mut self) {
        loop {
            let Go::Capturing(cap) = &mut self.go else {
                return;
            };
            match gobin::parse(cap) {
                Parsed::Done(info) => {
                    self.go = Go::Done(info);
                    return;
                }
                Parsed::NeedMore if cap.len() <= gobin::MAX_BUILDINFO => return,
                Parsed::NeedMore | Parsed::Invalid => {
                    match memchr::memmem::find(&cap[1..], gobin::MAGIC) {
                        Some(i) => {
                            cap.drain(..=i);
                        }
                        None => {
                            self.go = Go::Searching;
                            return;
                        }
                    }
                }
            }
        }
    }

    fn feed_rust(&mut self, buf: &[u8], base: u64, chunk: &[u8], at_end: bool) {
        if let Rust::Inflating { .. } = self.rust {
            self.inflate(chunk);
            return;
        }
        if !matches!(self.rust, Rust::Searching) {
            return;
        }
        let limit = if at_end {
            buf.len()
        } else {
            buf.len().saturating_sub(LOOKAHEAD)
        };
        let start = self.tried_upto.saturating_sub(base) as usize;
        let mut from = start.min(limit);
        while let Some(off) = memchr::memchr(0x78, &buf[from..limit]) {
            let p = from + off;
            from = p + 1;
            if p + 1 >= buf.len() || !zlib_header(buf[p], buf[p + 1]) {
                continue;
            }
            if self.starts_json(&buf[p + 2..]) {
                self.tried_upto = base + buf.len() as u64;
                self.rust = Rust::Inflating {
                    dec: Box::new(Decompress::new(false)),
                    out: Vec::new(),
                };
                self.inflate(&buf[p + 2..]);
                return;
            }
        }
        self.tried_upto = self.tried_upto.max(base + limit as u64);
    }

    fn starts_json(&mut self, data: &[u8]) -> bool {
        self.trial.reset(false);
        let mut out = [0u8; 16];
        let input = &data[..data.len().min(LOOKAHEAD)];
        match self
            .trial
            .decompress(input, &mut out, FlushDecompress::None)
        {
            Ok(_) => {
                let n = self.trial.total_out() as usize;
                n >= rustbin::JSON_PREFIX.len()
                    && out[..rustbin::JSON_PREFIX.len()] == *rustbin::JSON_PREFIX
            }
            Err(_) => false,
        }
    }

    fn inflate(&mut self, mut input: &[u8]) {
        let Rust::Inflating { dec, out } = &mut self.rust else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        while !input.is_empty() {
            let before_in = dec.total_in();
            let before_out = dec.total_out();
            let status = dec.decompress(input, &mut buf, FlushDecompress::None);
            let used = (dec.total_in() - before_in) as usize;
            let made = (dec.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() + made > rustbin::MAX_JSON {
                self.rust = Rust::Given;
                return;
            }
            out.extend_from_slice(&buf[..made]);
            match status {
                Ok(Status::StreamEnd) => {
                    let pkgs = rustbin::parse_json(out).unwrap_or_default();
                    self.rust = if pkgs.is_empty() {
                        Rust::Given
                    } else {
                        Rust::Done(pkgs)
                    };
                    return;
                }
                Ok(_) if used == 0 && made == 0 => return,
                Ok(_) => {}
                Err(_) => {
                    self.rust = Rust::Given;
                    return;
                }
            }
        }
    }

    /// Everything found: Go packages (stdlib, main module, dependencies) and Rust crates.
    pub fn finish(mut self) -> Vec<Package> {
        if matches!(self.rust, Rust::Searching) {
            let tail = std::mem::take(&mut self.tail);
            self.feed_rust(&tail, self.tail_at, &[], true);
        }
        let mut out = Vec::new();
        if let Go::Done(info) = self.go {
            out.extend(info.packages);
        }
        if let Rust::Done(p) = self.rust {
            out.extend(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn finds_auditable_data_across_chunk_edges() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"hex","version":"0.4.3","source":"crates.io"}]}"#;
        let mut file = b"\x7fELF".to_vec();
        // Noise with decoy zlib headers.
        for i in 0..100_000u32 {
            file.push((i.wrapping_mul(2_654_435_761) >> 24) as u8);
            if i % 997 == 0 {
                file.extend_from_slice(&[0x78, 0x9c, 1, 2, 3]);
            }
        }
        file.extend_from_slice(&zlib(json));
        file.extend_from_slice(&[0u8; 5000]);
        for chunk_size in [1usize, 7, 64, 4096, 1 << 20] {
            let mut s = BinaryScanner::default();
            for c in file.chunks(chunk_size) {
                s.feed(c);
            }
            let got: Vec<String> = s
                .finish()
                .iter()
                .map(|p| format!("{}@{}", p.name, p.version))
                .collect();
            assert_eq!(got, ["app@0.1.0", "hex@0.4.3"], "chunk size {chunk_size}");
        }
    }

    #[test]
    fn zlib_at_the_very_end() {
        let json = br#"{"packages":[{"name":"x","version":"1.0.0","source":"crates.io"}]}"#;
        let mut file = vec![0u8; 10];
        file.extend_from_slice(&zlib(json));
        let mut s = BinaryScanner::default();
        s.feed(&file);
        assert_eq!(s.finish().len(), 1);
    }
}
