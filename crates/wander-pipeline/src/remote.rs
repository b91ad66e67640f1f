//! The novelty model behind an OpenAI-compatible server (`llm.backend = "openai"`): P2's
//! proposal distribution from completions instead of wander's runtime.
//!
//! Two ways, as `precompute.mode` says:
//! - exact: every answer's probability after the pair's prompt, read from the prompt's
//!   log-probabilities (the prompt plus the answer, echoed back; at temperature 1), then
//!   renormalised over the valid answers: what `normalize = "answer"` computes in wander's
//!   runtime. Needs a server that echoes prompt log-probabilities (vLLM, llama-cpp-python).
//! - sample: n completions at the temperature; a completion that is not a valid answer
//!   (after trimming, case and white space) is counted and dropped, the rest renormalised.
//!   Works with any server.
//!
//! The prompts are wander's own ChatML text; the server must tokenise them as wander does,
//! which the exact way checks on every request (token counts).

use std::collections::HashMap;

use wander_core::config::Config;
use wander_llm::tokenizer::Tokenizer;
use wander_openai::{Client, ClientConfig, Completion, CompletionRequest};

use crate::PipelineError;

/// A client of the configured `[llm.openai]` server.
pub(crate) fn client(config: &Config) -> crate::Result<Client> {
    let o = &config.llm.openai;
    let api_key = std::env::var(&o.api_key_env).ok().filter(|k| !k.is_empty());
    Ok(Client::new(ClientConfig {
        endpoint: o.endpoint.clone(),
        model: o.model_name.clone(),
        api_key,
        concurrency: o.concurrency,
        max_retries: o.max_retries,
        timeout: std::time::Duration::from_secs_f64(o.timeout_s),
        backoff: std::time::Duration::from_millis(500),
        cache_dir: (!o.cache_dir.as_os_str().is_empty()).then(|| o.cache_dir.clone()),
    })?)
}

/// How a sampled completion is compared with the answers: trimmed, an end marker the
/// server left in removed, white space collapsed, lower case.
pub(crate) fn normalise_answer(text: &str) -> String {
    let t = text.trim();
    let t = t.strip_suffix("<|im_end|>").unwrap_or(t);
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The summed log-probability of an echoed completion's answer: the `answer_tokens` prompt
/// tokens (the answer and its end token) just before the generated ones. `wander_tokens` is
/// how many tokens wander's tokenizer makes of the same text: the server's count must be the
/// same (or one more, for a beginning-of-sequence token), or the two tokenise differently and
/// the figure would be another text's. Counted from the end because llama-cpp-python leaves
/// some control tokens of the prompt out of its echoed list (the answer has none but its end
/// token, which it lists); where the server names the tokens, they must spell `answer`.
pub(crate) fn echoed_answer_logprob(
    completion: &Completion,
    answer: &str,
    answer_tokens: usize,
    wander_tokens: usize,
) -> crate::Result<f64> {
    let usage = completion.usage.ok_or_else(|| {
        PipelineError::msg("the server reports no usage.prompt_tokens: it cannot tell where the prompt ends; use precompute.mode = \"sample\"")
    })?;
    let prompt = usage.prompt_tokens as usize;
    if prompt != wander_tokens && prompt != wander_tokens + 1 {
        return Err(PipelineError::msg(format!(
            "the server made {prompt} tokens of a prompt that wander's tokenizer makes {wander_tokens} of: it tokenises differently (another model or tokenizer?); exact scores would be of other text"
        )));
    }
    let no_echo = || {
        PipelineError::msg("the server did not echo the prompt's log-probabilities (`echo` with `logprobs`); this server cannot score answers exactly: use precompute.mode = \"sample\"")
    };
    let lp = completion.choices[0]
        .logprobs
        .as_ref()
        .ok_or_else(no_echo)?;
    let generated = usage.completion_tokens as usize;
    let end = lp
        .token_logprobs
        .len()
        .checked_sub(generated)
        .ok_or_else(no_echo)?;
    if answer_tokens == 0 || end < answer_tokens + 1 {
        return Err(no_echo());
    }
    let range = end - answer_tokens..end;
    if lp.tokens.len() == lp.token_logprobs.len() {
        let spelled: String = lp.tokens[range.clone()].concat();
        if spelled.trim_end_matches("<|im_end|>") != answer {
            return Err(PipelineError::msg(format!(
                "the server's echoed tokens before the completion spell `{spelled}`, not the answer `{answer}`: its echo is laid out differently than wander reads it"
            )));
        }
    }
    let mut sum = 0.0;
    for v in &lp.token_logprobs[range] {
        match v {
            Some(v) if v.is_finite() => sum += v,
            _ => {
                return Err(PipelineError::msg(format!(
                    "the server echoed a log-probability that is not a finite number ({v:?})"
                )))
            }
        }
    }
    Ok(sum)
}

/// P2's renormalisation over whole answers from their log-probabilities: the distribution
/// over the answers and the probability mass they hold (the share of unconstrained samples
/// that would be valid). The same arithmetic as wander's runtime does.
pub(crate) fn renormalise(logp: &[f64]) -> (Vec<f64>, f64) {
    let max = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logp.iter().map(|l| (l - max).exp()).sum();
    (
        logp.iter().map(|l| (l - max).exp() / sum).collect(),
        (max + sum.ln()).exp(),
    )
}

/// One pair's sampled proposals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampled {
    /// Valid completions per cluster.
    pub(crate) freq: Vec<u32>,
    /// Completions drawn.
    pub(crate) drawn: u32,
}

impl Sampled {
    /// Valid completions.
    pub(crate) fn valid(&self) -> u32 {
        self.freq.iter().sum()
    }
}

/// The novelty model on the server, with the run's answers.
pub(crate) struct RemoteNovelty<'a> {
    client: Client,
    /// `[llm]`'s tokenizer.
    local: &'a Tokenizer,
    /// The served model's, when `llm.openai.tokenizer` names one.
    served: Option<Tokenizer>,
    descriptions: &'a [String],
    /// How the run's novelty model was prompted in training.
    prompter: &'a crate::llm::NoveltyPrompter,
    /// Each answer's tokens in that tokenizer (the end token included).
    answers: Vec<Vec<u32>>,
    by_text: HashMap<String, usize>,
    /// `llm.openai.sampling_extra`.
    sampling_extra: serde_json::Map<String, serde_json::Value>,
}

impl<'a> RemoteNovelty<'a> {
    /// Checks that the server is up and serves the configured model.
    pub(crate) fn new(
        config: &Config,
        local: &'a Tokenizer,
        descriptions: &'a [String],
        prompter: &'a crate::llm::NoveltyPrompter,
    ) -> crate::Result<Self> {
        let path = &config.llm.openai.tokenizer;
        let served = if path.as_os_str().is_empty() {
            None
        } else {
            Some(Tokenizer::from_file(path)?)
        };
        let tok = served.as_ref().unwrap_or(local);
        let answers = descriptions
            .iter()
            .map(|d| tok.answer(d))
            .collect::<Result<Vec<_>, _>>()?;
        let client = client(config)?;
        let listed = client.models()?;
        let name = &config.llm.openai.model_name;
        if !listed.iter().any(|m| m == name) {
            return Err(PipelineError::msg(format!(
                "{}: the server serves {listed:?}, not `{name}`; set llm.openai.model_name",
                config.llm.openai.endpoint
            )));
        }
        let mut by_text = HashMap::new();
        for (c, d) in descriptions.iter().enumerate() {
            if by_text.insert(normalise_answer(d), c).is_some() {
                return Err(PipelineError::msg(format!(
                    "two clusters' descriptions read the same after normalising (`{d}`): a sampled answer could not be told apart"
                )));
            }
        }
        let sampling_extra = match serde_json::from_str(&config.llm.openai.sampling_extra)? {
            serde_json::Value::Object(map) => map,
            _ => {
                return Err(PipelineError::msg(
                    "llm.openai.sampling_extra must be a JSON object",
                ))
            }
        };
        Ok(RemoteNovelty {
            sampling_extra,
            client,
            local,
            served,
            descriptions,
            prompter,
            answers,
            by_text,
        })
    }

    /// The served model's tokenizer.
    fn tok(&self) -> &Tokenizer {
        self.served.as_ref().unwrap_or(self.local)
    }

    /// The client (its statistics).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The pair's prompt as text: what wander's runtime tokenises.
    fn prompt(&self, (c1, c2): (u32, u32)) -> crate::Result<String> {
        Ok(Tokenizer::chat_text(
            wander_explore::sft::SYSTEM,
            &self.prompter.user(c1, c2, self.descriptions)?,
        ))
    }

    /// The cluster a completion names, if it names one.
    pub(crate) fn parse(&self, text: &str) -> Option<usize> {
        self.by_text.get(&normalise_answer(text)).copied()
    }

    /// For each pair, every answer's probability renormalised over the answers (the
    /// history clusters included, as wander's runtime does) and the mass they hold;
    /// `on_done` after each answer's request.
    pub(crate) fn answer_probs(
        &self,
        pairs: &[(u32, u32)],
        on_done: &(dyn Fn() + Sync),
    ) -> crate::Result<Vec<(Vec<f64>, f64)>> {
        let m = self.answers.len();
        let mut requests = Vec::with_capacity(pairs.len() * m);
        let mut counts = Vec::with_capacity(pairs.len() * m);
        for &pair in pairs {
            let prompt = self.prompt(pair)?;
            for (c, answer) in self.answers.iter().enumerate() {
                // The end token is the last of an answer's tokens; the text writes it out.
                let text = format!("{prompt}{}<|im_end|>", self.descriptions[c]);
                let ids = self.tok().encode(&text)?;
                if !ids.ends_with(answer) {
                    return Err(PipelineError::msg(format!(
                        "cluster {c}'s answer tokenises differently after the prompt than alone; its probability cannot be read from the prompt's tokens"
                    )));
                }
                counts.push(ids.len());
                requests.push(CompletionRequest {
                    prompt: text,
                    max_tokens: 1,
                    temperature: 0.0,
                    n: 1,
                    seed: None,
                    echo: true,
                    logprobs: Some(0),
                    stop: Vec::new(),
                    extra: serde_json::Map::new(),
                });
            }
        }
        let answers = self.client.complete_all(&requests, on_done)?;
        let mut out = Vec::with_capacity(pairs.len());
        for (i, _) in pairs.iter().enumerate() {
            let logp: Vec<f64> = (0..m)
                .map(|c| {
                    let k = i * m + c;
                    echoed_answer_logprob(
                        &answers[k],
                        &self.descriptions[c],
                        self.answers[c].len(),
                        counts[k],
                    )
                })
                .collect::<crate::Result<_>>()?;
            out.push(renormalise(&logp));
        }
        Ok(out)
    }

    /// `n` completions per pair at `temperature`, seeded by `seeds[i]`; a server that sends
    /// fewer than `n` per request (llama.cpp's) is asked again, one seed per completion.
    /// `on_done` after each request.
    pub(crate) fn sample(
        &self,
        pairs: &[(u32, u32)],
        n: usize,
        temperature: f64,
        seeds: &[u64],
        on_done: &(dyn Fn() + Sync),
    ) -> crate::Result<Vec<Sampled>> {
        let request = |prompt: String, n: usize, seed: u64| CompletionRequest {
            prompt,
            max_tokens: 48,
            temperature,
            n: n as u32,
            seed: Some(seed),
            echo: false,
            logprobs: None,
            stop: vec!["<|im_end|>".into()],
            extra: self.sampling_extra.clone(),
        };
        let prompts: Vec<String> = pairs
            .iter()
            .map(|&p| self.prompt(p))
            .collect::<crate::Result<_>>()?;
        let first: Vec<CompletionRequest> = prompts
            .iter()
            .zip(seeds)
            .map(|(p, &s)| request(p.clone(), n, s))
            .collect();
        let mut texts: Vec<Vec<String>> = self
            .client
            .complete_all(&first, on_done)?
            .into_iter()
            .map(|c| c.choices.into_iter().map(|ch| ch.text).take(n).collect())
            .collect();
        let mut more = Vec::new();
        let mut owner = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            for k in t.len()..n {
                more.push(request(
                    prompts[i].clone(),
                    1,
                    seeds[i].wrapping_add(k as u64),
                ));
                owner.push(i);
            }
        }
        for (i, c) in owner
            .into_iter()
            .zip(self.client.complete_all(&more, on_done)?)
        {
            texts[i].extend(c.choices.into_iter().map(|ch| ch.text).take(1));
        }
        let m = self.answers.len();
        Ok(texts
            .iter()
            .map(|t| {
                let mut freq = vec![0u32; m];
                for c in t.iter().filter_map(|s| self.parse(s)) {
                    freq[c] += 1;
                }
                Sampled {
                    freq,
                    drawn: t.len() as u32,
                }
            })
            .collect())
    }

    /// The greedy completion of each pair's prompt (temperature 0), as text.
    pub(crate) fn greedy(&self, pairs: &[(u32, u32)]) -> crate::Result<Vec<String>> {
        let requests: Vec<CompletionRequest> = pairs
            .iter()
            .map(|&p| {
                Ok(CompletionRequest {
                    prompt: self.prompt(p)?,
                    max_tokens: 48,
                    temperature: 0.0,
                    n: 1,
                    seed: Some(0),
                    echo: false,
                    logprobs: None,
                    stop: vec!["<|im_end|>".into()],
                    extra: self.sampling_extra.clone(),
                })
            })
            .collect::<crate::Result<_>>()?;
        Ok(self
            .client
            .complete_all(&requests, &|| {})?
            .into_iter()
            .map(|c| c.choices[0].text.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wander_openai::{Choice, Logprobs, Usage};

    fn echoed(tokens: &[&str], logprobs: Vec<Option<f64>>, prompt_tokens: u64) -> Completion {
        Completion {
            choices: vec![Choice {
                text: String::new(),
                index: 0,
                logprobs: Some(Logprobs {
                    tokens: tokens.iter().map(|t| t.to_string()).collect(),
                    token_logprobs: logprobs,
                }),
                finish_reason: None,
            }],
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens: 1,
            }),
        }
    }

    #[test]
    fn an_answers_log_probability_is_the_sum_of_its_echoed_tokens() {
        // Five prompt tokens (the last two the answer and its end), then one generated token.
        let tokens = ["", "user", "\n", "drama", "", "\n"];
        let lps = vec![
            None,
            Some(-1.0),
            Some(-2.0),
            Some(-0.25),
            Some(-0.5),
            Some(-9.0),
        ];
        let c = echoed(&tokens, lps.clone(), 6);
        assert_eq!(echoed_answer_logprob(&c, "drama", 2, 6).unwrap(), -0.75);
        // A server that adds a beginning-of-sequence token counts one more.
        assert_eq!(echoed_answer_logprob(&c, "drama", 2, 5).unwrap(), -0.75);
        // One that leaves a control token out of its list is read from the end all the same.
        let short = echoed(&tokens[1..], lps[1..].to_vec(), 6);
        assert_eq!(echoed_answer_logprob(&short, "drama", 2, 6).unwrap(), -0.75);
        // vLLM writes the end token out.
        let vllm = echoed(
            &["", "user", "\n", "drama", "<|im_end|>", "\n"],
            lps.clone(),
            6,
        );
        assert_eq!(echoed_answer_logprob(&vllm, "drama", 2, 6).unwrap(), -0.75);
        // Another tokenisation, another text or a missing echo is refused, not summed.
        let err = echoed_answer_logprob(&c, "drama", 2, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenises differently"), "{err}");
        let err = echoed_answer_logprob(&c, "comedy", 2, 6)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spell"), "{err}");
        let missing = echoed(&["\n"], vec![Some(-1.0)], 6);
        assert!(echoed_answer_logprob(&missing, "drama", 2, 6).is_err());
        let mut nan = lps;
        nan[3] = Some(f64::NAN);
        assert!(echoed_answer_logprob(&echoed(&tokens, nan, 6), "drama", 2, 6).is_err());
    }

    #[test]
    fn renormalising_matches_the_runtimes_arithmetic() {
        let (p, mass) = renormalise(&[(0.2f64).ln(), (0.1f64).ln(), (0.1f64).ln()]);
        assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.25).abs() < 1e-12);
        assert!((mass - 0.4).abs() < 1e-12);
    }

    #[test]
    fn sampled_text_is_compared_after_normalising() {
        assert_eq!(normalise_answer("  Comedy,  Romance\n"), "comedy, romance");
        assert_eq!(normalise_answer("drama<|im_end|>"), "drama");
        assert_ne!(
            normalise_answer("drama, war"),
            normalise_answer("drama war")
        );
    }
}
