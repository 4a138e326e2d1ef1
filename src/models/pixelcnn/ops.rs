//! The two fused CPU ops of the PixelCNN, on channels-last maps: the causal unfold that turns
//! the vertical and horizontal convolutions into one matrix product each, and the gate.
//! Both are plain copies or elementwise maths that candle would spread over many ops (pad,
//! narrow, cat; narrow, tanh, sigmoid, mul), each with a fresh buffer and a backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
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
        gate_row(row, None, o);
    }
}

/// One pixel's gate, of `a` [2C] plus `cond` [2C] when given, into `out` [C].
#[inline(always)]
fn gate_row(a: &[f32], cond: Option<&[f32]>, out: &mut [f32]) {
    let (f, g) = a.split_at(out.len());
    match cond {
        None => out.iter_mut().zip(f).zip(g).for_each(|((o, &f), &g)| *o = tanh(f) * sigmoid(g)),
        Some(k) => {
            let (kf, kg) = k.split_at(out.len());
            for ((((o, &f), &g), &kf), &kg) in out.iter_mut().zip(f).zip(g).zip(kf).zip(kg) {
                *o = tanh(f + kf) * sigmoid(g + kg);
            }
        }
    }
}

/// The gradient of [`gate_row`] in `a`: dy (1 - tanh^2 f) sigmoid g for f, dy tanh f
/// sigmoid g (1 - sigmoid g) for g, written to `da` [2C].
#[inline(always)]
fn gate_grad_row(a: &[f32], cond: Option<&[f32]>, dy: &[f32], da: &mut [f32]) {
    // The gate's input, the conditioning added, then overwritten by its gradient.
    da.copy_from_slice(a);
    if let Some(k) = cond {
        da.iter_mut().zip(k).for_each(|(d, k)| *d += k);
    }
    let (df, dg) = da.split_at_mut(dy.len());
    for ((f, g), &dy) in df.iter_mut().zip(dg.iter_mut()).zip(dy) {
        let (t, s) = (tanh(*f), sigmoid(*g));
        *f = dy * (1.0 - t * t) * s;
        *g = dy * t * s * (1.0 - s);
    }
}

/// gate(a + cond) = tanh(f) * sigmoid(g) over the last dimension, [..., 2C] -> [..., C]: the
/// first C channels are f, the last C are g. `cond` [N, 1 or P, 2C] is added to the pixels
/// of each of the N images (P pixels each), broadcast over them when it has one.
pub fn gate(a: &Tensor, cond: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match cond {
        None => a.apply_op1(Gate),
        Some(cond) => a.apply_op2(&cond.contiguous()?, Gate),
    }
}

/// The gate, on its own or with conditioning; see [`gate`].
struct Gate;

/// A gate's input of `rows` rows of 2C and, when conditioned, its conditioning [N, Q, 2C]
/// (Q = 1 or the P rows of one image) with Q and P.
struct GateInput<'a> {
    a: &'a [f32],
    rows: usize,
    c: usize,
    cond: Option<(&'a [f32], usize, usize)>,
}

impl<'a> GateInput<'a> {
    fn new(a: &'a [f32], al: &Layout, cond: Option<(&'a [f32], &Layout)>) -> candle_core::Result<Self> {
        let dims = al.dims();
        let two_c = dims.last().copied().unwrap_or(0);
        if two_c == 0 || two_c % 2 == 1 {
            candle_core::bail!("gate: the last dimension of {dims:?} must be even and non-zero")
        }
        let rows = a.len() / two_c;
        let cond = match cond {
            None => None,
            Some((k, l)) => {
                let (n, q, k2) = l.shape().dims3()?;
                if k2 != two_c || n == 0 || rows % n != 0 || (q != 1 && q != rows / n) {
                    candle_core::bail!("gate: conditioning {:?} does not fit input {dims:?}", l.dims())
                }
                Some((k, q, rows / n))
            }
        };
        Ok(GateInput { a, rows, c: two_c / 2, cond })
    }

    fn row(&self, r: usize) -> &'a [f32] {
        &self.a[r * 2 * self.c..(r + 1) * 2 * self.c]
    }

    /// The conditioning of row `r`.
    fn cond_row(&self, r: usize) -> Option<&'a [f32]> {
        let (k, q, per_image) = self.cond?;
        let two_c = 2 * self.c;
        let at = if q == 1 { r / per_image } else { r };
        Some(&k[at * two_c..(at + 1) * two_c])
    }
}

/// Runs `f(row, out row)` over the rows of `out`, `width` floats each, on rayon's threads.
fn par_rows<F>(out: &mut [f32], width: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    out.par_chunks_mut(ROWS_PER_TASK * width).enumerate().for_each(|(b, block)| {
        for (r, o) in block.chunks_exact_mut(width).enumerate() {
            f(b * ROWS_PER_TASK + r, o)
        }
    });
}

fn gate_fwd(x: GateInput, al: &Layout) -> (CpuStorage, Shape) {
    let c = x.c;
    let mut out = vec![0f32; x.rows * c];
    par_rows(&mut out, c, |r, o| gate_row(x.row(r), x.cond_row(r), o));
    let mut dims = al.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = c;
    (CpuStorage::F32(out), Shape::from(dims))
}

fn gate_bwd(x: GateInput, al: &Layout, dy: &[f32]) -> candle_core::Result<(CpuStorage, Shape)> {
    let c = x.c;
    if dy.len() != x.rows * c {
        candle_core::bail!("gate-grad: gradient of {} floats for input {:?}", dy.len(), al.dims())
    }
    let mut da = vec![0f32; x.rows * 2 * c];
    par_rows(&mut da, 2 * c, |r, d| gate_grad_row(x.row(r), x.cond_row(r), &dy[r * c..(r + 1) * c], d));
    Ok((CpuStorage::F32(da), al.shape().clone()))
}

const NAME: &str = "gate";
const GRAD_NAME: &str = "gate-grad";

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok(gate_fwd(GateInput::new(contiguous_f32(NAME, s, l)?, l, None)?, l))
    }

    fn bwd(&self, a: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(a.apply_op2_no_bwd(&grad.contiguous()?, &GateGrad)?))
    }
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cond = Some((contiguous_f32(NAME, s2, l2)?, l2));
        Ok(gate_fwd(GateInput::new(contiguous_f32(NAME, s1, l1)?, l1, cond)?, l1))
    }

    fn bwd(
        &self,
        a: &Tensor,
        cond: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let da = a.apply_op3_no_bwd(cond, &grad.contiguous()?, &GateGrad)?;
        let dcond = if cond.track_op() {
            // (rows, 2c) -> (n, p, 2c), summed over p where the conditioning is broadcast.
            let (n, q, two_c) = cond.dims3()?;
            let da = da.reshape((n, (), two_c))?;
            Some(if q == 1 { da.sum_keepdim(1)? } else { da })
        } else {
            None
        };
        Ok((Some(da), dcond))
    }
}

/// The gate's gradient in its input: from (a, dy), or (a, cond, dy) with conditioning.
struct GateGrad;

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        gate_bwd(GateInput::new(contiguous_f32(GRAD_NAME, s1, l1)?, l1, None)?, l1, contiguous_f32(GRAD_NAME, s2, l2)?)
    }
}

impl CustomOp3 for GateGrad {
    fn name(&self) -> &'static str {
        GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cond = Some((contiguous_f32(GRAD_NAME, s2, l2)?, l2));
        gate_bwd(GateInput::new(contiguous_f32(GRAD_NAME, s1, l1)?, l1, cond)?, l1, contiguous_f32(GRAD_NAME, s3, l3)?)
    }
}
