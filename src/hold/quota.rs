//! Storage tiers and quotas (atcr-spec 5.4), pure: the tier list from config, sizes with
//! units, and the usage arithmetic (unique layer digests per user).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub quota_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("hold.tiers: {0}")]
pub struct TierConfigError(pub String);

/// The configured tiers in rank order, and the tier of crew records without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers {
    pub tiers: Vec<Tier>,
    pub default_tier: String,
}

impl Tiers {
    /// `spec`: `name=size, name=size, ...` (e.g. `deckhand=5GB, bosun=50GB`); empty
    /// disables quotas. `default_tier` must name one of them (when there are any).
    pub fn parse(spec: &str, default_tier: &str) -> Result<Tiers, TierConfigError> {
        let mut tiers: Vec<Tier> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, size) = item
                .split_once('=')
                .ok_or_else(|| TierConfigError(format!("{item:?}: expected name=size")))?;
            let name = name.trim();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(TierConfigError(format!("bad tier name {name:?}")));
            }
            if tiers.iter().any(|t| t.name == name) {
                return Err(TierConfigError(format!("tier {name:?} listed twice")));
            }
            tiers.push(Tier {
                name: name.to_string(),
                quota_bytes: parse_size(size.trim())
                    .ok_or_else(|| TierConfigError(format!("bad size {:?}", size.trim())))?,
            });
        }
        if !tiers.is_empty() && !tiers.iter().any(|t| t.name == default_tier) {
            return Err(TierConfigError(format!(
                "default_tier {default_tier:?} is not one of the tiers"
            )));
        }
        Ok(Tiers {
            tiers,
            default_tier: default_tier.to_string(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// The tier of a crew member: its own if known, else the default. `None` when quotas
    /// are disabled.
    pub fn for_member(&self, tier: Option<&str>) -> Option<&Tier> {
        tier.and_then(|n| self.tiers.iter().find(|t| t.name == n))
            .or_else(|| self.tiers.iter().find(|t| t.name == self.default_tier))
    }
}

/// `5GB`, `512 MB`, `100gb`, `1024` (bytes). Decimal-free, 1024-based units B/KB/MB/GB/TB/PB.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        "PB" => 1 << 50,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Usage: the sum of sizes of distinct digests (a layer pushed in many manifests counts once).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    digests: BTreeMap<String, u64>,
}

impl Usage {
    pub fn add(&mut self, digest: &str, size: u64) {
        self.digests.entry(digest.to_string()).or_insert(size);
    }

    pub fn unique_blobs(&self) -> usize {
        self.digests.len()
    }

    pub fn total(&self) -> u64 {
        self.digests.values().sum()
    }

    /// Bytes `layers` would add (digests not counted yet, each once).
    pub fn added_by<'a>(&self, layers: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        layers
            .into_iter()
            .filter(|(d, _)| !self.digests.contains_key(*d) && seen.insert(*d))
            .map(|(_, s)| s)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Some(5 << 30));
        assert_eq!(parse_size("512 mb"), Some(512 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1 PB"), Some(1 << 50));
        assert_eq!(parse_size("GB"), None);
        assert_eq!(parse_size("5 XB"), None);
        assert_eq!(parse_size("99999999999PB"), None);
    }

    #[test]
    fn tiers() {
        let t = Tiers::parse("deckhand=5GB, bosun=50GB,quartermaster=100GB", "deckhand").unwrap();
        assert_eq!(t.tiers.len(), 3);
        assert_eq!(t.tiers[1].quota_bytes, 50 << 30);
        assert_eq!(t.for_member(Some("bosun")).unwrap().name, "bosun");
        assert_eq!(t.for_member(Some("admiral")).unwrap().name, "deckhand");
        assert_eq!(t.for_member(None).unwrap().name, "deckhand");
        assert!(Tiers::parse("a=1GB", "b").is_err());
        assert!(Tiers::parse("a=1GB,a=2GB", "a").is_err());
        assert!(Tiers::parse("a", "a").is_err());
        let off = Tiers::parse("", "deckhand").unwrap();
        assert!(!off.enabled() && off.for_member(None).is_none());
    }

    #[test]
    fn usage_counts_unique_digests() {
        let mut u = Usage::default();
        u.add("sha256:a", 10);
        u.add("sha256:a", 10);
        u.add("sha256:b", 5);
        assert_eq!((u.unique_blobs(), u.total()), (2, 15));
        assert_eq!(
            u.added_by([("sha256:a", 10), ("sha256:c", 7), ("sha256:c", 7)]),
            7
        );
    }
}
