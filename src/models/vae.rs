//! The variational autoencoder of Kingma & Welling (2013, <https://arxiv.org/abs/1312.6114>),
//! as the PyTorch example builds it (<https://github.com/pytorch/examples/tree/main/vae>),
//! whose names it keeps (`vae-mlp`, docs/models.md):
//!
//! encoder 784 -> 400 ReLU -> (mu, logvar: 400 -> 20); z = mu + exp(logvar/2) * eps;
//! decoder 20 -> 400 ReLU -> 784, a Bernoulli (sigmoid) or Gaussian likelihood.
//! Loss per image: -log p(x|z) summed over pixels + beta * KL(q(z|x) || N(0,I)), closed form.
//! Parameter names follow the PyTorch example: fc1, fc21 (mu), fc22 (logvar), fc3, fc4, plus
//! `log_sigma` [1] when a Gaussian likelihood learns its scale.

use candle_core::{Device, Tensor, D};
use candle_nn::Module;

use crate::nn::Linear;
use serde::{Deserialize, Serialize};

use serde_json::{json, Value};

use super::latent::GaussianVae;
use super::Family;
use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::nn::functional::{bce_with_logits_sum, relu, LN_2PI};
use crate::nn::params::{Init, Params};
use crate::rng::Rng;
use crate::train::Metrics;

/// How p(x|z) is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Pixels are Bernoulli with mean sigmoid(decoder output).
    Bernoulli,
    /// Pixels are Gaussian with mean sigmoid(decoder output) and one scale sigma.
    Gaussian,
}

/// How grey pixels are presented to a Bernoulli likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Binarize {
    /// Grey values are used as they are (the PyTorch example's choice).
    #[default]
    None,
    /// Fresh binary pixels x ~ Bernoulli(grey) every time an image is seen, as in the
    /// likelihood literature; evaluation binarizes the held-out set once, with a fixed seed.
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// The images, flattened into the first layer (784 inputs for 1x28x28).
    pub image: Geometry,
    pub hidden: usize,
    pub latent: usize,
    pub likelihood: Likelihood,
    /// Gaussian scale: a fixed value, or `None` to learn it (`log_sigma`).
    pub sigma: Option<f64>,
    /// Weight on the KL term in training (beta-VAE); reported ELBOs always use 1.
    pub beta: f64,
    pub binarize: Binarize,
}

impl VaeConfig {
    /// The `vae-mlp` preset.
    pub fn vae_mlp() -> Self {
        VaeConfig {
            image: Geometry::MNIST,
            hidden: 400,
            latent: 20,
            likelihood: Likelihood::Bernoulli,
            sigma: None,
            beta: 1.0,
            binarize: Binarize::None,
        }
    }
}

impl VaeConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.latent == 0 || self.image.pixels() == 0 {
            return Err(Error::config("--hidden and --latent must be positive"));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::config(format!("--beta {} must be a finite number >= 0", self.beta)));
        }
        if let Some(s) = self.sigma {
            if !(s > 0.0 && s.is_finite()) {
                return Err(Error::config(format!("--sigma {s} must be positive")));
            }
        }
        if self.binarize == Binarize::Dynamic && self.likelihood != Likelihood::Bernoulli {
            return Err(Error::config("--binarize dynamic needs --likelihood bernoulli"));
        }
        Ok(())
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }
}

pub struct Vae {
    pub config: VaeConfig,
    fc1: Linear,
    fc21: Linear,
    fc22: Linear,
    fc3: Linear,
    fc4: Linear,
    scale: Scale,
}

/// The Gaussian likelihood's scale.
enum Scale {
    /// Bernoulli likelihood: no scale.
    None,
    Fixed(f64),
    /// The parameter `log_sigma` [1].
    Learned(Tensor),
}

impl Vae {
    pub fn new(config: VaeConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let (i, h, l) = (config.image.pixels(), config.hidden, config.latent);
        let scale = match (config.likelihood, config.sigma) {
            (Likelihood::Bernoulli, _) => Scale::None,
            (Likelihood::Gaussian, Some(s)) => Scale::Fixed(s),
            (Likelihood::Gaussian, None) => Scale::Learned(p.tensor("log_sigma", &[1], Init::Const(0.0))?),
        };
        Ok(Vae {
            fc1: p.linear("fc1", i, h)?,
            fc21: p.linear("fc21", h, l)?,
            fc22: p.linear("fc22", h, l)?,
            fc3: p.linear("fc3", l, h)?,
            fc4: p.linear("fc4", h, i)?,
            scale,
            config,
        })
    }

    /// q(z|x): mean and log-variance, each [N, latent]. `x` is [N, C*H*W] in [0,1].
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = relu(&self.fc1.forward(x)?)?;
        Ok((self.fc21.forward(&h)?, self.fc22.forward(&h)?))
    }

    /// The decoder's output before the sigmoid: [N, C*H*W].
    pub fn decode_logits(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.fc4.forward(&relu(&self.fc3.forward(z)?)?)?)
    }

    /// The mean of p(x|z) in [0,1]: [N, C*H*W].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::sigmoid(&self.decode_logits(z)?)?)
    }

    /// -log p(x|z) summed over pixels, [N].
    pub fn neg_log_likelihood(&self, x: &Tensor, logits: &Tensor) -> Result<Tensor> {
        let d = self.config.image.pixels() as f64;
        let sq_err = || -> Result<Tensor> {
            let mean = candle_nn::ops::sigmoid(logits)?;
            Ok((x - mean)?.sqr()?.sum(D::Minus1)?)
        };
        match &self.scale {
            Scale::None => bce_with_logits_sum(logits, x),
            Scale::Fixed(s) => Ok(((sq_err()? * (0.5 / (s * s)))? + d * (s.ln() + 0.5 * LN_2PI))?),
            Scale::Learned(log_sigma) => {
                // 0.5 * sq * exp(-2 log_sigma) + d * log_sigma + d/2 ln 2pi
                let t = (sq_err()?.broadcast_mul(&(log_sigma * -2.0)?.exp()?)? * 0.5)?;
                Ok((t.broadcast_add(&(log_sigma * d)?)? + 0.5 * d * LN_2PI)?)
            }
        }
    }
}

impl GaussianVae for Vae {
    fn family(&self) -> Family {
        Family::VaeMlp
    }

    fn latent(&self) -> usize {
        self.config.latent
    }

    fn geometry(&self) -> Geometry {
        self.config.geometry()
    }

    fn input(&self, images: &Tensor) -> Result<Tensor> {
        flatten(images)
    }

    fn observe(&self, images: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        match self.config.binarize {
            Binarize::None => Ok(images.clone()),
            Binarize::Dynamic => binarize(images, rng),
        }
    }

    fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Vae::encode(self, x)
    }

    fn nll(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        self.neg_log_likelihood(x, &self.decode_logits(z)?)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Vae::decode(self, z)
    }

    /// A pass decodes about 16k rows of 784 pixels.
    fn decode_rows(&self) -> usize {
        16_384
    }

    fn report_fields(&self, _metrics: &Metrics) -> Vec<(String, Value)> {
        vec![("likelihood".into(), json!(self.config.likelihood)), ("binarize".into(), json!(self.config.binarize))]
    }
}

/// Flattens [N, C, H, W] images to [N, C*H*W].
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    Ok(x.flatten_from(1)?)
}

/// Draws binary pixels x ~ Bernoulli(p) for images `p` in [0,1].
pub fn binarize(p: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let u = rng.uniform(p.dims(), 0.0, 1.0, p.device())?;
    Ok(u.lt(p)?.to_dtype(candle_core::DType::F32)?)
}

/// Points `start..start + rows` of the 2-D latent manifold of Kingma & Welling's Figure 4:
/// a `side` x `side` grid of latent points at the standard normal's quantiles (0.05 ..
/// 0.95), row-major, top row first. Computed per point, so any part of a huge grid is cheap.
pub fn manifold_rows(side: usize, start: usize, rows: usize, device: &Device) -> Result<Tensor> {
    let q = |i: usize| normal_quantile(0.05 + 0.9 * i as f64 / (side.max(2) - 1) as f64) as f32;
    let z: Vec<f32> = (start..start + rows).flat_map(|i| [q(i % side), q(side - 1 - i / side)]).collect();
    Ok(Tensor::from_vec(z, (rows, 2), device)?)
}

/// The standard normal quantile function (Acklam's rational approximation, |error| < 1.2e-9).
#[allow(clippy::excessive_precision)] // Acklam's published coefficients, as printed.
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const DD: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((DD[0] * q + DD[1]) * q + DD[2]) * q + DD[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::latent::{elbo_terms, iwae};
    use crate::nn::functional::log_std_normal;
    use crate::rng::Stream;

    fn tiny(likelihood: Likelihood) -> (Vae, crate::nn::ParamSet) {
        let cfg = VaeConfig {
            image: Geometry { channels: 1, height: 4, width: 4 },
            hidden: 8,
            latent: 3,
            likelihood,
            ..VaeConfig::vae_mlp()
        };
        let mut p = Params::init(5, &Device::Cpu);
        let vae = Vae::new(cfg, &mut p).unwrap();
        (vae, p.finish().unwrap())
    }

    fn images(n: usize) -> Tensor {
        Rng::new(9, Stream::Eval, 0).uniform(&[n, 16], 0.0, 1.0, &Device::Cpu).unwrap()
    }

    /// With k = 1 the importance-weighted estimate is exactly a one-sample ELBO (same
    /// noise), so their means agree; with more samples it grows.
    #[test]
    fn iwae_with_one_sample_is_the_elbo_and_grows_with_k() {
        let (vae, _) = tiny(Likelihood::Bernoulli);
        let x = images(4);
        // Same noise: identical values (the ELBO here uses MC log q - log p for KL).
        let mut r1 = Rng::new(3, Stream::Eval, 0);
        let iw1 = iwae(&vae, &x, 1, &mut r1).unwrap();
        let mut r2 = Rng::new(3, Stream::Eval, 0);
        let (mu, logvar) = vae.encode(&x).unwrap();
        let eps = r2.normal(mu.dims(), &Device::Cpu).unwrap();
        let z = (&mu + (&eps * (&logvar * 0.5).unwrap().exp().unwrap()).unwrap()).unwrap();
        let log_px_z = vae.neg_log_likelihood(&x, &vae.decode_logits(&z).unwrap()).unwrap().neg().unwrap();
        let log_q = (((eps.sqr().unwrap() + &logvar).unwrap() + LN_2PI).unwrap().sum(1).unwrap() * -0.5).unwrap();
        let elbo1 = ((log_px_z + log_std_normal(&z).unwrap()).unwrap() - log_q).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in iw1.iter().zip(&elbo1) {
            assert!((a - *b as f64).abs() < 1e-3, "iwae k=1 {a} vs elbo sample {b}");
        }
        // In expectation: mean over many k=1 draws equals the analytic-KL ELBO.
        let n = 2000;
        let xr = x.narrow(0, 0, 1).unwrap().broadcast_as((n, 16)).unwrap().contiguous().unwrap();
        let iw = iwae(&vae, &xr, 1, &mut Rng::new(4, Stream::Eval, 0)).unwrap();
        let mean_iw = iw.iter().sum::<f64>() / n as f64;
        let t = elbo_terms(&vae, &xr, &mut Rng::new(5, Stream::Eval, 0)).unwrap();
        let elbo = (t.nll + t.kl).unwrap().neg().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((mean_iw - elbo).abs() < 0.05, "E[iwae k=1] {mean_iw} vs ELBO {elbo}");
        // Grows with k (each estimate is a mean over many images to damp noise).
        let k_means: Vec<f64> = [1, 10, 100]
            .iter()
            .map(|&k| iwae(&vae, &x, k, &mut Rng::new(6, Stream::Eval, k as u64)).unwrap().iter().sum::<f64>())
            .collect();
        assert!(k_means[0] < k_means[1] && k_means[1] < k_means[2], "{k_means:?}");
    }

    /// Gradients reach the encoder through z = mu + sigma * eps.
    #[test]
    fn reparameterization_carries_gradients_to_the_encoder() {
        for lik in [Likelihood::Bernoulli, Likelihood::Gaussian] {
            let (vae, set) = tiny(lik);
            let x = images(4);
            let t = elbo_terms(&vae, &x, &mut Rng::new(1, Stream::Step, 0)).unwrap();
            // Only the reconstruction term: the KL alone would also reach fc21/fc22.
            let grads = t.nll.sum_all().unwrap().backward().unwrap();
            for name in ["fc1.weight", "fc21.weight", "fc22.weight", "fc3.weight", "fc4.weight"] {
                let g = grads.get(set.get(name).unwrap().as_tensor()).expect(name);
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm > 0.0, "{name} has no gradient ({lik:?})");
            }
            if lik == Likelihood::Gaussian {
                assert!(grads.get(set.get("log_sigma").unwrap().as_tensor()).is_some());
            }
        }
    }

    #[test]
    fn quantiles_are_right() {
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-6);
        assert!((normal_quantile(0.05) + 1.644_853_627).abs() < 1e-6);
    }
}
