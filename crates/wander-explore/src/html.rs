//! The report page: a minimal Markdown to HTML conversion for the stages' reports
//! (headings, tables, quotes, paragraphs, inline code and bold, SVG figures inlined), so that
//! `report.html` is one self-contained file.

use std::collections::BTreeMap;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn inline(s: &str) -> String {
    // `code` and **bold**, after escaping.
    let mut out = String::new();
    let e = esc(s);
    let mut code = false;
    for (i, part) in e.split('`').enumerate() {
        if i > 0 {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        }
        let mut bold = false;
        for (j, p) in part.split("**").enumerate() {
            if j > 0 {
                out.push_str(if bold { "</b>" } else { "<b>" });
                bold = !bold;
            }
            out.push_str(p);
        }
    }
    out
}

/// A minimal Markdown to HTML conversion for the stages' reports: headings, tables,
/// paragraphs, inline code, and images of SVG files (inlined from `svgs`).
pub fn to_html(md: &str, svgs: &BTreeMap<String, String>) -> String {
    let mut html = String::new();
    let mut table: Vec<&str> = Vec::new();
    let flush = |table: &mut Vec<&str>, html: &mut String| {
        if table.is_empty() {
            return;
        }
        html.push_str("<table>\n");
        for (i, row) in table.iter().enumerate() {
            if i == 1 && row.contains("---") {
                continue;
            }
            let tag = if i == 0 { "th" } else { "td" };
            let cells: Vec<String> = row
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| format!("<{tag}>{}</{tag}>", inline(c.trim())))
                .collect();
            html.push_str(&format!("<tr>{}</tr>\n", cells.join("")));
        }
        html.push_str("</table>\n");
        table.clear();
    };
    for line in md.lines() {
        if line.trim_start().starts_with('|') {
            table.push(line);
            continue;
        }
        flush(&mut table, &mut html);
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(h) = t.strip_prefix("### ") {
            html.push_str(&format!("<h4>{}</h4>\n", inline(h)));
        } else if let Some(h) = t.strip_prefix("## ") {
            html.push_str(&format!("<h3>{}</h3>\n", inline(h)));
        } else if let Some(h) = t.strip_prefix("# ") {
            html.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if t.starts_with("![") {
            let file = t.rsplit('(').next().unwrap_or("").trim_end_matches(')');
            match svgs.get(file) {
                Some(svg) => html.push_str(&format!("<figure>{svg}</figure>\n")),
                None => html.push_str(&format!("<p>(missing figure {})</p>\n", esc(file))),
            }
        } else if let Some(q) = t.strip_prefix("> ") {
            html.push_str(&format!(
                "<blockquote style=\"border-left:4px solid #c60;padding:0 1em\"><p>{}</p></blockquote>\n",
                inline(q)
            ));
        } else {
            html.push_str(&format!("<p>{}</p>\n", inline(t)));
        }
    }
    flush(&mut table, &mut html);
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_subset_to_html() {
        let mut svgs = BTreeMap::new();
        svgs.insert("a.svg".to_string(), "<svg></svg>".to_string());
        let h = to_html(
            "# T <x>\n\nsome `code` and **b**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![p](a.svg)\n",
            &svgs,
        );
        assert!(h.contains("<h2>T &lt;x&gt;</h2>"));
        assert!(h.contains("<code>code</code>") && h.contains("<b>b</b>"));
        assert!(h.contains("<tr><th>a</th><th>b</th></tr>") && h.contains("<td>1</td>"));
        assert!(h.contains("<figure><svg></svg></figure>"));
        let q = to_html("> **Smoke run**, not results.\n", &svgs);
        assert!(
            q.contains("<blockquote") && q.contains("<b>Smoke run</b>"),
            "{q}"
        );
    }
}
