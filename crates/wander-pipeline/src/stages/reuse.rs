//! What the precompute keeps of its models' work between runs (`precompute.reuse`): each
//! pair's proposal distribution and each candidate's alignment score, keyed by the
//! checksums of the models and settings that computed them and by the exact prompt
//! tokens. F1 refreshes the table several times a week with prompts that name recent next
//! clusters: only the pairs whose prompt changed need the novelty model again, and the
//! alignment model, whose prompt holds no retrieval, only scores candidates it has not
//! scored before.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use wander_core::store::KeyedVectors;
use wander_explore::planner::{CandidateScorer, PairPrompts};

use crate::StageId;

/// Store files of proposal distributions: one width (clusters + 1) per file.
const NOVELTY_MAGIC: [u8; 8] = *b"WPROPS01";
/// Store files of alignment scores: one value per entry.
const ALIGNMENT_MAGIC: [u8; 8] = *b"WALIGN01";
/// Stands for "no valid share" in a stored proposal distribution (shares are in [0, 1]).
const NO_VALID_SHARE: f64 = -1.0;

/// How much of one pass was reused: summed over chunks into the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ReuseCounts {
    /// Pairs whose proposal distribution came from the store.
    pub novelty_reused: usize,
    /// Pairs whose proposal distribution the novelty model computed.
    pub novelty_computed: usize,
    /// Candidates whose alignment score came from the store.
    pub alignment_reused: usize,
    /// Candidates the alignment model scored.
    pub alignment_computed: usize,
}

impl std::ops::AddAssign for ReuseCounts {
    fn add_assign(&mut self, o: Self) {
        self.novelty_reused += o.novelty_reused;
        self.novelty_computed += o.novelty_computed;
        self.alignment_reused += o.alignment_reused;
        self.alignment_computed += o.alignment_computed;
    }
}

/// The two stores of one precompute, or none with `precompute.reuse = false`.
pub(crate) struct ModelWork {
    novelty: Option<KeyedVectors<f64>>,
    alignment: Option<KeyedVectors<f64>>,
    /// Counts since the last [`ModelWork::take_counts`].
    counts: ReuseCounts,
}

/// The key of a prompt split where the scorer splits it: the same tokens cut elsewhere
/// run through another cached prefix.
fn prompt_key(prefix: &[u32], suffix: &[u32]) -> String {
    let bytes = |t: &[u32]| t.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    KeyedVectors::<f64>::key(&[&bytes(prefix), &bytes(suffix)])
}

/// The store file named by what decides its values besides the prompt: the precompute's
/// inputs (models, base weights, taxonomy) without those that only change prompts, and the
/// kernels that run them.
fn file_name(
    kind: &str,
    inputs: &BTreeMap<String, String>,
    other_model: StageId,
    settings: serde_json::Value,
) -> crate::Result<String> {
    let prompt_only = [
        format!("{}/manifest.json", StageId::Transitions.folder()),
        format!("{}/manifest.json", StageId::Refresh.folder()),
        format!("{}/manifest.json", other_model.folder()),
    ];
    let identity: BTreeMap<&String, &String> = inputs
        .iter()
        .filter(|(k, _)| !prompt_only.contains(k))
        .collect();
    let id = wander_core::hash::sha256_hex(
        serde_json::to_string(&json!({
            "format": 1,
            "inputs": identity,
            "settings": settings,
            // The same models give other digits on another Q8_0 kernel (this CPU's, or a
            // version of wander's): a store keeps only what this one computes.
            "kernels": wander_llm::q8::kernel_id(),
        }))?
        .as_bytes(),
    );
    Ok(format!("{kind}-{}.bin", &id[..16]))
}

/// A model must answer every input it was asked about: a short answer would shift every
/// later value onto the wrong pair or candidate.
fn one_each(what: &str, got: usize, of: &str, asked: usize) -> crate::Result<()> {
    if got != asked {
        crate::bail!("the model gave {got} {what} for {asked} {of}");
    }
    Ok(())
}

impl ModelWork {
    /// Opens the run's stores (`<run>/.work/precompute-store`) for these inputs and
    /// settings; `novelty` is false where a server proposes (it keeps its own cache), and
    /// `alignment` where the scorer's result for a prompt depends on the prompts beside it
    /// (the label written as text is scored in batches of equal-length prompts).
    /// `alignment_kernel` names the alignment model's exact products
    /// ([`wander_llm::model::Llama::exact_kernel_id`]).
    pub(crate) fn open(
        run_root: &Path,
        enabled: bool,
        (novelty, alignment): (bool, bool),
        inputs: &BTreeMap<String, String>,
        novelty_settings: serde_json::Value,
        alignment_kernel: &str,
    ) -> crate::Result<Self> {
        let dir = run_root.join(".work").join("precompute-store");
        let open = |kind: &str, other: StageId, settings: serde_json::Value, magic| {
            file_name(kind, inputs, other, settings)
                .map(|f| KeyedVectors::open(&dir.join(f), magic))
        };
        Ok(ModelWork {
            novelty: if enabled && novelty {
                Some(open(
                    "novelty",
                    StageId::TrainAlignment,
                    novelty_settings,
                    NOVELTY_MAGIC,
                )?)
            } else {
                None
            },
            alignment: if enabled && alignment {
                Some(open(
                    "alignment",
                    StageId::TrainNovelty,
                    // f32 names nothing, so that stores written before bf16 existed are read.
                    if alignment_kernel == "f32" {
                        json!({})
                    } else {
                        json!({ "products": alignment_kernel })
                    },
                    ALIGNMENT_MAGIC,
                )?)
            } else {
                None
            },
            counts: ReuseCounts::default(),
        })
    }

    /// Each pair's proposal distribution and valid share: from the store where the novelty
    /// model has seen this exact prompt, from `compute` (called once, on the rest) otherwise.
    pub(crate) fn proposals(
        &mut self,
        prompts: &PairPrompts,
        pairs: &[(u32, u32)],
        compute: impl FnOnce(&[(u32, u32)]) -> crate::Result<Vec<(Vec<f64>, Option<f64>)>>,
    ) -> crate::Result<Vec<(Vec<f64>, Option<f64>)>> {
        let Some(store) = &mut self.novelty else {
            self.counts.novelty_computed += pairs.len();
            return compute(pairs);
        };
        let keys: Vec<String> = pairs
            .iter()
            .map(|&(c1, c2)| Ok(prompt_key(&prompts.prefix, prompts.suffix(c1, c2)?)))
            .collect::<crate::Result<_>>()?;
        let mut out: Vec<Option<(Vec<f64>, Option<f64>)>> = keys
            .iter()
            .map(|k| {
                let v = store.get(k).filter(|v| v.len() >= 2)?;
                let (probs, share) = v.split_at(v.len() - 1);
                Some((
                    probs.to_vec(),
                    (share[0] != NO_VALID_SHARE).then_some(share[0]),
                ))
            })
            .collect();
        let missing: Vec<usize> = (0..pairs.len()).filter(|&i| out[i].is_none()).collect();
        self.counts.novelty_reused += pairs.len() - missing.len();
        self.counts.novelty_computed += missing.len();
        if !missing.is_empty() {
            let todo: Vec<(u32, u32)> = missing.iter().map(|&i| pairs[i]).collect();
            let computed = compute(&todo)?;
            one_each(
                "proposal distributions",
                computed.len(),
                "pairs",
                todo.len(),
            )?;
            for (&i, value) in missing.iter().zip(computed) {
                let mut stored = value.0.clone();
                stored.push(value.1.unwrap_or(NO_VALID_SHARE));
                store.insert(keys[i].clone(), stored)?;
                out[i] = Some(value);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The alignment score of each triple: from the store where the model has scored this
    /// exact prompt, from the scorer (one call, on the rest) otherwise.
    pub(crate) fn alignment_scores(
        &mut self,
        scorer: &CandidateScorer<'_>,
        triples: &[(u32, u32, u32)],
    ) -> crate::Result<Vec<f32>> {
        let Some(store) = &mut self.alignment else {
            self.counts.alignment_computed += triples.len();
            return Ok(scorer.scores(triples)?);
        };
        let keys: Vec<String> = triples
            .iter()
            .map(|&t| Ok(prompt_key(&[], &scorer.prompt(t)?)))
            .collect::<crate::Result<_>>()?;
        let mut out: Vec<Option<f32>> = keys
            .iter()
            .map(|k| store.get(k).map(|v| v[0] as f32))
            .collect();
        let missing: Vec<usize> = (0..triples.len()).filter(|&i| out[i].is_none()).collect();
        self.counts.alignment_reused += triples.len() - missing.len();
        self.counts.alignment_computed += missing.len();
        if !missing.is_empty() {
            let todo: Vec<(u32, u32, u32)> = missing.iter().map(|&i| triples[i]).collect();
            let scores = scorer.scores(&todo)?;
            one_each("alignment scores", scores.len(), "candidates", todo.len())?;
            for (&i, v) in missing.iter().zip(scores) {
                store.insert(keys[i].clone(), vec![v as f64])?;
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Writes what changed (after each chunk, so an interrupted run keeps its work).
    pub(crate) fn save(&mut self) -> crate::Result<()> {
        for store in [&mut self.novelty, &mut self.alignment]
            .into_iter()
            .flatten()
        {
            store.save()?;
        }
        Ok(())
    }

    /// The counts since the last call.
    pub(crate) fn take_counts(&mut self) -> ReuseCounts {
        std::mem::take(&mut self.counts)
    }
}
