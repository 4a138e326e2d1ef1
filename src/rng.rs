//! Seeded random numbers. Every random draw in the toolkit comes from here, because candle's
//! CPU generator cannot be seeded (`Device::Cpu.set_seed` errors; docs/candle.md). A stream is derived from
//! `(seed, purpose, index)`, e.g. one per training step, so a resumed run draws exactly what
//! an uninterrupted one would, without saving generator state.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;

use crate::error::Result;

/// What a random stream is used for; keeps streams of different purposes independent.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Parameter initialisation.
    Init = 1,
    /// The order of examples in one epoch (index: epoch).
    Shuffle = 2,
    /// Noise of one training step (index: step).
    Step = 3,
    /// Evaluation, sampling and other inference-time noise (index: batch).
    Eval = 4,
}

/// A seeded generator with helpers that produce candle tensors.
pub struct Rng(StdRng);

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give distinct seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64, stream: Stream, index: u64) -> Self {
        let s = mix(mix(mix(seed) ^ stream as u64) ^ index);
        Rng(StdRng::seed_from_u64(s))
    }

    /// Standard normal samples, f32.
    pub fn normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.sample(StandardNormal)).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// Uniform samples in `[lo, hi)`, f32.
    pub fn uniform(&mut self, shape: &[usize], lo: f32, hi: f32, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.random_range(lo..hi)).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(&mut self.0);
        p
    }

    /// The underlying generator, for draws the helpers do not cover.
    pub fn inner(&mut self) -> &mut StdRng {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_and_differ() {
        let d = Device::Cpu;
        let a = Rng::new(7, Stream::Step, 3).normal(&[5], &d).unwrap().to_vec1::<f32>().unwrap();
        let b = Rng::new(7, Stream::Step, 3).normal(&[5], &d).unwrap().to_vec1::<f32>().unwrap();
        let c = Rng::new(7, Stream::Step, 4).normal(&[5], &d).unwrap().to_vec1::<f32>().unwrap();
        let e = Rng::new(7, Stream::Shuffle, 3).normal(&[5], &d).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, e);
    }
}
