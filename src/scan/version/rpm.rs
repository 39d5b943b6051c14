//! RPM versions: `[epoch:]version[-release]` compared like `rpmvercmp` for each part
//! (alphanumeric segments; digits beat letters; `~` sorts before everything, `^` after the
//! end of the string but before any other segment).

use std::cmp::Ordering;

/// Compares two EVR strings (a missing epoch is 0).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split(a.trim());
    let (eb, vb, rb) = split(b.trim());
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| match (ra, rb) {
            // A range bound without a release matches any release of that version.
            (Some(x), Some(y)) => rpmvercmp(x, y),
            _ => Ordering::Equal,
        })
}

fn split(v: &str) -> (u64, &str, Option<&str>) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((ver, rel)) => (epoch, ver, Some(rel)),
        None => (epoch, rest, None),
    }
}

/// rpm's `rpmvercmp` on one version or release string.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    // rpm's C code sees a NUL as the end of the string; so do we (the byte loop below uses
    // 0 as its end marker, and an embedded NUL made the order asymmetric: found by fuzzing).
    let a = a.split('\0').next().unwrap_or("");
    let b = b.split('\0').next().unwrap_or("");
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let at = |k: usize| a.get(k).copied().unwrap_or(0);
    let bt = |k: usize| b.get(k).copied().unwrap_or(0);
    let sep = |c: u8| c != 0 && !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while sep(at(i)) {
            i += 1;
        }
        while sep(bt(j)) {
            j += 1;
        }
        if at(i) == b'~' || bt(j) == b'~' {
            if at(i) != b'~' {
                return Ordering::Greater;
            }
            if bt(j) != b'~' {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if at(i) == b'^' || bt(j) == b'^' {
            if i >= a.len() {
                return Ordering::Less;
            }
            if j >= b.len() {
                return Ordering::Greater;
            }
            if at(i) != b'^' {
                return Ordering::Greater;
            }
            if bt(j) != b'^' {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let (si, sj) = (i, j);
        let numeric = at(i).is_ascii_digit();
        if numeric {
            while at(i).is_ascii_digit() {
                i += 1;
            }
            while bt(j).is_ascii_digit() {
                j += 1;
            }
        } else {
            while at(i).is_ascii_alphabetic() {
                i += 1;
            }
            while bt(j).is_ascii_alphabetic() {
                j += 1;
            }
        }
        if sj == j {
            // Segments of different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut x, mut y) = (&a[si..i], &b[sj..j]);
        if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            match x.len().cmp(&y.len()) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        match x.cmp(y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        _ => Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::{compare, rpmvercmp};
    use std::cmp::Ordering::*;

    #[test]
    fn embedded_nul_ends_the_version() {
        let a = "\0\0\0\0\0\0\0\r.0";
        assert_eq!(rpmvercmp(a, "v2"), rpmvercmp("v2", a).reverse());
        assert_eq!(rpmvercmp("1.0\0junk", "1.0"), std::cmp::Ordering::Equal);
    }

    #[test]
    fn rpmvercmp_known_orderings() {
        // From rpm's tests/rpmvercmp.at.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0.1", Equal),
            ("2.0", "2.0.1", Less),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "xyz.4", Equal),
            ("xyz.4", "8", Less),
            ("5.5p1", "5.6p1", Less),
            ("10a2", "10b2", Less),
            ("1.0aa", "1.0a", Greater),
            ("10.0001", "10.1", Equal),
            ("10.0001", "10.0039", Less),
            ("4.999.9", "5.0", Less),
            ("20101121", "20101122", Less),
            ("2_0", "2_0", Equal),
            ("2.0", "2_0", Equal),
            ("a", "a", Equal),
            ("a+", "a_", Equal),
            ("+_", "_+", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn evr() {
        assert_eq!(compare("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(compare("3.0.7-24.el9", "3.0.7-25.el9"), Less);
        assert_eq!(compare("3.0.7-24.el9", "3.0.7"), Equal);
        assert_eq!(compare("0:3.0.7-24.el9", "3.0.7-24.el9"), Equal);
        assert_eq!(compare("1.2.3-1.el9_2", "1.2.3-1.el9"), Greater);
    }
}
