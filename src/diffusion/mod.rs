//! Denoising diffusion: schedules and closed forms (`schedule`), the forward process
//! (`forward`), reverse-process samplers (`sampler`), the variational bound in bits per
//! dimension (`bound`).

pub mod bound;
pub mod forward;
pub mod sampler;
pub mod schedule;

pub use forward::q_sample;
pub use sampler::{ddim, ddpm, DdimOptions, DdpmOptions, NoisePredictor, Variance};
pub use schedule::{Schedule, ScheduleKind};
