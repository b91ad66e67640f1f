//! The novelty model's fine-tuning set: diverse and balanced (P1), with compact prompts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wander_core::rng::Rng;

use crate::transitions::PairCounts;

/// One supervised example: history pair and target cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairExample {
    /// Older history cluster.
    pub c1: u32,
    /// Recent history cluster.
    pub c2: u32,
    /// Target (novel) cluster.
    pub next: u32,
    /// How often the transition was observed in training.
    pub count: u32,
}

/// How the set is drawn.
#[derive(Debug, Clone)]
pub struct Diversify {
    /// Examples wanted.
    pub size: usize,
    /// Targets are sampled in proportion to `count^alpha` (alpha < 1 flattens popularity).
    pub alpha: f64,
    /// At most this many targets per history pair.
    pub max_per_pair: usize,
    /// At most this many examples per target cluster.
    pub max_per_target: usize,
}

/// Draws a deduplicated set: every observed `(c1, c2, next)` is a candidate with weight
/// `count^alpha`; candidates are ordered by weighted sampling without replacement
/// (Efraimidis and Spirakis, 2006: key `u^(1/w)`) and taken in that order while the caps
/// allow, until `size` examples.
pub fn diversified(counts: &PairCounts, cfg: &Diversify, seed: u64) -> Vec<PairExample> {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(f64, PairExample)> = Vec::new();
    for (&(c1, c2), targets) in counts {
        for (&next, &count) in targets {
            let w = (count as f64).powf(cfg.alpha);
            let u = rng.next_f64().max(f64::MIN_POSITIVE);
            keyed.push((
                u.ln() / w,
                PairExample {
                    c1,
                    c2,
                    next,
                    count,
                },
            ));
        }
    }
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut per_pair: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut per_target: BTreeMap<u32, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(cfg.size);
    for (_, e) in keyed {
        if out.len() >= cfg.size {
            break;
        }
        let p = per_pair.entry((e.c1, e.c2)).or_default();
        let t = per_target.entry(e.next).or_default();
        if *p < cfg.max_per_pair && *t < cfg.max_per_target {
            *p += 1;
            *t += 1;
            out.push(e);
        }
    }
    out
}

/// The system message of every novelty prompt.
pub const SYSTEM: &str = "You suggest a new interest. Answer with one interest from the catalogue.";

/// The user message for a history pair: the two descriptions, most recent last.
pub fn user_message(d1: &str, d2: &str) -> String {
    format!("Recent interests: {d1}; then {d2}. Next new interest?")
}

/// The user message of a retrieval-augmented prompt (F1): the history pair and the clusters
/// that most often came next after it, most frequent first. With nothing retrieved it is
/// [`user_message`].
pub fn retrieval_user_message(d1: &str, d2: &str, retrieved: &[&str]) -> String {
    if retrieved.is_empty() {
        return user_message(d1, d2);
    }
    format!(
        "Recent interests: {d1}; then {d2}. Often next: {}. Next new interest?",
        retrieved.join("; ")
    )
}

/// Each pair's `k` most frequent next clusters in `counts`, most frequent first (ties by
/// cluster id): what a retrieval-augmented prompt names.
pub fn retrieved_successors(counts: &PairCounts, k: usize) -> BTreeMap<(u32, u32), Vec<u32>> {
    counts
        .iter()
        .map(|(&pair, next)| {
            let mut v: Vec<(u32, u32)> = next
                .iter()
                .filter(|(&c, _)| c != pair.0 && c != pair.1)
                .map(|(&c, &n)| (c, n))
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            (pair, v.into_iter().take(k).map(|(c, _)| c).collect())
        })
        .collect()
}

/// One example as a chat-format JSON line (`{"messages": [...]}`).
pub fn chat_line(d1: &str, d2: &str, answer: &str) -> String {
    chat_line_for(&user_message(d1, d2), answer)
}

/// One example with a given user message (a retrieval-augmented one) as a chat-format JSON
/// line.
pub fn chat_line_for(user: &str, answer: &str) -> String {
    serde_json::json!({"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> PairCounts {
        let mut c = PairCounts::new();
        for p in 0..20u32 {
            let t = c.entry((p, p + 1)).or_default();
            t.insert(50, 100); // a very popular target
            t.insert(60 + p % 5, 2);
            t.insert(70 + p % 7, 1);
        }
        c
    }

    #[test]
    fn caps_hold_and_set_is_deduplicated_and_seeded() {
        let cfg = Diversify {
            size: 40,
            alpha: 0.5,
            max_per_pair: 2,
            max_per_target: 5,
        };
        let a = diversified(&counts(), &cfg, 1);
        assert_eq!(a, diversified(&counts(), &cfg, 1));
        assert!(
            a.iter().filter(|e| e.next == 50).count() <= 5,
            "popular target capped"
        );
        let mut per_pair = BTreeMap::new();
        for e in &a {
            *per_pair.entry((e.c1, e.c2)).or_insert(0) += 1;
        }
        assert!(per_pair.values().all(|&n| n <= 2));
        let mut seen = std::collections::HashSet::new();
        assert!(a.iter().all(|e| seen.insert((e.c1, e.c2, e.next))));
    }

    #[test]
    fn retrieval_names_the_most_frequent_successors_in_order() {
        let r = retrieved_successors(&counts(), 2);
        assert_eq!(r[&(3, 4)], vec![50, 63]);
        assert_eq!(
            retrieved_successors(&counts(), 9)[&(0, 1)],
            vec![50, 60, 70]
        );
        let m = retrieval_user_message("a", "b", &["x", "y"]);
        assert_eq!(
            m,
            "Recent interests: a; then b. Often next: x; y. Next new interest?"
        );
        assert_eq!(
            retrieval_user_message("a", "b", &[]),
            user_message("a", "b")
        );
    }

    #[test]
    fn chat_line_is_valid_json() {
        let v: serde_json::Value =
            serde_json::from_str(&chat_line("a, b", "c, d", "e, f")).unwrap();
        assert_eq!(v["messages"][2]["content"], "e, f");
    }
}
