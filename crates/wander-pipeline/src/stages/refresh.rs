//! `wander refresh`: a newer window of the log on the run's taxonomy (F1, "Refresh"). Users
//! and items keep their dense indices, items the run has never seen are placed in the
//! existing fine clusters by their text, and the newer window's transitions are compared
//! with the run's. Cluster ids and descriptions do not change, so both models and the
//! table stay valid; a full re-clustering is `wander taxonomy --force` on new data.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::{DataConfig, PlacementRule};
use wander_explore::drift;
use wander_taxonomy::assign::{CoConsumption, PlacementSettings};

use crate::artifacts::*;
use crate::common::{checksums, manifests, report};
use crate::log;
use crate::summaries::{NewItem, RefreshDrift, RefreshSummary};
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The version of a taxonomy built by clustering; a refresh gives the taxonomy it extends
/// the next one, so a chain of runs (`run.parent`) counts its refreshes.
const BUILT_TAXONOMY_VERSION: u32 = 1;

/// How many uncertain placements the report lists.
const REPORT_UNCERTAIN: usize = 20;

/// The configuration `wander refresh` depends on (the newer data's files are its inputs).
pub(crate) fn refresh_slice(ctx: &StageContext) -> Value {
    let r = &ctx.config.refresh;
    json!({
        "data": ctx.config.data.output_slice(),
        "newer_data": r.data,
        "placement": r.placement,
        "neighbours": r.neighbours,
        "min_users": r.min_users,
        "check_fraction": r.check_fraction,
        "k": r.k,
        "min_support": r.min_support,
        "uncertain_margin": r.uncertain_margin,
        "taxonomy_batch_size": ctx.config.taxonomy.batch_size,
        "seed": ctx.config.run.seed,
    })
}

/// The newer window's data configuration: `[data]` with `refresh.data` as its folder.
fn newer_data(ctx: &StageContext) -> crate::Result<DataConfig> {
    let path = ctx.config.refresh.data.trim();
    if path.is_empty() {
        crate::bail!(
            "refresh.data is not set: give the folder of the newer window (same format and file names as [data]) with `wander refresh --data DIR` or in [refresh]"
        );
    }
    Ok(DataConfig {
        path: path.to_string(),
        ..ctx.config.data.clone()
    })
}

/// `wander refresh`.
pub fn refresh(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.refresh;
    let data_cfg = newer_data(ctx)?;
    let root = ctx.fetcher().resolve(&data_cfg.path)?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let mut inputs = manifests(&run, StageId::Refresh.inputs())?;
    let files = wander_data::input_files(&data_cfg, &root);
    if files.is_empty() {
        crate::bail!(
            "{}: none of the files that data.format = {} reads is there (refresh.data: the newer window, in the run's format and file names)",
            root.display(),
            wander_core::config::Config::slice(&data_cfg.format)
        );
    }
    inputs.extend(checksums(&files)?);
    let model_dir = ctx.fetcher().resolve(&ctx.config.taxonomy.model)?;
    let base_taxonomy = run.manifest_checksum(StageId::Taxonomy.folder())?;
    let outcome = run
        .run_stage(
            StageId::Refresh.folder(),
            refresh_slice(ctx),
            inputs,
            force,
            |w| -> crate::Result<Value> {
                let spinner = wander_core::progress::spinner("refresh");
                spinner.set_message(format!("reading {}", root.display()));
                // The base log is streamed (twice: co-consumption before the placements,
                // transitions after them), never loaded: only its catalogue is held.
                let base_stage = open(&run, StageId::Ingest)?;
                let base = wander_data::read_catalogue(base_stage.reader())?;
                let built = open(&run, StageId::Taxonomy)?;
                let base_version = crate::summaries::read::<crate::summaries::TaxonomySummary>(
                    StageId::Taxonomy,
                    &built.manifest().summary,
                )?
                .version
                .unwrap_or(BUILT_TAXONOMY_VERSION);
                let mut tax = wander_taxonomy::read(built.reader())?;
                let loaded = wander_data::load(&data_cfg, &root)?;
                for example in &loaded.skips.examples {
                    log(format!("skipped: {example}"));
                }
                let newer_stats = loaded.dataset.stats();
                let rebased = wander_data::rebase(&base, loaded.dataset);
                let ds = &rebased.dataset;
                // The base log and the newer window as one log, so a user's history runs on
                // across the boundary (transitions) and a new item's users count with what
                // they engaged with before (placement by consumption).
                let mut co = CoConsumption::builder(ds.items.len());
                wander_data::for_each_concat_event(base_stage.reader(), ds, |e, _| {
                    co.push(e.user, e.item, e.positive)
                })
                .map_err(|e| crate::PipelineError::msg(format!("{}: {e}", root.display())))?;
                let co = co.finish();
                spinner.finish_and_clear();

                // Every item's text vector: the built ones come from the taxonomy's cache.
                let embedder = wander_taxonomy::embed::TextEmbedder::load(&model_dir)?;
                let mut cache = wander_taxonomy::embed::EmbeddingCache::for_model(
                    &ctx.config.taxonomy.cache_dir,
                    &embedder,
                );
                let texts: Vec<String> = ds.items.iter().map(wander_taxonomy::item_text).collect();
                let bar = wander_core::progress::bar(texts.len() as u64, "embed", "items");
                let (text, computed) = wander_taxonomy::embed::embed_all(
                    &embedder,
                    &mut cache,
                    &texts,
                    ctx.config.taxonomy.batch_size,
                    Some(&bar),
                )?;
                bar.finish_and_clear();
                let built = base.items.len();
                let parents = tax.fine_parents()?;
                let settings = |rule| PlacementSettings {
                    rule,
                    neighbours: cfg.neighbours,
                    min_users: cfg.min_users,
                    consumption: Some(&co),
                };
                // Every rule on the same held-out items, so the report shows what the
                // configured one gains.
                let mut checks = std::collections::BTreeMap::new();
                for rule in [
                    PlacementRule::Centroid,
                    PlacementRule::Neighbours,
                    PlacementRule::Consumption,
                ] {
                    let check = wander_taxonomy::assign::held_out_check(
                        &text[..built],
                        &tax.item_fine,
                        &parents,
                        settings(rule),
                        cfg.check_fraction,
                        ctx.config.run.seed,
                    )?;
                    checks.insert(rule.to_string(), check);
                }
                let check = checks[&cfg.placement.to_string()];
                let placer = wander_taxonomy::assign::ItemPlacer::new(
                    &text[..built],
                    &tax.item_fine,
                    &parents,
                )?;
                let mut placements = Vec::with_capacity(rebased.new_items.len());
                let mut new_items = Vec::with_capacity(rebased.new_items.len());
                for &i in &rebased.new_items {
                    let item = &ds.items[i as usize];
                    let votes = (cfg.placement == PlacementRule::Consumption)
                        .then(|| {
                            co.votes(
                                i,
                                |j| ((j as usize) < built).then(|| tax.item_fine[j as usize]),
                                parents.len(),
                                cfg.min_users,
                            )
                        })
                        .flatten();
                    let p = placer.place_by(
                        cfg.placement,
                        cfg.neighbours,
                        &item.id,
                        &text[i as usize],
                        votes.as_deref(),
                    )?;
                    placements.push(p);
                    new_items.push(NewItem {
                        item_id: item.id.clone(),
                        title: item.title.clone(),
                        fine: p.fine,
                        coarse: p.coarse,
                        similarity: p.similarity,
                        margin: p.margin,
                        users: co.users_of(i),
                        by_consumption: votes.is_some(),
                    });
                }
                tax.append_items(&placements);

                // Each transition dated by the window of the engagement that made its next
                // cluster.
                let mut dated = Vec::new();
                let mut miner = wander_explore::transitions::Miner::new(tax.planner_assign());
                wander_data::for_each_concat_event(base_stage.reader(), ds, |e, from_newer| {
                    if let Some(t) = miner.push(e.user, e.item, e.positive, e.split) {
                        dated.push((t, u32::from(from_newer)));
                    }
                })?;
                let before = drift::counts_in(&dated, 0..1);
                let after = drift::counts_in(&dated, 1..2);
                let jaccards = drift::successor_jaccard(&before, &after, cfg.k, cfg.min_support);
                let newer_transitions = dated.iter().filter(|(_, w)| *w == 1).count();
                let unseen_pairs = after.keys().filter(|p| !before.contains_key(p)).count();
                let stale_top1_hits = {
                    let table = drift::CountTable::fit(&before);
                    let hits = dated
                        .iter()
                        .filter(|(t, w)| {
                            *w == 1 && table.serve(t.c1, t.c2, 1, None).first() == Some(&t.next)
                        })
                        .count();
                    if newer_transitions == 0 {
                        f64::NAN
                    } else {
                        hits as f64 / newer_transitions as f64
                    }
                };
                let drift_figures = RefreshDrift {
                    base_transitions: dated.len() - newer_transitions,
                    newer_transitions,
                    newer_pairs: after.len(),
                    newer_pairs_unseen_before: unseen_pairs,
                    jaccard_pairs: jaccards.len(),
                    successor_jaccard: mean(&jaccards),
                    stale_top1_hit_rate: stale_top1_hits,
                };
                let on_new = {
                    let mut is_new = vec![false; ds.items.len()];
                    for &i in &rebased.new_items {
                        is_new[i as usize] = true;
                    }
                    ds.interactions
                        .item
                        .iter()
                        .filter(|&&i| is_new[i as usize])
                        .count()
                };

                wander_data::write_dataset(w, ds)?;
                wander_taxonomy::write(w, &tax, ds)?;
                let summary = RefreshSummary {
                    data_path: root.clone(),
                    taxonomy_version: base_version + 1,
                    base_taxonomy: base_taxonomy.clone(),
                    users: ds.users.len(),
                    new_users: rebased.new_users.len(),
                    items: ds.items.len(),
                    new_items: rebased.new_items.len(),
                    embedded_items: computed,
                    interactions: newer_stats.interactions,
                    interactions_on_new_items: on_new,
                    time_min: newer_stats.time_min,
                    time_max: newer_stats.time_max,
                    skipped_rows: loaded.skips.skipped_rows,
                    placed_by_consumption: new_items.iter().filter(|n| n.by_consumption).count(),
                    uncertain_placements: new_items
                        .iter()
                        .filter(|n| n.margin < cfg.uncertain_margin)
                        .count(),
                    mean_similarity: mean(
                        &new_items.iter().map(|n| n.similarity).collect::<Vec<_>>(),
                    ),
                    placement: cfg.placement,
                    placement_check: check,
                    placement_checks: checks,
                    drift: drift_figures,
                };
                REFRESH_NEW_ITEMS.write(w, &new_items)?;
                let newer: Vec<wander_explore::transitions::Transition> = dated
                    .iter()
                    .filter(|(_, w)| *w == 1)
                    .map(|(t, _)| *t)
                    .collect();
                REFRESH_TRANSITIONS.write(w, &newer)?;
                let md = markdown(&summary, &new_items, &tax, cfg);
                report_md(StageId::Refresh).write(w, md.as_bytes())?;
                crate::summaries::record(&summary)
            },
        )
        .context("refresh failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Refresh, &outcome))
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The stage's report.
fn markdown(
    s: &RefreshSummary,
    new_items: &[NewItem],
    tax: &wander_taxonomy::Taxonomy,
    cfg: &wander_core::config::RefreshConfig,
) -> String {
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.3}")
        } else {
            "-".into()
        }
    };
    let c = &s.placement_check;
    let d = &s.drift;
    let mut md = format!(
        "# Refresh: a newer window on this run's taxonomy\n\nNewer window: `{}`, {} interactions from {} to {} ({} users, {} of them new; {} catalogue items, {} new). Taxonomy version {} extends the run's built taxonomy (manifest {}): cluster ids and descriptions are unchanged, so the models and the table trained on it stay valid.\n\n## New items\n\n{} new items placed in the existing fine clusters (rule `{}`; {} of them by their users' other engagements, the rest by their text in the sentence model's space). They take {} of the newer window's interactions. Mean similarity {}; {} placements beat the runner-up cluster by less than {} and are the ones a full re-clustering would most likely move.\n\n",
        s.data_path.display(),
        s.interactions,
        super::drift::date(s.time_min),
        super::drift::date(s.time_max),
        s.users,
        s.new_users,
        s.items,
        s.new_items,
        s.taxonomy_version,
        &s.base_taxonomy[..s.base_taxonomy.len().min(12)],
        s.new_items,
        s.placement,
        s.placed_by_consumption,
        s.interactions_on_new_items,
        num(s.mean_similarity),
        s.uncertain_placements,
        cfg.uncertain_margin
    );
    md.push_str(&format!(
        "How much to trust a placement: {} of the built items ({} of each fine cluster, seeded) held out and placed by text among the rest, by each rule (`refresh.placement`; this run uses `{}`). Always naming the most common cluster would score {}. The clusters were built on text and behaviour together (`taxonomy.text_weight`), so text alone cannot reach 1; `consumption` places an item with at least {} users who engaged with other (not held-out) built items by where those engagements lie, the rest by text.\n\n| rule | own fine cluster | own coarse cluster | mean margin | placed by consumption |\n|---|---|---|---|---|\n",
        c.held_out,
        cfg.check_fraction,
        s.placement,
        num(c.majority_fine_accuracy),
        cfg.min_users
    ));
    for (rule, r) in &s.placement_checks {
        md.push_str(&format!(
            "| {rule}{} | {} | {} | {} |\n",
            if *rule == s.placement.to_string() {
                " (this run)"
            } else {
                ""
            },
            num(r.fine_accuracy),
            num(r.coarse_accuracy),
            num(r.mean_margin)
        ));
    }
    md.push('\n');
    let mut sorted: Vec<&NewItem> = new_items.iter().collect();
    sorted.sort_by(|a, b| a.margin.total_cmp(&b.margin));
    if !sorted.is_empty() {
        md.push_str("| item | title | users | fine cluster | its description | similarity | margin |\n|---|---|---|---|---|---|---|\n");
        for n in sorted.iter().take(REPORT_UNCERTAIN) {
            let desc = tax
                .fine
                .get(n.fine as usize)
                .map_or("", |c| c.description.as_str());
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {:.3} |\n",
                n.item_id.replace('|', "/"),
                n.title.replace('|', "/"),
                n.users,
                n.fine,
                desc.replace('|', "/"),
                n.similarity,
                n.margin
            ));
        }
        if sorted.len() > REPORT_UNCERTAIN {
            md.push_str(&format!(
                "\nThe {REPORT_UNCERTAIN} least certain of {} shown; all are in `new_items.json`.\n",
                sorted.len()
            ));
        }
    }
    md.push_str(&format!(
        "\n## Do the newer window's transitions follow the run's?\n\nTransitions mined over the run's log and the newer window as one log (histories run on across the boundary), each dated by the window of the engagement that made its next cluster: {} before, {} in the newer window, over {} history pairs ({} of them never seen before). Top-{} successor Jaccard over the {} pairs with at least {} transitions in both windows: **{}** (`wander eval drift` puts the same figure between consecutive periods). The run's count table (fitted on the base log alone) names the newer window's next cluster first for {} of its transitions.\n\nNext: the table's rerun with the retrieval-augmented prompt naming this window's next clusters first (`wander precompute --force` with `precompute.retrieve_from = \"refresh\"`, for a novelty model trained with `novelty.prompt = \"retrieval\"`; `newer_transitions.json` holds them), then `wander publish`, whose gates keep the serving version when the new table fails them. Not built yet: warm-started fine-tuning on the newer window.\n",
        d.base_transitions,
        d.newer_transitions,
        d.newer_pairs,
        d.newer_pairs_unseen_before,
        cfg.k,
        d.jaccard_pairs,
        cfg.min_support,
        num(d.successor_jaccard),
        num(d.stale_top1_hit_rate)
    ));
    md
}
