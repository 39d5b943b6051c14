//! Brute-force limits for password and device-secret logins, built so that nobody can lock
//! another user out:
//!
//! - An attempt is **counted before** the PDS is asked ([`LoginLimiter::begin`] reserves a
//!   slot), so forty concurrent wrong passwords cannot all slip past the check: at most
//!   `per_pair` of them reach the PDS. A success gives its slot back; a PDS that could not be
//!   reached gives it back too (dropping the [`Attempt`]); a refusal turns it into a failure.
//! - The first limit is per **address + identity**, the identity being the resolved DID (a
//!   handle and its DID are one identity). Failures from one address never refuse a correct
//!   password from another address.
//! - Per **address** over all identities (credential stuffing, unresolvable names): a wider
//!   limit that only ever refuses that address.
//! - Per **identity** over all addresses, a backstop with slow backoff: once an identity has
//!   collected `backstop` failures in the window, an address that has itself failed for it
//!   gets one attempt per backoff period (doubling up to a cap). An address with no failures
//!   for the identity is never held back by it, so the owner signing in from a clean address
//!   is never locked out.
//!
//! In memory only (a restart forgets it); bounded in size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys kept at most; beyond that, keys with nothing in the window are dropped.
const MAX_KEYS: usize = 100_000;
/// First and longest wait of the identity backstop.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Failures (plus attempts in flight) per address + identity in `window`.
    pub per_pair: usize,
    /// Failures (plus attempts in flight) per address over all identities in `window`.
    pub per_address: usize,
    /// Failures per identity over all addresses before the backstop slows failing addresses.
    pub backstop: usize,
    pub window: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_pair: 5,
            per_address: 20,
            backstop: 30,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct Counter {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

impl Counter {
    fn prune(&mut self, window: Duration) {
        while self.failures.front().is_some_and(|t| t.elapsed() >= window) {
            self.failures.pop_front();
        }
    }
    fn used(&self) -> usize {
        self.failures.len() + self.in_flight
    }
}

#[derive(Default)]
struct Backoff {
    next_allowed: Option<Instant>,
    step: Duration,
}

#[derive(Default)]
struct State {
    counters: HashMap<String, Counter>,
    backoff: HashMap<String, Backoff>,
}

/// Why an attempt was refused before anything was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// This address failed too often for this identity.
    Pair,
    /// This address failed too often overall.
    Address,
    /// The identity is under attack and this address has failed for it: wait.
    Backoff,
}

pub struct LoginLimiter {
    settings: LimitSettings,
    state: Mutex<State>,
}

fn pair_key(addr: &str, identity: &str) -> String {
    format!("p:{addr}|{identity}")
}
fn addr_key(addr: &str) -> String {
    format!("a:{addr}")
}
fn identity_key(identity: &str) -> String {
    format!("i:{identity}")
}

impl LoginLimiter {
    pub fn new(settings: LimitSettings) -> Arc<LoginLimiter> {
        Arc::new(LoginLimiter {
            settings,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn used(&self, st: &mut State, key: &str) -> usize {
        match st.counters.get_mut(key) {
            Some(c) => {
                c.prune(self.settings.window);
                c.used()
            }
            None => 0,
        }
    }

    /// Before an identity is resolved: is this address already over its limit?
    pub fn check_address(&self, addr: &str) -> Result<(), Limited> {
        let mut st = self.lock();
        if self.used(&mut st, &addr_key(addr)) >= self.settings.per_address {
            return Err(Limited::Address);
        }
        Ok(())
    }

    /// A failure that has no identity (the name did not resolve): counted for the address.
    pub fn fail_address(&self, addr: &str) {
        let mut st = self.lock();
        self.shrink(&mut st);
        st.counters
            .entry(addr_key(addr))
            .or_default()
            .failures
            .push_back(Instant::now());
    }

    /// Reserves one attempt of `addr` for `identity` (a DID), or says why not.
    pub fn begin(self: &Arc<Self>, addr: &str, identity: &str) -> Result<Attempt, Limited> {
        let (pk, ak, ik) = (
            pair_key(addr, identity),
            addr_key(addr),
            identity_key(identity),
        );
        let mut st = self.lock();
        let pair_used = self.used(&mut st, &pk);
        if pair_used >= self.settings.per_pair {
            return Err(Limited::Pair);
        }
        if self.used(&mut st, &ak) >= self.settings.per_address {
            return Err(Limited::Address);
        }
        let pair_failed = st.counters.get(&pk).is_some_and(|c| !c.failures.is_empty());
        let identity_failures = self.used(&mut st, &ik);
        if pair_failed && identity_failures >= self.settings.backstop {
            let now = Instant::now();
            let b = st.backoff.entry(ik.clone()).or_default();
            if b.next_allowed.is_some_and(|t| now < t) {
                return Err(Limited::Backoff);
            }
            b.step = if b.step.is_zero() {
                BACKOFF_START
            } else {
                (b.step * 2).min(BACKOFF_MAX)
            };
            b.next_allowed = Some(now + b.step);
        }
        self.shrink(&mut st);
        st.counters.entry(pk.clone()).or_default().in_flight += 1;
        st.counters.entry(ak.clone()).or_default().in_flight += 1;
        Ok(Attempt {
            limiter: self.clone(),
            keys: Some((pk, ak, ik)),
        })
    }

    fn shrink(&self, st: &mut State) {
        if st.counters.len() >= MAX_KEYS {
            let w = self.settings.window;
            st.counters.retain(|_, c| {
                c.in_flight > 0 || c.failures.back().is_some_and(|t| t.elapsed() < w)
            });
            st.backoff
                .retain(|_, b| b.next_allowed.is_some_and(|t| t > Instant::now()));
        }
    }

    fn finish(&self, keys: (String, String, String), outcome: Outcome) {
        let (pk, ak, ik) = keys;
        let mut st = self.lock();
        for k in [&pk, &ak] {
            if let Some(c) = st.counters.get_mut(k) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        }
        let now = Instant::now();
        match outcome {
            Outcome::Failed => {
                for k in [pk, ak, ik] {
                    st.counters.entry(k).or_default().failures.push_back(now);
                }
            }
            Outcome::Succeeded => {
                // The address proved it knows the secret: its earlier typos are forgiven.
                if let Some(c) = st.counters.get_mut(&pk) {
                    c.failures.clear();
                }
            }
            Outcome::Undecided => {}
        }
    }
}

enum Outcome {
    Failed,
    Succeeded,
    Undecided,
}

/// One reserved attempt. Dropped without a verdict (the PDS could not be reached), its slot
/// is given back.
pub struct Attempt {
    limiter: Arc<LoginLimiter>,
    keys: Option<(String, String, String)>,
}

impl Attempt {
    pub fn failed(mut self) {
        if let Some(k) = self.keys.take() {
            self.limiter.finish(k, Outcome::Failed);
        }
    }
    pub fn succeeded(mut self) {
        if let Some(k) = self.keys.take() {
            self.limiter.finish(k, Outcome::Succeeded);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(k) = self.keys.take() {
            self.limiter.finish(k, Outcome::Undecided);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Arc<LoginLimiter> {
        LoginLimiter::new(LimitSettings {
            per_pair: 3,
            per_address: 6,
            backstop: 4,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn attempts_are_counted_before_the_outcome() {
        let l = limiter();
        // Concurrency: three attempts in flight use up the pair, a fourth is refused.
        let held: Vec<_> = (0..3).map(|_| l.begin("ip1", "did:a").unwrap()).collect();
        assert_eq!(l.begin("ip1", "did:a").err(), Some(Limited::Pair));
        // The PDS was unreachable for all of them: slots come back.
        drop(held);
        assert!(l.begin("ip1", "did:a").is_ok());
    }

    #[test]
    fn failures_from_one_address_never_lock_out_another() {
        let l = limiter();
        for _ in 0..3 {
            l.begin("attacker", "did:a").unwrap().failed();
        }
        assert_eq!(l.begin("attacker", "did:a").err(), Some(Limited::Pair));
        // The owner, elsewhere, is not affected.
        l.begin("owner", "did:a").unwrap().succeeded();
        // Many attackers push the identity past the backstop...
        for i in 0..6 {
            l.begin(&format!("bot{i}"), "did:a").unwrap().failed();
        }
        // ...which slows addresses that failed (one attempt, then a wait)...
        let first = l.begin("bot1", "did:a");
        assert!(first.is_ok());
        first.unwrap().failed();
        assert_eq!(l.begin("bot2", "did:a").err(), Some(Limited::Backoff));
        // ...but never a clean address.
        for _ in 0..3 {
            l.begin("owner", "did:a").unwrap().succeeded();
        }
        assert!(l.begin("fresh", "did:a").is_ok());
    }

    #[test]
    fn address_limit_spans_identities_and_success_forgives_typos() {
        let l = limiter();
        for i in 0..6 {
            l.begin("ip", &format!("did:{i}")).unwrap().failed();
        }
        assert_eq!(l.check_address("ip"), Err(Limited::Address));
        assert_eq!(l.begin("ip", "did:new").err(), Some(Limited::Address));
        assert!(l.check_address("other").is_ok());

        let l = limiter();
        l.begin("ip", "did:a").unwrap().failed();
        l.begin("ip", "did:a").unwrap().failed();
        l.begin("ip", "did:a").unwrap().succeeded();
        for _ in 0..3 {
            assert!(l.begin("ip", "did:a").is_ok());
        }
        l.fail_address("x");
        assert!(l.check_address("x").is_ok());
    }
}
