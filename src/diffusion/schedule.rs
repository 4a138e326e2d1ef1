//! Noise schedules and the closed forms of DDPM (Ho et al. 2020), with t 0-based as in the
//! original code and diffusers: abar[t] = prod_{s<=t} (1 - beta_s), t in [0, T-1].

use serde::{Deserialize, Serialize};

/// How beta_t grows with t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// betas linear from 1e-4 to 0.02 (Ho et al.).
    Linear,
    /// Nichol & Dhariwal (2021): abar follows cos^2, betas capped at 0.999.
    Cosine,
}

/// A schedule's per-step constants, in f64.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub betas: Vec<f64>,
    /// abar[t] = prod_{s<=t} (1 - beta_s).
    pub alphas_cumprod: Vec<f64>,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, steps: usize) -> Self {
        let t_max = steps as f64;
        let betas: Vec<f64> = match kind {
            ScheduleKind::Linear => {
                let (lo, hi) = (1e-4, 0.02);
                (0..steps).map(|t| if steps == 1 { lo } else { lo + (hi - lo) * t as f64 / (t_max - 1.0) }).collect()
            }
            ScheduleKind::Cosine => {
                let f = |t: f64| (((t / t_max + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..steps).map(|t| (1.0 - f(t as f64 + 1.0) / f(t as f64)).min(0.999)).collect()
            }
        };
        let mut alphas_cumprod = Vec::with_capacity(steps);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        Schedule { betas, alphas_cumprod }
    }

    /// T, the number of steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// abar at t, with abar[-1] = 1 (no noise) for t = None.
    pub fn abar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alphas_cumprod[t])
    }

    /// The coefficients of q(x_t | x_0) = N(a x_0, s^2 I): (a, s) = (sqrt(abar), sqrt(1 - abar)).
    pub fn q_coefficients(&self, t: usize) -> (f64, f64) {
        let abar = self.alphas_cumprod[t];
        (abar.sqrt(), (1.0 - abar).sqrt())
    }

    /// q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, beta-tilde I): returns (c0, ct, beta-tilde).
    pub fn posterior(&self, t: usize) -> (f64, f64, f64) {
        let abar = self.alphas_cumprod[t];
        let abar_prev = self.abar(t.checked_sub(1));
        let beta = self.betas[t];
        let c0 = beta * abar_prev.sqrt() / (1.0 - abar);
        let ct = (1.0 - beta).sqrt() * (1.0 - abar_prev) / (1.0 - abar);
        (c0, ct, beta * (1.0 - abar_prev) / (1.0 - abar))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_ho_et_al() {
        let s = Schedule::new(ScheduleKind::Linear, 1000);
        assert_eq!(s.len(), 1000);
        assert!((s.betas[0] - 1e-4).abs() < 1e-15 && (s.betas[999] - 0.02).abs() < 1e-15);
        assert!((s.alphas_cumprod[0] - (1.0 - 1e-4)).abs() < 1e-15);
        // A well-known value: abar at the last step is about 4.04e-5.
        assert!((s.alphas_cumprod[999] - 4.035e-5).abs() < 1e-7, "{}", s.alphas_cumprod[999]);
    }

    #[test]
    fn cosine_schedule_follows_its_definition() {
        let s = Schedule::new(ScheduleKind::Cosine, 1000);
        let f = |t: f64| (((t / 1000.0 + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        // Without clipping, abar[t] = f(t+1) / f(0).
        for t in [0usize, 10, 500, 900] {
            assert!((s.alphas_cumprod[t] - f(t as f64 + 1.0) / f(0.0)).abs() < 1e-9, "t={t}");
        }
        assert_eq!(s.betas[999], 0.999);
    }

    #[test]
    fn posterior_is_consistent() {
        let s = Schedule::new(ScheduleKind::Linear, 1000);
        // At t = 0 the posterior mean is x_0 itself with zero variance.
        let (c0, ct, var) = s.posterior(0);
        assert!((c0 - 1.0).abs() < 1e-12 && ct.abs() < 1e-12 && var.abs() < 1e-18);
        // beta-tilde <= beta, and the mean coefficients agree with the eps form:
        // c0 x0 + ct xt = (xt - beta / sqrt(1 - abar) eps) / sqrt(alpha) when x0 = (xt - sqrt(1-abar) eps) / sqrt(abar).
        for t in [1usize, 100, 999] {
            let (c0, ct, var) = s.posterior(t);
            let abar = s.alphas_cumprod[t];
            let alpha = 1.0 - s.betas[t];
            assert!(var <= s.betas[t]);
            // coefficient of xt: c0 / sqrt(abar) + ct == 1 / sqrt(alpha)
            assert!((c0 / abar.sqrt() + ct - 1.0 / alpha.sqrt()).abs() < 1e-9);
            // coefficient of eps: -c0 sqrt(1-abar)/sqrt(abar) == -beta / (sqrt(1-abar) sqrt(alpha))
            let lhs = c0 * (1.0 - abar).sqrt() / abar.sqrt();
            let rhs = s.betas[t] / ((1.0 - abar).sqrt() * alpha.sqrt());
            assert!((lhs - rhs).abs() < 1e-9, "t={t}");
        }
    }
}
