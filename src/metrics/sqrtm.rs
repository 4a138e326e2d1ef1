//! Square roots of symmetric positive semi-definite matrices, by symmetric eigendecomposition
//! in f64 (faer's self-adjoint EVD): sqrt(A) = U diag(sqrt(max(w, 0))) U^T for A = U diag(w) U^T.
//!
//! A covariance is positive semi-definite, but rounding leaves the eigenvalues of a singular
//! or ill-conditioned one slightly negative (-1e-17 where the truth is 0); they are clamped to
//! 0, the value they stand for, instead of giving NaN. pytorch-fid's `scipy.linalg.sqrtm` of
//! the non-symmetric product S1 S2 instead returns complex round-off, which it drops, and adds
//! 1e-6 I to both covariances when the product is singular; the symmetric form here needs
//! neither, and costs two symmetric eigendecompositions in place of a Schur decomposition.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};

/// The eigenvalues (ascending, negatives clamped to 0) and eigenvectors (columns) of the
/// symmetric part of `a`.
fn eigen_psd(a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let evd = symmetric_part(a).self_adjoint_eigen(Side::Lower).map_err(not_converged)?;
    let w = evd.S().column_vector().iter().map(|&w| w.max(0.0)).collect();
    Ok((w, evd.U().to_owned()))
}

/// (A + A^T) / 2: the matrix the eigendecomposition reads, so that round-off asymmetry of a
/// computed product does not depend on which triangle is read.
fn symmetric_part(a: MatRef<'_, f64>) -> Mat<f64> {
    assert_eq!(a.nrows(), a.ncols(), "sqrtm: not a square matrix");
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| 0.5 * (a[(i, j)] + a[(j, i)]))
}

fn not_converged(e: faer::linalg::evd::EvdError) -> Error {
    Error::config(format!("the symmetric eigendecomposition of a covariance did not converge ({e:?})"))
}

/// The positive semi-definite square root of a symmetric positive semi-definite `a`.
pub fn sqrtm_psd(a: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let (w, u) = eigen_psd(a)?;
    // B = U diag(w^(1/4)); B B^T = U diag(sqrt w) U^T, symmetric by construction.
    let b = Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * w[j].sqrt().sqrt());
    let mut root = Mat::zeros(u.nrows(), u.nrows());
    matmul(root.as_mut(), Accum::Replace, b.as_ref(), b.transpose(), 1.0, Par::rayon(0));
    Ok(root)
}

/// tr sqrt(sqrt(S1) S2 sqrt(S1)), the cross term of the Fréchet distance, for symmetric
/// positive semi-definite `s1` and `s2`: the sum of the square roots of the (clamped)
/// eigenvalues of that symmetric matrix.
///
/// With S1 = U diag(w) U^T, sqrt(S1) S2 sqrt(S1) = U M U^T for M = diag(sqrt w) U^T S2 U
/// diag(sqrt w): the same eigenvalues (an orthogonal similarity, which moves no eigenvalue
/// by more than round-off), from two matrix products instead of the three that forming
/// sqrt(S1) and then the product would take (D = 2048, on 2 shared cores: 3.7-4.4 s
/// against 8.2-8.8 s, of which 2.2 s is the eigendecomposition of S1 and 1 s that of M).
pub fn trace_sqrt_product(s1: MatRef<'_, f64>, s2: MatRef<'_, f64>) -> Result<f64> {
    let d = s1.nrows();
    let (w, u) = eigen_psd(s1)?;
    let mut s2u = Mat::zeros(d, d);
    matmul(s2u.as_mut(), Accum::Replace, s2, u.as_ref(), 1.0, Par::rayon(0));
    let mut m = Mat::zeros(d, d);
    matmul(m.as_mut(), Accum::Replace, u.transpose(), s2u.as_ref(), 1.0, Par::rayon(0));
    let root: Vec<f64> = w.iter().map(|w| w.sqrt()).collect();
    let m = Mat::from_fn(d, d, |i, j| root[i] * 0.5 * (m[(i, j)] + m[(j, i)]) * root[j]);
    let w = m.self_adjoint_eigenvalues(Side::Lower).map_err(not_converged)?;
    Ok(w.iter().map(|&w| w.max(0.0).sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn householder(v: &[f64]) -> Mat<f64> {
        let vv: f64 = v.iter().map(|x| x * x).sum();
        Mat::from_fn(v.len(), v.len(), |i, j| f64::from(i == j) - 2.0 * v[i] * v[j] / vv)
    }

    fn product(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut c = Mat::zeros(a.nrows(), b.ncols());
        matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
        c
    }

    /// Q diag(lam) Q^T with Q = H(1,2,3,4,5) H(1,-1,2,-2,3), lam = 10^(-10 i / 4): condition
    /// number 1e10 (tests/golden/metrics_scipy.py builds the same matrix).
    fn ill_conditioned() -> (Mat<f64>, Mat<f64>, Vec<f64>) {
        let q = product(
            householder(&[1.0, 2.0, 3.0, 4.0, 5.0]).as_ref(),
            householder(&[1.0, -1.0, 2.0, -2.0, 3.0]).as_ref(),
        );
        let lam: Vec<f64> = (0..5).map(|i| 10f64.powf(-10.0 * i as f64 / 4.0)).collect();
        let ql = Mat::from_fn(5, 5, |i, j| q[(i, j)] * lam[j]);
        (product(ql.as_ref(), q.transpose()), q, lam)
    }

    /// scipy.linalg.sqrtm of the matrix, from tests/golden/metrics_scipy.py ("sqrtm row-major").
    const SCIPY_SQRTM: [f64; 25] = [
        0.8179452843322941,
        0.11187777556797487,
        -0.16468534546565852,
        0.22525753824427502,
        -0.24157292821485368,
        0.11187777556797852,
        0.03996205248441926,
        -0.02766858011042238,
        0.0058637959861643,
        -0.04392435031393879,
        -0.16468534546565766,
        -0.02766858011043085,
        0.0351476442802111,
        -0.03902987161630554,
        0.0498200503111358,
        0.22525753824427727,
        0.00586379598616753,
        -0.03902987161629982,
        0.08872133202409221,
        -0.05673611052712603,
        -0.24157292821485074,
        -0.04392435031394226,
        0.04982005031114185,
        -0.0567361105271308,
        0.07780792499993826,
    ];

    #[test]
    fn the_root_of_an_ill_conditioned_matrix_matches_scipy_and_the_closed_form() {
        let (a, q, lam) = ill_conditioned();
        let root = sqrtm_psd(a.as_ref()).unwrap();
        let exact = product(Mat::from_fn(5, 5, |i, j| q[(i, j)] * lam[j].sqrt()).as_ref(), q.transpose());
        for i in 0..5 {
            for j in 0..5 {
                let got = root[(i, j)];
                assert!((got - exact[(i, j)]).abs() < 1e-10, "({i}, {j}): {got} vs exact {}", exact[(i, j)]);
                assert!((got - SCIPY_SQRTM[i * 5 + j]).abs() < 1e-10, "({i}, {j}): {got} vs scipy");
            }
        }
        // The root squares back to the matrix.
        let square = product(root.as_ref(), root.as_ref());
        for i in 0..5 {
            for j in 0..5 {
                assert!((square[(i, j)] - a[(i, j)]).abs() < 1e-12);
            }
        }
    }

    /// Singular covariances (rank 2 of 6: B B^T, B 6 x 2), some of whose computed eigenvalues
    /// come out slightly negative: each root is finite and squares back to its matrix.
    #[test]
    fn round_off_negative_eigenvalues_are_clamped() {
        let mut negatives = 0;
        for seed in 0..20u64 {
            let f = crate::metrics::gaussian_features(6, 2, 1.0, 0.0, seed);
            let a = Mat::from_fn(6, 6, |i, j| (0..2).map(|l| f64::from(f.row(i)[l]) * f64::from(f.row(j)[l])).sum());
            let raw = a.self_adjoint_eigenvalues(Side::Lower).unwrap();
            negatives += raw.iter().filter(|&&w| w < 0.0).count();
            let root = sqrtm_psd(a.as_ref()).unwrap();
            let square = product(root.as_ref(), root.as_ref());
            for i in 0..6 {
                for j in 0..6 {
                    assert!(root[(i, j)].is_finite() && (square[(i, j)] - a[(i, j)]).abs() < 1e-12, "seed {seed}");
                }
            }
            // tr sqrt(A^2) = tr A; the zero eigenvalues come out as round-off of order
            // eps |A|, whose square roots (1e-8 |A|^(1/2) each) are what is left.
            let t = trace_sqrt_product(a.as_ref(), a.as_ref()).unwrap();
            let trace: f64 = (0..6).map(|i| a[(i, i)]).sum();
            assert!((t - trace).abs() < 1e-7 * trace, "seed {seed}: {t} vs {trace}");
        }
        assert!(negatives > 0, "no negative eigenvalue to clamp");
    }
}
