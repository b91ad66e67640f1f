//! A client of an OpenAI-compatible completions endpoint (`POST {endpoint}/completions`), as
//! vLLM, llama.cpp's `llama-server`, llama-cpp-python's server and many hosted services
//! offer it: what wander needs to run its novelty model on a bigger LLM served elsewhere.
//!
//! Completions, not chat: wander writes the chat template itself, so the server sees
//! exactly the tokens wander's own runtime would, and a prompt can end in the middle of an
//! assistant turn (how an answer's probability is read: the prompt plus the answer, echoed
//! back with the log-probability of every token).
//!
//! Every request goes through [`Client::complete`]: an on-disk cache keyed on the endpoint
//! and the request body (a rerun of a stage does not pay twice), a timeout, and retries with
//! exponential backoff on transport errors and on the statuses a busy server answers (429,
//! 5xx). [`Client::complete_all`] runs many with bounded concurrency.
//!
//! Plain HTTP only: the build carries no TLS stack. A `https://` endpoint is refused with a
//! message that says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    /// The server answered with a status that retrying does not fix (or retries ran out).
    #[error("{url}: the server answered HTTP {status}: {body}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("{url}: {detail} (after {attempts} attempts; is the server running? check llm.openai.endpoint)")]
    Transport {
        /// The request's URL.
        url: String,
        /// What the transport said.
        detail: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The answer is not the JSON an OpenAI-compatible server sends.
    #[error("{url}: the answer is not a completion: {detail}")]
    Parse {
        /// The request's URL.
        url: String,
        /// What did not parse.
        detail: String,
    },
    /// The request cache could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A setting or an argument that cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// This crate's results.
pub type Result<T> = std::result::Result<T, OpenAiError>;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Base URL up to and including the API version, e.g. `http://127.0.0.1:8080/v1`.
    pub endpoint: String,
    /// The model name the server knows (vLLM: the served name or a LoRA module's name).
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries after the first attempt, on transport errors, 429 and 5xx.
    pub max_retries: u32,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Wait before the first retry; doubled at each further one (at most 30 s).
    pub backoff: Duration,
    /// Where answers are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
}

/// One `POST /completions` request (the model name is added by the client).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRequest {
    /// The whole prompt text, chat template included.
    pub prompt: String,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Completions wanted from this prompt (some servers ignore it and send one).
    pub n: u32,
    /// Sampling seed, where the server honours one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Whether the prompt's tokens come back in front of the completion's.
    pub echo: bool,
    /// Log-probabilities wanted: `Some(k)` returns each token's and the top k alternatives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Strings that end a completion.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Server-specific fields sent beside the standard ones (e.g. llama.cpp's `top_k`,
    /// `min_p`, `repeat_penalty`), which a server that does not know them ignores.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A server's answer to a [`CompletionRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// One per completion.
    pub choices: Vec<Choice>,
    /// Token counts, where the server reports them.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The generated text (after the prompt's text where `echo` was set).
    pub text: String,
    /// Its position among the request's `n`.
    #[serde(default)]
    pub index: u32,
    /// Per-token log-probabilities, when asked for.
    #[serde(default)]
    pub logprobs: Option<Logprobs>,
    /// Why generation stopped (`stop`, `length`).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The legacy completions API's log-probabilities: one entry per token, the prompt's first
/// where `echo` was set (its first token has none: nothing precedes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    /// Each token's text.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    #[serde(default)]
    pub token_logprobs: Vec<Option<f64>>,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt as the server tokenised it.
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// What a client has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClientStats {
    /// Requests answered (from the server or the cache).
    pub requests: u64,
    /// Of those, answered from the cache.
    pub cache_hits: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// Seconds spent waiting for the server (summed over concurrent requests).
    pub server_seconds: f64,
}

/// A client of one endpoint and model.
pub struct Client {
    config: ClientConfig,
    agent: ureq::Agent,
    requests: AtomicU64,
    cache_hits: AtomicU64,
    retries: AtomicU64,
    server_micros: AtomicU64,
}

/// Status codes a healthy server answers when it is only busy or restarting.
fn retryable(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status)
}

impl Client {
    /// A client; checks the settings but does not contact the server.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let url = config.endpoint.trim_end_matches('/');
        if url.starts_with("https://") {
            return Err(OpenAiError::Invalid(format!(
                "{url}: https is not built in (wander carries no TLS stack); use the server's plain-HTTP address inside the cluster, or a local TLS-terminating proxy"
            )));
        }
        if !url.starts_with("http://") {
            return Err(OpenAiError::Invalid(format!(
                "`{url}`: the endpoint must be a URL such as http://127.0.0.1:8080/v1"
            )));
        }
        if config.model.is_empty() {
            return Err(OpenAiError::Invalid(
                "the model name is empty: set it to the name the server serves".into(),
            ));
        }
        if config.concurrency == 0 {
            return Err(OpenAiError::Invalid(
                "concurrency must be at least 1".into(),
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(config.concurrency.max(1))
            .build()
            .into();
        Ok(Client {
            config: ClientConfig {
                endpoint: url.to_string(),
                ..config
            },
            agent,
            requests: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            server_micros: AtomicU64::new(0),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// What it has done so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            server_seconds: self.server_micros.load(Ordering::Relaxed) as f64 * 1e-6,
        }
    }

    /// The model names the server lists (`GET /models`); also a readiness check.
    pub fn models(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Model>,
        }
        let url = format!("{}/models", self.config.endpoint);
        let body = self.send(&url, None)?;
        let models: Models = serde_json::from_str(&body).map_err(|e| OpenAiError::Parse {
            url,
            detail: e.to_string(),
        })?;
        Ok(models.data.into_iter().map(|m| m.id).collect())
    }

    /// The request body as sent: the request's fields and the model name.
    fn body(&self, request: &CompletionRequest) -> Result<String> {
        let mut value = serde_json::to_value(request)
            .map_err(|e| OpenAiError::Invalid(format!("request: {e}")))?;
        value["model"] = serde_json::Value::String(self.config.model.clone());
        Ok(value.to_string())
    }

    /// Where the answer to `body` is cached.
    fn cache_path(&self, body: &str) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        let key =
            wander_core::hash::sha256_hex(format!("{}\n{}", self.config.endpoint, body).as_bytes());
        Some(dir.join(&key[..2]).join(format!("{key}.json")))
    }

    /// One completion: from the cache, or from the server (then cached).
    pub fn complete(&self, request: &CompletionRequest) -> Result<Completion> {
        let url = format!("{}/completions", self.config.endpoint);
        let body = self.body(request)?;
        let cached = self.cache_path(&body);
        if let Some(path) = &cached {
            if let Ok(text) = std::fs::read_to_string(path) {
                // A damaged cache entry is asked again, not trusted.
                if let Ok(c) = serde_json::from_str::<Completion>(&text) {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
            }
        }
        let text = self.send(&url, Some(&body))?;
        let completion: Completion =
            serde_json::from_str(&text).map_err(|e| OpenAiError::Parse {
                url: url.clone(),
                detail: format!("{e}; the answer starts {}", head(&text)),
            })?;
        if completion.choices.is_empty() {
            return Err(OpenAiError::Parse {
                url,
                detail: "no choices".into(),
            });
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = cached {
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(completion)
    }

    /// Every request, at most `concurrency` at a time, in order; `on_done` after each. The
    /// first failure stops the rest and is returned.
    pub fn complete_all(
        &self,
        requests: &[CompletionRequest],
        on_done: &(dyn Fn() + Sync),
    ) -> Result<Vec<Completion>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let slots: Vec<Mutex<Option<Result<Completion>>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.config.concurrency.min(requests.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let result = self.complete(request);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                    on_done();
                });
            }
        });
        let mut out = Vec::with_capacity(requests.len());
        let mut first_error = None;
        for slot in slots {
            match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A GET (no body) or a JSON POST, with retries; the answer's body on a 2xx status.
    fn send(&self, url: &str, body: Option<&str>) -> Result<String> {
        let attempts = self.config.max_retries + 1;
        let mut wait = self.config.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            let started = Instant::now();
            let answer = match body {
                Some(b) => {
                    let mut req = self
                        .agent
                        .post(url)
                        .header("Content-Type", "application/json");
                    if let Some(key) = &self.config.api_key {
                        req = req.header("Authorization", format!("Bearer {key}"));
                    }
                    req.send(b)
                }
                None => {
                    let mut req = self.agent.get(url);
                    if let Some(key) = &self.config.api_key {
                        req = req.header("Authorization", format!("Bearer {key}"));
                    }
                    req.call()
                }
            };
            let read = answer.and_then(|mut r| {
                let status = r.status().as_u16();
                r.body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_string()
                    .map(|text| (status, text))
            });
            self.server_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match read {
                Ok((status, text)) if (200..300).contains(&status) => return Ok(text),
                Ok((status, text)) if retryable(status) && attempt < attempts => {
                    last = format!("HTTP {status}: {}", head(&text));
                }
                Ok((status, text)) => {
                    return Err(OpenAiError::Status {
                        url: url.to_string(),
                        status,
                        body: head(&text),
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(OpenAiError::Transport {
            url: url.to_string(),
            detail: last,
            attempts,
        })
    }
}

/// The first 300 characters of a body, for error messages.
fn head(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

/// Writes a file whole or not at all (a concurrent reader never sees half an answer).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| OpenAiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    fn config(endpoint: &str, cache: Option<PathBuf>) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.into(),
            model: "m".into(),
            api_key: Some("k".into()),
            concurrency: 2,
            max_retries: 2,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(10),
            cache_dir: cache,
        }
    }

    fn request(prompt: &str) -> CompletionRequest {
        CompletionRequest {
            prompt: prompt.into(),
            max_tokens: 1,
            temperature: 0.0,
            n: 1,
            seed: Some(7),
            echo: true,
            logprobs: Some(0),
            stop: vec![],
            extra: serde_json::Map::new(),
        }
    }

    /// A server on loopback that answers each connection's one request with the next of
    /// `answers` (status, body), and records what it was sent.
    fn serve(answers: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut req_body = vec![0; length];
                reader.read_exact(&mut req_body).unwrap();
                seen.push(format!("{head}{}", String::from_utf8(req_body).unwrap()));
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (url, handle)
    }

    const ECHOED: &str = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":"ab\n","index":0,"logprobs":{"tokens":["a","b","\n"],"text_offset":[0,1,2],"token_logprobs":[null,-0.5,-1.25],"top_logprobs":[null,{},{}]},"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;

    #[test]
    fn parses_an_echoed_completion_with_log_probabilities() {
        let c: Completion = serde_json::from_str(ECHOED).unwrap();
        let lp = c.choices[0].logprobs.as_ref().unwrap();
        assert_eq!(lp.token_logprobs, vec![None, Some(-0.5), Some(-1.25)]);
        assert_eq!(c.usage.unwrap().prompt_tokens, 2);
        // vLLM omits logprobs and usage's completion tokens in some answers.
        let bare: Completion =
            serde_json::from_str(r#"{"choices":[{"text":"x"}],"usage":{"prompt_tokens":3}}"#)
                .unwrap();
        assert_eq!(bare.choices[0].logprobs, None);
        assert_eq!(bare.usage.unwrap().completion_tokens, 0);
    }

    #[test]
    fn retries_a_busy_server_then_caches_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (url, server) = serve(vec![
            (503, r#"{"error":"loading"}"#.into()),
            (200, ECHOED.into()),
        ]);
        let client = Client::new(config(&url, Some(dir.path().into()))).unwrap();
        let c = client.complete(&request("ab")).unwrap();
        assert_eq!(c.choices[0].text, "ab\n");
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[1].starts_with("POST /v1/completions"), "{}", seen[1]);
        assert!(seen[1].contains("Bearer k"));
        let sent: serde_json::Value =
            serde_json::from_str(seen[1].rsplit("\r\n\r\n").next().unwrap()).unwrap();
        assert_eq!(sent["model"], "m");
        assert_eq!(sent["echo"], true);
        assert_eq!(sent["seed"], 7);
        assert_eq!(client.stats().retries, 1);
        // The server is gone: the same request comes from the cache, a new one fails.
        let again = client.complete(&request("ab")).unwrap();
        assert_eq!(again, c);
        assert_eq!(client.stats().cache_hits, 1);
        let err = client.complete(&request("other")).unwrap_err();
        assert!(
            matches!(err, OpenAiError::Transport { attempts: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_client_error_is_not_retried_and_names_the_url() {
        let (url, server) = serve(vec![(400, r#"{"error":"bad model"}"#.into())]);
        let client = Client::new(config(&url, None)).unwrap();
        let err = client.complete(&request("x")).unwrap_err().to_string();
        assert!(
            err.contains("/v1/completions") && err.contains("400") && err.contains("bad model"),
            "{err}"
        );
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn many_requests_come_back_in_order() {
        let answers: Vec<(u16, String)> = (0..5)
            .map(|i| (200, ECHOED.replace("\"ab\\n\"", &format!("\"{i}\""))))
            .collect();
        let (url, server) = serve(answers);
        let mut cfg = config(&url, None);
        cfg.concurrency = 1; // the test server answers one connection at a time
        let client = Client::new(cfg).unwrap();
        let reqs: Vec<CompletionRequest> = (0..5).map(|i| request(&i.to_string())).collect();
        let done = AtomicUsize::new(0);
        let out = client
            .complete_all(&reqs, &|| {
                done.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let texts: Vec<&str> = out.iter().map(|c| c.choices[0].text.as_str()).collect();
        assert_eq!(texts, ["0", "1", "2", "3", "4"]);
        assert_eq!(done.load(Ordering::Relaxed), 5);
        server.join().unwrap();
    }

    #[test]
    fn refuses_endpoints_it_cannot_reach() {
        for bad in ["https://api.example.com/v1", "localhost:8080", ""] {
            assert!(Client::new(config(bad, None)).is_err(), "{bad}");
        }
        let mut cfg = config("http://127.0.0.1:1/v1", None);
        cfg.model = String::new();
        assert!(Client::new(cfg).is_err());
    }
}
