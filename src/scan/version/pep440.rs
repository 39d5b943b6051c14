//! Python versions by PEP 440: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the
//! normalisations of the `packaging` library (case, `alpha`/`beta`/`c`/`pre`/`preview`/
//! `rev`/`r` spellings, `-`/`_`/`.` separators, implicit numbers, `-N` as a post release, a
//! leading `v`). Ordering follows `packaging.version`'s comparison key: trailing zero
//! release parts are ignored, `1.0.dev0 < 1.0a1 < 1.0 < 1.0.post1`, local versions after
//! the public one. Strings that are not PEP 440 sort before every valid version.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    NegInf,
    Val(T),
    PosInf,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LocalPart {
    Str(String),
    Num(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    epoch: u64,
    release: Vec<u64>,
    pre: Bound<(u8, u64)>,
    post: Bound<u64>,
    dev: Bound<u64>,
    local: Bound<Vec<LocalPart>>,
}

/// Compares two PEP 440 versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// True when `v` is a valid PEP 440 version.
pub fn is_valid(v: &str) -> bool {
    key(v).is_some()
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn num(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            v = v.saturating_mul(10).saturating_add(u64::from(c - b'0'));
            self.i += 1;
        }
        (self.i > start).then_some(v)
    }
    fn sep(&mut self) -> bool {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// Consumes the longest of `words` found here.
    fn word(&mut self, words: &[&str]) -> Option<usize> {
        let rest = &self.s[self.i..];
        let mut best: Option<usize> = None;
        for (k, w) in words.iter().enumerate() {
            if rest.starts_with(w.as_bytes()) && best.is_none_or(|b| words[b].len() < w.len()) {
                best = Some(k);
            }
        }
        if let Some(k) = best {
            self.i += words[k].len();
        }
        best
    }
}

fn key(v: &str) -> Option<Key> {
    let lower = v.trim().to_ascii_lowercase();
    let mut p = P {
        s: lower.as_bytes(),
        i: 0,
    };
    if p.peek() == Some(b'v') {
        p.i += 1;
    }
    let first = p.num()?;
    let (epoch, mut release) = if p.peek() == Some(b'!') {
        p.i += 1;
        (first, vec![p.num()?])
    } else {
        (0, vec![first])
    };
    while p.peek() == Some(b'.') && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit) {
        p.i += 1;
        release.push(p.num()?);
    }
    // Pre-release.
    let mut pre = None;
    let save = p.i;
    p.sep();
    const PRE: [&str; 8] = ["alpha", "a", "beta", "b", "preview", "pre", "c", "rc"];
    if let Some(k) = p.word(&PRE) {
        let rank = match PRE[k] {
            "alpha" | "a" => 0,
            "beta" | "b" => 1,
            _ => 2,
        };
        let s2 = p.i;
        p.sep();
        let n = match p.num() {
            Some(n) => n,
            None => {
                p.i = s2;
                0
            }
        };
        pre = Some((rank, n));
    } else {
        p.i = save;
    }
    // Post release.
    let mut post = None;
    let save = p.i;
    if p.peek() == Some(b'-') && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit) {
        p.i += 1;
        post = p.num();
    } else {
        p.sep();
        if p.word(&["post", "rev", "r"]).is_some() {
            let s2 = p.i;
            p.sep();
            post = Some(match p.num() {
                Some(n) => n,
                None => {
                    p.i = s2;
                    0
                }
            });
        } else {
            p.i = save;
        }
    }
    // Dev release.
    let mut dev = None;
    let save = p.i;
    p.sep();
    if p.word(&["dev"]).is_some() {
        let s2 = p.i;
        p.sep();
        dev = Some(match p.num() {
            Some(n) => n,
            None => {
                p.i = s2;
                0
            }
        });
    } else {
        p.i = save;
    }
    // Local version.
    let mut local = None;
    if p.peek() == Some(b'+') {
        p.i += 1;
        let rest = std::str::from_utf8(&p.s[p.i..]).ok()?;
        let mut parts = Vec::new();
        for seg in rest.split(['-', '_', '.']) {
            if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            parts.push(match seg.parse::<u64>() {
                Ok(n) if seg.bytes().all(|b| b.is_ascii_digit()) => LocalPart::Num(n),
                _ => LocalPart::Str(seg.to_string()),
            });
        }
        p.i = p.s.len();
        local = Some(parts);
    }
    if p.i != p.s.len() {
        return None;
    }
    while release.len() > 1 && release.last() == Some(&0) {
        release.pop();
    }
    if release == [0] {
        release.clear();
    }
    Some(Key {
        epoch,
        release,
        pre: match (pre, post, dev) {
            (None, None, Some(_)) => Bound::NegInf,
            (None, _, _) => Bound::PosInf,
            (Some(x), _, _) => Bound::Val(x),
        },
        post: post.map_or(Bound::NegInf, Bound::Val),
        dev: dev.map_or(Bound::PosInf, Bound::Val),
        local: local.map_or(Bound::NegInf, Bound::Val),
    })
}

#[cfg(test)]
mod tests {
    use super::{compare, is_valid};
    use std::cmp::Ordering::*;

    #[test]
    fn pep440_examples_in_order() {
        // PEP 440 "Summary of permitted suffixes and relative ordering", plus epochs/locals.
        let ordered = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "2.0",
            "1!0.5",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn normalisation() {
        let same = [
            ("1.0", "1.0.0"),
            ("1.0", "v1.0"),
            ("1.0a1", "1.0alpha1"),
            ("1.0a1", "1.0-a-1"),
            ("1.0b2", "1.0.beta.2"),
            ("1.0rc1", "1.0c1"),
            ("1.0rc1", "1.0pre1"),
            ("1.0rc1", "1.0preview1"),
            ("1.0rc0", "1.0rc"),
            ("1.0.post1", "1.0-1"),
            ("1.0.post1", "1.0rev1"),
            ("1.0.post1", "1.0.r1"),
            ("1.0.post0", "1.0.post"),
            ("1.0.dev0", "1.0dev"),
            ("1.0+ubuntu-1", "1.0+ubuntu.1"),
            ("1.0A1", "1.0a1"),
        ];
        for (a, b) in same {
            assert_eq!(compare(a, b), Equal, "{a} vs {b}");
        }
        assert!(is_valid("2.31.0") && is_valid("1!2.0.post1.dev3+local.7"));
        assert!(!is_valid("not a version") && !is_valid("1.0+") && !is_valid("1.0-"));
        assert_eq!(compare("garbage", "0.0.1"), Less);
        assert_eq!(compare("2.31.0", "2.32.0"), Less);
        assert_eq!(compare("41.0.7", "42.0.0"), Less);
    }
}
