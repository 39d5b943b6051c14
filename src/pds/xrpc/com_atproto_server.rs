//! `_health` and `com.atproto.server.describeServer`.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::XrpcResult;
use crate::app::http::json;
use crate::pds::HoldPds;

pub async fn health(_hold: &HoldPds, _req: Request<Incoming>) -> XrpcResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"version": env!("CARGO_PKG_VERSION")}),
    ))
}

/// The hold hosts exactly one account (itself) and takes no sign-ups.
pub async fn describe_server(hold: &HoldPds, _req: Request<Incoming>) -> XrpcResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "did": hold.did(),
            "availableUserDomains": [],
            "inviteCodeRequired": true,
            "phoneVerificationRequired": false,
            "links": {},
            "contact": {},
        }),
    ))
}
