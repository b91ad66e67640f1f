//! Sampling and scoring: n samples sharing one prefill, trie-constrained decoding over a
//! fixed list of answers, and exact scoring of a candidate list under one prompt.

use candle_core::Tensor;

use crate::model::{KvCache, Llama, Mode};
use crate::{LlmError, Result};

/// A prefix tree over the token sequences of the allowed answers.
#[derive(Debug, Clone)]
pub struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    children: Vec<(u32, usize)>,
    answer: Option<usize>,
}

impl Trie {
    /// Builds the trie; every answer must be non-empty and no answer may be a prefix of
    /// another (end each with the end-of-answer token to guarantee it).
    pub fn new(answers: &[Vec<u32>]) -> Result<Self> {
        let mut nodes = vec![TrieNode::default()];
        for (a, seq) in answers.iter().enumerate() {
            if seq.is_empty() {
                return Err(LlmError::Invalid(format!("answer {a} has no tokens")));
            }
            let mut node = 0;
            for &tok in seq {
                if nodes[node].answer.is_some() {
                    return Err(LlmError::Invalid(format!(
                        "an answer is a prefix of answer {a}"
                    )));
                }
                node = match nodes[node].children.iter().find(|(t, _)| *t == tok) {
                    Some(&(_, next)) => next,
                    None => {
                        nodes.push(TrieNode::default());
                        let next = nodes.len() - 1;
                        nodes[node].children.push((tok, next));
                        next
                    }
                };
            }
            if !nodes[node].children.is_empty() {
                return Err(LlmError::Invalid(format!(
                    "answer {a} is a prefix of another answer"
                )));
            }
            if let Some(other) = nodes[node].answer {
                return Err(LlmError::Invalid(format!(
                    "answers {other} and {a} have the same tokens"
                )));
            }
            nodes[node].answer = Some(a);
        }
        Ok(Trie { nodes })
    }

    fn children(&self, node: usize) -> &[(u32, usize)] {
        &self.nodes[node].children
    }

    /// If exactly one answer lies below `node`, the tokens from `node` to its end and the
    /// answer's index.
    fn forced_tail(&self, mut node: usize) -> (Vec<u32>, Option<usize>) {
        let mut tail = Vec::new();
        loop {
            if let Some(a) = self.nodes[node].answer {
                return (tail, Some(a));
            }
            match self.nodes[node].children.as_slice() {
                [(tok, next)] => {
                    tail.push(*tok);
                    node = *next;
                }
                _ => return (Vec::new(), None),
            }
        }
    }
}

/// Sampling settings.
#[derive(Debug, Clone)]
pub struct SampleParams {
    /// Number of samples.
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass kept (1.0 keeps everything).
    pub top_p: f64,
    /// Seed; sample `i` uses its own stream, so results do not depend on batching.
    pub seed: u64,
    /// Longest answer in tokens (unconstrained mode).
    pub max_new_tokens: usize,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Generated tokens, the end token included when reached.
    pub tokens: Vec<u32>,
    /// Index of the allowed answer (constrained mode).
    pub answer: Option<usize>,
    /// Tokens that were forced by the trie rather than sampled.
    pub forced: usize,
}

/// Counters of a generation call, for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    /// Prompt tokens prefilled (once, shared by all samples).
    pub prefill_tokens: usize,
    /// Decode steps run (each a batched forward of one token per active sample).
    pub decode_steps: usize,
    /// Tokens generated over all samples.
    pub generated_tokens: usize,
}

/// Draws `params.n` samples for one prompt. The prompt is prefilled once and its KV cache
/// shared; the samples decode as one batch and leave it as they finish. With a trie, only
/// allowed continuations are considered, and where the trie has a single child the token is
/// forced without sampling.
pub fn sample(
    model: &Llama,
    prompt: &[u32],
    params: &SampleParams,
    trie: Option<&Trie>,
    eos: u32,
) -> Result<(Vec<Sample>, GenStats)> {
    if params.n == 0 || prompt.is_empty() {
        return Err(LlmError::Invalid(
            "sampling needs n >= 1 and a non-empty prompt".into(),
        ));
    }
    let mut stats = GenStats {
        prefill_tokens: prompt.len(),
        ..Default::default()
    };
    let mut cache = KvCache::new(model.blocks.len());
    let input = Tensor::new(prompt, model.device())?.unsqueeze(0)?;
    let hidden = model.forward_hidden(&input, &mut cache, Mode::Infer)?;
    let mut last_hidden = hidden.narrow(1, prompt.len() - 1, 1)?.squeeze(1)?; // [1, h]
    let base = wander_core::rng::Rng::new(params.seed);
    let mut rngs: Vec<_> = (0..params.n).map(|i| base.fork(i as u64)).collect();
    let mut samples = vec![
        Sample {
            tokens: Vec::new(),
            answer: None,
            forced: 0
        };
        params.n
    ];
    let mut nodes = vec![0usize; params.n];
    let mut active: Vec<usize> = (0..params.n).collect();
    let mut shared = true; // rows still share the prefill's single hidden state
    while !active.is_empty() {
        let rows = if shared { 1 } else { active.len() };
        // Choose the next token of every active sample.
        let mut next = Vec::with_capacity(active.len());
        match trie {
            Some(trie) => {
                let mut union: Vec<u32> = active
                    .iter()
                    .flat_map(|&s| trie.children(nodes[s]).iter().map(|c| c.0))
                    .collect();
                union.sort_unstable();
                union.dedup();
                let need_logits = active.iter().any(|&s| trie.children(nodes[s]).len() > 1);
                let logits = if need_logits {
                    Some(
                        model
                            .logits_subset(&last_hidden, &union)?
                            .to_vec2::<f32>()?,
                    )
                } else {
                    None
                };
                for (k, &s) in active.iter().enumerate() {
                    let children = trie.children(nodes[s]);
                    let choice = if children.len() == 1 {
                        samples[s].forced += 1;
                        0
                    } else {
                        let row =
                            &logits.as_ref().expect("logits computed")[if shared { 0 } else { k }];
                        let l: Vec<f32> = children
                            .iter()
                            .map(|(t, _)| row[union.binary_search(t).expect("in union")])
                            .collect();
                        pick(&l, params, &mut rngs[s])
                    };
                    let (tok, child) = children[choice];
                    nodes[s] = child;
                    next.push(tok);
                }
            }
            None => {
                let logits = model.logits(&last_hidden)?.to_vec2::<f32>()?;
                for (k, &s) in active.iter().enumerate() {
                    next.push(
                        pick(&logits[if shared { 0 } else { k }], params, &mut rngs[s]) as u32,
                    );
                }
            }
        }
        let _ = rows;
        // Record and retire finished samples.
        let mut keep = Vec::with_capacity(active.len());
        let mut keep_rows = Vec::with_capacity(active.len());
        for (k, (&s, &tok)) in active.iter().zip(&next).enumerate() {
            samples[s].tokens.push(tok);
            stats.generated_tokens += 1;
            let done = match trie {
                Some(trie) => {
                    // Once only one answer remains below this node, its remaining tokens are
                    // all forced: append them without running the model.
                    let (tail, answer) = trie.forced_tail(nodes[s]);
                    if let Some(a) = answer {
                        samples[s].forced += tail.len();
                        stats.generated_tokens += tail.len();
                        samples[s].tokens.extend(tail);
                        samples[s].answer = Some(a);
                    }
                    answer.is_some()
                }
                None => tok == eos || samples[s].tokens.len() >= params.max_new_tokens,
            };
            if !done {
                keep.push(s);
                keep_rows.push(k as u32);
            }
        }
        if keep.is_empty() {
            break;
        }
        if shared {
            cache = cache.broadcast(active.len())?;
            shared = false;
        }
        if keep.len() != active.len() {
            cache = cache.select(&keep_rows)?;
        }
        let toks: Vec<u32> = keep_rows.iter().map(|&r| next[r as usize]).collect();
        active = keep;
        let input = Tensor::new(toks.as_slice(), model.device())?.unsqueeze(1)?;
        last_hidden = model
            .forward_hidden(&input, &mut cache, Mode::Infer)?
            .squeeze(1)?;
        stats.decode_steps += 1;
    }
    Ok((samples, stats))
}

/// Picks an index from logits: greedy at temperature 0, else temperature and top-p.
fn pick(logits: &[f32], params: &SampleParams, rng: &mut wander_core::rng::Rng) -> usize {
    if params.temperature <= 0.0 {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best;
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((l as f64 - max) / params.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if params.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut cum = 0.0;
        let mut cut = probs.len();
        for (k, p) in probs.iter().enumerate() {
            cum += p.1 / total;
            if cum >= params.top_p {
                cut = k + 1;
                break;
            }
        }
        probs.truncate(cut);
    }
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * mass;
    for &(i, p) in &probs {
        u -= p;
        if u <= 0.0 {
            return i;
        }
    }
    probs.last().map(|p| p.0).unwrap_or(0)
}

/// Exact scores of a fixed candidate list under one prompt.
#[derive(Debug, Clone)]
pub struct CandidateScores {
    /// log P(candidate | prompt) under the trie-constrained decoder (softmax over the allowed
    /// children at every step): exactly the probability that [`sample`] at temperature 1
    /// with this trie returns the candidate. Sums to 1 over the candidates (in prob space).
    pub constrained_logprob: Vec<f64>,
}

/// Scores every candidate (token sequences ending in the end token) under `prompt`, sharing
/// one prefill. Only the trie's branching nodes need the model: their prefixes run as one
/// batch over the broadcast prompt cache, and each needs logits for its children only.
pub fn score_candidates(
    model: &Llama,
    prompt: &[u32],
    candidates: &[Vec<u32>],
) -> Result<CandidateScores> {
    score_candidates_after(
        model,
        &KvCache::new(model.blocks.len()),
        prompt,
        candidates,
        1.0,
    )
}

/// The cache of a prompt prefix shared by many prompts (the system message and template):
/// computed once, it lets each prompt run only its own suffix. It runs in the model's exact
/// mode ([`Llama::exact_mode`]: f32 or bf16 products at any row count), like [`extend_cache`]
/// and [`last_hidden_after`], so that a score built on it does not depend on how long the
/// prefix is or how many prompts share it.
pub fn prefix_cache(model: &Llama, prefix: &[u32]) -> Result<KvCache> {
    let mut cache = KvCache::new(model.blocks.len());
    if !prefix.is_empty() {
        let input = Tensor::new(prefix, model.device())?.unsqueeze(0)?;
        model.forward_hidden(&input, &mut cache, model.exact_mode())?;
    }
    Ok(cache)
}

/// The cache of `prefix ++ tokens`, from the cache of `prefix` (a batch-1 cache, left as
/// it is): a second level of sharing, e.g. a history pair's tokens under many candidates.
pub fn extend_cache(model: &Llama, prefix: &KvCache, tokens: &[u32]) -> Result<KvCache> {
    let mut cache = prefix.broadcast(1)?;
    if !tokens.is_empty() {
        let input = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
        model.forward_hidden(&input, &mut cache, model.exact_mode())?;
    }
    Ok(cache)
}

/// Final hidden state `[n, hidden]` of the last token of each `prefix ++ suffix`, for a
/// batch-1 `prefix` cache. The suffixes run side by side as one sequence without padding,
/// each attending to the prefix and to its own tokens only ([`Llama::forward_hidden_tree`]),
/// in the model's exact mode ([`Llama::exact_mode`]): a prompt's result does not
/// depend on which prompts run beside it, up to float rounding (a store of scores relies on
/// it).
pub fn last_hidden_after(model: &Llama, prefix: &KvCache, suffixes: &[Vec<u32>]) -> Result<Tensor> {
    if suffixes.is_empty() || suffixes.iter().any(Vec::is_empty) {
        return Err(LlmError::Invalid(
            "every suffix needs at least one token".into(),
        ));
    }
    if prefix.batch() != 1 {
        return Err(LlmError::Invalid(format!(
            "suffixes run after a one-row prefix cache, not {} rows",
            prefix.batch()
        )));
    }
    let mut toks = Vec::new();
    let mut parents = Vec::new();
    let mut rows = Vec::with_capacity(suffixes.len());
    for s in suffixes {
        for (k, &tok) in s.iter().enumerate() {
            parents.push((k > 0).then(|| toks.len() - 1));
            toks.push(tok);
        }
        rows.push((toks.len() - 1) as u32);
    }
    let n = toks.len();
    let mut cache = prefix.clone();
    let input = Tensor::from_vec(toks, (1, n), model.device())?;
    let h = model.forward_hidden_tree(&input, &mut cache, &parents, model.exact_mode())?;
    Ok(h.squeeze(0)?
        .index_select(&Tensor::new(rows.as_slice(), model.device())?, 0)?)
}

/// [`score_candidates`] for the prompt `prefix ++ suffix`, with `prefix` already in a cache,
/// at a softmax `temperature` (> 0): the result is exactly the distribution of [`sample`]
/// with this trie, that temperature and `top_p = 1`.
pub fn score_candidates_after(
    model: &Llama,
    prefix: &KvCache,
    suffix: &[u32],
    candidates: &[Vec<u32>],
    temperature: f64,
) -> Result<CandidateScores> {
    let mut out =
        score_candidates_batch(model, prefix, &[suffix.to_vec()], candidates, temperature)?;
    Ok(CandidateScores {
        constrained_logprob: out.pop().expect("one prompt"),
    })
}

/// Exact constrained log-probabilities of every candidate after each of several prompts
/// `prefix ++ suffixes[r]` whose suffixes all have the same length. The prompts run as one
/// batch, and the trie's branching prefixes of all prompts as a second one: one forward
/// pass pair for the whole group instead of one per prompt.
pub fn score_candidates_batch(
    model: &Llama,
    prefix: &KvCache,
    suffixes: &[Vec<u32>],
    candidates: &[Vec<u32>],
    temperature: f64,
) -> Result<Vec<Vec<f64>>> {
    let Some(first) = suffixes.first() else {
        return Ok(Vec::new());
    };
    let l = first.len();
    if l == 0 || suffixes.iter().any(|s| s.len() != l) {
        return Err(LlmError::Invalid(
            "batched scoring needs non-empty suffixes of one length".into(),
        ));
    }
    if !(temperature > 0.0) {
        return Err(LlmError::Invalid(format!(
            "scoring needs a temperature above 0, not {temperature}"
        )));
    }
    let b = suffixes.len();
    let trie = Trie::new(candidates)?;
    let mut branching: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut stack = vec![(0usize, Vec::new())];
    while let Some((node, path)) = stack.pop() {
        let children = trie.children(node);
        if children.len() > 1 {
            branching.push((node, path.clone()));
        }
        for &(tok, next) in children.iter().rev() {
            let mut p = path.clone();
            p.push(tok);
            stack.push((next, p));
        }
    }
    let mut cache = prefix.broadcast(b)?;
    let toks: Vec<u32> = suffixes.iter().flatten().copied().collect();
    let input = Tensor::from_vec(toks, (b, l), model.device())?;
    let hidden = model.forward_hidden(&input, &mut cache, Mode::Infer)?;
    let root_hidden = hidden.narrow(1, l - 1, 1)?.squeeze(1)?; // [b, h]
                                                               // The branching nodes below the root need the hidden state after their own path: the
                                                               // trie nodes on those paths run once per prompt as one token tree over the prompt's
                                                               // cache (a shared prefix once, not once per branching node below it).
    let mut tree_index: std::collections::HashMap<usize, usize> = Default::default();
    let mut tree_tokens: Vec<u32> = Vec::new();
    let mut tree_parents: Vec<Option<usize>> = Vec::new();
    for (_, path) in branching.iter().filter(|(_, p)| !p.is_empty()) {
        let mut node = 0usize;
        for &tok in path {
            let next = trie
                .children(node)
                .iter()
                .find(|c| c.0 == tok)
                .expect("a branching node's path is in its trie")
                .1;
            if !tree_index.contains_key(&next) {
                tree_index.insert(next, tree_tokens.len());
                tree_parents.push(tree_index.get(&node).copied());
                tree_tokens.push(tok);
            }
            node = next;
        }
    }
    let tree_hidden = if tree_tokens.is_empty() {
        None
    } else {
        let n = tree_tokens.len();
        let toks: Vec<u32> = (0..b).flat_map(|_| tree_tokens.iter().copied()).collect();
        let input = Tensor::from_vec(toks, (b, n), model.device())?;
        let mut tree_cache = cache.clone();
        Some(model.forward_hidden_tree(&input, &mut tree_cache, &tree_parents, Mode::Infer)?)
    };
    // Per prompt, the log-probability of each child at each branching node.
    let mut child_logp: Vec<std::collections::HashMap<(usize, u32), f64>> =
        vec![std::collections::HashMap::new(); b];
    for (node, path) in &branching {
        let h = if path.is_empty() {
            root_hidden.clone()
        } else {
            tree_hidden
                .as_ref()
                .expect("a tree for the deep branching nodes")
                .narrow(1, tree_index[node], 1)?
                .squeeze(1)?
        };
        let ids: Vec<u32> = trie.children(*node).iter().map(|c| c.0).collect();
        let logits = model.logits_subset(&h, &ids)?.to_vec2::<f32>()?;
        for (r, l) in logits.into_iter().enumerate() {
            let l: Vec<f64> = l.into_iter().map(|v| v as f64 / temperature).collect();
            let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + l.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
            for (&tok, &v) in ids.iter().zip(&l) {
                child_logp[r].insert((*node, tok), v - lse);
            }
        }
    }
    let mut out = vec![vec![0.0f64; candidates.len()]; b];
    for (ci, seq) in candidates.iter().enumerate() {
        let mut node = 0usize;
        for &tok in seq {
            let children = trie.children(node);
            if children.len() > 1 {
                for r in 0..b {
                    out[r][ci] += child_logp[r][&(node, tok)];
                }
            }
            node = children
                .iter()
                .find(|c| c.0 == tok)
                .expect("candidate is in its own trie")
                .1;
        }
    }
    Ok(out)
}

/// The label of each prompt `prefix ++ suffixes[r]` from a model that writes its label as
/// text: the exact constrained distribution over the levels' answers
/// ([`score_candidates_batch`] at temperature 1, so it sums to one over the levels), then
/// the levels' expected value under it. Suffixes of one length run as one batch.
pub fn expected_labels_after(
    model: &Llama,
    prefix: &KvCache,
    suffixes: &[Vec<u32>],
    levels: &crate::readout::LabelLevels,
) -> Result<Vec<f64>> {
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, s) in suffixes.iter().enumerate() {
        by_len.entry(s.len()).or_default().push(i);
    }
    let mut out = vec![f64::NAN; suffixes.len()];
    for members in by_len.values() {
        let group: Vec<Vec<u32>> = members.iter().map(|&i| suffixes[i].clone()).collect();
        let logprobs = score_candidates_batch(model, prefix, &group, levels.answers(), 1.0)?;
        for (&i, lp) in members.iter().zip(&logprobs) {
            out[i] = levels.expected(lp)?;
        }
    }
    Ok(out)
}

/// Rows of vocabulary logits computed at once by [`answer_logprobs`] (49k floats each).
const ANSWER_LOGIT_ROWS: usize = 128;

/// Unconstrained log-probabilities of whole answers after `prefix ++ suffix`: for each
/// answer (token sequences ending in the end token), the sum over its tokens of the model's
/// log-softmax over the *full* vocabulary at `temperature`. This is the probability that
/// unconstrained sampling at that temperature writes exactly this answer; renormalised over
/// the valid answers it is P2's proposal distribution (sample, drop invalid outputs,
/// renormalise), and its sum over the answers is the share of samples that are valid. The
/// trie-constrained distribution ([`score_candidates_batch`]) instead renormalises at every
/// token, which favours answers whose first tokens have few siblings.
pub fn answer_logprobs(
    model: &Llama,
    prefix: &KvCache,
    suffix: &[u32],
    answers: &[Vec<u32>],
    temperature: f64,
) -> Result<Vec<f64>> {
    if suffix.is_empty() || answers.iter().any(Vec::is_empty) {
        return Err(LlmError::Invalid(
            "answer scoring needs a non-empty suffix and non-empty answers".into(),
        ));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(LlmError::Invalid(format!(
            "scoring needs a finite temperature above 0, not {temperature}"
        )));
    }
    let mut cache = prefix.broadcast(1)?;
    let input = Tensor::new(suffix, model.device())?.unsqueeze(0)?;
    let h = model.forward_hidden(&input, &mut cache, Mode::Infer)?;
    let root = h.narrow(1, suffix.len() - 1, 1)?.squeeze(1)?; // [1, hidden]
                                                              // (row of hidden states, token) for every token of every answer: the first token is
                                                              // predicted from the prompt's last position, token k from the answer's position k - 1.
    let context = answers.iter().map(|a| a.len() - 1).max().unwrap_or(0);
    let mut wanted: Vec<(usize, u32)> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        wanted.push((0, a[0]));
        for k in 1..a.len() {
            wanted.push((1 + i * context + (k - 1), a[k]));
        }
    }
    let states = if context == 0 {
        root
    } else {
        let mut toks = Vec::with_capacity(answers.len() * context);
        for a in answers {
            for k in 0..context {
                // Right padding repeats the last context token; causal attention keeps it
                // out of every real position.
                toks.push(a[k.min(a.len().saturating_sub(2))]);
            }
        }
        let mut c = cache.broadcast(answers.len())?;
        let input = Tensor::from_vec(toks, (answers.len(), context), model.device())?;
        let hid = model.forward_hidden(&input, &mut c, Mode::Infer)?;
        let hid = hid.reshape((answers.len() * context, model.cfg.hidden))?;
        Tensor::cat(&[&root, &hid], 0)?
    };
    // Only the rows some answer reads, in chunks, each through the full output projection.
    let mut rows: Vec<usize> = wanted.iter().map(|w| w.0).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut logp_of_row: std::collections::HashMap<usize, Vec<f32>> =
        std::collections::HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ANSWER_LOGIT_ROWS) {
        let idx: Vec<u32> = chunk.iter().map(|&r| r as u32).collect();
        let x = states.index_select(&Tensor::new(idx.as_slice(), states.device())?, 0)?;
        let logits = (model.logits(&x)?.to_dtype(candle_core::DType::F32)? / temperature)?;
        let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
        for (&r, row) in chunk.iter().zip(logp.to_vec2::<f32>()?) {
            logp_of_row.insert(r, row);
        }
    }
    let mut out = vec![0.0f64; answers.len()];
    let mut w = wanted.iter();
    for (i, a) in answers.iter().enumerate() {
        for _ in 0..a.len() {
            let &(row, tok) = w.next().expect("one entry per answer token");
            let lp = logp_of_row[&row]
                .get(tok as usize)
                .copied()
                .ok_or_else(|| {
                    LlmError::Invalid(format!("token {tok} is outside the vocabulary"))
                })?;
            out[i] += f64::from(lp);
        }
    }
    if let Some(bad) = out.iter().position(|v| !v.is_finite()) {
        return Err(LlmError::Invalid(format!(
            "answer {bad} has a non-finite log-probability"
        )));
    }
    Ok(out)
}
