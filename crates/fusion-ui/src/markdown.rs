//! Model text to safe HTML: markdown through pulldown-cmark, then every tag and attribute
//! through ammonia's allow-list.
//!
//! Model text is hostile input (a prompt injection can make a model write anything), so
//! two independent steps stand between it and the page. Raw HTML in the markdown is not
//! passed through at all: it is turned into text and shown escaped, which is also what a
//! person debugging an agent wants to see. Then ammonia keeps only harmless tags and
//! attributes, drops every URL scheme but the plain ones (`javascript:` and `data:` go),
//! drops relative links (model text has no business pointing into this app's own pages,
//! such as a delete form), and marks every link `rel="noopener noreferrer"`. The page's
//! Content-Security-Policy is the third line: no inline script could run anyway.

use std::sync::LazyLock;

use ammonia::UrlRelative;
use pulldown_cmark::{Event, Options, Parser};

/// The sanitizer, built once: its allow-lists are sets it would otherwise rebuild per call.
static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .link_rel(Some("noopener noreferrer"))
        .url_relative(UrlRelative::Deny);
    builder
});

/// `text` as markdown rendered to HTML that is safe to put in a page as it is.
pub(crate) fn to_safe_html(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(text, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut html = String::with_capacity(text.len() + text.len() / 4);
    pulldown_cmark::html::push_html(&mut html, events);
    SANITIZER.clean(&html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_links_are_marked() {
        let html =
            to_safe_html("**bold** and [docs](https://example.com/a)\n\n| a |\n|---|\n| 1 |");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(
            html.contains(r#"<a href="https://example.com/a" rel="noopener noreferrer">docs</a>"#),
            "{html}"
        );
        assert!(html.contains("<table>"), "{html}");
    }

    #[test]
    fn nothing_active_survives() {
        let hostile = "<script>alert(1)</script>\n\n\
            <img src=x onerror=alert(2)> inline <b onclick=alert(3)>b</b>\n\n\
            [click](javascript:alert(4)) [rel](/sessions/x/delete) \
            ![img](data:text/html;base64,PHNjcmlwdD4=)\n\n\
            <a href=\"javascript:alert(5)\">a</a> <iframe src=https://e.com></iframe>";
        let html = to_safe_html(hostile);
        // Escaped text may say anything; what matters is what is inside real tags.
        let tags: Vec<String> = html
            .split('<')
            .skip(1)
            .map(|rest| rest.split('>').next().unwrap_or("").to_ascii_lowercase())
            .collect();
        for tag in &tags {
            let name = tag.split_whitespace().next().unwrap_or("");
            assert!(
                ["p", "/p", "a", "/a", "img"].contains(&name),
                "tag <{tag}> survived in {html}"
            );
            for active in [" on", "javascript:", "data:", "href=\"/", "src=\"x"] {
                assert!(!tag.contains(active), "{active} survived in <{tag}>");
            }
        }
        // The raw HTML is still visible to the reader, as text.
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }
}
