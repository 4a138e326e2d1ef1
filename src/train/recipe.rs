//! The optimisation recipe around Adam that the diffusion papers train with, for every
//! family: a linear learning-rate warm-up (Ho et al. 2020 use 5,000 steps), a constant or
//! cosine schedule after it, clipping of the gradients' global norm (1.0 in the paper), and
//! random horizontal flips of training images (their CIFAR-10 runs). Weight decay, the
//! fourth part, is Adam's ([`crate::nn::AdamConfig::weight_decay`], the AdamW form).
//!
//! Every part is a function of the step (and the seed), so a resumed run follows exactly
//! the schedule and the flips of the uninterrupted one.

use candle_core::{DType, Tensor};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::rng::{Rng, Stream};

/// What the learning rate does after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Stays at `--lr`.
    #[default]
    Constant,
    /// Falls along half a cosine from `--lr` to 0 at the last step.
    Cosine,
}

/// The settings of a run beyond Adam's.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Recipe {
    /// Steps over which the learning rate rises linearly from 0.
    pub lr_warmup: u64,
    pub lr_schedule: LrSchedule,
    /// The largest global L2 norm of the gradients; larger ones are scaled down to it.
    pub grad_clip: Option<f64>,
    /// Flip each training image left-right with probability 1/2.
    pub flip: bool,
}

impl Recipe {
    /// An error naming the flag out of range.
    pub fn validate(&self) -> Result<()> {
        match self.grad_clip {
            Some(c) if !(c > 0.0 && c.is_finite()) => {
                Err(Error::config(format!("--grad-clip {c} must be a positive number")))
            }
            _ => Ok(()),
        }
    }

    /// The factor of the base learning rate at 0-based `step` of a run of `total` steps, as
    /// diffusers' (and transformers') `get_constant_schedule_with_warmup` and
    /// `get_cosine_schedule_with_warmup` compute it: step / warmup during the warm-up (0 at
    /// the first step), then 1, or 0.5 (1 + cos(pi p)) with p the fraction of the steps after
    /// the warm-up done.
    pub fn lr_factor(&self, step: u64, total: u64) -> f64 {
        let warmup = self.lr_warmup;
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let p = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * p).cos())).max(0.0)
            }
        }
    }

    /// The batch with its images flipped left-right where a fair coin of the stream (seed,
    /// Flip, step) says so, one coin per image in batch order; as it was without `--flip`.
    pub fn augment(&self, batch: Batch, seed: u64, step: u64) -> Result<Batch> {
        if !self.flip {
            return Ok(batch);
        }
        let x = &batch.x;
        let (n, w) = match x.dims() {
            &[n, _, _, w] if x.dtype().is_float() => (n, w),
            dims => {
                return Err(Error::config(format!(
                    "--flip flips images [N, C, H, W]; this model trains on {dims:?} {:?}",
                    x.dtype()
                )))
            }
        };
        let mut rng = Rng::new(seed, Stream::Flip, step);
        let coins: Vec<u8> = (0..n).map(|_| u8::from(rng.inner().random::<bool>())).collect();
        let device = x.device();
        let reversed = Tensor::from_vec((0..w as u32).rev().collect::<Vec<_>>(), w, device)?;
        let flipped = x.index_select(&reversed, 3)?;
        let mask = Tensor::from_vec(coins, (n, 1, 1, 1), device)?.to_dtype(DType::U8)?.broadcast_as(x.shape())?;
        Ok(Batch { x: mask.where_cond(&flipped, x)?, ..batch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The factors of diffusers' schedules, from
    /// ```python
    /// import torch
    /// from diffusers.optimization import get_cosine_schedule_with_warmup
    /// opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    /// s = get_cosine_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=12)
    /// lrs = []
    /// for _ in range(12):
    ///     lrs.append(opt.param_groups[0]["lr"]); opt.step(); s.step()
    /// ```
    /// which is 0, 1/4, 1/2, 3/4, then 0.5 (1 + cos(pi k / 8)) for k = 0..8.
    #[test]
    fn warmup_then_constant_or_cosine() {
        let cosine = Recipe { lr_warmup: 4, lr_schedule: LrSchedule::Cosine, ..Recipe::default() };
        let got: Vec<f64> = (0..12).map(|s| cosine.lr_factor(s, 12)).collect();
        let mut want = vec![0.0, 0.25, 0.5, 0.75];
        want.extend((0..8).map(|k| 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / 8.0).cos())));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        let constant = Recipe { lr_warmup: 2, ..Recipe::default() };
        assert_eq!((0..4).map(|s| constant.lr_factor(s, 4)).collect::<Vec<_>>(), [0.0, 0.5, 1.0, 1.0]);
        assert!((0..5).all(|s| Recipe::default().lr_factor(s, 5) == 1.0));
        assert!(Recipe { grad_clip: Some(0.0), ..Recipe::default() }.validate().is_err());
    }

    /// Flipped images are their mirror images, the others untouched; the coins are the
    /// step's, so the same step flips the same images.
    #[test]
    fn flips_mirror_some_images_and_repeat_per_step() {
        let d = &Device::Cpu;
        let n = 16;
        let x: Vec<f32> = (0..n * 2 * 3 * 4).map(|i| i as f32).collect();
        let batch = || Batch { x: Tensor::from_vec(x.clone(), (n, 2, 3, 4), d).unwrap(), y: None, cond: None };
        let recipe = Recipe { flip: true, ..Recipe::default() };
        let out = recipe.augment(batch(), 7, 3).unwrap().x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut flipped = 0;
        for (img, (a, b)) in x.chunks(24).zip(out.chunks(24)).enumerate() {
            let mirror: Vec<f32> = a.chunks(4).flat_map(|row| row.iter().rev().copied()).collect();
            assert!(b == a || b == mirror.as_slice(), "image {img}");
            flipped += usize::from(b != a);
        }
        assert!((3..=13).contains(&flipped), "{flipped} of {n} flipped");
        let again = recipe.augment(batch(), 7, 3).unwrap().x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out, again);
        let unflipped = Recipe::default().augment(batch(), 7, 3).unwrap().x.flatten_all().unwrap();
        assert_eq!(unflipped.to_vec1::<f32>().unwrap(), x);
        let codes = Batch { x: Tensor::zeros((2, 3, 3), DType::U32, d).unwrap(), y: None, cond: None };
        assert!(recipe.augment(codes, 7, 3).err().unwrap().to_string().contains("--flip"));
    }
}
