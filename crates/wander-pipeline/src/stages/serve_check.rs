//! The last step of `wander run`: the service started over the run and queried once.

use crate::log;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// The last step of `wander run`: starts the service on an ephemeral loopback port over the
/// run's artifacts, queries `POST /v1/explore` once and stops it.
pub fn serve_check(ctx: &StageContext, _force: bool) -> crate::Result<Summary> {
    let q = wander_serve::smoke_query(ctx.config.clone())?;
    let clusters: Vec<&str> = q.response["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["description"].as_str())
        .collect();
    log(format!(
        "serve check: listening on {} after {:.1} s; POST /v1/explore {} -> {} in {:.1} ms: clusters [{}], {} items",
        q.address,
        q.startup_seconds,
        q.request["history"],
        q.status,
        q.latency_ms,
        clusters.join("; "),
        q.response["items"].as_array().map_or(0, |i| i.len())
    ));
    Ok(Summary::new(StageId::ServeCheck, serde_json::to_value(&q)?))
}
