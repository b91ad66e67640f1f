//! `wander report`: one Markdown file and one self-contained HTML page (inline SVG plots)
//! from the reports the stages wrote; every figure in it comes from the run directory.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{json, Value};
use wander_core::artifact::RunDir;

use crate::stages::report;
use crate::Ctx;

const SECTIONS: [(&str, &str); 8] = [
    ("taxonomy", "Interest taxonomy"),
    ("eval_novelty", "Novelty model"),
    ("eval_alignment", "Alignment model"),
    ("eval_scaling", "Best-of-n scaling"),
    ("eval", "All exploration strategies"),
    ("eval_items", "Item policy"),
    ("simulate", "Closed-loop A/B simulation"),
    ("simulate_aa", "A/A simulation"),
];

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
fn to_html(md: &str, svgs: &BTreeMap<String, String>) -> String {
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
        } else {
            html.push_str(&format!("<p>{}</p>\n", inline(t)));
        }
    }
    flush(&mut table, &mut html);
    html
}

/// `wander report`.
pub fn report_stage(ctx: &Ctx, force: bool) -> anyhow::Result<Value> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let present: Vec<(&str, &str)> = SECTIONS
        .iter()
        .copied()
        .filter(|(s, _)| run.read_manifest(s).is_ok())
        .collect();
    if present.is_empty() {
        anyhow::bail!(
            "{}: no stage reports yet; run the pipeline first (`wander run`)",
            run.root().display()
        );
    }
    let mut inputs = BTreeMap::new();
    for (s, _) in &present {
        inputs.insert(format!("{s}/manifest.json"), run.manifest_checksum(s)?);
    }
    let stage_dir = run.stage_dir("report");
    let outcome = run.run_stage("report", json!({"sections": present.iter().map(|p| p.0).collect::<Vec<_>>()}), inputs, force, |w| -> anyhow::Result<Value> {
        let mut md = format!("# wander report\n\nRun directory `{}`. Each section is the report of one stage, verified against its manifest; the commands that made them are `wander <stage>` with the configuration recorded in each manifest.\n\n", run.root().display());
        let mut body = String::new();
        let mut svgs: BTreeMap<String, String> = BTreeMap::new();
        // The novelty-relevance frontier of every strategy of `wander eval`.
        if let Ok(ev) = run.read("eval") {
            let s = &ev.manifest().summary["strategies"];
            if let Some(obj) = s.as_object() {
                let series = obj.iter().filter(|(n, _)| n.as_str() != "oracle").map(|(n, v)| {
                    let x = v["novelty_bits"]["mean"].as_f64().unwrap_or(f64::NAN);
                    let y = v["hit_at_k"]["mean"].as_f64().unwrap_or(f64::NAN);
                    (n.clone(), vec![(x, y, v["hit_at_k"]["lo"].as_f64().unwrap_or(f64::NAN), v["hit_at_k"]["hi"].as_f64().unwrap_or(f64::NAN))])
                }).collect();
                let svg = wander_explore::plot::panels(&[wander_explore::plot::Panel { title: "novelty (x, bits) vs relevance (y, hit@k)".into(), x_label: "novelty (bits)".into(), log2_x: false, series, reference: None }]);
                w.write_bytes("frontier.svg", svg.as_bytes())?;
                svgs.insert("frontier.svg".into(), svg);
                md.push_str("## Novelty-relevance frontier\n\n![frontier](frontier.svg)\n\n");
            }
        }
        for (stage, title) in &present {
            let r = run.read(stage)?;
            let Ok(text) = std::fs::read_to_string(r.path("report.md")?) else { continue };
            let mut text = text;
            for (name, _) in &r.manifest().outputs {
                if name.ends_with(".svg") {
                    // Stages may use the same figure names: prefix them with the stage.
                    let svg = std::fs::read_to_string(r.path(name)?).with_context(|| format!("{stage}/{name}"))?;
                    let unique = format!("{stage}-{name}");
                    text = text.replace(&format!("({name})"), &format!("({unique})"));
                    w.write_bytes(&unique, svg.as_bytes())?;
                    svgs.insert(unique, svg);
                }
            }
            // Demote the stage's headings below its section heading.
            let demoted: String = text.lines().map(|l| if l.starts_with('#') { format!("##{l}\n") } else { format!("{l}\n") }).collect();
            md.push_str(&format!("## {title} (`{stage}`)\n\n{demoted}\n"));
        }
        body.push_str(&to_html(&md, &svgs));
        let html = format!("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>wander report</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:1em 0;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}th{{background:#f4f4f4}}code{{background:#f4f4f4;padding:0 3px}}figure{{margin:1em 0;overflow-x:auto}}</style></head><body>\n{body}</body></html>\n");
        w.write_bytes("report.md", md.as_bytes())?;
        w.write_bytes("report.html", html.as_bytes())?;
        Ok(json!({"sections": present.iter().map(|p| p.0).collect::<Vec<_>>(), "html": stage_dir.join("report.html"), "report": stage_dir.join("report.md"), "figures": svgs.len()}))
    })
    .context("report failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report("report", &outcome))
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
    }
}
