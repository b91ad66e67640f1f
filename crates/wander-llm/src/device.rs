//! Where a model runs: the CPU, or (built with the `cuda` feature) an NVIDIA GPU.

use candle_core::Device;

use crate::{LlmError, Result};

/// Whether this build carries candle's CUDA kernels (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The CPU (`None`) or the GPU of that ordinal. A GPU in a build without the `cuda` feature
/// is an error that says how to build one; a GPU that is absent is candle's error.
pub fn open(gpu: Option<usize>) -> Result<Device> {
    match gpu {
        None => Ok(Device::Cpu),
        Some(ordinal) if !CUDA_BUILT => Err(LlmError::Invalid(format!(
            "llm.device asks for GPU {ordinal}, but this wander was built without the `cuda` \
             feature: cargo build --release --features cuda, with nvcc on the PATH (README, \
             \"On a GPU\")"
        ))),
        Some(ordinal) => Ok(Device::new_cuda(ordinal)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_opens_everywhere() {
        assert!(open(None).unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_without_the_feature_says_how_to_build_one() {
        let err = open(Some(0)).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
