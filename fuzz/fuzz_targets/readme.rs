//! README markdown from any user's PDS (`io.atcr.repo.page` description) rendered into the
//! repository page: whatever the input, the HTML may only contain the elements markdown
//! produces, and no link with a scripting scheme.
#![no_main]

use libfuzzer_sys::fuzz_target;

const ALLOWED: &[&str] = &[
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "del", "code", "pre", "a", "ul",
    "ol", "li", "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "input",
    "sup", "div",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let html = atcr::web::markdown::to_html(text);
    // Text and attribute values escape '<' and '>', so every '<' opens a tag that runs to the
    // next '>'. Body text keeps its quotes, so attributes are only looked for inside tags.
    for rest in html.split('<').skip(1) {
        let tag = rest.split('>').next().unwrap_or_default();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(ALLOWED.contains(&name.as_str()), "tag {name:?} in {html}");
        let lower = tag.to_ascii_lowercase();
        for scheme in ["javascript:", "data:", "vbscript:"] {
            assert!(!lower.contains(&format!("href=\"{scheme}")), "{scheme} link in {html}");
        }
    }
});
