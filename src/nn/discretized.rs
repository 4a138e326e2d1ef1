//! The discretized Gaussian likelihood of 8-bit images (as the decoders of Ho et al. 2020,
//! <https://arxiv.org/abs/2006.11239>, §3.3, and of PixelCNN++ with a logistic): pixel
//! values 0..255 are the 256 bins of width 2/255 on the [-1, 1] scale, and a pixel's
//! probability is the mass N(mean, sigma^2) puts on its bin, the outermost bins reaching to
//! -inf and +inf. The masses of the 256 values sum to one, so log p(x) is that of a proper
//! distribution over images and compares across models in bits per dimension.
//!
//! Computed on the host in f64 from the normal's upper tail Q(t) = erfc(t / sqrt 2) / 2 in
//! logs, so that a bin far from the mean keeps an exact, finite log-probability instead of
//! the difference of two equal rounded CDF values.

use rayon::prelude::*;

use candle_core::cpu::erf::{erf_f64, erfc_f64};

/// Half a bin on the [-1, 1] scale.
const HALF_BIN: f64 = 1.0 / 255.0;

/// Above this t, erfc(t / sqrt 2) underflows f64 (about 1e-270 at 35), so ln Q comes
/// from its asymptotic series instead.
const SERIES_FROM: f64 = 35.0;

/// ln Q(t) = ln P(Z > t), Z ~ N(0, 1), for any t.
fn ln_upper_tail(t: f64) -> f64 {
    if t < 0.0 {
        return (-0.5 * erfc_f64(-t * std::f64::consts::FRAC_1_SQRT_2)).ln_1p();
    }
    if t < SERIES_FROM {
        return (0.5 * erfc_f64(t * std::f64::consts::FRAC_1_SQRT_2)).ln();
    }
    // Q(t) = phi(t) / t (1 - 1/t^2 + 3/t^4 - 15/t^6 + 105/t^8 - ...); the next term is
    // below 1e-12 at t = 35.
    let u = 1.0 / (t * t);
    let series = 1.0 - u * (1.0 - u * (3.0 - u * (15.0 - u * 105.0)));
    -0.5 * t * t - t.ln() - 0.5 * super::functional::LN_2PI + series.ln()
}

/// ln P(a < Z < b) for a < b, either end possibly infinite.
fn ln_interval(a: f64, b: f64) -> f64 {
    // ln(Q(lo) - Q(hi)) = ln Q(lo) + ln(1 - exp(ln Q(hi) - ln Q(lo))) for lo < hi.
    let tail_difference = |lo: f64, hi: f64| {
        let (ql, qh) = (ln_upper_tail(lo), ln_upper_tail(hi));
        ql + (-(qh - ql).exp_m1()).ln()
    };
    if a == f64::NEG_INFINITY {
        ln_upper_tail(-b)
    } else if b == f64::INFINITY {
        ln_upper_tail(a)
    } else if a >= 0.0 {
        tail_difference(a, b)
    } else if b <= 0.0 {
        tail_difference(-b, -a)
    } else {
        // Around the mean: erf is exact near zero, where both tails are about 1/2.
        let r = std::f64::consts::FRAC_1_SQRT_2;
        (0.5 * (erf_f64(b * r) - erf_f64(a * r))).ln()
    }
}

/// The bin (0..=255) of a pixel value on the [-1, 1] scale: the nearest of the 256 levels.
fn bin(x: f32) -> u8 {
    ((x as f64 + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// ln p(x) of one pixel value `x` (on the [-1, 1] scale, taken as its nearest level) under
/// the discretized N(`mean`, `sigma`^2).
pub fn ln_prob(x: f32, mean: f32, sigma: f64) -> f64 {
    let k = bin(x);
    let centre = k as f64 / 127.5 - 1.0;
    let (m, s) = (mean as f64, sigma);
    let a = if k == 0 { f64::NEG_INFINITY } else { (centre - HALF_BIN - m) / s };
    let b = if k == 255 { f64::INFINITY } else { (centre + HALF_BIN - m) / s };
    ln_interval(a, b)
}

/// ln p(x) of each of the images `x` (rows of `d` pixel values on the [-1, 1] scale) under
/// the discretized Gaussian of the same rows of `mean` and one `sigma`: one sum per image,
/// each over its own pixels in order, so the result does not depend on the thread count.
pub fn ln_prob_per_image(x: &[f32], mean: &[f32], d: usize, sigma: f64) -> Vec<f64> {
    x.par_chunks(d.max(1))
        .zip(mean.par_chunks(d.max(1)))
        .map(|(x, m)| x.iter().zip(m).map(|(&x, &m)| ln_prob(x, m, sigma)).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(k: usize) -> f32 {
        (k as f64 / 127.5 - 1.0) as f32
    }

    /// The 256 masses sum to one wherever the mean is and whatever the scale.
    #[test]
    fn the_bins_are_a_distribution() {
        for (mean, sigma) in [(0.0, 0.1), (0.93, 0.01), (-1.0, 0.5), (2.5, 0.05), (0.3, 3.0), (-0.2, 1e-4)] {
            let total: f64 = (0..256).map(|k| ln_prob(level(k), mean, sigma).exp()).sum();
            assert!((total - 1.0).abs() < 1e-12, "mean {mean} sigma {sigma}: {total}");
        }
    }

    /// A middle bin is its Gaussian's mass, Phi(b) - Phi(a), computed here the plain way.
    #[test]
    fn a_bin_is_the_mass_between_its_edges() {
        let phi = |t: f64| 0.5 * (1.0 + erf_f64(t / 2f64.sqrt()));
        for (k, mean, sigma) in [(128, 0.0f32, 0.1), (10, -0.9, 0.05), (200, 0.1, 0.3), (40, -0.5, 0.2)] {
            let c = k as f64 / 127.5 - 1.0;
            let want = phi((c + HALF_BIN - mean as f64) / sigma) - phi((c - HALF_BIN - mean as f64) / sigma);
            let got = ln_prob(level(k), mean, sigma);
            assert!((got - want.ln()).abs() < 1e-9, "bin {k}: {got} vs {}", want.ln());
        }
        // The edge bins hold the tails: everything below the first edge, above the last.
        let got = ln_prob(-1.0, -1.0, 0.1);
        assert!((got - phi(HALF_BIN / 0.1).ln()).abs() < 1e-12, "{got}");
        let got = ln_prob(1.0, 0.0, 0.5);
        assert!((got - (1.0 - phi((1.0 - HALF_BIN) / 0.5)).ln()).abs() < 1e-12, "{got}");
    }

    /// Far from the mean the log-probability stays finite and falls like -t^2/2, and the
    /// two ways of computing the tail agree where they meet.
    #[test]
    fn far_bins_keep_finite_log_probabilities() {
        let below = ln_upper_tail(SERIES_FROM - 1e-9);
        let above = ln_upper_tail(SERIES_FROM + 1e-9);
        assert!((below - above).abs() < 1e-9 * below.abs(), "{below} vs {above}");
        // A pixel 2 away from its mean at sigma 0.001: t about 2000.
        let lp = ln_prob(1.0, -1.0, 0.001);
        let t = (1.0 - HALF_BIN + 1.0) / 0.001;
        assert!(lp.is_finite() && (lp + 0.5 * t * t).abs() < 20.0, "{lp}");
        // Symmetric about the mean, also in the far tails (about 26 sigma out).
        let (l, r) = (ln_prob(level(60), 0.0, 0.02), ln_prob(level(195), 0.0, 0.02));
        assert!((l - r).abs() < 1e-9 * l.abs() && l < -300.0, "{l} vs {r}");
    }

    #[test]
    fn per_image_sums_are_the_sums_of_their_pixels() {
        let x: Vec<f32> = (0..12).map(|i| level(i * 20)).collect();
        let m: Vec<f32> = (0..12).map(|i| (i as f32 / 6.0) - 1.0).collect();
        let rows = ln_prob_per_image(&x, &m, 4, 0.2);
        for (r, row) in rows.iter().enumerate() {
            let want: f64 = (0..4).map(|j| ln_prob(x[4 * r + j], m[4 * r + j], 0.2)).sum();
            assert_eq!(*row, want);
        }
    }
}
