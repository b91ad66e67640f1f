//! `wander train items` and `wander eval items`: SASRec, the item policy, and its full-ranking
//! evaluation.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::ItemLoss;
use wander_explore::metrics::bootstrap;
use wander_items::eval::ranks_of;
use wander_items::eval::sample_users;
use wander_items::eval::users_with;
use wander_items::eval::RankingMetrics;
use wander_items::eval::Target;
use wander_items::model::SasRec;
use wander_items::model::SasRecConfig;
use wander_items::retrieve::Index;
use wander_items::retrieve::Retriever;
use wander_items::train::full_scores;
use wander_items::train::Loss;
use wander_items::train::TrainConfig;
use wander_items::Sequences;
use wander_items::SequencesBuilder;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::log;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

fn threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

fn model_config(ctx: &StageContext, vocab: usize) -> SasRecConfig {
    let c = &ctx.config.items;
    SasRecConfig {
        vocab,
        max_len: c.max_len,
        dim: c.dim,
        layers: c.layers,
        heads: c.heads,
        dropout: c.dropout,
    }
}

/// The configuration `wander train items` depends on.
pub(crate) fn train_items_slice(ctx: &StageContext) -> Value {
    let c = &ctx.config.items;
    let mut slice = json!({"items": {"max_len": c.max_len, "dim": c.dim, "layers": c.layers, "heads": c.heads, "dropout": c.dropout, "loss": c.loss, "negatives": c.negatives, "batch_size": c.batch_size, "lr": c.lr, "max_epochs": c.max_epochs, "patience": c.patience}, "seed": ctx.config.run.seed});
    // The caps only where set, so that models trained before they existed stay fresh.
    for (key, cap) in [
        ("users_per_epoch", c.users_per_epoch),
        ("valid_users", c.valid_users),
    ] {
        if cap > 0 {
            slice["items"][key] = json!(cap);
        }
    }
    slice
}

/// The configuration `wander eval items` depends on.
pub(crate) fn eval_items_slice(ctx: &StageContext) -> Value {
    let c = &ctx.config.items;
    let mut slice = json!({"index": c.index, "rerank": c.rerank, "seed": ctx.config.run.seed});
    if c.eval_users > 0 {
        slice["eval_users"] = json!(c.eval_users);
    }
    slice
}

/// Each user's leave-last-out sequence, streamed from the ingested log: only its ids and
/// splits are read, and 4 bytes a training event are held, not the whole log.
pub(crate) fn sequences(run: &RunDir) -> crate::Result<Sequences> {
    let ingest = open(run, StageId::Ingest)?;
    let size = wander_data::catalogue_size(ingest.reader())?;
    let mut builder = SequencesBuilder::new(size.users, size.items);
    let mut failed = None;
    wander_data::for_each_event(ingest.reader(), |e| {
        if failed.is_none() {
            failed = builder.push(e.user, e.item, e.loo_split).err();
        }
    })?;
    if let Some(err) = failed {
        let file = ingest.reader().path(wander_data::INTERACTIONS_FILE)?;
        return Err(err).context(file.display());
    }
    Ok(builder.finish())
}

/// Each item's positive engagements in the training period (the service's popularity), in
/// dataset order, streamed from the ingested log.
pub(crate) fn train_positives(run: &RunDir) -> crate::Result<Vec<u64>> {
    let ingest = open(run, StageId::Ingest)?;
    let items = wander_data::catalogue_size(ingest.reader())?.items;
    let mut positives = vec![0u64; items];
    wander_data::for_each_event(ingest.reader(), |e| {
        if e.split == wander_data::Split::Train && e.positive {
            positives[e.item as usize] += 1;
        }
    })?;
    Ok(positives)
}

/// `cap` when it is set and below `of`: the number a sample drew.
fn capped(cap: usize, of: usize) -> Option<usize> {
    (cap > 0 && cap < of).then_some(cap)
}

/// `wander train items`.
pub fn train_items(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let c = &ctx.config.items;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::TrainItems.inputs())?;
    let slice = train_items_slice(ctx);
    let checkpoints = run.root().join(".checkpoints/items");
    let outcome = run.run_stage(StageId::TrainItems.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let seqs = sequences(&run)?;
        // The users an epoch can visit: those with two training items.
        let trainable = seqs.train.iter().filter(|s| s.len() >= 2).count();
        let cfg = TrainConfig {
            max_epochs: c.max_epochs,
            patience: c.patience,
            batch_size: c.batch_size,
            lr: c.lr,
            loss: match c.loss { ItemLoss::Sampled => Loss::Sampled(c.negatives), ItemLoss::Full => Loss::Full },
            seed: ctx.config.run.seed,
            eval_threads: threads(c.eval_threads),
            users_per_epoch: c.users_per_epoch,
            valid_users: c.valid_users,
        };
        let bar = wander_core::progress::bar(c.max_epochs as u64, "items", "epochs");
        let (model, rep) = wander_items::train::train(&seqs, model_config(ctx, seqs.vocab), &cfg, Some(&checkpoints), |e| {
            bar.set_position(e.epoch as u64);
            bar.set_message(format!("loss {:.3} valid NDCG@10 {:.4} ({:.1} s/epoch)", e.loss, e.valid_ndcg10, e.train_seconds));
        })?;
        bar.finish_and_clear();
        if rep.resumed_from > 0 {
            log(format!("resumed after epoch {}", rep.resumed_from));
        }
        model.save(&ITEM_MODEL.path_in(w)?)?;
        w.write_json(train_report(StageId::TrainItems).file(), &rep.history())?;
        crate::common::remove_scratch(&checkpoints);
        let n = rep.epochs.len().max(1) as f64;
        crate::summaries::record(&crate::summaries::TrainItemsSummary {
            epochs: rep.epochs.len(),
            best_epoch: rep.best_epoch,
            best_valid_ndcg10: rep.best_valid_ndcg10,
            early_stopped: rep.early_stopped,
            seconds_per_epoch: rep.epochs.iter().map(|e| e.train_seconds).sum::<f64>() / n,
            eval_seconds_per_epoch: rep.epochs.iter().map(|e| e.eval_seconds).sum::<f64>() / n,
            final_loss: rep.epochs.last().map(|e| e.loss),
            resumed_from: rep.resumed_from,
            loss: c.loss,
            users_per_epoch: capped(c.users_per_epoch, trainable),
            valid_users: capped(c.valid_users, users_with(&seqs, Target::Valid).len()),
        })
    })
    .context("train items failed; earlier artifacts are unchanged and a rerun resumes after the last finished epoch")?;
    Ok(report(StageId::TrainItems, &outcome))
}

fn estimate(
    ranks_: &[usize],
    f: impl Fn(usize) -> f64,
    rounds: usize,
    seed: u64,
) -> wander_explore::metrics::Estimate {
    let v: Vec<f64> = ranks_.iter().map(|&r| f(r)).collect();
    bootstrap(&v, rounds, seed)
}

/// `wander eval items`.
pub fn eval_items(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let c = &ctx.config.items;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::EvalItems.inputs())?;
    let seed = ctx.config.run.seed;
    let slice = eval_items_slice(ctx);
    let stage_dir = run.stage_dir(StageId::EvalItems.folder());
    let outcome = run.run_stage(StageId::EvalItems.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let seqs = sequences(&run)?;
        let model = SasRec::load(&open(&run, StageId::TrainItems)?.path(ITEM_MODEL)?)?;
        let cpu = model.to_cpu()?;
        let th = threads(c.eval_threads);
        let test_users = users_with(&seqs, Target::Test);
        let all_test_users = test_users.len();
        let users = sample_users(test_users, c.eval_users, seed ^ 0xe7a1);
        let sampled = (users.len() < all_test_users).then_some(all_test_users);
        let t0 = std::time::Instant::now();
        let sas = ranks_of(&seqs, Target::Test, &users, |h| full_scores(&cpu, h), 64, th);
        let sas_seconds = t0.elapsed().as_secs_f64();
        let pop_scores = seqs.popularity();
        let pop = ranks_of(&seqs, Target::Test, &users, |_| pop_scores.clone(), 64, th);
        let rounds = 1000;
        let mut methods = std::collections::BTreeMap::new();
        let whom = match sampled {
            Some(all) => format!("{} test users, a seeded sample of {all} (`items.eval_users`)", sas.len()),
            None => format!("{} test users", sas.len()),
        };
        let mut md = format!(
            "# Item policy: offline evaluation\n\nProtocol: leave-last-out per user over all interactions (implicit feedback): the last item is the test target, the second-to-last validation (early stopping), the rest training. Full ranking over all {} catalogue items; the user's training and validation items are removed from the candidates; ties are broken by item id (lower first). {whom}. 95% percentile-bootstrap intervals over users ({rounds} resamples).\n\n| model | NDCG@10 | Recall@10 | MRR@10 |\n|---|---|---|---|\n",
            seqs.vocab - 1
        );
        for (name, r) in [("sasrec", &sas), ("popularity", &pop)] {
            let m = RankingMetrics::from_ranks(r.clone(), 10);
            let e = crate::summaries::RankingFigures {
                ndcg_at_10: estimate(r, |x| wander_items::eval::ndcg_at(x, 10), rounds, seed ^ 1),
                recall_at_10: estimate(r, |x| f64::from(u8::from(x <= 10)), rounds, seed ^ 2),
                mrr_at_10: estimate(r, |x| if x <= 10 { 1.0 / x as f64 } else { 0.0 }, rounds, seed ^ 3),
                users: m.users,
            };
            let cell = |e: &wander_explore::metrics::Estimate| format!("{:.4} [{:.4}, {:.4}]", e.mean, e.lo, e.hi);
            md.push_str(&format!("| {name} | {} | {} | {} |\n", cell(&e.ndcg_at_10), cell(&e.recall_at_10), cell(&e.mrr_at_10)));
            methods.insert(name.to_string(), e);
        }
        // Cluster-restricted retrieval: for each test user, the test item's planner cluster
        // plus one other; exact scan vs the quantized index, and per-request latency.
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let assign = tax.planner_assign();
        let n_clusters = tax.planner_clusters().len();
        let mut cluster_of = vec![u32::MAX; seqs.vocab];
        for (i, &cl) in assign.iter().enumerate() {
            cluster_of[i + 1] = cl;
        }
        let retriever = Retriever::new(cpu.item.clone(), cpu.cfg.dim, &cluster_of, n_clusters);
        let mut rng = wander_core::rng::Rng::new(seed);
        let (mut found, mut total, mut violations, mut hits_exact) = (0usize, 0usize, 0usize, 0usize);
        let mut latencies = Vec::new();
        for &u in &users {
            let mut history = seqs.train[u].clone();
            history.extend(seqs.valid[u]);
            let target = seqs.test[u].expect("filtered");
            let mut seen = history.clone();
            seen.sort_unstable();
            seen.dedup();
            seen.retain(|&i| i != target);
            let clusters = [cluster_of[target as usize], rng.below(n_clusters) as u32];
            let t = std::time::Instant::now();
            let uv = cpu.user_vector(&history);
            let exact = retriever.top_n(&uv, &clusters, &seen, 10, Index::Exact);
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            let approx = retriever.top_n(&uv, &clusters, &seen, 10, Index::Quantized { rerank: c.rerank });
            total += exact.len();
            found += exact.iter().filter(|h| approx.iter().any(|a| a.item == h.item)).count();
            hits_exact += usize::from(exact.iter().any(|h| h.item == target));
            violations += exact.iter().chain(&approx).filter(|h| !clusters.contains(&cluster_of[h.item as usize]) || seen.binary_search(&h.item).is_ok()).count();
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN);
        let retrieval = crate::summaries::RetrievalFigures {
            requests: users.len(),
            quantized_recall_at_10_vs_exact: found as f64 / total.max(1) as f64,
            restricted_hit_at_10: hits_exact as f64 / users.len().max(1) as f64,
            violations,
            latency_ms_mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
            latency_ms_p50: pct(0.5),
            latency_ms_p99: pct(0.99),
            index: c.index,
        };
        md.push_str(&format!(
            "\nCluster-restricted retrieval ({} requests: the test item's cluster plus one random cluster, top 10, seen items excluded): hit@10 of the test item {:.3}; quantized index recall@10 against the exact scan {:.3} (rerank {}); items outside the clusters or already seen: {}; latency per request (user vector from the history + exact scan) mean {:.3} ms, p99 {:.3} ms.\n\nFull ranking of {} took {:.2} s on {} threads.\n",
            users.len(), retrieval.restricted_hit_at_10, retrieval.quantized_recall_at_10_vs_exact, c.rerank, violations, retrieval.latency_ms_mean, pct(0.99), if sampled.is_some() { "the sampled users" } else { "all users" }, sas_seconds, th
        ));
        report_md(StageId::EvalItems).write(w, md.as_bytes())?;
        crate::summaries::record(&crate::summaries::EvalItemsSummary {
            users: sas.len(),
            sampled_from: sampled,
            methods,
            retrieval,
            ranking_seconds: sas_seconds,
            report: stage_dir.join("report.md"),
        })
    })
    .context("eval items failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::EvalItems, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_data::{Dataset, Interactions, Item, Split};

    /// A stored log of `users` users, written as `wander ingest` writes it.
    fn ingested(dir: &std::path::Path, users: u32) -> (RunDir, Dataset) {
        let splits = [Split::Train, Split::Train, Split::Valid, Split::Test];
        let mut it = Interactions::default();
        for u in 0..users {
            for k in 0..(u % 9 + 1) {
                it.user.push(u);
                it.item.push((u * 31 + k * 7) % 97);
                it.timestamp.push(i64::from(k));
                it.positive.push((u + k) % 3 != 0);
                it.split.push(splits[((u + k) % 4) as usize]);
                it.loo_split.push(splits[(k % 4) as usize]);
            }
        }
        let ds = Dataset {
            users: (0..users).map(|u| format!("u{u}")).collect(),
            items: (0..97)
                .map(|i| Item {
                    id: format!("i{i}"),
                    ..Item::default()
                })
                .collect(),
            feedback_columns: Vec::new(),
            interactions: it,
        };
        let run = RunDir::open(dir.join("run")).unwrap();
        let w = run.begin(StageId::Ingest.folder()).unwrap();
        wander_data::write_dataset(&w, &ds).unwrap();
        w.commit(json!({}), Default::default(), json!({})).unwrap();
        (run, ds)
    }

    #[test]
    fn streamed_sequences_and_positives_equal_the_loaded_log() {
        let dir = tempfile::tempdir().unwrap();
        let (run, ds) = ingested(dir.path(), 20_000);
        assert!(ds.interactions.len() > 65_536, "more than one record batch");
        assert_eq!(sequences(&run).unwrap(), Sequences::from_dataset(&ds));
        let it = &ds.interactions;
        let mut expected = vec![0u64; ds.items.len()];
        for k in 0..it.len() {
            if it.split[k] == Split::Train && it.positive[k] {
                expected[it.item[k] as usize] += 1;
            }
        }
        assert_eq!(train_positives(&run).unwrap(), expected);
    }
}
