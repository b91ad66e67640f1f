//! `wander serve`: the exploration service. A request is a table lookup of the user's last
//! two clusters plus a cluster-restricted item retrieval; no LLM runs per request.
//!
//! It reads only the run's serving bundle (`wander bundle`: the table, the catalogue, the
//! item model), and depends on no ML crate. The bundle is swapped atomically on reload (SIGHUP or `POST /admin/reload`): a request
//! holds the version it started with until it finishes, so none fails during a reload.
#![deny(missing_docs)]

pub mod api;
pub mod artifacts;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::json;
use wander_core::config::Config;

pub use artifacts::{Artifacts, ExploreRequest, ExploreResponse, Limits};

/// Errors starting the service. The reason is part of the message, not a separate source,
/// so an error chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The artifacts are missing, corrupt or inconsistent.
    #[error("cannot serve: {0}")]
    Artifacts(String),
    /// Artifact IO or checksum error.
    #[error("cannot serve: {0}")]
    Core(wander_core::CoreError),
    /// The table failed verification.
    #[error("cannot serve: {0}")]
    Table(wander_table::TableError),
    /// The serving bundle is missing, corrupt or inconsistent.
    #[error("cannot serve: {0}")]
    Bundle(wander_bundle::BundleError),
    /// Binding or running the server failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<wander_core::CoreError> for ServeError {
    fn from(e: wander_core::CoreError) -> Self {
        ServeError::Core(e)
    }
}

impl From<wander_table::TableError> for ServeError {
    fn from(e: wander_table::TableError) -> Self {
        ServeError::Table(e)
    }
}

impl From<wander_bundle::BundleError> for ServeError {
    fn from(e: wander_bundle::BundleError) -> Self {
        ServeError::Bundle(e)
    }
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
            Json(api::ErrorBody {
                error: api::ErrorDetail {
                    code: self.code.into(),
                    message: self.message,
                },
            }),
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
    connection_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests seen by the access-log sampler.
    sampled: AtomicU64,
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

    fn connection_error(&self, kind: &'static str) {
        if let Ok(mut m) = self.connection_errors.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    /// Whether this request goes to the access log: an even spread of exactly `share` of
    /// the requests (request n is logged when floor(n * share) steps up), no randomness.
    fn sample(&self, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        let n = self.sampled.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * share).floor() > (n * share).floor()
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

/// Runs a handler's work under `serve.timeout_ms` and counts it in /metrics.
///
/// The work is CPU-bound and not preempted: `tokio::time::timeout` only fires at an await
/// point, so an answer that is ready after the limit is replaced by the 503 as well (the
/// client asked for an answer within the limit or none).
async fn timed<F, T>(state: &AppState, endpoint: &'static str, f: F) -> Response
where
    F: std::future::Future<Output = Result<T, ApiError>>,
    T: IntoResponse,
{
    let limit = Duration::from_millis(state.config.serve.timeout_ms);
    within(limit, &state.metrics, endpoint, f).await
}

/// [`timed`] with the limit and the metrics given.
async fn within<F, T>(limit: Duration, metrics: &Metrics, endpoint: &'static str, f: F) -> Response
where
    F: std::future::Future<Output = Result<T, ApiError>>,
    T: IntoResponse,
{
    let start = Instant::now();
    let resp = match tokio::time::timeout(limit, f).await {
        Ok(answer) if start.elapsed() <= limit => match answer {
            Ok(v) => v.into_response(),
            Err(e) => e.into_response(),
        },
        Ok(_) | Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: format!(
                "the request took longer than serve.timeout_ms = {} ms",
                limit.as_millis()
            ),
        }
        .into_response(),
    };
    metrics.observe(
        endpoint,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Counts an answer in /metrics and passes it on.
fn counted(state: &AppState, endpoint: &'static str, start: Instant, resp: Response) -> Response {
    state.metrics.observe(
        endpoint,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Reads the whole request body within `serve.read_timeout_ms` and `serve.max_body_bytes`
/// (a client that sends its body slowly holds a connection, not the service).
async fn read_body(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let limit = state.config.serve.max_body_bytes;
    let wait = Duration::from_millis(state.config.serve.read_timeout_ms);
    let (parts, body) = req.into_parts();
    let collected = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(wait, collected).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes.to_bytes()))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!("the request body exceeds serve.max_body_bytes = {limit} bytes"),
        }),
        Ok(Err(e)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "body_unreadable",
            message: format!("the request body could not be read: {e}"),
        }),
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "body_timeout",
            message: format!(
                "the request body did not arrive within serve.read_timeout_ms = {} ms",
                wait.as_millis()
            ),
        }),
    }
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

/// Novel clusters and items for a user's recent history.
#[utoipa::path(post, path = "/v1/explore", request_body = ExploreRequest, responses(
    (status = 200, description = "Chosen clusters and items", body = ExploreResponse),
    (status = 400, description = "invalid_json, body_unreadable", body = api::ErrorBody),
    (status = 408, description = "body_timeout: the body did not arrive within serve.read_timeout_ms", body = api::ErrorBody),
    (status = 413, description = "body_too_large", body = api::ErrorBody),
    (status = 414, description = "uri_too_long (any endpoint): the target is longer than serve.max_uri_bytes", body = api::ErrorBody),
    (status = 415, description = "unsupported_media_type (send Content-Type: application/json)", body = api::ErrorBody),
    (status = 422, description = "invalid_request, history_too_long, invalid_clusters, invalid_items, invalid_feedback", body = api::ErrorBody),
    (status = 503, description = "timeout: no answer within serve.timeout_ms", body = api::ErrorBody),
))]
async fn explore(State(state): Shared, req: Request) -> Response {
    let start = Instant::now();
    let req = match read_body(&state, req).await {
        Ok(req) => req,
        Err(e) => return counted(&state, "explore", start, e.into_response()),
    };
    let st = state.clone();
    timed(&state, "explore", async move {
        let Json(req) = Json::<ExploreRequest>::from_request(req, &())
            .await
            .map_err(json_error)?;
        let artifacts = st.artifacts();
        artifacts.explore(&req, &st.limits).map(Json)
    })
    .await
}

/// One cluster's description and keywords.
#[utoipa::path(get, path = "/v1/clusters/{id}", params(("id" = u32, Path, description = "Planner-level cluster id")), responses(
    (status = 200, description = "The cluster", body = api::ClusterResponse),
    (status = 400, description = "invalid_id: not a non-negative integer", body = api::ErrorBody),
    (status = 404, description = "unknown_cluster", body = api::ErrorBody),
))]
async fn cluster(State(state): Shared, UrlPath(id): UrlPath<String>) -> Response {
    let st = state.clone();
    timed(&state, "clusters", async move {
        let a = st.artifacts();
        // Digits beyond u32 are a number, just not a cluster.
        let unknown = |id: &str| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_cluster",
            message: format!(
                "no cluster {id}; ids are 0 to {}",
                a.n_clusters().saturating_sub(1)
            ),
        };
        if !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_digit())
            && id.parse::<u32>().is_err()
        {
            return Err(unknown(&id));
        }
        let id: u32 = id.parse().map_err(|_| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_id",
            message: "a cluster id is a non-negative integer".into(),
        })?;
        let c = a.cluster(id).ok_or_else(|| unknown(&id.to_string()))?;
        Ok(Json(api::ClusterResponse {
            id: c.id,
            description: c.description.clone(),
            keywords: c.keywords.clone(),
            size: c.size,
            table_version: a.version.clone(),
        }))
    })
    .await
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the bundle is loaded and verified.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Ready, with the table version", body = api::ReadyResponse)))]
async fn readyz(State(state): Shared) -> Response {
    (
        StatusCode::OK,
        Json(api::ReadyResponse {
            ready: true,
            table_version: state.artifacts().version.clone(),
        }),
    )
        .into_response()
}

/// Prometheus metrics: request counts, latency histogram, table version, reloads,
/// connection errors.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4")))]
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
    out.push_str("# HELP wander_connection_errors_total Connections that ended in an error before or instead of an answer by the router: malformed HTTP (answered by the HTTP parser without a JSON body), header timeouts, requests cut short.\n# TYPE wander_connection_errors_total counter\n");
    if let Ok(map) = m.connection_errors.lock() {
        for (kind, n) in map.iter() {
            out.push_str(&format!(
                "wander_connection_errors_total{{kind=\"{kind}\"}} {n}\n"
            ));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Reload the run's serving bundle with an atomic swap (requests in flight finish on the
/// old version).
#[utoipa::path(post, path = "/admin/reload", security(("bearer" = [])), responses(
    (status = 200, description = "Reloaded", body = api::ReloadResponse),
    (status = 401, description = "unauthorized", body = api::ErrorBody),
    (status = 404, description = "reload_disabled: no admin token is configured", body = api::ErrorBody),
    (status = 409, description = "reload_failed: the previous version keeps serving", body = api::ErrorBody),
))]
async fn admin_reload(State(state): Shared, headers: HeaderMap) -> Response {
    let st = state.clone();
    let start = Instant::now();
    // Not under serve.timeout_ms: a reload loads and verifies every artifact, and cutting
    // it off would leave the operator not knowing which version serves.
    let answer = async move {
        if st.admin_token.is_empty() {
            return Err(ApiError { status: StatusCode::NOT_FOUND, code: "reload_disabled", message: "no admin token is configured (serve.admin_token or WANDER_ADMIN_TOKEN); send SIGHUP to reload".into() });
        }
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), st.admin_token.as_bytes()) {
            return Err(ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: "a valid bearer token is required".into() });
        }
        match st.reload().await {
            Ok(v) => Ok(Json(api::ReloadResponse { reloaded: true, table_version: v })),
            Err(e) => {
                // The cause names server paths: it goes to the operator's log, not the client.
                eprintln!("wander: reload failed, still serving the previous version: {e}");
                Err(ApiError { status: StatusCode::CONFLICT, code: "reload_failed", message: "the new artifacts could not be loaded (the server log says why); still serving the previous version".into() })
            }
        }
    }
    .await;
    let resp = match answer {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    };
    counted(&state, "admin_reload", start, resp)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
async fn openapi() -> Response {
    ([("content-type", "application/json")], openapi_json()).into_response()
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

/// The service's OpenAPI description, generated from the handlers' annotations and the
/// request and response types (so it cannot drift from them).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "wander exploration service",
        version = "1",
        description = "Novel interest clusters for a user's recent history (LLM-planned offline, served by table lookup) and the items to show from them."
    ),
    paths(explore, cluster, healthz, readyz, metrics, openapi, admin_reload),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as JSON (built once).
pub fn openapi_json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        use utoipa::OpenApi;
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// Every route, as the router mounts them (a test checks that the OpenAPI document has
/// exactly these).
pub const ROUTES: [&str; 7] = [
    "/v1/explore",
    "/v1/clusters/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin/reload",
];

/// The router with every endpoint and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.serve.max_body_bytes;
    let [explore_at, cluster_at, healthz_at, readyz_at, metrics_at, openapi_at, reload_at] = ROUTES;
    Router::new()
        .route(explore_at, post(explore))
        .route(cluster_at, get(cluster))
        .route(healthz_at, get(healthz))
        .route(readyz_at, get(readyz))
        .route(metrics_at, get(metrics))
        .route(openapi_at, get(openapi))
        .route(reload_at, post(admin_reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// Before routing: refuses an overlong request target (JSON 414), and writes the sampled
/// access log line after the answer.
async fn edge(State(state): Shared, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let serve = &state.config.serve;
    let logged = state.metrics.sample(serve.access_log).then(|| {
        let peer = req
            .extensions()
            .get::<server::PeerAddr>()
            .map(|p| p.0.to_string());
        let bytes_in: Option<u64> = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let path: String = req.uri().path().chars().take(512).collect();
        (peer, req.method().to_string(), path, bytes_in)
    });
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let resp = if target > serve.max_uri_bytes {
        let message = format!(
            "the request target is {target} bytes; serve.max_uri_bytes = {}",
            serve.max_uri_bytes
        );
        unmatched(&state, StatusCode::URI_TOO_LONG, "uri_too_long", &message).await
    } else {
        next.run(req).await
    };
    if let Some((peer, method, path, bytes_in)) = logged {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = json!({
            "ts": (now * 1e3).round() / 1e3,
            "peer": peer,
            "method": method,
            "path": path,
            "status": resp.status().as_u16(),
            "ms": (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            "bytes_in": bytes_in,
        });
        eprintln!("{line}");
    }
    resp
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
        let server = tokio::spawn(server::serve_connections(
            listener,
            state,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
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
        if state.config.serve.watch_ms > 0 {
            tokio::spawn(watch(state.clone()));
        }
        let drain = Duration::from_secs(state.config.serve.drain_seconds);
        let stopping = async move {
            shutdown_signal().await;
            eprintln!(
                "wander: shutting down: no new connections; in-flight requests have {} s",
                drain.as_secs()
            );
        };
        // A stalled client cannot hold the process past the drain deadline.
        match server::serve_connections(listener, state, stopping, drain).await {
            server::Ended::Drained => {}
            server::Ended::DeadlinePassed { open } => {
                eprintln!("wander: drain deadline passed; closed {open} remaining connection(s)")
            }
        }
        eprintln!("wander: stopped");
        Ok(())
    })
}

/// Every `serve.watch_ms`, loads `run.dir` again when it holds another bundle than the one
/// last seen there (`wander publish` switched its `current` link, or a new bundle was
/// written); a version that fails to load leaves the previous one serving and is not
/// retried until the folder changes again.
async fn watch(state: Arc<AppState>) {
    let every = Duration::from_millis(state.config.serve.watch_ms);
    let run_dir = state.run_dir.clone();
    let signature = move || {
        let dir = run_dir.clone();
        async move {
            tokio::task::spawn_blocking(move || artifacts::bundle_signature(&dir))
                .await
                .ok()
                .flatten()
        }
    };
    let mut seen = signature().await;
    loop {
        tokio::time::sleep(every).await;
        let now = signature().await;
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        match state.reload().await {
            Ok(v) => eprintln!(
                "wander: {} changed: loaded table {}",
                state.run_dir.display(),
                &v[..12]
            ),
            Err(e) => eprintln!(
                "wander: {} changed but does not load, still serving the previous version: {e}",
                state.run_dir.display()
            ),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_a_bundle_is_refused_once_with_what_to_run() {
        let tmp = tempfile::tempdir().unwrap();
        let config = wander_core::config::Config::default_config();
        let err = match Artifacts::load(tmp.path(), &config) {
            Ok(_) => panic!("an empty run directory must not be served"),
            Err(e) => e,
        };
        let mut chain = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            chain.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(chain.contains("run `wander bundle` first"), "{chain}");
        assert_eq!(chain.matches("has not been run").count(), 1, "{chain}");
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_the_types_sent() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut routes = ROUTES.to_vec();
        routes.sort_unstable();
        assert_eq!(paths, routes);
        let schemas = &doc["components"]["schemas"];
        let req = &schemas["ExploreRequest"];
        assert_eq!(req["additionalProperties"], false, "{req}");
        assert_eq!(req["required"], serde_json::json!(["history"]), "{req}");
        assert_eq!(req["properties"]["clusters"]["default"], 1, "{req}");
        let fallback = schemas["Fallback"].to_string();
        assert!(
            fallback.contains("cold_start") && fallback.contains("pair_not_in_table"),
            "{fallback}"
        );
        let explore = &doc["paths"]["/v1/explore"]["post"]["responses"];
        for status in ["200", "400", "408", "413", "414", "415", "422", "503"] {
            assert!(explore[status].is_object(), "{status}: {explore}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // What the handlers send serialises to the documented property names.
        let answer = serde_json::to_value(api::ClusterResponse {
            id: 1,
            description: "d".into(),
            keywords: vec![],
            size: 2,
            table_version: "v".into(),
        })
        .unwrap();
        let documented: Vec<&String> = schemas["ClusterResponse"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        let sent: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(documented, sent);
    }

    fn blocking_work(ms: u64) -> impl std::future::Future<Output = Result<&'static str, ApiError>> {
        async move {
            // CPU-bound work holds the thread: no await point for a timer to fire at.
            std::thread::sleep(Duration::from_millis(ms));
            Ok("done")
        }
    }

    #[tokio::test]
    async fn an_answer_ready_after_the_limit_is_a_503_timeout() {
        let metrics = Metrics::default();
        let late = within(
            Duration::from_millis(5),
            &metrics,
            "explore",
            blocking_work(40),
        )
        .await;
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(late.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "timeout");
        let on_time = within(
            Duration::from_millis(2000),
            &metrics,
            "explore",
            blocking_work(1),
        )
        .await;
        assert_eq!(on_time.status(), StatusCode::OK);
        let counts = metrics.requests.lock().unwrap().clone();
        assert_eq!(counts.get(&("explore", 503)), Some(&1));
        assert_eq!(counts.get(&("explore", 200)), Some(&1));
    }

    #[tokio::test]
    async fn an_answer_that_awaits_past_the_limit_is_cut_off() {
        let metrics = Metrics::default();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ApiError>("never")
        };
        let started = Instant::now();
        let resp = within(Duration::from_millis(10), &metrics, "explore", slow).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_access_log_sample_is_exactly_the_share() {
        for (share, expected) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000)] {
            let metrics = Metrics::default();
            let logged = (0..1000).filter(|_| metrics.sample(share)).count();
            assert_eq!(logged, expected, "share {share}");
        }
    }
}
