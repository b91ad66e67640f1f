//! `wander assets fetch` and `wander ingest`: the default assets, then the validated, split
//! dataset.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::Config;

use crate::common::checksums;
use crate::common::report;
use crate::log;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// `wander assets fetch`: fetches the named assets (all when empty).
pub fn fetch_assets(ctx: &StageContext, names: &[String]) -> crate::Result<Summary> {
    let fetcher = ctx.fetcher();
    let wanted: Vec<&'static wander_assets::Asset> = if names.is_empty() {
        wander_assets::ASSETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| wander_assets::asset(n))
            .collect::<Result<_, _>>()?
    };
    let mut out = serde_json::Map::new();
    for a in wanted {
        if !fetcher.is_verified(a) {
            log(format!("fetching {} ({})", a.requirement, a.description));
        }
        let f = fetcher.fetch(a)?;
        out.insert(
            a.name.into(),
            json!({"dir": f.dir, "cached": f.cached, "requirement": a.requirement}),
        );
    }
    Ok(Summary::new(StageId::Assets, Value::Object(out)))
}

/// `wander ingest`.
pub fn ingest(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.data;
    let root = ctx.fetcher().resolve(&cfg.path)?;
    let inputs = checksums(&wander_data::input_files(cfg, &root))?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let outcome = run.run_stage(StageId::Ingest.folder(), Config::slice(cfg), inputs, force, |w| -> crate::Result<Value> {
        let spinner = wander_core::progress::spinner("ingest");
        spinner.set_message(format!("reading {}", root.display()));
        let loaded = wander_data::load(cfg, &root)?;
        // Later stages would fail on these, three stages on: say it here, where it is found.
        let early = loaded.dataset.stats();
        if early.temporal_split[0] == 0 {
            crate::bail!(
                "the training period is empty: none of the {} interactions falls before the validation cut (data.valid_fraction = {}, data.test_fraction = {}); are the timestamps all equal?",
                early.interactions, cfg.valid_fraction, cfg.test_fraction
            );
        }
        if early.positives == 0 {
            // The values the rule saw make a wrong threshold or a 0/1 (boolean) column obvious.
            let range = cfg.positive_rule().ok().and_then(|rule| {
                let ds = &loaded.dataset;
                let col = ds.feedback_columns.iter().position(|c| *c == rule.column)?;
                let values = &ds.interactions.feedback[col];
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                Some(format!("; column `{}` ranges from {lo} to {hi} (a boolean column reads as 0 and 1)", rule.column))
            });
            crate::bail!(
                "no interaction is positive under data.positive = \"{}\" ({} interactions){}: check the rule and the feedback column's values",
                cfg.positive, early.interactions, range.unwrap_or_default()
            );
        }
        spinner.set_message("writing parquet");
        wander_data::write_dataset(w, &loaded.dataset)?;
        spinner.finish_and_clear();
        let stats = early;
        for example in &loaded.skips.examples {
            log(format!("skipped: {example}"));
        }
        crate::summaries::record(&crate::summaries::IngestSummary {
            data_path: root.clone(),
            format: cfg.format,
            positive_rule: cfg.positive.clone(),
            users: stats.users,
            items: stats.items,
            items_with_interactions: stats.items_with_interactions,
            interactions: stats.interactions,
            positives: stats.positives,
            positive_rate: stats.positive_rate,
            density: stats.density,
            time_min: stats.time_min,
            time_max: stats.time_max,
            temporal_split: stats.temporal_split.into(),
            leave_last_out: stats.leave_last_out.into(),
            feedback_columns: stats.feedback_columns,
            skipped_rows: loaded.skips.skipped_rows,
            skipped_by_reason: loaded.skips.by_reason.clone(),
        })
    })
    .context("ingest failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Ingest, &outcome))
}
