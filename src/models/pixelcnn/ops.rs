//! The two fused CPU ops of the PixelCNN, on channels-last maps: the causal unfold that turns
//! the vertical and horizontal convolutions into one matrix product each, and the gate.
//! Both are plain copies or elementwise maths that candle would spread over many ops (pad,
//! narrow, cat; narrow, tanh, sigmoid, mul), each with a fresh buffer and a backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::nn::fastmath;
use crate::nn::gemm::contiguous_f32;

/// Kernel taps as (row, column) offsets from the output pixel, in the kernel's row-major
/// order. The vertical stack's conv (2,3) padded 1 at the top, left and right reads rows
/// i-1..i and columns j-1..j+1; the horizontal one's (1,2) padded 1 at the left reads
/// columns j-1..j of row i.
pub const V_TAPS: &[(isize, isize)] = &[(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1)];
pub const H_TAPS: &[(isize, isize)] = &[(0, -1), (0, 0)];

/// im2col for a stride-1 convolution with `taps` on channels-last maps: [N, H, W, C] ->
/// [N, H, W, C T], where entry (c, t) of a pixel's row (index c T + t, the order of a PyTorch
/// weight [out, C, kh, kw] flattened) is channel c of the pixel at tap t, or 0 outside the
/// map. A product with that weight as an [out, C T] matrix is then the convolution.
pub struct Unfold(pub &'static [(isize, isize)]);

/// The pixel at `(i, j) + tap` of an `h` x `w` map, when inside it.
fn shifted(i: usize, j: usize, (di, dj): (isize, isize), h: usize, w: usize) -> Option<usize> {
    let (y, x) = (i.checked_add_signed(di)?, j.checked_add_signed(dj)?);
    (y < h && x < w).then_some(y * w + x)
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "causal-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), s, l)?;
        let (n, h, w, c) = l.shape().dims4()?;
        let t = self.0.len();
        let mut out = vec![0f32; n * h * w * c * t];
        if !out.is_empty() {
            out.par_chunks_mut(h * w * c * t).zip(x.par_chunks(h * w * c)).for_each(|(dst, image)| {
                for (p, row) in dst.chunks_exact_mut(c * t).enumerate() {
                    for (tap, &offset) in self.0.iter().enumerate() {
                        if let Some(q) = shifted(p / w, p % w, offset, h, w) {
                            let src = &image[q * c..(q + 1) * c];
                            row.iter_mut().skip(tap).step_by(t).zip(src).for_each(|(d, v)| *d = *v);
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, c * t))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Fold(self.0))?))
    }
}

/// The adjoint of [`Unfold`]: adds each entry of [N, H, W, C T] back onto the pixel it was
/// taken from.
struct Fold(&'static [(isize, isize)]);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "causal-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(self.name(), s, l)?;
        let (n, h, w, ct) = l.shape().dims4()?;
        let t = self.0.len();
        let c = ct / t;
        let mut out = vec![0f32; n * h * w * c];
        if !out.is_empty() {
            out.par_chunks_mut(h * w * c).zip(g.par_chunks(h * w * ct)).for_each(|(image, src)| {
                for (p, row) in src.chunks_exact(ct).enumerate() {
                    for (tap, &offset) in self.0.iter().enumerate() {
                        if let Some(q) = shifted(p / w, p % w, offset, h, w) {
                            let dst = &mut image[q * c..(q + 1) * c];
                            dst.iter_mut().zip(row.iter().skip(tap).step_by(t)).for_each(|(d, v)| *d += v);
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, c))))
    }
}

/// Rows of a gate or its gradient that one task takes.
const ROWS_PER_TASK: usize = 256;

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
        for ((o, &f), &g) in o.iter_mut().zip(f).zip(g) {
            *o = tanh(f) * sigmoid(g);
        }
    }
}

/// gate(a) = tanh(a_f) * sigmoid(a_g) over the last dimension, [..., 2C] -> [..., C]: the
/// first C channels are f, the last C are g.
pub struct Gate;

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(self.name(), s, l)?;
        let mut dims = l.dims().to_vec();
        let two_c = dims.last().copied().unwrap_or(0);
        if two_c == 0 || two_c % 2 == 1 {
            candle_core::bail!("gate: the last dimension of {dims:?} must be even and non-zero")
        }
        let c = two_c / 2;
        *dims.last_mut().expect("rank >= 1") = c;
        let mut out = vec![0f32; a.len() / 2];
        out.par_chunks_mut(ROWS_PER_TASK * c)
            .zip(a.par_chunks(ROWS_PER_TASK * two_c))
            .for_each(|(o, a)| gate_rows(a, o, c));
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, a: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(a.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &GateGrad)?))
    }
}

/// (a [..., 2C], dy [..., C]) -> da: dy (1 - tanh^2 f) sigmoid g for f, dy tanh f
/// sigmoid g (1 - sigmoid g) for g.
struct GateGrad;

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        "gate-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, dy) = (contiguous_f32(self.name(), s1, l1)?, contiguous_f32(self.name(), s2, l2)?);
        let two_c = l1.dims().last().copied().unwrap_or(0);
        if two_c == 0 || dy.len() * 2 != a.len() {
            candle_core::bail!("gate-grad: input {:?} and gradient {:?} do not match", l1.dims(), l2.dims())
        }
        let c = two_c / 2;
        let mut da = vec![0f32; a.len()];
        da.par_chunks_mut(ROWS_PER_TASK * two_c)
            .zip(a.par_chunks(ROWS_PER_TASK * two_c))
            .zip(dy.par_chunks(ROWS_PER_TASK * c))
            .for_each(|((da, a), dy)| {
                for ((da, a), dy) in da.chunks_exact_mut(two_c).zip(a.chunks_exact(two_c)).zip(dy.chunks_exact(c)) {
                    let (df, dg) = da.split_at_mut(c);
                    let (f, g) = a.split_at(c);
                    for ((((df, dg), &f), &g), &dy) in df.iter_mut().zip(dg).zip(f).zip(g).zip(dy) {
                        let (t, s) = (tanh(f), sigmoid(g));
                        *df = dy * (1.0 - t * t) * s;
                        *dg = dy * t * s * (1.0 - s);
                    }
                }
            });
        Ok((CpuStorage::F32(da), l1.shape().clone()))
    }
}
