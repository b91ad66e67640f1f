//! `wander serve`: the exploration service. A request is a table lookup of the user's last
//! two clusters plus a cluster-restricted item retrieval; no LLM runs per request.
//!
//! Artifacts are swapped atomically on reload (SIGHUP or `POST /admin/reload`): a request
//! holds the version it started with until it finishes, so none fails during a reload.
#![deny(missing_docs)]

pub mod artifacts;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use wander_core::config::Config;

pub use artifacts::{Artifacts, ExploreRequest, ExploreResponse, Limits};

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The artifacts are missing, corrupt or inconsistent.
    #[error("cannot serve: {0}")]
    Artifacts(String),
    /// Artifact IO or checksum error.
    #[error("cannot serve: {0}")]
    Core(#[from] wander_core::CoreError),
    /// The table failed verification.
    #[error("cannot serve: {0}")]
    Table(#[from] wander_table::TableError),
    /// Binding or running the server failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An API error: HTTP status, a stable machine-readable code, and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_json`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// 422 with a code.
    pub fn unprocessable(code: &'static str, message: String) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Prometheus counters and the latency histogram.
#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Metrics {
    fn observe(&self, endpoint: &'static str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint, status)).or_default() += 1;
        }
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Shared state: the current artifacts (swapped on reload), config and metrics.
pub struct AppState {
    current: RwLock<Arc<Artifacts>>,
    config: Config,
    run_dir: PathBuf,
    limits: Limits,
    admin_token: String,
    metrics: Metrics,
    reloading: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Loads the run's artifacts; fails (refusing to serve) if any is corrupt.
    pub fn load(config: Config) -> Result<Arc<Self>, ServeError> {
        let run_dir = config.run.dir.clone();
        let artifacts = Artifacts::load(&run_dir, &config)?;
        let s = &config.serve;
        let admin_token =
            std::env::var("WANDER_ADMIN_TOKEN").unwrap_or_else(|_| s.admin_token.clone());
        Ok(Arc::new(AppState {
            current: RwLock::new(Arc::new(artifacts)),
            limits: Limits {
                max_history: s.max_history,
                max_clusters: s.max_clusters,
                max_items: s.max_items,
            },
            admin_token,
            run_dir,
            config,
            metrics: Metrics::default(),
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// The artifacts a new request uses.
    pub fn artifacts(&self) -> Arc<Artifacts> {
        self.current
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Loads the run directory again and swaps it in; the old version stays if it fails.
    pub async fn reload(self: &Arc<Self>) -> Result<String, String> {
        let _guard = self.reloading.lock().await;
        let me = self.clone();
        let loaded = tokio::task::spawn_blocking(move || Artifacts::load(&me.run_dir, &me.config))
            .await
            .map_err(|e| e.to_string())?;
        match loaded {
            Ok(a) => {
                let version = a.version.clone();
                match self.current.write() {
                    Ok(mut w) => *w = Arc::new(a),
                    Err(p) => *p.into_inner() = Arc::new(a),
                }
                self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(version)
            }
            Err(e) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e.to_string())
            }
        }
    }
}

type Shared = State<Arc<AppState>>;

async fn timed<F, T>(state: &AppState, endpoint: &'static str, f: F) -> Response
where
    F: std::future::Future<Output = Result<T, ApiError>>,
    T: IntoResponse,
{
    let start = Instant::now();
    let limit = Duration::from_millis(state.config.serve.timeout_ms);
    let resp = match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => v.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: format!("the request took longer than {} ms", limit.as_millis()),
        }
        .into_response(),
    };
    state.metrics.observe(
        endpoint,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let (status, code) = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        JsonRejection::BytesRejection(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        status
    };
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        code
    };
    ApiError {
        status,
        code,
        message: rejection.body_text(),
    }
}

async fn explore(
    State(state): Shared,
    body: Result<Json<ExploreRequest>, JsonRejection>,
) -> Response {
    let st = state.clone();
    timed(&state, "explore", async move {
        let Json(req) = body.map_err(json_error)?;
        let artifacts = st.artifacts();
        artifacts.explore(&req, &st.limits).map(Json)
    })
    .await
}

async fn cluster(State(state): Shared, UrlPath(id): UrlPath<String>) -> Response {
    let st = state.clone();
    timed(&state, "clusters", async move {
        let a = st.artifacts();
        // Digits beyond u32 are a number, just not a cluster.
        let unknown = |id: &str| ApiError { status: StatusCode::NOT_FOUND, code: "unknown_cluster", message: format!("no cluster {id}; ids are 0 to {}", a.n_clusters().saturating_sub(1)) };
        if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u32>().is_err() {
            return Err(unknown(&id));
        }
        let id: u32 = id.parse().map_err(|_| ApiError { status: StatusCode::BAD_REQUEST, code: "invalid_id", message: "a cluster id is a non-negative integer".into() })?;
        let c = a.cluster(id).ok_or_else(|| unknown(&id.to_string()))?;
        Ok(Json(json!({"id": c.id, "description": c.description, "keywords": c.keywords, "size": c.size, "table_version": a.version})))
    })
    .await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): Shared) -> Response {
    (
        StatusCode::OK,
        Json(json!({"ready": true, "table_version": state.artifacts().version})),
    )
        .into_response()
}

async fn metrics(State(state): Shared) -> Response {
    let m = &state.metrics;
    let mut out = String::from("# HELP wander_requests_total Requests by endpoint and status.\n# TYPE wander_requests_total counter\n");
    if let Ok(map) = m.requests.lock() {
        for ((e, s), n) in map.iter() {
            out.push_str(&format!(
                "wander_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}\n"
            ));
        }
    }
    out.push_str("# HELP wander_request_duration_seconds Request latency.\n# TYPE wander_request_duration_seconds histogram\n");
    for (b, le) in m.buckets.iter().zip(BUCKETS) {
        out.push_str(&format!(
            "wander_request_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
            b.load(Ordering::Relaxed)
        ));
    }
    let count = m.count.load(Ordering::Relaxed);
    out.push_str(&format!(
        "wander_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"
    ));
    out.push_str(&format!(
        "wander_request_duration_seconds_sum {}\n",
        m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    out.push_str(&format!("wander_request_duration_seconds_count {count}\n"));
    out.push_str(&format!("# HELP wander_table_info The exploration table being served.\n# TYPE wander_table_info gauge\nwander_table_info{{version=\"{}\"}} 1\n", state.artifacts().version));
    out.push_str(&format!(
        "# TYPE wander_reloads_total counter\nwander_reloads_total {}\n",
        m.reloads.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# TYPE wander_reload_failures_total counter\nwander_reload_failures_total {}\n",
        m.reload_failures.load(Ordering::Relaxed)
    ));
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

async fn admin_reload(State(state): Shared, headers: HeaderMap) -> Response {
    let st = state.clone();
    timed(&state, "admin_reload", async move {
        if st.admin_token.is_empty() {
            return Err(ApiError { status: StatusCode::NOT_FOUND, code: "reload_disabled", message: "no admin token is configured (serve.admin_token or WANDER_ADMIN_TOKEN); send SIGHUP to reload".into() });
        }
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), st.admin_token.as_bytes()) {
            return Err(ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: "a valid bearer token is required".into() });
        }
        match st.reload().await {
            Ok(v) => Ok(Json(json!({"reloaded": true, "table_version": v}))),
            Err(e) => {
                // The cause names server paths: it goes to the operator's log, not the client.
                eprintln!("wander: reload failed, still serving the previous version: {e}");
                Err(ApiError { status: StatusCode::CONFLICT, code: "reload_failed", message: "the new artifacts could not be loaded (the server log says why); still serving the previous version".into() })
            }
        }
    })
    .await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// A request no route answers, as JSON and counted under `endpoint="unmatched"`.
async fn unmatched(
    state: &AppState,
    status: StatusCode,
    code: &'static str,
    message: &str,
) -> Response {
    let message = format!("{message}; see GET /openapi.json");
    timed(state, "unmatched", async move {
        Err::<(), _>(ApiError {
            status,
            code,
            message,
        })
    })
    .await
}

async fn not_found(State(state): Shared) -> Response {
    unmatched(
        &state,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
    )
    .await
}

async fn method_not_allowed(State(state): Shared) -> Response {
    unmatched(
        &state,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
    .await
}

/// The OpenAPI 3 document of the service.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The router with every endpoint and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.serve.max_body_bytes;
    Router::new()
        .route("/v1/explore", post(explore))
        .route("/v1/clusters/{id}", get(cluster))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/admin/reload", post(admin_reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// What one query of a freshly started service answered (`wander run`'s serve check).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeQuery {
    /// The loopback address the service listened on.
    pub address: String,
    /// Seconds from start to ready (artifacts loaded and verified, socket bound).
    pub startup_seconds: f64,
    /// The request body sent to `POST /v1/explore`.
    pub request: serde_json::Value,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Milliseconds from sending the request to reading the whole answer.
    pub latency_ms: f64,
    /// The answer's JSON body.
    pub response: serde_json::Value,
}

/// Starts the service on an ephemeral loopback port, sends one `POST /v1/explore` over TCP
/// with [`Artifacts::example_history`], reads the answer, and shuts the service down. An
/// answer other than 200 with at least one cluster is an error.
pub fn smoke_query(mut config: Config) -> Result<SmokeQuery, ServeError> {
    config.serve.bind = "127.0.0.1:0".into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let state = AppState::load(config)?;
        let history = state.artifacts().example_history();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let startup_seconds = started.elapsed().as_secs_f64();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let request = json!({"history": history, "clusters": 2, "items": 5});
        let sent = Instant::now();
        let body = request.clone();
        let answer =
            tokio::task::spawn_blocking(move || http_post_json(address, "/v1/explore", &body))
                .await
                .map_err(|e| ServeError::Artifacts(format!("the smoke client failed: {e}")))?;
        let latency_ms = sent.elapsed().as_secs_f64() * 1e3;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        let (status, response) = answer?;
        let clusters = response["clusters"].as_array().map_or(0, |c| c.len());
        if status != 200 || clusters == 0 {
            return Err(ServeError::Artifacts(format!(
                "the service answered {status} with {clusters} clusters to {request}: {response}"
            )));
        }
        Ok(SmokeQuery {
            address: address.to_string(),
            startup_seconds,
            request,
            status,
            latency_ms,
            response,
        })
    })
}

/// One HTTP/1.1 POST over a plain blocking TCP connection (`Connection: close`): the
/// status and the JSON body of the answer. Blocking std IO keeps the client free of extra
/// tokio features; it runs on a blocking thread.
fn http_post_json(
    address: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), ServeError> {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let malformed = || ServeError::Artifacts(format!("malformed HTTP answer: {text:.200}"));
    let (head, payload) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    let json = serde_json::from_str(payload).map_err(|_| malformed())?;
    Ok((status, json))
}

/// Binds, prints the bound address (`listening on ADDR` on stderr), and serves until
/// ctrl-c; SIGHUP reloads the artifacts.
pub fn serve(config: Config) -> Result<(), ServeError> {
    let workers = if config.serve.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.serve.workers
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = AppState::load(config)?;
        let addr: SocketAddr = state.config.serve.bind.parse().map_err(|e| {
            ServeError::Artifacts(format!(
                "config: serve.bind: `{}`: {e}",
                state.config.serve.bind
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "wander: listening on {} (table {})",
            listener.local_addr()?,
            &state.artifacts().version[..12]
        );
        #[cfg(unix)]
        {
            let st = state.clone();
            tokio::spawn(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    return;
                };
                while hup.recv().await.is_some() {
                    match st.reload().await {
                        Ok(v) => eprintln!("wander: reloaded (table {})", &v[..12]),
                        Err(e) => eprintln!(
                            "wander: reload failed, still serving the previous version: {e}"
                        ),
                    }
                }
            });
        }
        let drain = Duration::from_secs(state.config.serve.drain_seconds);
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!(
                "wander: shutting down: no new connections; in-flight requests have {} s",
                drain.as_secs()
            );
            let _ = stopping_tx.send(true);
        });
        // A stalled client must not hold the process past the drain deadline.
        let deadline = async move {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            served = async { server.await } => served?,
            () = deadline => eprintln!("wander: drain deadline passed; closing the remaining connections"),
        }
        eprintln!("wander: stopped");
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and systemd send to stop).
async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
