//! The PixelCNN's building blocks on channels-last maps: the causal unfold that turns the
//! vertical and horizontal convolutions into one matrix product each, the gate with its
//! conditioning, and the choice between the fused layer op and these candle ops.
//!
//! Device rule: on the CPU (f32) each gated layer is one fused op ([`super::layer`]); elsewhere
//! the layer is composed of [`causal_unfold`], a matrix product and [`gate`], which the fused
//! op is tested against in `composed_path_matches_the_fused_one_in_logits_and_every_gradient`.
//! [`OpPath`] makes the choice, once per forward pass. On CUDA (f32) the unfold and the gate
//! are one op each with its own kernel ([`super::kernels`]); on other devices, candle's ops.
//! The gate's row kernels (also used by the fused op and the cached sampler) are here too.

use candle_core::{DType, Tensor};
use multiversion::multiversion;

use super::kernels::{Gate, Unfold};
use crate::nn::fastmath;

/// Which implementation of a gated layer a forward pass runs; see the module's device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpPath {
    /// The fused CPU op.
    Fused,
    /// candle's own ops, on any device.
    Composed,
}

impl OpPath {
    /// The device rule: fused for f32 maps on the CPU, composed otherwise.
    pub fn for_maps(x: &Tensor) -> Self {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            OpPath::Fused
        } else {
            OpPath::Composed
        }
    }
}

/// im2col of `x` [N H W, C], maps of `size` (height, width) pixels, for a stride-1
/// convolution with `taps`: [N H W, T C], where entry (t, c) of a pixel's row (index t C + c)
/// is channel c of the pixel at tap t, or 0 outside the map. A product with the
/// convolution's weight as an [out, T C] matrix (taps major, see `PixelCnn`'s `tap_major`) is
/// then the convolution. On CUDA one kernel ([`Unfold`]); elsewhere candle ops: the maps
/// padded with zeros as far as the taps reach, and one shifted view per tap, concatenated
/// along the channels.
pub(super) fn causal_unfold(
    x: &Tensor,
    taps: &'static [(isize, isize)],
    (height, width): (usize, usize),
) -> candle_core::Result<Tensor> {
    let (rows, c) = x.dims2()?;
    let hw = height * width;
    if hw == 0 || rows % hw != 0 {
        candle_core::bail!("causal-unfold: {:?} is not rows of {height}x{width} maps", x.dims())
    }
    if x.device().is_cuda() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Unfold { taps, height, width });
    }
    let reach = |pick: fn(&(isize, isize)) -> isize| {
        let (lo, hi) = taps.iter().map(pick).fold((0, 0), |(lo, hi), d| (lo.min(d), hi.max(d)));
        (lo.unsigned_abs(), hi.unsigned_abs())
    };
    let ((top, bottom), (left, right)) = (reach(|t| t.0), reach(|t| t.1));
    let padded =
        x.reshape((rows / hw, height, width, c))?.pad_with_zeros(1, top, bottom)?.pad_with_zeros(2, left, right)?;
    let shifted = taps
        .iter()
        .map(|&(di, dj)| {
            // In bounds: `top` >= -di and `left` >= -dj by construction.
            let (y, x) = (top.wrapping_add_signed(di), left.wrapping_add_signed(dj));
            padded.narrow(1, y, height)?.narrow(2, x, width)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&shifted, 3)?.reshape((rows, taps.len() * c))
}

/// gate(a + conds) = tanh(f) * sigmoid(g) over the last dimension, [..., 2C] -> [..., C]:
/// the first C channels are f, the last C are g. Each conditioning tensor [N, 1 or P, 2C] is
/// added, in order, to the pixels of each of the N images (P pixels each), broadcast over them
/// when it has one. The adds are candle's broadcast adds; the gate is one kernel on CUDA
/// ([`Gate`]), elsewhere narrow, tanh, sigmoid and mul.
pub(super) fn gate(a: &Tensor, conds: &[&Tensor]) -> candle_core::Result<Tensor> {
    let dims = a.dims();
    let two_c = dims.last().copied().unwrap_or(0);
    if two_c == 0 || two_c % 2 == 1 {
        candle_core::bail!("gate: the last dimension of {dims:?} must be even and non-zero")
    }
    let mut x = a.clone();
    for k in conds {
        let (n, _, _) = k.dims3()?;
        // (..., 2C) -> (n, pixels, 2C)
        x = x.reshape((n, (), two_c))?.broadcast_add(k)?;
    }
    let x = x.reshape(dims)?;
    if x.device().is_cuda() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Gate);
    }
    let (last, c) = (dims.len() - 1, two_c / 2);
    x.narrow(last, 0, c)?.tanh()? * candle_nn::ops::sigmoid(&x.narrow(last, c, c)?)?
}

/// Kernel taps as (row, column) offsets from the output pixel, in the kernel's row-major
/// order. The vertical stack's conv (2,3) padded 1 at the top, left and right reads rows
/// i-1..i and columns j-1..j+1; the horizontal one's (1,2) padded 1 at the left reads
/// columns j-1..j of row i.
pub const V_TAPS: &[(isize, isize)] = &[(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1)];
pub const H_TAPS: &[(isize, isize)] = &[(0, -1), (0, 0)];

/// The pixel at `(i, j) + tap` of an `h` x `w` map, when inside it.
pub(super) fn shifted(i: usize, j: usize, (di, dj): (isize, isize), h: usize, w: usize) -> Option<usize> {
    let (y, x) = (i.checked_add_signed(di)?, j.checked_add_signed(dj)?);
    (y < h && x < w).then_some(y * w + x)
}

/// tanh(x) = 1 - 2 / (e^2x + 1), through the vectorising exp; within about 1e-7 of std's.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (fastmath::exp(2.0 * x) + 1.0)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fastmath::exp(-x))
}

/// The gate on rows of `a` [rows, 2C] (f half first, then g) into `out` [rows, C]:
/// tanh(f) * sigmoid(g).
pub fn gate_rows(a: &[f32], out: &mut [f32], c: usize) {
    for (o, row) in out.chunks_exact_mut(c).zip(a.chunks_exact(2 * c)) {
        let (f, g) = row.split_at(c);
        gate_row(o, f, g);
    }
}

/// out = tanh(f) * sigmoid(g).
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gate_row(out: &mut [f32], f: &[f32], g: &[f32]) {
    out.iter_mut().zip(f).zip(g).for_each(|((o, &f), &g)| *o = tanh(f) * sigmoid(g));
}

/// out = tanh(f) * sigmoid(g), keeping tanh(f) in place of f and sigmoid(g) in place of g
/// for [`gate_grad_kept`].
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gate_row_keeping(out: &mut [f32], f: &mut [f32], g: &mut [f32]) {
    for ((o, f), g) in out.iter_mut().zip(f.iter_mut()).zip(g.iter_mut()) {
        (*f, *g) = (tanh(*f), sigmoid(*g));
        *o = *f * *g;
    }
}

/// The gate's input gradient in place of tanh(f) and sigmoid(g) as [`gate_row_keeping`]
/// left them, from the output gradient `dy`: the same floats as [`gate_grad_row`], without
/// its exponentials.
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gate_grad_kept(t: &mut [f32], s: &mut [f32], dy: &[f32]) {
    for ((t, s), &dy) in t.iter_mut().zip(s.iter_mut()).zip(dy) {
        let (tf, sg) = (*t, *s);
        *t = dy * (1.0 - tf * tf) * sg;
        *s = dy * tf * sg * (1.0 - sg);
    }
}

/// The gate's input gradient in place of its input (f, g), from the output gradient `dy`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gate_grad_row(f: &mut [f32], g: &mut [f32], dy: &[f32]) {
    for ((f, g), &dy) in f.iter_mut().zip(g.iter_mut()).zip(dy) {
        let (t, s) = (tanh(*f), sigmoid(*g));
        *f = dy * (1.0 - t * t) * s;
        *g = dy * t * s * (1.0 - s);
    }
}
