//! The report page: the stages' Markdown reports rendered to HTML with pulldown-cmark
//! (CommonMark plus tables), headings one level down (the page has its own title) and SVG
//! figures inlined, so that `report.html` is one self-contained file.

use std::collections::BTreeMap;

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

fn demoted(level: HeadingLevel) -> HeadingLevel {
    match level {
        HeadingLevel::H1 => HeadingLevel::H2,
        HeadingLevel::H2 => HeadingLevel::H3,
        HeadingLevel::H3 => HeadingLevel::H4,
        HeadingLevel::H4 => HeadingLevel::H5,
        HeadingLevel::H5 | HeadingLevel::H6 => HeadingLevel::H6,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown to HTML for the stages' reports. An image whose target is a key of `svgs` is
/// replaced by that SVG inside a `<figure>`; any other image becomes a visible
/// "(missing figure ...)" note, so a broken reference shows on the page.
pub fn to_html(md: &str, svgs: &BTreeMap<String, String>) -> String {
    let mut events: Vec<Event<'_>> = Vec::new();
    let mut in_image = false;
    for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Image { dest_url, .. }) => {
                in_image = true;
                let html = match svgs.get(dest_url.as_ref()) {
                    Some(svg) => format!("<figure>{svg}</figure>"),
                    None => format!("(missing figure {})", escape(&dest_url)),
                };
                events.push(Event::InlineHtml(CowStr::from(html)));
            }
            // The alt text is in the SVG's own labels.
            Event::End(TagEnd::Image) => in_image = false,
            _ if in_image => {}
            Event::Start(Tag::Heading {
                level,
                id,
                classes,
                attrs,
            }) => events.push(Event::Start(Tag::Heading {
                level: demoted(level),
                id,
                classes,
                attrs,
            })),
            Event::End(TagEnd::Heading(level)) => {
                events.push(Event::End(TagEnd::Heading(demoted(level))))
            }
            other => events.push(other),
        }
    }
    let mut html = String::with_capacity(md.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_to_html_with_inlined_figures() {
        let mut svgs = BTreeMap::new();
        svgs.insert("a.svg".to_string(), "<svg></svg>".to_string());
        let h = to_html(
            "# T <x>\n\nsome `code` and **b**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![p](a.svg)\n\n![q](gone.svg)\n",
            &svgs,
        );
        assert!(
            h.contains("<h2>T <x></h2>") || h.contains("<h2>T &lt;x&gt;</h2>"),
            "{h}"
        );
        assert!(
            h.contains("<code>code</code>") && h.contains("<strong>b</strong>"),
            "{h}"
        );
        assert!(h.contains("<th>a</th>") && h.contains("<td>1</td>"), "{h}");
        assert!(h.contains("<figure><svg></svg></figure>"), "{h}");
        assert!(
            h.contains("(missing figure gone.svg)") && !h.contains(">p<"),
            "{h}"
        );
        let q = to_html("> **Smoke run**, not results.\n\n#### deep\n", &svgs);
        assert!(
            q.contains("<blockquote>") && q.contains("<strong>Smoke run</strong>"),
            "{q}"
        );
        assert!(q.contains("<h5>deep</h5>"), "{q}");
    }
}
