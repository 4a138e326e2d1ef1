//! The candle side of the fused layers: the `CustomOp`s of the forward pass, its backward
//! passes and the bias gradient, and the two rules that route work. The device rule: the
//! fused ops run on f32 tensors on the CPU, and everything else goes to candle's own
//! convolutions ([`forward`]). The kernel rule ([`kernel`]): which kernel computes a
//! convolution of a given geometry, the only place that chooses.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::im2col;
use super::layers::{ConvConfig, ConvTransposeConfig};
use super::plan::Geometry;
use super::winograd::{self, Winograd};
use crate::nn::fastmath;
use crate::nn::gemm::contiguous_f32;

/// A layer's forward pass on `x`: the fused op when `x` is an f32 tensor on the CPU, else
/// `reference`, candle's own convolution.
pub(super) fn forward(
    kind: Kind,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    reference: impl FnOnce() -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, ConvOp(kind))
    } else {
        reference()
    }
}

/// The least channels on either side for which Winograd's transforms pay for themselves;
/// thinner convolutions (a network's first and last) stay with im2col.
const MIN_WINOGRAD_CHANNELS: usize = 8;

/// The kernels a convolution's three passes can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// im2col/col2im and one matrix product: any geometry.
    Im2col,
    /// Winograd's F(4x4, 3x3): a quarter of the multiplications, 3x3 at stride 1 only.
    Winograd,
}

/// The kernel for `g`, in all three passes: Winograd where it applies and the channels are
/// wide enough, else im2col.
///
/// The 4x4 stride-2 layers of the VQ-VAE-2 stay with im2col. Run as 3x3 correlations over
/// the input's 2x2 phases (4C channels at half the size) on the Winograd kernel, they need
/// 9/16 of the multiplications, but measured on the VQ-VAE-2's shapes (2026-12-04, 2 cores)
/// they were no faster, and up to 2x slower for 3-channel inputs and in the weight gradient:
/// the 36 per-point products are too small beside im2col's one large product.
fn kernel(g: &Geometry) -> Kernel {
    if Winograd::supports(g) && g.c.min(g.m) >= MIN_WINOGRAD_CHANNELS {
        Kernel::Winograd
    } else {
        Kernel::Im2col
    }
}

/// Output side [N, M, Ho, Wo] from input side [N, C, H, W] (+ bias [M]), on the kernel for `g`.
fn correlate(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (n, threads) = (input.len() / (g.c * g.hw()), rayon::current_num_threads());
    match kernel(g) {
        Kernel::Im2col => im2col::correlate(g, im2col::plan(g, n, threads), input, weight, bias),
        Kernel::Winograd => {
            let winograd = Winograd::correlate(g, weight);
            winograd.run(winograd.plan(n, threads), input, bias)
        }
    }
}

/// Input side [N, C, H, W] from output side [N, M, Ho, Wo] (+ bias [C]): the adjoint of
/// [`correlate`], on the kernel for `g`.
fn scatter(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (n, threads) = (input.len() / (g.m * g.p()), rayon::current_num_threads());
    match kernel(g) {
        Kernel::Im2col => im2col::scatter(g, im2col::plan(g, n, threads), input, weight, bias),
        Kernel::Winograd => {
            let winograd = Winograd::scatter(g, weight);
            winograd.run(winograd.plan(n, threads), input, bias)
        }
    }
}

/// dW [M, C, kh, kw] from output side and input side, on the kernel for `g`.
fn weight_grad(g: &Geometry, output: &[f32], input: &[f32]) -> Vec<f32> {
    let (n, threads) = (output.len() / (g.m * g.p()), rayon::current_num_threads());
    match kernel(g) {
        Kernel::Im2col => im2col::weight_grad(g, im2col::plan(g, n, threads), output, input),
        Kernel::Winograd => winograd::weight_grad(g, winograd::weight_grad_plan(g, n, threads), output, input),
    }
}

/// Which layer, with its settings.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Conv(ConvConfig),
    Transposed(ConvTransposeConfig),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Conv(_) => "conv2d",
            Kind::Transposed(_) => "conv_transpose2d",
        }
    }

    /// The batch size and geometry for an input and a weight of these dimensions.
    pub(super) fn geometry(self, x: &[usize], w: &[usize]) -> candle_core::Result<(usize, Geometry)> {
        let name = self.name();
        let (&[n, xc, h, wd], &[wm, wc, kh, kw]) = (x, w) else {
            candle_core::bail!("{name}: expected an input [N, C, H, W] and a 4-d weight, got {x:?} and {w:?}")
        };
        let (stride, pad) = match self {
            Kind::Conv(c) => (c.stride, c.padding),
            Kind::Transposed(c) => (c.stride, c.padding),
        };
        if stride == 0 {
            candle_core::bail!("{name}: stride must be at least 1")
        }
        if [xc, h, wd, wm, wc, kh, kw].contains(&0) {
            candle_core::bail!("{name}: input {x:?} and weight {w:?} must not be empty (only N may be 0)")
        }
        let g = match self {
            Kind::Conv(_) => {
                if xc != wc {
                    candle_core::bail!("{name}: input {x:?} has {xc} channels, weight {w:?} expects {wc}")
                }
                if h + 2 * pad < kh || wd + 2 * pad < kw {
                    candle_core::bail!("{name}: kernel {kh}x{kw} is larger than the padded input {x:?} (padding {pad})")
                }
                let (ho, wo) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1);
                Geometry { c: xc, h, w: wd, m: wm, ho, wo, kh, kw, stride, pad }
            }
            Kind::Transposed(c) => {
                if xc != wm {
                    candle_core::bail!("{name}: input {x:?} has {xc} channels, weight {w:?} expects {wm}")
                }
                if c.output_padding >= stride {
                    candle_core::bail!(
                        "{name}: output_padding {} must be smaller than stride {stride}",
                        c.output_padding
                    )
                }
                // The input side of the underlying convolution is this layer's output.
                let full = |len: usize, k: usize| (len - 1) * stride + k + c.output_padding;
                let (hf, wf) = (full(h, kh), full(wd, kw));
                if hf <= 2 * pad || wf <= 2 * pad {
                    candle_core::bail!("{name}: padding {pad} leaves no output for input {x:?} and weight {w:?}")
                }
                Geometry { c: wc, h: hf - 2 * pad, w: wf - 2 * pad, m: xc, ho: h, wo: wd, kh, kw, stride, pad }
            }
        };
        Ok((n, g))
    }
}

/// The fused forward pass, inputs (x, weight, bias).
struct ConvOp(Kind);

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w, b) = (contiguous_f32(name, xs, xl)?, contiguous_f32(name, ws, wl)?, contiguous_f32(name, bs, bl)?);
        let (n, g) = self.0.geometry(xl.dims(), wl.dims())?;
        let (y, dims) = match self.0 {
            Kind::Conv(_) => (g.m, g.output_dims(n)),
            Kind::Transposed(_) => (g.c, g.input_dims(n)),
        };
        if bl.dims() != [y] {
            candle_core::bail!("{name}: bias has shape {:?}, expected [{y}] for weight {:?}", bl.dims(), wl.dims())
        }
        let out = match self.0 {
            Kind::Conv(_) => correlate(&g, x, w, Some(b)),
            Kind::Transposed(_) => scatter(&g, x, w, Some(b)),
        };
        Ok((CpuStorage::F32(out), Shape::from(dims.to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, g) = self.0.geometry(x.dims(), w.dims())?;
        let run = |pass, a: &Tensor, b: &Tensor| a.apply_op2_no_bwd(b, &Backward { pass, g });
        // The convolution's output side is dy for conv2d and x for the transposed layer.
        let (grad_x, grad_w) = match self.0 {
            Kind::Conv(_) => (
                x.track_op().then(|| run(Pass::Scatter, &grad, w)).transpose()?,
                w.track_op().then(|| run(Pass::WeightGrad, &grad, x)).transpose()?,
            ),
            Kind::Transposed(_) => (
                x.track_op().then(|| run(Pass::Correlate, &grad, w)).transpose()?,
                w.track_op().then(|| run(Pass::WeightGrad, x, &grad)).transpose()?,
            ),
        };
        let grad_b = b.track_op().then(|| grad.apply_op1_no_bwd(&ChannelSum)).transpose()?;
        Ok((grad_x, grad_w, grad_b))
    }
}

/// The matrix form a backward op computes.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// (input side [N, C, H, W], weight) -> output side [N, M, Ho, Wo].
    Correlate,
    /// (output side, weight) -> input side.
    Scatter,
    /// (output side, input side) -> weight [M, C, kh, kw].
    WeightGrad,
}

/// One matrix form of a known geometry, for the backward passes.
struct Backward {
    pass: Pass,
    g: Geometry,
}

impl CustomOp2 for Backward {
    fn name(&self) -> &'static str {
        "conv2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (contiguous_f32(self.name(), s1, l1)?, contiguous_f32(self.name(), s2, l2)?);
        let g = &self.g;
        let n = l1.dims().first().copied().unwrap_or(0);
        let (want, out_dims) = match self.pass {
            Pass::Correlate => ([g.input_dims(n), g.weight_dims()], g.output_dims(n)),
            Pass::Scatter => ([g.output_dims(n), g.weight_dims()], g.input_dims(n)),
            Pass::WeightGrad => ([g.output_dims(n), g.input_dims(n)], g.weight_dims()),
        };
        if l1.dims() != want[0] || l2.dims() != want[1] {
            candle_core::bail!(
                "conv2d-grad: got {:?} and {:?}, expected {:?} and {:?}",
                l1.dims(),
                l2.dims(),
                want[0],
                want[1]
            )
        }
        let out = match self.pass {
            Pass::Correlate => correlate(g, a, b, None),
            Pass::Scatter => scatter(g, a, b, None),
            Pass::WeightGrad => weight_grad(g, a, b),
        };
        Ok((CpuStorage::F32(out), Shape::from(out_dims.to_vec())))
    }
}

/// Sums [N, M, H, W] over all but M: the bias gradient.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(self.name(), s, l)?;
        let (_, m, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; m];
        for image in g.chunks_exact((m * h * w).max(1)) {
            for (o, plane) in out.iter_mut().zip(image.chunks_exact((h * w).max(1))) {
                *o += fastmath::sum(plane);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::testing::{normal, rng};

    #[test]
    fn winograd_takes_wide_3x3_convolutions_at_stride_1_and_im2col_the_rest() {
        let g = |c, m, k, stride, pad| Geometry { c, h: 8, w: 8, m, ho: 8, wo: 8, kh: k, kw: k, stride, pad };
        assert_eq!(kernel(&g(8, 8, 3, 1, 1)), Kernel::Winograd);
        assert_eq!(kernel(&g(64, 128, 3, 1, 2)), Kernel::Winograd);
        assert_eq!(kernel(&g(7, 128, 3, 1, 1)), Kernel::Im2col);
        assert_eq!(kernel(&g(64, 1, 3, 1, 1)), Kernel::Im2col);
        assert_eq!(kernel(&g(64, 64, 3, 2, 1)), Kernel::Im2col);
        assert_eq!(kernel(&g(64, 64, 3, 1, 3)), Kernel::Im2col);
        assert_eq!(kernel(&g(64, 64, 4, 1, 1)), Kernel::Im2col);
        assert_eq!(kernel(&g(64, 128, 4, 2, 1)), Kernel::Im2col);
    }

    /// Every pass of both kernels gives the same bits on 1, 2 and 3 threads: batches of 12
    /// images in 4 blocks, which 3 threads share unevenly.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let mut r = rng(5);
        for (config, x, w) in [
            (ConvConfig { stride: 2, padding: 1 }, [12, 3, 10, 9], [6, 3, 4, 4]),
            (ConvConfig { stride: 1, padding: 1 }, [12, 12, 8, 7], [10, 12, 3, 3]),
            (ConvConfig { stride: 2, padding: 1 }, [12, 4, 10, 8], [8, 4, 4, 4]),
        ] {
            let (n, g) = Kind::Conv(config).geometry(&x, &w).unwrap();
            let (input, weight) = (normal(&mut r, n * g.c * g.hw()), normal(&mut r, g.m * g.k()));
            let (output, bias) = (normal(&mut r, n * g.m * g.p()), normal(&mut r, g.m));
            let on = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    [
                        correlate(&g, &input, &weight, Some(&bias)),
                        scatter(&g, &output, &weight, None),
                        weight_grad(&g, &output, &input),
                    ]
                })
            };
            let one = on(1);
            assert_eq!(one, on(2), "{g:?}");
            assert_eq!(one, on(3), "{g:?}");
        }
    }
}
