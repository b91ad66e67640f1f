//! `wander feedback`: collective feedback labels per (c1, c2, candidate) and period.

use std::collections::BTreeSet;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::LogStages;
use wander_explore::feedback;
use wander_explore::feedback::LabelConfig;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

fn label_config(ctx: &StageContext) -> LabelConfig {
    let f = &ctx.config.feedback;
    LabelConfig {
        signal: f.signal,
        value_weight: f.value_weight,
        normalize: f.normalize,
        min_users: f.min_users,
        round: f.round,
        shrinkage: f.shrinkage,
    }
}

/// The configuration `wander feedback` depends on.
pub(crate) fn feedback_slice(ctx: &StageContext) -> Value {
    let f = &ctx.config.feedback;
    let mut slice = json!({"feedback": f, "column": ctx.config.data.feedback});
    // Each key only where it changes the labels, so that labels made before the key existed
    // (and labels of another signal) stay fresh.
    if let Some(map) = slice["feedback"].as_object_mut() {
        if f.signal != feedback::Signal::Mixed {
            map.remove("value_weight");
        }
        if f.shrinkage == 0.0 {
            map.remove("shrinkage");
        }
        if f.export_pairwise {
            map.remove("export_pairwise");
        }
    }
    slice
}

/// One period's mined feedback: its label parts in canonical order (see
/// [`feedback::sort_parts`]), its feedback events, and how many of them were positive.
pub(crate) struct PeriodFeedback {
    /// Label parts.
    pub parts: Vec<feedback::LabelPart>,
    /// Feedback events.
    pub events: usize,
    /// Positive ones.
    pub positive: usize,
}

/// The three periods' feedback (train, valid, test) from the ingested log, streamed (the
/// log is never whole in memory; the feedback events are).
fn in_memory(
    ctx: &StageContext,
    run: &RunDir,
    cfg: &LabelConfig,
    assign: &[u32],
) -> crate::Result<[PeriodFeedback; 3]> {
    let ingest = open(run, StageId::Ingest)?;
    let size = wander_data::catalogue_size(ingest.reader())?;
    if assign.len() != size.items {
        bail!(
            "the taxonomy assigns {} items, the catalogue has {}: artifacts of different runs",
            assign.len(),
            size.items
        );
    }
    let columns = wander_data::feedback_columns(ingest.reader())?;
    let has_column = columns.contains(&ctx.config.data.feedback);
    if !has_column && cfg.signal != feedback::Signal::Positive {
        bail!(
            "config: data.feedback: column `{}` is not in the data (columns: {}); feedback.signal = {} needs it",
            ctx.config.data.feedback,
            columns.join(", "),
            json!(cfg.signal)
        );
    }
    let mut miner = feedback::EventMiner::new(assign);
    let mut events = Vec::new();
    let mut visit = |e: wander_data::Event, value: f64| {
        if let Some(made) = miner.push(e.user, e.item, e.positive, value, e.split) {
            events.push(made);
        }
    };
    if has_column {
        wander_data::for_each_valued_event(ingest.reader(), &ctx.config.data.feedback, &mut visit)?;
    } else {
        wander_data::for_each_event(ingest.reader(), |e| visit(e, f64::NAN))?;
    }
    let signal = feedback::EventSignal::new(cfg.signal, cfg.value_weight, &events)?;
    Ok([
        wander_data::Split::Train,
        wander_data::Split::Valid,
        wander_data::Split::Test,
    ]
    .map(|split| {
        let of_split = events.iter().filter(|e| e.split == split);
        PeriodFeedback {
            parts: feedback::label_parts(&events, split, &signal),
            events: of_split.clone().count(),
            positive: of_split.filter(|e| e.positive).count(),
        }
    }))
}

/// `wander feedback`.
pub fn feedback_stage(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::Feedback.inputs())?;
    let slice = feedback_slice(ctx);
    let cfg = label_config(ctx);
    let margin = ctx.config.feedback.pairwise_margin;
    let outcome = run.run_stage(StageId::Feedback.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let clusters = tax.planner_clusters();
        let (mined, engine) = match ctx.config.engine.log_stages {
            LogStages::Memory => (in_memory(ctx, &run, &cfg, tax.planner_assign())?, None),
            LogStages::Engine => {
                let (mined, mining) = super::log_engine::feedback(ctx, &run, tax.planner_assign())?;
                (mined, Some(mining))
            }
        };
        let mut periods = Vec::new();
        let describe = |c: u32| clusters[c as usize].description.clone();
        for ((name, split), period) in [
            ("train", wander_data::Split::Train),
            ("valid", wander_data::Split::Valid),
            ("test", wander_data::Split::Test),
        ]
        .into_iter()
        .zip(&mined)
        {
            let labels = feedback::labels_from_parts(&period.parts, &cfg, clusters.len())?;
            let (n_events, positive) = (period.events, period.positive);
            let values: Vec<f64> = labels.iter().map(|l| l.label).collect();
            let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
            let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt();
            let pairs: BTreeSet<(u32, u32)> = labels.iter().map(|l| (l.c1, l.c2)).collect();
            periods.push(crate::summaries::LabelStats {
                events: n_events,
                positive_events: positive,
                labels: labels.len(),
                pairs: pairs.len(),
                label_mean: mean,
                label_sd: sd,
                preferences: feedback::preference_count(&labels, margin),
            });
            crate::artifacts::labels(split).write(w, &labels)?;
            if name == "train" {
                // Line by line to disk: at 50M events the pairwise lines were 8.3 GB.
                POINTWISE_TRAIN.write_streamed(w, |out| {
                    labels.iter().try_for_each(|l| writeln!(out, "{}", feedback::label_line(l, describe)))
                })?;
                if ctx.config.feedback.export_pairwise {
                    PAIRWISE_TRAIN.write_streamed(w, |out| {
                        feedback::try_for_each_preference(&labels, margin, |p| {
                            writeln!(out, "{}", json!({"history": [describe(p.c1), describe(p.c2)], "better": describe(p.better), "worse": describe(p.worse), "margin": p.margin}))
                        })
                    })?;
                }
            }
        }
        let [train, valid, test]: [crate::summaries::LabelStats; 3] = periods
            .try_into()
            .map_err(|_| crate::PipelineError::msg("three periods"))?;
        crate::summaries::record(&crate::summaries::FeedbackSummary {
            train,
            valid,
            test,
            signal: cfg.signal,
            normalize: cfg.normalize,
            min_users: cfg.min_users,
            value_weight: (cfg.signal == feedback::Signal::Mixed).then_some(cfg.value_weight),
            shrinkage: (cfg.shrinkage > 0.0).then_some(cfg.shrinkage),
            engine,
        })
    })
    .context("feedback failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Feedback, &outcome))
}
