//! `wander assets fetch` and `wander ingest`: the default assets, then the validated, split
//! dataset.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;

use crate::artifacts::open;
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

/// A run that `run.parent` names, and the checksum of one of its stage manifests under a
/// key that says whose it is.
pub(crate) fn parent_stage(
    parent: &str,
    stage: StageId,
) -> crate::Result<(RunDir, String, String)> {
    let run = RunDir::open(std::path::Path::new(parent))
        .with_context(|| format!("run.parent = \"{parent}\": not a run directory"))?;
    let sum = run.manifest_checksum(stage.folder()).with_context(|| {
        if stage == StageId::Refresh {
            format!("run.parent = \"{parent}\": the parent has no refresh; run `wander --set run.dir='\"{parent}\"' refresh --data NEWER_WINDOW` first")
        } else {
            format!("run.parent = \"{parent}\": the parent has no {} stage", stage.folder())
        }
    })?;
    Ok((
        run,
        format!("{parent}/{}/manifest.json", stage.folder()),
        sum,
    ))
}

/// `wander ingest` in a run that continues a refreshed parent (`run.parent`): the parent's
/// log followed by its refreshed window as one log, split again in time by this run's
/// `[data]` fractions (the leave-last-out split too), so the newest window reaches the
/// validation and test periods.
fn ingest_from_parent(ctx: &StageContext, parent: &str, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.data;
    let (parent_run, base_key, base_sum) = parent_stage(parent, StageId::Ingest)?;
    let (_, newer_key, newer_sum) = parent_stage(parent, StageId::Refresh)?;
    let inputs = [(base_key, base_sum), (newer_key, newer_sum)]
        .into_iter()
        .collect();
    let slice = json!({"parent": parent, "split": {"valid_fraction": cfg.valid_fraction, "test_fraction": cfg.test_fraction}});
    let run = RunDir::open(&ctx.config.run.dir)?;
    let outcome = run
        .run_stage(
            StageId::Ingest.folder(),
            slice,
            inputs,
            force,
            |w| -> crate::Result<Value> {
                let spinner = wander_core::progress::spinner("ingest");
                spinner.set_message(format!("reading {parent}"));
                // The parent's log is streamed (a few passes), the refreshed window loaded.
                let base_reader = open(&parent_run, StageId::Ingest)?;
                let refresh_reader = open(&parent_run, StageId::Refresh)?;
                let newer = wander_data::read_dataset(refresh_reader.reader())?;
                let stats = wander_data::write_concat(
                    base_reader.reader(),
                    &newer,
                    w,
                    (cfg.valid_fraction, cfg.test_fraction),
                )
                .map_err(|e| crate::PipelineError::msg(format!("run.parent = \"{parent}\": {e}")))?;
                spinner.finish_and_clear();
                if stats.temporal_split[0] == 0 {
                    crate::bail!(
                        "run.parent = \"{parent}\": the training period of the joined log is empty (data.valid_fraction = {}, data.test_fraction = {}, {} interactions)",
                        cfg.valid_fraction, cfg.test_fraction, stats.interactions
                    );
                }
                let before: crate::summaries::IngestSummary =
                    crate::summaries::read(StageId::Ingest, &base_reader.manifest().summary)?;
                let refreshed: crate::summaries::RefreshSummary =
                    crate::summaries::read(StageId::Refresh, &refresh_reader.manifest().summary)?;
                let mut skipped_by_reason = before.skipped_by_reason.clone();
                if refreshed.skipped_rows > 0 {
                    *skipped_by_reason
                        .entry("in the refreshed window".into())
                        .or_default() += refreshed.skipped_rows;
                }
                crate::summaries::record(&summary_of(
                    stats,
                    (refreshed.data_path, before.format, before.positive_rule),
                    (
                        before.skipped_rows + refreshed.skipped_rows,
                        skipped_by_reason,
                    ),
                    Some(parent.into()),
                ))
            },
        )
        .context("ingest failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Ingest, &outcome))
}

/// `wander ingest`.
pub fn ingest(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let parent = ctx.config.run.parent.trim();
    if !parent.is_empty() {
        return ingest_from_parent(ctx, parent, force);
    }
    let cfg = &ctx.config.data;
    let root = ctx.fetcher().resolve(&cfg.path)?;
    let inputs = checksums(&wander_data::input_files(cfg, &root))?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let outcome = run.run_stage(StageId::Ingest.folder(), cfg.output_slice(), inputs, force, |w| -> crate::Result<Value> {
        log(format!("reading {}", root.display()));
        // One bar per phase: reading (the share of the interactions file), then, for a log
        // sorted on disk, the runs sorted and the rows merged.
        let shown: std::cell::RefCell<Option<(u8, wander_core::progress::Bar)>> = Default::default();
        let on_progress = |phase: wander_data::IngestPhase| {
            use wander_data::IngestPhase::*;
            let (tag, len, pos, label, unit) = match phase {
                Reading { fraction, .. } => (0, 1000, (fraction.unwrap_or(0.0) * 1000.0) as u64, "read", "‰ of the log"),
                SortingRuns { done, runs } => (1, runs as u64, done as u64, "sort", "runs"),
                Merging { rows, total } => (2, total, rows, "merge", "rows"),
            };
            let mut current = shown.borrow_mut();
            if current.as_ref().map(|(t, _)| *t) != Some(tag) {
                if let Some((_, bar)) = current.take() {
                    bar.finish_and_clear();
                }
                *current = Some((tag, wander_core::progress::bar(len, label, unit)));
            }
            if let Some((_, bar)) = current.as_ref() {
                bar.set_position(pos);
            }
        };
        let ingested = wander_data::ingest(cfg, &root, w, cfg.sort_memory_mib << 20, &on_progress)?;
        if let Some((_, bar)) = shown.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if ingested.spilled_runs > 0 {
            log(format!(
                "sorted on disk in {} runs (the log is larger than data.sort_memory_mib = {} MiB)",
                ingested.spilled_runs, cfg.sort_memory_mib
            ));
        }
        // Later stages would fail on these, three stages on: say it here, where it is found.
        let stats = ingested.stats;
        if stats.temporal_split[0] == 0 {
            crate::bail!(
                "the training period is empty: none of the {} interactions falls before the validation cut (data.valid_fraction = {}, data.test_fraction = {}); are the timestamps all equal?",
                stats.interactions, cfg.valid_fraction, cfg.test_fraction
            );
        }
        if stats.positives == 0 {
            // The values the rule saw make a wrong threshold or a 0/1 (boolean) column obvious.
            let range = cfg.positive_rule().ok().map(|rule| {
                let (lo, hi) = ingested.rule_range;
                format!("; column `{}` ranges from {lo} to {hi} (a boolean column reads as 0 and 1)", rule.column)
            });
            crate::bail!(
                "no interaction is positive under data.positive = \"{}\" ({} interactions){}: check the rule and the feedback column's values",
                cfg.positive, stats.interactions, range.unwrap_or_default()
            );
        }
        for example in &ingested.skips.examples {
            log(format!("skipped: {example}"));
        }
        crate::summaries::record(&summary_of(
            stats,
            (root.clone(), cfg.format, cfg.positive.clone()),
            (ingested.skips.skipped_rows, ingested.skips.by_reason.clone()),
            None,
        ))
    })
    .context("ingest failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Ingest, &outcome))
}

/// The ingest summary of a log with these statistics: where it was read, in which format
/// and under which positive rule; the rows skipped and why; the parent it continues.
fn summary_of(
    stats: wander_data::Stats,
    (data_path, format, positive_rule): (
        std::path::PathBuf,
        wander_core::config::DataFormat,
        String,
    ),
    (skipped_rows, skipped_by_reason): (usize, std::collections::BTreeMap<String, usize>),
    parent: Option<std::path::PathBuf>,
) -> crate::summaries::IngestSummary {
    crate::summaries::IngestSummary {
        data_path,
        format,
        positive_rule,
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
        skipped_rows,
        skipped_by_reason,
        parent,
    }
}
