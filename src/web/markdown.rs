//! Repository READMEs (`io.atcr.repo.page` `description`, markdown) as safe HTML.
//!
//! The text comes from any user's PDS, so the output may only contain what markdown itself
//! produces: raw HTML in the source is shown as text, link targets are limited to http(s),
//! mailto, fragments and relative paths, and images become links (the page's CSP allows no
//! remote images, and a README should not be able to make readers' browsers fetch from
//! elsewhere).

use pulldown_cmark::{html, Alignment, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

/// READMEs longer than this are cut (the lexicon allows 100,000 characters).
pub const MAX_README_BYTES: usize = 100_000;

pub fn to_html(markdown: &str) -> String {
    let mut end = markdown.len().min(MAX_README_BYTES);
    while !markdown.is_char_boundary(end) {
        end -= 1;
    }
    let source = &markdown[..end];
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let events = Parser::new_ext(source, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            dest_url,
            title,
            id,
            ..
        }) => Event::Start(Tag::Link {
            link_type: LinkType::Inline,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        // Column alignment comes out as `style` attributes, which the page's CSP refuses.
        Event::Start(Tag::Table(columns)) => {
            Event::Start(Tag::Table(vec![Alignment::None; columns.len()]))
        }
        other => other,
    });
    let mut out = String::with_capacity(source.len() + source.len() / 4);
    html::push_html(&mut out, events);
    out
}

/// A one-paragraph plain-text summary of a README for repository cards: the text of the
/// first paragraph (headings, code blocks, HTML, images and badges skipped), whitespace
/// collapsed, cut at `max` characters with an ellipsis. Empty when there is no prose.
pub fn summary(markdown: &str, max: usize) -> String {
    let mut end = markdown.len().min(MAX_README_BYTES);
    while !markdown.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = String::new();
    let (mut in_paragraph, mut skip) = (false, 0usize);
    for event in Parser::new_ext(&markdown[..end], Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Paragraph) => in_paragraph = true,
            Event::End(TagEnd::Paragraph) => {
                in_paragraph = false;
                if !text.trim().is_empty() {
                    break;
                }
                text.clear();
            }
            // Headings, images (badges) and tables are not the description.
            Event::Start(Tag::Heading { .. } | Tag::Image { .. } | Tag::Table(_)) => skip += 1,
            Event::End(TagEnd::Heading(_) | TagEnd::Image | TagEnd::Table) => {
                skip = skip.saturating_sub(1)
            }
            Event::Text(t) | Event::Code(t) if in_paragraph && skip == 0 => text.push_str(&t),
            Event::SoftBreak | Event::HardBreak if in_paragraph && skip == 0 => text.push(' '),
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > max {
        let cut: String = text.chars().take(max).collect();
        format!("{}…", cut.trim_end())
    } else {
        text
    }
}

/// The link target if its scheme is harmless, else `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim_start().to_ascii_lowercase();
    let scheme_end = lower.find([':', '/', '?', '#']);
    let has_scheme = scheme_end.is_some_and(|i| lower.as_bytes()[i] == b':');
    let allowed = !has_scheme
        || lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:");
    if allowed {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

#[cfg(test)]
mod tests {
    use super::{summary, to_html};

    #[test]
    fn card_summary_is_the_first_paragraph_not_the_heading() {
        let md = "# App one\n\n[![build](https://ci/x.svg)](https://ci)\n\nRun it with `docker run app01`.\nIt is\n*small*.\n\nSecond paragraph.";
        assert_eq!(
            summary(md, 200),
            "Run it with docker run app01. It is small."
        );
        assert_eq!(summary("# Only a heading", 200), "");
        assert_eq!(summary("```\ncode\n```\n\nText", 200), "Text");
        assert_eq!(summary("<div>\nraw block\n</div>\n\nplain", 200), "plain");
        assert_eq!(summary("<b>bold</b> text", 200), "bold text");
        assert_eq!(summary("A long description here", 6), "A long…");
        assert_eq!(summary("", 10), "");
    }

    #[test]
    fn renders_markdown() {
        let html = to_html(
            "# Title\n\nSome *text* and `code`.\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<em>text</em>") && html.contains("<code>code</code>"));
        assert!(
            html.contains("<li>a</li>") && html.contains("<table>"),
            "{html}"
        );
        let html = to_html("```sh\ndocker pull x\n```\n");
        assert!(
            html.contains("<pre><code class=\"language-sh\">docker pull x"),
            "{html}"
        );
    }

    #[test]
    fn raw_html_is_text() {
        let html = to_html("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)> there");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn only_harmless_link_targets() {
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<b>x</b>",
            "vbscript:x",
        ] {
            let html = to_html(&format!("[x]({bad})"));
            assert!(html.contains("href=\"#\""), "{bad}: {html}");
        }
        for good in [
            "https://example.com/a?b#c",
            "http://example.com",
            "mailto:a@example.com",
            "#usage",
            "/r/alice/app",
            "docs/usage.md",
        ] {
            let html = to_html(&format!("[x]({good})"));
            assert!(!html.contains("href=\"#\""), "{good}: {html}");
        }
        // Images become plain links: no remote fetch from the reader's browser.
        let html = to_html("![logo](https://tracker.example/p.png)");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("<a href=\"https://tracker.example/p.png\">logo</a>"),
            "{html}"
        );
    }

    #[test]
    fn long_input_is_cut_on_a_char_boundary() {
        let long = "é".repeat(super::MAX_README_BYTES);
        let html = to_html(&long);
        assert!(html.len() < long.len() + 64);
    }
}
