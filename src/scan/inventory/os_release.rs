//! `/etc/os-release` (`/usr/lib/os-release`): shell-style `KEY=value` lines, values
//! optionally quoted. Only `ID`, `VERSION_ID`, `PRETTY_NAME` and `VERSION_CODENAME` are kept.

use super::{clip, Distro, MAX_FIELD};

/// The distribution, or `None` when the file names no `ID`.
pub fn parse(bytes: &[u8]) -> Option<Distro> {
    let text = String::from_utf8_lossy(bytes);
    let mut d = Distro::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = clip(&unquote(v.trim()), MAX_FIELD);
        match k.trim() {
            "ID" => d.id = v.to_ascii_lowercase(),
            "VERSION_ID" => d.version_id = v,
            "PRETTY_NAME" => d.pretty_name = v,
            "VERSION_CODENAME" => d.version_codename = v,
            _ => {}
        }
    }
    (!d.id.is_empty()).then_some(d)
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    let quoted = bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0];
    if !quoted {
        return v.to_string();
    }
    let inner = &v[1..v.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' && bytes[0] == b'"' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn debian_alpine_and_garbage() {
        let deb = parse(
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        )
        .unwrap();
        assert_eq!(
            (
                deb.id.as_str(),
                deb.version_id.as_str(),
                deb.version_codename.as_str()
            ),
            ("debian", "12", "bookworm")
        );
        assert_eq!(deb.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        let alpine = parse(b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n").unwrap();
        assert_eq!(
            (alpine.id.as_str(), alpine.version_id.as_str()),
            ("alpine", "3.19.1")
        );
        assert_eq!(parse(b"\xff\xfe garbage = ="), None);
        assert_eq!(parse(b"ID='a\\b'").unwrap().id, "a\\b");
    }
}
