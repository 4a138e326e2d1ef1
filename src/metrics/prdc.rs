//! Precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric for
//! assessing generative models", <https://arxiv.org/abs/1904.06991>), density and coverage
//! (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models",
//! <https://arxiv.org/abs/2002.09797>), as the reference implementation `compute_prdc`
//! computes them (<https://github.com/clovaai/generative-evaluation-prdc>, `prdc/prdc.py`).
//!
//! Each point's radius is the distance to its k-th nearest neighbour in its own set (itself
//! not counted). With real points r_i (radii rr_i) and fake points f_j (radii rf_j):
//! precision = the share of fake points inside some real ball, `|f_j - r_i| < rr_i`;
//! recall = the share of real points inside some fake ball; density = the mean over fake
//! points of the number of real balls holding it, over k; coverage = the share of real points
//! whose ball holds some fake point.
//!
//! Distances come in blocks of rows, |a|^2 + |b|^2 - 2 a.b with the products by matrix
//! multiplication (f32, on points centred on the real set's mean, which keeps the
//! cancellation small), so no N x M matrix is held at once; squared distances are compared,
//! as the order of distances is theirs.

use rayon::prelude::*;

use super::Features;
use crate::error::{Error, Result};
use crate::nn::gemm::{matmul, Mat};

/// The nearest neighbours of Naeem et al.'s experiments.
pub const DEFAULT_K: usize = 5;

/// The most entries of one block of distances (16 MiB of f32).
const BLOCK_ENTRIES: usize = 1 << 22;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// Precision, recall, density and coverage of `fake` against `real`, radii from the `k`-th
/// nearest neighbours. Each set needs more than k rows.
pub fn prdc(real: &Features, fake: &Features, k: usize) -> Result<Prdc> {
    prdc_in_blocks(real, fake, k, BLOCK_ENTRIES)
}

/// [`prdc`] with blocks of distances of at most `block_entries` entries (at least a row).
fn prdc_in_blocks(real: &Features, fake: &Features, k: usize, block_entries: usize) -> Result<Prdc> {
    if real.dim() != fake.dim() {
        return Err(Error::config(format!("PRDC of features of {} and {} dimensions", real.dim(), fake.dim())));
    }
    if k == 0 {
        return Err(Error::config("--k 0: the radii need at least 1 nearest neighbour"));
    }
    let fewest = real.rows().min(fake.rows());
    if fewest <= k {
        return Err(Error::config(format!(
            "--k {k}: each set needs more than {k} rows for its {k}-th nearest neighbours, the smaller has {fewest}"
        )));
    }
    let (real, fake) = centred_on_first(real, fake);
    let (real_norms, fake_norms) = (squared_norms(&real), squared_norms(&fake));
    let real_radii = knn_radii(&real, &real_norms, k, block_entries);
    let fake_radii = knn_radii(&fake, &fake_norms, k, block_entries);

    // Per fake point: how many real balls hold it. Per real point: whether some fake ball
    // holds it (recall), whether its ball holds some fake point (coverage).
    let mut holding = vec![0u32; fake.rows()];
    let mut recalled = vec![false; real.rows()];
    let mut covered = vec![false; real.rows()];
    for_blocks(&real, &real_norms, &fake, &fake_norms, block_entries, |start, block| {
        let m = fake.rows();
        let rows = block.len() / m;
        let radii = &real_radii[start..start + rows];
        block
            .par_chunks_exact(m)
            .zip(recalled[start..start + rows].par_iter_mut().zip(&mut covered[start..start + rows]))
            .zip(radii)
            .for_each(|((dist, (recalled, covered)), &r)| {
                *recalled = dist.iter().zip(&fake_radii).any(|(d, rf)| d < rf);
                *covered = dist.iter().any(|&d| d < r);
            });
        const COLUMNS: usize = 256;
        holding.par_chunks_mut(COLUMNS).enumerate().for_each(|(c, counts)| {
            let cols = c * COLUMNS..c * COLUMNS + counts.len();
            for (dist, &r) in block.chunks_exact(m).zip(radii) {
                for (count, &d) in counts.iter_mut().zip(&dist[cols.clone()]) {
                    *count += u32::from(d < r);
                }
            }
        });
    });
    let share = |hits: usize, of: usize| hits as f64 / of as f64;
    Ok(Prdc {
        precision: share(holding.iter().filter(|&&c| c > 0).count(), fake.rows()),
        recall: share(recalled.iter().filter(|&&b| b).count(), real.rows()),
        density: holding.iter().map(|&c| f64::from(c)).sum::<f64>() / (k * fake.rows()) as f64,
        coverage: share(covered.iter().filter(|&&b| b).count(), real.rows()),
    })
}

/// Both sets minus the mean of the first.
fn centred_on_first(a: &Features, b: &Features) -> (Features, Features) {
    let d = a.dim();
    let mut mean = vec![0f64; d];
    for i in 0..a.rows() {
        mean.iter_mut().zip(a.row(i)).for_each(|(m, &x)| *m += f64::from(x));
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / a.rows() as f64) as f32).collect();
    let centre = |f: &Features| {
        let data = f.data().chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(x, m)| x - m)).collect();
        Features::new(data, d).expect("rows of d")
    };
    (centre(a), centre(b))
}

fn squared_norms(f: &Features) -> Vec<f32> {
    (0..f.rows()).map(|i| f.row(i).iter().map(|x| x * x).sum()).collect()
}

/// Calls `each(start, block)` for consecutive blocks of rows of `a`: `block` holds the squared
/// distances of rows start.. of `a` to every row of `b`, row-major, clamped at 0; at most
/// `block_entries` of them, or one row.
fn for_blocks(
    a: &Features,
    a_norms: &[f32],
    b: &Features,
    b_norms: &[f32],
    block_entries: usize,
    mut each: impl FnMut(usize, &[f32]),
) {
    let (d, m) = (a.dim(), b.rows());
    let rows_per_block = (block_entries / m).clamp(1, a.rows());
    let mut block = vec![0f32; rows_per_block * m];
    for start in (0..a.rows()).step_by(rows_per_block) {
        let rows = rows_per_block.min(a.rows() - start);
        let block = &mut block[..rows * m];
        let a_rows = Mat::rows(&a.data()[start * d..(start + rows) * d], rows, d);
        matmul(block, a_rows, Mat::rows(b.data(), m, d).t(), false);
        block.par_chunks_exact_mut(m).zip(&a_norms[start..start + rows]).for_each(|(row, &na)| {
            row.iter_mut().zip(b_norms).for_each(|(g, &nb)| *g = (na + nb - 2.0 * *g).max(0.0));
        });
        each(start, block);
    }
}

/// The squared distance of each row of `f` to its k-th nearest neighbour among the other
/// rows (the (k+1)-th smallest distance, the row's own 0 being the first), as the reference's
/// `compute_nearest_neighbour_distances`.
fn knn_radii(f: &Features, norms: &[f32], k: usize, block_entries: usize) -> Vec<f32> {
    let mut radii = vec![0f32; f.rows()];
    for_blocks(f, norms, f, norms, block_entries, |start, block| {
        let n = f.rows();
        let rows = block.len() / n;
        radii[start..start + rows].par_iter_mut().enumerate().for_each_init(Vec::new, |scratch, (r, radius)| {
            scratch.clear();
            scratch.extend_from_slice(&block[r * n..(r + 1) * n]);
            scratch[start + r] = 0.0;
            *radius = *scratch.select_nth_unstable_by(k, f32::total_cmp).1;
        });
    });
    radii
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::gaussian_features;

    /// The metrics on the full distance matrix, in f64, transcribed from the reference.
    fn reference(real: &Features, fake: &Features, k: usize) -> Prdc {
        let dist = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>().sqrt()
        };
        let radii = |f: &Features| -> Vec<f64> {
            (0..f.rows())
                .map(|i| {
                    let mut d: Vec<f64> = (0..f.rows()).map(|j| dist(f.row(i), f.row(j))).collect();
                    d.sort_by(f64::total_cmp);
                    d[k]
                })
                .collect()
        };
        let (rr, rf) = (radii(real), radii(fake));
        let d = |i: usize, j: usize| dist(real.row(i), fake.row(j));
        let (n, m) = (real.rows(), fake.rows());
        let inside = |j: usize| (0..n).filter(|&i| d(i, j) < rr[i]).count();
        Prdc {
            precision: (0..m).filter(|&j| inside(j) > 0).count() as f64 / m as f64,
            recall: (0..n).filter(|&i| (0..m).any(|j| d(i, j) < rf[j])).count() as f64 / n as f64,
            density: (0..m).map(inside).sum::<usize>() as f64 / (k * m) as f64,
            coverage: (0..n).filter(|&i| (0..m).map(|j| d(i, j)).fold(f64::INFINITY, f64::min) < rr[i]).count() as f64
                / n as f64,
        }
    }

    #[test]
    fn identical_sets_are_fully_precise_and_covered_and_far_sets_not_at_all() {
        let a = gaussian_features(60, 6, 1.0, 0.0, 1);
        let same = prdc(&a, &a, 5).unwrap();
        assert_eq!((same.precision, same.recall, same.coverage), (1.0, 1.0, 1.0));
        let far = gaussian_features(50, 6, 1.0, 100.0, 2);
        assert_eq!(prdc(&a, &far, 5).unwrap(), Prdc { precision: 0.0, recall: 0.0, density: 0.0, coverage: 0.0 });
        assert!(prdc(&a, &gaussian_features(5, 6, 1.0, 0.0, 3), 5)
            .unwrap_err()
            .to_string()
            .contains("more than 5 rows"));
    }

    /// Blocks of any size, down to one row, give what the whole distance matrix gives.
    #[test]
    fn blocks_give_the_whole_matrix_metrics() {
        let real = gaussian_features(300, 4, 1.0, 0.0, 4);
        let fake = gaussian_features(250, 4, 1.3, 0.2, 5);
        for k in [1, 3, 5] {
            let want = reference(&real, &fake, k);
            for block_entries in [1, 1000, 7777, BLOCK_ENTRIES] {
                assert_eq!(prdc_in_blocks(&real, &fake, k, block_entries).unwrap(), want, "k {k}, {block_entries}");
            }
        }
    }

    /// The reference implementation's numbers (tests/golden/metrics_prdc.py: precision 0.7,
    /// recall 1.0, density 0.6, coverage 0.95).
    #[test]
    fn spirals_match_the_reference_implementation() {
        let spiral = |n: usize, scale: f64, turn: f64, dx: f64, third: fn(f64) -> f64| {
            let data = (0..n)
                .flat_map(|i| {
                    let i = i as f64;
                    let r = scale * i.sqrt();
                    [r * (2.39996 * i + turn).cos() + dx, r * (2.39996 * i + turn).sin(), 0.1 * third(i)]
                })
                .map(|v| v as f32)
                .collect();
            Features::new(data, 3).unwrap()
        };
        let real = spiral(40, 1.0, 0.0, 0.0, f64::cos);
        let fake = spiral(30, 1.5, 1.0, 5.0, f64::sin);
        let got = prdc(&real, &fake, 5).unwrap();
        assert_eq!((got.precision, got.recall, got.coverage), (0.7, 1.0, 0.95));
        assert!((got.density - 0.6).abs() < 1e-12, "{got:?}");
    }
}
