//! `wander run`: every stage in order, with where it is and how long each step took.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::common::clock;
use crate::{log, Result, ResultExt, StageContext, Summary};

/// What `wander run` did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Whether it was a smoke run (the quick profile).
    pub smoke: bool,
    /// Seconds for the whole run.
    pub wall_seconds: f64,
    /// Seconds of each step, by folder name (skipped steps included).
    pub step_wall_seconds: BTreeMap<&'static str, f64>,
    /// Peak resident memory of this process during each step, MiB, by folder name (Linux;
    /// empty where the kernel cannot reset the high-water mark). Child processes, such as
    /// the service that the serve check starts, are not counted.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub step_peak_rss_mib: BTreeMap<&'static str, f64>,
    /// Each step's summary, by folder name.
    pub stages: BTreeMap<&'static str, Summary>,
    /// For a smoke run, that its figures are not results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run finished: {} steps in {} into {}{}",
            self.stages.len(),
            clock(self.wall_seconds),
            self.run_dir.display(),
            if self.smoke {
                " (smoke run: not results)"
            } else {
                ""
            }
        )
    }
}

/// Runs [`crate::stages::run_order`] with a progress line before and after each step (step
/// i of N, elapsed time; long stages draw their own bars with an ETA).
pub fn run_all(ctx: &StageContext, force: bool) -> Result<RunSummary> {
    let started_run = Instant::now();
    let order = crate::stages::run_order();
    let total = order.len();
    if ctx.config.run.smoke {
        log(format!(
            "smoke run into {}: every stage with small settings; its figures are not results",
            ctx.config.run.dir.display()
        ));
    }
    let mut stages = BTreeMap::new();
    let mut wall = BTreeMap::new();
    let mut peak = BTreeMap::new();
    for (i, stage) in order.iter().enumerate() {
        let id = stage.id();
        log(format!(
            "[{}/{total}] {id} (run elapsed {})",
            i + 1,
            clock(started_run.elapsed().as_secs_f64())
        ));
        let started = Instant::now();
        let measured = wander_core::memory::reset_peak_rss();
        let summary = stage
            .run(ctx, force)
            .with_context(|| format!("wander run: step {}/{total}, {id}", i + 1))?;
        let seconds = started.elapsed().as_secs_f64();
        let peak_mib = measured
            .then(wander_core::memory::peak_rss_bytes)
            .flatten()
            .map(|b| b as f64 / 1048576.0);
        if summary.fields().get("stage").is_some() {
            log(&summary);
        }
        log(format!(
            "[{}/{total}] {id} done in {}{} (run elapsed {})",
            i + 1,
            clock(seconds),
            peak_mib
                .map(|m| format!(", peak memory {m:.0} MiB"))
                .unwrap_or_default(),
            clock(started_run.elapsed().as_secs_f64())
        ));
        wall.insert(id.folder(), seconds);
        if let Some(m) = peak_mib {
            peak.insert(id.folder(), m);
        }
        stages.insert(id.folder(), summary);
    }
    Ok(RunSummary {
        run_dir: ctx.config.run.dir.clone(),
        smoke: ctx.config.run.smoke,
        wall_seconds: started_run.elapsed().as_secs_f64(),
        step_wall_seconds: wall,
        step_peak_rss_mib: peak,
        stages,
        note: ctx
            .config
            .run
            .smoke
            .then_some("smoke run (quick profile): small settings, not results"),
    })
}
