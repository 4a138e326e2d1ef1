//! The project's CUDA kernels (`kernels.cu`), compiled by NVRTC once per process when a CUDA
//! op first runs. Run-time compilation ties no PTX to the build machine's nvcc or to one
//! compute capability (the driver compiles NVRTC's PTX for the GPU it finds), costs about a
//! second once, and leaves a CPU-only run without NVRTC at all. candle's own kernels are built
//! by nvcc at build time instead (candle-kernels), which is what takes a CUDA build 30 minutes.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaView, LaunchArgs, LaunchConfig};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout};

const SOURCE: &str = include_str!("kernels.cu");
const MODULE: &str = "genimg-kernels";

/// Threads per block of every launch.
const THREADS: u32 = 256;

/// The PTX of `kernels.cu`, compiled on first use; the error says what failed.
pub fn ptx() -> candle_core::Result<&'static str> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    let compiled = PTX.get_or_init(|| {
        // SAFETY: only tries to dlopen NVRTC by its usual names.
        if !unsafe { nvrtc::sys::is_culib_present() } {
            return Err("cannot load NVRTC (libnvrtc.so.13; put the CUDA 13 libraries on LD_LIBRARY_PATH)".into());
        }
        let options = nvrtc::CompileOptions { name: Some("kernels.cu".into()), ..Default::default() };
        nvrtc::compile_ptx_with_opts(SOURCE, options)
            .map(|ptx| ptx.to_src())
            .map_err(|e| format!("NVRTC cannot compile src/cuda/kernels.cu: {e:?}"))
    });
    compiled.as_deref().map_err(|e| candle_core::Error::Msg(e.clone()))
}

/// Kernel `name` of `kernels.cu`, loaded on `dev` (once per device).
pub fn function(dev: &CudaDevice, name: &str) -> candle_core::Result<CudaFunction> {
    Ok(dev.get_or_load_custom_func(name, MODULE, ptx()?)?.into_cuda_function())
}

/// A launch over `n` elements for the kernels' grid-stride loops: a block per 256 elements,
/// at most 65,535 blocks (the loop covers the rest).
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The contiguous f32 data of an op's CUDA input.
pub fn view<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> candle_core::Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        None => candle_core::bail!("{op}: expected a contiguous f32 tensor"),
    }
}

/// Launches a grid-stride kernel over `n` elements.
pub fn launch(mut b: LaunchArgs<'_>, n: usize) -> candle_core::Result<()> {
    // SAFETY: the caller pushed the kernel's arguments in the order and types of its signature
    // in kernels.cu, with outputs of the sizes it writes.
    unsafe { b.launch(grid(n)) }.w()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: where its library loads (the CUDA build's toolchain, a GPU machine),
    /// every kernel of the source compiles and is in the PTX.
    #[test]
    fn the_kernels_compile() {
        // SAFETY: as in `ptx`.
        if !unsafe { super::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: NVRTC (libnvrtc.so.13) cannot be loaded here");
            return;
        }
        let ptx = super::ptx().unwrap();
        for name in ["gate_fwd", "gate_bwd", "causal_unfold", "causal_fold"] {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} is not in the PTX");
        }
    }
}
