//! The PixelCNN's two ops on channels-last maps: the causal unfold that turns the vertical
//! and horizontal convolutions into one matrix product each, and the gate with its
//! conditioning.
//!
//! Device rule: on the CPU (f32) fused kernels ([`Unfold`], [`Gate`]), as candle would
//! spread each over many ops (pad, narrow, cat; add, narrow, tanh, sigmoid, mul), each with a
//! fresh buffer and a backward pass; elsewhere those composed candle ops
//! ([`causal_unfold_composed`], [`gate_composed`]), tested against the kernels in
//! `composed_path_matches_the_fused_one_in_logits_and_every_gradient`. [`OpPath`] makes the
//! choice, once per forward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::nn::fastmath;
use crate::nn::gemm::contiguous_f32;

/// Which implementation of the ops a forward pass runs; see the module's device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpPath {
    /// The CPU kernels.
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

    /// im2col of `x` [N H W, C], maps of `size` (height, width) pixels, for a stride-1
    /// convolution with `taps`: [N H W, T C]; see [`Unfold`].
    pub fn causal_unfold(
        self,
        x: &Tensor,
        taps: &'static [(isize, isize)],
        size: (usize, usize),
    ) -> candle_core::Result<Tensor> {
        match self {
            OpPath::Fused => x.apply_op1(Unfold { taps, height: size.0, width: size.1 }),
            OpPath::Composed => causal_unfold_composed(x, taps, size),
        }
    }

    /// gate(a + conds) = tanh(f) * sigmoid(g) over the last dimension, [..., 2C] -> [..., C]:
    /// the first C channels are f, the last C are g. Each of at most two conditioning tensors
    /// [N, 1 or P, 2C] is added, in order, to the pixels of each of the N images (P pixels
    /// each), broadcast over them when it has one. As candle ops, the broadcast adds and the
    /// sums of their backward pass walk a middle axis element by element: a conditioned
    /// training step (8x8, batch 128) cost 40 % more than an unconditioned one; fused,
    /// 10-15 % more.
    pub fn gate(self, a: &Tensor, conds: &[&Tensor]) -> candle_core::Result<Tensor> {
        if conds.len() > 2 {
            candle_core::bail!("gate: at most two conditioning tensors, got {}", conds.len())
        }
        match self {
            OpPath::Fused => gate_fused(a, conds),
            OpPath::Composed => gate_composed(a, conds),
        }
    }
}

/// [`Unfold`] as candle ops: the maps padded with zeros as far as the taps reach, and one
/// shifted view per tap, concatenated along the channels (taps major).
fn causal_unfold_composed(
    x: &Tensor,
    taps: &[(isize, isize)],
    (height, width): (usize, usize),
) -> candle_core::Result<Tensor> {
    let (rows, c) = x.dims2()?;
    let hw = height * width;
    if hw == 0 || rows % hw != 0 {
        candle_core::bail!("causal-unfold: {:?} is not rows of {height}x{width} maps", x.dims())
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

/// The gate (see [`OpPath::gate`]) as candle ops: broadcast adds, narrow, tanh, sigmoid, mul.
fn gate_composed(a: &Tensor, conds: &[&Tensor]) -> candle_core::Result<Tensor> {
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
    let (x, last, c) = (x.reshape(dims)?, dims.len() - 1, two_c / 2);
    x.narrow(last, 0, c)?.tanh()? * candle_nn::ops::sigmoid(&x.narrow(last, c, c)?)?
}

/// Kernel taps as (row, column) offsets from the output pixel, in the kernel's row-major
/// order. The vertical stack's conv (2,3) padded 1 at the top, left and right reads rows
/// i-1..i and columns j-1..j+1; the horizontal one's (1,2) padded 1 at the left reads
/// columns j-1..j of row i.
pub const V_TAPS: &[(isize, isize)] = &[(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1)];
pub const H_TAPS: &[(isize, isize)] = &[(0, -1), (0, 0)];

/// im2col for a stride-1 convolution with `taps` on channels-last maps of `height` x
/// `width` pixels: [N H W, C] -> [N H W, T C], where entry (t, c) of a pixel's row (index
/// t C + c) is channel c of the pixel at tap t, or 0 outside the map. A product with the
/// convolution's weight as an [out, T C] matrix (taps major, see
/// `PixelCnn`'s `tap_major`) is then the convolution. Taps major, each tap is one copy of a
/// pixel's C channels.
struct Unfold {
    taps: &'static [(isize, isize)],
    height: usize,
    width: usize,
}

/// The pixel at `(i, j) + tap` of an `h` x `w` map, when inside it.
pub(super) fn shifted(i: usize, j: usize, (di, dj): (isize, isize), h: usize, w: usize) -> Option<usize> {
    let (y, x) = (i.checked_add_signed(di)?, j.checked_add_signed(dj)?);
    (y < h && x < w).then_some(y * w + x)
}

impl Unfold {
    /// Pixels of one map, and the channels of rows of `width` floats per pixel, checked.
    fn plane(&self, name: &str, l: &Layout, per_tap: bool) -> candle_core::Result<(usize, usize)> {
        let (rows, width) = l.shape().dims2()?;
        let (hw, t) = (self.height * self.width, self.taps.len());
        if hw == 0 || rows % hw != 0 || (per_tap && width % t != 0) {
            candle_core::bail!("{name}: {:?} is not rows of {}x{} maps", l.dims(), self.height, self.width)
        }
        Ok((hw, if per_tap { width / t } else { width }))
    }
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "causal-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), s, l)?;
        let (hw, c) = self.plane(self.name(), l, false)?;
        let (t, rows) = (self.taps.len(), l.dims()[0]);
        let mut out = vec![0f32; rows * c * t];
        if !out.is_empty() {
            out.par_chunks_mut(hw * c * t).zip(x.par_chunks(hw * c)).for_each(|(dst, image)| {
                for (p, row) in dst.chunks_exact_mut(c * t).enumerate() {
                    for (&offset, d) in self.taps.iter().zip(row.chunks_exact_mut(c)) {
                        if let Some(q) = shifted(p / self.width, p % self.width, offset, self.height, self.width) {
                            d.copy_from_slice(&image[q * c..(q + 1) * c]);
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, c * t))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let fold = Fold(Unfold { taps: self.taps, height: self.height, width: self.width });
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&fold)?))
    }
}

/// The adjoint of [`Unfold`]: adds each entry of [N H W, T C] back onto the pixel it was
/// taken from.
struct Fold(Unfold);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "causal-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(self.name(), s, l)?;
        let u = &self.0;
        let (hw, c) = u.plane(self.name(), l, true)?;
        let (t, rows) = (u.taps.len(), l.dims()[0]);
        let mut out = vec![0f32; rows * c];
        if !out.is_empty() {
            out.par_chunks_mut(hw * c).zip(g.par_chunks(hw * c * t)).for_each(|(image, src)| {
                for (p, row) in src.chunks_exact(c * t).enumerate() {
                    for (&offset, v) in u.taps.iter().zip(row.chunks_exact(c)) {
                        if let Some(q) = shifted(p / u.width, p % u.width, offset, u.height, u.width) {
                            image[q * c..(q + 1) * c].iter_mut().zip(v).for_each(|(d, v)| *d += v);
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, c))))
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
        gate_row(o, f, g);
    }
}

/// out = tanh(f) * sigmoid(g).
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gate_row(out: &mut [f32], f: &[f32], g: &[f32]) {
    out.iter_mut().zip(f).zip(g).for_each(|((o, &f), &g)| *o = tanh(f) * sigmoid(g));
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

/// The gate as one fused op of `a` and its at most two conditioning tensors.
fn gate_fused(a: &Tensor, conds: &[&Tensor]) -> candle_core::Result<Tensor> {
    let a = a.contiguous()?;
    match conds {
        [] => a.apply_op1(Gate),
        [k] => a.apply_op2(&k.contiguous()?, Gate),
        [k1, k2] => a.apply_op3(&k1.contiguous()?, &k2.contiguous()?, Gate),
        _ => unreachable!("OpPath::gate passes at most two conditioning tensors"),
    }
}

/// The gate; see [`OpPath::gate`].
struct Gate;

/// One conditioning tensor [N, Q, 2C] of a gate: its data, Q, and the pixels P of an image.
#[derive(Clone, Copy)]
struct Cond<'a> {
    data: &'a [f32],
    q: usize,
    per_image: usize,
}

impl<'a> Cond<'a> {
    /// The conditioning of row `r` of the gate's input.
    fn row(&self, r: usize, two_c: usize) -> &'a [f32] {
        let at = if self.q == 1 { r / self.per_image } else { r };
        &self.data[at * two_c..(at + 1) * two_c]
    }
}

/// A gate's input [rows, 2C] and its conditioning.
struct GateInput<'a> {
    a: &'a [f32],
    rows: usize,
    c: usize,
    conds: Vec<Cond<'a>>,
}

impl<'a> GateInput<'a> {
    fn new(a: (&'a [f32], &Layout), conds: &[(&'a [f32], &Layout)]) -> candle_core::Result<Self> {
        let dims = a.1.dims();
        let two_c = dims.last().copied().unwrap_or(0);
        if two_c == 0 || two_c % 2 == 1 {
            candle_core::bail!("gate: the last dimension of {dims:?} must be even and non-zero")
        }
        let rows = a.0.len() / two_c;
        let conds = conds
            .iter()
            .map(|&(data, l)| {
                let (n, q, k) = l.shape().dims3()?;
                if k != two_c || n == 0 || rows % n != 0 || (q != 1 && q != rows / n) {
                    candle_core::bail!("gate: conditioning {:?} does not fit input {dims:?}", l.dims())
                }
                Ok(Cond { data, q, per_image: rows / n })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(GateInput { a: a.0, rows, c: two_c / 2, conds })
    }

    /// Writes row `r` of the gate's input, conditioning added, to `x` [2C].
    fn load(&self, r: usize, x: &mut [f32]) {
        let two_c = 2 * self.c;
        x.copy_from_slice(&self.a[r * two_c..(r + 1) * two_c]);
        for k in &self.conds {
            x.iter_mut().zip(k.row(r, two_c)).for_each(|(x, k)| *x += k);
        }
    }

    fn forward(&self) -> Vec<f32> {
        let c = self.c;
        let mut out = vec![0f32; self.rows * c];
        par_rows(&mut out, c, 2 * c, |r, o, x| {
            self.load(r, x);
            let (f, g) = x.split_at(c);
            gate_row(o, f, g);
        });
        out
    }

    /// The gradient in the input from that in the output `dy` [rows, C]:
    /// dy (1 - tanh^2 f) sigmoid g for f, dy tanh f sigmoid g (1 - sigmoid g) for g.
    fn backward(&self, dy: &[f32]) -> Vec<f32> {
        let c = self.c;
        let mut da = vec![0f32; self.rows * 2 * c];
        par_rows(&mut da, 2 * c, 0, |r, d, _| {
            self.load(r, d);
            let (df, dg) = d.split_at_mut(c);
            gate_grad_row(df, dg, &dy[r * c..(r + 1) * c]);
        });
        da
    }
}

/// Runs `f(row, out row, scratch)` over the rows of `out`, `width` floats each, on rayon's
/// threads, with a scratch buffer of `scratch` floats per task.
fn par_rows<F>(out: &mut [f32], width: usize, scratch: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    out.par_chunks_mut(ROWS_PER_TASK * width).enumerate().for_each(|(b, block)| {
        let mut x = vec![0f32; scratch];
        for (r, o) in block.chunks_exact_mut(width).enumerate() {
            f(b * ROWS_PER_TASK + r, o, &mut x)
        }
    });
}

/// The gate's output storage and shape: `dims` with the last halved.
fn gate_output(out: Vec<f32>, l: &Layout) -> (CpuStorage, Shape) {
    let mut dims = l.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last /= 2;
    }
    (CpuStorage::F32(out), Shape::from(dims))
}

/// The gradients of the gate's input and of each conditioning tensor that needs one, from
/// the output gradient. Computed on the host here rather than as a further op: candle's ops
/// take at most three inputs, and this needs up to four.
fn gate_grads(a: &Tensor, conds: &[&Tensor], grad: &Tensor) -> candle_core::Result<(Tensor, Vec<Option<Tensor>>)> {
    let grad = grad.contiguous()?;
    let tensors: Vec<&Tensor> = [a, &grad].into_iter().chain(conds.iter().copied()).collect();
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => slices.push((contiguous_f32(GRAD_NAME, s, layout)?, *layout)),
            _ => candle_core::bail!("{GRAD_NAME}: CPU tensors only"),
        }
    }
    let input = GateInput::new(slices[0], &slices[2..])?;
    if slices[1].0.len() != input.rows * input.c {
        candle_core::bail!("{GRAD_NAME}: gradient {:?} for input {:?}", grad.dims(), a.dims())
    }
    let da = input.backward(slices[1].0);
    let two_c = 2 * input.c;
    let dconds = input
        .conds
        .iter()
        .zip(conds)
        .map(|(k, t)| {
            if !t.track_op() {
                return Ok(None);
            }
            let dk = if k.q == 1 {
                // Summed over the pixels of each image.
                let mut sum = vec![0f32; k.data.len()];
                for (image, rows) in da.chunks(k.per_image * two_c).enumerate() {
                    let dst = &mut sum[image * two_c..(image + 1) * two_c];
                    for row in rows.chunks_exact(two_c) {
                        dst.iter_mut().zip(row).for_each(|(d, v)| *d += v);
                    }
                }
                sum
            } else {
                da.clone()
            };
            Ok(Some(Tensor::from_vec(dk, t.dims(), t.device())?))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    drop(guards);
    Ok((Tensor::from_vec(da, a.dims(), a.device())?, dconds))
}

const NAME: &str = "gate";
const GRAD_NAME: &str = "gate-grad";

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok(gate_output(GateInput::new((contiguous_f32(NAME, s, l)?, l), &[])?.forward(), l))
    }

    fn bwd(&self, a: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(gate_grads(a, &[], grad)?.0))
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
        let k = [(contiguous_f32(NAME, s2, l2)?, l2)];
        Ok(gate_output(GateInput::new((contiguous_f32(NAME, s1, l1)?, l1), &k)?.forward(), l1))
    }

    fn bwd(
        &self,
        a: &Tensor,
        k: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, mut dk) = gate_grads(a, &[k], grad)?;
        Ok((Some(da), dk.pop().flatten()))
    }
}

impl CustomOp3 for Gate {
    fn name(&self) -> &'static str {
        NAME
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
        let k = [(contiguous_f32(NAME, s2, l2)?, l2), (contiguous_f32(NAME, s3, l3)?, l3)];
        Ok(gate_output(GateInput::new((contiguous_f32(NAME, s1, l1)?, l1), &k)?.forward(), l1))
    }

    fn bwd(
        &self,
        a: &Tensor,
        k1: &Tensor,
        k2: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (da, dk) = gate_grads(a, &[k1, k2], grad)?;
        let mut dk = dk.into_iter();
        Ok((Some(da), dk.next().flatten(), dk.next().flatten()))
    }
}
