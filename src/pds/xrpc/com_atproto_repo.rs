//! `com.atproto.repo.describeRepo`, `getRecord`, `listRecords` (public reads).

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::well_known::did_document;
use super::{check_repo, public_url, Params, XrpcError, XrpcErrorKind, XrpcResult};
use crate::app::http::json;
use crate::atproto::repo::syntax::{validate_nsid, validate_record_key};
use crate::pds::{HoldPds, RecordView};

pub const LIST_DEFAULT: usize = 50;
pub const LIST_MAX: usize = 100;

fn collection_param(p: &Params) -> Result<&str, XrpcError> {
    let c = p.required("collection")?;
    validate_nsid(c).map_err(|e| XrpcError::invalid(format!("collection: {e}")))?;
    Ok(c)
}

fn view_json(hold: &HoldPds, collection: &str, r: &RecordView) -> serde_json::Value {
    serde_json::json!({
        "uri": format!("at://{}/{}/{}", hold.did(), collection, r.rkey),
        "cid": r.cid.to_string(),
        "value": r.value,
    })
}

pub async fn describe_repo(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("repo")?)?;
    let collections = hold.collections().await?;
    let endpoint = public_url(hold, &req);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "handle": hold.identity().handle,
            "did": hold.did(),
            "didDoc": did_document(hold, &endpoint),
            "collections": collections,
            "handleIsCorrect": true,
        }),
    ))
}

pub async fn get_record(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("repo")?)?;
    let collection = collection_param(&p)?;
    let rkey = p.required("rkey")?;
    validate_record_key(rkey).map_err(|e| XrpcError::invalid(format!("rkey: {e}")))?;
    let not_found = || {
        XrpcError::new(
            XrpcErrorKind::RecordNotFound,
            format!(
                "Could not locate record: at://{}/{collection}/{rkey}",
                hold.did()
            ),
        )
    };
    let record = hold
        .get_record(collection, rkey)
        .await?
        .ok_or_else(not_found)?;
    if let Some(cid) = p.get("cid") {
        if cid != record.cid.to_string() {
            return Err(not_found());
        }
    }
    Ok(json(StatusCode::OK, &view_json(hold, collection, &record)))
}

pub async fn list_records(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("repo")?)?;
    let collection = collection_param(&p)?;
    let limit = p.limit(LIST_DEFAULT, LIST_MAX)?;
    let reverse = p.bool("reverse")?;
    let cursor = p.get("cursor").filter(|c| !c.is_empty());
    if let Some(c) = cursor {
        validate_record_key(c).map_err(|e| XrpcError::invalid(format!("cursor: {e}")))?;
    }
    let records = hold
        .list_records(collection, limit, cursor, reverse)
        .await?;
    let next = (records.len() == limit)
        .then(|| records.last().map(|r| r.rkey.clone()))
        .flatten();
    let mut body = serde_json::json!({
        "records": records.iter().map(|r| view_json(hold, collection, r)).collect::<Vec<_>>(),
    });
    if let Some(c) = next {
        body["cursor"] = c.into();
    }
    Ok(json(StatusCode::OK, &body))
}
