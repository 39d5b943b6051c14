//! The one OCI error table: every error code with its spec message and HTTP status, and the
//! one place where domain errors become OCI error responses.

use http::StatusCode;
use serde::Serialize;

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
        }
    }
}

/// An error on its way to the client: a code, a detail for humans, and, rarely, a status that
/// differs from the table's (416 for out-of-order chunks, 413 for oversized manifests).
#[derive(Debug, Clone)]
pub struct OciError {
    pub code: ErrorCode,
    pub detail: String,
    pub status_override: Option<StatusCode>,
}

impl OciError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        OciError {
            code,
            detail: detail.into(),
            status_override: None,
        }
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
        let (code, message, _) = self.code.describe();
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
