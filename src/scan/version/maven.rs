//! Maven versions, ordered like Maven's `ComparableVersion`: items split at `.`, `-` and
//! digit/letter transitions (a `-` or a transition opens a sub-list), trailing "null" items
//! (0, "", "final", "ga", "release") dropped, qualifiers ordered
//! `alpha < beta < milestone < rc = cr < snapshot < "" = final = ga = release < sp`, unknown
//! qualifiers after those (alphabetically), numbers after qualifiers.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Digits without leading zeros.
    Int(String),
    Str(String),
    List(Vec<Item>),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

fn comparable_qualifier(q: &str) -> String {
    match QUALIFIERS.iter().position(|x| *x == q) {
        Some(i) => i.to_string(),
        None => format!("{}-{q}", QUALIFIERS.len()),
    }
}

fn string_item(value: &str, followed_by_digit: bool) -> Item {
    let v = if followed_by_digit && value.len() == 1 {
        match value {
            "a" => "alpha",
            "b" => "beta",
            "m" => "milestone",
            other => other,
        }
    } else {
        value
    };
    let v = match v {
        "ga" | "final" | "release" => "",
        "cr" => "rc",
        other => other,
    };
    Item::Str(v.to_string())
}

fn parse_item(is_digit: bool, buf: &str) -> Item {
    if is_digit {
        let t = buf.trim_start_matches('0');
        Item::Int(t.to_string())
    } else {
        string_item(buf, false)
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(v) => v.is_empty(),
            Item::Str(v) => v.is_empty(),
            Item::List(l) => l.is_empty(),
        }
    }

    /// Comparison with "nothing" (the other version ended).
    fn cmp_null(&self) -> Ordering {
        match self {
            Item::Int(v) => {
                if v.is_empty() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            Item::Str(v) => comparable_qualifier(v).cmp(&comparable_qualifier("")),
            Item::List(l) => match l.first() {
                None => Ordering::Equal,
                Some(first) => first.cmp_null(),
            },
        }
    }

    fn cmp_item(&self, other: &Item) -> Ordering {
        use Item::*;
        match (self, other) {
            (Int(a), Int(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Int(_), _) => Ordering::Greater,
            (Str(_), Int(_)) => Ordering::Less,
            (Str(a), Str(b)) => comparable_qualifier(a).cmp(&comparable_qualifier(b)),
            (Str(_), List(_)) => Ordering::Less,
            (List(_), Int(_)) => Ordering::Less,
            (List(_), Str(_)) => Ordering::Greater,
            (List(a), List(b)) => {
                let n = a.len().max(b.len());
                for k in 0..n {
                    let r = match (a.get(k), b.get(k)) {
                        (None, None) => Ordering::Equal,
                        (None, Some(r)) => r.cmp_null().reverse(),
                        (Some(l), None) => l.cmp_null(),
                        (Some(l), Some(r)) => l.cmp_item(r),
                    };
                    if r != Ordering::Equal {
                        return r;
                    }
                }
                Ordering::Equal
            }
        }
    }
}

/// Drops trailing null items (0, "", empty lists), also those before trailing sub-lists.
fn normalize(list: &mut Vec<Item>) {
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if list[i].is_null() {
            list.remove(i);
        } else if !matches!(list[i], Item::List(_)) {
            break;
        }
    }
}

/// Parses into nested lists (sub-lists are normalised inner-first).
fn parse(version: &str) -> Item {
    let v = version.trim().to_ascii_lowercase();
    let b = v.as_bytes();
    // A stack of open lists; each new sub-list is appended to its parent when closed.
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let mut is_digit = false;
    let mut start = 0usize;
    let push_sub = |stack: &mut Vec<Vec<Item>>| stack.push(Vec::new());
    for i in 0..b.len() {
        let c = b[i];
        let cur = stack.len() - 1;
        if c == b'.' || c == b'-' {
            if i == start {
                stack[cur].push(Item::Int(String::new()));
            } else {
                let item = parse_item(is_digit, &v[start..i]);
                stack[cur].push(item);
            }
            start = i + 1;
            if c == b'-' {
                push_sub(&mut stack);
            }
        } else if c.is_ascii_digit() {
            if !is_digit && i > start {
                // `1.0.0.X1 < 1.0.0-X2`: a `.X` qualifier opens a sub-list like `-X`.
                if !stack[cur].is_empty() {
                    push_sub(&mut stack);
                }
                let cur = stack.len() - 1;
                stack[cur].push(string_item(&v[start..i], true));
                start = i;
                push_sub(&mut stack);
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                stack[cur].push(parse_item(true, &v[start..i]));
                start = i;
                push_sub(&mut stack);
            }
            is_digit = false;
        }
    }
    if b.len() > start {
        if !is_digit && !stack[stack.len() - 1].is_empty() {
            push_sub(&mut stack);
        }
        let cur = stack.len() - 1;
        let item = parse_item(is_digit, &v[start..]);
        stack[cur].push(item);
    }
    while stack.len() > 1 {
        let mut top = stack.pop().expect("len > 1");
        normalize(&mut top);
        stack.last_mut().expect("len >= 1").push(Item::List(top));
    }
    let mut root = stack.pop().unwrap_or_default();
    normalize(&mut root);
    Item::List(root)
}

/// Compares two Maven versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp_item(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn maven_comparable_version_orderings() {
        // From Maven's ComparableVersionTest (VERSIONS_QUALIFIER and VERSIONS_NUMBER).
        let qualifier = [
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ];
        let number = [
            "2.0", "2.0.a", "2-1", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1",
            "2.1.0.1", "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11",
            "11", "11.a", "11b", "11c", "11m",
        ];
        for list in [&qualifier[..], &number[..]] {
            for (i, a) in list.iter().enumerate() {
                for (j, b) in list.iter().enumerate() {
                    assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn equal_forms() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1.0.0"),
            ("1.0", "1.0.0"),
            ("1", "1-0"),
            ("1.0-final", "1.0"),
            ("1.0-ga", "1.0"),
            ("1.0-release", "1.0"),
            ("1a1", "1-alpha-1"),
            ("1b2", "1-beta-2"),
            ("1cr", "1rc"),
            ("1.0.RELEASE", "1.0"),
        ] {
            assert_eq!(compare(a, b), Equal, "{a} vs {b}");
        }
        assert_eq!(compare("2.14.1", "2.15.0"), Less);
        assert_eq!(compare("2.17.0", "2.3.1"), Greater);
        assert_eq!(compare("5.3.18", "5.3.20"), Less);
        assert_eq!(compare("2.0.0-M1", "2.0.0"), Less);
    }
}
