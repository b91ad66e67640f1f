//! Synthetic interaction logs of any size for scale tests, in the generic layout
//! (`interactions.parquet`, `items.parquet`), written in bounded-memory batches.
//!
//! Realism that matters for the pipeline: item popularity follows a Zipf law, users'
//! activity is skewed too, items belong to latent clusters (of Zipf-distributed sizes) and
//! each user prefers a few clusters, so co-consumption has structure to find; the feedback
//! columns (`rating` 1-5, `watch_ratio` 0-1.2) are higher inside a user's preferred clusters.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use wander_core::rng::Rng;

use crate::DataError;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SynthConfig {
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Latent clusters.
    pub clusters: usize,
    /// Interactions in total.
    pub interactions: u64,
    /// Zipf exponent of item popularity (about 1 for media catalogues).
    pub item_skew: f64,
    /// Zipf exponent of user activity.
    pub user_skew: f64,
    /// Probability that an interaction comes from the user's preferred clusters.
    pub focus: f64,
    /// Seed.
    pub seed: u64,
    /// What files to write.
    pub layout: Layout,
}

/// The files [`generate`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// `items.parquet` and `interactions.parquet` in the generic input layout (string item
    /// ids, raw feedback columns), for `wander ingest`.
    Generic,
    /// The prepared layout that `wander aggregate` reads: `events/part-NNNNN.parquet`
    /// (`user`, `item`, `seq`, `positive` = rating >= 4, `split` by time 80/10/10,
    /// `feedback_rating`, `feedback_watch_ratio`) in parts of at most `part_rows` rows, and
    /// `clusters.parquet` (`item`, `cluster`: the latent clusters).
    Events {
        /// Rows per part file.
        part_rows: u64,
    },
}

/// Figures of a generated log.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    /// Rows written.
    pub interactions: u64,
    /// Share of interactions on the 1% most popular items.
    pub top1pct_item_share: f64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Cumulative Zipf weights `1 / (rank + 1)^s`, normalised.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (0..n)
        .map(|r| {
            acc += 1.0 / ((r + 1) as f64).powf(s);
            acc
        })
        .collect();
    for v in &mut cdf {
        *v /= acc;
    }
    cdf
}

fn draw(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = rng.next_f64();
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

const BATCH: usize = 1 << 20;

fn io(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        file: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_file(path: &Path, cols: &[(&str, ArrayRef)]) -> Result<(), DataError> {
    let batch = RecordBatch::try_from_iter(cols.iter().map(|(n, c)| (*n, c.clone())))
        .map_err(|e| io(path, e))?;
    let f = File::create(path).map_err(|e| DataError::Core(wander_core::CoreError::io(path, e)))?;
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).map_err(|e| io(path, e))?;
    w.write(&batch).map_err(|e| io(path, e))?;
    w.close().map_err(|e| io(path, e))?;
    Ok(())
}

/// Where generated interaction batches go: one generic file, or prepared parts.
struct Sink {
    dir: std::path::PathBuf,
    layout: Layout,
    writer: Option<(std::path::PathBuf, ArrowWriter<File>, u64)>,
    parts: usize,
}

impl Sink {
    fn new(dir: &Path, layout: Layout) -> Result<Self, DataError> {
        if let Layout::Events { part_rows } = layout {
            if part_rows == 0 {
                return Err(DataError::Config {
                    key: "synth.part_rows".into(),
                    message: "must be >= 1".into(),
                });
            }
            let events = dir.join("events");
            std::fs::create_dir_all(&events)
                .map_err(|e| DataError::Core(wander_core::CoreError::io(&events, e)))?;
        }
        Ok(Sink {
            dir: dir.into(),
            layout,
            writer: None,
            parts: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        first_row: u64,
        users: Vec<u32>,
        items: Vec<u32>,
        ts: Vec<i64>,
        rating: Vec<f64>,
        watch: Vec<f64>,
        total: u64,
    ) -> Result<(), DataError> {
        let n = users.len() as u64;
        let (path, cols): (std::path::PathBuf, Vec<(&str, ArrayRef)>) = match self.layout {
            Layout::Generic => (
                self.dir.join("interactions.parquet"),
                vec![
                    ("user_id", Arc::new(UInt32Array::from(users)) as ArrayRef),
                    (
                        "item_id",
                        Arc::new(StringArray::from_iter_values(
                            items.iter().map(|i| format!("i{i}")),
                        )) as ArrayRef,
                    ),
                    ("timestamp", Arc::new(Int64Array::from(ts)) as ArrayRef),
                    ("rating", Arc::new(Float64Array::from(rating)) as ArrayRef),
                    (
                        "watch_ratio",
                        Arc::new(Float64Array::from(watch)) as ArrayRef,
                    ),
                ],
            ),
            Layout::Events { part_rows } => {
                let part = first_row / part_rows;
                if self.writer.as_ref().is_some_and(|w| w.2 != part) {
                    self.close()?;
                }
                // Time order is row order here, so the split is by row position.
                let split = (first_row..first_row + n).map(|r| {
                    let t = r as f64 / total as f64;
                    if t < 0.8 {
                        0u8
                    } else if t < 0.9 {
                        1
                    } else {
                        2
                    }
                });
                (
                    self.dir
                        .join("events")
                        .join(format!("part-{part:05}.parquet")),
                    vec![
                        ("user", Arc::new(UInt32Array::from(users)) as ArrayRef),
                        ("item", Arc::new(UInt32Array::from(items)) as ArrayRef),
                        (
                            "seq",
                            Arc::new(UInt64Array::from_iter_values(first_row..first_row + n))
                                as ArrayRef,
                        ),
                        (
                            "positive",
                            Arc::new(BooleanArray::from(
                                rating.iter().map(|r| *r >= 4.0).collect::<Vec<_>>(),
                            )) as ArrayRef,
                        ),
                        (
                            "split",
                            Arc::new(UInt8Array::from_iter_values(split)) as ArrayRef,
                        ),
                        (
                            "feedback_rating",
                            Arc::new(Float64Array::from(rating)) as ArrayRef,
                        ),
                        (
                            "feedback_watch_ratio",
                            Arc::new(Float64Array::from(watch)) as ArrayRef,
                        ),
                    ],
                )
            }
        };
        let batch = RecordBatch::try_from_iter(cols).map_err(|e| io(&path, e))?;
        if self.writer.is_none() {
            let f = File::create(&path)
                .map_err(|e| DataError::Core(wander_core::CoreError::io(&path, e)))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let w =
                ArrowWriter::try_new(f, batch.schema(), Some(props)).map_err(|e| io(&path, e))?;
            let part = match self.layout {
                Layout::Events { part_rows } => first_row / part_rows,
                Layout::Generic => 0,
            };
            self.writer = Some((path.clone(), w, part));
            self.parts += 1;
        }
        let (path, w, _) = self.writer.as_mut().expect("opened above");
        w.write(&batch).map_err(|e| io(path, e))
    }

    fn close(&mut self) -> Result<(), DataError> {
        if let Some((path, w, _)) = self.writer.take() {
            w.close().map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<usize, DataError> {
        self.close()?;
        Ok(self.parts)
    }
}

/// Writes `items.parquet` and `interactions.parquet` into `dir`.
pub fn generate(cfg: &SynthConfig, dir: &Path) -> Result<SynthSummary, DataError> {
    if cfg.users == 0 || cfg.items == 0 || cfg.clusters == 0 || cfg.clusters > cfg.items {
        return Err(DataError::Config {
            key: "synth".into(),
            message: format!(
                "need users, items and clusters >= 1 and clusters <= items (got {} users, {} items, {} clusters)",
                cfg.users, cfg.items, cfg.clusters
            ),
        });
    }
    let start = std::time::Instant::now();
    std::fs::create_dir_all(dir)
        .map_err(|e| DataError::Core(wander_core::CoreError::io(dir, e)))?;
    let mut rng = Rng::new(cfg.seed);
    // Items: popularity rank = id order of a seeded shuffle; clusters of Zipf sizes.
    let cluster_cdf = zipf_cdf(cfg.clusters, 0.7);
    let item_cluster: Vec<u32> = (0..cfg.items)
        .map(|_| draw(&cluster_cdf, &mut rng) as u32)
        .collect();
    let mut by_cluster: Vec<Vec<u32>> = vec![Vec::new(); cfg.clusters];
    for (i, &c) in item_cluster.iter().enumerate() {
        by_cluster[c as usize].push(i as u32);
    }
    let cluster_item_cdfs: Vec<Vec<f64>> = by_cluster
        .iter()
        .map(|v| zipf_cdf(v.len().max(1), cfg.item_skew))
        .collect();
    let item_cdf = zipf_cdf(cfg.items, cfg.item_skew);
    match cfg.layout {
        Layout::Generic => {
            let ids: Vec<String> = (0..cfg.items).map(|i| format!("i{i}")).collect();
            let titles: Vec<String> = (0..cfg.items)
                .map(|i| format!("Item {i} of cluster {}", item_cluster[i]))
                .collect();
            let genres: Vec<String> = item_cluster
                .iter()
                .map(|c| format!("genre{}|theme{}", c % 20, c / 20))
                .collect();
            write_file(
                &dir.join("items.parquet"),
                &[
                    ("item_id", Arc::new(StringArray::from(ids)) as ArrayRef),
                    ("title", Arc::new(StringArray::from(titles)) as ArrayRef),
                    ("genres", Arc::new(StringArray::from(genres)) as ArrayRef),
                ],
            )?;
        }
        Layout::Events { .. } => write_file(
            &dir.join("clusters.parquet"),
            &[
                (
                    "item",
                    Arc::new(UInt32Array::from_iter_values(0..cfg.items as u32)) as ArrayRef,
                ),
                (
                    "cluster",
                    Arc::new(UInt32Array::from(item_cluster.clone())) as ArrayRef,
                ),
            ],
        )?,
    }
    // Users: three preferred clusters each, drawn by cluster size.
    let prefs: Vec<[u32; 3]> = (0..cfg.users)
        .map(|_| [0, 1, 2].map(|_| draw(&cluster_cdf, &mut rng) as u32))
        .collect();
    let user_cdf = zipf_cdf(cfg.users, cfg.user_skew);
    let mut sink = Sink::new(dir, cfg.layout)?;
    let mut top_hits = 0u64;
    let top_cut = (cfg.items / 100).max(1) as u32;
    let mut written = 0u64;
    let base_ts = 1_600_000_000i64;
    while written < cfg.interactions {
        let mut n = (cfg.interactions - written).min(BATCH as u64);
        if let Layout::Events { part_rows } = cfg.layout {
            n = n.min(part_rows - written % part_rows);
        }
        let n = n as usize;
        let (mut users, mut items, mut ts, mut rating, mut watch) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for k in 0..n {
            let u = draw(&user_cdf, &mut rng);
            let preferred = rng.next_f64() < cfg.focus;
            let item = if preferred {
                let c = prefs[u][rng.below(3)] as usize;
                let list = &by_cluster[c];
                if list.is_empty() {
                    draw(&item_cdf, &mut rng) as u32
                } else {
                    list[draw(&cluster_item_cdfs[c], &mut rng)]
                }
            } else {
                draw(&item_cdf, &mut rng) as u32
            };
            let liked = prefs[u].contains(&item_cluster[item as usize]);
            let r = (if liked { 3.8 } else { 3.0 } + rng.normal() * 0.9)
                .round()
                .clamp(1.0, 5.0);
            let wr = ((if liked { 0.75 } else { 0.5 }) + rng.normal() * 0.25).clamp(0.0, 1.2);
            top_hits += u64::from(item < top_cut);
            users.push(u as u32);
            items.push(item);
            ts.push(base_ts + ((written + k as u64) / 4) as i64);
            rating.push(r);
            watch.push((wr * 1000.0_f64).round() / 1000.0);
        }
        sink.write(written, users, items, ts, rating, watch, cfg.interactions)?;
        written += n as u64;
    }
    sink.finish()?;
    Ok(SynthSummary {
        interactions: written,
        top1pct_item_share: top_hits as f64 / written.max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_and_loadable_by_the_generic_loader() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            users: 300,
            items: 400,
            clusters: 8,
            interactions: 20_000,
            item_skew: 1.0,
            user_skew: 0.8,
            focus: 0.7,
            seed: 1,
            layout: Layout::Generic,
        };
        let s = generate(&cfg, dir.path()).unwrap();
        assert_eq!(s.interactions, 20_000);
        assert!(s.top1pct_item_share > 0.1, "{s:?}");
        let mut dc: wander_core::config::DataConfig =
            wander_core::config::Config::load(&Default::default())
                .unwrap()
                .data;
        dc.format = wander_core::config::DataFormat::Generic;
        dc.interactions = "interactions.parquet".into();
        dc.items = "items.parquet".into();
        let loaded = crate::load(&dc, dir.path()).unwrap();
        assert_eq!(loaded.dataset.interactions.len(), 20_000);
        assert_eq!(loaded.dataset.items.len(), 400);
        let again = tempfile::tempdir().unwrap();
        generate(&cfg, again.path()).unwrap();
        let a = std::fs::read(dir.path().join("interactions.parquet")).unwrap();
        assert_eq!(
            a,
            std::fs::read(again.path().join("interactions.parquet")).unwrap(),
            "same seed, same bytes"
        );
        assert!(generate(&SynthConfig { clusters: 0, ..cfg }, dir.path()).is_err());
    }

    #[test]
    fn events_layout_writes_parts_clusters_and_derived_columns() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, UInt64Type, UInt8Type};
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            users: 100,
            items: 200,
            clusters: 6,
            interactions: 20_000,
            item_skew: 1.0,
            user_skew: 0.8,
            focus: 0.7,
            seed: 3,
            layout: Layout::Events { part_rows: 7_000 },
        };
        generate(&cfg, dir.path()).unwrap();
        let mut parts: Vec<_> = std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        parts.sort();
        assert_eq!(parts.len(), 3);
        let mut next_seq = 0u64;
        let mut splits = [0usize; 3];
        for p in &parts {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(p).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in reader {
                let b = b.unwrap();
                let seq = b
                    .column_by_name("seq")
                    .unwrap()
                    .as_primitive::<UInt64Type>();
                let rating = b
                    .column_by_name("feedback_rating")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let positive = b.column_by_name("positive").unwrap().as_boolean();
                let split = b
                    .column_by_name("split")
                    .unwrap()
                    .as_primitive::<UInt8Type>();
                for k in 0..b.num_rows() {
                    assert_eq!(seq.value(k), next_seq);
                    next_seq += 1;
                    assert_eq!(positive.value(k), rating.value(k) >= 4.0);
                    splits[split.value(k) as usize] += 1;
                }
            }
        }
        assert_eq!(next_seq, 20_000);
        assert_eq!(splits, [16_000, 2_000, 2_000]);
        assert!(dir.path().join("clusters.parquet").is_file());
        assert!(!dir.path().join("interactions.parquet").exists());
    }
}
