//! The path grammar below `/v2/`. Repository names contain slashes, so a path is read from
//! its end: the last segments say which endpoint it is, everything before is the name.
//!
//! ```text
//! <name>/manifests/<reference>     manifest GET HEAD PUT DELETE
//! <name>/blobs/<digest>            blob GET HEAD DELETE
//! <name>/blobs/uploads/            upload POST (also without the trailing slash)
//! <name>/blobs/uploads/<id>        upload PATCH PUT GET DELETE
//! <name>/tags/list                 tags GET
//! <name>/referrers/<digest>        referrers GET
//! ```

use percent_encoding::percent_decode_str;

use super::error::{ErrorCode, OciError};
use super::types::{Digest, Name, Reference};

#[derive(Debug, Clone, PartialEq)]
pub enum OciRoute {
    Manifest {
        name: Name,
        reference: Reference,
    },
    /// A manifest path whose reference is not a valid tag: unknown to GET, invalid to PUT.
    ManifestBadTag {
        name: Name,
        tag: String,
    },
    Blob {
        name: Name,
        digest: Digest,
    },
    UploadStart {
        name: Name,
    },
    Upload {
        name: Name,
        id: String,
    },
    Tags {
        name: Name,
    },
    Referrers {
        name: Name,
        digest: Digest,
    },
}

/// Parse the part of the path after `/v2/`.
pub fn parse(path: &str) -> Result<OciRoute, OciError> {
    if path.len() > 1024 {
        return Err(OciError::new(ErrorCode::NameInvalid, "path too long"));
    }
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| OciError::new(ErrorCode::NameInvalid, "path is not UTF-8"))?;
    let segs: Vec<&str> = decoded.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize| -> Result<Name, OciError> {
        if k == 0 {
            return Err(OciError::new(
                ErrorCode::NameInvalid,
                "repository name is missing",
            ));
        }
        Ok(segs[..k].join("/").parse::<Name>()?)
    };
    let not_found = || {
        OciError::new(ErrorCode::Unsupported, "no such endpoint")
            .with_status(http::StatusCode::NOT_FOUND)
    };
    if n >= 2 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(OciRoute::Tags {
            name: name_of(n - 2)?,
        });
    }
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = name_of(n - 3)?;
        return Ok(if segs[n - 1].is_empty() {
            OciRoute::UploadStart { name }
        } else {
            OciRoute::Upload {
                name,
                id: segs[n - 1].to_string(),
            }
        });
    }
    if n >= 2 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(OciRoute::UploadStart {
            name: name_of(n - 2)?,
        });
    }
    if n >= 2 && segs[n - 2] == "blobs" {
        return Ok(OciRoute::Blob {
            name: name_of(n - 2)?,
            digest: segs[n - 1].parse()?,
        });
    }
    if n >= 2 && segs[n - 2] == "manifests" {
        let name = name_of(n - 2)?;
        return Ok(match segs[n - 1].parse::<Reference>() {
            Ok(reference) => OciRoute::Manifest { name, reference },
            Err(crate::oci::types::NameError::BadTag(tag)) => {
                OciRoute::ManifestBadTag { name, tag }
            }
            Err(e) => return Err(e.into()),
        });
    }
    if n >= 2 && segs[n - 2] == "referrers" {
        return Ok(OciRoute::Referrers {
            name: name_of(n - 2)?,
            digest: segs[n - 1].parse()?,
        });
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes() {
        assert!(
            matches!(parse("a/b/tags/list"), Ok(OciRoute::Tags { name }) if name.as_str() == "a/b")
        );
        assert!(matches!(
            parse("a/blobs/uploads/"),
            Ok(OciRoute::UploadStart { .. })
        ));
        assert!(matches!(
            parse("a/blobs/uploads"),
            Ok(OciRoute::UploadStart { .. })
        ));
        assert!(
            matches!(parse("a/b/blobs/uploads/abc-1"), Ok(OciRoute::Upload { id, .. }) if id == "abc-1")
        );
        assert!(matches!(
            parse(&format!("a/blobs/{D}")),
            Ok(OciRoute::Blob { .. })
        ));
        assert!(matches!(
            parse(&format!("x/y/z/manifests/{D}")),
            Ok(OciRoute::Manifest {
                reference: Reference::Digest(_),
                ..
            })
        ));
        assert!(matches!(
            parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz/app/manifests/latest"),
            Ok(OciRoute::Manifest { .. })
        ));
        assert!(matches!(
            parse("did%3Aplc%3Aewvi7nxzyoun6zhxrhs64oiz/app/manifests/v1"),
            Ok(OciRoute::Manifest { .. })
        ));
        assert!(matches!(
            parse(&format!("a/referrers/{D}")),
            Ok(OciRoute::Referrers { .. })
        ));
        assert_eq!(
            parse("manifests/latest").unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("A/manifests/latest").unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("a/blobs/sha256:zz").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert!(matches!(
            parse("a/manifests/.bad"),
            Ok(OciRoute::ManifestBadTag { .. })
        ));
        assert_eq!(
            parse("a/b/c").unwrap_err().status(),
            http::StatusCode::NOT_FOUND
        );
    }
}
