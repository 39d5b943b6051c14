//! Alpine package versions, compared like apk-tools (`apk version -t`): dot-separated
//! numbers (a leading zero makes a component compare as a decimal fraction), an optional
//! letter, `_alpha`/`_beta`/`_pre`/`_rc` (before the release) and `_cvs`/`_svn`/`_git`/
//! `_hg`/`_p` (after it) suffixes with optional numbers, then `-r<revision>`.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tok {
    Invalid = -1,
    DigitOrZero = 0,
    Digit = 1,
    Letter = 2,
    Suffix = 3,
    SuffixNo = 4,
    RevisionNo = 5,
    End = 6,
}

struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn next_token(&mut self, t: &mut Tok) {
        let mut n = Tok::Invalid;
        match self.s.first().copied() {
            None | Some(0) => n = Tok::End,
            Some(c) if matches!(*t, Tok::Digit | Tok::DigitOrZero) && c.is_ascii_lowercase() => {
                n = Tok::Letter
            }
            Some(c) if *t == Tok::Letter && c.is_ascii_digit() => n = Tok::Digit,
            Some(c) if *t == Tok::Suffix && c.is_ascii_digit() => n = Tok::SuffixNo,
            Some(c) => {
                match c {
                    b'.' => n = Tok::DigitOrZero,
                    b'_' => n = Tok::Suffix,
                    b'-' if self.s.get(1) == Some(&b'r') => {
                        n = Tok::RevisionNo;
                        self.s = &self.s[1..];
                    }
                    _ => {}
                }
                self.s = &self.s[1..];
            }
        }
        if n < *t
            && !((n == Tok::DigitOrZero && *t == Tok::Digit)
                || (n == Tok::Suffix && *t == Tok::SuffixNo)
                || (n == Tok::Digit && *t == Tok::Letter))
        {
            n = Tok::Invalid;
        }
        *t = n;
    }

    fn get_token(&mut self, t: &mut Tok) -> i64 {
        const PRE: [&[u8]; 4] = [b"alpha", b"beta", b"pre", b"rc"];
        const POST: [&[u8]; 5] = [b"cvs", b"svn", b"git", b"hg", b"p"];
        if self.s.is_empty() {
            *t = Tok::End;
            return 0;
        }
        let mut v: i64 = 0;
        let mut i = 0usize;
        let mut nt = Tok::Invalid;
        let digits = |s: &[u8], i: &mut usize, v: &mut i64| {
            while *i < s.len() && s[*i].is_ascii_digit() {
                *v = v.saturating_mul(10).saturating_add(i64::from(s[*i] - b'0'));
                *i += 1;
            }
        };
        match *t {
            // A leading zero (`1.02`) makes the component a decimal fraction; a lone 0 is 0.
            Tok::DigitOrZero
                if self.s[0] == b'0' && self.s.get(1).is_some_and(u8::is_ascii_digit) =>
            {
                while i < self.s.len() && self.s[i] == b'0' {
                    i += 1;
                }
                nt = Tok::Digit;
                v = -(i as i64);
            }
            Tok::DigitOrZero | Tok::Digit | Tok::SuffixNo | Tok::RevisionNo => {
                digits(self.s, &mut i, &mut v)
            }
            Tok::Letter => {
                v = i64::from(self.s[0]);
                i = 1;
            }
            Tok::Suffix => {
                if let Some(k) = PRE.iter().position(|p| self.s.starts_with(p)) {
                    i = PRE[k].len();
                    v = k as i64 - PRE.len() as i64;
                } else if let Some(k) = POST.iter().position(|p| self.s.starts_with(p)) {
                    i = POST[k].len();
                    v = k as i64;
                } else {
                    *t = Tok::Invalid;
                    return -1;
                }
            }
            Tok::Invalid | Tok::End => {
                *t = Tok::Invalid;
                return -1;
            }
        }
        self.s = &self.s[i..];
        if self.s.is_empty() {
            *t = Tok::End;
        } else if nt != Tok::Invalid {
            *t = nt;
        } else {
            self.next_token(t);
        }
        v
    }
}

/// Compares two Alpine versions. Invalid versions compare by their valid prefix.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut ca, mut cb) = (
        Cursor {
            s: a.trim().as_bytes(),
        },
        Cursor {
            s: b.trim().as_bytes(),
        },
    );
    let (mut at, mut bt) = (Tok::Digit, Tok::Digit);
    let (mut av, mut bv) = (0i64, 0i64);
    while at == bt && at != Tok::End && at != Tok::Invalid && av == bv {
        av = ca.get_token(&mut at);
        bv = cb.get_token(&mut bt);
    }
    if av != bv {
        return av.cmp(&bv);
    }
    if at == bt {
        return Ordering::Equal;
    }
    // Equal so far: the longer one is newer, unless what follows is a pre-release suffix.
    let mut tt = at;
    if at == Tok::Suffix && ca.get_token(&mut tt) < 0 {
        return Ordering::Less;
    }
    let mut tt = bt;
    if bt == Tok::Suffix && cb.get_token(&mut tt) < 0 {
        return Ordering::Greater;
    }
    bt.cmp(&at)
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn known_orderings() {
        // From apk-tools' test/version.data and Alpine's package history.
        let cases = [
            ("2.34", "0.1.0_alpha", Greater),
            ("0.1.0_alpha", "0.1.0_alpha", Equal),
            ("0.1.0_alpha", "0.1.3_alpha", Less),
            ("0.1.0_alpha2", "0.1.0_alpha", Greater),
            ("0.1.0_alpha", "0.1.0_beta", Less),
            ("0.1.0_beta", "0.1.0_pre", Less),
            ("0.1.0_pre", "0.1.0_rc", Less),
            ("0.1.0_rc1", "0.1.0", Less),
            ("1.0", "1.0_p1", Less),
            ("1.0_p1", "1.0_p2", Less),
            ("1.0_cvs", "1.0_p", Less),
            ("1.0-r1", "1.0", Greater),
            ("1.0-r1", "1.0-r2", Less),
            ("2.2.3-r10", "2.2.3-r9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0b", Less),
            ("1.0.1", "1.0", Greater),
            ("1.0", "1.0.0", Less),
            ("1.02", "1.1", Less),
            ("1.010", "1.01", Greater),
            ("3.1.4-r5", "3.1.4-r6", Less),
            ("3.1.4-r5", "3.1.5-r0", Less),
            ("1.36.1-r15", "1.36.1-r2", Greater),
            ("6.4_p20231125-r0", "6.4_p20230506-r0", Greater),
            ("6.4_p20231125-r0", "6.4-r0", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
