//! Thin OCI handlers: parse the request, call [`crate::registry::Registry`], shape the
//! response. Errors bubble up as [`OciError`] and become bodies in one place (the router).

mod blob;
mod listing;
mod manifest;
mod upload;

pub use blob::{blob_delete, blob_get};
pub use listing::{catalog, referrers, tags_list};
pub use manifest::{manifest_delete, manifest_get, manifest_put};
pub use upload::{upload_cancel, upload_patch, upload_put, upload_start, upload_status};

use http::{Method, Response, StatusCode};

use super::error::{ErrorCode, OciError};
use crate::app::http::{json, oci_error, Body};

pub type HandlerResult = Result<Response<Body>, OciError>;

/// `GET /v2/`: the API version check.
pub fn base(method: &Method) -> Response<Body> {
    match *method {
        Method::GET | Method::HEAD => json(StatusCode::OK, &serde_json::json!({})),
        _ => oci_error(&OciError::new(
            ErrorCode::Unsupported,
            "only GET and HEAD are allowed on /v2/",
        )),
    }
}

/// `Location` of a committed blob.
fn blob_location(name: &crate::oci::types::Name, digest: &crate::oci::types::Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}
