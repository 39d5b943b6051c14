//! `com.atproto.sync.*` reads: getRepo and getRecord (CARs), getLatestCommit, listRepos,
//! getRepoStatus, listBlobs (getBlob, gated by crew rules, is in `io_atcr_hold.rs`).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{car_response, check_repo, Params, XrpcError, XrpcResult};
use crate::app::http::{json, stream_body};
use crate::atproto::repo::syntax::{validate_nsid, validate_record_key};
use crate::pds::HoldPds;

/// The whole repo as a CAR, streamed (chunked transfer, no Content-Length). `since` is
/// accepted and ignored: the full repo is always sent (valid, just not the smallest).
pub async fn get_repo(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("did")?)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/vnd.ipld.car")
        .body(stream_body(hold.export_car_stream()))
        .expect("static headers are valid"))
}

pub async fn get_record(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("did")?)?;
    let collection = p.required("collection")?;
    validate_nsid(collection).map_err(|e| XrpcError::invalid(format!("collection: {e}")))?;
    let rkey = p.required("rkey")?;
    validate_record_key(rkey).map_err(|e| XrpcError::invalid(format!("rkey: {e}")))?;
    // Like the reference PDS, a missing record is answered with its proof of absence: the
    // signed commit and the MST nodes on the path where the key would be.
    Ok(car_response(hold.record_proof_car(collection, rkey).await?))
}

pub async fn get_latest_commit(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("did")?)?;
    let (cid, rev) = hold.latest_commit();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"cid": cid.to_string(), "rev": rev}),
    ))
}

/// One repo: the hold's. A cursor (any value) means the list is exhausted.
pub async fn list_repos(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    p.limit(500, 1000)?;
    let repos = if p.get("cursor").is_some_and(|c| !c.is_empty()) {
        Vec::new()
    } else {
        let (cid, rev) = hold.latest_commit();
        vec![serde_json::json!({
            "did": hold.did(),
            "head": cid.to_string(),
            "rev": rev,
            "active": true,
        })]
    };
    Ok(json(StatusCode::OK, &serde_json::json!({"repos": repos})))
}

pub async fn get_repo_status(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("did")?)?;
    let (_, rev) = hold.latest_commit();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"did": hold.did(), "active": true, "rev": rev}),
    ))
}

/// `com.atproto.sync.listBlobs?did=&since=&limit=&cursor=`: the CIDs of blobs the hold's
/// records reference (records written after rev `since`), in CID order. Like the reference
/// PDS, a page that is not empty carries its last CID as the cursor.
pub async fn list_blobs(hold: &HoldPds, req: Request<Incoming>) -> XrpcResult {
    let p = Params::of(&req);
    check_repo(hold, p.required("did")?)?;
    let limit = p.limit(500, 1000)?;
    let since = match p.get("since").filter(|s| !s.is_empty()) {
        Some(s) => {
            crate::atproto::repo::syntax::validate_tid(s)
                .map_err(|e| XrpcError::invalid(format!("since: {e}")))?;
            Some(s.to_string())
        }
        None => None,
    };
    let cursor = p
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric()) {
                Ok(c.to_string())
            } else {
                Err(XrpcError::invalid("cursor: not a CID"))
            }
        })
        .transpose()?;
    let cids = hold.list_blobs(since, cursor, limit).await?;
    let mut out = serde_json::json!({ "cids": cids });
    if let Some(last) = cids.last() {
        out["cursor"] = last.clone().into();
    }
    Ok(json(StatusCode::OK, &out))
}
