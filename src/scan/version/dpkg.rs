//! Debian package versions (`[epoch:]upstream[-revision]`), compared like `dpkg
//! --compare-versions` (dpkg's `verrevcmp`): `~` sorts before everything, even the end of
//! the string; letters sort before other characters; digit runs compare as numbers.

use std::cmp::Ordering;

/// Compares two Debian versions. Unparseable epochs count as 0 (dpkg would refuse them; a
/// scanner must still order what it finds).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// (epoch, upstream, revision).
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: u8) -> i32 {
    match c {
        0 => 0,
        b'0'..=b'9' => 0,
        b'a'..=b'z' | b'A'..=b'Z' => i32::from(c),
        b'~' => -1,
        other => i32::from(other) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    let bt = |i: usize| b.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !at(i).is_ascii_digit()) || (j < b.len() && !bt(j).is_ascii_digit()) {
            let (ac, bc) = (order(at(i)), order(bt(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == b'0' {
            i += 1;
        }
        while bt(j) == b'0' {
            j += 1;
        }
        while at(i).is_ascii_digit() && bt(j).is_ascii_digit() {
            if first_diff == 0 {
                first_diff = i32::from(at(i)) - i32::from(bt(j));
            }
            i += 1;
            j += 1;
        }
        if at(i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if bt(j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn known_orderings() {
        // From dpkg's t-version tests and Debian policy 5.6.12.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0-0", "1.0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0+1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.10", "1.9", Greater),
            ("1.002", "1.2", Equal),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1~deb12u1", Greater),
            ("3.0.13-1~deb12u1", "3.0.11-1~deb12u2", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u3", Greater),
            ("2.36-9", "2.36-9+deb12u3", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
            ("1:2.30-1", "2.40-1", Greater),
            ("1.2-3-4", "1.2-3-5", Less), // the revision is after the last hyphen
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
