//! The exploration table: for every history pair `(c1, c2)` of planner clusters, the novel
//! clusters to explore next, best first, with their alignment score, novelty-model
//! probability and how many of the n proposals named them.
//!
//! Two forms: Parquet (`c1, c2, rank, cluster, alignment_score, novelty_prob, frequency`) for
//! analysis, and a compact binary that a server loads in milliseconds and verifies before
//! use. The binary layout (little endian):
//!
//! ```text
//! magic  "WNDRTAB\0"            8 bytes
//! version u32 (= 1)
//! n_clusters u32, top_k u32, n_pairs u32
//! n_pairs x { c1 u32, c2 u32, count u32, count x { cluster u32, alignment f32,
//!                                                  novelty_prob f32, frequency u32 } }
//! sha256 of everything above   32 bytes
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, UInt32Array};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Magic bytes of the binary form.
pub const MAGIC: &[u8; 8] = b"WNDRTAB\0";
/// Version of the binary form this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Errors reading or writing a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The bytes are not a valid table; the message says where.
    #[error("{}: invalid exploration table: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Filesystem error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for [`TableError`].
pub type Result<T, E = TableError> = std::result::Result<T, E>;

/// One novel cluster recommended after a history pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Cluster id (planner level).
    pub cluster: u32,
    /// Alignment-model score (predicted collective feedback).
    pub alignment: f32,
    /// Probability under the novelty model at the sampling temperature.
    pub novelty_prob: f32,
    /// How many of the n proposals named it; 0 for a fallback entry.
    pub frequency: u32,
}

/// The table, dense over `n_clusters x n_clusters` history pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplorationTable {
    n_clusters: u32,
    top_k: u32,
    rows: Vec<Vec<Choice>>,
}

impl ExplorationTable {
    /// An empty table for `n_clusters` planner clusters, keeping at most `top_k` per pair.
    pub fn new(n_clusters: u32, top_k: u32) -> Self {
        ExplorationTable {
            n_clusters,
            top_k,
            rows: vec![Vec::new(); (n_clusters as usize) * (n_clusters as usize)],
        }
    }

    /// Number of planner clusters.
    pub fn n_clusters(&self) -> u32 {
        self.n_clusters
    }

    /// Entries kept per pair at most.
    pub fn top_k(&self) -> u32 {
        self.top_k
    }

    /// Sets a pair's choices (truncated to `top_k`). Ids must be below `n_clusters`.
    pub fn set(&mut self, c1: u32, c2: u32, mut choices: Vec<Choice>) -> Result<(), String> {
        let m = self.n_clusters;
        if c1 >= m || c2 >= m {
            return Err(format!("history pair ({c1}, {c2}) outside {m} clusters"));
        }
        if let Some(c) = choices.iter().find(|c| c.cluster >= m) {
            return Err(format!("cluster {} outside {m} clusters", c.cluster));
        }
        choices.truncate(self.top_k as usize);
        self.rows[(c1 * m + c2) as usize] = choices;
        Ok(())
    }

    /// The choices for a history pair, best first (empty when not computed or out of range).
    pub fn get(&self, c1: u32, c2: u32) -> &[Choice] {
        if c1 >= self.n_clusters || c2 >= self.n_clusters {
            return &[];
        }
        &self.rows[(c1 * self.n_clusters + c2) as usize]
    }

    /// Pairs with at least one choice.
    pub fn pairs(&self) -> usize {
        self.rows.iter().filter(|r| !r.is_empty()).count()
    }

    /// Every non-empty pair with its choices, in `(c1, c2)` order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, &[Choice])> {
        let m = self.n_clusters;
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(move |(i, r)| (i as u32 / m, i as u32 % m, r.as_slice()))
    }

    /// The binary form, checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.pairs() * (12 + 16 * self.top_k as usize) + 32);
        b.extend_from_slice(MAGIC);
        for v in [
            FORMAT_VERSION,
            self.n_clusters,
            self.top_k,
            self.pairs() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (c1, c2, row) in self.iter() {
            for v in [c1, c2, row.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for c in row {
                b.extend_from_slice(&c.cluster.to_le_bytes());
                b.extend_from_slice(&c.alignment.to_le_bytes());
                b.extend_from_slice(&c.novelty_prob.to_le_bytes());
                b.extend_from_slice(&c.frequency.to_le_bytes());
            }
        }
        let digest = Sha256::digest(&b);
        b.extend_from_slice(&digest);
        b
    }

    /// Parses and verifies the binary form; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |message: String| TableError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if bytes.len() < 24 + 32 || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a wander exploration table (bad magic or too short)".into(),
            ));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupted".into()
            ));
        }
        let mut at = 8;
        let mut u32_at = |what: &str| -> Result<u32> {
            let v = body
                .get(at..at + 4)
                .ok_or_else(|| bad(format!("ends inside {what} at byte {at}")))?;
            at += 4;
            Ok(u32::from_le_bytes(v.try_into().expect("4 bytes")))
        };
        let version = u32_at("the header")?;
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}; this build reads version {FORMAT_VERSION}"
            )));
        }
        let n_clusters = u32_at("the header")?;
        let top_k = u32_at("the header")?;
        let n_pairs = u32_at("the header")?;
        if n_clusters == 0 || n_clusters > 1 << 15 {
            return Err(bad(format!("implausible cluster count {n_clusters}")));
        }
        let mut table = ExplorationTable::new(n_clusters, top_k);
        for _ in 0..n_pairs {
            let c1 = u32_at("a pair")?;
            let c2 = u32_at("a pair")?;
            let count = u32_at("a pair")?;
            if count > top_k {
                return Err(bad(format!(
                    "pair ({c1}, {c2}) has {count} entries, top_k is {top_k}"
                )));
            }
            let mut row = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let cluster = u32_at("an entry")?;
                let alignment = f32::from_bits(u32_at("an entry")?);
                let novelty_prob = f32::from_bits(u32_at("an entry")?);
                let frequency = u32_at("an entry")?;
                row.push(Choice {
                    cluster,
                    alignment,
                    novelty_prob,
                    frequency,
                });
            }
            table.set(c1, c2, row).map_err(bad)?;
        }
        if at != body.len() {
            return Err(bad(format!("{} trailing bytes", body.len() - at)));
        }
        Ok(table)
    }

    /// Reads and verifies a binary table file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TableError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// The long-format Parquet table: one row per (pair, rank).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let (mut c1s, mut c2s, mut ranks, mut clusters) = (vec![], vec![], vec![], vec![]);
        let (mut al, mut nov, mut freq) = (vec![], vec![], vec![]);
        for (c1, c2, row) in self.iter() {
            for (r, c) in row.iter().enumerate() {
                c1s.push(c1);
                c2s.push(c2);
                ranks.push(r as u32 + 1);
                clusters.push(c.cluster);
                al.push(c.alignment);
                nov.push(c.novelty_prob);
                freq.push(c.frequency);
            }
        }
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("c1", Arc::new(UInt32Array::from(c1s))),
            ("c2", Arc::new(UInt32Array::from(c2s))),
            ("rank", Arc::new(UInt32Array::from(ranks))),
            ("cluster", Arc::new(UInt32Array::from(clusters))),
            ("alignment_score", Arc::new(Float32Array::from(al))),
            ("novelty_prob", Arc::new(Float32Array::from(nov))),
            ("frequency", Arc::new(UInt32Array::from(freq))),
        ];
        let err = |e: &dyn std::fmt::Display| TableError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let batch = RecordBatch::try_from_iter(cols).map_err(|e| err(&e))?;
        let file = std::fs::File::create(path).map_err(|source| TableError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
            .map_err(|e| err(&e))?;
        w.write(&batch).map_err(|e| err(&e))?;
        w.close().map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ExplorationTable {
        let mut t = ExplorationTable::new(4, 2);
        let ch = |cluster, alignment| Choice {
            cluster,
            alignment,
            novelty_prob: 0.25,
            frequency: 3,
        };
        t.set(0, 1, vec![ch(2, 0.9), ch(3, 0.5), ch(1, 0.1)])
            .unwrap();
        t.set(3, 2, vec![ch(0, 0.7)]).unwrap();
        t
    }

    #[test]
    fn round_trip_and_lookup() {
        let t = sample();
        assert_eq!(t.get(0, 1).len(), 2, "truncated to top_k");
        assert_eq!(t.get(3, 2)[0].cluster, 0);
        assert!(t.get(1, 0).is_empty() && t.get(9, 9).is_empty());
        let back = ExplorationTable::from_bytes(&t.to_bytes(), Path::new("t.bin")).unwrap();
        assert_eq!(back, t);
        assert!(t.clone().set(0, 9, vec![]).is_err());
        let dir = tempfile::tempdir().unwrap();
        t.write_parquet(&dir.path().join("t.parquet")).unwrap();
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = sample().to_bytes();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        let e = ExplorationTable::from_bytes(&b, Path::new("t.bin")).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let b = sample().to_bytes();
        assert!(ExplorationTable::from_bytes(&b[..b.len() - 5], Path::new("t.bin")).is_err());
        assert!(ExplorationTable::from_bytes(b"nonsense", Path::new("t.bin")).is_err());
    }

    proptest! {
        /// No byte string panics the reader.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ExplorationTable::from_bytes(&bytes, Path::new("x"));
        }

        /// Any byte flip of a valid table is rejected.
        #[test]
        fn any_flip_is_rejected(pos in 0usize..1000, bit in 0u8..8) {
            let b = sample().to_bytes();
            let mut c = b.clone();
            let p = pos % c.len();
            c[p] ^= 1 << bit;
            prop_assert!(ExplorationTable::from_bytes(&c, Path::new("x")).is_err());
        }
    }
}
