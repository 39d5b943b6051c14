//! Failed-login limiter: at most `max` failures per key (client address, identity) inside a
//! sliding window. In memory only; a restart forgets it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 100_000;

pub struct FailureLimiter {
    max: usize,
    window: Duration,
    map: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        FailureLimiter {
            max,
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// True when `key` has used up its failures in the current window.
    pub fn blocked(&self, key: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = map.get_mut(key) else {
            return false;
        };
        while q.front().is_some_and(|t| t.elapsed() >= self.window) {
            q.pop_front();
        }
        q.len() >= self.max
    }

    pub fn fail(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            let w = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| t.elapsed() < w));
        }
        let q = map.entry(key.to_string()).or_default();
        q.push_back(Instant::now());
        while q.len() > self.max {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(!l.blocked("ip:1"));
            l.fail("ip:1");
        }
        assert!(l.blocked("ip:1"));
        assert!(!l.blocked("ip:2"));
        let short = FailureLimiter::new(1, Duration::from_millis(1));
        short.fail("k");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.blocked("k"));
    }
}
