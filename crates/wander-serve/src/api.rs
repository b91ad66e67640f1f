//! The answers of the endpoints that are not the explore request, and the error body: typed,
//! so that the OpenAPI document is generated from what the handlers send.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/clusters/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterResponse {
    /// Planner-level id.
    pub id: u32,
    /// The description the planner reads and writes.
    pub description: String,
    /// Keywords, best first.
    pub keywords: Vec<String>,
    /// Items in the cluster.
    pub size: usize,
    /// Version of the exploration table being served.
    pub table_version: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Always true (an unready service does not answer).
    pub ready: bool,
    /// Version of the exploration table being served.
    pub table_version: String,
}

/// `POST /admin/reload`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadResponse {
    /// Always true (a failed reload is a 409).
    pub reloaded: bool,
    /// Version now served.
    pub table_version: String,
}

/// The body of every JSON error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_json`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}
