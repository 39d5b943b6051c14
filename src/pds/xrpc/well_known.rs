//! `/.well-known/did.json` (the hold's did:web document) and `/.well-known/atproto-did`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{public_url, XrpcError, XrpcErrorKind};
use crate::app::http::{full, json, Body};
use crate::app::AppState;
use crate::pds::HoldPds;

/// The DID document: Multikey `#atproto` key, `#atproto_pds` and `#atcr_hold` services.
pub fn did_document(hold: &HoldPds, endpoint: &str) -> serde_json::Value {
    let id = hold.identity();
    serde_json::json!({
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ],
        "id": id.did,
        "alsoKnownAs": [format!("at://{}", id.handle)],
        "verificationMethod": [{
            "id": format!("{}#atproto", id.did),
            "type": "Multikey",
            "controller": id.did,
            "publicKeyMultibase": hold.public_key().multikey(),
        }],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": endpoint,
            },
            {
                "id": "#atcr_hold",
                "type": "AtcrHoldService",
                "serviceEndpoint": endpoint,
            },
        ],
    })
}

fn disabled() -> Response<Body> {
    XrpcError::new(
        XrpcErrorKind::MethodNotImplemented,
        "the hold is disabled on this server",
    )
    .with_status(StatusCode::NOT_FOUND)
}

pub fn did_json(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    let Some(hold) = &state.hold else {
        return disabled();
    };
    let endpoint = public_url(hold, req);
    json(StatusCode::OK, &did_document(hold, &endpoint))
}

pub fn atproto_did(state: &AppState) -> Response<Body> {
    let Some(hold) = &state.hold else {
        return disabled();
    };
    let did = hold.did().to_string();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, did.len())
        .body(full(did))
        .expect("static headers are valid")
}
