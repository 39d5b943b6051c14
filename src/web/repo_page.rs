//! Editing a repository's page (`io.atcr.repo.page`, the record a star names) from its
//! page in the UI: the owner sets the README (markdown, at most 100,000 bytes) and the
//! avatar (PNG, JPEG or WebP, at most 3,000,000 bytes, checked by its bytes, not its
//! name). `POST /r/<owner>/<repo>` with a `multipart/form-data` body (fields `csrf`,
//! `description`, `avatar` (a file), `remove_avatar`). The record is written to the
//! owner's PDS with their sealed session: the avatar with `uploadBlob`, the record with
//! `userEdited: true` (pushes then leave it alone) as a compare-and-swap on the CID just
//! read, so a concurrent change is never overwritten; then the index is told, so the page
//! shows the change at once.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use serde_json::Value;

use super::avatars::sniff_image;
use super::{redirect, Ctx, Form, WebError, WebResult};
use crate::app::AppState;
use crate::atproto::xrpc::XrpcError;
use crate::registry::records::{
    now_datetime, page_record, page_rkey, MAX_PAGE_DESCRIPTION, PAGE_NSID,
};

pub use super::page_form::MAX_PAGE_AVATAR_BYTES;

/// The edit form: its text fields and the avatar file (absent when none was chosen).
pub struct EditForm {
    pub fields: Form,
    pub avatar: Option<Bytes>,
}

/// Reads a `multipart/form-data` edit form with the size limits of [`super::page_form`];
/// anything else (or an unknown field) is a clear 400.
pub async fn read_edit_form(req: Request<Incoming>) -> Result<EditForm, WebError> {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = crate::app::http::body_stream(req.into_body());
    let form = super::page_form::parse_page_form(&content_type, body)
        .await
        .map_err(WebError::BadRequest)?;
    Ok(EditForm {
        fields: Form::from_pairs(form.fields),
        avatar: form.avatar,
    })
}

#[cfg(test)]
#[test]
fn form_limit_matches_the_record_limit() {
    assert_eq!(
        super::page_form::MAX_DESCRIPTION_BYTES,
        MAX_PAGE_DESCRIPTION
    );
}

/// The page's new README: browsers send textarea lines with CRLF; stored with LF.
fn normalize_description(d: &str) -> String {
    d.replace("\r\n", "\n").trim_end().to_string()
}

/// `POST /r/<owner>/<repo>`: the owner edits the repository page.
pub async fn edit(
    state: &Arc<AppState>,
    ctx: &Ctx,
    who: &str,
    repo: &str,
    req: Request<Incoming>,
) -> WebResult {
    let back = format!("/r/{who}/{repo}");
    let Some(user) = ctx.user() else {
        return Ok(redirect(&format!("/login?next={back}"), &[]));
    };
    let owner = super::catalog::owner_did(state, who).await?;
    if user.did != owner {
        return Err(WebError::Forbidden(
            "Only the repository's owner can edit its page.".into(),
        ));
    }
    if state
        .index
        .repository(&owner, repo)
        .await
        .map_err(|e| WebError::Internal(format!("index: {e}")))?
        .is_none()
    {
        return Err(WebError::NotFound(format!(
            "No repository {repo} of {who}."
        )));
    }
    let form = read_edit_form(req).await?;
    ctx.check_csrf(&form.fields)?;
    let description = normalize_description(form.fields.get("description"));
    if description.len() > MAX_PAGE_DESCRIPTION {
        return Err(WebError::BadRequest(format!(
            "The README has {} bytes; a repository page holds at most {MAX_PAGE_DESCRIPTION}.",
            description.len()
        )));
    }
    let avatar = match &form.avatar {
        None => None,
        Some(bytes) => match sniff_image(bytes) {
            Some(mime @ ("image/png" | "image/jpeg" | "image/webp")) => Some((bytes.clone(), mime)),
            _ => {
                return Err(WebError::BadRequest(
                    "The avatar must be a PNG, JPEG or WebP image.".into(),
                ))
            }
        },
    };
    let remove_avatar = form.fields.has("remove_avatar");
    let xrpc = state.auth.resolver().xrpc().clone();
    let rkey = page_rkey(repo).ok_or_else(|| {
        WebError::BadRequest(format!(
            "{repo} is a nested repository name, which cannot name an io.atcr.repo.page record: it has no page."
        ))
    })?;
    let written = state
        .auth
        .sessions
        .with_agent(&owner, |s| {
            let (xrpc, rkey, description, avatar) = (
                xrpc.clone(),
                rkey.clone(),
                description.clone(),
                avatar.clone(),
            );
            async move {
                let did = s.did.clone();
                let now = now_datetime();
                let existing = xrpc.get_record(&s.pds, &did, PAGE_NSID, &rkey).await?;
                let mut rec = match &existing {
                    Some(r) if r.value.is_object() => r.value.clone(),
                    _ => page_record(repo, None, &now),
                };
                rec["$type"] = Value::String(PAGE_NSID.into());
                rec["repository"] = Value::String(repo.to_string());
                if rec.get("createdAt").and_then(Value::as_str).is_none() {
                    rec["createdAt"] = Value::String(now.clone());
                }
                let obj = rec.as_object_mut().expect("an object");
                if description.is_empty() {
                    obj.remove("description");
                } else {
                    obj.insert("description".into(), Value::String(description));
                }
                if let Some((bytes, mime)) = avatar {
                    let len = bytes.len() as u64;
                    let blob = xrpc
                        .upload_blob(&s.pds, &s.auth, mime, bytes, Some(len))
                        .await?;
                    obj.insert(
                        "avatar".into(),
                        serde_json::to_value(&blob).unwrap_or(Value::Null),
                    );
                } else if remove_avatar {
                    obj.remove("avatar");
                }
                obj.insert("userEdited".into(), Value::Bool(true));
                obj.insert("updatedAt".into(), Value::String(now));
                match existing.and_then(|r| r.cid) {
                    Some(cid) => {
                        xrpc.put_record_swap(
                            &s.pds,
                            &s.auth,
                            &did,
                            PAGE_NSID,
                            &rkey,
                            &rec,
                            &cid,
                        )
                        .await?
                    }
                    None => {
                        xrpc.create_record(
                            &s.pds,
                            &s.auth,
                            &did,
                            PAGE_NSID,
                            &rkey,
                            &rec,
                        )
                        .await?
                    }
                };
                Ok(rec)
            }
        })
        .await
        .map_err(|e| match e {
            crate::auth::sessions::SessionError::Missing(_)
            | crate::auth::sessions::SessionError::Corrupt(_) => WebError::Forbidden(
                "Your PDS session on this registry is gone; log out and log in again.".into(),
            ),
            crate::auth::sessions::SessionError::Xrpc(XrpcError::Remote { error, .. })
                if error == "InvalidSwap" =>
            {
                WebError::BadRequest(
                    "The page was changed meanwhile (another push or editor); reload it and edit again."
                        .into(),
                )
            }
            other => WebError::Upstream(format!("Your PDS did not save the page: {other}")),
        })?;
    let change = crate::index::apply::RecordChange::Upsert {
        collection: PAGE_NSID.into(),
        rkey,
        value: written,
    };
    if let Err(e) = state.index.apply_records(&owner, &[change], None).await {
        tracing::warn!(%owner, %repo, error = %e, "index: the edited page is in the PDS but not indexed yet");
    }
    tracing::info!(%owner, %repo, "repository page edited");
    Ok(redirect(&back, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_forms_are_parsed_with_limits() {
        let ct = "multipart/form-data; boundary=XyZ";
        let form = |parts: &[(&str, &[u8])]| {
            let mut b = Vec::new();
            for (name, v) in parts {
                b.extend(
                    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
                );
                if *name == "avatar" {
                    b.extend(b"; filename=\"a.png\"\r\nContent-Type: image/png");
                }
                b.extend(b"\r\n\r\n");
                b.extend(*v);
                b.extend(b"\r\n");
            }
            b.extend(b"--XyZ--\r\n");
            b
        };
        let f = super::super::page_form::parse_page_form_bytes(
            ct,
            &form(&[
                ("csrf", b"t"),
                ("description", b"# hi"),
                ("avatar", b"\x89PNG"),
            ]),
        )
        .unwrap();
        assert_eq!(f.field("csrf"), "t");
        assert_eq!(f.field("description"), "# hi");
        assert_eq!(f.avatar.as_deref(), Some(&b"\x89PNG"[..]));
        // An empty file input is no avatar.
        let f = super::super::page_form::parse_page_form_bytes(
            ct,
            &form(&[("csrf", b"t"), ("avatar", b"")]),
        )
        .unwrap();
        assert!(f.avatar.is_none());
        // Too big, unknown fields, not multipart: 400.
        let big = vec![b'x'; MAX_PAGE_AVATAR_BYTES + 1];
        let e = super::super::page_form::parse_page_form_bytes(ct, &form(&[("avatar", &big)]))
            .err()
            .unwrap();
        assert!(e.contains("3,000,000"));
        assert!(
            super::super::page_form::parse_page_form_bytes(ct, &form(&[("other", b"x")])).is_err()
        );
        assert!(super::super::page_form::parse_page_form_bytes(
            "application/x-www-form-urlencoded",
            b"a=b"
        )
        .is_err());
        assert!(super::super::page_form::parse_page_form_bytes(ct, b"--XyZ\r\ngarbage").is_err());
    }

    #[test]
    fn descriptions_are_normalized() {
        assert_eq!(
            normalize_description("# Hi\r\n\r\ntext\r\n\r\n"),
            "# Hi\n\ntext"
        );
        assert_eq!(normalize_description("  "), "");
    }
}
