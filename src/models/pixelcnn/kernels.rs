//! The composed path's gate and causal unfold as single ops with a CUDA kernel each
//! (src/cuda/kernels.cu), so a gated layer on the GPU is an unfold, a matrix product and a gate
//! forward, and the same three backward, instead of a dozen narrow, pad, cat, tanh, sigmoid
//! and mul kernels each way. Each op's `cpu_fwd` is the reference loop its kernel transliterates;
//! on the CPU the fused layer op runs instead ([`super::layer`]), so these loops serve the tests
//! that hold the ops to the composed candle ops (`kernel_ops_match_the_composed_ops`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::ops::{gate_grad_row, gate_rows, shifted};
#[cfg(feature = "cuda")]
use crate::cuda::kernels as cuda;
use crate::nn::gemm::contiguous_f32;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

/// The last dimension of `l`, and the rows before it.
fn rows_of(l: &Layout) -> (usize, usize) {
    let last = l.dims().last().copied().unwrap_or(0);
    (l.shape().elem_count() / last.max(1), last)
}

/// The shape of `l` with its last dimension replaced by `last`.
fn with_last(l: &Layout, last: usize) -> Shape {
    let mut dims = l.dims().to_vec();
    if let Some(d) = dims.last_mut() {
        *d = last;
    }
    Shape::from(dims)
}

/// gate(a) = tanh(f) * sigmoid(g) over the last dimension, [..., 2C] -> [..., C].
pub(super) struct Gate;

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(self.name(), s, l)?;
        let (rows, two_c) = rows_of(l);
        let mut out = vec![0f32; rows * two_c / 2];
        gate_rows(a, &mut out, two_c / 2);
        Ok((CpuStorage::F32(out), with_last(l, two_c / 2)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, two_c) = rows_of(l);
        let (a, c) = (cuda::view(s, l, self.name())?, two_c / 2);
        let dev = &s.device;
        // SAFETY: every element is written by the kernel.
        let mut out = unsafe { dev.alloc::<f32>(rows * c)? };
        let f = cuda::function(dev, "gate_fwd")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&a).arg(&mut out).arg(&rows).arg(&c);
        cuda::launch(b, rows * c)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), with_last(l, c)))
    }

    fn bwd(&self, a: &Tensor, _: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(a.apply_op2_no_bwd(&dy.contiguous()?, &GateGrad)?))
    }
}

/// The gate's input gradient: (a [..., 2C], dy [..., C]) -> da [..., 2C].
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
        let (_, two_c) = rows_of(l1);
        let c = two_c / 2;
        let mut da = a.to_vec();
        for (row, dy) in da.chunks_exact_mut(two_c).zip(dy.chunks_exact(c)) {
            let (f, g) = row.split_at_mut(c);
            gate_grad_row(f, g, dy);
        }
        Ok((CpuStorage::F32(da), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, two_c) = rows_of(l1);
        let c = two_c / 2;
        let (a, dy) = (cuda::view(s1, l1, self.name())?, cuda::view(s2, l2, self.name())?);
        let dev = &s1.device;
        // SAFETY: every element is written by the kernel.
        let mut da = unsafe { dev.alloc::<f32>(rows * two_c)? };
        let f = cuda::function(dev, "gate_bwd")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&a).arg(&dy).arg(&mut da).arg(&rows).arg(&c);
        cuda::launch(b, rows * c)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(da, dev.clone()), l1.shape().clone()))
    }
}

/// im2col of maps [N H W, C] of `height` x `width` pixels for stride-1 `taps`:
/// [N H W, T C], as [`super::ops::causal_unfold`] composes it.
pub(super) struct Unfold {
    pub taps: &'static [(isize, isize)],
    pub height: usize,
    pub width: usize,
}

impl Unfold {
    /// The taps as the kernels take them: (row, column) pairs, flat.
    #[cfg(feature = "cuda")]
    fn flat_taps(&self) -> Vec<i64> {
        self.taps.iter().flat_map(|&(di, dj)| [di as i64, dj as i64]).collect()
    }
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "causal-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), s, l)?;
        let (pixels, c) = rows_of(l);
        let (h, w, t) = (self.height, self.width, self.taps.len());
        let mut u = vec![0f32; pixels * t * c];
        for (p, row) in u.chunks_exact_mut(t * c).enumerate() {
            let (map, q) = (p / (h * w), p % (h * w));
            for (tap, out) in self.taps.iter().zip(row.chunks_exact_mut(c)) {
                if let Some(src) = shifted(q / w, q % w, *tap, h, w) {
                    out.copy_from_slice(&x[(map * h * w + src) * c..][..c]);
                }
            }
        }
        Ok((CpuStorage::F32(u), Shape::from((pixels, t * c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (pixels, c) = rows_of(l);
        let (h, w, t) = (self.height, self.width, self.taps.len());
        let x = cuda::view(s, l, self.name())?;
        let dev = &s.device;
        let taps = dev.clone_htod(&self.flat_taps())?;
        // SAFETY: every element is written by the kernel.
        let mut u = unsafe { dev.alloc::<f32>(pixels * t * c)? };
        let f = cuda::function(dev, "causal_unfold")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut u).arg(&taps).arg(&pixels).arg(&c).arg(&t).arg(&h).arg(&w);
        cuda::launch(b, pixels * t * c)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(u, dev.clone()), Shape::from((pixels, t * c))))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, du: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let fold = Fold(Unfold { taps: self.taps, height: self.height, width: self.width });
        Ok(Some(du.contiguous()?.apply_op1_no_bwd(&fold)?))
    }
}

/// The adjoint of [`Unfold`]: [N H W, T C] -> [N H W, C], each input pixel summing the
/// entries that read it.
struct Fold(Unfold);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "causal-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let du = contiguous_f32(self.name(), s, l)?;
        let Unfold { taps, height: h, width: w } = self.0;
        let (pixels, tc) = rows_of(l);
        let c = tc / taps.len();
        let mut dx = vec![0f32; pixels * c];
        for (p, row) in du.chunks_exact(tc).enumerate() {
            let (map, q) = (p / (h * w), p % (h * w));
            for (tap, d) in taps.iter().zip(row.chunks_exact(c)) {
                if let Some(src) = shifted(q / w, q % w, *tap, h, w) {
                    dx[(map * h * w + src) * c..][..c].iter_mut().zip(d).for_each(|(x, d)| *x += d);
                }
            }
        }
        Ok((CpuStorage::F32(dx), Shape::from((pixels, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let Unfold { taps, height: h, width: w } = self.0;
        let (pixels, tc) = rows_of(l);
        let (t, c) = (taps.len(), tc / taps.len());
        let du = cuda::view(s, l, self.name())?;
        let dev = &s.device;
        let taps = dev.clone_htod(&self.0.flat_taps())?;
        // SAFETY: every element is written by the kernel.
        let mut dx = unsafe { dev.alloc::<f32>(pixels * c)? };
        let f = cuda::function(dev, "causal_fold")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&du).arg(&mut dx).arg(&taps).arg(&pixels).arg(&c).arg(&t).arg(&h).arg(&w);
        cuda::launch(b, pixels * c)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(dx, dev.clone()), Shape::from((pixels, c))))
    }
}
