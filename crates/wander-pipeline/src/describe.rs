//! One-line human summaries of the stages, printed on stderr.

use serde_json::Value;

use crate::summaries::*;
use crate::StageId;

/// One-line human summary of a stage.
pub fn describe(summary: &Value) -> String {
    let stage = summary["stage"].as_str().unwrap_or("stage");
    match stage {
        "ingest" => line::<IngestSummary>(StageId::Ingest, summary),
        "transitions" => line::<TransitionsSummary>(StageId::Transitions, summary),
        "train_novelty" => train_novelty_line(summary),
        "feedback" => line::<FeedbackSummary>(StageId::Feedback, summary),
        "train_alignment" => train_alignment_line(summary),
        "precompute" => line::<PrecomputeSummary>(StageId::Precompute, summary),
        "train_items" => line::<TrainItemsSummary>(StageId::TrainItems, summary),
        "bundle" => line::<BundleSummary>(StageId::Bundle, summary),
        "report" => line::<ReportSummary>(StageId::Report, summary),
        "taxonomy" => format!(
            "taxonomy: {} coarse / {} fine clusters, coherence {:.2} (random {:.2}), genre purity {:.2} (random {:.2}); report: {}",
            summary["coarse_clusters"], summary["fine_clusters"], summary["coherence_text"].as_f64().unwrap_or(0.0), summary["coherence_text_random"].as_f64().unwrap_or(0.0),
            summary["genre_purity"].as_f64().unwrap_or(0.0), summary["genre_purity_random"].as_f64().unwrap_or(0.0), summary["report"].as_str().unwrap_or("")
        ),
        "eval_novelty" => {
            let m = &summary["methods"];
            let f = |k: &str, x: &str| m[k][x]["mean"].as_f64().unwrap_or(f64::NAN);
            format!(
                "eval novelty on {} test events: hit@5 fine-tuned {:.3}, zero-shot {:.3}, co-occurrence {:.3}, random {:.3}; exact match {:.3}; report: {}",
                summary["events"], f("fine_tuned", "hit_at_5"), f("zero_shot", "hit_at_5"), f("cooccurrence", "hit_at_5"), f("random", "hit_at_5"),
                f("fine_tuned", "exact_match"), summary["report"].as_str().unwrap_or("")
            )
        }
        "eval_alignment" => {
            let m = &summary["methods"];
            let f = |k: &str| m[k]["spearman"]["mean"].as_f64().unwrap_or(f64::NAN);
            format!(
                "eval alignment on {} held-out triples: Spearman LLM {:.3}, cluster rate {:.3}, linear {:.3}. {}",
                summary["triples"], f("alignment_llm"), f("cluster_global_rate"), f("linear_embeddings"), summary["verdict"].as_str().unwrap_or("")
            )
        }
        "eval_scaling" => format!(
            "eval scaling on {} events: hit@1 gain {:+.3}, feedback gain {:+.4}, novelty above co-occurrence: {}; report: {}",
            summary["events"], summary["claim"]["hit_at_1_gain"].as_f64().unwrap_or(f64::NAN), summary["claim"]["feedback_gain"].as_f64().unwrap_or(f64::NAN),
            summary["claim"]["novelty_above_cooccurrence"], summary["report"].as_str().unwrap_or("")
        ),
        "eval_items" => format!(
            "eval items on {} users: NDCG@10 SASRec {:.4}, popularity {:.4}; restricted retrieval p99 {:.3} ms; report: {}",
            summary["users"], summary["methods"]["sasrec"]["ndcg_at_10"]["mean"].as_f64().unwrap_or(f64::NAN),
            summary["methods"]["popularity"]["ndcg_at_10"]["mean"].as_f64().unwrap_or(f64::NAN),
            summary["retrieval"]["latency_ms_p99"].as_f64().unwrap_or(f64::NAN), summary["report"].as_str().unwrap_or("")
        ),
        "aggregate" => format!(
            "aggregate on {}: {} events x {} queries in {:.1} s ({:.0} events/s), peak memory {:.0} MiB{}",
            summary["engine"].as_str().unwrap_or(""), summary["events"], summary["queries"].as_array().map_or(0, Vec::len),
            summary["seconds"].as_f64().unwrap_or(0.0), summary["events_per_second"].as_f64().unwrap_or(0.0),
            summary["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            if summary["matches_in_memory"] == true { "; identical to the in-memory miners" } else { "" }
        ),
        "eval" => {
            let st = &summary["strategies"];
            let names: Vec<String> = st.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let parts: Vec<String> = names.iter().map(|n| format!("{n} {:.3}", st[n]["hit_at_k"]["mean"].as_f64().unwrap_or(f64::NAN))).collect();
            format!("eval on {} events: hit@k {}; report: {}", summary["events"], parts.join(", "), summary["report"].as_str().unwrap_or(""))
        }
        "simulate" | "simulate_aa" => {
            let arms = summary["arms"].as_array().cloned().unwrap_or_default();
            let effects: Vec<String> = arms.iter().skip(1).filter_map(|a| a.as_str()).map(|a| {
                let e = &summary["effects"][a]["positive_rate"];
                format!("{a}: positive rate {:+.2}% [{:+.2}, {:+.2}]", e["relative_pct"].as_f64().unwrap_or(f64::NAN), e["lo"].as_f64().unwrap_or(f64::NAN), e["hi"].as_f64().unwrap_or(f64::NAN))
            }).collect();
            format!("{stage}: {} users x {} days x {} seeds in {:.1} s; vs {}: {}; report: {}", summary["users"], summary["days"], summary["seeds"], summary["seconds"].as_f64().unwrap_or(0.0), arms.first().and_then(|a| a.as_str()).unwrap_or(""), effects.join("; "), summary["report"].as_str().unwrap_or(""))
        }
        _ => summary.to_string(),
    }
}
