//! A 4x4 convolution at stride 2 with padding 1 (the VQ-VAE-2's down- and upsampling layers,
//! and their transposed layers) as a 3x3 one at stride 1 over the input's 2x2 phases, which
//! Winograd's F(4x4, 3x3) then computes.
//!
//! Output pixel (i, j) reads input rows 2i + a - 1 for the kernel rows a = 0..4. Row u of the
//! input is row u div 2 of phase u mod 2, so kernel row a reads phase (a + 1) mod 2 at row
//! i + (a - 1) div 2: a = 0 reads phase 1 one row up, a = 1 phase 0 and a = 2 phase 1 in
//! row i, a = 3 phase 0 one row down. With the four phases of every channel as 4C channels
//! of half the height and width ("space to depth"), the convolution is a 3x3 one at
//! padding 1 whose kernels hold the 16 taps of the 4x4 one and zeros, and the padding of
//! the one is the padding of the other. Winograd spends 36 products per 16 output pixels on
//! each of the 4C x M kernels, 9 C M per pixel, where im2col spends 16 C M: 1.8x fewer in
//! every pass. Each pass folds its operands, runs the 3x3 kernel and unfolds its result:
//! the input side and its gradient by a permutation, the weight into the 3x3 kernels and
//! the weight gradient back by picking their 16 taps, the adjoint of that embedding.

use super::plan::Geometry;
use super::winograd::{self, Winograd};

/// Phase and 3x3 tap of each 4x4 kernel row (or column) a.
const TAPS: [(usize, usize); 4] = [(1, 0), (0, 1), (1, 1), (0, 2)];

/// A 4x4, stride-2, padding-1 convolution on planes of even height and width, folded.
pub(super) struct Phases {
    /// The convolution itself.
    g: Geometry,
    /// The 3x3, stride-1 convolution over its phases: 4C channels of H/2 x W/2.
    folded: Geometry,
}

impl Phases {
    /// Whether this kernel computes `g`: 4x4 at stride 2 with padding 1, on planes of even
    /// height and width.
    pub(super) fn supports(g: &Geometry) -> bool {
        (g.kh, g.kw, g.stride, g.pad) == (4, 4, 2, 1) && g.h.is_multiple_of(2) && g.w.is_multiple_of(2)
    }

    /// # Panics
    /// When the kernel does not [support](Self::supports) `g`.
    pub(super) fn new(g: &Geometry) -> Self {
        assert!(Self::supports(g), "phases: {g:?} is not 4x4 at stride 2 with padding 1 on even planes");
        let folded = Geometry { c: 4 * g.c, h: g.h / 2, w: g.w / 2, kh: 3, kw: 3, stride: 1, pad: 1, ..*g };
        debug_assert_eq!((folded.ho, folded.wo), (g.h / 2, g.w / 2));
        Phases { g: *g, folded }
    }

    /// Output side [N, M, Ho, Wo] from input side [N, C, H, W] (+ bias [M]).
    pub(super) fn correlate(&self, input: &[f32], weight: &[f32], bias: Option<&[f32]>, threads: usize) -> Vec<f32> {
        let winograd = Winograd::correlate(&self.folded, &self.fold_weight(weight));
        let folded = self.fold_input(input);
        winograd.run(winograd.plan(self.batch(input.len()), threads), &folded, bias)
    }

    /// Input side [N, C, H, W] from output side [N, M, Ho, Wo] (+ bias [C]): the adjoint of
    /// [`Self::correlate`].
    pub(super) fn scatter(&self, output: &[f32], weight: &[f32], bias: Option<&[f32]>, threads: usize) -> Vec<f32> {
        let winograd = Winograd::scatter(&self.folded, &self.fold_weight(weight));
        // Each phase of channel c takes c's bias.
        let bias = bias.map(|b| b.repeat(4));
        let n = output.len() / (self.g.m * self.g.p());
        let folded = winograd.run(winograd.plan(n, threads), output, bias.as_deref());
        self.unfold_input(&folded)
    }

    /// dW [M, C, 4, 4] from output side and input side.
    pub(super) fn weight_grad(&self, output: &[f32], input: &[f32], threads: usize) -> Vec<f32> {
        let plan = winograd::weight_grad_plan(&self.folded, self.batch(input.len()), threads);
        let folded = winograd::weight_grad(&self.folded, plan, output, &self.fold_input(input));
        let (c, m) = (self.g.c, self.g.m);
        let mut dw = vec![0f32; m * c * 16];
        for (mi, kernels) in dw.chunks_exact_mut(c * 16).enumerate() {
            for (ci, kernel) in kernels.chunks_exact_mut(16).enumerate() {
                for (a, &(pr, tr)) in TAPS.iter().enumerate() {
                    for (b, &(pc, tc)) in TAPS.iter().enumerate() {
                        let channel = (pr * 2 + pc) * c + ci;
                        kernel[a * 4 + b] = folded[((mi * 4 * c + channel) * 3 + tr) * 3 + tc];
                    }
                }
            }
        }
        dw
    }

    fn batch(&self, input_len: usize) -> usize {
        input_len / (self.g.c * self.g.hw())
    }

    /// The 3x3 kernels [M, 4C, 3, 3] holding the taps of `weight` [M, C, 4, 4].
    fn fold_weight(&self, weight: &[f32]) -> Vec<f32> {
        let (c, m) = (self.g.c, self.g.m);
        let mut folded = vec![0f32; m * 4 * c * 9];
        for (mi, kernels) in weight.chunks_exact(c * 16).enumerate() {
            for (ci, kernel) in kernels.chunks_exact(16).enumerate() {
                for (a, &(pr, tr)) in TAPS.iter().enumerate() {
                    for (b, &(pc, tc)) in TAPS.iter().enumerate() {
                        let channel = (pr * 2 + pc) * c + ci;
                        folded[((mi * 4 * c + channel) * 3 + tr) * 3 + tc] = kernel[a * 4 + b];
                    }
                }
            }
        }
        folded
    }

    /// Images [N, C, H, W] to their phases [N, 4C, H/2, W/2]: channel (r 2 + s) C + c holds
    /// the pixels (2y + r, 2x + s) of channel c.
    fn fold_input(&self, input: &[f32]) -> Vec<f32> {
        let (c, h, w) = (self.g.c, self.g.h, self.g.w);
        let mut folded = vec![0f32; input.len()];
        for (image, phases) in input.chunks_exact(c * h * w).zip(folded.chunks_exact_mut(c * h * w)) {
            for (phase, out) in phases.chunks_exact_mut(c * h * w / 4).enumerate() {
                let (r, s) = (phase / 2, phase % 2);
                for (plane, out) in image.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w / 4)) {
                    for (row, out) in plane.chunks_exact(w).skip(r).step_by(2).zip(out.chunks_exact_mut(w / 2)) {
                        out.iter_mut().zip(row.iter().skip(s).step_by(2)).for_each(|(o, v)| *o = *v);
                    }
                }
            }
        }
        folded
    }

    /// Phases [N, 4C, H/2, W/2] back to images [N, C, H, W]: the inverse of
    /// [`Self::fold_input`], a permutation and so also its adjoint.
    fn unfold_input(&self, folded: &[f32]) -> Vec<f32> {
        let (c, h, w) = (self.g.c, self.g.h, self.g.w);
        let mut images = vec![0f32; folded.len()];
        for (phases, image) in folded.chunks_exact(c * h * w).zip(images.chunks_exact_mut(c * h * w)) {
            for (phase, src) in phases.chunks_exact(c * h * w / 4).enumerate() {
                let (r, s) = (phase / 2, phase % 2);
                for (plane, src) in image.chunks_exact_mut(h * w).zip(src.chunks_exact(h * w / 4)) {
                    for (row, src) in plane.chunks_exact_mut(w).skip(r).step_by(2).zip(src.chunks_exact(w / 2)) {
                        row.iter_mut().skip(s).step_by(2).zip(src).for_each(|(o, v)| *o = *v);
                    }
                }
            }
        }
        images
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::im2col;
    use crate::nn::conv::layers::ConvConfig;
    use crate::nn::conv::op::Kind;
    use crate::nn::conv::testing::{normal, rel_err, rng};

    /// All three passes against the im2col kernel on random data: square and oblong planes,
    /// one image and several, thin channels (the first and last layers of the VQ-VAE-2),
    /// and planes of one output pixel.
    #[test]
    fn matches_im2col_in_all_three_passes() {
        let mut r = rng(31);
        for (n, c, m, h, w) in [(2, 3, 8, 8, 8), (3, 5, 9, 6, 10), (1, 8, 3, 16, 4), (2, 4, 6, 2, 2), (1, 1, 1, 12, 14)]
        {
            let config = ConvConfig { stride: 2, padding: 1 };
            let (_, g) = Kind::Conv(config).geometry(&[n, c, h, w], &[m, c, 4, 4]).unwrap();
            assert!(Phases::supports(&g));
            let (input, weight) = (normal(&mut r, n * c * g.hw()), normal(&mut r, m * g.k()));
            let (output, bias_m, bias_c) = (normal(&mut r, n * m * g.p()), normal(&mut r, m), normal(&mut r, c));
            let (phases, plan) = (Phases::new(&g), im2col::plan(&g, n, 1));
            let got = phases.correlate(&input, &weight, Some(&bias_m), 1);
            let want = im2col::correlate(&g, plan, &input, &weight, Some(&bias_m));
            assert!(rel_err(&got, &want) < 1e-5, "forward, {g:?}: {}", rel_err(&got, &want));
            let got = phases.scatter(&output, &weight, Some(&bias_c), 1);
            let want = im2col::scatter(&g, plan, &output, &weight, Some(&bias_c));
            assert!(rel_err(&got, &want) < 1e-5, "input gradient, {g:?}: {}", rel_err(&got, &want));
            let got = phases.weight_grad(&output, &input, 1);
            let want = im2col::weight_grad(&g, plan, &output, &input);
            assert!(rel_err(&got, &want) < 1e-5, "weight gradient, {g:?}: {}", rel_err(&got, &want));
        }
    }

    #[test]
    fn takes_4x4_stride_2_padding_1_on_even_planes_only() {
        let g = |k, stride, pad, h, w| Geometry { c: 8, h, w, m: 8, ho: 1, wo: 1, kh: k, kw: k, stride, pad };
        assert!(Phases::supports(&g(4, 2, 1, 8, 6)));
        assert!(!Phases::supports(&g(4, 2, 1, 7, 6)));
        assert!(!Phases::supports(&g(4, 2, 1, 8, 5)));
        assert!(!Phases::supports(&g(4, 2, 0, 8, 8)));
        assert!(!Phases::supports(&g(3, 2, 1, 8, 8)));
        assert!(!Phases::supports(&g(4, 1, 1, 8, 8)));
    }

    /// Folding the input is a permutation that unfolding undoes.
    #[test]
    fn unfolding_undoes_folding() {
        let (_, g) = Kind::Conv(ConvConfig { stride: 2, padding: 1 }).geometry(&[2, 3, 6, 4], &[5, 3, 4, 4]).unwrap();
        let phases = Phases::new(&g);
        let input: Vec<f32> = (0..2 * 3 * 6 * 4).map(|i| i as f32).collect();
        let folded = phases.fold_input(&input);
        let mut sorted = folded.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, input);
        // Channel 1 of phase (1, 0) of image 0 starts at pixel (1, 0) of channel 1.
        assert_eq!(folded[(2 * 3 + 1) * 6], input[24 + 4]);
        assert_eq!(phases.unfold_input(&folded), input);
    }
}
