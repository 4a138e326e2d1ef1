//! The mean and covariance of feature vectors, accumulated in f64 over batches of rows, as
//! pytorch-fid's `calculate_activation_statistics` computes them over all rows at once
//! (`np.mean(act, axis=0)`, `np.cov(act, rowvar=False)`: divided by n - 1).
//!
//! Each batch is centred on its own mean before its scatter matrix is formed, and batches are
//! merged by Chan, Golub and LeVeque's update ("Updating formulae and a pairwise algorithm for
//! computing sample variances", 1979): no sum of squares of uncentred values, whose
//! cancellation would lose the covariance of features with a large mean.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use crate::error::{Error, Result};

/// The sample statistics of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Rows the statistics are of.
    pub n: usize,
    /// The mean, [dim].
    pub mu: Vec<f64>,
    /// The covariance (divided by n - 1), [dim, dim] row-major.
    pub sigma: Vec<f64>,
}

impl Stats {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// The covariance as a matrix.
    pub fn sigma(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.sigma, self.dim(), self.dim())
    }
}

/// Running count, mean and centred scatter matrix (the sum of outer products of deviations
/// from the mean) of rows seen so far.
#[derive(Debug, Clone)]
pub struct Moments {
    n: usize,
    mean: Vec<f64>,
    scatter: Mat<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Self {
        Moments { n: 0, mean: vec![0.0; dim], scatter: Mat::zeros(dim, dim) }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Rows seen so far.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Adds a batch of rows (row-major, a whole number of rows of `dim`).
    pub fn add_rows(&mut self, rows: &[f64]) {
        let d = self.dim();
        assert!(d > 0 && rows.len().is_multiple_of(d), "Moments::add_rows: not a whole number of rows");
        let b = rows.len() / d;
        if b == 0 {
            return;
        }
        let mut mean = vec![0.0; d];
        for row in rows.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= b as f64);
        let centred = Mat::from_fn(b, d, |i, j| rows[i * d + j] - mean[j]);
        let mut scatter = Mat::zeros(d, d);
        matmul(scatter.as_mut(), Accum::Replace, centred.transpose(), centred.as_ref(), 1.0, Par::rayon(0));
        self.merge(Moments { n: b, mean, scatter });
    }

    /// Adds the rows `other` has seen (Chan et al.'s pairwise update).
    pub fn merge(&mut self, other: Moments) {
        assert_eq!(self.dim(), other.dim(), "Moments::merge: dimensions differ");
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other.mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na * nb / n;
        let d = self.dim();
        for i in 0..d {
            for j in 0..d {
                self.scatter[(i, j)] += other.scatter[(i, j)] + w * delta[i] * delta[j];
            }
        }
        self.mean.iter_mut().zip(&delta).for_each(|(m, dm)| *m += dm * nb / n);
        self.n += other.n;
    }

    /// The mean and the covariance (divided by n - 1); at least two rows are needed.
    pub fn finish(self) -> Result<Stats> {
        if self.n < 2 {
            return Err(Error::config(format!("a covariance needs at least 2 feature rows, got {}", self.n)));
        }
        let d = self.dim();
        let scale = 1.0 / (self.n - 1) as f64;
        let sigma = (0..d * d).map(|k| self.scatter[(k / d, k % d)] * scale).collect();
        Ok(Stats { n: self.n, mu: self.mean, sigma })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook two-pass mean and covariance, for comparison.
    fn two_pass(rows: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() / d;
        let mu: Vec<f64> = (0..d).map(|j| rows.chunks_exact(d).map(|r| r[j]).sum::<f64>() / n as f64).collect();
        let mut sigma = vec![0.0; d * d];
        for r in rows.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    sigma[i * d + j] += (r[i] - mu[i]) * (r[j] - mu[j]) / (n - 1) as f64;
                }
            }
        }
        (mu, sigma)
    }

    /// Any split into batches gives the two-pass statistics, also for features whose mean is
    /// 1e6 times their spread (where the sum of squares would lose every digit in f64).
    #[test]
    fn batches_of_any_size_give_the_two_pass_statistics() {
        let d = 5;
        let n = 103;
        let rows: Vec<f64> =
            (0..n * d).map(|k| 1e6 + (((k * 7919) % 1013) as f64 / 1013.0 - 0.5) * (1.0 + (k % d) as f64)).collect();
        let (mu, sigma) = two_pass(&rows, d);
        for batch in [1, 2, 10, 64, n] {
            let mut m = Moments::new(d);
            for chunk in rows.chunks(batch * d) {
                m.add_rows(chunk);
            }
            let s = m.finish().unwrap();
            assert_eq!(s.n, n);
            for (a, b) in s.mu.iter().zip(&mu) {
                assert!((a - b).abs() <= 1e-9 * b.abs(), "batch {batch}: mean {a} vs {b}");
            }
            for (a, b) in s.sigma.iter().zip(&sigma) {
                assert!((a - b).abs() <= 1e-9, "batch {batch}: covariance {a} vs {b}");
            }
        }
    }

    /// Two rows x and y: mean (x + y) / 2, covariance (x - y)(x - y)^T / 2.
    #[test]
    fn two_rows_have_the_closed_form_statistics() {
        let mut m = Moments::new(2);
        m.add_rows(&[1.0, 2.0]);
        m.add_rows(&[3.0, -2.0]);
        let s = m.finish().unwrap();
        assert_eq!(s.mu, vec![2.0, 0.0]);
        assert_eq!(s.sigma, vec![2.0, -4.0, -4.0, 8.0]);
        let mut one = Moments::new(2);
        one.add_rows(&[1.0, 2.0]);
        assert!(one.finish().unwrap_err().to_string().contains("at least 2 feature rows, got 1"));
    }
}
