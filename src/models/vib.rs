//! The Deep Variational Information Bottleneck of Alemi et al. (2017,
//! <https://arxiv.org/abs/1612.00410>; `vib-mlp`, docs/models.md): a stochastic encoder 784 -> 1024 ReLU -> 1024 ReLU -> (mu: 256,
//! sigma = softplus(s - 5)), a linear softmax classifier 256 -> 10 on a sampled z, and the
//! loss CE(y | z) + beta * KL(q(z|x) || N(0, I)). At test time the softmax is averaged over
//! 12 samples of z.
//!
//! Parameter names (the project's own): `fc1` 784->1024, `fc2` 1024->1024, `fc3` 1024->512
//! (first 256 outputs mu, last 256 the pre-softplus scale), `classifier` 256->10.

use candle_core::{DType, Tensor, D};
use candle_nn::Module;

use crate::nn::Linear;
use serde::{Deserialize, Serialize};

use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::nn::functional::{relu, softplus};
use crate::nn::params::Params;
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VibConfig {
    /// The images, flattened into the first layer (784 inputs for 1x28x28).
    pub image: Geometry,
    pub hidden: usize,
    pub latent: usize,
    pub classes: usize,
    pub beta: f64,
    /// Samples of z averaged at test time.
    pub test_samples: usize,
}

impl VibConfig {
    /// The `vib-mlp` preset.
    pub fn vib_mlp() -> Self {
        VibConfig { image: Geometry::MNIST, hidden: 1024, latent: 256, classes: 10, beta: 1e-3, test_samples: 12 }
    }
}

impl VibConfig {
    /// An error naming the first flag out of range.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.latent == 0 {
            return Err(Error::config("--hidden and --latent must be positive"));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::config(format!("--beta {} must be a finite number >= 0", self.beta)));
        }
        Ok(())
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }
}

pub struct Vib {
    pub config: VibConfig,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    classifier: Linear,
}

/// The encoder's posterior q(z|x) = N(mu, diag(sigma^2)).
pub struct Posterior {
    pub mu: Tensor,
    pub sigma: Tensor,
}

impl Posterior {
    /// KL(q(z|x) || N(0, I)) per example: 0.5 * sum(mu^2 + sigma^2 - 1) - sum(log sigma).
    pub fn kl(&self) -> Result<Tensor> {
        let quad = ((self.mu.sqr()? + self.sigma.sqr()?)? - 1.0)?.sum(D::Minus1)?;
        Ok(((quad * 0.5)? - self.sigma.log()?.sum(D::Minus1)?)?)
    }

    /// z = mu + sigma * eps.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        let eps = rng.normal(self.mu.dims(), self.mu.device())?;
        Ok((&self.mu + (eps * &self.sigma)?)?)
    }
}

impl Vib {
    pub fn new(config: VibConfig, p: &mut Params) -> Result<Self> {
        if config.classes < 2 || config.latent == 0 || config.test_samples == 0 {
            return Err(Error::config("vib-mlp needs at least 2 classes, a latent size and test samples"));
        }
        let (i, h, l) = (config.image.pixels(), config.hidden, config.latent);
        Ok(Vib {
            fc1: p.linear("fc1", i, h)?,
            fc2: p.linear("fc2", h, h)?,
            fc3: p.linear("fc3", h, 2 * l)?,
            classifier: p.linear("classifier", l, config.classes)?,
            config,
        })
    }

    /// q(z|x) for images `x` [N, 784] in [0,1].
    pub fn encode(&self, x: &Tensor) -> Result<Posterior> {
        let h = relu(&self.fc2.forward(&relu(&self.fc1.forward(x)?)?)?)?;
        let s = self.fc3.forward(&h)?;
        let l = self.config.latent;
        Ok(Posterior { mu: s.narrow(1, 0, l)?, sigma: softplus(&(s.narrow(1, l, l)? - 5.0)?)? })
    }

    /// Class logits for codes `z` [N, latent].
    pub fn classify(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.classifier.forward(z)?)
    }

    /// The training loss's two terms, per example: cross-entropy of y given one sampled z,
    /// and the KL.
    pub fn loss_terms(&self, x: &Tensor, y: &Tensor, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let q = self.encode(x)?;
        let logits = self.classify(&q.sample(rng)?)?;
        Ok((cross_entropy(&logits, y)?, q.kl()?))
    }

    /// Test-time prediction: the softmax averaged over `test_samples` draws of z, [N, classes];
    /// also the mean cross-entropy of the true class over the draws [N] and the KL [N].
    pub fn predict(&self, x: &Tensor, y: &Tensor, rng: &mut Rng) -> Result<(Tensor, Tensor, Tensor)> {
        let q = self.encode(x)?;
        let s = self.config.test_samples;
        let mut probs = Tensor::zeros((x.dim(0)?, self.config.classes), DType::F32, x.device())?;
        let mut ce = Tensor::zeros(x.dim(0)?, DType::F32, x.device())?;
        for _ in 0..s {
            let logits = self.classify(&q.sample(rng)?)?;
            probs = (probs + candle_nn::ops::softmax(&logits, D::Minus1)?)?;
            ce = (ce + cross_entropy(&logits, y)?)?;
        }
        Ok(((probs / s as f64)?, (ce / s as f64)?, q.kl()?))
    }
}

/// -log softmax(logits)[y] per example, [N] (non-fused log-softmax: it keeps gradients).
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?)
}

/// The entropy of the empirical label distribution, nats.
pub fn label_entropy(labels: &[u32], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let n = labels.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| -(c as f64 / n) * (c as f64 / n).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;
    use candle_core::Device;

    #[test]
    fn loss_reaches_every_parameter_and_kl_is_zero_at_the_prior() {
        let cfg = VibConfig {
            image: Geometry { channels: 1, height: 4, width: 4 },
            hidden: 8,
            latent: 4,
            classes: 3,
            ..VibConfig::vib_mlp()
        };
        let mut p = Params::init(2, &Device::Cpu);
        let vib = Vib::new(cfg, &mut p).unwrap();
        let set = p.finish().unwrap();
        let x = Rng::new(1, Stream::Eval, 0).uniform(&[5, 16], 0.0, 1.0, &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 1, 0], &Device::Cpu).unwrap();
        let (ce, kl) = vib.loss_terms(&x, &y, &mut Rng::new(1, Stream::Step, 0)).unwrap();
        let grads = (ce + kl).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in set.trainable() {
            assert!(grads.get(var.as_tensor()).is_some(), "{name} has no gradient");
        }
        let at_prior = Posterior {
            mu: Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap(),
            sigma: Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap(),
        };
        assert!(at_prior.kl().unwrap().to_vec1::<f32>().unwrap()[0].abs() < 1e-6);
        assert!((label_entropy(&[0, 1, 0, 1], 2) - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
