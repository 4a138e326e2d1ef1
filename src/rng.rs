//! Seeded random numbers. Every random draw in the toolkit comes from here, because candle's
//! CPU generator cannot be seeded (`Device::Cpu.set_seed` errors; docs/candle.md). A stream is derived from
//! `(seed, purpose, index)`, e.g. one per training step, so a resumed run draws exactly what
//! an uninterrupted one would, without saving generator state. The samplers draw each
//! output row from a stream of its own ([`RowStreams`]), so a row's draws do not depend on
//! the batch it is drawn in.

use std::ops::Range;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;

use crate::error::{Error, Result};

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
    /// Evaluation and other inference-time noise (index: batch, or image).
    Eval = 4,
    /// Everything one output row of a sampler draws (index: the row's place in the whole
    /// run): `prior-sample`'s codes, `ddpm-denoise`'s starting and step noise.
    Sample = 5,
    /// Which training images `--flip` mirrors (index: step).
    Flip = 6,
    /// The rows of one of KID's random subsets (index: subset).
    Subsets = 7,
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

/// One stream per row of a batch: row i of the whole run draws from (seed, stream, i), in
/// the order of its own draws. What a row draws is then the same in a batch of 1 or of 500,
/// after any rows or none: `--batch-size` and `--shard` change no sample, and N shards of
/// a run draw what the one run draws.
pub struct RowStreams(Vec<Rng>);

impl RowStreams {
    /// The streams of rows `rows` of a run.
    pub fn new(seed: u64, stream: Stream, rows: Range<usize>) -> Self {
        RowStreams(rows.map(|i| Rng::new(seed, stream, i as u64)).collect())
    }

    /// The rows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stream of the batch's row `i`.
    pub fn row(&mut self, i: usize) -> &mut Rng {
        &mut self.0[i]
    }

    /// Standard normal samples of `shape` [rows, ...], f32: each row's from its own stream.
    pub fn normal(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        if shape.first() != Some(&self.len()) {
            return Err(Error::config(format!("noise of shape {shape:?} for a batch of {} rows", self.len())));
        }
        let per_row: usize = shape[1..].iter().product();
        let mut v = Vec::with_capacity(self.len() * per_row);
        for rng in &mut self.0 {
            v.extend((0..per_row).map(|_| rng.0.sample::<f32, _>(StandardNormal)));
        }
        Ok(Tensor::from_vec(v, shape, device)?)
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

    /// A row draws the same numbers in any batch, after any rows.
    #[test]
    fn a_row_draws_the_same_in_any_batch() {
        let d = Device::Cpu;
        let whole = RowStreams::new(7, Stream::Sample, 0..5).normal(&[5, 3], &d).unwrap().to_vec2::<f32>().unwrap();
        let part = RowStreams::new(7, Stream::Sample, 3..5).normal(&[2, 3], &d).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(part, whole[3..]);
        assert_ne!(whole[0], whole[1]);
        let own = Rng::new(7, Stream::Sample, 4).normal(&[3], &d).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(own, whole[4]);
        assert!(RowStreams::new(7, Stream::Sample, 0..2).normal(&[3, 3], &d).is_err());
    }
}
