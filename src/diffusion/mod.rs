//! Denoising diffusion: schedules and closed forms (`schedule`), reverse-process samplers
//! (`sampler`).

pub mod sampler;
pub mod schedule;

pub use sampler::{ddim, ddpm, DdimOptions, DdpmOptions, NoisePredictor, Variance};
pub use schedule::{Schedule, ScheduleKind};
