//! Helpers the kernels' tests share.

use crate::rng::{Rng, Stream};
use candle_core::Device;

/// Largest |a - b| relative to the largest |b| (at least 1).
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
    a.iter().zip(b).fold(0f32, |e, (a, b)| e.max((a - b).abs())) / scale
}

/// `len` standard normal floats drawn from `r`.
pub fn normal(r: &mut Rng, len: usize) -> Vec<f32> {
    r.normal(&[len], &Device::Cpu).unwrap().to_vec1().unwrap()
}

/// A seeded generator for test data.
pub fn rng(seed: u64) -> Rng {
    Rng::new(seed, Stream::Eval, 0)
}
