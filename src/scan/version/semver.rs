//! Semantic Versioning 2.0 precedence (npm, crates.io, Go modules): numeric
//! `major.minor.patch`, a pre-release sorts before its release (numeric identifiers below
//! alphanumeric ones, compared as numbers), build metadata is ignored. Lenient about what
//! scanners meet in the wild: a leading `v`, missing minor/patch (0), more than three
//! numbers, and numbers of any length.

use std::cmp::Ordering;

/// Compares two versions by SemVer precedence.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ra, pa) = parts(a);
    let (rb, pb) = parts(b);
    let n = ra.len().max(rb.len()).max(3);
    for k in 0..n {
        let x = ra.get(k).copied().unwrap_or("0");
        let y = rb.get(k).copied().unwrap_or("0");
        match cmp_numeric(x, y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => cmp_prerelease(x, y),
    }
}

/// The numeric release parts and the pre-release, build metadata dropped.
fn parts(v: &str) -> (Vec<&str>, Option<&str>) {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let v = v.split_once('+').map(|(x, _)| x).unwrap_or(v);
    let (rel, pre) = match v.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (v, None),
    };
    (rel.split('.').collect(), pre)
}

/// Digit strings as numbers of any length; non-numeric parts after numeric ones.
fn cmp_numeric(x: &str, y: &str) -> Ordering {
    let xd = !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let yd = !y.is_empty() && y.bytes().all(|b| b.is_ascii_digit());
    match (xd, yd) {
        (true, true) => {
            let x = x.trim_start_matches('0');
            let y = y.trim_start_matches('0');
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match cmp_numeric(x, y) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn semver_spec_precedence() {
        // semver.org section 11, in order.
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
            "10.0.0",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(compare("v1.2.3", "1.2.3"), Equal);
        assert_eq!(compare("1.2", "1.2.0"), Equal);
        assert_eq!(compare("1.2.3+build.5", "1.2.3"), Equal);
        assert_eq!(compare("0.0.0-20230101000000-abcdef123456", "0.0.1"), Less);
        assert_eq!(
            compare(
                "0.0.0-20230101000000-abcdef123456",
                "0.0.0-20240101000000-0123456789ab"
            ),
            Less
        );
        assert_eq!(compare("1.20.0", "1.9.9"), Greater);
        assert_eq!(
            compare("18446744073709551616.0.0", "18446744073709551615.0.0"),
            Greater
        );
        assert_eq!(compare("1.19.8", "1.20.0-rc.1"), Less);
    }
}
