//! Sample quality as numbers: metrics between two sets of feature vectors (one row per image,
//! from a classifier's penultimate layer or Inception), as `img-fid` reports them.
//!
//! | metric | module | paper | reference implementation |
//! |---|---|---|---|
//! | mean and covariance | [`stats`] | | pytorch-fid `calculate_activation_statistics` |
//! | FID | [`fid`], [`sqrtm`] | Heusel et al. 2017, <https://arxiv.org/abs/1706.08500> | <https://github.com/mseitzer/pytorch-fid> |
//! | KID | [`kid`] | Binkowski et al. 2018, <https://arxiv.org/abs/1801.01401> | <https://github.com/toshas/torch-fidelity>, <https://github.com/GaParmar/clean-fid> |
//! | precision, recall | [`prdc`] | Kynkaanniemi et al. 2019, <https://arxiv.org/abs/1904.06991> | |
//! | density, coverage | [`prdc`] | Naeem et al. 2020, <https://arxiv.org/abs/2002.09797> | <https://github.com/clovaai/generative-evaluation-prdc> |

pub mod fid;
pub mod kid;
pub mod prdc;
pub mod sqrtm;
pub mod stats;

pub use fid::frechet_distance;
pub use kid::{kid, Kid};
pub use prdc::{prdc, Prdc};
pub use stats::{Moments, Stats};

use crate::error::{Error, Result};

/// A set of feature vectors: `rows` rows of `dim` values, row-major, f32 (as classifiers
/// write them).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

impl Features {
    /// Rows of `dim` values; `data` must hold a whole number of rows.
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::config(format!("{} feature values do not make rows of {dim}", data.len())));
        }
        Ok(Features { rows: data.len() / dim, dim, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All values, row after row.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Test data: `rows` x `dim` values from a seeded standard normal, scaled by `scale` and
/// shifted by `shift`.
#[cfg(test)]
pub(crate) fn gaussian_features(rows: usize, dim: usize, scale: f32, shift: f32, seed: u64) -> Features {
    use rand::Rng as _;
    let mut rng = crate::rng::Rng::new(seed, crate::rng::Stream::Eval, 0);
    let data =
        (0..rows * dim).map(|_| rng.inner().sample::<f32, _>(rand_distr::StandardNormal) * scale + shift).collect();
    Features::new(data, dim).unwrap()
}
