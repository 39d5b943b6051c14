//! Repository names, tags and references.
//!
//! A name follows the OCI grammar
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, except that the
//! first path segment may also be an ATProto DID (`did:plc:…` or `did:web:…`), whose colons
//! the OCI grammar does not allow. Handles (`alice.bsky.social`) already fit the grammar.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Clients commonly cap `host/name` at 255 characters; the name alone must fit in that.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("repository name component {0:?} is invalid")]
    BadComponent(String),
    #[error("invalid tag {0:?}: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    BadTag(String),
    #[error("invalid reference: {0}")]
    BadDigest(#[from] DigestError),
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path segment: the handle or DID that owns this repository.
    pub fn identity(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// Everything after the identity (`myapp`, `tools/builder`); empty for one-segment names.
    pub fn repository(&self) -> &str {
        self.0.split_once('/').map(|(_, r)| r).unwrap_or("")
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One OCI path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `did:plc:<24 base32 chars>` or `did:web:<lowercase host>[%3a<port>][:<path>…]`.
fn valid_did_component(c: &str) -> bool {
    if let Some(id) = c.strip_prefix("did:plc:") {
        return id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    }
    if let Some(rest) = c.strip_prefix("did:web:") {
        let mut parts = rest.split(':');
        let host = parts.next().unwrap_or("");
        let (host, port) = match host.split_once("%3a").or_else(|| host.split_once("%3A")) {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| is_alnum(b) || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        return host_ok && port_ok && parts.all(valid_component);
    }
    false
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for (i, c) in s.split('/').enumerate() {
            let ok = valid_component(c) || (i == 0 && valid_did_component(c));
            if !ok {
                return Err(NameError::BadComponent(c.chars().take(64).collect()));
            }
        }
        Ok(Name(s.to_string()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(NameError::BadTag(s.chars().take(64).collect()));
        }
        Ok(Tag(s.to_string()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag can never contain ':', so a colon means the client meant a digest.
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/ubuntu",
            "alice.bsky.social/my-app",
            "alice.test/tools/builder_x",
            "a__b/c--d/e.f",
            "did:plc:ewvi7nxzyoun6zhxrhs64oiz/myapp",
            "did:web:example.com/app",
            "did:web:localhost%3a5000/app",
        ] {
            let n: Name = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(n.as_str(), ok);
        }
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a/did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "did:plc:short/app",
            "did:key:zabc/app",
            "a b",
        ] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?} should be rejected");
        }
        assert!("a/"
            .repeat(200)
            .trim_end_matches('/')
            .parse::<Name>()
            .is_err());
        let n: Name = "alice.test/tools/x".parse().unwrap();
        assert_eq!(n.identity(), "alice.test");
        assert_eq!(n.repository(), "tools/x");
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_v1.0-rc.1".parse::<Tag>().is_ok());
        assert!("x".repeat(128).parse::<Tag>().is_ok());
        assert!("x".repeat(129).parse::<Tag>().is_err());
        assert!(".hidden".parse::<Tag>().is_err());
        assert!("".parse::<Tag>().is_err());
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!("sha256:nothex".parse::<Reference>().is_err());
    }
}
