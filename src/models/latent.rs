//! What `vae-eval`, `vae-encode` and `vae-decode` ask of a VAE (vae-mlp, vae-conv): a
//! Gaussian posterior q(z|x) = N(mu, exp(logvar)) over a standard normal prior, a decoder
//! and a likelihood, in evaluation mode; and the estimators built on those alone, written
//! once for every such network: the one-sample ELBO and the importance-weighted bound.

use candle_core::{DType, Tensor, D};
use serde_json::Value;

use super::Family;
use crate::data::Geometry;
use crate::error::Result;
use crate::nn::functional::{kl_std_normal, log_std_normal, RunningLogSumExp, LN_2PI};
use crate::rng::Rng;
use crate::train::Metrics;

/// A VAE as the inference tools drive it (its layers in evaluation mode).
pub trait GaussianVae {
    fn family(&self) -> Family;
    fn latent(&self) -> usize;
    /// The images it takes and makes.
    fn geometry(&self) -> Geometry;
    /// Images [N, C, H, W] in [0, 1] as the network takes them (vae-mlp: flattened;
    /// vae-conv: on the [-1, 1] scale).
    fn input(&self, images: &Tensor) -> Result<Tensor>;
    /// The images evaluation scores: by default the images themselves; vae-mlp with dynamic
    /// binarization draws binary pixels from them with `rng`.
    fn observe(&self, images: &Tensor, _rng: &mut Rng) -> Result<Tensor> {
        Ok(images.clone())
    }
    /// q(z|x) of inputs `x`: mean and log-variance, each [N, latent].
    fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;
    /// -log p(x|z) per image, [N] (nats), of inputs `x` given latent codes `z` [N, latent].
    fn nll(&self, x: &Tensor, z: &Tensor) -> Result<Tensor>;
    /// The mean of p(x|z) as images in [0, 1], one row of C*H*W values per code.
    fn decode(&self, z: &Tensor) -> Result<Tensor>;
    /// About how many codes the importance-weighted estimate decodes at once.
    fn decode_rows(&self) -> usize;
    /// What a `vae-eval` report says beyond the shared `metrics`: the likelihood and its
    /// settings, other units.
    fn report_fields(&self, metrics: &Metrics) -> Vec<(String, Value)>;
}

/// z = mu + exp(logvar / 2) * eps, the reparameterization.
pub fn reparameterize(mu: &Tensor, logvar: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok((mu + (eps * (logvar * 0.5)?.exp()?)?)?)
}

/// The two terms of the negative ELBO, per image (nats).
pub struct ElboTerms {
    /// -log p(x|z) for one z ~ q(z|x): [N].
    pub nll: Tensor,
    /// KL(q(z|x) || p(z)), closed form: [N].
    pub kl: Tensor,
}

/// The ELBO's terms of inputs `x` with one reparameterized sample z = mu + sigma * eps.
pub fn elbo_terms(vae: &dyn GaussianVae, x: &Tensor, rng: &mut Rng) -> Result<ElboTerms> {
    let (mu, logvar) = vae.encode(x)?;
    let eps = rng.normal(mu.dims(), mu.device())?;
    let z = reparameterize(&mu, &logvar, &eps)?;
    Ok(ElboTerms { nll: vae.nll(x, &z)?, kl: kl_std_normal(&mu, &logvar)? })
}

/// The importance-weighted estimate of log p(x) (Burda et al. 2016,
/// <https://arxiv.org/abs/1509.00519>) with `k` samples per image of inputs `x`:
/// log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x). With k = 1 it is a one-sample ELBO;
/// it grows towards log p(x) as k grows. Returns nats per image.
pub fn iwae(vae: &dyn GaussianVae, x: &Tensor, k: usize, rng: &mut Rng) -> Result<Vec<f64>> {
    let n = x.dim(0)?;
    let (mu, logvar) = vae.encode(x)?;
    let (mu, logvar) = (mu.detach(), logvar.detach());
    let l = vae.latent();
    // Samples per image per pass, so that one pass decodes about `decode_rows` codes.
    let chunk = (vae.decode_rows() / n.max(1)).clamp(1, k.max(1));
    // Summed as the chunks come, so memory does not grow with k.
    let mut log_w = vec![RunningLogSumExp::default(); n];
    let mut done = 0;
    while done < k {
        let c = chunk.min(k - done);
        // (n, l) -> (n, c, l) -> (n*c, l)
        let rep = |t: &Tensor| -> Result<Tensor> { Ok(t.unsqueeze(1)?.broadcast_as((n, c, l))?.reshape((n * c, l))?) };
        let (mu_r, logvar_r) = (rep(&mu)?, rep(&logvar)?);
        let eps = rng.normal(&[n * c, l], x.device())?;
        let z = reparameterize(&mu_r, &logvar_r, &eps)?;
        // Each input c times in a row: (n, ...) -> (n, c, ...) -> (n*c, ...).
        let mut spread = x.dims().to_vec();
        spread.insert(1, c);
        let mut rows = spread[1..].to_vec();
        rows[0] = n * c;
        let x_r = x.unsqueeze(1)?.broadcast_as(spread)?.reshape(rows)?;
        let log_px_z = vae.nll(&x_r, &z)?.neg()?;
        // log q(z|x) = -0.5 * sum(eps^2 + logvar + ln 2pi)
        let log_qz = ((eps.sqr()? + logvar_r)? + LN_2PI)?.sum(D::Minus1)? * -0.5;
        let w = ((log_px_z + log_std_normal(&z)?)? - log_qz?)?;
        let w = w.to_dtype(DType::F64)?.reshape((n, c))?.to_vec2::<f64>()?;
        for (acc, row) in log_w.iter_mut().zip(w) {
            acc.add(&row);
        }
        done += c;
    }
    Ok(log_w.iter().map(|w| w.value() - (k as f64).ln()).collect())
}
