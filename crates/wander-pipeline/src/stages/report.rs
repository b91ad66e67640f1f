//! `wander report`: one Markdown file and one self-contained HTML page (inline SVG plots)
//! from the reports the stages wrote; every figure in it comes from the run directory.

use std::collections::BTreeMap;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;

use crate::artifacts::open;
use crate::artifacts::report_md;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

const SECTIONS: [(StageId, &str); 8] = [
    (StageId::Taxonomy, "Interest taxonomy"),
    (StageId::EvalNovelty, "Novelty model"),
    (StageId::EvalAlignment, "Alignment model"),
    (StageId::EvalScaling, "Best-of-n scaling"),
    (StageId::Eval, "All exploration strategies"),
    (StageId::EvalItems, "Item policy"),
    (StageId::Simulate, "Closed-loop A/B simulation"),
    (StageId::SimulateAa, "A/A simulation"),
];

use wander_explore::html::to_html;

/// The evaluation stages that have run, with their section titles.
fn present_sections(run: &RunDir) -> Vec<(StageId, &'static str)> {
    SECTIONS
        .iter()
        .copied()
        .filter(|(s, _)| run.read_manifest(s.folder()).is_ok())
        .collect()
}

/// What `wander report` depends on besides the sections' manifests: which sections exist
/// and whether the run is a smoke run.
pub(crate) fn report_slice(ctx: &StageContext) -> crate::Result<Value> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let present = present_sections(&run);
    let mut slice = json!({"sections": present.iter().map(|p| p.0.folder()).collect::<Vec<_>>()});
    if ctx.config.run.smoke {
        slice["smoke"] = json!(true);
    }
    Ok(slice)
}

/// `wander report`.
pub fn report_stage(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let present = present_sections(&run);
    if present.is_empty() {
        crate::bail!(
            "{}: no stage reports yet; run the pipeline first (`wander run`)",
            run.root().display()
        );
    }
    let mut inputs = BTreeMap::new();
    for (s, _) in &present {
        inputs.insert(
            format!("{}/manifest.json", s.folder()),
            run.manifest_checksum(s.folder())?,
        );
    }
    let stage_dir = run.stage_dir(StageId::Report.folder());
    let smoke = ctx.config.run.smoke;
    let slice = report_slice(ctx)?;
    let outcome = run.run_stage(StageId::Report.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let mut md = format!("# wander report\n\nRun directory `{}`. Each section is the report of one stage, verified against its manifest; the commands that made them are `wander <stage>` with the configuration recorded in each manifest.\n\n", run.root().display());
        if smoke {
            md.push_str("> **Smoke run (quick profile), not results.** Every stage ran with small settings (configs/quick.toml: a 16-cluster taxonomy, a few LoRA steps, a few SASRec epochs, a small simulation) to show that the pipeline works end to end. For figures, run the default profile (`wander run`).\n\n");
        }
        let mut body = String::new();
        let mut svgs: BTreeMap<String, String> = BTreeMap::new();
        // The novelty-relevance frontier of every strategy of `wander eval`.
        if let Ok(ev) = open(&run, StageId::Eval) {
            let eval: crate::summaries::EvalSummary = crate::summaries::read(StageId::Eval, &ev.manifest().summary)?;
            {
                let series = eval.strategies.iter().filter(|(n, _)| n.as_str() != "oracle").map(|(n, v)| {
                    (n.clone(), vec![(v.novelty_bits.mean, v.hit_at_k.mean, v.hit_at_k.lo, v.hit_at_k.hi)])
                }).collect();
                let svg = wander_explore::plot::panels(&[wander_explore::plot::Panel { title: "novelty (x, bits) vs relevance (y, hit@k)".into(), x_label: "novelty (bits)".into(), log2_x: false, series, reference: None }]);
                w.write_bytes("frontier.svg", svg.as_bytes())?;
                svgs.insert("frontier.svg".into(), svg);
                md.push_str("## Novelty-relevance frontier\n\n![frontier](frontier.svg)\n\n");
            }
        }
        for &(id, title) in &present {
            let stage = id.folder();
            let r = open(&run, id)?;
            let Ok(text) = std::fs::read_to_string(r.path(report_md(id))?) else { continue };
            let mut text = text;
            for name in r.manifest().outputs.keys() {
                if name.ends_with(".svg") {
                    // Stages may use the same figure names: prefix them with the stage.
                    let svg = std::fs::read_to_string(r.reader().path(name)?).with_context(|| format!("{stage}/{name}"))?;
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
        let html = format!("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>wander report</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:1em 0;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}th{{background:#f4f4f4}}code{{background:#f4f4f4;padding:0 3px}}figure{{margin:1em 0;overflow-x:auto}}blockquote{{border-left:4px solid #c60;margin:1em 0;padding:0 1em}}</style></head><body>\n{body}</body></html>\n");
        report_md(StageId::Report).write(w, md.as_bytes())?;
        w.write_bytes("report.html", html.as_bytes())?;
        crate::summaries::record(&crate::summaries::ReportSummary {
            smoke,
            sections: present.iter().map(|p| p.0.folder().to_string()).collect(),
            html: stage_dir.join("report.html"),
            report: stage_dir.join("report.md"),
            figures: svgs.len(),
        })
    })
    .context("report failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Report, &outcome))
}
