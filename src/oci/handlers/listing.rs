use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::HandlerResult;
use crate::app::http::{full, hv, json, query, query_get};
use crate::app::AppState;
use crate::oci::error::{ErrorCode, OciError};
use crate::oci::types::manifest::{Descriptor, OCI_INDEX};
use crate::oci::types::{Digest, Name};

/// Upper bound on one page, so `n=1000000000` cannot make us build a huge response.
const MAX_PAGE: usize = 10_000;

fn page_params(q: &[(String, String)]) -> Result<(Option<usize>, Option<String>), OciError> {
    let n = match query_get(q, "n") {
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| {
                    OciError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                        .with_status(StatusCode::BAD_REQUEST)
                })?
                .min(MAX_PAGE),
        ),
        None => None,
    };
    Ok((n, query_get(q, "last").map(str::to_string)))
}

fn next_link(path: &str, n: Option<usize>, last: Option<&String>) -> Option<String> {
    let last = last?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    q.append_pair("last", last);
    Some(format!("<{path}?{}>; rel=\"next\"", q.finish()))
}

/// `GET /v2/<name>/tags/list?n=&last=`.
pub async fn tags_list(state: &AppState, req: Request<Incoming>, name: Name) -> HandlerResult {
    let (n, last) = page_params(&query(req.uri()))?;
    let (tags, more) = state.registry.tags(&name, n, last).await?;
    #[derive(Serialize)]
    struct Tags<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let mut resp = json(
        StatusCode::OK,
        &Tags {
            name: name.as_str(),
            tags: &tags,
        },
    );
    if more {
        if let Some(link) = next_link(&format!("/v2/{name}/tags/list"), n, tags.last()) {
            resp.headers_mut().insert(LINK, hv(&link));
        }
    }
    Ok(resp)
}

/// `GET /v2/_catalog?n=&last=`.
pub async fn catalog(
    state: &AppState,
    req: Request<Incoming>,
) -> http::Response<crate::app::http::Body> {
    let run = async {
        if req.method() != http::Method::GET {
            return Err(OciError::new(ErrorCode::Unsupported, "only GET is allowed"));
        }
        let (n, last) = page_params(&query(req.uri()))?;
        let (repos, more) = state.registry.catalog(n, last).await?;
        let mut resp = json(
            StatusCode::OK,
            &serde_json::json!({ "repositories": repos }),
        );
        if more {
            if let Some(link) = next_link("/v2/_catalog", n, repos.last()) {
                resp.headers_mut().insert(LINK, hv(&link));
            }
        }
        Ok(resp)
    };
    run.await
        .unwrap_or_else(|e: OciError| crate::app::http::oci_error(&e))
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: an image index of the manifests whose
/// `subject` is the digest (empty, not 404, when there are none).
pub async fn referrers(
    state: &AppState,
    req: Request<Incoming>,
    name: Name,
    digest: Digest,
) -> HandlerResult {
    let q = query(req.uri());
    let filter = query_get(&q, "artifactType");
    let manifests = state.registry.referrers(&name, &digest, filter).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: &'a [Descriptor],
    }
    let body = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: &manifests,
    })
    .map_err(|e| OciError::new(ErrorCode::Unsupported, e.to_string()))?;
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, OCI_INDEX)
        .header(CONTENT_LENGTH, body.len());
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp.body(full(body)).expect("valid"))
}
