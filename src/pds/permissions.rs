//! The hold's permission model (atcr-spec 5.2) as pure functions over the captain and crew
//! records; no I/O, no HTTP. Callers fetch the records ([`super::HoldPds::captain`],
//! [`super::HoldPds::crew_member`]) and the authenticated DID (service token), then ask
//! [`decide`].
//!
//! - The captain's `owner` may do everything.
//! - A crew record grants exactly its `permissions` (`blob:read`, `blob:write`,
//!   `crew:admin`); unknown strings are ignored. `role` is informational here; the role ->
//!   permission mapping ([`role_permissions`]) is what new records get by default.
//! - Blob reads: anyone when `public`, otherwise `blob:read`. Blob writes (uploads,
//!   `notifyManifest`): `blob:write`. Record deletes, `uploadBlob`, crew changes:
//!   `crew:admin`.
//! - `requestCrew`: any authenticated DID when `allowAllCrew`, otherwise only the owner
//!   (and existing members, who get `already_member`).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    BlobRead,
    BlobWrite,
    CrewAdmin,
}

impl Permission {
    pub const ALL: [Permission; 3] = [
        Permission::BlobRead,
        Permission::BlobWrite,
        Permission::CrewAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::BlobRead => "blob:read",
            Permission::BlobWrite => "blob:write",
            Permission::CrewAdmin => "crew:admin",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Default permissions of a crew role (`owner`, `admin`, `write`, `read`; ATCR's
/// `requestCrew` default role `member` = read + write). Unknown roles get none.
pub fn role_permissions(role: &str) -> &'static [Permission] {
    use Permission::*;
    match role {
        "owner" | "admin" => &[BlobRead, BlobWrite, CrewAdmin],
        "write" | "member" => &[BlobRead, BlobWrite],
        "read" => &[BlobRead],
        _ => &[],
    }
}

/// The fields of `io.atcr.hold.captain` that decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captain {
    pub owner: String,
    pub public: bool,
    pub allow_all_crew: bool,
}

impl Captain {
    /// From the record's JSON form; `None` when `owner` is missing. Missing booleans are
    /// read as `false` (the safe side: private, closed registration).
    pub fn from_record(v: &Value) -> Option<Captain> {
        Some(Captain {
            owner: v.get("owner")?.as_str()?.to_string(),
            public: v.get("public").and_then(Value::as_bool).unwrap_or(false),
            allow_all_crew: v
                .get("allowAllCrew")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The fields of an `io.atcr.hold.crew` record that decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrewMember {
    pub member: String,
    pub role: String,
    pub permissions: Vec<Permission>,
    pub tier: Option<String>,
}

impl CrewMember {
    pub fn from_record(v: &Value) -> Option<CrewMember> {
        let mut permissions: Vec<Permission> = v
            .get("permissions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(Permission::parse)
                    .collect()
            })
            .unwrap_or_default();
        permissions.sort();
        permissions.dedup();
        Some(CrewMember {
            member: v.get("member")?.as_str()?.to_string(),
            role: v
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            permissions,
            tier: v
                .get("tier")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }

    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pull a blob (`getBlob`, presigned download).
    ReadBlob,
    /// Upload a blob, `notifyManifest`, `setStats`.
    WriteBlob,
    /// `deleteRecord`, `uploadBlob`, crew changes.
    Admin,
    /// `io.atcr.hold.requestCrew`.
    RequestCrew,
}

/// Why a request is refused (maps to XRPC errors: `AuthRequired` 401, `Forbidden` 403,
/// `RegistrationDisabled` 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    AuthRequired,
    Forbidden(Permission),
    RegistrationDisabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `requestCrew` by someone who already has a crew record.
    AlreadyMember,
    Deny(Deny),
}

/// Decides `action` for `caller` (the authenticated DID, `None` when anonymous), given the
/// captain record and the caller's crew record (if any). `crew` must belong to `caller`;
/// a record for anyone else is ignored.
pub fn decide(
    captain: &Captain,
    crew: Option<&CrewMember>,
    caller: Option<&str>,
    action: Action,
) -> Decision {
    if action == Action::ReadBlob && captain.public {
        return Decision::Allow;
    }
    let Some(did) = caller else {
        return Decision::Deny(Deny::AuthRequired);
    };
    let crew = crew.filter(|c| c.member == did);
    let is_owner = did == captain.owner;
    let need = match action {
        Action::ReadBlob => Permission::BlobRead,
        Action::WriteBlob => Permission::BlobWrite,
        Action::Admin => Permission::CrewAdmin,
        Action::RequestCrew => {
            return if crew.is_some() {
                Decision::AlreadyMember
            } else if is_owner || captain.allow_all_crew {
                Decision::Allow
            } else {
                Decision::Deny(Deny::RegistrationDisabled)
            };
        }
    };
    if is_owner || crew.is_some_and(|c| c.has(need)) {
        Decision::Allow
    } else {
        Decision::Deny(Deny::Forbidden(need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Action::*;
    use Decision::{Allow, AlreadyMember};

    const OWNER: &str = "did:plc:owner";
    const ALICE: &str = "did:plc:alice";
    const BOB: &str = "did:plc:bob";

    fn captain(public: bool, allow_all_crew: bool) -> Captain {
        Captain {
            owner: OWNER.into(),
            public,
            allow_all_crew,
        }
    }

    fn crew(member: &str, perms: &[&str]) -> CrewMember {
        CrewMember::from_record(&json!({
            "$type": "io.atcr.hold.crew",
            "member": member,
            "role": "write",
            "permissions": perms,
            "addedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn owner_may_do_everything() {
        for c in [captain(false, false), captain(true, true)] {
            for a in [ReadBlob, WriteBlob, Admin, RequestCrew] {
                assert_eq!(decide(&c, None, Some(OWNER), a), Allow, "{a:?}");
            }
        }
    }

    #[test]
    fn public_gates_anonymous_reads_only() {
        assert_eq!(decide(&captain(true, false), None, None, ReadBlob), Allow);
        assert_eq!(
            decide(&captain(true, false), None, Some(BOB), ReadBlob),
            Allow
        );
        assert_eq!(
            decide(&captain(false, false), None, None, ReadBlob),
            Decision::Deny(Deny::AuthRequired)
        );
        assert_eq!(
            decide(&captain(false, false), None, Some(BOB), ReadBlob),
            Decision::Deny(Deny::Forbidden(Permission::BlobRead))
        );
        for a in [WriteBlob, Admin, RequestCrew] {
            assert_eq!(
                decide(&captain(true, true), None, None, a),
                Decision::Deny(Deny::AuthRequired)
            );
        }
    }

    #[test]
    fn crew_gets_exactly_its_permissions() {
        let c = captain(false, false);
        let reader = crew(ALICE, &["blob:read"]);
        assert_eq!(decide(&c, Some(&reader), Some(ALICE), ReadBlob), Allow);
        assert_eq!(
            decide(&c, Some(&reader), Some(ALICE), WriteBlob),
            Decision::Deny(Deny::Forbidden(Permission::BlobWrite))
        );
        let writer = crew(ALICE, &["blob:read", "blob:write", "made:up"]);
        assert_eq!(writer.permissions.len(), 2);
        assert_eq!(decide(&c, Some(&writer), Some(ALICE), WriteBlob), Allow);
        assert_eq!(
            decide(&c, Some(&writer), Some(ALICE), Admin),
            Decision::Deny(Deny::Forbidden(Permission::CrewAdmin))
        );
        let admin = crew(ALICE, &["crew:admin"]);
        assert_eq!(decide(&c, Some(&admin), Some(ALICE), Admin), Allow);
        // Someone else's crew record grants nothing.
        assert_eq!(
            decide(&c, Some(&writer), Some(BOB), WriteBlob),
            Decision::Deny(Deny::Forbidden(Permission::BlobWrite))
        );
    }

    #[test]
    fn request_crew() {
        assert_eq!(
            decide(&captain(true, false), None, Some(BOB), RequestCrew),
            Decision::Deny(Deny::RegistrationDisabled)
        );
        assert_eq!(
            decide(&captain(true, true), None, Some(BOB), RequestCrew),
            Allow
        );
        let member = crew(BOB, &["blob:read"]);
        assert_eq!(
            decide(
                &captain(false, false),
                Some(&member),
                Some(BOB),
                RequestCrew
            ),
            AlreadyMember
        );
    }

    #[test]
    fn records_parse_defensively() {
        let c = Captain::from_record(&json!({"owner": OWNER})).unwrap();
        assert!(!c.public && !c.allow_all_crew);
        assert!(Captain::from_record(&json!({"public": true})).is_none());
        assert!(CrewMember::from_record(&json!({"permissions": ["blob:read"]})).is_none());
        let m = CrewMember::from_record(&json!({"member": ALICE, "tier": ""})).unwrap();
        assert!(m.permissions.is_empty() && m.tier.is_none());
        assert_eq!(role_permissions("admin"), Permission::ALL);
        assert_eq!(role_permissions("read"), [Permission::BlobRead]);
        assert!(role_permissions("pirate").is_empty());
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
    }
}
