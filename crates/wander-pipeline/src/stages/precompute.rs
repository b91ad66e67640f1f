//! `wander precompute`: the exploration table, best-of-n of the novelty model's proposals by
//! alignment score for every cluster pair; chunked, resumable and shardable.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::{
    AlignmentArch, LlmBackend, PairSet, ProposalMode, ProposalNormalize, RetrievalSource, ScoreSet,
};
use wander_explore::planner::AlignmentScorer;
use wander_explore::planner::NoveltyScorer;
use wander_explore::scaling;
use wander_explore::transitions::Transition;
use wander_table::Choice;
use wander_table::ExplorationTable;

use crate::artifacts::*;
use crate::common::model_and_inputs;
use crate::common::report;
use crate::llm::alignment_prompts;
use crate::llm::load_models;
use crate::llm::novelty_prompts;
use crate::log;
use crate::PipelineError;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// One pair's precomputed scores and choices.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairRecord {
    c1: u32,
    c2: u32,
    /// Novelty-model proposal probability of every cluster (0 for c1, c2).
    novelty: Vec<f32>,
    /// Alignment score of every cluster (`None` where `precompute.score = "proposals"`
    /// left it unscored; a scored value serialises as the bare number, as before).
    alignment: Vec<Option<f32>>,
    choices: Vec<Choice>,
    fallback: bool,
    /// With `precompute.normalize = "answer"`: the share of unconstrained samples that are a
    /// valid answer (absent otherwise, so token-mode chunks keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_share: Option<f64>,
    /// With the openai backend and `mode = "sample"`: completions drawn, and how many of
    /// them were not a valid answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drawn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invalid: Option<u32>,
    /// With a candidate-reading alignment model and `score = "proposals"`: every proposal
    /// drawn, in order (the table used the first `n`), so the evaluations measure best-of-n
    /// on scored proposals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    draws: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chunk {
    key: String,
    index: usize,
    seconds: f64,
    /// Of `seconds`, the time in the alignment model (absent in chunks written before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alignment_seconds: Option<f64>,
    /// How much of the models' work came from the run's store (absent in chunks written
    /// before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reuse: Option<crate::stages::reuse::ReuseCounts>,
    records: Vec<PairRecord>,
}

/// A `--shard i/N` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected i/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: shard index `{i}` is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: shard count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("`{s}`: need 0 <= i < N"));
        }
        Ok(Shard { index, count })
    }
}

fn precompute_pairs(ctx: &StageContext, run: &RunDir, n: u32) -> crate::Result<Vec<(u32, u32)>> {
    if ctx.config.precompute.pairs == PairSet::Traffic {
        let all: Vec<Transition> = open(run, StageId::Transitions)?.json(TRANSITIONS)?;
        return Ok(wander_explore::transitions::pairs_by_traffic(
            &all,
            wander_data::Split::Train,
            ctx.config.precompute.max_pairs,
        ));
    }
    if ctx.config.precompute.pairs == PairSet::Observed {
        let all: Vec<Transition> = open(run, StageId::Transitions)?.json(TRANSITIONS)?;
        let set: BTreeSet<(u32, u32)> = all
            .iter()
            .filter(|t| t.split == wander_data::Split::Train)
            .map(|t| (t.c1, t.c2))
            .collect();
        Ok(set.into_iter().collect())
    } else {
        Ok((0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect())
    }
}

/// The configuration `wander precompute` depends on.
pub(crate) fn precompute_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.precompute;
    let mut slice = json!({"scorer": "full-trie-v2", "precompute": {"pairs": cfg.pairs, "mode": cfg.mode, "n": cfg.n, "temperature": cfg.temperature, "top_k": cfg.top_k, "chunk_pairs": cfg.chunk_pairs}, "seed": ctx.config.run.seed});
    if cfg.pairs == PairSet::Traffic {
        // Only then, so that tables made before `max_pairs` existed stay fresh.
        slice["precompute"]["max_pairs"] = json!(cfg.max_pairs);
    }
    if cfg.normalize == ProposalNormalize::Answer {
        // Only then, so that tables made before `normalize` existed stay fresh.
        slice["precompute"]["normalize"] = json!(cfg.normalize);
    }
    if cfg.prior_weight < 1.0 {
        // Only then, so that tables ranked by the score alone stay fresh.
        slice["precompute"]["prior_weight"] = json!(cfg.prior_weight);
    }
    if cfg.retrieve_from != RetrievalSource::Training {
        // Only then, so that tables retrieving from the training period stay fresh.
        slice["precompute"]["retrieve_from"] = json!(cfg.retrieve_from);
    }
    if cfg.score == ScoreSet::Proposals {
        slice["precompute"]["score"] = json!(cfg.score);
        slice["precompute"]["draws"] = json!(proposal_draws(cfg));
    }
    crate::llm::add_alignment_products(ctx, &mut slice);
    let llm = &ctx.config.llm;
    if llm.backend == LlmBackend::OpenAi {
        // The server's weights are outside the run: its address and model name stand for them.
        slice["llm"] = json!({"backend": llm.backend, "endpoint": llm.openai.endpoint, "model_name": llm.openai.model_name});
    }
    slice
}

/// Proposals drawn per pair when only they are scored: enough for the largest n that
/// `wander eval scaling` compares, so it can take every n as a subset of them.
pub(crate) fn proposal_draws(cfg: &wander_core::config::PrecomputeConfig) -> usize {
    if cfg.draws > 0 {
        return cfg.draws;
    }
    cfg.scaling_n.iter().copied().max().unwrap_or(0).max(cfg.n)
}

/// `wander precompute [--shard i/N] [--merge]`.
pub fn precompute(
    ctx: &StageContext,
    force: bool,
    shard: Option<Shard>,
    merge_only: bool,
) -> crate::Result<Summary> {
    let cfg = &ctx.config.precompute;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let (q8, mut inputs) = model_and_inputs(ctx, &run, StageId::Precompute)?;
    if cfg.retrieve_from == RetrievalSource::Refresh {
        let folder = StageId::Refresh.folder();
        let sum = run.manifest_checksum(folder).context(
            "precompute.retrieve_from = \"refresh\" reads the newer window of `wander refresh`: run it first",
        )?;
        inputs.insert(format!("{folder}/manifest.json"), sum);
    }
    let slice = precompute_slice(ctx);
    let key = wander_core::hash::sha256_hex(
        serde_json::to_string(&json!({"slice": slice, "inputs": inputs}))?.as_bytes(),
    );
    let work = run
        .root()
        .join(".work")
        .join(format!("precompute-{}", &key[..16]));
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let chunk_path = |i: usize| work.join(format!("chunk-{i:05}.json"));
    let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
    let m = tax.planner_clusters().len() as u32;
    let pairs = precompute_pairs(ctx, &run, m)?;
    let chunks: Vec<&[(u32, u32)]> = pairs.chunks(cfg.chunk_pairs).collect();
    let done = |i: usize| -> bool {
        std::fs::read(chunk_path(i))
            .ok()
            .and_then(|b| serde_json::from_slice::<Chunk>(&b).ok())
            .is_some_and(|c| c.key == key && c.index == i)
    };
    let shard = shard.unwrap_or(Shard { index: 0, count: 1 });
    let server_use: std::cell::RefCell<Option<crate::summaries::ServerUse>> =
        std::cell::RefCell::new(None);
    if !merge_only {
        if shard.count == 1 && !force {
            if let wander_core::artifact::Freshness::Fresh(_) =
                run.freshness(StageId::Precompute.folder(), &slice, &inputs)
            {
                let outcome = run.run_stage(
                    StageId::Precompute.folder(),
                    slice,
                    inputs,
                    false,
                    |_| -> crate::Result<Value> { unreachable!("fresh") },
                )?;
                return Ok(report(StageId::Precompute, &outcome));
            }
        }
        let mine: Vec<usize> = (0..chunks.len())
            .filter(|i| i % shard.count == shard.index)
            .collect();
        let todo: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| force || !done(i))
            .collect();
        let todo_pairs: usize = todo.iter().map(|&i| chunks[i].len()).sum();
        log(format!(
            "precompute shard {}/{}: {} of {} pairs to do ({} chunks already done), {} mode, n = {}",
            shard.index, shard.count, todo_pairs, mine.iter().map(|&i| chunks[i].len()).sum::<usize>(), mine.len() - todo.len(), cfg.mode, cfg.n
        ));
        if !todo.is_empty() {
            let remote_backend = ctx.config.llm.backend == LlmBackend::OpenAi;
            // The server holds the novelty model; only the alignment model runs here.
            let mut models = load_models(ctx, &run, &q8, !remote_backend)?;
            // F1's refreshed table: the pair's next clusters in a recent window first.
            let recent_window = match cfg.retrieve_from {
                RetrievalSource::Training => None,
                RetrievalSource::Refresh => {
                    let newer: Vec<Transition> =
                        open(&run, StageId::Refresh)?.json(REFRESH_TRANSITIONS)?;
                    let mut recent = wander_explore::transitions::PairCounts::new();
                    for t in &newer {
                        *recent
                            .entry((t.c1, t.c2))
                            .or_default()
                            .entry(t.next)
                            .or_default() += 1;
                    }
                    Some(("the newer window of `wander refresh`", newer.len(), recent))
                }
                RetrievalSource::Validation => {
                    let all: Vec<Transition> =
                        open(&run, StageId::Transitions)?.json(TRANSITIONS)?;
                    let recent =
                        wander_explore::transitions::counts(&all, wander_data::Split::Valid);
                    let n = all
                        .iter()
                        .filter(|t| t.split == wander_data::Split::Valid)
                        .count();
                    Some(("the run's validation period", n, recent))
                }
            };
            if let Some((window, transitions, recent)) = recent_window {
                models.prompter = models.prompter.retrieving_recent_first(&recent)?;
                log(format!("retrieval prompts name the next clusters of {window} first ({transitions} transitions over {} pairs)", recent.len()));
            }
            let remote = if remote_backend {
                log(format!(
                    "novelty proposals from {} (model {}), {} requests in flight",
                    ctx.config.llm.openai.endpoint,
                    ctx.config.llm.openai.model_name,
                    ctx.config.llm.openai.concurrency
                ));
                Some(crate::remote::RemoteNovelty::new(
                    &ctx.config,
                    &models.tok,
                    &models.descriptions,
                    &models.prompter,
                )?)
            } else {
                None
            };
            let nprompts = novelty_prompts(&models, &pairs)?;
            let aprompts = alignment_prompts(&models, &pairs)?;
            let novelty = NoveltyScorer::new(&models.novelty, &nprompts, &models.answers)?;
            let arch = crate::stages::alignment::trained_arch(&run)?;
            // Only the per-cluster head has a head per cluster (a text-label model has none).
            let align = match arch {
                AlignmentArch::ClusterHead => Some(AlignmentScorer::new(
                    &models.alignment,
                    models.readout.head()?,
                    &aprompts,
                )?),
                AlignmentArch::Candidate => None,
            };
            // Only proposals get a score: draw enough of them for every n the evaluations
            // compare, and keep them.
            let keep_draws = align.is_none()
                && cfg.score == ScoreSet::Proposals
                && cfg.mode == ProposalMode::Exact;
            let n_draws = if keep_draws {
                proposal_draws(cfg)
            } else {
                cfg.n
            };
            let candidate_scorer = models.candidate_scorer()?;
            let prior_offsets: Option<&[f32]> = if cfg.prior_weight < 1.0 {
                Some(models.offsets.as_deref().ok_or_else(|| {
                    PipelineError::msg(format!(
                        "precompute.prior_weight = {} takes part of the candidate's global rate out of the alignment score, but this run's alignment model was not trained over that rate: retrain it with alignment.prior = \"offset\" (`wander train alignment --force`)",
                        cfg.prior_weight
                    ))
                })?)
            } else {
                None
            };
            let trie = wander_llm::generate::Trie::new(&models.answers)?;
            let mut work_store = crate::stages::reuse::ModelWork::open(
                run.root(),
                cfg.reuse,
                (
                    remote.is_none(),
                    matches!(models.readout, wander_llm::readout::Readout::Head(_)),
                ),
                &inputs,
                json!({"scorer": "full-trie-v2", "temperature": cfg.temperature, "normalize": cfg.normalize, "answers": wander_core::hash::sha256_hex(serde_json::to_string(&models.answers)?.as_bytes())}),
                models.alignment.exact_kernel_id(),
            )?;
            let bar = wander_core::progress::bar(todo_pairs as u64, "precompute", "pairs");
            // Through a server, the bar's message counts requests: pairs move a chunk at a time.
            let sent = std::sync::atomic::AtomicU64::new(0);
            let on_request = || {
                let k = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let secs = bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{k} requests, {:.1}/s", k as f64 / secs));
            };
            let started = std::time::Instant::now();
            let mut pass_reuse = crate::stages::reuse::ReuseCounts::default();
            for &ci in &todo {
                let t0 = std::time::Instant::now();
                let mut alignment_time = std::time::Duration::ZERO;
                // The per-cluster head scores every cluster of a pair in one pass; the
                // candidate-reading model scores each pair below, once its proposals are known.
                let head_scores: Option<Vec<Vec<f32>>> = match &align {
                    Some(per_cluster) => {
                        let t = std::time::Instant::now();
                        let s = per_cluster.scores(chunks[ci])?;
                        alignment_time += t.elapsed();
                        Some(s)
                    }
                    None => None,
                };
                let seed_of = |(c1, c2): (u32, u32)| {
                    wander_core::rng::Rng::new(ctx.config.run.seed)
                        .fork(((c1 as u64) << 32) | c2 as u64)
                };
                // With the server in sample mode: each pair's valid counts and draws.
                let mut sampled: Option<Vec<crate::remote::Sampled>> = None;
                let (all_probs, valid_shares): (Vec<Vec<f64>>, Vec<Option<f64>>) =
                    match (&remote, cfg.normalize) {
                        (Some(r), _) if cfg.mode == ProposalMode::Exact => r
                            .answer_probs(chunks[ci], &on_request)?
                            .into_iter()
                            .map(|(p, v)| (p, Some(v)))
                            .unzip(),
                        (Some(r), _) => {
                            let seeds: Vec<u64> =
                                chunks[ci].iter().map(|&p| seed_of(p).next_u64()).collect();
                            let s =
                                r.sample(chunks[ci], cfg.n, cfg.temperature, &seeds, &on_request)?;
                            // The empirical distribution of the valid completions.
                            let probs = s
                                .iter()
                                .map(|x| {
                                    let valid = x.valid().max(1) as f64;
                                    x.freq.iter().map(|&f| f as f64 / valid).collect()
                                })
                                .collect();
                            let shares = s
                                .iter()
                                .map(|x| Some(x.valid() as f64 / x.drawn.max(1) as f64))
                                .collect();
                            sampled = Some(s);
                            (probs, shares)
                        }
                        (None, normalize) => work_store
                            .proposals(&nprompts, chunks[ci], |todo| {
                                Ok(match normalize {
                                    ProposalNormalize::Token => novelty
                                        .probs_all(todo, cfg.temperature, 16)?
                                        .into_iter()
                                        .map(|p| (p, None))
                                        .collect(),
                                    ProposalNormalize::Answer => todo
                                        .iter()
                                        .map(|&(c1, c2)| {
                                            novelty
                                                .answer_probs(c1, c2, cfg.temperature)
                                                .map(|(p, v)| (p, Some(v)))
                                        })
                                        .collect::<Result<Vec<_>, _>>()?,
                                })
                            })?
                            .into_iter()
                            .unzip(),
                    };
                let mut records = Vec::with_capacity(chunks[ci].len());
                for (k, &(c1, c2)) in chunks[ci].iter().enumerate() {
                    let mut rng = seed_of((c1, c2));
                    // Proposals of the history clusters are not novel: dropped.
                    let mut draws: Option<Vec<u32>> = None;
                    let (probs, freq) = if let Some(s) = &sampled {
                        (all_probs[k].clone(), s[k].freq.clone())
                    } else if cfg.mode == ProposalMode::Sample {
                        let probs = all_probs[k].clone();
                        let mut prompt = nprompts.prefix.clone();
                        prompt.extend_from_slice(nprompts.suffix(c1, c2)?);
                        let params = wander_llm::generate::SampleParams {
                            n: cfg.n,
                            temperature: cfg.temperature,
                            top_p: 1.0,
                            seed: rng.next_u64(),
                            max_new_tokens: 32,
                        };
                        let (samples, _) = wander_llm::generate::sample(
                            &models.novelty,
                            &prompt,
                            &params,
                            Some(&trie),
                            models.tok.im_end,
                        )?;
                        let mut f = vec![0u32; m as usize];
                        for s in samples.iter().filter_map(|s| s.answer) {
                            f[s] += 1;
                        }
                        (probs, f)
                    } else {
                        let probs = all_probs[k].clone();
                        // `draw` is sequential: the first n of n_draws are the n it would draw.
                        let seq = scaling::draw(&probs, n_draws, &mut rng);
                        let f = scaling::frequencies(&seq[..cfg.n], m as usize);
                        if keep_draws {
                            draws = Some(seq.iter().map(|&c| c as u32).collect());
                        }
                        (probs, f)
                    };
                    let alignment: Vec<Option<f32>> = match &head_scores {
                        Some(all) => all[k].iter().copied().map(Some).collect(),
                        None => {
                            let novel = |c: &u32| *c != c1 && *c != c2;
                            let mut which: Vec<u32> = match cfg.score {
                                ScoreSet::All => (0..m).collect(),
                                ScoreSet::Proposals => {
                                    let drawn = match &draws {
                                        Some(d) => scaling::frequencies(
                                            &d.iter().map(|&c| c as usize).collect::<Vec<_>>(),
                                            m as usize,
                                        ),
                                        None => freq.clone(),
                                    };
                                    (0..m)
                                        .filter(|&c| drawn[c as usize] > 0)
                                        .filter(novel)
                                        .collect()
                                }
                            };
                            if !(0..m).any(|c| freq[c as usize] > 0 && novel(&c)) {
                                // The table's n proposals hold nothing novel: its fallback
                                // ranks every novel cluster, so all of them need a score.
                                which = (0..m).filter(novel).collect();
                            }
                            let triples: Vec<(u32, u32, u32)> =
                                which.iter().map(|&c| (c1, c2, c)).collect();
                            let mut out = vec![None; m as usize];
                            let t = std::time::Instant::now();
                            let scores =
                                work_store.alignment_scores(&candidate_scorer, &triples)?;
                            alignment_time += t.elapsed();
                            for (&c, v) in which.iter().zip(scores) {
                                out[c as usize] = Some(v);
                            }
                            out
                        }
                    };
                    // What the table ranks by: the score, less the share of the candidate's
                    // global rate that `precompute.prior_weight` takes out (the scores file
                    // holds the same, so every evaluation reads the table's ranking).
                    let alignment: Vec<Option<f32>> = match prior_offsets {
                        Some(o) => alignment
                            .iter()
                            .zip(o)
                            .map(|(v, o)| v.map(|v| v - (1.0 - cfg.prior_weight as f32) * o))
                            .collect(),
                        None => alignment,
                    };
                    // Unscored clusters are neither proposed nor, in a fallback, novel: never chosen.
                    let dense: Vec<f32> = alignment.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                    let choice =
                        scaling::choose_best_of_n((c1, c2), freq, &probs, &dense, cfg.top_k);
                    let (choices, fallback) = (choice.choices, choice.fallback);
                    if let Some(bad) = choices.iter().find(|c| !c.alignment.is_finite()) {
                        bail!(
                            "pair ({c1}, {c2}): the table would keep cluster {} with alignment score {} (a cluster left unscored was chosen)",
                            bad.cluster,
                            bad.alignment
                        );
                    }
                    records.push(PairRecord {
                        c1,
                        c2,
                        novelty: probs.iter().map(|&p| p as f32).collect(),
                        alignment,
                        choices,
                        fallback,
                        valid_share: valid_shares[k],
                        drawn: sampled.as_ref().map(|s| s[k].drawn),
                        invalid: sampled.as_ref().map(|s| s[k].drawn - s[k].valid()),
                        draws,
                    });
                    bar.inc(1);
                }
                let counts = work_store.take_counts();
                pass_reuse += counts;
                let chunk = Chunk {
                    key: key.clone(),
                    index: ci,
                    seconds: t0.elapsed().as_secs_f64(),
                    alignment_seconds: Some(alignment_time.as_secs_f64()),
                    reuse: Some(counts),
                    records,
                };
                // The store first: a chunk on disk never points at work the store lost.
                work_store.save()?;
                wander_core::artifact::atomic_write(&chunk_path(ci), &serde_json::to_vec(&chunk)?)?;
            }
            bar.finish_and_clear();
            if let Some(r) = &remote {
                let st = r.client().stats();
                *server_use.borrow_mut() = Some(crate::summaries::ServerUse {
                    endpoint: ctx.config.llm.openai.endpoint.clone(),
                    model_name: ctx.config.llm.openai.model_name.clone(),
                    requests: st.requests,
                    cache_hits: st.cache_hits,
                    retries: st.retries,
                    invalid: None,
                    sampled: None,
                });
                log(format!(
                    "server: {} requests ({} from the cache, {} retried), {:.0} s waiting",
                    st.requests, st.cache_hits, st.retries, st.server_seconds
                ));
            }
            log(format!(
                "{} pairs in {:.0} s ({:.2} pairs/s)",
                todo_pairs,
                started.elapsed().as_secs_f64(),
                todo_pairs as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
            if cfg.reuse {
                let r = pass_reuse;
                log(format!(
                    "from the run's store: proposals of {} of {} pairs, {} of {} alignment scores (the same models on the same prompts)",
                    r.novelty_reused,
                    r.novelty_reused + r.novelty_computed,
                    r.alignment_reused,
                    r.alignment_reused + r.alignment_computed
                ));
            }
        }
        if shard.count > 1 {
            let missing: Vec<usize> = (0..chunks.len()).filter(|&i| !done(i)).collect();
            return Ok(Summary::new(
                StageId::Precompute,
                json!({"stage": "precompute", "shard": format!("{}/{}", shard.index, shard.count), "pairs_done": todo_pairs, "chunks_missing_overall": missing.len(), "work_dir": work, "next": if missing.is_empty() { "all shards done: run `wander precompute --merge`" } else { "wait for the other shards, then run `wander precompute --merge`" }}),
            ));
        }
    }
    let outcome = run.run_stage(StageId::Precompute.folder(), slice, inputs, true, |w| -> crate::Result<Value> {
        let missing: Vec<usize> = (0..chunks.len()).filter(|&i| !done(i)).collect();
        // A chunk that is there but does not parse is damaged, not pending: say which.
        if let Some(&i) = missing.iter().find(|&&i| chunk_path(i).exists()) {
            let parsed = std::fs::read(chunk_path(i))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Chunk>(&b).map(|_| ()).map_err(|e| e.to_string()));
            if let Err(e) = parsed {
                bail!("{}: cannot be read ({e}); `wander precompute` (without --merge) computes that chunk again", chunk_path(i).display());
            }
        }
        if !missing.is_empty() {
            bail!("{} of {} chunks are not computed yet (first missing: chunk {} in {}); run the missing shards (chunk i belongs to shard i mod N) or `wander precompute` without --shard", missing.len(), chunks.len(), missing[0], work.display());
        }
        let mut table = ExplorationTable::new(m, cfg.top_k as u32);
        let mut seconds = 0.0;
        // None once any chunk predates the split.
        let mut alignment_seconds = Some(0.0);
        // None once any chunk predates the store.
        let mut reuse = Some(crate::stages::reuse::ReuseCounts::default());
        let (mut sc1, mut sc2, mut scl, mut snov, mut sal) = (vec![], vec![], vec![], vec![], vec![]);
        let mut fallbacks = 0;
        let mut valid_shares = Vec::new();
        let (mut drawn, mut invalid) = (None::<u64>, None::<u64>);
        let mut scored = 0usize;
        let mut pair_draws: Vec<scaling::PairDraws> = Vec::new();
        for i in 0..chunks.len() {
            let c: Chunk = serde_json::from_slice(&std::fs::read(chunk_path(i))?)?;
            seconds += c.seconds;
            alignment_seconds = alignment_seconds.zip(c.alignment_seconds).map(|(a, b)| a + b);
            reuse = reuse.zip(c.reuse).map(|(mut a, b)| {
                a += b;
                a
            });
            for r in c.records {
                fallbacks += usize::from(r.fallback);
                valid_shares.extend(r.valid_share);
                if let (Some(d), Some(i)) = (r.drawn, r.invalid) {
                    *drawn.get_or_insert(0) += d as u64;
                    *invalid.get_or_insert(0) += i as u64;
                }
                if let Some(draws) = r.draws {
                    pair_draws.push(scaling::PairDraws { c1: r.c1, c2: r.c2, draws });
                }
                table.set(r.c1, r.c2, r.choices).map_err(PipelineError::msg)?;
                for c in 0..m {
                    sc1.push(r.c1);
                    sc2.push(r.c2);
                    scl.push(c);
                    snov.push(r.novelty[c as usize]);
                    sal.push(r.alignment[c as usize].unwrap_or(f32::NAN));
                    scored += usize::from(r.alignment[c as usize].is_some());
                }
            }
        }
        TABLE.write(w, &table.to_bytes())?;
        table.write_parquet(&TABLE_PARQUET.path_in(w)?)?;
        write_scores(&SCORES.path_in(w)?, sc1, sc2, scl, snov, sal)?;
        if !pair_draws.is_empty() {
            DRAWS.write(w, &pair_draws)?;
        }
        let models: BTreeMap<String, String> = [StageId::TrainNovelty, StageId::TrainAlignment].iter().map(|&s| Ok((s.folder().to_string(), open(&run, s)?.manifest().outputs.iter().map(|(k, v)| format!("{k}:{}", v.sha256)).collect::<Vec<_>>().join(",")))).collect::<crate::Result<_>>()?;
        crate::common::remove_scratch(&work);
        let answer = cfg.normalize == ProposalNormalize::Answer;
        let remote_backend = ctx.config.llm.backend == LlmBackend::OpenAi;
        let server = remote_backend.then(|| {
            let mut s = server_use.borrow_mut().take().unwrap_or(crate::summaries::ServerUse {
                endpoint: ctx.config.llm.openai.endpoint.clone(),
                model_name: ctx.config.llm.openai.model_name.clone(),
                requests: 0,
                cache_hits: 0,
                retries: 0,
                invalid: None,
                sampled: None,
            });
            s.invalid = invalid;
            s.sampled = drawn;
            s
        });
        crate::summaries::record(&crate::summaries::PrecomputeSummary {
            pairs: table.pairs(),
            clusters: m as usize,
            mode: cfg.mode,
            n: cfg.n,
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            fallbacks,
            compute_seconds: seconds,
            alignment_seconds,
            pairs_per_s: table.pairs() as f64 / seconds.max(1e-9),
            model_checksums: models,
            table: TABLE.file().into(),
            normalize: answer.then_some(cfg.normalize),
            // P2's "unconstrained validity": how often sampling at this temperature writes a
            // valid cluster description at all.
            prior_weight: (cfg.prior_weight < 1.0).then_some(cfg.prior_weight),
            valid_share_mean: answer.then(|| valid_shares.iter().sum::<f64>() / valid_shares.len().max(1) as f64),
            score: (cfg.score == ScoreSet::Proposals).then_some(cfg.score),
            scored_per_pair: (cfg.score == ScoreSet::Proposals).then(|| scored as f64 / table.pairs().max(1) as f64),
            server,
            reuse,
        })
    })
    .context("precompute failed; computed chunks are kept and a rerun continues from them")?;
    Ok(report(StageId::Precompute, &outcome))
}

/// Writes `scores.parquet` ([`crate::artifacts::SCORES`]): one row per (pair, cluster) with
/// the novelty model's probability and the alignment score, the columns `c1`, `c2`,
/// `cluster`, `novelty_prob`, `alignment_score` (the evaluation stages and the simulator
/// read it).
pub fn write_scores(
    path: &Path,
    c1: Vec<u32>,
    c2: Vec<u32>,
    cl: Vec<u32>,
    nov: Vec<f32>,
    al: Vec<f32>,
) -> crate::Result<()> {
    use arrow_array::{ArrayRef, Float32Array, RecordBatch, UInt32Array};
    use std::sync::Arc;
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("c1", Arc::new(UInt32Array::from(c1))),
        ("c2", Arc::new(UInt32Array::from(c2))),
        ("cluster", Arc::new(UInt32Array::from(cl))),
        ("novelty_prob", Arc::new(Float32Array::from(nov))),
        ("alignment_score", Arc::new(Float32Array::from(al))),
    ];
    let batch = RecordBatch::try_from_iter(cols)?;
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Per pair: (novelty probabilities, alignment scores), read from `scores.parquet`.
pub fn read_scores(
    path: &Path,
    m: usize,
) -> crate::Result<BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, UInt32Type};
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out: BTreeMap<(u32, u32), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("{}: no column `{name}`", path.display()))
        };
        let c1 = col("c1")?.as_primitive::<UInt32Type>().clone();
        let c2 = col("c2")?.as_primitive::<UInt32Type>().clone();
        let cl = col("cluster")?.as_primitive::<UInt32Type>().clone();
        let nov = col("novelty_prob")?.as_primitive::<Float32Type>().clone();
        let al = col("alignment_score")?
            .as_primitive::<Float32Type>()
            .clone();
        for i in 0..batch.num_rows() {
            let e = out
                .entry((c1.value(i), c2.value(i)))
                .or_insert_with(|| (vec![0.0; m], vec![f64::NEG_INFINITY; m]));
            let c = cl.value(i) as usize;
            if c >= m {
                bail!("{}: row {i}: cluster {c} outside {m}", path.display());
            }
            e.0[c] = nov.value(i) as f64;
            e.1[c] = al.value(i) as f64;
        }
    }
    Ok(out)
}
