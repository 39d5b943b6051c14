//! The hold's own records (atcr-spec 1.2) and their bootstrap on start.
//!
//! - `io.atcr.hold.captain`, rkey `self`: `{owner, public, allowAllCrew, enableBlueskyPosts,
//!   deployedAt, region?, successor?}`. Created on first start; on every start the config's
//!   values of `owner`, `public`, `allowAllCrew`, `enableBlueskyPosts`, `region` and
//!   `successor` are synced into it (written only when one of them changed; other fields,
//!   e.g. `deployedAt`, are kept).
//! - `io.atcr.hold.crew`, rkey [`crew_rkey`]`(member)`: the owner as first member
//!   (role `owner`, all permissions, the default tier), added when missing.
//! - `app.bsky.actor.profile`, rkey `self`: created once, never overwritten.
//!
//! With no `hold.owner_did` configured the captain's `owner` is the hold's own DID, so no
//! user has captain rights and no crew record is written until an owner is configured.

use sha2::{Digest, Sha256};

use super::{record_cbor, record_json, HoldError, Identity};
use crate::atproto::records::{HoldCaptain, HoldCrew, LexiconRecord};
use crate::atproto::repo::{Blockstore, Repo, Write};
use crate::config::HoldConfig;

pub const CAPTAIN: &str = "io.atcr.hold.captain";
pub const CREW: &str = "io.atcr.hold.crew";
pub const PROFILE: &str = "app.bsky.actor.profile";
pub const SELF: &str = "self";

/// Every permission a crew record can grant.
pub const ALL_PERMISSIONS: [&str; 3] = ["blob:read", "blob:write", "crew:admin"];

/// Crew record key: lowercase RFC 4648 base32 (no padding) of the first 16 bytes of
/// sha256(member DID); 26 characters of `[a-z2-7]`, a valid record key, and the same
/// scheme atcr uses for `io.atcr.hold.stats` keys. Deterministic, so a member's record
/// is found without scanning the collection.
pub fn crew_rkey(member_did: &str) -> String {
    let h = Sha256::digest(member_did.as_bytes());
    base32_lower(&h[..16])
}

/// `io.atcr.hold.stats` record key: the same scheme over `owner + "/" + repository`.
pub fn stats_rkey(owner_did: &str, repository: &str) -> String {
    let h = Sha256::digest(format!("{owner_did}/{repository}").as_bytes());
    base32_lower(&h[..16])
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The captain's owner: the configured DID, else the hold itself.
pub fn owner_of(ident: &Identity, cfg: &HoldConfig) -> String {
    if cfg.owner_did.is_empty() {
        ident.did.clone()
    } else {
        cfg.owner_did.clone()
    }
}

/// The captain fields the config file sets, as they would appear in the record. `region`
/// and `successor` are `""` when the config sets none (the record then has no such field,
/// or keeps what the admin panel wrote). `cfg.region` is the effective region
/// ([`crate::config::Config::hold_region`]).
pub fn captain_settings(ident: &Identity, cfg: &HoldConfig) -> serde_json::Value {
    serde_json::json!({
        "owner": owner_of(ident, cfg),
        "public": cfg.public,
        "allowAllCrew": cfg.allow_all_crew,
        "enableBlueskyPosts": cfg.enable_bluesky_posts,
        "region": cfg.region,
        "successor": cfg.successor,
    })
}

/// Settings that are strings and may be unset (`""`).
const OPTIONAL_SETTINGS: [&str; 2] = ["region", "successor"];

/// The writes that bring the bootstrap records in line with the config (empty if none).
///
/// The captain's settings can be changed in two places: the config file and the admin panel
/// (which writes the record). The latest change wins: a setting is copied from the config
/// only when the config's value differs from `last_applied`, the settings this function
/// was last given, so a restart does not undo a toggle made in the panel. `owner` always
/// follows the config. With no `last_applied` (a new hold, or one from before this rule)
/// the config wins.
pub fn bootstrap_writes<S: Blockstore>(
    repo: &Repo<S>,
    ident: &Identity,
    cfg: &HoldConfig,
    last_applied: Option<&serde_json::Value>,
    now: &str,
) -> Result<Vec<Write>, HoldError> {
    let mut writes = Vec::new();
    let wanted = captain_settings(ident, cfg);
    let unset = serde_json::Value::String(String::new());
    let changed_in_config = |key: &str, value: &serde_json::Value| match last_applied {
        // An optional setting missing from what was last applied (older versions) was unset.
        Some(prev) if OPTIONAL_SETTINGS.contains(&key) => prev.get(key).unwrap_or(&unset) != value,
        Some(prev) if key != "owner" => prev.get(key) != Some(value),
        _ => true,
    };
    match repo.get_record(CAPTAIN, SELF)? {
        None => {
            let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let rec = HoldCaptain {
                owner: owner_of(ident, cfg),
                public: cfg.public,
                allow_all_crew: cfg.allow_all_crew,
                enable_bluesky_posts: cfg.enable_bluesky_posts,
                deployed_at: now.into(),
                region: set(&cfg.region),
                successor: set(&cfg.successor),
            }
            .to_value();
            writes.push(Write::Create {
                collection: CAPTAIN.into(),
                rkey: SELF.into(),
                record: record_cbor(&rec)?,
            });
        }
        Some((_, bytes)) => {
            let mut rec = record_json(&bytes)?;
            let mut changed = false;
            if let (Some(obj), Some(want)) = (rec.as_object_mut(), wanted.as_object()) {
                for (k, v) in want {
                    if *v == unset {
                        // Unset in the config now after being set: the field goes.
                        if obj.contains_key(k) && changed_in_config(k, v) {
                            obj.remove(k);
                            changed = true;
                        }
                    } else if obj.get(k) != Some(v) && changed_in_config(k, v) {
                        obj.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
            }
            if changed {
                writes.push(Write::Update {
                    collection: CAPTAIN.into(),
                    rkey: SELF.into(),
                    record: record_cbor(&rec)?,
                });
            }
        }
    }
    if !cfg.owner_did.is_empty() {
        let rkey = crew_rkey(&cfg.owner_did);
        match repo.get_record(CREW, &rkey)? {
            None => {
                let rec = HoldCrew {
                    member: cfg.owner_did.clone(),
                    role: "owner".into(),
                    permissions: ALL_PERMISSIONS.iter().map(|p| p.to_string()).collect(),
                    added_at: now.into(),
                    tier: (!cfg.default_tier.is_empty()).then(|| cfg.default_tier.clone()),
                }
                .to_value();
                writes.push(Write::Create {
                    collection: CREW.into(),
                    rkey,
                    record: record_cbor(&rec)?,
                });
            }
            // Written before records carried the tier: the owner gets the default one.
            Some((_, bytes)) => {
                let mut rec = record_json(&bytes)?;
                if rec.get("tier").is_none() && !cfg.default_tier.is_empty() && rec.is_object() {
                    rec["tier"] = cfg.default_tier.clone().into();
                    writes.push(Write::Update {
                        collection: CREW.into(),
                        rkey,
                        record: record_cbor(&rec)?,
                    });
                }
            }
        }
    }
    if repo.get_record(PROFILE, SELF)?.is_none() {
        let rec = serde_json::json!({
            "$type": PROFILE,
            "displayName": ident.handle,
            "description": format!("ATCR hold {} (container image blob storage)", ident.host),
        });
        writes.push(Write::Create {
            collection: PROFILE.into(),
            rkey: SELF.into(),
            record: record_cbor(&rec)?,
        });
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crew_rkey_is_stable_and_valid() {
        let k = crew_rkey("did:plc:ewvi7nxzyoun6zhxrhs64oiz");
        assert_eq!(k.len(), 26);
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(k, crew_rkey("did:plc:ewvi7nxzyoun6zhxrhs64oiz"));
        assert_ne!(k, crew_rkey("did:plc:other"));
        crate::atproto::repo::syntax::validate_record_key(&k).unwrap();
        // RFC 4648 test vector, lowercased, unpadded.
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }
}
