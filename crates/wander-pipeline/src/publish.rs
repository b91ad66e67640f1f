//! `wander publish`: the serving bundle as numbered versions behind gates, and rollback
//! (F1, "Refresh": production halts a refresh whose model falls below its thresholds and
//! keeps the previous table serving).
//!
//! Layout of `publish.dir`:
//!
//! ```text
//! versions/<N>/bundle/...      the bundle stage folder, manifest included (what serve reads)
//! versions/<N>/publish.json    the gates it passed, the run it came from, when
//! current -> versions/<N>      the version serve loads (`run.dir = "<dir>/current"`)
//! history.jsonl                every attempt: published, refused, rolled back
//! ```
//!
//! A version is copied into a partial folder and renamed into place, then `current` is
//! replaced by a link renamed over it: each step is atomic, so a reader sees the old
//! version or the new one, never half of one, and a crash leaves at most a partial folder
//! that the next publish removes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wander_core::artifact::RunDir;

use crate::artifacts::open;
use crate::summaries::{EvalAlignmentSummary, EvalNoveltySummary, NoveltyFigures};
use crate::{StageContext, StageId};

/// Name of the link to the version being served.
pub const CURRENT: &str = "current";
/// Folder of the versions.
pub const VERSIONS: &str = "versions";
/// Record of one version's publication, inside its folder.
pub const RECORD: &str = "publish.json";
/// Every attempt, one JSON line each.
pub const HISTORY: &str = "history.jsonl";

/// One gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// What it checks (`recall_at_5`, ...).
    pub name: String,
    /// The run's figure (`None`: the run does not have it, which fails the gate).
    pub value: Option<f64>,
    /// The least value that passes.
    pub threshold: f64,
    /// Whether it passed.
    pub passed: bool,
    /// Where the figure comes from, or why it is missing.
    pub source: String,
}

/// What `wander publish` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishSummary {
    /// `publish`, `refuse`, `rollback` or `list`.
    pub action: String,
    /// The version made current by this call (`None`: nothing changed).
    pub published: Option<u32>,
    /// The version serving now.
    pub current: Option<u32>,
    /// The gates, in order (empty for rollback and list).
    pub gates: Vec<Gate>,
    /// Every version kept, oldest first.
    pub versions: Vec<u32>,
    /// Versions removed by `publish.keep`.
    pub removed: Vec<u32>,
    /// The folder of the versions.
    pub dir: PathBuf,
}

impl std::fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.map_or("none".to_string(), |v| format!("v{v}"));
        match self.action.as_str() {
            "publish" => write!(
                f,
                "published v{} ({} gates passed); serving {current} from {}",
                self.published.unwrap_or(0),
                self.gates.len(),
                self.dir.display()
            )?,
            "refuse" => {
                let failed: Vec<String> = self
                    .gates
                    .iter()
                    .filter(|g| !g.passed)
                    .map(|g| match g.value {
                        Some(v) => format!("{} {v:.4} < {}", g.name, g.threshold),
                        None => format!("{} missing ({})", g.name, g.source),
                    })
                    .collect();
                write!(f, "refused: {}; still serving {current}", failed.join(", "))?
            }
            "rollback" => write!(
                f,
                "rolled back: serving {current} from {}",
                self.dir.display()
            )?,
            _ => write!(
                f,
                "serving {current}; versions {:?} in {}",
                self.versions,
                self.dir.display()
            )?,
        }
        Ok(())
    }
}

/// One version's record ([`RECORD`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version.
    pub version: u32,
    /// The run directory it came from.
    pub run_dir: PathBuf,
    /// Checksum of the bundle's manifest.
    pub bundle_manifest: String,
    /// The gates it passed.
    pub gates: Vec<Gate>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

/// The folder of the versions for this configuration.
pub fn publish_dir(ctx: &StageContext) -> PathBuf {
    let dir = &ctx.config.publish.dir;
    if dir.is_empty() {
        ctx.config.run.dir.join("published")
    } else {
        PathBuf::from(dir)
    }
}

/// Versions present, oldest first (partial folders excluded).
pub fn versions(dir: &Path) -> crate::Result<Vec<u32>> {
    let root = dir.join(VERSIONS);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let name = entry?.file_name();
        if let Some(v) = name.to_str().and_then(|n| n.parse::<u32>().ok()) {
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The version `current` points at.
pub fn current(dir: &Path) -> crate::Result<Option<u32>> {
    let link = dir.join(CURRENT);
    match std::fs::read_link(&link) {
        Ok(target) => {
            let v = target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok());
            match v {
                Some(v) => Ok(Some(v)),
                None => bail!(
                    "{}: points at {}, not at a version",
                    link.display(),
                    target.display()
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => bail!("{}: {e}", link.display()),
    }
}

/// The gates of the run's evaluations, checked to be of the models the table came from.
pub fn gates(ctx: &StageContext, dir: &Path) -> crate::Result<Vec<Gate>> {
    let cfg = &ctx.config.publish;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let pre = run.read_manifest(StageId::Precompute.folder())?;
    let model_of = |stage: StageId| {
        pre.inputs
            .get(&format!("{}/manifest.json", stage.folder()))
            .cloned()
    };
    // An evaluation counts only if it read the very model the table was computed with.
    let evaluation = |eval: StageId, model: StageId| -> Result<serde_json::Value, String> {
        let m = run
            .read_manifest(eval.folder())
            .map_err(|_| format!("`wander {}` has not run", eval.label()))?;
        let read = m.inputs.get(&format!("{}/manifest.json", model.folder()));
        if read.is_none() || read.cloned() != model_of(model) {
            return Err(format!(
                "`wander {}` evaluated another {} than the table's; rerun it",
                eval.label(),
                model.label()
            ));
        }
        Ok(m.summary)
    };
    let mut out = Vec::new();
    let mut gate =
        |name: &str, value: Result<Option<f64>, String>, threshold: f64, source: &str| {
            let (value, source) = match value {
                Ok(Some(v)) if v.is_finite() => (Some(v), source.to_string()),
                Ok(_) => (None, format!("{source}: no finite figure")),
                Err(e) => (None, e),
            };
            out.push(Gate {
                name: name.into(),
                value,
                threshold,
                passed: value.is_some_and(|v| v >= threshold),
                source,
            });
        };
    let novelty = evaluation(StageId::EvalNovelty, StageId::TrainNovelty).and_then(|s| {
        crate::summaries::read::<EvalNoveltySummary>(StageId::EvalNovelty, &s)
            .map_err(|e| e.to_string())
    });
    let tuned = novelty.and_then(|s| {
        s.methods
            .get("fine_tuned")
            .cloned()
            .ok_or_else(|| "eval novelty has no fine_tuned method".to_string())
    });
    let figure =
        |pick: fn(&NoveltyFigures) -> Option<f64>| tuned.as_ref().map(pick).map_err(Clone::clone);
    let recall = figure(|t| Some(t.hit_at_5.mean));
    gate(
        "exact_match_greedy",
        figure(|t| t.exact_match_greedy.map(|e| e.mean)),
        cfg.min_exact_match,
        "eval novelty, fine_tuned",
    );
    gate(
        "constrained_validity",
        figure(|t| t.constrained_validity.map(|e| e.mean)),
        cfg.min_constrained_validity,
        "eval novelty, fine_tuned",
    );
    gate(
        "recall_at_5",
        recall.clone(),
        cfg.min_recall_at_5,
        "eval novelty, fine_tuned hit@5",
    );
    let alignment = evaluation(StageId::EvalAlignment, StageId::TrainAlignment).and_then(|s| {
        crate::summaries::read::<EvalAlignmentSummary>(StageId::EvalAlignment, &s)
            .map_err(|e| e.to_string())
    });
    gate(
        "alignment_spearman",
        alignment.and_then(|s| {
            s.methods
                .get("alignment_llm")
                .map(|f| Some(f.spearman.mean))
                .ok_or_else(|| "eval alignment has no alignment_llm method".to_string())
        }),
        cfg.min_alignment_spearman,
        "eval alignment, alignment_llm",
    );
    // Against the version serving now: a refresh must not lose more than max_recall_drop.
    // A serving version with no hit@5 at all leaves nothing to lose: no relative gate.
    if let Some(v) = current(dir)? {
        let record: VersionRecord = read_record(dir, v)?;
        if let Some(before) = record
            .gates
            .iter()
            .find(|g| g.name == "recall_at_5")
            .and_then(|g| g.value)
            .filter(|&b| b > 0.0)
        {
            gate(
                "recall_at_5_vs_current",
                recall.map(|r| r.map(|r| r / before)),
                1.0 - cfg.max_recall_drop,
                &format!("hit@5 relative to v{v}'s {before:.4}"),
            );
        }
    }
    Ok(out)
}

fn read_record(dir: &Path, v: u32) -> crate::Result<VersionRecord> {
    let path = dir.join(VERSIONS).join(v.to_string()).join(RECORD);
    let bytes = std::fs::read(&path)
        .map_err(|e| crate::PipelineError::Invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| crate::PipelineError::Invalid(format!("{}: {e}", path.display())))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn append_history(dir: &Path, line: serde_json::Value) -> crate::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(HISTORY))?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    Ok(())
}

/// Points `current` at version `v`: a new link renamed over the old one.
fn switch_current(dir: &Path, v: u32) -> crate::Result<()> {
    let tmp = dir.join(format!(".{CURRENT}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let target = Path::new(VERSIONS).join(v.to_string());
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &tmp)?;
    #[cfg(not(unix))]
    bail!(
        "publishing needs symbolic links (Unix); {} not switched",
        tmp.display()
    );
    std::fs::rename(&tmp, dir.join(CURRENT))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> crate::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
            std::fs::File::open(&dest)?.sync_all()?;
        }
    }
    Ok(())
}

fn summary(
    action: &str,
    dir: &Path,
    published: Option<u32>,
    gates: Vec<Gate>,
    removed: Vec<u32>,
) -> crate::Result<PublishSummary> {
    Ok(PublishSummary {
        action: action.into(),
        published,
        current: current(dir)?,
        gates,
        versions: versions(dir)?,
        removed,
        dir: dir.to_path_buf(),
    })
}

/// `wander publish`: checks the gates; if all pass, the run's bundle becomes the next
/// version and `current` points at it, and versions beyond `publish.keep` are removed. A
/// refusal changes nothing but the history. Either way the outcome is the summary.
pub fn publish(ctx: &StageContext) -> crate::Result<PublishSummary> {
    let dir = publish_dir(ctx);
    std::fs::create_dir_all(dir.join(VERSIONS))?;
    let run = RunDir::open(&ctx.config.run.dir)?;
    // Verifies every file of the bundle against its manifest before anything is copied.
    open(&run, StageId::Bundle)?;
    let bundle_manifest = run.manifest_checksum(StageId::Bundle.folder())?;
    let bundle = run.read_manifest(StageId::Bundle.folder())?;
    let table_of_bundle = bundle
        .inputs
        .get(&format!("{}/manifest.json", StageId::Precompute.folder()))
        .cloned();
    if table_of_bundle != Some(run.manifest_checksum(StageId::Precompute.folder())?) {
        bail!(
            "the bundle holds another table than the run's precompute: run `wander bundle` first"
        );
    }
    let gates = gates(ctx, &dir)?;
    if gates.iter().any(|g| !g.passed) {
        append_history(
            &dir,
            serde_json::json!({"action": "refuse", "unix": now_unix(), "run_dir": ctx.config.run.dir, "bundle_manifest": bundle_manifest, "gates": gates}),
        )?;
        let s = summary("refuse", &dir, None, gates, Vec::new())?;
        return Ok(s);
    }
    let existing = versions(&dir)?;
    let v = existing.last().copied().unwrap_or(0) + 1;
    let partial = dir.join(VERSIONS).join(format!(".partial-{v}"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    copy_dir(
        &run.stage_dir(StageId::Bundle.folder()),
        &partial.join(StageId::Bundle.folder()),
    )?;
    let record = VersionRecord {
        version: v,
        run_dir: ctx.config.run.dir.clone(),
        bundle_manifest: bundle_manifest.clone(),
        gates: gates.clone(),
        created_unix: now_unix(),
    };
    wander_core::artifact::atomic_write(
        &partial.join(RECORD),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    std::fs::rename(&partial, dir.join(VERSIONS).join(v.to_string()))?;
    switch_current(&dir, v)?;
    append_history(
        &dir,
        serde_json::json!({"action": "publish", "version": v, "unix": record.created_unix, "run_dir": ctx.config.run.dir, "bundle_manifest": bundle_manifest, "gates": gates}),
    )?;
    // Oldest first, never the one now serving.
    let all = versions(&dir)?;
    let mut removed = Vec::new();
    for &old in all
        .iter()
        .take(all.len().saturating_sub(ctx.config.publish.keep))
    {
        if old != v {
            std::fs::remove_dir_all(dir.join(VERSIONS).join(old.to_string()))?;
            removed.push(old);
        }
    }
    let s = summary("publish", &dir, Some(v), gates, removed)?;
    Ok(s)
}

/// `wander publish --rollback`: `current` points at the newest version older than the one
/// it points at now.
pub fn rollback(ctx: &StageContext) -> crate::Result<PublishSummary> {
    let dir = publish_dir(ctx);
    let Some(now) = current(&dir)? else {
        bail!("{}: nothing is published yet", dir.display());
    };
    let Some(&before) = versions(&dir)?.iter().rev().find(|&&v| v < now) else {
        bail!(
            "{}: v{now} is the oldest version kept (publish.keep); nothing to roll back to",
            dir.display()
        );
    };
    switch_current(&dir, before)?;
    append_history(
        &dir,
        serde_json::json!({"action": "rollback", "from": now, "version": before, "unix": now_unix()}),
    )?;
    let s = summary("rollback", &dir, Some(before), Vec::new(), Vec::new())?;
    Ok(s)
}

/// `wander publish --list`: the versions and the one serving.
pub fn list(ctx: &StageContext) -> crate::Result<PublishSummary> {
    summary("list", &publish_dir(ctx), None, Vec::new(), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_number_and_skip_partial_folders() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["9", "10", "2", ".partial-11", "notes"] {
            std::fs::create_dir_all(dir.path().join(VERSIONS).join(name)).unwrap();
        }
        assert_eq!(versions(dir.path()).unwrap(), vec![2, 9, 10]);
        assert_eq!(current(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_current_link_switches_and_a_foreign_target_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for v in [1, 2] {
            std::fs::create_dir_all(dir.path().join(VERSIONS).join(v.to_string())).unwrap();
        }
        switch_current(dir.path(), 1).unwrap();
        assert_eq!(current(dir.path()).unwrap(), Some(1));
        switch_current(dir.path(), 2).unwrap();
        assert_eq!(current(dir.path()).unwrap(), Some(2));
        // Readers through the link see the version's folder.
        assert!(dir.path().join(CURRENT).is_dir());
        std::fs::remove_file(dir.path().join(CURRENT)).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("elsewhere", dir.path().join(CURRENT)).unwrap();
        let e = current(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not at a version"), "{e}");
    }
}
