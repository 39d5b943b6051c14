//! The hold's `io.atcr.hold.*` API as domain logic (atcr-spec 5.1-5.6), without HTTP: the
//! handlers in `pds/xrpc/io_atcr_hold.rs` parse requests, authenticate the caller
//! ([`HoldService::caller`], service tokens from [`crate::pds::service_auth`]) and call here.
//!
//! - [`uploads`]: multipart blob uploads (initiate, part URL, part, complete, abort) on top
//!   of the [`BlobStore`] staged uploads: hashed while written, visible only after
//!   `completeUpload` verified the digest.
//! - [`manifest`]: `notifyManifest` (layer records in one commit, quota, optional Bluesky
//!   post), also called in-process by the registry's push path ([`PushHook`]).
//! - [`stats`]: pull and push counts (`io.atcr.hold.stats`), counted in memory and written
//!   in batches by the [`stats::StatsBatcher`].
//! - [`users`]: crew requests, quota, per-user export and deletion, stats, tiers.
//! - [`quota`]: tiers and usage arithmetic, pure.
//!
//! Every entry point takes the caller's DID (or `None` for anonymous) and decides with
//! [`crate::pds::permissions::decide`] through [`HoldService::require`].

pub mod manifest;
pub mod quota;
pub mod registry_hook;
pub mod stats;
pub mod uploads;
pub mod users;

use std::sync::Arc;

use crate::atproto::identity::Resolver;
use crate::blob::{BlobError, BlobStore};
use crate::pds::permissions::{Action, Decision, Deny, Permission};
use crate::pds::service_auth::{ServiceAuth, ServiceAuthError};
use crate::pds::{HoldError, HoldPds};

pub use manifest::{NotifyManifest, NotifyOutcome};
pub use quota::Tiers;

pub const LAYER: &str = "io.atcr.hold.layer";
pub const STATS: &str = "io.atcr.hold.stats";
pub const POST: &str = "app.bsky.feed.post";

/// Errors of the hold API, each with its lexicon error name (mapped to an XRPC body in
/// `pds/xrpc/io_atcr_hold.rs`, the one place).
#[derive(Debug, thiserror::Error)]
pub enum HoldApiError {
    #[error(transparent)]
    Auth(#[from] ServiceAuthError),
    #[error("authentication required")]
    AuthRequired,
    #[error("this needs the {0} permission on this hold")]
    Forbidden(&'static str),
    #[error("this hold does not accept new crew members")]
    RegistrationDisabled,
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidDigest(String),
    #[error("unknown upload id")]
    InvalidUploadId,
    #[error("{0}")]
    InvalidPartNumber(String),
    #[error("{0}")]
    UploadFailed(String),
    /// The caller (or its address) holds as many upload sessions as it may.
    #[error("{0}")]
    TooManyUploads(String),
    #[error("{0}")]
    MissingParts(String),
    #[error("{0}")]
    CompletionFailed(String),
    #[error("{0}")]
    InvalidOperation(String),
    #[error("{0}")]
    UserMismatch(String),
    #[error("{0}")]
    InvalidUserDid(String),
    #[error("{0}")]
    InvalidOwner(String),
    #[error("{0}")]
    InvalidRepository(String),
    #[error("{0}")]
    BlobNotFound(String),
    #[error(transparent)]
    Hold(#[from] HoldError),
    #[error("blob storage: {0}")]
    Blob(#[from] BlobError),
}

impl From<Deny> for HoldApiError {
    fn from(d: Deny) -> Self {
        match d {
            Deny::AuthRequired => HoldApiError::AuthRequired,
            Deny::Forbidden(p) => HoldApiError::Forbidden(p.as_str()),
            Deny::RegistrationDisabled => HoldApiError::RegistrationDisabled,
        }
    }
}

pub type Result<T, E = HoldApiError> = std::result::Result<T, E>;

pub struct HoldService {
    pds: Arc<HoldPds>,
    blobs: Arc<dyn BlobStore>,
    auth: ServiceAuth,
    tiers: Tiers,
    uploads: uploads::Uploads,
    upload_limits: uploads::UploadLimits,
    stats: Arc<stats::StatsBatcher>,
    /// The vulnerability scanner pushes are handed to (`[scan] enabled`).
    scanner: std::sync::OnceLock<Arc<crate::scan::service::Scanner>>,
}

/// How long a blob completed through `completeUpload` is kept from garbage collection
/// without a layer record: the AppView sends `notifyManifest` (which writes the layer record)
/// only after its manifest write. The completions are kept in the hold's redb, so a restart
/// in between does not expose such a blob to GC.
const UNNOTIFIED_GRACE_SECS: u64 = 24 * 3600;

impl std::fmt::Debug for HoldService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldService")
            .field("did", &self.pds.did())
            .finish_non_exhaustive()
    }
}

impl HoldService {
    pub fn new(
        pds: Arc<HoldPds>,
        blobs: Arc<dyn BlobStore>,
        resolver: Arc<Resolver>,
        tiers: Tiers,
        upload_limits: uploads::UploadLimits,
    ) -> Arc<HoldService> {
        Arc::new(HoldService {
            auth: ServiceAuth::new(pds.did(), resolver),
            stats: stats::StatsBatcher::new(pds.clone()),
            pds,
            blobs,
            tiers,
            uploads: uploads::Uploads::default(),
            upload_limits,
            scanner: std::sync::OnceLock::new(),
        })
    }

    async fn note_completed(&self, digest: &crate::oci::types::Digest) -> Result<()> {
        let digest = digest.to_string();
        let now = uploads::unix_now();
        self.pds
            .store()
            .run(move |st| {
                st.note_completed(&digest, now, now.saturating_sub(UNNOTIFIED_GRACE_SECS))
            })
            .await
            .map_err(|e| HoldApiError::Hold(e.into()))
    }

    async fn unnotified_completions(&self) -> Result<Vec<String>> {
        let since = uploads::unix_now().saturating_sub(UNNOTIFIED_GRACE_SECS);
        self.pds
            .store()
            .run(move |st| st.completed_since(since))
            .await
            .map_err(|e| HoldApiError::Hold(e.into()))
    }

    pub fn pds(&self) -> &Arc<HoldPds> {
        &self.pds
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// The pull/push counters (`io.atcr.hold.stats`, written in batches).
    pub fn stats(&self) -> &Arc<stats::StatsBatcher> {
        &self.stats
    }

    /// Hands pushed images to `scanner` from now on.
    pub fn set_scanner(&self, scanner: Arc<crate::scan::service::Scanner>) {
        let _ = self.scanner.set(scanner);
    }

    pub fn scanner(&self) -> Option<&Arc<crate::scan::service::Scanner>> {
        self.scanner.get()
    }

    /// The authenticated caller of `nsid`: `None` without an `Authorization` header, the
    /// token's issuer DID when it carries a valid service token, an error otherwise (a bad
    /// token is never treated as anonymous).
    pub async fn caller(&self, authorization: Option<&str>, nsid: &str) -> Result<Option<String>> {
        if authorization.is_none() {
            return Ok(None);
        }
        let token = crate::pds::service_auth::bearer(authorization)?;
        Ok(Some(self.auth.verify(token, nsid).await?))
    }

    /// Like [`HoldService::caller`] but anonymous callers are refused.
    pub async fn authenticated(&self, authorization: Option<&str>, nsid: &str) -> Result<String> {
        self.caller(authorization, nsid)
            .await?
            .ok_or(HoldApiError::AuthRequired)
    }

    /// Crew rules for `action` ([`crate::pds::permissions::decide`]).
    pub async fn require(&self, caller: Option<&str>, action: Action) -> Result<()> {
        match self.pds.authorize(caller, action).await? {
            Decision::Allow | Decision::AlreadyMember => Ok(()),
            Decision::Deny(d) => Err(d.into()),
        }
    }

    /// True when `caller` is the captain or has `crew:admin`.
    pub async fn is_admin(&self, caller: &str) -> Result<bool> {
        Ok(matches!(
            self.pds.authorize(Some(caller), Action::Admin).await?,
            Decision::Allow
        ))
    }

    /// The user themself, or an admin, may act on `user`'s data.
    pub async fn require_self_or_admin(&self, caller: &str, user: &str) -> Result<()> {
        if caller == user || self.is_admin(caller).await? {
            Ok(())
        } else {
            Err(HoldApiError::Forbidden(Permission::CrewAdmin.as_str()))
        }
    }
}

/// A DID syntax check for request fields (full validation happens on resolution).
pub fn check_did(s: &str) -> bool {
    crate::atproto::repo::syntax::validate_did(s).is_ok()
}
