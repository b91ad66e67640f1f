//! `wander train novelty` and `wander eval novelty`: LoRA fine-tuning of the novelty model and
//! its offline evaluation against baselines.

use std::collections::BTreeMap;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::model_and_inputs;
use crate::common::model_q8;
use crate::common::report;
use crate::log;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// Tokenised novelty examples: ChatML prompt of the two descriptions (and, with retrieval,
/// the pair's most frequent next clusters), answer = the next cluster's description.
fn novelty_examples(
    tok: &wander_llm::tokenizer::Tokenizer,
    descriptions: &[String],
    prompter: &crate::llm::NoveltyPrompter,
    set: &[wander_explore::sft::PairExample],
) -> crate::Result<Vec<wander_llm::train::Example>> {
    set.iter()
        .map(|e| {
            Ok(wander_llm::train::Example {
                prompt: tok.chat_prompt(
                    wander_explore::sft::SYSTEM,
                    &prompter.user(e.c1, e.c2, descriptions)?,
                )?,
                answer: tok.answer(&descriptions[e.next as usize])?,
                label: 0.0,
                targets: Vec::new(),
                candidates: Vec::new(),
            })
        })
        .collect()
}

/// The LoRA schedule of `[novelty]`.
fn novelty_train_config(ctx: &StageContext) -> wander_llm::train::TrainConfig {
    let cfg = &ctx.config.novelty;
    crate::llm::lora_train_config(
        cfg.steps,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.lr,
        cfg.warmup_steps,
        cfg.eval_every,
        cfg.checkpoint_every,
        ctx.config.run.seed,
    )
}

/// The configuration `wander train novelty` depends on.
pub(crate) fn train_novelty_slice(ctx: &StageContext) -> Value {
    let mut slice = json!({"train": novelty_train_config(ctx), "lora": ctx.config.llm.lora});
    // Absent for plain prompts, so that runs from before the choice stay fresh; the
    // precompute and `eval novelty` read the shape from here.
    if ctx.config.novelty.prompt == wander_core::config::NoveltyPrompt::Retrieval {
        slice["prompt"] = json!({"shape": "retrieval", "k": ctx.config.novelty.retrieval_k});
    }
    slice
}

/// The configuration `wander eval novelty` depends on.
pub(crate) fn eval_novelty_slice(ctx: &StageContext) -> Value {
    let cfg = &ctx.config.novelty;
    json!({"eval_events": cfg.eval_events, "eval_samples": cfg.eval_samples, "bootstrap_rounds": cfg.bootstrap_rounds, "seed": ctx.config.run.seed})
}

/// The novelty adapter that `novelty.warm_start` names, checked against this run's base
/// model, LoRA shape and prompt shape, or `None` for a fresh adapter.
fn warm_start_adapter(
    ctx: &StageContext,
    base_model_sha256: &str,
) -> crate::Result<Option<std::path::PathBuf>> {
    let parent = crate::llm::warm_start_parent(
        "novelty.warm_start",
        &ctx.config.novelty.warm_start,
        StageId::TrainNovelty,
        &train_novelty_slice(ctx),
        &[
            ("lora", "[llm.lora] shape"),
            ("prompt", "prompt shape (novelty.prompt, retrieval_k)"),
        ],
        base_model_sha256,
    )?;
    parent.map(|stage| stage.path(NOVELTY_ADAPTER)).transpose()
}

/// `wander train novelty`.
pub fn train_novelty(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let (q8, mut inputs) = model_and_inputs(ctx, &run, StageId::TrainNovelty)?;
    let base_sum = inputs
        .get(&q8.display().to_string())
        .cloned()
        .unwrap_or_default();
    let warm = warm_start_adapter(ctx, &base_sum)?;
    if let Some(adapter) = &warm {
        // The parent's weights are an input like the base model's: a retrained parent makes
        // this model stale.
        inputs.insert(
            format!("warm_start:{}", adapter.display()),
            wander_core::hash::sha256_file(adapter)?,
        );
    }
    let train_cfg = novelty_train_config(ctx);
    let slice = train_novelty_slice(ctx);
    let checkpoints = run.root().join(".checkpoints/novelty");
    let outcome = run.run_stage(StageId::TrainNovelty.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let stage = open(&run, StageId::Transitions)?;
        let train_set: Vec<wander_explore::sft::PairExample> = stage.json(SFT_TRAIN)?;
        let eval_set: Vec<wander_explore::sft::PairExample> = stage.json(SFT_EVAL)?;
        let (tok, mut model, params) = crate::llm::trainable_model(ctx, &q8)?;
        if let Some(adapter) = &warm {
            model.load_lora(adapter)?;
            log(format!("warm start: the LoRA adapter starts from {}", adapter.display()));
        }
        let descriptions: Vec<String> = tax.planner_clusters().iter().map(|c| c.description.clone()).collect();
        let all: Vec<wander_explore::transitions::Transition> = stage.json(TRANSITIONS)?;
        let prompter = crate::llm::NoveltyPrompter::new(
            ctx.config.novelty.prompt,
            ctx.config.novelty.retrieval_k,
            &wander_explore::transitions::counts(&all, wander_data::Split::Train),
        );
        let train = novelty_examples(&tok, &descriptions, &prompter, &train_set)?;
        let eval = novelty_examples(&tok, &descriptions, &prompter, &eval_set)?;
        let mut trainer = wander_llm::train::Trainer::new(&model, wander_llm::train::Objective::Sft, params, train_cfg.clone(), tok.im_end, Some(&checkpoints))?;
        let report = crate::llm::run_trainer(&mut trainer, &train, &eval, train_cfg.steps, "train")?;
        model.save_lora(&NOVELTY_ADAPTER.path_in(w)?)?;
        w.write_json(train_report(StageId::TrainNovelty).file(), &report.history())?;
        crate::common::remove_scratch(&checkpoints);
        crate::summaries::record(&crate::summaries::TrainNoveltySummary {
            steps: report.steps,
            examples: train.len(),
            first_loss: report.losses.first().copied(),
            final_loss: report.losses.last().copied(),
            eval_losses: report.eval_losses.clone(),
            tokens_per_s: report.tokens_per_second(),
            resumed_from: report.resumed_from,
            adapter: NOVELTY_ADAPTER.file().into(),
            warm_start: warm.clone(),
        })
    })
    .context("train novelty failed; earlier artifacts are unchanged and a rerun resumes from the last checkpoint")?;
    Ok(report(StageId::TrainNovelty, &outcome))
}

/// Ranked top-k novel clusters per method for one history pair.
fn top_k(scores: &[(u32, f64)], k: usize) -> Vec<u32> {
    let mut v = scores.to_vec();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|(c, _)| c).collect()
}

/// `wander eval novelty`.
pub fn eval_novelty(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    use wander_explore::metrics::{bootstrap, hit_at, self_information};
    use wander_explore::transitions::{counts, Transition};
    let cfg = &ctx.config.novelty;
    let lora = &ctx.config.llm.lora;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let q8 = model_q8(ctx)?;
    let inputs = manifests(&run, StageId::EvalNovelty.inputs())?;
    let slice = eval_novelty_slice(ctx);
    let seed = ctx.config.run.seed;
    let stage_dir = run.stage_dir(StageId::EvalNovelty.folder());
    let outcome = run.run_stage(StageId::EvalNovelty.folder(), slice, inputs, force, |w| -> crate::Result<Value> {
        let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
        let clusters = tax.planner_clusters();
        let n = clusters.len() as u32;
        let all: Vec<Transition> = open(&run, StageId::Transitions)?.json(TRANSITIONS)?;
        let train = counts(&all, wander_data::Split::Train);
        let mut target_counts = vec![0u64; n as usize];
        for targets in train.values() {
            for (&t, &c) in targets {
                target_counts[t as usize] += c as u64;
            }
        }
        let mut events: Vec<Transition> = all.iter().copied().filter(|t| t.split == wander_data::Split::Test).collect();
        let mut rng = wander_core::rng::Rng::new(seed);
        rng.shuffle(&mut events);
        if cfg.eval_events > 0 {
            events.truncate(cfg.eval_events);
        }
        let mut pairs: Vec<(u32, u32)> = events.iter().map(|e| (e.c1, e.c2)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        log(format!("evaluating {} test events over {} distinct history pairs", events.len(), pairs.len()));

        // Language models: base (zero-shot) and fine-tuned (adapter merged).
        let mut g = wander_llm::gguf::GgufFile::open(&q8)?;
        let tok = crate::common::tokenizer(ctx, &g)?;
        let base = wander_llm::model::Llama::from_gguf(&mut g, true)?;
        let mut tuned = base.clone();
        tuned.attach_lora(&lora.targets, lora.rank, lora.alpha, 0.0, seed)?;
        tuned.load_lora(&open(&run, StageId::TrainNovelty)?.path(NOVELTY_ADAPTER)?)?;
        tuned.merge_lora()?;
        let device = crate::llm::device(ctx)?;
        let (base, tuned) = (base.to_device(&device)?, tuned.to_device(&device)?);
        let answers: Vec<Vec<u32>> = clusters.iter().map(|c| tok.answer(&c.description)).collect::<Result<_, _>>()?;
        let descriptions: Vec<String> = clusters.iter().map(|c| c.description.clone()).collect();
        // The prompt the fine-tuned model was trained with; the zero-shot model reads the same.
        let prompter = crate::llm::NoveltyPrompter::of_run(&run)?;
        let index = tax.index();
        // F1's refreshed retrieval, offline: the same model with prompts that name the
        // validation period's next clusters first, the most recent before the test period.
        let recent = prompter
            .retrieves()
            .then(|| prompter.retrieving_recent_first(&counts(&all, wander_data::Split::Valid)))
            .transpose()?;
        let mut methods = vec!["random", "popularity", "cooccurrence", "zero_shot", "fine_tuned"];
        if recent.is_some() {
            methods.push("fine_tuned_recent_retrieval");
        }
        let mut ranked: BTreeMap<(&str, (u32, u32)), Vec<u32>> = BTreeMap::new();
        let mut exact: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut valid: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut exact_greedy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut agreement: BTreeMap<(&str, (u32, u32)), f64> = BTreeMap::new();
        let bar = wander_core::progress::bar(pairs.len() as u64, "eval", "pairs");
        let format_pairs = pairs.len().min(100);
        for (pi, &(c1, c2)) in pairs.iter().enumerate() {
            let novel: Vec<u32> = (0..n).filter(|&c| c != c1 && c != c2).collect();
            let mut r = wander_core::rng::Rng::new(seed).fork(((c1 as u64) << 32) | c2 as u64);
            let mut shuffled = novel.clone();
            r.shuffle(&mut shuffled);
            ranked.insert(("random", (c1, c2)), shuffled.into_iter().take(5).collect());
            let pop: Vec<(u32, f64)> = novel.iter().map(|&c| (c, target_counts[c as usize] as f64)).collect();
            ranked.insert(("popularity", (c1, c2)), top_k(&pop, 5));
            let co = train.get(&(c1, c2));
            let cooc: Vec<(u32, f64)> = novel.iter().map(|&c| (c, co.and_then(|m| m.get(&c)).copied().unwrap_or(0) as f64 * 1e9 + target_counts[c as usize] as f64)).collect();
            ranked.insert(("cooccurrence", (c1, c2)), top_k(&cooc, 5));
            let prompt = tok.chat_prompt(wander_explore::sft::SYSTEM, &prompter.user(c1, c2, &descriptions)?)?;
            let cand: Vec<Vec<u32>> = novel.iter().map(|&c| answers[c as usize].clone()).collect();
            if let Some(recent) = &recent {
                let prompt = tok.chat_prompt(wander_explore::sft::SYSTEM, &recent.user(c1, c2, &descriptions)?)?;
                let s = wander_llm::generate::score_candidates(&tuned, &prompt, &cand)?;
                let scored: Vec<(u32, f64)> = novel.iter().copied().zip(s.constrained_logprob.iter().copied()).collect();
                ranked.insert(("fine_tuned_recent_retrieval", (c1, c2)), top_k(&scored, 5));
                agreement.insert(("fine_tuned_recent_retrieval", (c1, c2)), wander_explore::metrics::repeat_agreement(&s.constrained_logprob));
            }
            for (name, model) in [("zero_shot", &base), ("fine_tuned", &tuned)] {
                let s = wander_llm::generate::score_candidates(model, &prompt, &cand)?;
                let scored: Vec<(u32, f64)> = novel.iter().copied().zip(s.constrained_logprob.iter().copied()).collect();
                ranked.insert((name, (c1, c2)), top_k(&scored, 5));
                agreement.insert((name, (c1, c2)), wander_explore::metrics::repeat_agreement(&s.constrained_logprob));
                if pi < format_pairs && cfg.eval_samples > 0 {
                    let params = wander_llm::generate::SampleParams { n: cfg.eval_samples, temperature: 1.0, top_p: 1.0, seed: seed ^ pi as u64, max_new_tokens: 24 };
                    let (free, _) = wander_llm::generate::sample(model, &prompt, &params, None, tok.im_end)?;
                    for smp in free {
                        let text = tok.decode(smp.tokens.strip_suffix(&[tok.im_end]).unwrap_or(&smp.tokens))?;
                        exact.entry(name).or_default().push(f64::from(index.parse(&text).is_some()));
                    }
                    let greedy = wander_llm::generate::SampleParams { n: 1, temperature: 0.0, ..params.clone() };
                    let (g, _) = wander_llm::generate::sample(model, &prompt, &greedy, None, tok.im_end)?;
                    let text = tok.decode(g[0].tokens.strip_suffix(&[tok.im_end]).unwrap_or(&g[0].tokens))?;
                    exact_greedy.entry(name).or_default().push(f64::from(index.parse(&text).is_some()));
                    let trie = wander_llm::generate::Trie::new(&answers)?;
                    let (con, _) = wander_llm::generate::sample(model, &prompt, &params, Some(&trie), tok.im_end)?;
                    for smp in con {
                        valid.entry(name).or_default().push(f64::from(smp.answer.is_some()));
                    }
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let rounds = cfg.bootstrap_rounds;
        let mut out = std::collections::BTreeMap::new();
        let mut md = String::from("# Novelty model: offline evaluation\n\n");
        md.push_str(&format!(
            "Protocol: global temporal split (test = latest {:.0}% of interactions); transitions from positive engagement (`{}`), consecutive repeats removed; {} test events sampled with seed {} over {} distinct history pairs; every method ranks the {} clusters other than the two history clusters. Metrics are means over events with 95% percentile-bootstrap intervals ({} resamples). Exact match: {} unconstrained samples at temperature 1, and one greedy answer, for each of the first {} pairs.\n\n",
            100.0 * ctx.config.data.test_fraction, ctx.config.data.positive, events.len(), seed, pairs.len(), n - 2, rounds, cfg.eval_samples, format_pairs
        ));
        if prompter.retrieves() {
            md.push_str("The LLM methods' prompts are retrieval-augmented, as the fine-tuned model was trained: each names the pair's most frequent next clusters in the training transitions (`novelty.prompt = \"retrieval\"`), which co-occurrence ranks first too. `fine_tuned_recent_retrieval` is the same model with prompts that name the validation period's next clusters first (topped up from the training ones): F1's refresh of the retrieval with the most recent transitions before the test period.\n\n");
        }
        md.push_str("| method | hit@1 | hit@5 | novelty (bits) | out-of-loop | coverage | exact match (T = 1) | exact match (greedy) | constrained validity | repeat agreement |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for m in methods {
            let mut h1 = Vec::new();
            let mut h5 = Vec::new();
            let mut nov = Vec::new();
            let mut ool = Vec::new();
            let mut agree = Vec::new();
            for e in &events {
                agree.extend(agreement.get(&(m, (e.c1, e.c2))).copied());
                let r = &ranked[&(m, (e.c1, e.c2))];
                h1.push(hit_at(r, e.next, 1));
                h5.push(hit_at(r, e.next, 5));
                nov.push(r.iter().map(|&c| self_information(c, &target_counts)).sum::<f64>() / r.len().max(1) as f64);
                let seen = train.get(&(e.c1, e.c2));
                ool.push(r.iter().filter(|c| seen.is_none_or(|s| !s.contains_key(c))).count() as f64 / r.len().max(1) as f64);
            }
            let coverage: std::collections::BTreeSet<u32> = pairs.iter().filter_map(|p| ranked[&(m, *p)].first().copied()).collect();
            let est = |v: &[f64], k: u64| bootstrap(v, rounds, seed ^ k);
            let entry = crate::summaries::NoveltyFigures {
                hit_at_1: est(&h1, 1),
                hit_at_5: est(&h5, 2),
                novelty_bits: est(&nov, 3),
                out_of_loop: est(&ool, 4),
                coverage_top1_clusters: coverage.len(),
                exact_match: exact.get(m).map(|v| est(v, 5)),
                exact_match_greedy: exact_greedy.get(m).map(|v| est(v, 7)),
                constrained_validity: valid.get(m).map(|v| est(v, 6)),
                repeat_agreement: (!agree.is_empty()).then(|| est(&agree, 8)),
            };
            let cell = |e: Option<&wander_explore::metrics::Estimate>| match e {
                None => "n/a".to_string(),
                Some(e) => format!("{:.3} [{:.3}, {:.3}]", e.mean, e.lo, e.hi),
            };
            md.push_str(&format!("| {m} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", cell(Some(&entry.hit_at_1)), cell(Some(&entry.hit_at_5)), cell(Some(&entry.novelty_bits)), cell(Some(&entry.out_of_loop)), coverage.len(), cell(entry.exact_match.as_ref()), cell(entry.exact_match_greedy.as_ref()), cell(entry.constrained_validity.as_ref()), cell(entry.repeat_agreement.as_ref())));
            out.insert(m.to_string(), entry);
        }
        md.push_str("\nDefinitions: hit@k = share of events whose actual next cluster is in the method's top k; novelty = mean self-information -log2 p(c) of the top-5 clusters, p from training target frequencies (Zhou et al., PNAS 2010); out-of-loop = share of top-5 clusters that never followed that history pair in training; coverage = distinct clusters ranked first over all evaluated pairs; exact match = share of unconstrained samples that parse to a cluster description (the method's format compliance); constrained validity = the same for trie-constrained samples; repeat agreement = the probability that two constrained samples at temperature 1 for the event's pair name the same cluster, Σ p² of the model's exact distribution (F1 reports that repeated plain prompts agree 37.5% of the time on its platform).\n");
        report_md(StageId::EvalNovelty).write(w, md.as_bytes())?;
        let ranked_json: Vec<Value> = ranked.iter().map(|((m, (c1, c2)), r)| json!({"method": m, "c1": c1, "c2": c2, "top5": r})).collect();
        w.write_json("predictions.json", &ranked_json)?;
        crate::summaries::record(&crate::summaries::EvalNoveltySummary {
            events: events.len(),
            pairs: pairs.len(),
            methods: out,
            report: stage_dir.join("report.md"),
        })
    })
    .context("eval novelty failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::EvalNovelty, &outcome))
}
