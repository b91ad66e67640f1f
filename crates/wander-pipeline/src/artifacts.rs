//! Typed artifact names: which stage writes which file and, for JSON files, what it holds.
//! A stage reads an upstream artifact through [`open`] and these constants, never through a
//! folder or file name spelled out, so a renamed file or a wrong type fails to compile.

use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use wander_core::artifact::{Manifest, RunDir, StageReader, StageWriter};
use wander_data::Split;
use wander_explore::feedback::Label;
use wander_explore::sft::PairExample;
use wander_explore::transitions::Transition;

use crate::StageId;

/// A JSON file of one stage holding a `T`.
#[derive(Debug)]
pub struct Json<T> {
    stage: StageId,
    file: &'static str,
    holds: PhantomData<fn() -> T>,
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Json<T> {}

impl<T> Json<T> {
    const fn new(stage: StageId, file: &'static str) -> Self {
        Json {
            stage,
            file,
            holds: PhantomData,
        }
    }

    /// The stage that writes it.
    pub const fn stage(&self) -> StageId {
        self.stage
    }

    /// Its file name in the stage's folder.
    pub const fn file(&self) -> &'static str {
        self.file
    }
}

impl<T: Serialize> Json<T> {
    /// Writes `value` into the stage being written.
    pub fn write(&self, writer: &StageWriter, value: &T) -> crate::Result<()> {
        Ok(writer.write_json(self.file, value)?)
    }
}

/// A file of one stage in any other format (Parquet, safetensors, the table's binary form,
/// Markdown, SVG).
#[derive(Debug, Clone, Copy)]
pub struct File {
    stage: StageId,
    file: &'static str,
}

impl File {
    const fn new(stage: StageId, file: &'static str) -> Self {
        File { stage, file }
    }

    /// The stage that writes it.
    pub const fn stage(&self) -> StageId {
        self.stage
    }

    /// Its file name in the stage's folder.
    pub const fn file(&self) -> &'static str {
        self.file
    }

    /// Where to write it in the stage being written.
    pub fn path_in(&self, writer: &StageWriter) -> crate::Result<PathBuf> {
        Ok(writer.path(self.file)?)
    }

    /// Writes `bytes` into the stage being written.
    pub fn write(&self, writer: &StageWriter, bytes: &[u8]) -> crate::Result<()> {
        Ok(writer.write_bytes(self.file, bytes)?)
    }

    /// Writes it through a buffered writer that `fill` writes into (see
    /// [`StageWriter::write_streamed`]).
    pub fn write_streamed(
        &self,
        writer: &StageWriter,
        fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> crate::Result<()> {
        Ok(writer.write_streamed(self.file, fill)?)
    }
}

/// Every transition mined from the log, all periods.
pub const TRANSITIONS: Json<Vec<Transition>> = Json::new(StageId::Transitions, "transitions.json");
/// The novelty model's fine-tuning set.
pub const SFT_TRAIN: Json<Vec<PairExample>> = Json::new(StageId::Transitions, "sft_train.json");
/// The novelty model's evaluation set (validation period).
pub const SFT_EVAL: Json<Vec<PairExample>> = Json::new(StageId::Transitions, "sft_eval.json");
/// The fine-tuning set as chat lines, for training a model elsewhere.
pub const SFT_TRAIN_CHAT: File = File::new(StageId::Transitions, "sft_train.jsonl");

/// Collective feedback labels of the training period.
pub const LABELS_TRAIN: Json<Vec<Label>> = Json::new(StageId::Feedback, "labels_train.json");
/// Collective feedback labels of the validation period.
pub const LABELS_VALID: Json<Vec<Label>> = Json::new(StageId::Feedback, "labels_valid.json");
/// Collective feedback labels of the held-out period.
pub const LABELS_TEST: Json<Vec<Label>> = Json::new(StageId::Feedback, "labels_test.json");
/// The training labels as prompt lines (pointwise).
pub const POINTWISE_TRAIN: File = File::new(StageId::Feedback, "pointwise_train.jsonl");
/// The training preferences as prompt lines (pairwise).
pub const PAIRWISE_TRAIN: File = File::new(StageId::Feedback, "pairwise_train.jsonl");

/// The labels of one period.
pub const fn labels(split: Split) -> Json<Vec<Label>> {
    match split {
        Split::Train => LABELS_TRAIN,
        Split::Valid => LABELS_VALID,
        Split::Test => LABELS_TEST,
    }
}

/// The novelty model's LoRA adapter.
pub const NOVELTY_ADAPTER: File = File::new(StageId::TrainNovelty, "adapter.safetensors");
/// The alignment model's LoRA adapter.
pub const ALIGNMENT_ADAPTER: File = File::new(StageId::TrainAlignment, "adapter.safetensors");
/// The alignment model's score head.
pub const ALIGNMENT_HEAD: File = File::new(StageId::TrainAlignment, "head.safetensors");
/// The levels of the alignment model that writes its label as text (`alignment.output`).
pub const ALIGNMENT_LEVELS: Json<wander_llm::readout::LabelLevels> =
    Json::new(StageId::TrainAlignment, "levels.json");
/// The candidate's global rate that the alignment model's score adds to its head
/// (`alignment.prior = "offset"`), one value per planner cluster.
pub const ALIGNMENT_OFFSETS: Json<Vec<f64>> = Json::new(StageId::TrainAlignment, "offsets.json");
/// The item model's weights (its shape beside it, in `model.safetensors.json`).
pub const ITEM_MODEL: File = File::new(StageId::TrainItems, "model.safetensors");

/// The exploration table, binary form (what the bundle serves).
pub const TABLE: File = File::new(StageId::Precompute, "table.bin");
/// The exploration table as Parquet, for analysis.
pub const TABLE_PARQUET: File = File::new(StageId::Precompute, "table.parquet");
/// Every pair's per-cluster novelty probabilities, alignment scores and frequencies.
pub const SCORES: File = File::new(StageId::Precompute, "scores.parquet");
/// Every pair's proposals in the order drawn, written only when the candidate-reading
/// alignment model scored just those (`precompute.score = "proposals"`).
pub const DRAWS: Json<Vec<wander_explore::scaling::PairDraws>> =
    Json::new(StageId::Precompute, "draws.json");

/// The transitions whose next cluster came in a refresh's newer window (histories run on
/// from the base log): what a refreshed table's retrieval prompts name first.
pub const REFRESH_TRANSITIONS: Json<Vec<wander_explore::transitions::Transition>> =
    Json::new(StageId::Refresh, "newer_transitions.json");

/// The items a refresh placed, with how clearly.
pub const REFRESH_NEW_ITEMS: Json<Vec<crate::summaries::NewItem>> =
    Json::new(StageId::Refresh, "new_items.json");

/// The simulation's seed-averaged daily series per arm (and every run's days).
pub const SIM_DAILY: Json<crate::summaries::SimDaily> = Json::new(StageId::Simulate, "daily.json");

/// A stage's Markdown report.
pub const fn report_md(stage: StageId) -> File {
    File::new(stage, "report.md")
}

/// A trainer's loss history.
pub const fn train_report(stage: StageId) -> File {
    File::new(stage, "train_report.json")
}

/// A stage's verified outputs, opened by [`open`].
#[derive(Debug)]
pub struct Opened {
    id: StageId,
    reader: StageReader,
}

/// Opens a stage's folder after checking every output against its manifest.
pub fn open(run: &RunDir, id: StageId) -> crate::Result<Opened> {
    Ok(Opened {
        id,
        reader: run.read(id.folder())?,
    })
}

impl Opened {
    fn check(&self, stage: StageId, file: &str) -> crate::Result<()> {
        if stage != self.id {
            crate::bail!(
                "internal: `{}/{file}` read from the outputs of `{}`",
                stage.folder(),
                self.id.folder()
            );
        }
        Ok(())
    }

    /// Parses one of its JSON artifacts.
    pub fn json<T: DeserializeOwned>(&self, artifact: Json<T>) -> crate::Result<T> {
        self.check(artifact.stage, artifact.file)?;
        Ok(self.reader.read_json(artifact.file)?)
    }

    /// Parses one of its JSON artifacts that a stage writes only in some configurations:
    /// `None` when the manifest does not list it.
    pub fn json_if_written<T: DeserializeOwned>(
        &self,
        artifact: Json<T>,
    ) -> crate::Result<Option<T>> {
        self.check(artifact.stage, artifact.file)?;
        if !self.reader.manifest().outputs.contains_key(artifact.file) {
            return Ok(None);
        }
        Ok(Some(self.reader.read_json(artifact.file)?))
    }

    /// The path of one of its files.
    pub fn path(&self, artifact: File) -> crate::Result<PathBuf> {
        self.check(artifact.stage, artifact.file)?;
        Ok(self.reader.path(artifact.file)?)
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        self.reader.manifest()
    }

    /// The verified reader, for the crates that read a stage's folder themselves
    /// (`wander_data::read_dataset`, `wander_taxonomy::read`).
    pub fn reader(&self) -> &StageReader {
        &self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_read_only_from_its_own_stage() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(tmp.path()).unwrap();
        let w = run.begin(StageId::Feedback.folder()).unwrap();
        LABELS_TEST.write(&w, &Vec::new()).unwrap();
        w.commit(
            serde_json::json!({}),
            Default::default(),
            serde_json::json!({}),
        )
        .unwrap();
        let feedback = open(&run, StageId::Feedback).unwrap();
        assert!(feedback.json(labels(Split::Test)).unwrap().is_empty());
        let err = feedback.json(TRANSITIONS).unwrap_err().to_string();
        assert!(
            err.contains("`transitions/transitions.json` read from the outputs of `feedback`"),
            "{err}"
        );
    }
}
