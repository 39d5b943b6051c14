//! A small map whose entries expire: the identity resolver's handle and DID-document caches
//! and the registry's memory of pull misses. Bounded: when full, expired entries go, and if
//! that is not enough, all of them (a flood of distinct keys must not grow memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlMap<V> {
    map: Mutex<HashMap<String, (Instant, V)>>,
    ttl: Duration,
    max_entries: usize,
}

impl<V: Clone> TtlMap<V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlMap {
            map: Mutex::new(HashMap::new()),
            ttl,
            max_entries,
        }
    }

    /// The value stored under `k` within the TTL.
    pub fn get(&self, k: &str) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, k: &str, v: V) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_entries {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(k.to_string(), (Instant::now(), v));
    }

    pub fn forget(&self, k: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let m = TtlMap::new(Duration::from_millis(50), 3);
        m.put("a", 1);
        assert_eq!(m.get("a"), Some(1));
        m.forget("a");
        assert_eq!(m.get("a"), None);
        m.put("b", 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(m.get("b"), None, "expired");
        for (i, k) in ["c", "d", "e", "f"].into_iter().enumerate() {
            m.put(k, i);
        }
        assert!(m.len() <= 3);
        assert_eq!(m.get("f"), Some(3), "the newest is kept");
    }
}
