//! Which manifest reads are pulls. The rule (README "Pull and push counts"): **one pull per
//! manifest `GET` by tag**. `HEAD` requests and `GET`s by digest are parts of a pull, not
//! pulls: a multi-arch pull reads the index by tag and then its child by digest, and counts
//! once. Docker (containerd) resolves a tag with `HEAD` and then `GET`s the digest it got;
//! that pair counts once too: a `HEAD` by tag is remembered for [`RESOLVE_WINDOW`] per client
//! and repository, and the `GET` of that digest by the same client completes the pull.

use std::time::Duration;

use crate::oci::types::{Digest, Reference};
use crate::ttl_map::TtlMap;

/// How long a `HEAD` by tag waits for its `GET` by digest.
pub const RESOLVE_WINDOW: Duration = Duration::from_secs(30);
/// Bound on remembered `HEAD`s (see [`TtlMap`]).
const MAX_RESOLVES: usize = 10_000;

pub struct PullCounter {
    resolved: TtlMap<()>,
}

impl Default for PullCounter {
    fn default() -> Self {
        PullCounter {
            resolved: TtlMap::new(RESOLVE_WINDOW, MAX_RESOLVES),
        }
    }
}

impl PullCounter {
    fn key(client: &str, name: &str, digest: &Digest) -> String {
        format!("{client}\n{name}\n{digest}")
    }

    /// A manifest read that succeeded: `client` identifies the caller (its address),
    /// `digest` is what was served. True when this read counts as a pull.
    pub fn read(
        &self,
        client: &str,
        name: &str,
        reference: &Reference,
        digest: &Digest,
        get: bool,
    ) -> bool {
        match (reference, get) {
            (Reference::Tag(_), true) => true,
            (Reference::Tag(_), false) => {
                self.resolved.put(&Self::key(client, name, digest), ());
                false
            }
            (Reference::Digest(_), true) => {
                let key = Self::key(client, name, digest);
                let completes = self.resolved.get(&key).is_some();
                if completes {
                    self.resolved.forget(&key);
                }
                completes
            }
            (Reference::Digest(_), false) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pull_per_tag_get_and_per_resolved_head() {
        let p = PullCounter::default();
        let index = Digest::sha256_of(b"index");
        let child = Digest::sha256_of(b"child");
        let tag: Reference = "v1".parse().unwrap();
        let by = |d: &Digest| Reference::Digest(d.clone());
        // skopeo/podman: GET index by tag, GET child by digest -> 1.
        assert!(p.read("a", "x/app", &tag, &index, true));
        assert!(!p.read("a", "x/app", &by(&child), &child, true));
        // docker: HEAD by tag, GET index by digest, GET child by digest -> 1.
        assert!(!p.read("b", "x/app", &tag, &index, false));
        assert!(p.read("b", "x/app", &by(&index), &index, true));
        assert!(!p.read("b", "x/app", &by(&child), &child, true));
        // The same GET again is not a second pull of that resolve.
        assert!(!p.read("b", "x/app", &by(&index), &index, true));
        // Another client's GET by digest does not complete b's resolve.
        assert!(!p.read("b", "x/app", &tag, &index, false));
        assert!(!p.read("c", "x/app", &by(&index), &index, true));
        // HEADs alone never count; neither do plain digest GETs.
        assert!(!p.read("d", "x/app", &by(&index), &index, false));
        assert!(!p.read("d", "x/app", &by(&index), &index, true));
    }
}
