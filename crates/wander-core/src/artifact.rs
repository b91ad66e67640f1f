//! Crash-safe artifact store.
//!
//! A run directory holds one folder per stage. A stage writes into a hidden partial folder;
//! [`StageWriter::commit`] fsyncs every file, records its SHA-256 in `manifest.json` and only
//! then swaps the folder into place with renames. A stage that fails or is killed leaves the
//! previous artifacts of every stage, its own included, untouched. Readers verify every
//! checksum before they hand out a path, so a truncated or corrupted file is reported and never
//! half-read.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::hash::sha256_file;
use crate::{CoreError, Result, WANDER_VERSION};

/// Version of the manifest layout and of the artifacts' on-disk formats. Bumped when a
/// reader could no longer read what an older wander wrote.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the manifest inside every stage folder.
pub const MANIFEST: &str = "manifest.json";

/// One output file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
}

/// What made a stage's artifacts, and how to check them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Stage name, e.g. `ingest`.
    pub stage: String,
    /// Version of wander that wrote the stage.
    pub wander_version: String,
    /// The slice of the configuration that determines this stage's output.
    pub config: serde_json::Value,
    /// Checksums of every input (files and upstream manifests), by name.
    pub inputs: BTreeMap<String, String>,
    /// Checksums of every output file, by path relative to the stage folder.
    pub outputs: BTreeMap<String, FileEntry>,
    /// Seconds the stage took.
    pub wall_seconds: f64,
    /// Unix time the stage was committed.
    pub created_unix: u64,
    /// The stage's summary figures (the same object its `--json` prints).
    pub summary: serde_json::Value,
}

/// Whether a stage has to run.
#[derive(Debug)]
pub enum Freshness {
    /// Outputs exist, verify, and were made from the same inputs and config.
    Fresh(Box<Manifest>),
    /// The stage must run; the string says why.
    Stale(String),
}

/// What [`RunDir::run_stage`] did.
#[derive(Debug)]
pub enum StageOutcome {
    /// The stage ran and committed this manifest.
    Ran(Manifest),
    /// The previous output was fresh; this is its manifest.
    Skipped(Manifest),
}

impl StageOutcome {
    /// The manifest either way.
    pub fn manifest(&self) -> &Manifest {
        match self {
            StageOutcome::Ran(m) | StageOutcome::Skipped(m) => m,
        }
    }

    /// Whether the stage was skipped.
    pub fn skipped(&self) -> bool {
        matches!(self, StageOutcome::Skipped(_))
    }
}

/// A run directory: one folder per stage.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Opens (creating if needed) a run directory, and repairs a swap interrupted by a crash.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| CoreError::io(&root, e))?;
        let run = RunDir { root };
        run.recover()?;
        Ok(run)
    }

    /// The run directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of `stage` (it may not exist yet).
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// Decides whether `stage` must run for this config slice and these inputs.
    pub fn freshness(
        &self,
        stage: &str,
        config: &serde_json::Value,
        inputs: &BTreeMap<String, String>,
    ) -> Freshness {
        let manifest = match self.read_manifest(stage) {
            Ok(m) => m,
            Err(_) => return Freshness::Stale("no previous output".into()),
        };
        if manifest.format_version != FORMAT_VERSION {
            return Freshness::Stale(format!(
                "format version {} differs from {FORMAT_VERSION}",
                manifest.format_version
            ));
        }
        if &manifest.config != config {
            return Freshness::Stale("config changed".into());
        }
        if &manifest.inputs != inputs {
            return Freshness::Stale("inputs changed".into());
        }
        match self.verify(stage, &manifest) {
            Ok(()) => Freshness::Fresh(Box::new(manifest)),
            Err(e) => Freshness::Stale(format!("previous output invalid: {e}")),
        }
    }

    /// Reads a stage's manifest without verifying its files.
    pub fn read_manifest(&self, stage: &str) -> Result<Manifest> {
        let path = self.stage_dir(stage).join(MANIFEST);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CoreError::Artifact {
                    path: self.stage_dir(stage),
                    message: format!(
                        "stage `{stage}` has not been run; run `wander {stage}` first"
                    ),
                }
            } else {
                CoreError::io(&path, e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| CoreError::Json { path, source })
    }

    /// Opens a stage for reading after checking every output against its manifest.
    pub fn read(&self, stage: &str) -> Result<StageReader> {
        let manifest = self.read_manifest(stage)?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(CoreError::Artifact {
                path: self.stage_dir(stage),
                message: format!(
                    "format version {} is not {FORMAT_VERSION}; rerun `wander {stage} --force`",
                    manifest.format_version
                ),
            });
        }
        self.verify(stage, &manifest)?;
        Ok(StageReader {
            dir: self.stage_dir(stage),
            manifest,
        })
    }

    /// Checksum of a stage's manifest, used as the input identity of downstream stages.
    pub fn manifest_checksum(&self, stage: &str) -> Result<String> {
        let path = self.stage_dir(stage).join(MANIFEST);
        if !path.exists() {
            return Err(CoreError::Artifact {
                path: self.stage_dir(stage),
                message: format!("stage `{stage}` has not been run; run `wander {stage}` first"),
            });
        }
        sha256_file(&path)
    }

    fn verify(&self, stage: &str, manifest: &Manifest) -> Result<()> {
        let dir = self.stage_dir(stage);
        for (name, entry) in &manifest.outputs {
            if !inside_stage(name) {
                return Err(CoreError::Artifact {
                    path: dir.join(MANIFEST),
                    message: format!("lists an output outside the stage folder: `{name}`"),
                });
            }
            let path = dir.join(name);
            let meta = fs::metadata(&path).map_err(|e| CoreError::io(&path, e))?;
            if meta.len() != entry.bytes {
                return Err(CoreError::Corrupt {
                    path,
                    expected: entry.sha256.clone(),
                    actual: format!("(size {} instead of {})", meta.len(), entry.bytes),
                });
            }
            let actual = sha256_file(&path)?;
            if actual != entry.sha256 {
                return Err(CoreError::Corrupt {
                    path,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Runs `body` as `stage` unless its previous output is fresh (same config slice and
    /// inputs, every file verified) and `force` is false. `body` writes its files into the
    /// given writer and returns the stage's summary; the stage is committed only if it
    /// returns `Ok`.
    pub fn run_stage<E: From<CoreError>>(
        &self,
        stage: &str,
        config: serde_json::Value,
        inputs: BTreeMap<String, String>,
        force: bool,
        body: impl FnOnce(&StageWriter) -> std::result::Result<serde_json::Value, E>,
    ) -> std::result::Result<StageOutcome, E> {
        if !force {
            if let Freshness::Fresh(m) = self.freshness(stage, &config, &inputs) {
                return Ok(StageOutcome::Skipped(*m));
            }
        }
        let writer = self.begin(stage)?;
        let summary = body(&writer)?;
        Ok(StageOutcome::Ran(writer.commit(config, inputs, summary)?))
    }

    /// Starts writing `stage` into a fresh partial folder.
    pub fn begin(&self, stage: &str) -> Result<StageWriter> {
        let partial = self
            .root
            .join(format!(".{stage}.partial-{}", std::process::id()));
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| CoreError::io(&partial, e))?;
        }
        fs::create_dir_all(&partial).map_err(|e| CoreError::io(&partial, e))?;
        Ok(StageWriter {
            stage: stage.to_string(),
            final_dir: self.stage_dir(stage),
            partial,
            started: Instant::now(),
            committed: false,
        })
    }

    /// Undoes the effects of a crash in the middle of [`StageWriter::commit`]'s swap and
    /// removes partial folders of dead writers.
    fn recover(&self) -> Result<()> {
        let entries = fs::read_dir(&self.root).map_err(|e| CoreError::io(&self.root, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix('.') else {
                continue;
            };
            if let Some((stage, _)) = rest.split_once(".old-") {
                let live = self.stage_dir(stage);
                if live.exists() {
                    let _ = fs::remove_dir_all(entry.path());
                } else {
                    fs::rename(entry.path(), &live).map_err(|e| CoreError::io(&live, e))?;
                }
            } else if let Some((_, pid)) = rest.split_once(".partial-") {
                let alive = pid
                    .parse::<u32>()
                    .map(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists())
                    .unwrap_or(false);
                if !alive {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Writes one stage's files; nothing is visible until [`StageWriter::commit`].
#[derive(Debug)]
pub struct StageWriter {
    stage: String,
    final_dir: PathBuf,
    partial: PathBuf,
    started: Instant,
    committed: bool,
}

impl StageWriter {
    /// Path of `name` inside the partial folder, for writers that need a path. Parent folders
    /// are created.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if !inside_stage(name) {
            return Err(CoreError::Artifact {
                path: self.partial.clone(),
                message: format!("output name `{name}` would leave the stage folder"),
            });
        }
        let path = self.partial.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
        }
        Ok(path)
    }

    /// Writes `bytes` as `name`.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name)?;
        fs::write(&path, bytes).map_err(|e| CoreError::io(&path, e))
    }

    /// Writes `name` through a buffered writer that `fill` writes into, for files too large
    /// to build in memory first.
    pub fn write_streamed(
        &self,
        name: &str,
        fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = self.path(name)?;
        let file = fs::File::create(&path).map_err(|e| CoreError::io(&path, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(|e| CoreError::io(&path, e))
    }

    /// Writes `value` as pretty JSON named `name`.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let path = self.path(name)?;
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| CoreError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_bytes(name, &bytes)
    }

    /// Fsyncs and checksums every file, writes the manifest and swaps the stage into place.
    pub fn commit(
        mut self,
        config: serde_json::Value,
        inputs: BTreeMap<String, String>,
        summary: serde_json::Value,
    ) -> Result<Manifest> {
        let mut outputs = BTreeMap::new();
        collect_files(&self.partial, &self.partial, &mut outputs)?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            stage: self.stage.clone(),
            wander_version: WANDER_VERSION.to_string(),
            config,
            inputs,
            outputs,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            summary,
        };
        let manifest_path = self.partial.join(MANIFEST);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|source| CoreError::Json {
            path: manifest_path.clone(),
            source,
        })?;
        write_synced(&manifest_path, &bytes)?;
        sync_dir(&self.partial)?;

        let parent = self
            .final_dir
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let old = parent.join(format!(".{}.old-{}", self.stage, std::process::id()));
        if self.final_dir.exists() {
            fs::rename(&self.final_dir, &old).map_err(|e| CoreError::io(&self.final_dir, e))?;
        }
        fs::rename(&self.partial, &self.final_dir)
            .map_err(|e| CoreError::io(&self.final_dir, e))?;
        sync_dir(&parent)?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| CoreError::io(&old, e))?;
        }
        self.committed = true;
        Ok(manifest)
    }
}

impl Drop for StageWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

fn collect_files(base: &Path, dir: &Path, out: &mut BTreeMap<String, FileEntry>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| CoreError::io(dir, e))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_files(base, &path, out)?;
            sync_dir(&path)?;
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if rel == MANIFEST {
            continue;
        }
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| CoreError::io(&path, e))?;
        let bytes = fs::metadata(&path)
            .map_err(|e| CoreError::io(&path, e))?
            .len();
        out.insert(
            rel,
            FileEntry {
                sha256: sha256_file(&path)?,
                bytes,
            },
        );
    }
    Ok(())
}

/// A verified stage: every file matched its manifest checksum when it was opened.
#[derive(Debug)]
pub struct StageReader {
    dir: PathBuf,
    manifest: Manifest,
}

/// Whether an output name stays inside its stage folder: relative, with only plain
/// components (no `..`, no root, no drive prefix).
fn inside_stage(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl StageReader {
    /// The stage's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Path of a verified output file.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if self.manifest.outputs.contains_key(name) {
            Ok(self.dir.join(name))
        } else {
            Err(CoreError::Artifact {
                path: self.dir.join(name),
                message: "not listed in the stage's manifest".into(),
            })
        }
    }

    /// Reads and parses a verified JSON output.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path(name)?;
        let bytes = fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| CoreError::Json { path, source })
    }
}

/// Writes `bytes` to `path` atomically: a temporary sibling is written, fsynced and renamed
/// over the target, so readers see either the old or the new file, never a torn one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
    let tmp = temp_sibling(path);
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CoreError::io(path, e)
    })?;
    sync_dir(parent)
}

/// A unique temporary name next to `path` (same filesystem, so rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| CoreError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| CoreError::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn commit_stage(run: &RunDir, stage: &str, content: &[u8]) -> Manifest {
        let w = run.begin(stage).unwrap();
        w.write_bytes("data.bin", content).unwrap();
        w.write_bytes("sub/inner.txt", b"inner").unwrap();
        w.commit(json!({"k": 1}), BTreeMap::new(), json!({"n": 1}))
            .unwrap()
    }

    #[test]
    fn commit_then_read_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        let m = commit_stage(&run, "ingest", b"hello");
        assert_eq!(m.outputs.len(), 2);
        let r = run.read("ingest").unwrap();
        assert_eq!(
            std::fs::read(r.path("data.bin").unwrap()).unwrap(),
            b"hello"
        );
        assert!(matches!(
            run.freshness("ingest", &json!({"k": 1}), &BTreeMap::new()),
            Freshness::Fresh(_)
        ));
        assert!(matches!(
            run.freshness("ingest", &json!({"k": 2}), &BTreeMap::new()),
            Freshness::Stale(_)
        ));
    }

    #[test]
    fn run_stage_skips_when_fresh_and_reruns_when_forced_or_changed() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        let mut calls = 0;
        let mut go = |cfg: serde_json::Value, force: bool| {
            run.run_stage::<CoreError>("s", cfg, BTreeMap::new(), force, |w| {
                calls += 1;
                w.write_bytes("x", b"1")?;
                Ok(json!({}))
            })
            .unwrap()
            .skipped()
        };
        assert!(!go(json!(1), false));
        assert!(go(json!(1), false));
        assert!(!go(json!(1), true));
        assert!(!go(json!(2), false));
        assert_eq!(calls, 3);
        let failed = run.run_stage::<CoreError>("s", json!(3), BTreeMap::new(), false, |w| {
            w.write_bytes("x", b"broken")?;
            Err(CoreError::config("k", "boom"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dir.path().join("s/x")).unwrap(), b"1");
    }

    #[test]
    fn truncated_artifact_is_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        commit_stage(&run, "ingest", b"hello world");
        std::fs::write(dir.path().join("ingest/data.bin"), b"hello").unwrap();
        let err = run.read("ingest").unwrap_err();
        assert!(matches!(err, CoreError::Corrupt { .. }), "{err}");
        std::fs::write(dir.path().join("ingest/data.bin"), b"hellO world").unwrap();
        let err = run.read("ingest").unwrap_err().to_string();
        assert!(err.contains("corrupted artifact"), "{err}");
        assert!(matches!(
            run.freshness("ingest", &json!({"k": 1}), &BTreeMap::new()),
            Freshness::Stale(_)
        ));
    }

    #[test]
    fn output_names_never_leave_the_stage_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        commit_stage(&run, "ingest", b"hello");
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        // A manifest edited to list a file outside the run: refused, not read.
        let manifest = dir.path().join("run/ingest/manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replace("\"data.bin\"", "\"../../secret\"")).unwrap();
        let err = run.read("ingest").unwrap_err().to_string();
        assert!(err.contains("outside the stage folder"), "{err}");
        let w = run.begin("other").unwrap();
        for name in ["../x", "/etc/x", "", "a/../../x"] {
            assert!(w.write_bytes(name, b"1").is_err(), "{name}");
        }
        assert!(w.write_bytes("sub/ok.bin", b"1").is_ok());
    }

    #[test]
    fn failed_stage_leaves_previous_output_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        commit_stage(&run, "ingest", b"v1");
        {
            let w = run.begin("ingest").unwrap();
            w.write_bytes("data.bin", b"half-written v2").unwrap();
            // dropped without commit: the stage failed
        }
        let r = run.read("ingest").unwrap();
        assert_eq!(std::fs::read(r.path("data.bin").unwrap()).unwrap(), b"v1");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn crash_between_renames_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        commit_stage(&run, "ingest", b"v1");
        // Simulate a crash after the live folder was moved aside, before the new one moved in.
        std::fs::rename(
            dir.path().join("ingest"),
            dir.path().join(".ingest.old-999999"),
        )
        .unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        assert!(run.read("ingest").is_ok());
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }
}
