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

const SECTIONS: [(StageId, &str); 9] = [
    (StageId::Taxonomy, "Interest taxonomy"),
    (StageId::EvalDrift, "Drift of transitions over time"),
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

/// The `wander eval` strategy that a simulation arm plays (`None`: no counterpart).
fn eval_counterpart(arm: &str, eval: &crate::summaries::EvalSummary) -> Option<String> {
    let name = match arm {
        "random" => "random_novel".to_string(),
        "popular" => "popular_novel".to_string(),
        "cooccurrence" => "cooccurrence".to_string(),
        "novelty_only" => "novelty_only_n1".to_string(),
        "best_of_n" => eval
            .strategies
            .keys()
            .find(|k| k.starts_with("best_of_"))?
            .clone(),
        _ => return None,
    };
    eval.strategies.contains_key(&name).then_some(name)
}

/// The simulator's calibration against the logs: does it order the exploration strategies
/// as their held-out collective feedback does? Section text and figures.
fn calibration(run: &RunDir) -> crate::Result<Option<(String, crate::summaries::Calibration)>> {
    let (Ok(ev), Ok(sim)) = (open(run, StageId::Eval), open(run, StageId::Simulate)) else {
        return Ok(None);
    };
    let eval: crate::summaries::EvalSummary =
        crate::summaries::read(StageId::Eval, &ev.manifest().summary)?;
    let daily = sim.json(crate::artifacts::SIM_DAILY)?;
    let mean = |v: &[Option<f64>]| {
        let xs: Vec<f64> = v
            .iter()
            .flatten()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let mut rows = Vec::new();
    for arm in &daily.arms {
        let (Some(name), Some(series)) = (eval_counterpart(arm, &eval), daily.series.get(arm))
        else {
            continue;
        };
        let Some(rate) = series.get("exploration_positive_rate") else {
            continue;
        };
        rows.push((
            arm.clone(),
            name.clone(),
            eval.strategies[&name].heldout_feedback,
            mean(rate),
            series
                .get("exploration_click_positive_rate")
                .map(|r| mean(r)),
        ));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let feedback: Vec<f64> = rows.iter().map(|r| r.2.mean).collect();
    let simulated: Vec<f64> = rows.iter().map(|r| r.3).collect();
    let tau = wander_explore::metrics::kendall_tau_b(&feedback, &simulated);
    // Held-out feedback is a rate over the users who made a transition; the rate over the
    // simulated users who clicked is its counterpart (the rate over impressions also counts
    // who clicks at all, which is interest, not satisfaction). Simulations from before it
    // existed have no such series.
    let clicks: Option<Vec<f64>> = rows.iter().map(|r| r.4).collect();
    let tau_clicks = clicks
        .as_ref()
        .map(|c| wander_explore::metrics::kendall_tau_b(&feedback, c));
    // The simulator's world is the training period: how it orders the strategies there, and
    // how far that ordering itself moves by the held-out period. Evaluations from before the
    // training-label figure existed have none.
    // A strategy with no labelled choice in a period has no finite figure there; the
    // comparison with that period is then left out rather than computed over NaN.
    let by_period = |figure: fn(
        &crate::summaries::StrategyFigures,
    ) -> &Option<wander_explore::metrics::Estimate>| {
        rows.iter()
            .map(|r| {
                figure(&eval.strategies[&r.1])
                    .as_ref()
                    .map(|e| e.mean)
                    .filter(|m| m.is_finite())
            })
            .collect::<Option<Vec<f64>>>()
    };
    let train_labels = by_period(|s| &s.train_label_feedback);
    let tau_clicks_train = match (&train_labels, &clicks) {
        (Some(t), Some(c)) => Some(wander_explore::metrics::kendall_tau_b(t, c)),
        _ => None,
    };
    let tau_train_heldout = train_labels
        .as_ref()
        .map(|t| wander_explore::metrics::kendall_tau_b(t, &feedback));
    let valid_labels = by_period(|s| &s.valid_label_feedback);
    let tau_clicks_valid = match (&valid_labels, &clicks) {
        (Some(v), Some(c)) => Some(wander_explore::metrics::kendall_tau_b(v, c)),
        _ => None,
    };
    let tau_valid_heldout = valid_labels
        .as_ref()
        .map(|v| wander_explore::metrics::kendall_tau_b(v, &feedback));
    // The same comparison on the yardstick that does not move with the label settings.
    let raw_heldout = by_period(|s| &s.heldout_feedback_raw);
    let tau_clicks_raw = match (&raw_heldout, &clicks) {
        (Some(r), Some(c)) => Some(wander_explore::metrics::kendall_tau_b(r, c)),
        _ => None,
    };
    let rank = |v: &[f64], i: usize| 1 + v.iter().filter(|&&x| x > v[i]).count();
    let mut md = String::from("## Simulator calibration

The simulator is only evidence if it agrees with the logs: it should order the exploration strategies as their held-out collective feedback does (`wander eval`: the test-period label of the served cluster, a positive rate over the users who engaged with it; the simulator: the positive rate of the exploration slot over the users who clicked it, and over every impression, mean over days and seeds, every arm refreshed alike).

| strategy (simulate / eval) | held-out feedback | rank | simulated positive rate of exploration clicks | rank | simulated exploration positive rate (over impressions) | rank | feedback by training-period labels | rank |
|---|---|---|---|---|---|---|---|---|
");
    for (i, (arm, name, fb, sim, click)) in rows.iter().enumerate() {
        let (click_rate, click_rank) = match (click, &clicks) {
            (Some(c), Some(all)) => (format!("{c:.4}"), rank(all, i).to_string()),
            _ => ("-".to_string(), "-".to_string()),
        };
        let (train_rate, train_rank) = match &train_labels {
            Some(t) => (format!("{:.3}", t[i]), rank(t, i).to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        md.push_str(&format!(
            "| {arm} / {name} | {:.3} [{:.3}, {:.3}] | {} | {click_rate} | {click_rank} | {sim:.4} | {} | {train_rate} | {train_rank} |
",
            fb.mean,
            fb.lo,
            fb.hi,
            rank(&feedback, i),
            rank(&simulated, i)
        ));
    }
    let verdict = |tau: f64| {
        if !tau.is_finite() {
            "too few strategies in both to compare orderings"
        } else if tau >= 1.0 - 1e-12 {
            "the simulator orders these strategies exactly as their held-out feedback does"
        } else if tau > 0.0 {
            "the orderings agree only in part: read the simulator's effects with that in mind"
        } else {
            "the orderings disagree: the simulator's effects are not evidence about held-out feedback"
        }
    };
    let clicks_line = match tau_clicks {
        Some(t) => format!("Kendall's tau-b between held-out feedback and the positive rate of exploration clicks, the like-for-like comparison: **{t:.2}** over {} strategies (1: the same order; -1: reversed): {}. ", rows.len(), verdict(t)),
        None => String::new(),
    };
    let period_line = match (tau_clicks_train, tau_train_heldout, tau_valid_heldout) {
        (Some(a), Some(b), Some(v)) => format!("The simulator is built from the training period (its users are copies of the training users, their liking their training positive rates), so it knows that period's world only. Kendall's tau-b between the positive rate of exploration clicks and the same served clusters judged by the *training* period's labels (`wander eval`): **{a:.2}**. Between those training-label figures and held-out feedback: **{b:.2}**; between the validation period's and held-out feedback: **{v:.2}**. Where the first is high and the second low, the simulator is faithful to its world and the disagreement is the training period's own: strategies fitted to the training logs (co-occurrence, popularity) are judged there on the very engagements they were fitted to, and two periods none of them saw agree with each other (the third figure) better than either agrees with the training one. {}", tau_clicks_valid.map_or(String::new(), |t| format!("Against the validation period, the one right after the simulator's world and fitted by no strategy: **{t:.2}**; where this is 1 and the held-out figure is not, the held-out period orders the strategies as no earlier period does, and a simulator that knows only the earlier periods cannot follow it. "))),
        _ => String::new(),
    };
    let raw_line = match tau_clicks_raw {
        Some(t) => format!("On the fixed yardstick (`wander eval`'s raw test rate of triples seen from at least {} users, which does not move with `[feedback]`'s shrinkage or user cut), the same tau-b with the positive rate of exploration clicks: **{t:.2}**. ", crate::eval::FIXED_YARDSTICK_USERS),
        None => String::new(),
    };
    md.push_str(&format!("
{clicks_line}{raw_line}Between held-out feedback and the positive rate over impressions (which also counts who clicks at all): **{tau:.2}**: {}. {period_line}The held-out intervals overlap where the ranks of close strategies could swap.

", verdict(tau)));
    let cal = crate::summaries::Calibration {
        strategies: rows.iter().map(|r| r.0.clone()).collect(),
        heldout_feedback: feedback,
        simulated_exploration_positive_rate: simulated,
        kendall_tau: tau,
        simulated_exploration_click_positive_rate: clicks,
        kendall_tau_clicks: tau_clicks,
        train_label_feedback: train_labels,
        kendall_tau_clicks_train_labels: tau_clicks_train,
        kendall_tau_train_heldout: tau_train_heldout,
        kendall_tau_valid_heldout: tau_valid_heldout,
        kendall_tau_clicks_raw_heldout: tau_clicks_raw,
        kendall_tau_clicks_valid_labels: tau_clicks_valid,
    };
    Ok(Some((md, cal)))
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
        let calibration = calibration(&run)?;
        if let Some((section, _)) = &calibration {
            md.push_str(section);
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
            calibration: calibration.map(|c| c.1),
        })
    })
    .context("report failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Report, &outcome))
}
