//! genimg: small Unix tools for generative image models.
//!
//! Each tool in `bin/` is a thin command over this library: it parses arguments, calls one
//! function here and writes the output. Tensors travel between tools as `.npy` (one array)
//! and `.safetensors` (named arrays, checkpoints) files; see [`io`].

pub mod checkpoint;
pub mod cli;
pub mod cuda;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod io;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod plot;
pub mod rng;
pub mod tasks;
pub mod tools;
pub mod train;

pub use error::{Error, Result};

// candle allocates a fresh buffer for every op; with the system allocator these small
// models spend 40-45 % of their time in mmap/munmap (docs/candle.md). mimalloc reuses
// memory and doubles training throughput. (Unit tests wrap it to refuse absurd requests:
// io::fuzz_tests.)
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
