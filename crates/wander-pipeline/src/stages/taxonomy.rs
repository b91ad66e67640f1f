//! `wander taxonomy`: item embeddings, the two-level clusters and their descriptions.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::DescribeScheme;
use wander_core::config::LogStages;
use wander_core::hash::sha256_file;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::log;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// Share of each cluster held out by the mix comparison's new-item placement check (the
/// default of `refresh.check_fraction`, so the two figures agree).
const NEW_ITEM_CHECK_FRACTION: f64 = 0.1;

/// The catalogue, and what the taxonomy reads of the log: each item's training
/// interactions (the report's popularity) and the co-consumption counts (the behavioural
/// embedding).
struct LogUsage {
    /// Users and items; its interactions are empty (dropped once mined).
    ds: wander_data::Dataset,
    train_interactions: Vec<u64>,
    co_consumption: std::collections::HashMap<(u32, u32), f64>,
    engine: Option<crate::summaries::EngineMining>,
}

/// Mines the log where `engine.log_stages` says: in memory from the log streamed, or on the
/// SQL engine over its Parquet; either way only the catalogue is loaded.
fn log_usage(ctx: &StageContext, run: &RunDir) -> crate::Result<LogUsage> {
    let ingest = open(run, StageId::Ingest)?;
    let window = ctx.config.taxonomy.window;
    match ctx.config.engine.log_stages {
        LogStages::Memory => {
            // The log streamed: the catalogue, each item's training interactions and the
            // co-consumption counts are all the taxonomy keeps of it.
            let ds = wander_data::read_catalogue(ingest.reader())?;
            let items = ds.items.len();
            let mut train_interactions = vec![0u64; items];
            let mut counts = wander_taxonomy::behaviour::CoConsumption::new(window);
            wander_data::for_each_event(ingest.reader(), |e| {
                if e.split == wander_data::Split::Train {
                    train_interactions[e.item as usize] += 1;
                }
                counts.push(e.user, e.item, e.positive, e.split);
            })?;
            let co_consumption = counts.finish();
            Ok(LogUsage {
                ds,
                train_interactions,
                co_consumption,
                engine: None,
            })
        }
        LogStages::Engine => {
            let ds = wander_data::read_catalogue(ingest.reader())?;
            let (train_interactions, co_consumption, mining) =
                super::log_engine::taxonomy_usage(ctx, run, ds.items.len())?;
            Ok(LogUsage {
                ds,
                train_interactions,
                co_consumption,
                engine: Some(mining),
            })
        }
    }
}

/// The configuration `wander taxonomy` depends on.
/// The behavioural item embeddings (PPMI of the co-consumption counts, then a truncated
/// SVD), consuming the counts: at scale the counts and the PPMI matrix are the stage's
/// largest structures (tens of millions of item pairs), so they are gone before the item
/// texts are embedded and clustered.
fn behaviour_of(
    items: usize,
    co_consumption: std::collections::HashMap<(u32, u32), f64>,
    dim: usize,
    seed: u64,
) -> Vec<Vec<f32>> {
    let ppmi = wander_taxonomy::behaviour::ppmi_from_counts(items, &co_consumption);
    drop(co_consumption);
    wander_taxonomy::behaviour::embeddings(&ppmi, dim, seed)
}

pub(crate) fn taxonomy_slice(ctx: &StageContext) -> Value {
    let mut slice = json!({"taxonomy": ctx.config.taxonomy, "seed": ctx.config.run.seed});
    // Absent at their first defaults, so that runs made before the keys existed stay fresh.
    if let Some(t) = slice["taxonomy"].as_object_mut() {
        if ctx.config.taxonomy.describe == DescribeScheme::Tfidf {
            t.remove("describe");
        }
        if ctx.config.taxonomy.compare_mixes {
            t.remove("compare_mixes");
        }
    }
    slice
}

/// `wander taxonomy`.
pub fn taxonomy(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let cfg = &ctx.config.taxonomy;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let model_dir = ctx.fetcher().resolve(&cfg.model)?;
    let mut inputs = manifests(&run, StageId::Taxonomy.inputs())?;
    let parent = ctx.config.run.parent.trim();
    if !parent.is_empty() {
        return inherited_taxonomy(ctx, parent, &model_dir, inputs, force);
    }
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        let p = model_dir.join(f);
        inputs.insert(
            p.display().to_string(),
            sha256_file(&p).with_context(|| {
                format!(
                    "{}: the embedding model (taxonomy.model) is incomplete",
                    model_dir.display()
                )
            })?,
        );
    }
    let slice = taxonomy_slice(ctx);
    let seed = ctx.config.run.seed;
    let stage_dir = run.stage_dir("taxonomy");
    let outcome = run
        .run_stage(
            StageId::Taxonomy.folder(),
            slice,
            inputs,
            force,
            |w| -> crate::Result<Value> {
                let LogUsage { ds, train_interactions, co_consumption, engine } = log_usage(ctx, &run)?;
                let spinner = wander_core::progress::spinner("taxonomy");
                spinner.set_message("behavioural embeddings (PPMI + SVD)");
                let behaviour = behaviour_of(ds.items.len(), co_consumption, cfg.behaviour_dim, seed);
                spinner.finish_and_clear();
                let texts: Vec<String> = ds.items.iter().map(wander_taxonomy::item_text).collect();
                let embedder = wander_taxonomy::embed::TextEmbedder::load(&model_dir)?;
                let mut cache = wander_taxonomy::embed::EmbeddingCache::for_model(&cfg.cache_dir, &embedder);
                let bar = wander_core::progress::bar(texts.len() as u64, "embed", "items");
                let t0 = std::time::Instant::now();
                let (text, computed) = wander_taxonomy::embed::embed_all(
                    &embedder,
                    &mut cache,
                    &texts,
                    cfg.batch_size,
                    Some(&bar),
                )?;
                let embed_seconds = t0.elapsed().as_secs_f64();
                bar.finish_and_clear();
                log(format!(
                    "embedded {computed} items in {embed_seconds:.1} s ({} from cache)",
                    texts.len() - computed
                ));
                let spinner = wander_core::progress::spinner("taxonomy");
                spinner.set_message("clustering");
                let mixed = wander_taxonomy::mix(&text, &behaviour, cfg.text_weight);
                // Candidate descriptions are embedded without the cache: thousands of
                // throwaway texts per run would only grow it.
                let mut embed = |texts: &[String]| -> wander_taxonomy::Result<Vec<Vec<f32>>> {
                    let mut out = Vec::with_capacity(texts.len());
                    for chunk in texts.chunks(cfg.batch_size.max(1)) {
                        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                        out.extend(embedder.embed_batch(&refs)?);
                    }
                    Ok(out)
                };
                let describe = |t: &mut wander_taxonomy::Taxonomy, v: &[Vec<f32>], embed: &mut wander_taxonomy::EmbedTexts<'_>| {
                    if cfg.describe == DescribeScheme::Discriminative {
                        spinner.set_message("discriminative descriptions");
                        wander_taxonomy::redescribe(t, cfg.describe, &ds.items, v, &text, cfg.keywords, embed)
                    } else {
                        Ok(())
                    }
                };
                let mut tax = wander_taxonomy::build(&ds, &mixed, cfg, seed)?;
                describe(&mut tax, &mixed, &mut embed)?;
                let (report, markdown) = wander_taxonomy::report(&ds, &train_interactions, &tax, &text, &mixed, seed);
                // The text/behaviour mix as a measured choice: the same clustering at several
                // weights, each judged by text coherence, genre purity, how much it sorts by
                // era and popularity, and whether its descriptions name its clusters.
                spinner.set_message("text/behaviour mix comparison");
                let mut weights = vec![0.0, 0.25, 0.5, 0.75, 1.0];
                if !cfg.compare_mixes {
                    weights.clear();
                } else if !weights.contains(&cfg.text_weight) {
                    weights.push(cfg.text_weight);
                    weights.sort_by(f64::total_cmp);
                }
                let mut comparison = std::collections::BTreeMap::new();
                let mut mix_rows = String::new();
                for weight in weights {
                    let configured = weight == cfg.text_weight;
                    let v = wander_taxonomy::mix(&text, &behaviour, weight);
                    let t = if configured {
                        tax.clone()
                    } else {
                        let mut t = wander_taxonomy::build(&ds, &v, cfg, seed)?;
                        describe(&mut t, &v, &mut embed)?;
                        t
                    };
                    let (r, _) = if configured { (report.clone(), String::new()) } else { wander_taxonomy::report(&ds, &train_interactions, &t, &text, &v, seed) };
                    let descriptions: Vec<String> = t.planner_clusters().iter().map(|c| c.description.clone()).collect();
                    let (vectors, _) = wander_taxonomy::embed::embed_all(&embedder, &mut cache, &descriptions, cfg.batch_size, None)?;
                    let retrieval = wander_taxonomy::description_retrieval(&vectors, &text, t.planner_assign());
                    // What a refresh could do with this mix: new items have text only.
                    let placement = wander_taxonomy::assign::held_out_check(
                        &text,
                        &t.item_fine,
                        &t.fine_parents()?,
                        wander_taxonomy::assign::PlacementSettings {
                            rule: wander_core::config::PlacementRule::Centroid,
                            neighbours: 1,
                            min_users: 1,
                            consumption: None,
                        },
                        NEW_ITEM_CHECK_FRACTION,
                        seed,
                    )?;
                    let figures = crate::summaries::MixFigures {
                        coherence_text: r.coherence_text,
                        coherence_text_lift: r.coherence_text_lift,
                        genre_purity: r.genre_purity,
                        era_share: r.era_share,
                        popularity_share: r.popularity_share,
                        description_retrieval: Some(retrieval.accuracy),
                        new_item_placement: Some(placement.fine_accuracy),
                    };
                    let share = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
                    mix_rows.push_str(&format!(
                        "| {weight}{} | {:.3} | {:.3} | {} | {} | {:.3} | {:.3} |\n",
                        if configured { " (this run)" } else { "" },
                        figures.coherence_text_lift, figures.genre_purity, share(figures.era_share), share(figures.popularity_share), retrieval.accuracy, placement.fine_accuracy
                    ));
                    comparison.insert(format!("text_weight_{weight}"), figures);
                }
                // Does each description name its cluster? Both keyword schemes on the same
                // clusters, so the report shows what the configured one gains.
                spinner.set_message("description retrieval");
                let assign = tax.planner_assign();
                let planner = tax.planner_clusters();
                let mut retrieval = std::collections::BTreeMap::new();
                let mut held_out = std::collections::BTreeMap::new();
                let mut by_scheme = Vec::new();
                const SCHEMES: [DescribeScheme; 4] = [DescribeScheme::Tfidf, DescribeScheme::Facets, DescribeScheme::Exemplars, DescribeScheme::Discriminative];
                let level = wander_taxonomy::Level { items: &ds.items, assign, vectors: &mixed, text: &text, n_clusters: planner.len() };
                for scheme in SCHEMES {
                    let descriptions: Vec<String> = if scheme == cfg.describe {
                        planner.iter().map(|c| c.description.clone()).collect()
                    } else {
                        wander_taxonomy::describe_clusters_embedded(scheme, &level, cfg.keywords, &mut embed)?
                            .into_iter()
                            .map(|(_, d)| d)
                            .collect()
                    };
                    let (vectors, _) = wander_taxonomy::embed::embed_all(&embedder, &mut cache, &descriptions, cfg.batch_size, None)?;
                    retrieval.insert(scheme.to_string(), wander_taxonomy::description_retrieval(&vectors, &text, assign));
                    held_out.insert(
                        scheme.to_string(),
                        wander_taxonomy::held_out_retrieval(scheme, &level, cfg.keywords, seed, &mut embed)?,
                    );
                    by_scheme.push(descriptions);
                }
                spinner.finish_and_clear();
                let mut markdown = markdown;
                if !cfg.compare_mixes {
                    markdown.push_str("\n## Text or behaviour: the mix as a measured choice\n\nNot computed in this run (`taxonomy.compare_mixes = false`).\n");
                } else { markdown.push_str(&format!(
                    "\n## Text or behaviour: the mix as a measured choice\n\nThe same clustering settings at several weights of the text embedding (`taxonomy.text_weight`; the rest is the behavioural one). Coherence lift: text coherence over a random assignment's. Era and popularity: the share of the release year's and of log(1 + training interactions)'s variance that lies between clusters (a random assignment gives about {:.3}); high values mean clusters that sort items by when or how much they were watched rather than by topic. Retrieval: the share of `{}` descriptions nearest their own cluster's mean item embedding. New-item placement: the share of held-out items (10% of each fine cluster) that the nearest text centroid of the rest puts back in their own fine cluster, what `wander refresh` can do for an item with no consumption yet.\n\n| text_weight | coherence lift | genre purity | era share | popularity share | description retrieval | new-item placement |\n|---|---|---|---|---|---|---|\n{mix_rows}",
                    (planner.len() as f64 - 1.0) / (ds.items.len() as f64 - 1.0), cfg.describe
                )); }
                markdown.push_str(&format!(
                    "\n## Do the descriptions name their clusters?\n\nEach {} description is embedded (the same sentence model as the items) and compared by cosine with every cluster's mean item embedding; it retrieves its cluster when its own is the nearest. Every keyword scheme (`taxonomy.describe`) on the same clusters; this run uses `{}`. *Held out*: each cluster's members split in two halves (seeded), the descriptions made from the first half's items alone, each judged against the second half's mean item embeddings, and the other way round (the two averaged); the discriminative scheme chooses its titles by this very measure, so its in-sample figure flatters it and the held-out one is the fair comparison.\n\n| scheme | retrieval accuracy | mean rank of the own cluster (of {}) | held out: accuracy | held out: mean rank |\n|---|---|---|---|---|\n",
                    tax.planner_level, cfg.describe, planner.len()
                ));
                for (name, r) in &retrieval {
                    let h = &held_out[name];
                    markdown.push_str(&format!("| {name} | {:.3} | {:.2} | {:.3} | {:.2} |\n", r.accuracy, r.mean_rank, h.accuracy, h.mean_rank));
                }
                markdown.push_str("\n| cluster | tfidf | facets | exemplars | discriminative |\n|---|---|---|---|---|\n");
                for c in 0..planner.len() {
                    let cell = |s: usize| by_scheme[s][c].replace('|', "/");
                    markdown.push_str(&format!("| {c} | {} | {} | {} | {} |\n", cell(0), cell(1), cell(2), cell(3)));
                }
                wander_taxonomy::write(w, &tax, &ds)?;
                report_md(StageId::Taxonomy).write(w, markdown.as_bytes())?;
                crate::summaries::record(&crate::summaries::TaxonomySummary {
                    quality: report,
                    planner_level: tax.planner_level,
                    embedded_items: computed,
                    embedding_cache_hits: texts.len() - computed,
                    embed_seconds,
                    mix_comparison: comparison,
                    description_retrieval: retrieval,
                    description_retrieval_held_out: held_out,
                    report: stage_dir.join("report.md"),
                    version: None,
                    extends: None,
                    engine,
                })
            },
        )
        .context("taxonomy failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Taxonomy, &outcome))
}

/// The taxonomy of a run that continues a refreshed parent (`run.parent`): the parent's
/// refreshed taxonomy as it is (cluster ids, descriptions, the new items' placements), so
/// the parent's models, adapters and table keep their meaning here; its quality figures
/// are measured again on this run's log. Re-clustering stays explicit: a run without a
/// parent.
fn inherited_taxonomy(
    ctx: &StageContext,
    parent: &str,
    model_dir: &std::path::Path,
    mut inputs: std::collections::BTreeMap<String, String>,
    force: bool,
) -> crate::Result<Summary> {
    let cfg = &ctx.config.taxonomy;
    let seed = ctx.config.run.seed;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let (parent_run, key, sum) = super::ingest::parent_stage(parent, StageId::Refresh)?;
    let refresh_manifest = sum[..sum.len().min(12)].to_string();
    inputs.insert(key, sum);
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        let p = model_dir.join(f);
        inputs.insert(p.display().to_string(), sha256_file(&p)?);
    }
    // What the quality figures depend on; the clustering settings do not apply.
    let slice = json!({"parent": parent, "taxonomy": {"text_weight": cfg.text_weight, "window": cfg.window, "behaviour_dim": cfg.behaviour_dim, "batch_size": cfg.batch_size}, "seed": seed});
    let stage_dir = run.stage_dir("taxonomy");
    let outcome = run
        .run_stage(StageId::Taxonomy.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
            let LogUsage { ds, train_interactions, co_consumption, engine } = log_usage(ctx, &run)?;
            let behaviour = behaviour_of(ds.items.len(), co_consumption, cfg.behaviour_dim, seed);
            let refresh = open(&parent_run, StageId::Refresh)?;
            let tax = wander_taxonomy::read(refresh.reader())?;
            if tax.item_fine.len() != ds.items.len() {
                crate::bail!(
                    "run.parent = \"{parent}\": its refreshed taxonomy places {} items, this run's log has {}: run this run's `wander ingest --force` after the parent's last refresh",
                    tax.item_fine.len(),
                    ds.items.len()
                );
            }
            let refreshed: crate::summaries::RefreshSummary =
                crate::summaries::read(StageId::Refresh, &refresh.manifest().summary)?;
            let texts: Vec<String> = ds.items.iter().map(wander_taxonomy::item_text).collect();
            let embedder = wander_taxonomy::embed::TextEmbedder::load(model_dir)?;
            let mut cache = wander_taxonomy::embed::EmbeddingCache::for_model(&cfg.cache_dir, &embedder);
            let bar = wander_core::progress::bar(texts.len() as u64, "embed", "items");
            let t0 = std::time::Instant::now();
            let (text, computed) = wander_taxonomy::embed::embed_all(&embedder, &mut cache, &texts, cfg.batch_size, Some(&bar))?;
            let embed_seconds = t0.elapsed().as_secs_f64();
            bar.finish_and_clear();
            let mixed = wander_taxonomy::mix(&text, &behaviour, cfg.text_weight);
            let (quality, body) = wander_taxonomy::report(&ds, &train_interactions, &tax, &text, &mixed, seed);
            let descriptions: Vec<String> = tax.planner_clusters().iter().map(|c| c.description.clone()).collect();
            let (vectors, _) = wander_taxonomy::embed::embed_all(&embedder, &mut cache, &descriptions, cfg.batch_size, None)?;
            let retrieval = wander_taxonomy::description_retrieval(&vectors, &text, tax.planner_assign());
            let markdown = format!(
                "Taxonomy version {}: the refreshed taxonomy of `{parent}` (its refresh manifest {}), kept as it is: cluster ids and descriptions are the parent's, and its {} new items are placed where the refresh put them. The figures below are measured on this run's log. Description retrieval of the planner level's descriptions: {:.3}.\n\n{body}",
                refreshed.taxonomy_version,
                refresh_manifest,
                refreshed.new_items,
                retrieval.accuracy
            );
            wander_taxonomy::write(w, &tax, &ds)?;
            report_md(StageId::Taxonomy).write(w, markdown.as_bytes())?;
            crate::summaries::record(&crate::summaries::TaxonomySummary {
                quality,
                planner_level: tax.planner_level,
                embedded_items: computed,
                embedding_cache_hits: texts.len() - computed,
                embed_seconds,
                mix_comparison: Default::default(),
                description_retrieval: [(cfg.describe.to_string(), retrieval)].into_iter().collect(),
                description_retrieval_held_out: Default::default(),
                report: stage_dir.join("report.md"),
                version: Some(refreshed.taxonomy_version),
                extends: Some(parent.into()),
                engine,
            })
        })
        .context("taxonomy failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Taxonomy, &outcome))
}
