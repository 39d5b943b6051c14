//! Docker token scopes: `repository:<name>:<action>[,<action>...]` (several per request,
//! space-separated or repeated `scope=` parameters). Names may contain `:`-free slashes;
//! the action list is the part after the last `:`.

use super::jwt::Access;

/// Actions this registry knows; others are dropped.
const KNOWN: &[&str] = &["pull", "push", "delete", "*"];
const MAX_SCOPES: usize = 16;

pub fn parse_scopes<'a>(raw: impl IntoIterator<Item = &'a str>) -> Vec<Access> {
    let mut out: Vec<Access> = Vec::new();
    for item in raw.into_iter().flat_map(|s| s.split(' ')) {
        if out.len() >= MAX_SCOPES {
            break;
        }
        let Some((type_, rest)) = item.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if type_ != "repository" || name.is_empty() || name.len() > 512 {
            continue;
        }
        let mut acts: Vec<String> = Vec::new();
        for a in actions.split(',') {
            if KNOWN.contains(&a) && !acts.iter().any(|x| x == a) {
                acts.push(a.to_string());
            }
        }
        if let Some(existing) = out.iter_mut().find(|x| x.name == name) {
            for a in acts {
                if !existing.actions.contains(&a) {
                    existing.actions.push(a);
                }
            }
        } else {
            out.push(Access {
                type_: "repository".into(),
                name: name.to_string(),
                actions: acts,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        let s = parse_scopes([
            "repository:alice.test/app:pull,push",
            "repository:did:plc:abc/x/y:pull repository:alice.test/app:delete",
            "registry:catalog:*",
            "garbage",
        ]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "alice.test/app");
        assert_eq!(s[0].actions, vec!["pull", "push", "delete"]);
        assert_eq!(s[1].name, "did:plc:abc/x/y");
        assert_eq!(s[1].actions, vec!["pull"]);
    }
}
