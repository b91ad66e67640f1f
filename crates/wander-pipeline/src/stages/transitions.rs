//! `wander transitions`: cluster transitions per period and the novelty model's fine-tuning
//! set.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::LogStages;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The configuration `wander transitions` depends on.
pub(crate) fn transitions_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.novelty;
    let mut slice = json!({"examples": cfg.examples, "alpha": cfg.alpha, "max_per_pair": cfg.max_per_pair, "max_per_target": cfg.max_per_target, "eval_examples": cfg.eval_examples, "seed": ctx.config.run.seed});
    // The chat export is written in the novelty prompt's shape; absent for plain prompts so
    // that runs from before the choice stay fresh.
    if cfg.prompt == wander_core::config::NoveltyPrompt::Retrieval {
        slice["prompt"] = json!({"shape": "retrieval", "k": cfg.retrieval_k});
    }
    slice
}

/// Every transition of the ingested log, streamed (`wander_data::for_each_event`, the log
/// never whole in memory), and beside them `tag(event)` of the event that made each.
pub(crate) fn streamed_transitions<T>(
    run: &RunDir,
    item_cluster: &[u32],
    mut tag: impl FnMut(&wander_data::Event) -> T,
) -> crate::Result<(Vec<wander_explore::transitions::Transition>, Vec<T>)> {
    let ingest = open(run, StageId::Ingest)?;
    let items = wander_data::catalogue_size(ingest.reader())?.items;
    if item_cluster.len() != items {
        crate::bail!(
            "the taxonomy assigns {} items, the catalogue has {items}: artifacts of different runs",
            item_cluster.len()
        );
    }
    let mut miner = wander_explore::transitions::Miner::new(item_cluster);
    let (mut all, mut tags) = (Vec::new(), Vec::new());
    // The stream's items lie inside the catalogue, so inside `item_cluster`.
    wander_data::for_each_event(ingest.reader(), |e| {
        if let Some(t) = miner.push(e.user, e.item, e.positive, e.split) {
            all.push(t);
            tags.push(tag(&e));
        }
    })?;
    Ok((all, tags))
}

/// `wander transitions`.
pub fn transitions(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    use wander_explore::{sft, transitions as tr};
    let cfg = &ctx.config.novelty;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::Transitions.inputs())?;
    let slice = transitions_slice(ctx);
    let seed = ctx.config.run.seed;
    let outcome = run
        .run_stage(
            StageId::Transitions.folder(),
            slice,
            inputs,
            force,
            |w| -> crate::Result<Value> {
                let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
                let clusters = tax.planner_clusters();
                let (all, engine) = match ctx.config.engine.log_stages {
                    LogStages::Memory => (
                        streamed_transitions(&run, tax.planner_assign(), |_| ())?.0,
                        None,
                    ),
                    LogStages::Engine => {
                        let (all, mining) =
                            super::log_engine::transitions(ctx, &run, tax.planner_assign())?;
                        (all, Some(mining))
                    }
                };
                let period = |split| tr::stats(&tr::counts(&all, split), clusters.len());
                let div = sft::Diversify {
                    size: cfg.examples,
                    alpha: cfg.alpha,
                    max_per_pair: cfg.max_per_pair,
                    max_per_target: cfg.max_per_target,
                };
                let train_set =
                    sft::diversified(&tr::counts(&all, wander_data::Split::Train), &div, seed);
                let eval_div = sft::Diversify {
                    size: cfg.eval_examples,
                    ..div
                };
                let eval_set = sft::diversified(
                    &tr::counts(&all, wander_data::Split::Valid),
                    &eval_div,
                    seed ^ 1,
                );
                let descriptions: Vec<String> =
                    clusters.iter().map(|c| c.description.clone()).collect();
                let prompter = crate::llm::NoveltyPrompter::new(
                    cfg.prompt,
                    cfg.retrieval_k,
                    &tr::counts(&all, wander_data::Split::Train),
                );
                let jsonl: String = train_set
                    .iter()
                    .map(|e| {
                        Ok(sft::chat_line_for(
                            &prompter.user(e.c1, e.c2, &descriptions)?,
                            &descriptions[e.next as usize],
                        ) + "\n")
                    })
                    .collect::<crate::Result<_>>()?;
                SFT_TRAIN_CHAT.write(w, jsonl.as_bytes())?;
                SFT_TRAIN.write(w, &train_set)?;
                SFT_EVAL.write(w, &eval_set)?;
                TRANSITIONS.write(w, &all)?;
                let targets: std::collections::BTreeSet<u32> =
                    train_set.iter().map(|e| e.next).collect();
                crate::summaries::record(&crate::summaries::TransitionsSummary {
                    train: period(wander_data::Split::Train),
                    valid: period(wander_data::Split::Valid),
                    test: period(wander_data::Split::Test),
                    sft_examples: train_set.len(),
                    sft_distinct_targets: targets.len(),
                    sft_eval_examples: eval_set.len(),
                    clusters: clusters.len(),
                    engine,
                })
            },
        )
        .context("transitions failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Transitions, &outcome))
}
