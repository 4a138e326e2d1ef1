//! `F.max_pool2d(x, kernel_size, stride)` (no padding, floor mode) on NCHW tensors, as
//! PyTorch computes it: each window's maximum, NaN winning as in PyTorch, and in the backward
//! pass each output's gradient sent to the first maximum of its window (row-major order), so
//! overlapping windows (Inception's 3x3 stride-2 and stride-1 pools) have a gradient too.
//!
//! Device rule: on the CPU, for f32, one pass over the planes on rayon's threads; elsewhere
//! candle's `max_pool2d_with_stride`. Two reasons not to use candle's on the CPU: its kernel
//! runs on one thread, element by element (8.6 % of a clf-conv feature pass,
//! `img-classify --features` on 10,000 digits, went to the 2x2 pools of its three blocks), and
//! its backward pass (candle-core 0.11.1, `backprop.rs`, `Op::MaxPool2D`) multiplies each
//! gradient by the window's mean of the "is the maximum" mask where it means to divide by
//! the count of maxima: with one maximum a 2x2 pool passes back a quarter of the gradient
//! (Adam, which divides by the gradient's running scale, hid it in clf-conv's training),
//! and overlapping windows have no backward pass at all. Off the CPU the values are
//! candle's and the gradient that of a composed mask (non-overlapping windows only).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::contiguous_f32;

/// The maxima of `x` [N, C, H, W] over `kernel` x `kernel` windows every `stride` pixels:
/// [N, C, (H - kernel) / stride + 1, (W - kernel) / stride + 1].
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return max_pool2d_composed(x, kernel, stride);
    }
    x.contiguous()?.apply_op1(MaxPool { kernel, stride })
}

/// [`max_pool2d`] of candle ops, for other devices: candle's pool for the values and, where
/// windows do not overlap, a term of value 0 whose gradient is the maximum's mask (every
/// maximum of a window with several gets the whole gradient), in place of candle's.
fn max_pool2d_composed(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    let y = x.max_pool2d_with_stride(kernel, stride)?;
    if kernel != stride || !x.track_op() {
        return Ok(y);
    }
    // The part of x the windows cover, so that every shape divides (candle's upsampling
    // and average-pool gradient assume it).
    let y = y.detach();
    let x = x.narrow(2, 0, y.dim(2)? * kernel)?.narrow(3, 0, y.dim(3)? * kernel)?;
    let mask = x.eq(&y.upsample_nearest2d(x.dim(2)?, x.dim(3)?)?)?.to_dtype(x.dtype())?;
    let picked = (x * mask)?.avg_pool2d(kernel)?.affine((kernel * kernel) as f64, 0.0)?;
    y + (&picked - picked.detach())?
}

#[derive(Debug, Clone, Copy)]
struct MaxPool {
    kernel: usize,
    stride: usize,
}

/// One plane's sizes, before and after the pool.
#[derive(Debug, Clone, Copy)]
struct Windows {
    kernel: usize,
    stride: usize,
    w: usize,
    hw: usize,
    oh: usize,
    ow: usize,
}

impl Windows {
    fn of(name: &str, op: MaxPool, dims: &[usize]) -> candle_core::Result<(Self, Shape)> {
        let &[n, c, h, w] = dims else { candle_core::bail!("{name}: expected an input [N, C, H, W], got {dims:?}") };
        let MaxPool { kernel, stride } = op;
        if kernel == 0 || stride == 0 || h < kernel || w < kernel {
            candle_core::bail!("{name}: a {kernel}x{kernel} pool every {stride} pixels does not fit {h}x{w} maps")
        }
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        Ok((Windows { kernel, stride, w, hw: h * w, oh, ow }, Shape::from((n, c, oh, ow))))
    }

    /// Each window's maximum of `plane` into `out` [oh * ow], a row of windows at a time and
    /// without branches (the first maximum's index, [`Windows::argmax`], only matters to the
    /// gradient).
    fn maxima(&self, plane: &[f32], out: &mut [f32]) {
        let max = |o: f32, v: f32| if v > o || v.is_nan() { v } else { o };
        for (oy, out) in out.chunks_mut(self.ow).enumerate() {
            let top = oy * self.stride * self.w;
            if (self.kernel, self.stride) == (2, 2) {
                // The common case, in pairs the compiler vectorises.
                let (a, b) = (&plane[top..top + self.w], &plane[top + self.w..top + 2 * self.w]);
                for (o, (a, b)) in out.iter_mut().zip(a.chunks_exact(2).zip(b.chunks_exact(2))) {
                    *o = max(max(max(a[0], a[1]), b[0]), b[1]);
                }
                continue;
            }
            for (ox, o) in out.iter_mut().enumerate() {
                *o = plane[top + ox * self.stride];
            }
            for ky in 0..self.kernel {
                let row = &plane[top + ky * self.w..top + (ky + 1) * self.w];
                for kx in 0..self.kernel {
                    for (o, &v) in out.iter_mut().zip(row[kx..].iter().step_by(self.stride)) {
                        *o = max(*o, v);
                    }
                }
            }
        }
    }

    /// The index in `plane` of the first maximum of output (oy, ox)'s window.
    fn argmax(&self, plane: &[f32], oy: usize, ox: usize) -> usize {
        let first = oy * self.stride * self.w + ox * self.stride;
        let mut best = first;
        for ky in 0..self.kernel {
            let row = first + ky * self.w;
            for i in row..row + self.kernel {
                if plane[i] > plane[best] || (plane[i].is_nan() && !plane[best].is_nan()) {
                    best = i;
                }
            }
        }
        best
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let (d, shape) = Windows::of(self.name(), *self, xl.dims())?;
        let mut y = vec![0f32; shape.elem_count()];
        y.par_chunks_mut((d.oh * d.ow).max(1)).zip(x.par_chunks(d.hw.max(1))).for_each(|(y, plane)| d.maxima(plane, y));
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolGrad { forward: *self })?))
    }
}

/// The backward pass of a [`MaxPool`]: (x, dy) -> dx.
struct MaxPoolGrad {
    forward: MaxPool,
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, dy) = (contiguous_f32(name, xs, xl)?, contiguous_f32(name, gs, gl)?);
        let (d, shape) = Windows::of(name, self.forward, xl.dims())?;
        if gl.dims() != shape.dims() {
            candle_core::bail!("{name}: gradient {:?} is not the pool's output {:?}", gl.dims(), shape.dims())
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(d.hw.max(1))
            .zip(x.par_chunks(d.hw.max(1)).zip(dy.par_chunks((d.oh * d.ow).max(1))))
            .for_each(|(dx, (plane, dy))| {
                for (oy, row) in dy.chunks(d.ow).enumerate() {
                    for (ox, &g) in row.iter().enumerate() {
                        dx[d.argmax(plane, oy, ox)] += g;
                    }
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Distinct values (a shuffled ramp), so every window has one maximum.
    fn distinct(dims: (usize, usize, usize, usize)) -> Tensor {
        let n = dims.0 * dims.1 * dims.2 * dims.3;
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 - n as f32 / 2.0).collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    type Pool = fn(&Tensor, usize, usize) -> candle_core::Result<Tensor>;

    /// The gradient of Σ r · pool(x) against central differences, exact here because a step
    /// of 0.25 moves no maximum among values a whole unit apart and the loss is linear
    /// between them.
    fn check_gradient(pool: Pool, dims: (usize, usize, usize, usize), kernel: usize, stride: usize) {
        let x = Var::from_tensor(&distinct(dims)).unwrap();
        let y = pool(&x, kernel, stride).unwrap();
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(&y), values(&x.max_pool2d_with_stride(kernel, stride).unwrap()));
        let r = distinct(y.dims4().unwrap());
        let loss = |x: &Tensor| {
            (pool(x, kernel, stride).unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
        };
        let grad = (y * &r).unwrap().sum_all().unwrap().backward().unwrap().remove(&x).unwrap();
        let grad = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..base.len() {
            let nudged = |step: f32| {
                let mut v = base.clone();
                v[i] += step;
                loss(&Tensor::from_vec(v, dims, &Device::Cpu).unwrap())
            };
            assert_eq!(grad[i], (nudged(0.25) - nudged(-0.25)) / 0.5, "{dims:?} k{kernel} s{stride}, element {i}");
        }
        assert!(grad.iter().any(|&g| g != 0.0));
    }

    /// Values as candle's pool computes them; gradients by finite differences (candle's
    /// backward pass scales them by 1 / kernel^2 and has none for overlapping windows), on
    /// both paths (the composed one is the other devices').
    #[test]
    fn matches_candle_in_value_and_finite_differences_in_gradient() {
        for (dims, kernel, stride) in
            [((2, 3, 8, 8), 2, 2), ((1, 2, 7, 9), 2, 2), ((2, 2, 9, 11), 3, 2), ((1, 2, 6, 7), 3, 1)]
        {
            let x = distinct(dims);
            let ours = max_pool2d(&x, kernel, stride).unwrap();
            let theirs = x.max_pool2d_with_stride(kernel, stride).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{dims:?} k{kernel} s{stride}");
            assert_eq!(
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            check_gradient(max_pool2d, dims, kernel, stride);
            if kernel == stride {
                check_gradient(max_pool2d_composed, dims, kernel, stride);
            }
        }
    }

    #[test]
    fn ties_go_to_the_first_maximum_and_nan_wins_as_in_pytorch() {
        let x = Var::from_tensor(
            &Tensor::new(&[[[[1f32, 1.0], [0.0, 1.0]]], [[[2.0, f32::NAN], [3.0, 0.0]]]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = max_pool2d(&x, 2, 2).unwrap();
        let values = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values[0], 1.0);
        assert!(values[1].is_nan());
        let grad = y.sum_all().unwrap().backward().unwrap().remove(&x).unwrap();
        assert_eq!(grad.get(0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_window_larger_than_the_map_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, 3, 1).unwrap_err().to_string().contains("does not fit 2x5"));
    }
}
