//! What the fused normalisation ops (GroupNorm, BatchNorm) share: the centred sums their
//! statistics and gradients are made of, and the unpacking of their backward pass's one
//! output into the three gradients.

use candle_core::{CpuStorage, CustomOp3, Layout, Tensor};

use super::gemm::contiguous_f32;

/// Σ (x - mean)^2, with eight accumulators so that it vectorises.
pub(super) fn centred_squares(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

/// Σ a (x - mean), with eight accumulators so that it vectorises.
pub(super) fn dot_centred(a: &[f32], x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, xc) = (a.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(xc.remainder()).map(|(a, x)| a * (x - mean)).sum();
    for (a, x) in ac.zip(xc) {
        for i in 0..8 {
            acc[i] += a[i] * (x[i] - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The gradients of (x, gamma, beta) from `grad_op`, which takes (x, dy, [gamma, beta]) (the
/// parameters side by side: a CustomOp takes at most three inputs) and returns
/// [dx (numel), dgamma (C), dbeta (C)] in one vector, as a CustomOp has one output.
pub(super) fn affine_grads(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    grad_op: &impl CustomOp3,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let c = w.dim(0)?;
    let params = Tensor::cat(&[w, b], 0)?;
    let packed = x.apply_op3_no_bwd(&grad.contiguous()?, &params, grad_op)?;
    let numel = x.elem_count();
    let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
    let (dw, db) = (packed.narrow(0, numel, c)?, packed.narrow(0, numel + c, c)?);
    Ok((Some(dx), w.track_op().then_some(dw), b.track_op().then_some(db)))
}

/// The inputs of a backward op for [`affine_grads`] as slices: x, dy (of x's shape) and the
/// parameters side by side.
pub(super) fn grad_inputs<'a>(
    name: &str,
    (xs, xl): (&'a CpuStorage, &Layout),
    (gs, gl): (&'a CpuStorage, &Layout),
    (ps, pl): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    if gl.dims() != xl.dims() {
        candle_core::bail!("{name}: gradient {:?} differs from input {:?}", gl.dims(), xl.dims())
    }
    Ok((contiguous_f32(name, xs, xl)?, contiguous_f32(name, gs, gl)?, contiguous_f32(name, ps, pl)?))
}
