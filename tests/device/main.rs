//! Device equality: every network and sampler gives the CPU's results on another device.
//!
//! ```text
//! GENIMG_TEST_DEVICE=cuda cargo test --release --features cuda --test device   # or cuda:N
//! GENIMG_TEST_DEVICE=cpu cargo test --release --test device                    # the harness itself
//! ```
//!
//! Unset, the device is CUDA device 0 when the build and the machine have one; otherwise every
//! test returns after one `skipped:` line. A device that is named but cannot be opened fails.
//! Parameters are drawn on the host from a seed and copied, inputs drawn on the host from the
//! seeded streams (genimg::rng), so both sides start from the same bits (checked). On the CPU
//! the fused kernels run (src/nn, the PixelCNN's layer op), elsewhere candle's composed ops:
//! that difference is what these tests catch. Tolerances, with ref the CPU's values:
//!
//! - forward passes (f32): max |ref - dev| <= 1e-4 max(1, max |ref|);
//! - a training step's loss: |ref - dev| <= 1e-4 max(1, |ref|); each gradient: max |ref - dev|
//!   <= 1e-3 max(max |ref|, 1e-2 x the largest entry of any gradient); each parameter after one
//!   Adam step within lr (|s(g_ref) - s(g_dev)| + 1e-3) + 1e-6 max(1, max |p|) entry by entry,
//!   s(g) = g / (|g| + eps) (Adam's first step turns a gradient that is rounding noise into
//!   +-lr); buffers after the step (running statistics, codebooks, weight averages) as forward
//!   passes;
//! - codes (vector quantization, greedy PixelCNN sampling): equal, on seeds whose reference
//!   has no near-tie (checked on the CPU: gaps of 1e-3 relative for codebooks, 2e-4 for logits);
//! - PixelCNN at temperature 1: a map may diverge only at a position whose uniform number lies
//!   between a boundary of the CPU's and the device's teacher-forced CDF (slack 1e-5), and
//!   those probabilities agree to 1e-4;
//! - DDIM (10 steps) and DDPM (10 steps): max |ref - dev| of the final images <= 1e-3.

mod cases;
mod forward;
mod harness;
mod samplers;
mod steps;
mod training;
