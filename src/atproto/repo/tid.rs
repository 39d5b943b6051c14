//! TIDs: 64-bit (zero top bit, 53-bit microsecond timestamp, 10-bit clock id) encoded as
//! 13 base32-sortable characters, so string order equals time order. Used for commit
//! `rev` and as record keys.

use super::syntax::{validate_tid, SyntaxError, S32};
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(String);

impl Tid {
    /// Builds a TID from its parts (timestamp truncated to 53 bits, clock id to 10 bits).
    pub fn from_parts(micros: u64, clock_id: u16) -> Tid {
        let v = ((micros & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
        Tid::from_u64(v)
    }

    fn from_u64(v: u64) -> Tid {
        let mut out = [0u8; 13];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 60 - 5 * i as u32;
            *c = S32[((v >> shift) & 0x1f) as usize];
        }
        // Every byte comes from the ASCII alphabet.
        Tid(out.iter().map(|&b| b as char).collect())
    }

    pub fn parse(s: &str) -> Result<Tid, SyntaxError> {
        validate_tid(s)?;
        Ok(Tid(s.to_string()))
    }

    pub fn as_u64(&self) -> u64 {
        self.0.bytes().fold(0u64, |acc, b| {
            // parse() guarantees the alphabet; position() is total here.
            let d = S32.iter().position(|&c| c == b).unwrap_or(0) as u64;
            (acc << 5) | d
        })
    }

    pub fn timestamp_micros(&self) -> u64 {
        self.as_u64() >> 10
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh TID from the system clock, strictly greater than any earlier one handed
    /// out by this process (the clock may step back or repeat within a microsecond).
    pub fn now() -> Tid {
        static LAST: Mutex<u64> = Mutex::new(0);
        static CLOCK_ID: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
        let clock_id = *CLOCK_ID.get_or_init(|| {
            let mut b = [0u8; 2];
            // Falls back to 0 if the OS has no entropy; uniqueness then rests on time alone.
            let _ = rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b);
            u16::from_le_bytes(b) & 0x3ff
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let micros = now.max(*last + 1);
        *last = micros;
        Tid::from_parts(micros, clock_id)
    }

    /// The smallest TID strictly greater than `self` (for rev monotonicity when the
    /// clock is behind the previous commit).
    pub fn successor(&self) -> Tid {
        Tid::from_u64(self.as_u64() + (1 << 10))
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Tid {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_monotonic() {
        let t = Tid::from_parts(1_700_000_000_000_000, 5);
        assert_eq!(Tid::parse(t.as_str()).unwrap(), t);
        assert_eq!(t.timestamp_micros(), 1_700_000_000_000_000);
        let mut prev = Tid::now();
        for _ in 0..1000 {
            let n = Tid::now();
            assert!(n > prev);
            prev = n;
        }
        assert!(t.successor() > t);
    }
}
