//! `com.atproto.identity.resolveHandle`: only the hold's own handle (its host name).

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::{Params, XrpcError, XrpcErrorKind, XrpcResult};
use crate::app::http::json;
use crate::pds::HoldPds;

pub async fn resolve_handle(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    let handle = p.required("handle")?;
    if handle.eq_ignore_ascii_case(&hold.identity().handle) {
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"did": hold.did()}),
        ))
    } else {
        Err(XrpcError::new(
            XrpcErrorKind::HandleNotFound,
            format!("Unable to resolve handle: {handle}"),
        ))
    }
}
