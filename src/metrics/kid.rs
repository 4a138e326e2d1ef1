//! The kernel inception distance (KID; Binkowski et al. 2018, "Demystifying MMD GANs",
//! <https://arxiv.org/abs/1801.01401>): the unbiased estimate of the squared maximum mean
//! discrepancy with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
//! random subsets, as torch-fidelity's `kid_features_to_metric`
//! (<https://github.com/toshas/torch-fidelity>, `metric_kid.py`) and clean-fid's
//! `kernel_distance` (<https://github.com/GaParmar/clean-fid>) compute it: each subset draws
//! m rows of each set without replacement, and
//!
//! MMD^2_u = sum_{i != j} (k(x_i, x_j) + k(y_i, y_j)) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.
//!
//! The mean and the standard deviation (numpy's `np.std`, divided by the number of subsets)
//! over the subsets are reported.

use rand::seq::index::sample;
use rayon::prelude::*;

use super::Features;
use crate::error::{Error, Result};
use crate::nn::gemm::{matmul, Mat};
use crate::rng::{Rng, Stream};

/// torch-fidelity's default number of subsets.
pub const DEFAULT_SUBSETS: usize = 100;
/// torch-fidelity's default subset size (clamped to the sizes of the sets).
pub const DEFAULT_SUBSET_SIZE: usize = 1000;

/// KID over subsets: the mean and standard deviation of MMD^2_u.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// KID between `a` and `b` over `subsets` subsets of `subset_size` rows of each (default
/// min(1000, rows of a, rows of b)), drawn from `seed`: subset s from the stream
/// (seed, [`Stream::Subsets`], s), so a subset does not depend on how many others are drawn.
pub fn kid(a: &Features, b: &Features, subsets: usize, subset_size: Option<usize>, seed: u64) -> Result<Kid> {
    if a.dim() != b.dim() {
        return Err(Error::config(format!("KID of features of {} and {} dimensions", a.dim(), b.dim())));
    }
    let fewest = a.rows().min(b.rows());
    let m = subset_size.unwrap_or(DEFAULT_SUBSET_SIZE.min(fewest));
    if m < 2 || m > fewest {
        return Err(Error::config(format!(
            "--kid-subset-size {m}: a subset needs 2 to {fewest} rows (the smaller set has {fewest})"
        )));
    }
    crate::memory::ensure_fits(
        format!("--kid-subset-size {m} (its kernel matrix)"),
        crate::memory::bytes_of(&[m, m], 4),
    )
    .map_err(Error::config)?;
    if subsets == 0 {
        return Err(Error::config("--kid-subsets 0: at least one subset is needed"));
    }
    // Welford's running mean and sum of squared deviations: memory does not grow with
    // --kid-subsets.
    let (mut mean, mut squares) = (0.0, 0.0);
    for s in 0..subsets {
        let mut rng = Rng::new(seed, Stream::Subsets, s as u64);
        let x = gather(a, &sample(rng.inner(), a.rows(), m).into_vec());
        let y = gather(b, &sample(rng.inner(), b.rows(), m).into_vec());
        let mmd = mmd2_unbiased(&x, &y, a.dim());
        let delta = mmd - mean;
        mean += delta / (s + 1) as f64;
        squares += delta * (mmd - mean);
    }
    let var = squares / subsets as f64;
    Ok(Kid { mean, std: var.sqrt(), subsets, subset_size: m })
}

/// The rows `idx` of `f`, contiguous.
fn gather(f: &Features, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| f.row(i).iter().copied()).collect()
}

/// MMD^2_u between the rows of `x` and of `y` (m rows of `d` each, row-major): the Gram
/// matrices by matrix products in f32, the kernel and its sums in f64.
pub fn mmd2_unbiased(x: &[f32], y: &[f32], d: usize) -> f64 {
    let m = x.len() / d;
    assert!(m >= 2 && y.len() == x.len(), "mmd2_unbiased: two sets of the same size, at least 2 rows");
    let kernel_sum = |p: &[f32], q: &[f32], skip_diagonal: bool| -> f64 {
        let mut gram = vec![0f32; m * m];
        matmul(&mut gram, Mat::rows(p, m, d), Mat::rows(q, m, d).t(), false);
        // Row sums on rayon's threads, added in row order: the same bits on any thread count.
        let rows: Vec<f64> = gram
            .par_chunks_exact(m)
            .enumerate()
            .map(|(i, row)| {
                let all: f64 = row.iter().map(|&g| (f64::from(g) / d as f64 + 1.0).powi(3)).sum();
                if skip_diagonal {
                    all - (f64::from(row[i]) / d as f64 + 1.0).powi(3)
                } else {
                    all
                }
            })
            .collect();
        rows.iter().sum()
    };
    let (xx, yy, xy) = (kernel_sum(x, x, true), kernel_sum(y, y, true), kernel_sum(x, y, false));
    let m = m as f64;
    (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::gaussian_features;

    fn k(x: &[f32], y: &[f32]) -> f64 {
        let dot: f64 = x.iter().zip(y).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        (dot / x.len() as f64 + 1.0).powi(3)
    }

    /// The estimator term by term in f64: unbiased (off-diagonal) or biased (all pairs).
    fn brute_force(x: &Features, y: &Features, unbiased: bool) -> f64 {
        let m = x.rows();
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j || !unbiased {
                    xx += k(x.row(i), x.row(j));
                    yy += k(y.row(i), y.row(j));
                }
                xy += k(x.row(i), y.row(j));
            }
        }
        let pairs = if unbiased { m * (m - 1) } else { m * m } as f64;
        (xx + yy) / pairs - 2.0 * xy / (m * m) as f64
    }

    #[test]
    fn the_fast_estimate_is_the_term_by_term_formula() {
        let x = gaussian_features(7, 5, 1.0, 0.0, 1);
        let y = gaussian_features(7, 5, 2.0, 0.5, 2);
        let fast = mmd2_unbiased(x.data(), y.data(), 5);
        let slow = brute_force(&x, &y, true);
        assert!((fast - slow).abs() < 1e-5 * slow.abs().max(1.0), "{fast} vs {slow}");
        // With one subset holding every row, KID is that estimate, with no spread.
        let kid = kid(&x, &y, 1, None, 0).unwrap();
        assert_eq!((kid.subset_size, kid.std), (7, 0.0));
        assert!((kid.mean - slow).abs() < 1e-5 * slow.abs().max(1.0));
    }

    /// Two samples of one distribution: the mean of many unbiased estimates is 0 within 3
    /// standard errors, where the biased one (diagonal included) is far above it.
    #[test]
    fn the_estimate_is_unbiased_on_samples_of_one_distribution() {
        let (runs, m, d) = (400, 20, 4);
        let estimate = |unbiased: bool| -> (f64, f64) {
            let v: Vec<f64> = (0..runs as u64)
                .map(|r| {
                    let x = gaussian_features(m, d, 1.0, 0.0, 2 * r + 10);
                    let y = gaussian_features(m, d, 1.0, 0.0, 2 * r + 11);
                    if unbiased {
                        mmd2_unbiased(x.data(), y.data(), d)
                    } else {
                        brute_force(&x, &y, false)
                    }
                })
                .collect();
            let mean = v.iter().sum::<f64>() / runs as f64;
            let var = v.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (runs - 1) as f64;
            (mean, (var / runs as f64).sqrt())
        };
        let (mean, se) = estimate(true);
        assert!(mean.abs() < 3.0 * se, "unbiased: mean {mean}, standard error {se}");
        let (biased, se_b) = estimate(false);
        assert!(biased > 10.0 * se_b, "biased: mean {biased}, standard error {se_b}");
    }

    #[test]
    fn shifted_sets_are_apart_and_subsets_repeat_with_the_seed() {
        let x = gaussian_features(300, 8, 1.0, 0.0, 3);
        let y = gaussian_features(300, 8, 1.0, 1.0, 4);
        let a = kid(&x, &y, 10, Some(100), 5).unwrap();
        assert!(a.mean > 10.0 * a.std && a.std > 0.0, "{a:?}");
        assert_eq!(a, kid(&x, &y, 10, Some(100), 5).unwrap());
        assert_ne!(a, kid(&x, &y, 10, Some(100), 6).unwrap());
        assert!(kid(&x, &y, 10, Some(301), 5).unwrap_err().to_string().contains("2 to 300 rows"));
    }
}
