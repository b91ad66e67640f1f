//! `wander eval backend`: the novelty model on the `[llm.openai]` server against the same
//! model in wander's runtime, on the same prompts: P2's proposal distribution (every
//! answer's probability renormalised, at temperature 1) compared by total variation
//! distance, and the greedy answers compared as text. What a user checks before trusting a
//! table made through a server (`llm.backend = "openai"`).
//!
//! wander's side is the novelty model in f32 (the GGUF's weights dequantised, the adapter
//! merged): one function, where the table's runtime mixes precisions for speed (Q8_0 with
//! 8-bit activations below 8 rows, f32 above), which no server reproduces.

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_explore::planner::NoveltyScorer;

use crate::artifacts::*;
use crate::common::model_and_inputs;
use crate::common::report;
use crate::llm::load_models;
use crate::llm::novelty_prompts;
use crate::log;
use crate::remote::RemoteNovelty;
use crate::summaries::BackendSummary;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The configuration `wander eval backend --pairs K` depends on.
pub(crate) fn eval_backend_slice(ctx: &StageContext, pairs: usize) -> Value {
    let o = &ctx.config.llm.openai;
    json!({"endpoint": o.endpoint, "model_name": o.model_name, "pairs": pairs, "seed": ctx.config.run.seed})
}

/// Total variation distance of two distributions over the same answers.
pub(crate) fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// `wander eval backend [--pairs K]`: `K` seeded history pairs, scored both ways. The server
/// is outside the run, so the stage always runs (its answers are cached on disk).
pub fn eval_backend(ctx: &StageContext, pairs: usize) -> crate::Result<Summary> {
    if pairs == 0 {
        crate::bail!("eval backend: --pairs must be at least 1");
    }
    let run = RunDir::open(&ctx.config.run.dir)?;
    let (q8, inputs) = model_and_inputs(ctx, &run, StageId::EvalBackend)?;
    let slice = eval_backend_slice(ctx, pairs);
    let stage_dir = run.stage_dir(StageId::EvalBackend.folder());
    let outcome = run.run_stage(StageId::EvalBackend.folder(), slice, inputs, true, |w| -> crate::Result<Value> {
        let models = load_models(ctx, &run, &q8, false)?;
        let mut g = wander_llm::gguf::GgufFile::open(&q8)?;
        let base = wander_llm::model::Llama::from_gguf(&mut g, false)?;
        let novelty = crate::llm::with_adapter_merged(ctx, &run, &base, NOVELTY_ADAPTER)?;
        drop(base);
        let m = models.descriptions.len() as u32;
        let mut all: Vec<(u32, u32)> = (0..m).flat_map(|a| (0..m).filter(move |&b| b != a).map(move |b| (a, b))).collect();
        wander_core::rng::Rng::new(ctx.config.run.seed).shuffle(&mut all);
        all.truncate(pairs);
        let chosen = all;
        log(format!("{} pairs, {} answers each, in wander's runtime and through {}", chosen.len(), m, ctx.config.llm.openai.endpoint));

        let started = std::time::Instant::now();
        let prompts = novelty_prompts(&models, &chosen)?;
        let scorer = NoveltyScorer::new(&novelty, &prompts, &models.answers)?;
        let local: Vec<(Vec<f64>, f64)> = chosen.iter().map(|&(a, b)| scorer.answer_probs(a, b, 1.0)).collect::<Result<_, _>>()?;
        let local_seconds = started.elapsed().as_secs_f64();

        let remote = RemoteNovelty::new(&ctx.config, &models.tok, &models.descriptions, &models.prompter)?;
        let bar = wander_core::progress::bar(chosen.len() as u64 * m as u64, "server", "answers");
        let started = std::time::Instant::now();
        let served = remote.answer_probs(&chosen, &|| bar.inc(1))?;
        let server_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();

        let tvd: Vec<f64> = local.iter().zip(&served).map(|(l, s)| total_variation(&l.0, &s.0)).collect();
        let top1 = local.iter().zip(&served).filter(|(l, s)| argmax(&l.0) == argmax(&s.0)).count();
        let mass_gap: Vec<f64> = local.iter().zip(&served).map(|(l, s)| (l.1 - s.1).abs()).collect();

        // Greedy answers, unconstrained: what each writes at temperature 0.
        let mut local_greedy = Vec::with_capacity(chosen.len());
        for &(a, b) in &chosen {
            let mut prompt = prompts.prefix.clone();
            prompt.extend_from_slice(prompts.suffix(a, b)?);
            let params = wander_llm::generate::SampleParams { n: 1, temperature: 0.0, top_p: 1.0, seed: 0, max_new_tokens: 48 };
            let (samples, _) = wander_llm::generate::sample(&novelty, &prompt, &params, None, models.tok.im_end)?;
            let tokens: Vec<u32> = samples[0].tokens.iter().copied().filter(|&t| t != models.tok.im_end).collect();
            local_greedy.push(models.tok.decode(&tokens)?);
        }
        let server_greedy = remote.greedy(&chosen)?;
        let same = local_greedy.iter().zip(&server_greedy).filter(|(l, s)| l.trim() == s.trim()).count();
        let valid_greedy = server_greedy.iter().filter(|s| remote.parse(s).is_some()).count();
        let stats = remote.client().stats();

        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
        let rows: Vec<Value> = chosen.iter().enumerate().map(|(i, &(a, b))| json!({"c1": a, "c2": b, "tvd": tvd[i], "valid_mass": {"wander": local[i].1, "server": served[i].1}, "greedy": {"wander": local_greedy[i], "server": server_greedy[i]}})).collect();
        w.write_json("pairs.json", &rows)?;
        let summary = BackendSummary {
            endpoint: ctx.config.llm.openai.endpoint.clone(),
            model_name: ctx.config.llm.openai.model_name.clone(),
            pairs: chosen.len(),
            answers: m as usize,
            tvd_mean: mean(&tvd),
            tvd_max: max(&tvd),
            top1_agreement: top1 as f64 / chosen.len() as f64,
            valid_mass_gap_mean: mean(&mass_gap),
            greedy_identical: same,
            greedy_valid_server: valid_greedy,
            wander_pairs_per_s: chosen.len() as f64 / local_seconds.max(1e-9),
            server_pairs_per_s: chosen.len() as f64 / server_seconds.max(1e-9),
            server_requests: stats.requests,
            server_cache_hits: stats.cache_hits,
            report: stage_dir.join("report.md"),
        };
        let examples: String = chosen.iter().enumerate().take(8).map(|(i, &(a, b))| format!("| ({a}, {b}) | {:.4} | {} | {} |\n", tvd[i], local_greedy[i].trim().replace('|', "/"), server_greedy[i].trim().replace('|', "/"))).collect();
        let md = format!(
            "# The novelty model through a server, against wander's runtime\n\nServer: `{}`, model `{}`. {} seeded history pairs of the run's {} clusters; for each, every cluster description's probability as the answer (the prompt plus the answer, scored whole; at temperature 1), renormalised over the descriptions: P2's proposal distribution, as `precompute.normalize = \"answer\"` computes it.\n\n| figure | value |\n|---|---|\n| total variation distance, mean | {:.4} |\n| total variation distance, max | {:.4} |\n| same most likely answer | {} of {} |\n| valid-answer mass, mean absolute gap | {:.4} |\n| greedy answers identical (temperature 0, unconstrained) | {} of {} |\n| server's greedy answers that are valid | {} of {} |\n| pairs/s, wander's runtime (exact answer scores) | {:.2} |\n| pairs/s, through the server ({} requests, {} from the cache) | {:.2} |\n\nThe server multiplies quantised weights with activations quantised to 8 bits (llama.cpp) where wander's runtime keeps them in f32, so small differences are expected; a different model or tokenizer shows as a large distance (or as a tokenizer error: every request's token count is checked).\n\n| pair | TVD | greedy, wander | greedy, server |\n|---|---|---|---|\n{examples}",
            summary.endpoint, summary.model_name, summary.pairs, m, summary.tvd_mean, summary.tvd_max, top1, summary.pairs, summary.valid_mass_gap_mean, same, summary.pairs, valid_greedy, summary.pairs, summary.wander_pairs_per_s, stats.requests, stats.cache_hits, summary.server_pairs_per_s,
        );
        report_md(StageId::EvalBackend).write(w, md.as_bytes())?;
        crate::summaries::record(&summary)
    })
    .context("eval backend failed")?;
    Ok(report(StageId::EvalBackend, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_variation_is_half_the_l1_distance() {
        assert_eq!(total_variation(&[0.5, 0.5, 0.0], &[0.5, 0.5, 0.0]), 0.0);
        assert!((total_variation(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((total_variation(&[0.6, 0.4], &[0.5, 0.5]) - 0.1).abs() < 1e-12);
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
    }
}
