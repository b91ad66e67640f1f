//! The load test's ceiling: an axum service that does what any JSON endpoint must (accept
//! the connection, read and parse the explore request's body, serialise an answer) and
//! nothing else. `scripts/loadtest.sh` runs it with the same wrk settings as `wander serve`,
//! on the same cores, so the ratio between the two is what wander's own work costs.
//!
//! `cargo run --release -p wander-serve --example ceiling -- 127.0.0.1:18081`

use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    history: Vec<serde_json::Value>,
    #[serde(default)]
    clusters: usize,
    #[serde(default)]
    items: usize,
}

#[derive(Serialize)]
struct Answer {
    history_items: usize,
    clusters: usize,
    items: usize,
}

async fn answer(Json(req): Json<Request>) -> Json<Answer> {
    Json(Answer {
        history_items: req.history.len(),
        clusters: req.clusters,
        items: req.items,
    })
}

fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    // As `wander serve` with `serve.workers = 0`: one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&bind).await?;
        eprintln!("ceiling: listening on {}", listener.local_addr()?);
        let app = Router::new().route("/v1/explore", post(answer));
        axum::serve(listener, app).await
    })
}
