//! Each model family's training objective, evaluation and inference entry points: the glue
//! between a network in `models/` and the shared loop in `train`.

pub mod vae;
pub mod vib;
pub mod vqvae2;

use crate::error::Result;
use crate::models::ModelConfig;
use crate::nn::Params;
use crate::train::{Metrics, Task};

/// The training task of a configuration, over `params` (fresh or loaded).
pub fn build(config: ModelConfig, params: Params) -> Result<Box<dyn Task>> {
    Ok(match config {
        ModelConfig::Vae(c) => Box::new(vae::VaeTask::new(c, params)?),
        ModelConfig::Vib(c) => Box::new(vib::VibTask::new(c, params)?),
        ModelConfig::VqVae2(c) => Box::new(vqvae2::VqTask::new(c, params)?),
    })
}

/// Means of per-example sums, accumulated over batches.
#[derive(Default)]
pub(crate) struct Means {
    sums: Metrics,
    count: usize,
}

impl Means {
    /// Adds a batch of `n` examples whose per-example values sum to `totals`.
    pub fn add(&mut self, n: usize, totals: &[(&str, f64)]) {
        for (name, v) in totals {
            match self.sums.iter_mut().find(|(k, _)| k == name) {
                Some((_, s)) => *s += v,
                None => self.sums.push((name.to_string(), *v)),
            }
        }
        self.count += n;
    }

    pub fn finish(self) -> Metrics {
        let n = self.count.max(1) as f64;
        self.sums.into_iter().map(|(k, v)| (k, v / n)).collect()
    }
}
