//! `wander eval drift`: how the transitions a novelty model learns change over calendar
//! periods (F1, "Refresh"), and what refreshing a count table buys on the next period.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_explore::drift;
use wander_explore::metrics::Estimate;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The configuration `wander eval drift` depends on.
pub(crate) fn eval_drift_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.drift;
    json!({"period_days": cfg.period_days, "k": cfg.k, "min_support": cfg.min_support, "warmup_periods": cfg.warmup_periods, "bootstrap_rounds": cfg.bootstrap_rounds, "seed": ctx.config.run.seed})
}

/// `wander eval drift`.
pub fn eval_drift(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.drift;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::EvalDrift.inputs())?;
    let slice = eval_drift_slice(ctx);
    let outcome = run
        .run_stage(
            StageId::EvalDrift.folder(),
            slice,
            inputs,
            force,
            |w| -> crate::Result<Value> {
                let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
                let period_seconds = (cfg.period_days * 86_400.0).round() as i64;
                // Two passes over the streamed log: its time span, then the transitions,
                // each dated by the period of the engagement that made it.
                let (mut first, mut last) = (i64::MAX, i64::MIN);
                let events =
                    wander_data::for_each_event(open(&run, StageId::Ingest)?.reader(), |e| {
                        first = first.min(e.timestamp);
                        last = last.max(e.timestamp);
                    })?;
                let period = |t: i64| drift::period_at(first, t, period_seconds);
                let (all, periods) =
                    super::transitions::streamed_transitions(&run, tax.planner_assign(), |e| {
                        period(e.timestamp)
                    })?;
                let dated: Vec<_> = all.into_iter().zip(periods).collect();
                let n_periods = if events == 0 { 0 } else { period(last) + 1 };
                if n_periods <= cfg.warmup_periods {
                    // A short log is no error for `wander run`: the report says what is missing.
                    crate::log(format!("eval drift: {}", too_short(n_periods, cfg)));
                }
                let settings = drift::DriftSettings {
                    k: cfg.k,
                    min_support: cfg.min_support,
                    warmup: cfg.warmup_periods,
                    rounds: cfg.bootstrap_rounds,
                    seed: ctx.config.run.seed,
                };
                let figures = drift::analyse(&dated, n_periods, &settings);
                let start = if events == 0 { 0 } else { first };
                let md = markdown(&figures, cfg, start, period_seconds);
                report_md(StageId::EvalDrift).write(w, md.as_bytes())?;
                crate::summaries::record(&crate::summaries::EvalDriftSummary {
                    period_days: cfg.period_days,
                    k: cfg.k,
                    figures,
                })
            },
        )
        .context("eval drift failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::EvalDrift, &outcome))
}

/// The stage's report.
fn markdown(
    r: &drift::DriftReport,
    cfg: &wander_core::config::DriftConfig,
    start: i64,
    period_seconds: i64,
) -> String {
    let k = cfg.k;
    let fmt = |e: &Estimate| format!("{:.3} [{:.3}, {:.3}]", e.mean, e.lo, e.hi);
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.3}")
        } else {
            "-".into()
        }
    };
    let mut md = format!(
        "# Drift of transitions over time\n\nProtocol: every transition (a user's two most recent distinct positively engaged clusters and the next new one, planner level) dated by the interaction that entered its next cluster, in calendar periods of {} days from the earliest interaction. Per period, each history pair's top-{k} next clusters by count.\n\n| period | from | transitions | history pairs |\n|---|---|---|---|\n",
        cfg.period_days
    );
    for p in &r.periods {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            p.period,
            date(start + i64::from(p.period) * period_seconds),
            p.transitions,
            p.pairs
        ));
    }
    md.push_str(&format!(
        "\n## How fast successors move\n\nTop-{k} successor Jaccard: for each pair with at least {} transitions in both of two consecutive periods, |A ∩ B| / |A ∪ B| of its top-{k} next clusters in each (F1 reports 0.17 month over month on its platform). Shuffled: the same after the two periods' transitions are dealt back to them at random (sizes kept), what sampling noise alone gives when nothing drifts; drift is the gap. Table top-1 changed: share of the pairs of the table refitted on every period so far whose most frequent next cluster changed when this period was added.\n\n| period | pairs | top-{k} successor Jaccard | shuffled (no drift) | table top-1 changed |\n|---|---|---|---|---|\n",
        cfg.min_support
    ));
    for s in &r.steps {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            s.period,
            s.pairs,
            num(s.successor_jaccard),
            num(s.shuffled_jaccard),
            num(s.table_top1_changed)
        ));
    }
    md.push_str(&format!(
        "\nPooled over {} (pair, period) steps: **{}**; shuffled, no drift: {}.\n",
        r.jaccard_pairs,
        num(r.successor_jaccard),
        num(r.shuffled_successor_jaccard)
    ));
    md.push_str(&format!(
        "\n## Replay: a stale table against refreshed ones\n\nEach of periods {:?} is predicted from the periods before it ({} transitions). Strategies serve a pair's most frequent next clusters in their window, then the window's most frequent targets, never a history cluster: `stale`, the first {} period(s) only (a table built once); `refreshed`, every period before the predicted one; `last_period`, the period just before it; `refreshed_recent_hint`, the refreshed list with the pair's most frequent next cluster of the last period put first (F1's retrieval-augmented prompt adds that hint; here without a model). 95% percentile-bootstrap intervals over events ({} resamples); against stale: paired by event.\n\n| strategy | hit@1 | hit@{k} | hit@{k} minus stale | hit@{k} per period |\n|---|---|---|---|---|\n",
        r.replay_periods,
        r.replay_events,
        cfg.warmup_periods,
        cfg.bootstrap_rounds
    ));
    if r.replay_periods.is_empty() {
        md.push_str(&format!("\n{}\n", too_short(r.periods.len() as u32, cfg)));
    }
    for name in drift::REPLAY_STRATEGIES {
        let Some(f) = r.replay.get(name).filter(|_| r.replay_events > 0) else {
            continue;
        };
        let per: Vec<String> = f.hit_at_k_by_period.iter().map(|&x| num(x)).collect();
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            fmt(&f.hit_at_1),
            fmt(&f.hit_at_k),
            fmt(&f.hit_at_k_vs_stale),
            per.join(", ")
        ));
    }
    md.push_str("\nThese are count tables, not the LLM: they bound how much a refresh can matter on this log. A refresh of the novelty model and its table (`wander refresh`, F1) is not built yet.\n");
    md
}

/// Why a log gives no replay.
fn too_short(n_periods: u32, cfg: &wander_core::config::DriftConfig) -> String {
    format!(
        "the log spans {n_periods} period(s) of {} days, not more than drift.warmup_periods = {}: nothing is left to replay; shorten drift.period_days or lower drift.warmup_periods",
        cfg.period_days, cfg.warmup_periods
    )
}

/// `YYYY-MM-DD` (UTC) of Unix seconds, by the days-to-civil algorithm (Hinnant), so no date
/// crate is needed for one column.
pub(crate) fn date(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_of_known_timestamps() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(874_724_710), "1997-09-20"); // MovieLens-100K's first rating
        assert_eq!(super::date(951_782_400), "2000-02-29");
        assert_eq!(super::date(-86_400), "1969-12-31");
    }
}
