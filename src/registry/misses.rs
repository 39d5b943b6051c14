//! A short memory of pull misses: manifests that neither the local copy nor the owner's PDS
//! has. Clients poll for tags that do not exist yet (CI jobs waiting for an image, scanners
//! walking names); without this memory every poll costs two or three requests to somebody
//! else's PDS. Only a clean "not there" from the PDS is remembered, never an error, and the
//! local copy is always read first, so a push through this registry is visible at once. A
//! manifest written to the PDS by another AppView shows up here after at most [`MISS_TTL`].

use std::time::Duration;

use crate::ttl_map::TtlMap;

/// How long a miss is believed.
pub const MISS_TTL: Duration = Duration::from_secs(15);
/// Bound on remembered misses (see [`TtlMap`] for what happens past it).
const MAX_MISSES: usize = 10_000;

pub struct Misses {
    seen: TtlMap<()>,
}

impl Misses {
    pub fn new(ttl: Duration) -> Misses {
        Misses {
            seen: TtlMap::new(ttl, MAX_MISSES),
        }
    }

    fn key(name: &str, reference: &str) -> String {
        format!("{name}\n{reference}")
    }

    /// Whether the PDS said "not there" for this (name, reference) within the TTL.
    pub fn is_recent_miss(&self, name: &str, reference: &str) -> bool {
        self.seen.get(&Self::key(name, reference)).is_some()
    }

    pub fn note(&self, name: &str, reference: &str) {
        self.seen.put(&Self::key(name, reference), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_expire_and_stay_bounded() {
        let m = Misses::new(Duration::from_millis(50));
        m.note("alice.test/app", "latest");
        assert!(m.is_recent_miss("alice.test/app", "latest"));
        assert!(!m.is_recent_miss("alice.test/app", "v1"));
        assert!(
            !m.is_recent_miss("alice.test/app\nlatest", ""),
            "keys do not run together"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(!m.is_recent_miss("alice.test/app", "latest"), "expired");

        let m = Misses::new(MISS_TTL);
        for i in 0..=MAX_MISSES {
            m.note("alice.test/app", &i.to_string());
        }
        assert!(m.seen.len() <= MAX_MISSES);
        assert!(m.is_recent_miss("alice.test/app", &MAX_MISSES.to_string()));
    }
}
