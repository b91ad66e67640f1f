//! A content-addressed store of fixed-width vectors in one checksummed file: what a model
//! computed for an input, keyed by a hash of both, so that a rerun computes only what is
//! new. The taxonomy keeps its text embeddings in one, the precompute its proposal
//! distributions and alignment scores.
//!
//! The file is a header (an 8-byte magic naming the format and element type, the width,
//! the count), the records (a 64-character hex key, then the values), then the SHA-256
//! (hex) of everything before it. A file that is missing, fails its checksum or holds a
//! non-finite value reads as an empty store: its entries are computed again, never trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{CoreError, Result};

/// A value a store holds: fixed width, little-endian on disk.
pub trait Element: Copy + PartialEq + std::fmt::Debug {
    /// Bytes per value.
    const WIDTH: usize;
    /// Appends the value's little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads a value from exactly [`Self::WIDTH`] bytes.
    fn get(bytes: &[u8]) -> Self;
    /// Whether the value is a finite number.
    fn finite(self) -> bool;
}

impl Element for f32 {
    const WIDTH: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn finite(self) -> bool {
        self.is_finite()
    }
}

impl Element for f64 {
    const WIDTH: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        f64::from_le_bytes(a)
    }
    fn finite(self) -> bool {
        self.is_finite()
    }
}

const KEY_LEN: usize = 64;
const HEADER_LEN: usize = 20;

/// Vectors of one width keyed by a 64-character hex digest, read whole and written
/// atomically.
#[derive(Debug)]
pub struct KeyedVectors<T: Element> {
    path: PathBuf,
    magic: [u8; 8],
    entries: HashMap<String, Vec<T>>,
    dirty: bool,
}

impl<T: Element> KeyedVectors<T> {
    /// Opens the store at `path` whose files start with `magic`; a missing, damaged or
    /// foreign file gives an empty store (and is replaced on the next save).
    pub fn open(path: &Path, magic: [u8; 8]) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| decode(&b, &magic))
            .unwrap_or_default();
        KeyedVectors {
            path: path.to_path_buf(),
            magic,
            entries,
            dirty: false,
        }
    }

    /// The key of `parts` (joined with newlines): SHA-256 in hex.
    pub fn key(parts: &[&[u8]]) -> String {
        crate::hash::sha256_hex(&parts.join(&b'\n'))
    }

    /// A stored vector.
    pub fn get(&self, key: &str) -> Option<&Vec<T>> {
        self.entries.get(key)
    }

    /// Stores a vector. A key that is not a 64-character hex digest, a non-finite value or
    /// a width other than the stored vectors' is refused: the store would not read back.
    pub fn insert(&mut self, key: String, v: Vec<T>) -> Result<()> {
        let bad = |why: String| {
            Err(CoreError::Artifact {
                path: self.path.clone(),
                message: format!("cannot store {why}"),
            })
        };
        if key.len() != KEY_LEN || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!("under the key `{key}` (not a SHA-256 in hex)"));
        }
        if let Some(x) = v.iter().find(|x| !x.finite()) {
            return bad(format!("a non-finite value ({x:?})"));
        }
        if let Some(w) = self.entries.values().next().map(Vec::len) {
            if v.len() != w {
                return bad(format!("{} values beside vectors of {w}", v.len()));
            }
        }
        self.entries.insert(key, v);
        self.dirty = true;
        Ok(())
    }

    /// Vectors stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the store atomically if it changed since it was opened or saved.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let width = self.entries.values().next().map_or(0, Vec::len);
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        let mut bytes = Vec::with_capacity(HEADER_LEN + keys.len() * (KEY_LEN + T::WIDTH * width));
        bytes.extend_from_slice(&self.magic);
        bytes.extend_from_slice(&(width as u32).to_le_bytes());
        bytes.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for k in keys {
            bytes.extend_from_slice(k.as_bytes());
            for &x in &self.entries[k] {
                x.put(&mut bytes);
            }
        }
        let checksum = crate::hash::sha256_hex(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        }
        crate::artifact::atomic_write(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

fn decode<T: Element>(bytes: &[u8], magic: &[u8; 8]) -> Option<HashMap<String, Vec<T>>> {
    if bytes.len() < HEADER_LEN + KEY_LEN || &bytes[..8] != magic {
        return None;
    }
    let (bytes, checksum) = bytes.split_at(bytes.len() - KEY_LEN);
    if crate::hash::sha256_hex(bytes).as_bytes() != checksum {
        return None;
    }
    let width = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let n = u64::from_le_bytes(bytes[12..20].try_into().ok()?) as usize;
    let record = KEY_LEN + T::WIDTH * width;
    if bytes.len() != HEADER_LEN.checked_add(n.checked_mul(record)?)? {
        return None;
    }
    let mut out = HashMap::with_capacity(n);
    for r in 0..n {
        let at = HEADER_LEN + r * record;
        let key = std::str::from_utf8(&bytes[at..at + KEY_LEN])
            .ok()?
            .to_string();
        let v: Vec<T> = bytes[at + KEY_LEN..at + record]
            .chunks_exact(T::WIDTH)
            .map(T::get)
            .collect();
        if v.iter().any(|x| !x.finite()) {
            return None;
        }
        out.insert(key, v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 8] = *b"WTEST001";

    fn saved<T: Element>(entries: &[(&str, Vec<T>)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("store.bin");
        let mut store = KeyedVectors::<T>::open(&path, MAGIC);
        for (text, v) in entries {
            store
                .insert(
                    KeyedVectors::<T>::key(&[b"model", text.as_bytes()]),
                    v.clone(),
                )
                .unwrap();
        }
        store.save().unwrap();
        (dir, path)
    }

    #[test]
    fn a_saved_store_reads_back_bit_for_bit() {
        let tiny = f64::from_bits(1);
        let (_dir, path) = saved(&[("a", vec![0.1f64, -1.0]), ("b", vec![tiny, 3.0])]);
        let store = KeyedVectors::<f64>::open(&path, MAGIC);
        assert_eq!(store.len(), 2);
        let b = store
            .get(&KeyedVectors::<f64>::key(&[b"model", b"b"]))
            .unwrap();
        assert_eq!(b[0].to_bits(), 1);
        assert_eq!(
            store.get(&KeyedVectors::<f64>::key(&[b"model", b"a"])),
            Some(&vec![0.1, -1.0])
        );
    }

    #[test]
    fn a_flipped_byte_another_magic_or_a_truncation_reads_as_empty() {
        let (_dir, path) = saved(&[("a", vec![0.5f32, -1.0])]);
        let good = std::fs::read(&path).unwrap();
        let mut bytes = good.clone();
        bytes[HEADER_LEN + KEY_LEN] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(KeyedVectors::<f32>::open(&path, MAGIC).is_empty());
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(KeyedVectors::<f32>::open(&path, MAGIC).is_empty());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(KeyedVectors::<f32>::open(&path, MAGIC).len(), 1);
        assert!(KeyedVectors::<f32>::open(&path, *b"WOTHER01").is_empty());
    }

    #[test]
    fn what_would_not_read_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyedVectors::<f32>::open(&dir.path().join("s.bin"), MAGIC);
        let key = KeyedVectors::<f32>::key(&[b"x"]);
        assert!(store.insert(key.clone(), vec![f32::NAN]).is_err());
        assert!(store.insert("short".into(), vec![1.0]).is_err());
        store.insert(key.clone(), vec![1.0, 2.0]).unwrap();
        let e = store
            .insert(KeyedVectors::<f32>::key(&[b"y"]), vec![1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 values beside vectors of 2"), "{e}");
        // An unchanged store is not rewritten; a changed one is, into a new folder.
        store.save().unwrap();
        assert!(dir.path().join("s.bin").is_file());
    }
}
