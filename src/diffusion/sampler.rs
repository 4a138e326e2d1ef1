//! Reverse processes: ancestral DDPM sampling (Ho et al. 2020) and DDIM (Song et al. 2021),
//! generic over any noise predictor eps(x_t, t). Both go through the predicted x_0, so it can
//! be clipped to [-1, 1]. Each row of x draws its noise from its own stream, so a sample does
//! not depend on the others sampled with it.

use candle_core::Tensor;

use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::rng::RowStreams;

/// Anything that predicts the noise in x_t at step t (a U-Net, or an oracle in tests).
pub trait NoisePredictor {
    fn eps(&self, x_t: &Tensor, t: usize) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, usize) -> Result<Tensor>> NoisePredictor for F {
    fn eps(&self, x_t: &Tensor, t: usize) -> Result<Tensor> {
        self(x_t, t)
    }
}

/// The variance of an ancestral step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variance {
    /// sigma_t^2 = beta_t (the upper bound; Ho et al.'s choice for x_0 ~ N(0, I)).
    Beta,
    /// sigma_t^2 = beta-tilde_t, the true posterior variance (the lower bound).
    BetaTilde,
}

/// x_0 predicted from x_t and the predicted noise, optionally clipped to [-1, 1].
fn predict_x0(schedule: &Schedule, x: &Tensor, eps: &Tensor, t: usize, clip: bool) -> Result<Tensor> {
    let (a, s) = schedule.q_coefficients(t);
    let x0 = ((x - (eps * s)?)? / a)?;
    Ok(if clip { x0.clamp(-1f32, 1f32)? } else { x0 })
}

fn check_start(schedule: &Schedule, from_t: usize) -> Result<()> {
    if from_t >= schedule.len() {
        return Err(Error::config(format!("t = {from_t} is outside [0, {}]", schedule.len() - 1)));
    }
    Ok(())
}

/// Settings of an ancestral run.
#[derive(Debug, Clone, Copy)]
pub struct DdpmOptions {
    /// The step of the starting sample (T - 1 from pure noise).
    pub from_t: usize,
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1].
    pub clip: bool,
}

/// Settings of a DDIM run.
#[derive(Debug, Clone, Copy)]
pub struct DdimOptions {
    pub from_t: usize,
    /// Network calls: the number of timesteps visited.
    pub steps: usize,
    /// 0 is deterministic; 1 over every step is ancestral sampling with beta-tilde.
    pub eta: f64,
    pub clip: bool,
}

/// Ancestral sampling from x_t down to x_0, one network call per step.
/// `observe(t, x)` sees each new sample x_{t-1} (t counting down; x_0 last).
pub fn ddpm(
    model: &impl NoisePredictor,
    schedule: &Schedule,
    x_t: Tensor,
    opts: DdpmOptions,
    noise: &mut RowStreams,
    observe: &mut dyn FnMut(usize, &Tensor),
) -> Result<Tensor> {
    let DdpmOptions { from_t, variance, clip } = opts;
    check_start(schedule, from_t)?;
    let mut x = x_t;
    for t in (0..=from_t).rev() {
        let eps = model.eps(&x, t)?;
        let x0 = predict_x0(schedule, &x, &eps, t, clip)?;
        let (c0, ct, beta_tilde) = schedule.posterior(t);
        let mean = ((x0 * c0)? + (&x * ct)?)?;
        x = if t > 0 {
            let var = match variance {
                Variance::Beta => schedule.betas[t],
                Variance::BetaTilde => beta_tilde,
            };
            (mean + (noise.normal(x.dims(), x.device())? * var.sqrt())?)?
        } else {
            mean
        };
        observe(t, &x);
    }
    Ok(x)
}

/// The `steps` timesteps DDIM visits from `from_t` down, evenly spaced and ending near 0
/// ("trailing" spacing: the first is `from_t` itself, so sampling starts where the noise is).
/// An error unless DDIM's `steps` network calls fit in the `from_t + 1` steps they spread over.
pub fn check_ddim_steps(from_t: usize, steps: usize) -> Result<()> {
    if steps == 0 || steps > from_t + 1 {
        return Err(Error::config(format!(
            "--steps {steps} must be in [1, {}]: DDIM from step {from_t} makes at most one network call per step",
            from_t + 1
        )));
    }
    Ok(())
}

pub fn ddim_timesteps(from_t: usize, steps: usize) -> Vec<usize> {
    let span = from_t + 1;
    let steps = steps.clamp(1, span);
    let mut ts: Vec<usize> =
        (0..steps).map(|i| ((span * (steps - i)) as f64 / steps as f64).round() as usize - 1).collect();
    ts.dedup();
    ts
}

/// DDIM over `ddim_timesteps(from_t, steps)`: x_{t'} = sqrt(abar') x0 +
/// sqrt(1 - abar' - sigma^2) eps + sigma z, sigma = eta sqrt((1-abar')/(1-abar)) sqrt(1 - abar/abar').
pub fn ddim(
    model: &impl NoisePredictor,
    schedule: &Schedule,
    x_t: Tensor,
    opts: DdimOptions,
    noise: &mut RowStreams,
    observe: &mut dyn FnMut(usize, &Tensor),
) -> Result<Tensor> {
    let DdimOptions { from_t, steps, eta, clip } = opts;
    check_start(schedule, from_t)?;
    if !(0.0..=1.0).contains(&eta) {
        return Err(Error::config(format!("--eta {eta} is outside [0, 1]")));
    }
    let ts = ddim_timesteps(from_t, steps);
    let mut x = x_t;
    for (i, &t) in ts.iter().enumerate() {
        let prev = ts.get(i + 1).copied();
        let eps = model.eps(&x, t)?;
        let x0 = predict_x0(schedule, &x, &eps, t, clip)?;
        // With a clipped x0, the noise direction is recomputed so the step stays consistent.
        let eps = if clip {
            let (a, s) = schedule.q_coefficients(t);
            ((&x - (&x0 * a)?)? / s)?
        } else {
            eps
        };
        let (abar, abar_prev) = (schedule.abar(Some(t)), schedule.abar(prev));
        let sigma = eta * ((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)).max(0.0).sqrt();
        let dir = (1.0 - abar_prev - sigma * sigma).max(0.0).sqrt();
        let mut next = ((x0 * abar_prev.sqrt())? + (eps * dir)?)?;
        if sigma > 0.0 && prev.is_some() {
            next = (next + (noise.normal(x.dims(), x.device())? * sigma)?)?;
        }
        x = next;
        observe(prev.map_or(0, |p| p + 1), &x);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::super::schedule::ScheduleKind;
    use super::*;
    use crate::rng::{Rng, Stream};
    use candle_core::Device;

    #[test]
    fn ddim_takes_one_to_from_t_plus_one_steps() {
        assert!(check_ddim_steps(9, 1).is_ok() && check_ddim_steps(9, 10).is_ok());
        for steps in [0, 11] {
            let e = check_ddim_steps(9, steps).unwrap_err().to_string();
            assert!(e.contains(&format!("--steps {steps} must be in [1, 10]")), "{e}");
        }
    }

    /// The exact noise predictor for a data set of one image x*:
    /// eps*(x_t, t) = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t).
    fn oracle<'a>(schedule: &'a Schedule, x_star: &'a Tensor) -> impl Fn(&Tensor, usize) -> Result<Tensor> + 'a {
        move |x: &Tensor, t: usize| {
            let (a, s) = schedule.q_coefficients(t);
            Ok((x.broadcast_sub(&(x_star * a)?)? / s)?)
        }
    }

    fn setup(n: usize) -> (Schedule, Tensor, Tensor) {
        let d = Device::Cpu;
        let schedule = Schedule::new(ScheduleKind::Linear, 1000);
        let x_star = Rng::new(1, Stream::Eval, 0).uniform(&[1, 1, 4, 4], -1.0, 1.0, &d).unwrap();
        let noise = Rng::new(2, Stream::Eval, 0).normal(&[n, 1, 4, 4], &d).unwrap();
        (schedule, x_star, noise)
    }

    fn max_err(x: &Tensor, x_star: &Tensor) -> f32 {
        x.broadcast_sub(x_star).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// Per-pixel mean and variance of `x` [n, ...] over the n samples, compared with
    /// q(x_t | x*) = N(sqrt(abar) x*, 1 - abar): returns the largest errors (mean, variance).
    fn marginal_errors(x: &Tensor, x_star: &Tensor, abar: f64) -> (f32, f32) {
        let mean = x.mean(0).unwrap();
        let var = x.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap();
        let want_mean = (x_star.squeeze(0).unwrap() * abar.sqrt()).unwrap();
        let dm = max_err(&mean, &want_mean);
        let dv = (var - (1.0 - abar)).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        (dm, dv)
    }

    #[test]
    fn ddpm_with_an_oracle_returns_the_image_and_keeps_the_forward_marginals() {
        let n = 4000;
        let (s, x_star, noise) = setup(n);
        for variance in [Variance::Beta, Variance::BetaTilde] {
            let mut mid = None;
            let mut observe = |t: usize, x: &Tensor| {
                if t == 500 {
                    mid = Some(x.clone());
                }
            };
            let opts = DdpmOptions { from_t: 999, variance, clip: false };
            let out = ddpm(
                &oracle(&s, &x_star),
                &s,
                noise.clone(),
                opts,
                &mut RowStreams::new(3, Stream::Sample, 0..n),
                &mut observe,
            )
            .unwrap();
            assert!(max_err(&out, &x_star) < 1e-4, "{variance:?}: {}", max_err(&out, &x_star));
            if variance == Variance::BetaTilde {
                // x_{499} ~ q(x_499 | x*): 4000 samples give standard errors of about 0.016
                // (mean) and 0.02 (variance); allow about four of them.
                let (dm, dv) = marginal_errors(&mid.unwrap(), &x_star, s.alphas_cumprod[499]);
                assert!(dm < 0.07 && dv < 0.09, "marginal off: mean {dm}, variance {dv}");
            }
        }
    }

    #[test]
    fn ddim_with_an_oracle_returns_the_image_for_any_eta_and_step_count() {
        let n = 4000;
        let (s, x_star, noise) = setup(n);
        for (steps, eta) in [(10, 0.0), (50, 0.0), (1000, 0.0), (10, 1.0), (50, 1.0), (1000, 1.0), (20, 0.5)] {
            let mut mid: Option<(usize, Tensor)> = None;
            let mut observe = |t: usize, x: &Tensor| {
                if mid.is_none() && t <= 600 {
                    mid = Some((t, x.clone()));
                }
            };
            let opts = DdimOptions { from_t: 999, steps, eta, clip: false };
            let out = ddim(
                &oracle(&s, &x_star),
                &s,
                noise.clone(),
                opts,
                &mut RowStreams::new(4, Stream::Sample, 0..n),
                &mut observe,
            )
            .unwrap();
            assert!(max_err(&out, &x_star) < 1e-4, "steps {steps} eta {eta}: {}", max_err(&out, &x_star));
            // DDIM preserves the marginals q(x_t | x*) for every eta.
            let (t, x) = mid.unwrap();
            let (dm, dv) = marginal_errors(&x, &x_star, s.alphas_cumprod[t - 1]);
            assert!(dm < 0.07 && dv < 0.09, "steps {steps} eta {eta} t {t}: mean {dm}, variance {dv}");
        }
    }

    #[test]
    fn ddim_with_eta_zero_repeats_and_timesteps_are_well_formed() {
        let (s, x_star, noise) = setup(8);
        let opts = DdimOptions { from_t: 999, steps: 25, eta: 0.0, clip: true };
        let run = |seed| {
            ddim(
                &oracle(&s, &x_star),
                &s,
                noise.clone(),
                opts,
                &mut RowStreams::new(seed, Stream::Sample, 0..8),
                &mut |_, _| {},
            )
            .unwrap()
        };
        let (a, b) = (
            run(1).flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            run(2).flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        let ts = ddim_timesteps(999, 50);
        assert_eq!((ts.len(), ts[0], *ts.last().unwrap()), (50, 999, 19));
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(ddim_timesteps(299, 1000).len(), 300);
        let past_the_end = DdpmOptions { from_t: 1000, variance: Variance::Beta, clip: false };
        assert!(ddpm(
            &oracle(&s, &x_star),
            &s,
            noise,
            past_the_end,
            &mut RowStreams::new(0, Stream::Sample, 0..8),
            &mut |_, _| {}
        )
        .is_err());
    }
}
