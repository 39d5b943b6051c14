//! The one OCI error table: every error code with its spec message and HTTP status, and the
//! one place where domain errors become OCI error responses.

use http::StatusCode;
use serde::Serialize;

#[cfg(feature = "server")]
use crate::registry::RegistryError;

use super::types::manifest::ManifestError;
use super::types::{DigestError, NameError};

/// The error codes of the OCI Distribution Spec (code-1 .. code-14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not in the OCI table; distribution's generic `UNAVAILABLE` (the user's PDS is down).
    Unavailable,
    /// The disk is full (or under the free-space watermark): `507 Insufficient Storage`, a
    /// status whose reason phrase names the cause even for clients that print only the
    /// status line of a 5xx (docker), with distribution's registered `UNAVAILABLE` code so
    /// clients that read the body (skopeo, podman, containerd) show our message.
    InsufficientStorage,
}

impl ErrorCode {
    /// (code string, message, status): the whole table, one row per code.
    pub const fn describe(self) -> (&'static str, &'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BlobUnknown => (
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                StatusCode::NOT_FOUND,
            ),
            BlobUploadInvalid => (
                "BLOB_UPLOAD_INVALID",
                "blob upload invalid",
                StatusCode::BAD_REQUEST,
            ),
            BlobUploadUnknown => (
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
                StatusCode::NOT_FOUND,
            ),
            DigestInvalid => (
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                StatusCode::BAD_REQUEST,
            ),
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a manifest or blob unknown to registry",
                StatusCode::BAD_REQUEST,
            ),
            ManifestInvalid => (
                "MANIFEST_INVALID",
                "manifest invalid",
                StatusCode::BAD_REQUEST,
            ),
            ManifestUnknown => (
                "MANIFEST_UNKNOWN",
                "manifest unknown to registry",
                StatusCode::NOT_FOUND,
            ),
            NameInvalid => (
                "NAME_INVALID",
                "invalid repository name",
                StatusCode::BAD_REQUEST,
            ),
            NameUnknown => (
                "NAME_UNKNOWN",
                "repository name not known to registry",
                StatusCode::NOT_FOUND,
            ),
            SizeInvalid => (
                "SIZE_INVALID",
                "provided length did not match content length",
                StatusCode::BAD_REQUEST,
            ),
            Unauthorized => (
                "UNAUTHORIZED",
                "authentication required",
                StatusCode::UNAUTHORIZED,
            ),
            Denied => (
                "DENIED",
                "requested access to the resource is denied",
                StatusCode::FORBIDDEN,
            ),
            Unsupported => (
                "UNSUPPORTED",
                "the operation is unsupported",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            TooManyRequests => (
                "TOOMANYREQUESTS",
                "too many requests",
                StatusCode::TOO_MANY_REQUESTS,
            ),
            Unavailable => (
                "UNAVAILABLE",
                "service unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            InsufficientStorage => (
                "UNAVAILABLE",
                "insufficient storage: the registry's disk is full, uploads are refused until space is freed",
                StatusCode::INSUFFICIENT_STORAGE,
            ),
        }
    }
}

/// `Retry-After` of a full-disk answer: space may come back (an upload aborted, GC).
pub const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 60;
/// `Retry-After` when a client has too many upload sessions open.
pub const TOO_MANY_UPLOADS_RETRY_AFTER_SECS: u64 = 30;

/// An error on its way to the client: a code, a detail for humans, and, rarely, a status that
/// differs from the table's (416 for out-of-order chunks, 413 for oversized manifests).
#[derive(Debug, Clone)]
pub struct OciError {
    pub code: ErrorCode,
    pub detail: String,
    pub status_override: Option<StatusCode>,
    /// Seconds for a `Retry-After` header (full disk, too many uploads).
    pub retry_after: Option<u64>,
}

impl OciError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        OciError {
            code,
            detail: detail.into(),
            status_override: None,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status_override = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status_override.unwrap_or(self.code.describe().2)
    }

    /// The spec's JSON envelope: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            detail: &'a str,
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            errors: [Entry<'a>; 1],
        }
        let (code, generic, _) = self.code.describe();
        // Clients print `message` (docker, podman and skopeo show "code: message"), so a
        // refusal whose reason the user must read (a hold's crew rule, a hold that is down)
        // carries that reason there too, not just in `detail`.
        let message = match self.code {
            ErrorCode::Denied | ErrorCode::Unavailable if !self.detail.is_empty() => {
                self.detail.as_str()
            }
            _ => generic,
        };
        serde_json::to_vec(&Envelope {
            errors: [Entry {
                code,
                message,
                detail: &self.detail,
            }],
        })
        .unwrap_or_default()
    }
}

impl From<NameError> for OciError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::BadTag(_) => OciError::new(ErrorCode::ManifestInvalid, e.to_string()),
            NameError::BadDigest(_) => OciError::new(ErrorCode::DigestInvalid, e.to_string()),
            _ => OciError::new(ErrorCode::NameInvalid, e.to_string()),
        }
    }
}

impl From<DigestError> for OciError {
    fn from(e: DigestError) -> Self {
        OciError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ManifestError> for OciError {
    fn from(e: ManifestError) -> Self {
        OciError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

#[cfg(feature = "server")]
impl From<RegistryError> for OciError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as R;
        let detail = e.to_string();
        match e {
            R::BlobUnknown(_) => OciError::new(ErrorCode::BlobUnknown, detail),
            R::UploadUnknown => OciError::new(ErrorCode::BlobUploadUnknown, detail),
            R::UploadOutOfOrder { .. } => OciError::new(ErrorCode::BlobUploadInvalid, detail)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE),
            R::UploadInvalid(_) => OciError::new(ErrorCode::BlobUploadInvalid, detail),
            R::DigestMismatch { .. } => OciError::new(ErrorCode::DigestInvalid, detail),
            R::SizeMismatch { .. } => OciError::new(ErrorCode::SizeInvalid, detail),
            R::ManifestUnknown => OciError::new(ErrorCode::ManifestUnknown, detail),
            R::ManifestBlobUnknown(_) => OciError::new(ErrorCode::ManifestBlobUnknown, detail),
            R::ManifestInvalid(_) => OciError::new(ErrorCode::ManifestInvalid, detail),
            R::ManifestTooLarge { .. } => OciError::new(ErrorCode::ManifestInvalid, detail)
                .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            R::NameUnknown => OciError::new(ErrorCode::NameUnknown, detail),
            R::Denied(_) => OciError::new(ErrorCode::Denied, detail),
            R::StorageFull(_) => OciError::new(ErrorCode::InsufficientStorage, detail)
                .with_retry_after(STORAGE_FULL_RETRY_AFTER_SECS),
            R::TooManyUploads(_) => OciError::new(ErrorCode::TooManyRequests, detail)
                .with_retry_after(TOO_MANY_UPLOADS_RETRY_AFTER_SECS),
            R::BodyTimeout(_) => OciError::new(ErrorCode::BlobUploadInvalid, detail)
                .with_status(StatusCode::REQUEST_TIMEOUT),
            R::Database(db) if db.is_no_space() => {
                tracing::error!(error = %detail, "the registry database cannot write: disk full");
                OciError::new(
                    ErrorCode::InsufficientStorage,
                    "the registry's database cannot write: its disk is full",
                )
                .with_retry_after(STORAGE_FULL_RETRY_AFTER_SECS)
            }
            R::Unsupported(_) => OciError::new(ErrorCode::Unsupported, detail),
            R::Records(r) => {
                use crate::registry::records::RecordsError as E;
                match r {
                    E::Unavailable(_) => OciError::new(ErrorCode::Unavailable, detail),
                    E::NoSession(_) => OciError::new(ErrorCode::Unauthorized, detail),
                    E::Invalid(_) => OciError::new(ErrorCode::Unavailable, detail)
                        .with_status(StatusCode::BAD_GATEWAY),
                }
            }
            R::Hold(h) => hold_error(&h),
            R::ServiceToken(t) => match t {
                crate::auth::service_token::ServiceTokenError::NoSession(_) => {
                    OciError::new(ErrorCode::Unauthorized, detail)
                }
                crate::auth::service_token::ServiceTokenError::Pds { .. } => {
                    OciError::new(ErrorCode::Unavailable, detail)
                }
            },
            R::AuthRequired(_) => OciError::new(ErrorCode::Unauthorized, detail),
            // Internal failures: the spec has no code for them; keep the detail vague (it may
            // name paths) and let the log carry the rest.
            R::Storage(_) | R::Database(_) | R::Io(_) => {
                tracing::error!(error = %detail, "internal registry error");
                OciError::new(ErrorCode::Unsupported, "internal server error")
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

#[cfg(feature = "server")]
/// A remote hold's answer as the OCI client should see it: refusals of access and quota are
/// `DENIED` with the hold's own reason and what to do; a hold that cannot be reached is
/// `UNAVAILABLE` naming it; a digest the hold refuses is `DIGEST_INVALID`.
pub fn hold_error(h: &crate::hold_client::HoldCallError) -> OciError {
    use crate::hold_client::{HoldCallError as H, GET_BLOB};
    let hold = h.hold();
    match h {
        H::Refused { method, error, .. } if h.is_forbidden() || error == "RegistrationDisabled" => {
            let how = if method == GET_BLOB {
                "pulls from this hold need a crew member with blob:read: ask its captain to add you"
            } else {
                "pushes need its captain or a crew member with blob:write: ask the captain to add you \
                 (the hold's admin panel), or set defaultHold in your io.atcr.sailor.profile to a hold you belong to"
            };
            OciError::new(
                ErrorCode::Denied,
                format!("hold {hold} refused: {}. {how}", h.reason()),
            )
        }
        H::Refused { .. } if h.is_quota_exceeded() => OciError::new(
            ErrorCode::Denied,
            format!("hold {hold} refused the push: {}", h.reason()),
        ),
        H::Refused { .. } if h.is_auth_required() => OciError::new(
            ErrorCode::Unauthorized,
            format!(
                "hold {hold} needs authentication: {} (log in with docker login)",
                h.reason()
            ),
        ),
        H::Refused { error, .. } if error == "InvalidDigest" => OciError::new(
            ErrorCode::DigestInvalid,
            format!("hold {hold}: {}", h.reason()),
        ),
        H::Refused { error, .. } if error == "InvalidUploadId" => OciError::new(
            ErrorCode::BlobUploadUnknown,
            format!("hold {hold} no longer knows this upload: start it again"),
        ),
        H::Refused { .. } | H::BadResponse { .. } => {
            OciError::new(ErrorCode::Unavailable, h.to_string())
                .with_status(StatusCode::BAD_GATEWAY)
        }
        H::Unavailable { .. } | H::Discovery { .. } => {
            OciError::new(ErrorCode::Unavailable, h.to_string())
        }
    }
}

#[cfg(feature = "server")]
impl From<crate::auth::AuthError> for OciError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        let detail = e.to_string();
        match e {
            A::Required
            | A::LoginToPush(_)
            | A::BadCredentials(_)
            | A::BadToken(_)
            | A::Identity { .. }
            | A::MainPassword => OciError::new(ErrorCode::Unauthorized, detail),
            A::Denied(_) => OciError::new(ErrorCode::Denied, detail),
            A::TooManyFailures => OciError::new(ErrorCode::TooManyRequests, detail),
            A::PdsUnavailable(_) => {
                OciError::new(ErrorCode::Unauthorized, detail).with_status(StatusCode::BAD_GATEWAY)
            }
            A::Internal(_) => {
                tracing::error!(error = %detail, "internal auth error");
                OciError::new(ErrorCode::Unsupported, "internal server error")
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold_client::HoldCallError;

    fn refused(method: &str, status: u16, error: &str, message: &str) -> RegistryError {
        RegistryError::Hold(HoldCallError::Refused {
            hold: "did:web:hold-b.example.com".into(),
            method: method.into(),
            status,
            error: error.into(),
            message: Some(message.into()),
        })
    }

    fn code(e: RegistryError) -> (&'static str, u16, String) {
        let o = OciError::from(e);
        (o.code.describe().0, o.status().as_u16(), o.detail)
    }

    #[test]
    fn hold_refusals_become_oci_errors() {
        use crate::hold_client::{GET_BLOB, INITIATE_UPLOAD, NOTIFY_MANIFEST};
        // Not crew: DENIED with the hold's reason and the way in.
        let (c, s, d) = code(refused(
            INITIATE_UPLOAD,
            403,
            "Forbidden",
            "this needs the blob:write permission on this hold",
        ));
        assert_eq!((c, s), ("DENIED", 403));
        assert!(d.contains("did:web:hold-b.example.com"), "{d}");
        assert!(d.contains("this needs the blob:write permission"), "{d}");
        assert!(d.contains("captain") && d.contains("defaultHold"), "{d}");
        let (c, _, d) = code(refused(GET_BLOB, 403, "Forbidden", "needs blob:read"));
        assert_eq!(c, "DENIED");
        assert!(d.contains("blob:read"), "{d}");
        let (c, _, _) = code(refused(
            INITIATE_UPLOAD,
            403,
            "RegistrationDisabled",
            "this hold does not accept new crew members",
        ));
        assert_eq!(c, "DENIED");
        // Over quota: DENIED with the hold's numbers.
        let (c, s, d) = code(refused(
            NOTIFY_MANIFEST,
            400,
            "QuotaExceeded",
            "storage quota exceeded for did:plc:a: tier deckhand allows 5 bytes",
        ));
        assert_eq!((c, s), ("DENIED", 403));
        assert!(d.contains("tier deckhand"), "{d}");
        // Hold down: UNAVAILABLE naming the hold.
        let (c, s, d) = code(RegistryError::Hold(HoldCallError::Unavailable {
            hold: "did:web:hold-b.example.com".into(),
            method: GET_BLOB.into(),
            detail: "connection refused".into(),
        }));
        assert_eq!((c, s), ("UNAVAILABLE", 503));
        assert!(d.contains("did:web:hold-b.example.com") && d.contains("connection refused"));
        let (c, s, _) = code(RegistryError::Hold(HoldCallError::Discovery {
            hold: "did:web:gone.example.com".into(),
            detail: "its did.json answered HTTP 404".into(),
        }));
        assert_eq!((c, s), ("UNAVAILABLE", 503));
        // The hold's own answers that mean something to the client.
        assert_eq!(
            code(refused(
                "x",
                400,
                "InvalidDigest",
                "content digest is sha256:1"
            ))
            .0,
            "DIGEST_INVALID"
        );
        assert_eq!(
            code(refused("x", 400, "InvalidUploadId", "unknown upload id")).0,
            "BLOB_UPLOAD_UNKNOWN"
        );
        assert_eq!(
            code(refused(GET_BLOB, 401, "AuthRequired", "log in")).0,
            "UNAUTHORIZED"
        );
        // Anything else the hold refuses is its fault, not the client's: 502.
        assert_eq!(code(refused("x", 400, "UploadFailed", "disk full")).1, 502);
        // A missing PDS session for the service token: log in again.
        let (c, s, _) = code(RegistryError::ServiceToken(
            crate::auth::service_token::ServiceTokenError::NoSession("did:plc:a".into()),
        ));
        assert_eq!((c, s), ("UNAUTHORIZED", 401));
        let (c, s, _) = code(RegistryError::AuthRequired("hold is private".into()));
        assert_eq!((c, s), ("UNAUTHORIZED", 401));
    }
}
