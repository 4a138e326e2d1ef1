//! The Fréchet distance between two Gaussians fitted to feature sets (FID; Heusel et al.
//! 2017, <https://arxiv.org/abs/1706.08500>), as pytorch-fid's `calculate_frechet_distance`
//! (<https://github.com/mseitzer/pytorch-fid>):
//!
//! d^2 = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(sqrt(S1) S2 sqrt(S1)),
//!
//! the cross term by symmetric eigendecompositions in f64 ([`super::sqrtm`]).

use super::sqrtm::trace_sqrt_product;
use super::stats::Stats;
use crate::error::{Error, Result};

/// The Fréchet distance between the Gaussians of `a` and `b` (of the same dimension).
pub fn frechet_distance(a: &Stats, b: &Stats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::config(format!("statistics of {} and {} dimensions", a.dim(), b.dim())));
    }
    let d = a.dim();
    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |s: &Stats| (0..d).map(|i| s.sigma[i * d + i]).sum::<f64>();
    let cross = trace_sqrt_product(a.sigma(), b.sigma())?;
    Ok(mean_term + trace(a) + trace(b) - 2.0 * cross)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{gaussian_features, Moments};

    fn stats(mu: &[f64], sigma: &[f64]) -> Stats {
        Stats { n: 2, mu: mu.to_vec(), sigma: sigma.to_vec() }
    }

    fn of_features(f: &crate::metrics::Features) -> Stats {
        let mut m = Moments::new(f.dim());
        let rows: Vec<f64> = f.data().iter().map(|&x| f64::from(x)).collect();
        m.add_rows(&rows);
        m.finish().unwrap()
    }

    #[test]
    fn a_set_against_itself_is_zero() {
        let s = of_features(&gaussian_features(500, 16, 3.0, 1.0, 1));
        let fid = frechet_distance(&s, &s).unwrap();
        let scale: f64 = (0..16).map(|i| s.sigma[i * 16 + i]).sum();
        assert!(fid.abs() <= 1e-6 * scale, "{fid} (tr S = {scale})");
    }

    /// Diagonal covariances commute: d^2 = |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    #[test]
    fn commuting_covariances_give_the_closed_form() {
        let (mu1, mu2) = ([0.0, 1.0, -2.0, 3.0], [1.0, 1.0, 0.0, 2.5]);
        let (a, b) = ([4.0, 1.0, 0.25, 1e-8], [1.0, 9.0, 0.25, 0.0]);
        let diag = |v: &[f64]| (0..16).map(|k| if k / 4 == k % 4 { v[k / 4] } else { 0.0 }).collect::<Vec<_>>();
        let fid = frechet_distance(&stats(&mu1, &diag(&a)), &stats(&mu2, &diag(&b))).unwrap();
        let mean: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y) * (x - y)).sum();
        let want = mean + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
        assert!((fid - want).abs() < 1e-12 * want, "{fid} vs {want}");
    }

    /// Covariances that do not commute, against pytorch-fid's formula with scipy's sqrtm of
    /// S1 S2 (tests/golden/metrics_scipy.py: "fid 1.8912934742317233").
    #[test]
    fn non_commuting_covariances_match_scipy() {
        let s1 = [2.0, 0.5, 0.0, 0.5, 1.0, 0.2, 0.0, 0.2, 0.5];
        let s2 = [1.0, -0.3, 0.1, -0.3, 2.0, 0.0, 0.1, 0.0, 0.3];
        let fid = frechet_distance(&stats(&[0.0, 1.0, 2.0], &s1), &stats(&[0.5, 0.0, 2.0], &s2)).unwrap();
        assert!((fid - 1.8912934742317233).abs() < 1e-12, "{fid}");
        // Symmetric in its arguments.
        let back = frechet_distance(&stats(&[0.5, 0.0, 2.0], &s2), &stats(&[0.0, 1.0, 2.0], &s1)).unwrap();
        assert!((fid - back).abs() < 1e-12);
    }

    /// Sample statistics of a set and of the same set shifted by c in every coordinate:
    /// same covariance, so the distance is |c|^2 d exactly.
    #[test]
    fn a_shifted_set_is_its_shift_squared_away() {
        let a = gaussian_features(400, 8, 1.0, 0.0, 2);
        let shifted = crate::metrics::Features::new(a.data().iter().map(|x| x + 0.5).collect(), 8).unwrap();
        let fid = frechet_distance(&of_features(&a), &of_features(&shifted)).unwrap();
        assert!((fid - 0.25 * 8.0).abs() < 1e-5, "{fid}");
    }
}
