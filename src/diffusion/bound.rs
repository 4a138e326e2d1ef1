//! The variational bound on -log p(x_0) of a DDPM (Ho et al. 2020, eq. 5), the likelihood
//! their Table 2 reports in bits per dimension, computed as their code does it
//! (`diffusion_utils_2.py`, `calc_bpd_loop`), with t 0-based:
//!
//! - the prior term KL(q(x_{T-1} | x_0) || N(0, I)) (L_T of the paper);
//! - for t >= 1, KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) (L_{t-1}): p's mean is the
//!   posterior mean at the x_0 predicted from the network's noise, its variance sigma_t^2
//!   the sampler's (beta_t, or beta-tilde_t);
//! - for t = 0, -log p(x_0 | x_t) (L_0): the discretized Gaussian over the 256 levels
//!   ([`crate::nn::discretized`]) with the predicted x_0 as its mean and variance
//!   beta-tilde at t = 1 for both variance choices, as the reference's `fixedlarge` and
//!   clipped `fixedsmall` variances both have it.
//!
//! Each term sees its own fresh x_t ~ q(x_t | x_0), drawn from the image's own stream, so an
//! image's bound does not depend on the images evaluated with it.

use candle_core::{DType, Tensor};

use super::sampler::{NoisePredictor, Variance};
use super::{q_sample, Schedule};
use crate::error::{Error, Result};
use crate::nn::discretized::ln_prob_per_image;
use crate::rng::RowStreams;

/// KL(N(m1, v1) || N(m2, v2)) of one dimension, in nats.
pub fn gaussian_kl(m1: f64, v1: f64, m2: f64, v2: f64) -> f64 {
    0.5 * (-1.0 + v2.ln() - v1.ln() + v1 / v2 + (m1 - m2).powi(2) / v2)
}

/// The terms of the bound of a batch of images, in nats per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// KL(q(x_{T-1} | x_0) || N(0, I)) of each image.
    pub prior: Vec<f64>,
    /// `terms[t][i]`: image i's term at step t (t = 0 the decoder's -log p).
    pub terms: Vec<Vec<f64>>,
}

impl Bound {
    /// Each image's whole bound.
    pub fn totals(&self) -> Vec<f64> {
        (0..self.prior.len()).map(|i| self.prior[i] + self.terms.iter().map(|t| t[i]).sum::<f64>()).collect()
    }
}

/// The bound of the images `x0` ([B, C, H, W] on the [-1, 1] scale, at the 256 levels) under
/// `model`, one network call per step. `observe(t)` is called after each step's term.
pub fn variational_bound(
    model: &impl NoisePredictor,
    schedule: &Schedule,
    x0: &Tensor,
    variance: Variance,
    clip: bool,
    noise: &mut RowStreams,
    observe: &mut dyn FnMut(usize),
) -> Result<Bound> {
    let n = x0.dim(0)?;
    let d = x0.elem_count() / n.max(1);
    let steps = schedule.len();
    if steps == 0 {
        return Err(Error::config("a diffusion of no steps has no bound"));
    }
    let x0_host = x0.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let squares = per_image_sums(&x0.sqr()?)?;
    let (a, s) = schedule.q_coefficients(steps - 1);
    let (v, dims) = (s * s, d as f64);
    let prior = squares.iter().map(|&sq| 0.5 * (dims * (-1.0 - v.ln() + v) + a * a * sq)).collect();
    let mut terms = vec![Vec::new(); steps];
    for t in (0..steps).rev() {
        let eps = noise.normal(x0.dims(), x0.device())?;
        let x_t = q_sample(schedule, x0, &vec![t; n], &eps)?;
        let pred = model.eps(&x_t, t)?;
        let (a, s) = schedule.q_coefficients(t);
        let x0_pred = ((&x_t - (pred * s)?)? / a)?;
        let x0_pred = if clip { x0_pred.clamp(-1f32, 1f32)? } else { x0_pred };
        terms[t] = if t == 0 {
            let mean = x0_pred.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let var = if steps > 1 { schedule.posterior(1).2 } else { schedule.betas[0] };
            ln_prob_per_image(&x0_host, &mean, d, var.sqrt()).into_iter().map(|lp| -lp).collect()
        } else {
            let (c0, _, beta_tilde) = schedule.posterior(t);
            let var = match variance {
                Variance::Beta => schedule.betas[t],
                Variance::BetaTilde => beta_tilde,
            };
            // The means differ by c0 (x_0 - predicted x_0): both are c0 x_0 + ct x_t.
            let per_dim = gaussian_kl(0.0, beta_tilde, 0.0, var);
            let gaps = per_image_sums(&(x0 - x0_pred)?.sqr()?)?;
            gaps.iter().map(|&g| dims * per_dim + 0.5 * c0 * c0 * g / var).collect()
        };
        observe(t);
    }
    Ok(Bound { prior, terms })
}

/// The sum over each image's values of `x` [B, ...], in f64.
fn per_image_sums(x: &Tensor) -> Result<Vec<f64>> {
    let n = x.dim(0)?;
    let rows = x.reshape((n, ()))?.to_dtype(DType::F64)?.sum(1)?;
    Ok(rows.to_vec1::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::ScheduleKind;
    use crate::rng::Stream;
    use candle_core::Device;

    /// The bound of `x0` under `model` with beta_t, clipped, the rows of `rows` of seed 4.
    fn beta_bound(
        model: &impl NoisePredictor,
        schedule: &Schedule,
        x0: &Tensor,
        rows: std::ops::Range<usize>,
    ) -> Bound {
        let mut noise = RowStreams::new(4, Stream::Eval, rows);
        variational_bound(model, schedule, x0, Variance::Beta, true, &mut noise, &mut |_| ()).unwrap()
    }

    /// The predictor that knows x_0: the true noise of x_t.
    fn oracle<'a>(schedule: &'a Schedule, x0: &'a Tensor) -> impl Fn(&Tensor, usize) -> Result<Tensor> + 'a {
        move |x_t, t| {
            let (a, s) = schedule.q_coefficients(t);
            Ok(((x_t - (x0 * a)?)? / s)?)
        }
    }

    /// The KL of two Gaussians against its integral, taken numerically.
    #[test]
    fn gaussian_kl_is_the_integral() {
        for (m1, v1, m2, v2) in [(0.0f64, 1.0f64, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 0.01, 0.9, 0.02)] {
            let pdf =
                |x: f64, m: f64, v: f64| (-(x - m).powi(2) / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v).sqrt();
            let (lo, hi, steps) = (m1 - 12.0 * v1.sqrt(), m1 + 12.0 * v1.sqrt(), 200_000);
            let h = (hi - lo) / steps as f64;
            let integral: f64 = (0..steps)
                .map(|k| {
                    let x = lo + (k as f64 + 0.5) * h;
                    let p = pdf(x, m1, v1);
                    if p > 0.0 {
                        p * (p / pdf(x, m2, v2)).ln() * h
                    } else {
                        0.0
                    }
                })
                .sum();
            let kl = gaussian_kl(m1, v1, m2, v2);
            assert!((kl - integral).abs() < 1e-6, "{kl} vs {integral}");
        }
        assert!(gaussian_kl(0.5, 0.3, 0.5, 0.3).abs() < 1e-15);
    }

    /// With the oracle predictor of a one-image data set (the true noise of x_t given x_0),
    /// every KL term of the true posterior variance is 0, the decoder's mean is x_0 itself,
    /// and the bound is the prior's KL plus the decoder's mass on x_0's own levels, each of
    /// which has a closed form; with beta_t the KL terms are the variance gap alone.
    #[test]
    fn an_oracle_predictor_has_the_closed_form_bound() {
        let d = &Device::Cpu;
        let schedule = Schedule::new(ScheduleKind::Linear, 50);
        let levels: Vec<f32> = [0u8, 17, 128, 255, 200, 3].iter().map(|&k| k as f32 / 127.5 - 1.0).collect();
        let x0 = Tensor::from_vec(levels.clone(), (1, 1, 2, 3), d).unwrap();
        let oracle = oracle(&schedule, &x0);
        let run = |variance| {
            let mut noise = RowStreams::new(1, Stream::Eval, 0..1);
            variational_bound(&oracle, &schedule, &x0, variance, false, &mut noise, &mut |_| ()).unwrap()
        };
        let (a, s) = schedule.q_coefficients(49);
        let prior: f64 = levels.iter().map(|&x| gaussian_kl(a * x as f64, s * s, 0.0, 1.0)).sum();
        let sigma = schedule.posterior(1).2.sqrt();
        let decoder: f64 = levels.iter().map(|&x| -crate::nn::discretized::ln_prob(x, x, sigma)).sum();
        let small = run(Variance::BetaTilde);
        // x_0 is f32: its squares are summed from f32 values.
        assert!((small.prior[0] - prior).abs() < 1e-7 * prior, "{} vs {prior}", small.prior[0]);
        assert!((small.terms[0][0] - decoder).abs() < 1e-4, "{} vs {decoder}", small.terms[0][0]);
        assert!(small.terms[1..].iter().all(|t| t[0].abs() < 1e-6), "{:?}", small.terms);
        let large = run(Variance::Beta);
        for t in 1..50 {
            let (_, _, bt) = schedule.posterior(t);
            let want = 6.0 * gaussian_kl(0.0, bt, 0.0, schedule.betas[t]);
            assert!((large.terms[t][0] - want).abs() < 1e-6 * (1.0 + want), "t {t}: {} vs {want}", large.terms[t][0]);
        }
        let total = small.totals()[0];
        assert!((total - prior - decoder).abs() < 1e-3, "{total}");
    }

    /// A worse predictor has a larger bound, and an image's terms do not depend on the
    /// images evaluated beside it.
    #[test]
    fn terms_are_per_image_and_a_wrong_predictor_costs_more() {
        let d = &Device::Cpu;
        let schedule = Schedule::new(ScheduleKind::Linear, 20);
        let x = Tensor::from_vec(
            (0..24).map(|i| ((i * 37) % 256) as f32 / 127.5 - 1.0).collect::<Vec<_>>(),
            (2, 3, 2, 2),
            d,
        )
        .unwrap();
        let zero = |x_t: &Tensor, _: usize| -> Result<Tensor> { Ok(x_t.zeros_like()?) };
        let pair = beta_bound(&zero, &schedule, &x, 0..2);
        let alone = beta_bound(&zero, &schedule, &x.narrow(0, 1, 1).unwrap(), 1..2);
        for t in 0..20 {
            assert!((pair.terms[t][1] - alone.terms[t][0]).abs() < 1e-6 * (1.0 + alone.terms[t][0].abs()), "t {t}");
        }
        let good = beta_bound(&oracle(&schedule, &x), &schedule, &x, 0..2);
        for (g, z) in good.totals().iter().zip(pair.totals()) {
            assert!(*g < z, "{g} vs {z}");
        }
    }
}
