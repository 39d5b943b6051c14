//! Hold selection and the registry's handle on remote holds (atcr-spec 2 "Hold discovery",
//! 3.4 service tokens).
//!
//! **Which hold a push goes to**, in ATCR's order: the pusher's `io.atcr.sailor.profile`
//! `defaultHold` (read from their PDS, cached for `federation.profile_cache_secs`; a URL
//! there is read as `did:web:<host>`), else the AppView's default hold
//! (`federation.default_hold_did`), else the hold in this process. A selection equal to the
//! local hold's DID is [`HoldTarget::Local`]: the blobs go into the local blob store and the
//! in-process hold applies its crew and quota rules (`hold::registry_hook`); any other DID is
//! [`HoldTarget::Remote`] and the registry streams to it (`registry/remote.rs`).
//!
//! Pulls do not select: they follow the hold that stores the blob (`blob_holds`, see
//! `registry/store/holds.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::records::{RecordsError, PROFILE_NSID};
use super::{RegistryError, Result};
use crate::atproto::identity::Resolver;
use crate::auth::service_token::ServiceTokens;
use crate::hold_client::discovery::HoldDirectory;
use crate::hold_client::{HoldClient, HoldClientConfig, HoldEndpoint};
use crate::ttl_map::TtlMap;

const MAX_CACHED_PROFILES: usize = 10_000;

/// Where a push's blobs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldTarget {
    /// The hold in this process (or, without one, this registry's own blob store).
    Local,
    /// A remote hold, by DID.
    Remote(String),
}

/// ATCR's order: the profile's `defaultHold`, else the configured default, else local. A
/// choice equal to the local hold's DID is local.
pub fn select_hold(
    profile_default: Option<&str>,
    configured_default: Option<&str>,
    local_did: &str,
) -> HoldTarget {
    match profile_default.or(configured_default) {
        Some(d) if d != local_did => HoldTarget::Remote(d.to_string()),
        _ => HoldTarget::Local,
    }
}

/// A `defaultHold` value as a hold DID: a `did:web`/`did:plc` DID as it is, an http(s) URL
/// (older profiles) as `did:web:<host>`; anything else is no choice.
pub fn hold_ref_to_did(value: &str) -> Option<String> {
    let v = value.trim();
    if v.starts_with("did:") {
        let ok = crate::atproto::repo::syntax::validate_did(v).is_ok()
            && (v.starts_with("did:web:") || v.starts_with("did:plc:"));
        return ok.then(|| v.to_string());
    }
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let did = format!("did:web:{}", host.to_ascii_lowercase().replace(':', "%3A"));
    crate::atproto::repo::syntax::validate_did(&did)
        .is_ok()
        .then_some(did)
}

pub struct FederationSettings {
    /// DID of the hold in this process (or the registry's own did:web without one).
    pub local_did: String,
    /// `federation.default_hold_did`; `None`: the local hold.
    pub default_hold: Option<String>,
    pub profile_ttl: Duration,
    pub hold_ttl: Duration,
    pub allow_private: bool,
}

/// The registry's view of the network of holds.
pub struct Federation {
    resolver: Arc<Resolver>,
    client: HoldClient,
    directory: HoldDirectory,
    tokens: Arc<dyn ServiceTokens>,
    local_did: String,
    default_hold: Option<String>,
    /// DID -> the hold its profile names (`None`: no profile or no `defaultHold`).
    profiles: TtlMap<Option<String>>,
    /// Holds that refused an anonymous blob read lately (ask with a token right away).
    private_holds: TtlMap<()>,
    /// Public holds that serve blob bytes themselves (no storage redirect): a HEAD is
    /// enough before sending the client there.
    streaming_holds: TtlMap<()>,
}

impl Federation {
    pub fn new(
        settings: FederationSettings,
        resolver: Arc<Resolver>,
        tokens: Arc<dyn ServiceTokens>,
    ) -> Federation {
        let client = HoldClient::new(HoldClientConfig {
            allow_private: settings.allow_private,
            ..Default::default()
        });
        let directory = HoldDirectory::new(
            client.http().clone(),
            resolver.clone(),
            settings.allow_private,
            settings.hold_ttl,
        );
        Federation {
            resolver,
            client,
            directory,
            tokens,
            local_did: settings.local_did,
            default_hold: settings.default_hold,
            profiles: TtlMap::new(settings.profile_ttl, MAX_CACHED_PROFILES),
            private_holds: TtlMap::new(Duration::from_secs(300), 1000),
            streaming_holds: TtlMap::new(Duration::from_secs(300), 1000),
        }
    }

    pub fn local_did(&self) -> &str {
        &self.local_did
    }

    /// The hold new users get in their sailor profile: the configured default, else local.
    pub fn default_hold_did(&self) -> &str {
        self.default_hold.as_deref().unwrap_or(&self.local_did)
    }

    /// The DID a manifest record names for `target`.
    pub fn did_of<'a>(&'a self, target: &'a HoldTarget) -> &'a str {
        match target {
            HoldTarget::Local => &self.local_did,
            HoldTarget::Remote(d) => d,
        }
    }

    pub fn client(&self) -> &HoldClient {
        &self.client
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// The hold a push by `pusher` goes to.
    pub async fn target_for(&self, pusher: &str) -> Result<HoldTarget> {
        let profile = self.profile_default_hold(pusher).await?;
        Ok(select_hold(
            profile.as_deref(),
            self.default_hold.as_deref(),
            &self.local_did,
        ))
    }

    /// `defaultHold` of `did`'s sailor profile (cached). A PDS that cannot be read fails
    /// the push rather than sending the blobs to a hold the user did not choose.
    pub async fn profile_default_hold(&self, did: &str) -> Result<Option<String>> {
        if let Some(v) = self.profiles.get(did) {
            return Ok(v);
        }
        let unavailable = |e: String| {
            RegistryError::Records(RecordsError::Unavailable(format!(
                "cannot read the sailor profile of {did} (its defaultHold picks the hold): {e}"
            )))
        };
        let id = self
            .resolver
            .resolve(did)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let rec = self
            .resolver
            .xrpc()
            .get_record(&id.pds, did, PROFILE_NSID, "self")
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let chosen = rec.and_then(|r| match r.value.get("defaultHold") {
            Some(serde_json::Value::String(s)) => {
                let d = hold_ref_to_did(s);
                if d.is_none() {
                    tracing::warn!(%did, value = %s, "sailor profile defaultHold is not a hold DID; ignored");
                }
                d
            }
            _ => None,
        });
        self.profiles.put(did, chosen.clone());
        Ok(chosen)
    }

    /// Forget a cached profile (after the user changed it through this AppView).
    pub fn forget_profile(&self, did: &str) {
        self.profiles.forget(did);
    }

    /// The endpoint of a hold DID.
    pub async fn endpoint(&self, hold: &str) -> Result<HoldEndpoint> {
        Ok(self.directory.endpoint(hold).await?)
    }

    /// A service token of `did` for `hold`, method `lxm`.
    pub async fn token(&self, did: &str, hold: &str, lxm: &str) -> Result<String> {
        Ok(self.tokens.service_token(did, hold, lxm).await?)
    }

    pub(super) fn known_private(&self, hold: &str) -> bool {
        self.private_holds.get(hold).is_some()
    }

    pub(super) fn note_private(&self, hold: &str) {
        self.private_holds.put(hold, ());
    }

    pub(super) fn known_streaming(&self, hold: &str) -> bool {
        self.streaming_holds.get(hold).is_some()
    }

    pub(super) fn note_streaming(&self, hold: &str) {
        self.streaming_holds.put(hold, ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "did:web:registry.example.com";

    #[test]
    fn selection_follows_atcrs_order() {
        let b = "did:web:hold-b.example.com";
        let c = "did:plc:holdcholdcholdcholdcholdc";
        // The profile's choice wins over the configured default.
        assert_eq!(
            select_hold(Some(b), Some(c), LOCAL),
            HoldTarget::Remote(b.into())
        );
        // No profile choice: the configured default.
        assert_eq!(
            select_hold(None, Some(c), LOCAL),
            HoldTarget::Remote(c.into())
        );
        // Neither: the local hold.
        assert_eq!(select_hold(None, None, LOCAL), HoldTarget::Local);
        // Naming the local hold, by profile or by config, is local.
        assert_eq!(select_hold(Some(LOCAL), Some(c), LOCAL), HoldTarget::Local);
        assert_eq!(select_hold(None, Some(LOCAL), LOCAL), HoldTarget::Local);
    }

    #[test]
    fn default_hold_values() {
        assert_eq!(
            hold_ref_to_did("did:web:hold01.atcr.io").as_deref(),
            Some("did:web:hold01.atcr.io")
        );
        assert_eq!(
            hold_ref_to_did("did:web:localhost%3A5001").as_deref(),
            Some("did:web:localhost%3A5001")
        );
        assert_eq!(
            hold_ref_to_did("https://Hold01.atcr.io/").as_deref(),
            Some("did:web:hold01.atcr.io")
        );
        assert_eq!(
            hold_ref_to_did("http://localhost:5001").as_deref(),
            Some("did:web:localhost%3A5001")
        );
        for junk in [
            "",
            "hold01.atcr.io",
            "did:key:zabc",
            "https://",
            "https://a@b",
            "ftp://x",
        ] {
            assert_eq!(hold_ref_to_did(junk), None, "{junk:?}");
        }
    }
}
