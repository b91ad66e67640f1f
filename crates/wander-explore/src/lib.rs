//! The exploration method of wander (P1 "LLMs for User Interest Exploration", RecSys 2024):
//! mining cluster transitions from positive engagement, a diversified fine-tuning set for the
//! novelty model, its prompts, and its offline evaluation against baselines.
#![deny(missing_docs)]

pub mod drift;
pub mod feedback;
pub mod html;
pub mod linear;
pub mod metrics;
pub mod planner;
pub mod planted;
pub mod plot;
pub mod scaling;
pub mod sft;
pub mod transitions;

/// Errors of the exploration stages.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// Invalid input or configuration.
    #[error("{0}")]
    Invalid(String),
    /// The LLM runtime failed.
    #[error(transparent)]
    Llm(#[from] wander_llm::LlmError),
    /// Filesystem or artifact error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
}

/// Result alias for [`ExploreError`].
pub type Result<T, E = ExploreError> = std::result::Result<T, E>;
