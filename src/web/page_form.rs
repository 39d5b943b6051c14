//! The repository page's edit form (`multipart/form-data`), parsed with `multer` under size
//! limits. Pure (no HTTP server types), so the fuzz build (`page_form` target) compiles it
//! without the `server` feature; `web/repo_page.rs` reads requests through it.

use bytes::Bytes;
use futures_util::Stream;

/// The lexicon's limit for a repository avatar.
pub const MAX_PAGE_AVATAR_BYTES: usize = 3_000_000;
/// The lexicon's limit for a repository page's README (`registry::records` keeps the same
/// number; a unit test checks they agree).
pub const MAX_DESCRIPTION_BYTES: usize = 100_000;
/// The whole form: avatar + README + the small fields and multipart framing.
const MAX_EDIT_BYTES: u64 = (MAX_PAGE_AVATAR_BYTES + MAX_DESCRIPTION_BYTES + 64 * 1024) as u64;

/// The edit form's text fields (in order) and the avatar file (absent when none was chosen).
pub struct PageForm {
    pub fields: Vec<(String, String)>,
    pub avatar: Option<Bytes>,
}

impl PageForm {
    /// A text field's value, empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Reads the form; every refusal is a message for a 400 page.
pub async fn parse_page_form<S>(content_type: &str, body: S) -> Result<PageForm, String>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let bad = |m: &str| m.to_string();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| bad("the page form must be sent as multipart/form-data"))?;
    let constraints = multer::Constraints::new()
        .allowed_fields(vec!["csrf", "description", "avatar", "remove_avatar"])
        .size_limit(
            multer::SizeLimit::new()
                .whole_stream(MAX_EDIT_BYTES)
                .for_field("avatar", MAX_PAGE_AVATAR_BYTES as u64)
                .for_field("description", MAX_DESCRIPTION_BYTES as u64 + 4096)
                .for_field("csrf", 256)
                .for_field("remove_avatar", 16),
        );
    let mut mp = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut fields = Vec::new();
    let mut avatar = None;
    let too_big = || {
        bad("the avatar may have at most 3,000,000 bytes and the README at most 100,000; the form was refused")
    };
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(multer::Error::StreamSizeExceeded { .. })
            | Err(multer::Error::FieldSizeExceeded { .. }) => return Err(too_big()),
            Err(e) => return Err(format!("the form could not be read: {e}")),
        };
        let name = field.name().unwrap_or_default().to_string();
        let data = match field.bytes().await {
            Ok(d) => d,
            Err(multer::Error::StreamSizeExceeded { .. })
            | Err(multer::Error::FieldSizeExceeded { .. }) => return Err(too_big()),
            Err(e) => return Err(format!("the form could not be read: {e}")),
        };
        if name == "avatar" {
            if !data.is_empty() {
                avatar = Some(data);
            }
        } else {
            let text = String::from_utf8(data.to_vec())
                .map_err(|_| bad("the form's text is not UTF-8"))?;
            fields.push((name, text));
        }
    }
    Ok(PageForm { fields, avatar })
}

/// [`parse_page_form`] over bytes in memory (the fuzz target `page_form`).
pub fn parse_page_form_bytes(content_type: &str, body: &[u8]) -> Result<PageForm, String> {
    use futures_util::FutureExt;
    let chunks: Vec<std::io::Result<Bytes>> = body
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    parse_page_form(content_type, futures_util::stream::iter(chunks))
        .now_or_never()
        .unwrap_or_else(|| Err("the form did not end".into()))
}
