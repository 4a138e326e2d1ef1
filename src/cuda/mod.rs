//! Opening a CUDA device. A CUDA build links no CUDA library: candle's cudarc loads the driver
//! (libcuda.so.1), cuBLAS and cuRAND when a device is first asked for (its `dynamic-loading`
//! feature, set in vendor/candle-core; see vendor/README.md), so a CUDA build starts, prints
//! `--help` and runs on the CPU on a machine without them. cudarc panics when a library is
//! missing; [`open`] asks for each first, so `--device cuda` there is one line naming it.

//!
//! [`kernels`]: the project's own CUDA kernels for ops on the hot path, compiled at run time.

#[cfg(feature = "cuda")]
pub mod kernels;

use candle_core::Device;

use crate::error::{Error, Result};

/// CUDA device `ordinal`, or one line saying why there is none.
pub fn open(ordinal: usize) -> Result<Device> {
    let flag = format!("--device cuda:{ordinal}");
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::config(format!(
            "{flag}: this build has no CUDA support (build it with `make build-cuda`, i.e. --features cuda)"
        )));
    }
    if let Some(missing) = missing_library() {
        return Err(Error::config(format!("{flag}: cannot load {missing}")));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::config(format!("{flag}: {e}")))
}

/// The first CUDA library candle needs that cannot be loaded, described for a user.
#[cfg(feature = "cuda")]
fn missing_library() -> Option<&'static str> {
    use candle_core::cuda_backend::cudarc::{cublas, curand, driver};
    type Present = unsafe fn() -> bool;
    let libraries: [(&str, Present); 3] = [
        (
            "the NVIDIA driver's libcuda.so.1 (is there an NVIDIA GPU and driver on this machine?)",
            driver::sys::is_culib_present,
        ),
        ("cuBLAS (libcublas.so.13; put the CUDA 13 libraries on LD_LIBRARY_PATH)", cublas::sys::is_culib_present),
        ("cuRAND (libcurand.so.10; put the CUDA 13 libraries on LD_LIBRARY_PATH)", curand::sys::is_culib_present),
    ];
    // SAFETY: each check only tries to dlopen the library by its usual names.
    libraries.into_iter().find(|(_, present)| !unsafe { present() }).map(|(name, _)| name)
}

#[cfg(not(feature = "cuda"))]
fn missing_library() -> Option<&'static str> {
    None
}
