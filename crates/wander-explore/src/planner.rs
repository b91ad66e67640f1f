//! The two LLMs at inference time over history pairs: the novelty model's exact proposal
//! distribution and the alignment model's scores of every candidate (from a per-cluster
//! head, or by reading each candidate's description).
//!
//! Every pair's prompt starts with the same tokens (system message and template); that
//! shared prefix runs once and each pair runs only its own suffix.

use std::collections::HashMap;

use candle_core::Tensor;
use wander_llm::generate::{
    expected_labels_after, extend_cache, last_hidden_after, prefix_cache, score_candidates_after,
    score_candidates_batch,
};
use wander_llm::model::{KvCache, Llama, ScoreHead};
use wander_llm::readout::Readout;
use wander_llm::tokenizer::Tokenizer;

use crate::{ExploreError, Result};

/// Tokenised prompts of history pairs, split into the prefix they all share and each
/// pair's suffix.
#[derive(Debug, Clone)]
pub struct PairPrompts {
    /// Tokens every prompt starts with.
    pub prefix: Vec<u32>,
    suffix: HashMap<(u32, u32), Vec<u32>>,
}

impl PairPrompts {
    /// Prompts `system` + `user(d1, d2)` for every pair in `pairs`. The split point is the
    /// longest common token prefix, less one token so that no suffix is empty.
    pub fn new(
        tok: &Tokenizer,
        system: &str,
        user: impl Fn(&str, &str) -> String,
        descriptions: &[String],
        pairs: &[(u32, u32)],
    ) -> Result<Self> {
        let d = |c: u32| {
            descriptions
                .get(c as usize)
                .map(String::as_str)
                .ok_or_else(|| ExploreError::Invalid(format!("cluster {c} has no description")))
        };
        Self::from_users(tok, system, pairs, |a, b| Ok(user(d(a)?, d(b)?)))
    }

    /// Prompts `system` + `user(c1, c2)` for every pair in `pairs`, for prompts that say more
    /// about a pair than its two descriptions (a retrieval-augmented one); split as in
    /// [`PairPrompts::new`].
    pub fn from_users(
        tok: &Tokenizer,
        system: &str,
        pairs: &[(u32, u32)],
        user: impl Fn(u32, u32) -> Result<String>,
    ) -> Result<Self> {
        let full: Vec<((u32, u32), Vec<u32>)> = pairs
            .iter()
            .map(|&(a, b)| Ok(((a, b), tok.chat_prompt(system, &user(a, b)?)?)))
            .collect::<Result<_>>()?;
        let Some(first) = full.first() else {
            return Ok(PairPrompts {
                prefix: Vec::new(),
                suffix: HashMap::new(),
            });
        };
        let mut common = first.1.len().saturating_sub(1);
        for (_, p) in &full {
            let same = first.1.iter().zip(p).take_while(|(x, y)| x == y).count();
            common = common.min(same).min(p.len().saturating_sub(1));
        }
        let prefix = first.1[..common].to_vec();
        let suffix = full
            .into_iter()
            .map(|(k, p)| (k, p[common..].to_vec()))
            .collect();
        Ok(PairPrompts { prefix, suffix })
    }

    /// The suffix of a pair's prompt.
    pub fn suffix(&self, c1: u32, c2: u32) -> Result<&[u32]> {
        self.suffix
            .get(&(c1, c2))
            .map(Vec::as_slice)
            .ok_or_else(|| ExploreError::Invalid(format!("no prompt for the pair ({c1}, {c2})")))
    }
}

/// The novelty model with its answers: exact proposal probabilities per pair.
pub struct NoveltyScorer<'a> {
    model: &'a Llama,
    prompts: &'a PairPrompts,
    cache: KvCache,
    answers: &'a [Vec<u32>],
}

impl<'a> NoveltyScorer<'a> {
    /// Runs the shared prefix once. `answers[c]` is cluster c's description as answer tokens.
    pub fn new(
        model: &'a Llama,
        prompts: &'a PairPrompts,
        answers: &'a [Vec<u32>],
    ) -> Result<Self> {
        Ok(NoveltyScorer {
            model,
            prompts,
            cache: prefix_cache(model, &prompts.prefix)?,
            answers,
        })
    }

    /// P2's proposal distribution after `(c1, c2)`: each answer's unconstrained probability
    /// at `temperature` (sample, drop what is not a valid answer), renormalised over every
    /// answer (the history clusters included, as in [`NoveltyScorer::probs_all`]); and the
    /// share of unconstrained samples that would be a valid answer at all.
    pub fn answer_probs(&self, c1: u32, c2: u32, temperature: f64) -> Result<(Vec<f64>, f64)> {
        let logp = wander_llm::generate::answer_logprobs(
            self.model,
            &self.cache,
            self.prompts.suffix(c1, c2)?,
            self.answers,
            temperature,
        )?;
        let max = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logp.iter().map(|l| (l - max).exp()).sum();
        let valid_share = (max + sum.ln()).exp();
        Ok((
            logp.iter().map(|l| (l - max).exp() / sum).collect(),
            valid_share,
        ))
    }

    /// Probability of each cluster being proposed after `(c1, c2)` by the constrained
    /// sampler at `temperature`, over the clusters other than c1 and c2 (those get 0).
    pub fn probs(&self, c1: u32, c2: u32, temperature: f64) -> Result<Vec<f64>> {
        let novel: Vec<usize> = (0..self.answers.len())
            .filter(|&c| c != c1 as usize && c != c2 as usize)
            .collect();
        let cand: Vec<Vec<u32>> = novel.iter().map(|&c| self.answers[c].clone()).collect();
        let s = score_candidates_after(
            self.model,
            &self.cache,
            self.prompts.suffix(c1, c2)?,
            &cand,
            temperature,
        )?;
        let mut out = vec![0.0; self.answers.len()];
        for (&c, lp) in novel.iter().zip(&s.constrained_logprob) {
            out[c] = lp.exp();
        }
        Ok(out)
    }
}

impl NoveltyScorer<'_> {
    /// Probability of every cluster (the history clusters included: the sampler's trie holds
    /// every description, and proposals of c1 or c2 are dropped afterwards) for each pair.
    /// Pairs whose suffixes have the same length run as one batch (at most `batch` prompts).
    pub fn probs_all(
        &self,
        pairs: &[(u32, u32)],
        temperature: f64,
        batch: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::new(); pairs.len()];
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> =
            std::collections::BTreeMap::new();
        for (i, &(a, b)) in pairs.iter().enumerate() {
            by_len
                .entry(self.prompts.suffix(a, b)?.len())
                .or_default()
                .push(i);
        }
        for group in by_len.values() {
            for chunk in group.chunks(batch.max(1)) {
                let suffixes: Vec<Vec<u32>> = chunk
                    .iter()
                    .map(|&i| {
                        self.prompts
                            .suffix(pairs[i].0, pairs[i].1)
                            .map(<[u32]>::to_vec)
                    })
                    .collect::<Result<_>>()?;
                let scores = score_candidates_batch(
                    self.model,
                    &self.cache,
                    &suffixes,
                    self.answers,
                    temperature,
                )?;
                for (&i, row) in chunk.iter().zip(scores) {
                    out[i] = row.into_iter().map(f64::exp).collect();
                }
            }
        }
        Ok(out)
    }
}

/// The alignment model: a (LoRA-merged) LLM reading the history pair and a head with one
/// output per candidate cluster.
pub struct AlignmentScorer<'a> {
    model: &'a Llama,
    head: &'a ScoreHead,
    prompts: &'a PairPrompts,
    cache: KvCache,
}

impl<'a> AlignmentScorer<'a> {
    /// Runs the shared prefix once.
    pub fn new(model: &'a Llama, head: &'a ScoreHead, prompts: &'a PairPrompts) -> Result<Self> {
        Ok(AlignmentScorer {
            model,
            head,
            prompts,
            cache: prefix_cache(model, &prompts.prefix)?,
        })
    }

    /// Scores of every candidate cluster for each pair, the pairs run as one batch.
    pub fn scores(&self, pairs: &[(u32, u32)]) -> Result<Vec<Vec<f32>>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let suffixes: Vec<Vec<u32>> = pairs
            .iter()
            .map(|&(a, b)| self.prompts.suffix(a, b).map(<[u32]>::to_vec))
            .collect::<Result<_>>()?;
        let h = last_hidden_after(self.model, &self.cache, &suffixes)?;
        let s: Tensor = self.head.forward(&h).map_err(ExploreError::Llm)?;
        let rows = s.to_vec2::<f32>().map_err(wander_llm::LlmError::from)?;
        if let Some(v) = rows.iter().flatten().find(|v| !v.is_finite()) {
            return Err(ExploreError::Invalid(format!(
                "the alignment model gave a non-finite score ({v})"
            )));
        }
        Ok(rows)
    }
}

/// The candidate-conditioned alignment model (P2's scorer): a (LoRA-merged) LLM reading the
/// history pair and one candidate's description, read out by a one-output head on the last
/// hidden state or as the expected value of the label it writes as text. The tokens every prompt shares run once; the rest of each prompt runs in batches.
pub struct CandidateScorer<'a> {
    model: &'a Llama,
    readout: &'a Readout,
    tok: &'a Tokenizer,
    descriptions: &'a [String],
    offsets: Option<&'a [f32]>,
    /// The tokens that every prompt over these descriptions starts with (system message and
    /// template) and their cache: computed on first use and kept, so that scoring one pair at
    /// a time (the precompute) does not run them again for every pair.
    template: std::sync::OnceLock<(Vec<u32>, KvCache)>,
}

/// Prompts scored per forward batch.
const CANDIDATE_BATCH: usize = 16;

/// Tokens of one token tree of several pairs' prompts (after the template): about four
/// pairs of a dozen candidates, where the products run near their best rate.
const TREE_TOKENS: usize = 768;

/// Several history pairs' prompts after the shared template, as one token tree: each pair's
/// own tokens as a chain, each candidate's suffix as a chain after them.
#[derive(Default)]
struct PromptTree {
    tokens: Vec<u32>,
    parents: Vec<Option<usize>>,
    /// The triple each candidate's last token scores, and that token's index.
    ends: Vec<(usize, u32)>,
}

impl PromptTree {
    /// Appends a pair's own tokens and its candidates' suffixes `(triple, suffix)`.
    fn add<'s>(&mut self, pair: &[u32], candidates: impl Iterator<Item = (usize, &'s [u32])>) {
        let mut last = None;
        for &t in pair {
            self.parents.push(last);
            last = Some(self.tokens.len());
            self.tokens.push(t);
        }
        for (triple, suffix) in candidates {
            let mut prev = last;
            for &t in suffix {
                self.parents.push(prev);
                prev = Some(self.tokens.len());
                self.tokens.push(t);
            }
            self.ends.push((triple, (self.tokens.len() - 1) as u32));
        }
    }

    /// Runs the tree after `template` in the model's exact mode and reads each candidate's score;
    /// leaves the tree empty.
    fn score(
        &mut self,
        model: &Llama,
        template: &KvCache,
        head: &ScoreHead,
    ) -> Result<Vec<(usize, f32)>> {
        let tree = std::mem::take(self);
        let n = tree.tokens.len();
        let input = Tensor::from_vec(tree.tokens, (1, n), model.device())
            .map_err(wander_llm::LlmError::from)?;
        let hidden = model.forward_hidden_tree(
            &input,
            &mut template.clone(),
            &tree.parents,
            model.exact_mode(),
        )?;
        let rows: Vec<u32> = tree.ends.iter().map(|e| e.1).collect();
        let h = hidden
            .squeeze(0)
            .and_then(|h| h.index_select(&Tensor::new(rows.as_slice(), model.device())?, 0))
            .map_err(wander_llm::LlmError::from)?;
        let values = first_outputs(head, &h)?;
        Ok(tree.ends.iter().map(|e| e.0).zip(values).collect())
    }
}

/// The head's first output for each row of `hidden`.
fn first_outputs(head: &ScoreHead, hidden: &Tensor) -> Result<Vec<f32>> {
    let s: Tensor = head.forward(hidden).map_err(ExploreError::Llm)?;
    let rows = s.to_vec2::<f32>().map_err(wander_llm::LlmError::from)?;
    rows.into_iter()
        .map(|row| {
            row.first()
                .copied()
                .ok_or_else(|| ExploreError::Invalid("the alignment head has no output".into()))
        })
        .collect()
}

impl<'a> CandidateScorer<'a> {
    /// A scorer over the clusters' `descriptions`.
    pub fn new(
        model: &'a Llama,
        readout: &'a Readout,
        tok: &'a Tokenizer,
        descriptions: &'a [String],
    ) -> Self {
        CandidateScorer {
            model,
            readout,
            tok,
            descriptions,
            offsets: None,
            template: std::sync::OnceLock::new(),
        }
    }

    /// The tokens shared by the prompts of every triple of these descriptions, and their
    /// cache. The history's first cluster is the first place prompts differ, so the shared
    /// tokens are those of the prompts `(c, c, c)` over all clusters: that also covers how
    /// the tokenizer joins the template's last characters with each description's first.
    fn template(&self) -> Result<&(Vec<u32>, KvCache)> {
        if let Some(t) = self.template.get() {
            return Ok(t);
        }
        let prompts: Vec<Vec<u32>> = (0..self.descriptions.len() as u32)
            .map(|c| self.prompt((c, c, c)))
            .collect::<Result<_>>()?;
        let tokens = if prompts.len() < 2 {
            Vec::new()
        } else {
            prompts[0][..wander_llm::train::common_prefix(prompts.iter().map(Vec::as_slice))]
                .to_vec()
        };
        let cache = prefix_cache(self.model, &tokens)?;
        Ok(self.template.get_or_init(|| (tokens, cache)))
    }

    /// The same scorer adding `offsets[candidate]` to every score: for a model trained on
    /// what the history adds to each candidate's global rate (`alignment.prior = "offset"`),
    /// `offsets` holds those rates, one per cluster.
    pub fn with_offsets(mut self, offsets: &'a [f32]) -> Result<Self> {
        if offsets.len() != self.descriptions.len() {
            return Err(ExploreError::Invalid(format!(
                "{} score offsets for {} clusters",
                offsets.len(),
                self.descriptions.len()
            )));
        }
        if let Some(bad) = offsets.iter().find(|v| !v.is_finite()) {
            return Err(ExploreError::Invalid(format!(
                "a score offset is not finite ({bad})"
            )));
        }
        self.offsets = Some(offsets);
        Ok(self)
    }

    /// How many tokens every prompt of the history pair shares, whatever the candidate:
    /// the common prefix of its prompts over all clusters, one token short of the shortest
    /// so that every suffix keeps a token.
    fn pair_prefix_len(&self, (c1, c2): (u32, u32)) -> Result<usize> {
        let prompts: Vec<Vec<u32>> = (0..self.descriptions.len() as u32)
            .map(|c| self.prompt((c1, c2, c)))
            .collect::<Result<_>>()?;
        let shortest = prompts.iter().map(Vec::len).min().unwrap_or(0);
        Ok(
            wander_llm::train::common_prefix(prompts.iter().map(Vec::as_slice))
                .min(shortest.saturating_sub(1)),
        )
    }

    /// The tokens of the prompt for `(c1, c2, candidate)`.
    pub fn prompt(&self, (c1, c2, c): (u32, u32, u32)) -> Result<Vec<u32>> {
        let d = |c: u32| {
            self.descriptions
                .get(c as usize)
                .map(String::as_str)
                .ok_or_else(|| ExploreError::Invalid(format!("cluster {c} has no description")))
        };
        Ok(self.tok.chat_prompt(
            crate::feedback::ALIGNMENT_CANDIDATE_SYSTEM,
            &crate::feedback::candidate_message(d(c1)?, d(c2)?, d(c)?),
        )?)
    }

    /// The predicted label of each `(c1, c2, candidate)` triple, in order. Non-finite
    /// predictions are an error.
    pub fn scores(&self, triples: &[(u32, u32, u32)]) -> Result<Vec<f32>> {
        if triples.is_empty() {
            return Ok(Vec::new());
        }
        let prompts: Vec<Vec<u32>> = triples
            .iter()
            .map(|&t| self.prompt(t))
            .collect::<Result<_>>()?;
        // Two levels of sharing: the tokens every prompt shares (system message, template)
        // run once; then each history pair's own tokens run once for all its candidates, and
        // only the candidates' suffixes (about ten tokens each) run per prompt. Both split
        // points depend on the pair alone, never on which candidates are scored beside it,
        // so a candidate's score is the same computation in any call, up to the float
        // rounding of the batch's shape (a store of scores relies on it).
        let (template, template_cache) = self.template()?;
        let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<(u32, u32), usize> = HashMap::new();
        for (i, &(c1, c2, _)) in triples.iter().enumerate() {
            let g = *group_of.entry((c1, c2)).or_insert_with(|| {
                groups.push(((c1, c2), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let mut out = vec![f32::NAN; triples.len()];
        let record = |out: &mut Vec<f32>, i: usize, v: f32| -> Result<()> {
            // `with_offsets` checked the length against the descriptions, which `prompt`
            // checked every candidate against.
            let v = v + self.offsets.map_or(0.0, |o| o[triples[i].2 as usize]);
            if !v.is_finite() {
                return Err(ExploreError::Invalid(format!(
                    "the alignment model gave a non-finite score ({v})"
                )));
            }
            out[i] = v;
            Ok(())
        };
        // With a head, the pairs whose prompts split there run several at a time as one
        // token tree after the template: each pair's own tokens once, its candidates'
        // suffixes hanging off their last one. Bigger products run faster, and each token
        // still sees only its own prompt.
        let mut tree = PromptTree::default();
        for (pair, members) in &groups {
            let shared = self.pair_prefix_len(*pair)?;
            let first = &prompts[members[0]];
            // Every prompt starts with the template and the pair's tokens by construction;
            // the check keeps a prompt that did not (a tokenizer joining across them) exact
            // rather than wrong.
            let split_holds = shared >= template.len()
                && members
                    .iter()
                    .all(|&i| prompts[i].len() > shared && prompts[i][..shared] == first[..shared])
                && first.starts_with(template);
            if let (Readout::Head(head), true) = (self.readout, split_holds) {
                let size = shared - template.len()
                    + members
                        .iter()
                        .map(|&i| prompts[i].len() - shared)
                        .sum::<usize>();
                if !tree.tokens.is_empty() && tree.tokens.len() + size > TREE_TOKENS {
                    for (i, v) in tree.score(self.model, template_cache, head)? {
                        record(&mut out, i, v)?;
                    }
                }
                tree.add(
                    &first[template.len()..shared],
                    members.iter().map(|&i| (i, &prompts[i][shared..])),
                );
                continue;
            }
            let (pair_cache, shared) = if split_holds {
                (
                    extend_cache(self.model, template_cache, &first[template.len()..shared])?,
                    shared,
                )
            } else {
                let common = wander_llm::train::common_prefix(
                    members.iter().map(|&i| prompts[i].as_slice()),
                );
                (prefix_cache(self.model, &first[..common])?, common)
            };
            for batch in members.chunks(CANDIDATE_BATCH) {
                let suffixes: Vec<Vec<u32>> = batch
                    .iter()
                    .map(|&i| prompts[i][shared..].to_vec())
                    .collect();
                let values: Vec<f32> = match self.readout {
                    Readout::Head(head) => {
                        let h = last_hidden_after(self.model, &pair_cache, &suffixes)?;
                        first_outputs(head, &h)?
                    }
                    Readout::Text(levels) => {
                        expected_labels_after(self.model, &pair_cache, &suffixes, levels)?
                            .into_iter()
                            .map(|v| v as f32)
                            .collect()
                    }
                };
                for (&i, v) in batch.iter().zip(values) {
                    record(&mut out, i, v)?;
                }
            }
        }
        if let Readout::Head(head) = self.readout {
            if !tree.tokens.is_empty() {
                for (i, v) in tree.score(self.model, template_cache, head)? {
                    record(&mut out, i, v)?;
                }
            }
        }
        Ok(out)
    }
}
