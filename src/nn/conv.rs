//! 2-D convolution and transposed convolution, `nn.Conv2d` and `nn.ConvTranspose2d`
//! (groups 1, dilation 1), on NCHW tensors.
//!
//! On the CPU both run as fused f32 ops whose forward and backward passes are large matrix
//! products around the gemm kernel (im2col / col2im). candle's own CPU convolutions reach
//! 10-20 % of this machine's peak: its transposed convolution is a plain loop, and conv2d's
//! backward pass goes through it (docs/candle.md). Other devices use candle's ops, which
//! are also the reference the tests compare against.
//!
//! One geometry serves both layers. A convolution maps its input side (C channels, H x W) to
//! its output side (M channels, Ho x Wo) through a weight [M, C, kh, kw]. With K = C kh kw
//! and P = Ho Wo, it has three matrix forms:
//! - correlate: out [M, P] = W [M, K] im2col(in) [K, P];
//! - scatter, the adjoint of correlate: in = col2im(W^T [K, M] out [M, P]);
//! - weight gradient: dW [M, K] = out [M, P] im2col(in)^T.
//!
//! Conv2d's forward pass is correlate and its input gradient scatter. A transposed
//! convolution is the same convolution run backwards: its weight [in, out, kh, kw] is the
//! [M, C, kh, kw] above, its input the output side and its output the input side, so its
//! forward pass is scatter and its input gradient correlate.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath;
use super::gemm::{contiguous_f32, matmul, matmul_serial, Mat};

mod winograd;
use winograd::Winograd;

/// Stride and padding of a [`Conv2d`]; the default is PyTorch's (1, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig {
    pub stride: usize,
    pub padding: usize,
}

impl Default for ConvConfig {
    fn default() -> Self {
        ConvConfig { stride: 1, padding: 0 }
    }
}

/// Stride, padding and output padding of a [`ConvTranspose2d`]; the default is PyTorch's
/// (1, 0, 0). The output padding adds rows and columns at the bottom and right, to pick one
/// of the output sizes that a strided convolution maps to the same input size; it must be
/// smaller than the stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTransposeConfig {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
}

impl Default for ConvTransposeConfig {
    fn default() -> Self {
        ConvTransposeConfig { stride: 1, padding: 0, output_padding: 0 }
    }
}

/// `nn.Conv2d`: weight [out, in, kh, kw], bias [out].
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    config: ConvConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Tensor, config: ConvConfig) -> Self {
        Conv2d { weight, bias, config }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn config(&self) -> ConvConfig {
        self.config
    }

    /// candle's convolution plus a broadcast bias, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ConvConfig { stride, padding } = self.config;
        let y = x.conv2d(&self.weight, padding, stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

impl Module for Conv2d {
    /// `x` [N, in, H, W] -> [N, out, (H + 2 padding - kh) / stride + 1, likewise for W].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let (w, b) = (self.weight.contiguous()?, self.bias.contiguous()?);
            x.contiguous()?.apply_op3(&w, &b, ConvOp(Kind::Conv(self.config)))
        } else {
            self.forward_reference(x)
        }
    }
}

/// `nn.ConvTranspose2d`: weight [in, out, kh, kw], bias [out].
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    config: ConvTransposeConfig,
}

impl ConvTranspose2d {
    pub fn new(weight: Tensor, bias: Tensor, config: ConvTransposeConfig) -> Self {
        ConvTranspose2d { weight, bias, config }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn config(&self) -> ConvTransposeConfig {
        self.config
    }

    /// candle's transposed convolution plus a broadcast bias, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ConvTransposeConfig { stride, padding, output_padding } = self.config;
        let y = x.conv_transpose2d(&self.weight, padding, output_padding, stride, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

impl Module for ConvTranspose2d {
    /// `x` [N, in, H, W] -> [N, out, (H - 1) stride - 2 padding + kh + output_padding, likewise
    /// for W].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let (w, b) = (self.weight.contiguous()?, self.bias.contiguous()?);
            x.contiguous()?.apply_op3(&w, &b, ConvOp(Kind::Transposed(self.config)))
        } else {
            self.forward_reference(x)
        }
    }
}

/// The most floats one block's im2col matrix may take (512 KiB, a core's L2 cache here), unless
/// one image alone needs more: a block is as many images as fit, and one product covers them
/// all. Measured on the benchmark's shapes (batches of 8x8 to 32x32 images, 2 threads),
/// blocks of 2-4 MiB or more ran the three products 10-40 % slower, as the matrix falls out
/// of cache between im2col and the product; wider products gained nothing.
const COLS_BUDGET: usize = 1 << 17;

/// The shapes of one convolution, in the direction of the convolution (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Channels, height and width of the input side.
    c: usize,
    h: usize,
    w: usize,
    /// Channels, height and width of the output side.
    m: usize,
    ho: usize,
    wo: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

/// How a batch is cut into blocks of images and spread over rayon's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Images per block.
    block: usize,
    /// Whether blocks run in parallel, each on one thread (else in turn, each spread over all
    /// threads).
    across: bool,
}

impl Plan {
    /// Blocks of as many images as fit `budget` floats of working memory at `per_image`
    /// each, at least one, for a batch of `n` on `threads` threads. With at least one image
    /// per thread, each thread takes whole blocks and runs their products alone, with no
    /// synchronisation within a block: on 2 cores that was as fast as splitting every product
    /// over both threads, or up to 40 % faster (measured on the benchmark's shapes). With
    /// fewer images, blocks run in turn and their work is split instead.
    fn fitting(n: usize, threads: usize, per_image: usize, budget: usize) -> Plan {
        let across = threads > 1 && n >= threads;
        let per_thread = if across { n.div_ceil(threads) } else { n.max(1) };
        Plan { block: (budget / per_image.max(1)).clamp(1, per_thread), across }
    }
}

impl Geometry {
    /// Rows of the im2col matrix, C kh kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Pixels of one output-side plane, Ho Wo.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Pixels of one input-side plane, H W.
    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// The im2col blocks for a batch of `n` on `threads` threads.
    fn plan(&self, n: usize, threads: usize) -> Plan {
        Plan::fitting(n, threads, self.k() * self.p(), COLS_BUDGET)
    }

    fn weight_dims(&self) -> [usize; 4] {
        [self.m, self.c, self.kh, self.kw]
    }

    fn input_dims(&self, n: usize) -> [usize; 4] {
        [n, self.c, self.h, self.w]
    }

    fn output_dims(&self, n: usize) -> [usize; 4] {
        [n, self.m, self.ho, self.wo]
    }
}

/// Which layer, with its settings.
#[derive(Debug, Clone, Copy)]
enum Kind {
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
    fn geometry(self, x: &[usize], w: &[usize]) -> candle_core::Result<(usize, Geometry)> {
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
        let plan = g.plan(n, rayon::current_num_threads());
        let (y, dims) = match self.0 {
            Kind::Conv(_) => (g.m, g.output_dims(n)),
            Kind::Transposed(_) => (g.c, g.input_dims(n)),
        };
        if bl.dims() != [y] {
            candle_core::bail!("{name}: bias has shape {:?}, expected [{y}] for weight {:?}", bl.dims(), wl.dims())
        }
        let out = match self.0 {
            Kind::Conv(_) => correlate(&g, plan, x, w, Some(b)),
            Kind::Transposed(_) => scatter(&g, plan, x, w, Some(b)),
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
        let plan = g.plan(n, rayon::current_num_threads());
        let out = match self.pass {
            Pass::Correlate => correlate(g, plan, a, b, None),
            Pass::Scatter => scatter(g, plan, a, b, None),
            Pass::WeightGrad => weight_grad(g, plan, a, b),
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

/// Buffers one thread reuses from block to block.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    matrix: Vec<f32>,
}

/// Runs `f(scratch, dst, src, parallel)` on each block of images: `dst` and `src` hold
/// `dst_image` and `src_image` floats per image. Blocks run on separate threads when
/// `plan.across`, else in turn with `parallel` set, for `f` to split its own work.
fn for_blocks<S, F>(plan: Plan, dst: &mut [f32], dst_image: usize, src: &[f32], src_image: usize, f: F)
where
    S: Default + Send,
    F: Fn(&mut S, &mut [f32], &[f32], bool) + Sync,
{
    let (dst_block, src_block) = (plan.block * dst_image, plan.block * src_image);
    if plan.across {
        dst.par_chunks_mut(dst_block)
            .zip(src.par_chunks(src_block))
            .for_each_init(S::default, |s, (d, x)| f(s, d, x, false));
    } else {
        let mut s = S::default();
        for (d, x) in dst.chunks_mut(dst_block).zip(src.chunks(src_block)) {
            f(&mut s, d, x, true);
        }
    }
}

/// `dst` = A B on this thread, or split over rayon's threads when `parallel`.
fn product(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    if parallel {
        matmul(dst, a, b, accumulate)
    } else {
        matmul_serial(dst, a, b, accumulate)
    }
}

/// A buffer of `len` floats, reused: its contents are left for the caller to overwrite.
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// Output side [N, M, Ho, Wo] = W [M, K] im2col(input side [N, C, H, W]) (+ bias [M]).
fn correlate(g: &Geometry, plan: Plan, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if let Some(winograd) = Winograd::correlate(g, weight) {
        return winograd.run(plan.across, input, bias);
    }
    let (k, p, m) = (g.k(), g.p(), g.m);
    let n = input.len() / (g.c * g.hw());
    let mut out = vec![0f32; n * m * p];
    for_blocks(plan, &mut out, m * p, input, g.c * g.hw(), |s: &mut Scratch, dst, src, parallel| {
        let b = dst.len() / (m * p);
        let cols = sized(&mut s.cols, k * b * p);
        im2col(g, src, cols, parallel);
        if b == 1 {
            // One image's [M, P] product is already its NCHW output.
            if let Some(bias) = bias {
                fill_planes(dst, p, bias);
            }
            product(dst, Mat::rows(weight, m, k), Mat::rows(cols, k, p), bias.is_some(), parallel);
        } else {
            let matrix = sized(&mut s.matrix, m * b * p);
            product(matrix, Mat::rows(weight, m, k), Mat::rows(cols, k, b * p), false, parallel);
            from_channel_major(matrix, m, p, bias, dst);
        }
    });
    out
}

/// Input side [N, C, H, W] = col2im(W^T [K, M] output side [N, M, Ho, Wo]) (+ bias [C]).
fn scatter(g: &Geometry, plan: Plan, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if let Some(winograd) = Winograd::scatter(g, weight) {
        return winograd.run(plan.across, input, bias);
    }
    let (k, p, m) = (g.k(), g.p(), g.m);
    let n = input.len() / (m * p);
    let mut out = vec![0f32; n * g.c * g.hw()];
    if let Some(bias) = bias {
        fill_planes(&mut out, g.hw(), bias);
    }
    for_blocks(plan, &mut out, g.c * g.hw(), input, m * p, |s: &mut Scratch, dst, src, parallel| {
        let b = src.len() / (m * p);
        let src = channel_major(src, m, p, &mut s.matrix);
        let cols = sized(&mut s.cols, k * b * p);
        product(cols, Mat::rows(weight, m, k).t(), Mat::rows(src, m, b * p), false, parallel);
        col2im(g, cols, dst, parallel);
    });
    out
}

/// dW [M, C, kh, kw] = the sum over images of output side [M, P] im2col(input side)^T [P, K].
/// Computed transposed, as dW^T [K, M] = im2col(input side) output side^T, which the gemm
/// kernel ran 10-50 % faster on one thread (measured on the benchmark's shapes), and
/// transposed at the end. Each thread sums its run of blocks into its own dW^T; these are
/// added in order.
fn weight_grad(g: &Geometry, plan: Plan, output: &[f32], input: &[f32]) -> Vec<f32> {
    let (k, p, m) = (g.k(), g.p(), g.m);
    let block_grad = |s: &mut Scratch, dwt: &mut [f32], out: &[f32], src: &[f32], parallel| {
        let b = out.len() / (m * p);
        let cols = sized(&mut s.cols, k * b * p);
        im2col(g, src, cols, parallel);
        let out = channel_major(out, m, p, &mut s.matrix);
        product(dwt, Mat::rows(cols, k, b * p), Mat::rows(out, m, b * p).t(), true, parallel);
    };
    let (out_block, in_block) = (plan.block * m * p, plan.block * g.c * g.hw());
    let dwt = if plan.across {
        // One run of whole blocks per thread, fixed by position, summed in order: rayon's
        // fold would split where work happens to be stolen, so the order of the float sums,
        // and the last bits of the gradient, would change from run to run.
        let blocks = output.len().div_ceil(out_block.max(1));
        let per_run = blocks.div_ceil(rayon::current_num_threads().max(1)).max(1);
        let partial: Vec<Vec<f32>> = output
            .par_chunks(out_block * per_run)
            .zip(input.par_chunks(in_block * per_run))
            .map(|(out, src)| {
                let (mut s, mut dwt) = (Scratch::default(), vec![0f32; k * m]);
                for (out, src) in out.chunks(out_block).zip(src.chunks(in_block)) {
                    block_grad(&mut s, &mut dwt, out, src, false);
                }
                dwt
            })
            .collect();
        let mut runs = partial.into_iter();
        let mut dwt = runs.next().unwrap_or_else(|| vec![0f32; k * m]);
        for run in runs {
            dwt.iter_mut().zip(&run).for_each(|(a, b)| *a += b);
        }
        dwt
    } else {
        let (mut s, mut dwt) = (Scratch::default(), vec![0f32; k * m]);
        for (out, src) in output.chunks(out_block).zip(input.chunks(in_block)) {
            block_grad(&mut s, &mut dwt, out, src, true);
        }
        dwt
    };
    let mut dw = vec![0f32; m * k];
    for (r, row) in dwt.chunks_exact(m).enumerate() {
        dw.iter_mut().skip(r).step_by(k).zip(row).for_each(|(d, v)| *d = *v);
    }
    dw
}

/// How one input-side plane unfolds along its rows: for each padded row r and kernel column
/// j, the Wo pixels that kernel column j reads for the output pixels x = 0 .. Wo of that row
/// (columns x s + j), 0 in the padding. Rows are stored by stride phase, [s, kw, hs, Wo]
/// with r = u s + a, so that the padded rows y s + i that kernel tap (i, j) reads for the
/// output rows y = 0 .. Ho are consecutive: the tap's im2col row for one image is one run of
/// Ho Wo floats. im2col and col2im thus copy and add a few long runs per plane instead of one
/// short run per output row, and do all index arithmetic once, here.
struct RowUnfold {
    /// Floats of one unfolded plane.
    len: usize,
    /// Where each tap's run starts, in (i, j) order.
    taps: Vec<usize>,
    /// The strided reads: (first, count, at) takes `count` pixels of the plane, `stride`
    /// apart from `first`, to `at..` of the unfolded plane.
    reads: Vec<(usize, usize, usize)>,
    stride: usize,
}

impl RowUnfold {
    fn new(g: &Geometry) -> Self {
        let (s, pad) = (g.stride, g.pad);
        let hs = (g.h + 2 * pad).div_ceil(s);
        let start = |r: usize, j: usize| (((r % s) * g.kw + j) * hs + r / s) * g.wo;
        let taps = (0..g.kh).flat_map(|i| (0..g.kw).map(move |j| start(i, j))).collect();
        let mut reads = Vec::new();
        for j in 0..g.kw {
            // The output columns x whose pixel x s + j - pad lies inside the plane.
            let x0 = pad.saturating_sub(j).div_ceil(s);
            let x1 = if g.w + pad > j { ((g.w + pad - j - 1) / s + 1).min(g.wo) } else { 0 };
            if x0 < x1 {
                reads.extend((0..g.h).map(|y| (y * g.w + x0 * s + j - pad, x1 - x0, start(y + pad, j) + x0)));
            }
        }
        RowUnfold { len: s * g.kw * hs * g.wo, taps, reads, stride: s }
    }

    /// Unfolds `plane` [H, W] into `dst`, whose padding entries must be 0 and stay so.
    fn load(&self, plane: &[f32], dst: &mut [f32]) {
        for &(first, count, at) in &self.reads {
            let (dst, src) = (&mut dst[at..at + count], &plane[first..first + (count - 1) * self.stride + 1]);
            match self.stride {
                1 => dst.copy_from_slice(src),
                2 => gather::<2>(dst, src),
                s => dst.iter_mut().zip(src.iter().step_by(s)).for_each(|(d, v)| *d = *v),
            }
        }
    }

    /// Adds the unfolded `src` back onto `plane` [H, W], each value to the pixel it came from.
    fn fold_onto(&self, src: &[f32], plane: &mut [f32]) {
        for &(first, count, at) in &self.reads {
            let (src, dst) = (&src[at..at + count], &mut plane[first..first + (count - 1) * self.stride + 1]);
            match self.stride {
                1 => dst.iter_mut().zip(src).for_each(|(d, v)| *d += v),
                2 => scatter_add::<2>(dst, src),
                s => dst.iter_mut().step_by(s).zip(src).for_each(|(d, v)| *d += v),
            }
        }
    }
}

/// `dst` = every `S`-th float of `src`, which ends on the last one taken. A constant stride
/// lets the compiler vectorise the gather: at the common stride 2, im2col ran 2x faster than
/// through `step_by`.
fn gather<const S: usize>(dst: &mut [f32], src: &[f32]) {
    if let (Some((last, body)), Some(&end)) = (dst.split_last_mut(), src.last()) {
        body.iter_mut().zip(src.chunks_exact(S)).for_each(|(d, c)| *d = c[0]);
        *last = end;
    }
}

/// Adds `src` to every `S`-th float of `dst`, which ends on the last one added to: the
/// adjoint of [`gather`].
fn scatter_add<const S: usize>(dst: &mut [f32], src: &[f32]) {
    if let (Some(end), Some((last, body))) = (dst.last_mut(), src.split_last()) {
        *end += last;
        let n = body.len() * S;
        dst[..n].chunks_exact_mut(S).zip(body).for_each(|(c, v)| c[0] += v);
    }
}

/// Unfolds input-side images [B, C, H, W] into `cols` [C kh kw, B Ho Wo]: row (c, i, j),
/// column (b, y, x) holds the pixel under kernel tap (i, j) of output pixel (y, x) in image b,
/// or 0 in the padding. Per channel, all B planes are unfolded first, so that each row of
/// `cols` is then written in one stream from start to end. Split over channels when
/// `parallel`.
fn im2col(g: &Geometry, images: &[f32], cols: &mut [f32], parallel: bool) {
    let (hw, p, taps) = (g.hw(), g.p(), g.kh * g.kw);
    let row_len = cols.len() / g.k();
    let unfold = RowUnfold::new(g);
    let channel = |scratch: &mut Vec<f32>, (c, out): (usize, &mut [f32])| {
        // Entries that no plane pixel reaches are zeroed here, once, and stay so.
        scratch.resize(row_len / p * unfold.len, 0.0);
        for (image, dst) in images.chunks_exact(g.c * hw).zip(scratch.chunks_exact_mut(unfold.len)) {
            unfold.load(&image[c * hw..(c + 1) * hw], dst);
        }
        for (&tap, row) in unfold.taps.iter().zip(out.chunks_exact_mut(row_len)) {
            for (dst, src) in row.chunks_exact_mut(p).zip(scratch.chunks_exact(unfold.len)) {
                dst.copy_from_slice(&src[tap..tap + p]);
            }
        }
    };
    if parallel {
        cols.par_chunks_mut(taps * row_len).enumerate().for_each_init(Vec::new, channel);
    } else {
        let mut scratch = Vec::new();
        cols.chunks_mut(taps * row_len).enumerate().for_each(|out| channel(&mut scratch, out));
    }
}

/// Folds `cols` [C kh kw, B Ho Wo] onto input-side images [B, C, H, W], adding each entry to
/// the pixel im2col takes it from (its adjoint): per channel, each row of `cols` is read from
/// start to end into unfolded planes, which are then folded onto the images. Split over
/// channels when `parallel`.
fn col2im(g: &Geometry, cols: &[f32], images: &mut [f32], parallel: bool) {
    let (hw, p, taps) = (g.hw(), g.p(), g.kh * g.kw);
    let row_len = cols.len() / g.k();
    let unfold = RowUnfold::new(g);
    let mut planes: Vec<Vec<&mut [f32]>> = (0..g.c).map(|_| Vec::with_capacity(row_len / p)).collect();
    for (index, plane) in images.chunks_mut(hw).enumerate() {
        planes[index % g.c].push(plane);
    }
    let channel = |scratch: &mut Vec<f32>, (c, planes): (usize, Vec<&mut [f32]>)| {
        scratch.clear();
        scratch.resize(row_len / p * unfold.len, 0.0);
        let rows = cols[c * taps * row_len..(c + 1) * taps * row_len].chunks_exact(row_len);
        for (&tap, row) in unfold.taps.iter().zip(rows) {
            for (dst, src) in scratch.chunks_exact_mut(unfold.len).zip(row.chunks_exact(p)) {
                dst[tap..tap + p].iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
        for (plane, src) in planes.into_iter().zip(scratch.chunks_exact(unfold.len)) {
            unfold.fold_onto(src, plane);
        }
    };
    if parallel {
        planes.into_par_iter().enumerate().for_each_init(Vec::new, channel);
    } else {
        let mut scratch = Vec::new();
        planes.into_iter().enumerate().for_each(|planes| channel(&mut scratch, planes));
    }
}

/// Output-side images [B, M, P] as one [M, B P] matrix: the images themselves when B is 1,
/// else a copy in `buf`, so that a single product covers the whole block.
fn channel_major<'a>(images: &'a [f32], m: usize, p: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    let b = images.len() / (m * p);
    if b == 1 {
        return images;
    }
    let matrix = sized(buf, images.len());
    for (channel, row) in matrix.chunks_exact_mut(b * p).enumerate() {
        for (dst, image) in row.chunks_exact_mut(p).zip(images.chunks_exact(m * p)) {
            dst.copy_from_slice(&image[channel * p..(channel + 1) * p]);
        }
    }
    matrix
}

/// The inverse of [`channel_major`]: [M, B P] into images [B, M, P], plus `bias` [M].
fn from_channel_major(matrix: &[f32], m: usize, p: usize, bias: Option<&[f32]>, images: &mut [f32]) {
    let row_len = matrix.len() / m;
    for (b, image) in images.chunks_exact_mut(m * p).enumerate() {
        for (channel, dst) in image.chunks_exact_mut(p).enumerate() {
            let src = &matrix[channel * row_len + b * p..][..p];
            match bias {
                Some(bias) => dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + bias[channel]),
                None => dst.copy_from_slice(src),
            }
        }
    }
}

/// Sets every plane of images [B, C, plane] to its channel's bias.
fn fill_planes(images: &mut [f32], plane: usize, bias: &[f32]) {
    for (dst, &v) in images.chunks_exact_mut(plane).zip(bias.iter().cycle()) {
        dst.fill(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};
    use candle_core::{Device, Var};

    /// Largest |a - b| relative to the largest |b| (at least 1).
    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
        a.iter().zip(b).fold(0f32, |e, (a, b)| e.max((a - b).abs())) / scale
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// A layer under test, run fused or through candle's reference.
    enum Layer {
        Conv(Conv2d),
        Transposed(ConvTranspose2d),
    }

    impl Layer {
        fn new(
            transposed: bool,
            weight: &Var,
            bias: &Var,
            stride: usize,
            padding: usize,
            output_padding: usize,
        ) -> Self {
            let (w, b) = (weight.as_tensor().clone(), bias.as_tensor().clone());
            if transposed {
                Layer::Transposed(ConvTranspose2d::new(w, b, ConvTransposeConfig { stride, padding, output_padding }))
            } else {
                Layer::Conv(Conv2d::new(w, b, ConvConfig { stride, padding }))
            }
        }

        fn forward(&self, x: &Tensor, fast: bool) -> Tensor {
            match (self, fast) {
                (Layer::Conv(l), true) => l.forward(x),
                (Layer::Conv(l), false) => l.forward_reference(x),
                (Layer::Transposed(l), true) => l.forward(x),
                (Layer::Transposed(l), false) => l.forward_reference(x),
            }
            .unwrap()
        }
    }

    /// One layer configuration: input dims, output channels, square kernel size, stride,
    /// padding and output padding (the latter for the transposed layer only).
    #[derive(Debug, Clone, Copy)]
    struct Case {
        transposed: bool,
        x: [usize; 4],
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
    }

    fn conv(x: [usize; 4], out: usize, k: usize, stride: usize, padding: usize) -> Case {
        Case { transposed: false, x, out, k, stride, padding, output_padding: 0 }
    }

    fn convt(x: [usize; 4], out: usize, k: usize, stride: usize, padding: usize, output_padding: usize) -> Case {
        Case { transposed: true, x, out, k, stride, padding, output_padding }
    }

    /// Compares our layer with candle's in output and in the gradients of x, weight and bias
    /// of a random linear functional of the output. Returns the output's shape.
    fn compare(seed: u64, case: Case) -> Vec<usize> {
        let d = Device::Cpu;
        let mut r = Rng::new(seed, Stream::Eval, 0);
        let (c, m, k) = (case.x[1], case.out, case.k);
        let w_dims = if case.transposed { [c, m, k, k] } else { [m, c, k, k] };
        let x = Var::from_tensor(&r.normal(&case.x, &d).unwrap()).unwrap();
        let w = Var::from_tensor(&r.normal(&w_dims, &d).unwrap()).unwrap();
        let b = Var::from_tensor(&r.normal(&[m], &d).unwrap()).unwrap();
        let layer = Layer::new(case.transposed, &w, &b, case.stride, case.padding, case.output_padding);
        let y_ref = layer.forward(x.as_tensor(), false);
        let probe = r.normal(y_ref.dims(), &d).unwrap();
        let run = |fast: bool| {
            let y = layer.forward(x.as_tensor(), fast);
            let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Vec<f32>> = [&x, &w, &b].iter().map(|v| flat(g.get(v.as_tensor()).unwrap())).collect();
            (y.dims().to_vec(), flat(&y), grads)
        };
        let (fast, slow) = (run(true), run(false));
        assert_eq!(fast.0, slow.0, "{case:?}");
        assert!(rel_err(&fast.1, &slow.1) < 1e-4, "output, {case:?}: {}", rel_err(&fast.1, &slow.1));
        for (what, (f, s)) in ["x", "weight", "bias"].iter().zip(fast.2.iter().zip(&slow.2)) {
            assert!(rel_err(f, s) < 1e-4, "grad {what}, {case:?}: {}", rel_err(f, s));
        }
        fast.0
    }

    #[test]
    fn conv2d_matches_candle_in_value_and_gradients() {
        let mut seed = 0;
        for k in [1, 3, 4] {
            for stride in [1, 2] {
                for padding in [0, 1] {
                    for n in [1, 3] {
                        seed += 1;
                        compare(seed, conv([n, 3, 9, 7], 5, k, stride, padding));
                    }
                }
            }
        }
        // Padding wider than the input: some kernel taps never land inside it.
        assert_eq!(compare(seed + 1, conv([2, 2, 1, 3], 3, 5, 1, 2)), [2, 3, 1, 3]);
    }

    /// 3x3 convolutions at stride 1 with at least 8 channels a side run through Winograd's
    /// F(4x4, 3x3), forward and input gradient: planes that are not whole tiles, every padding
    /// it takes, one image and several, and the transposed layer, whose forward pass is the
    /// adjoint.
    #[test]
    fn winograd_convolutions_match_candle_in_value_and_gradients() {
        let mut seed = 500;
        for (h, w) in [(8, 8), (5, 7), (1, 9), (13, 4)] {
            for padding in [0, 1, 2] {
                if h + 2 * padding < 3 || w + 2 * padding < 3 {
                    continue;
                }
                for n in [1, 3] {
                    seed += 1;
                    compare(seed, conv([n, 8, h, w], 12, 3, 1, padding));
                }
            }
        }
        assert_eq!(compare(seed + 1, conv([2, 24, 9, 9], 8, 3, 1, 1)), [2, 8, 9, 9]);
        assert_eq!(compare(seed + 2, convt([2, 16, 6, 5], 8, 3, 1, 1, 0)), [2, 8, 6, 5]);
        assert_eq!(compare(seed + 3, convt([1, 8, 4, 4], 16, 3, 1, 0, 0)), [1, 16, 6, 6]);
    }

    #[test]
    fn conv_transpose2d_matches_candle_in_value_and_gradients() {
        let mut seed = 100;
        for k in [1, 3, 4] {
            for stride in [1, 2] {
                for padding in [0, 1] {
                    for output_padding in 0..stride {
                        for n in [1, 3] {
                            seed += 1;
                            compare(seed, convt([n, 3, 5, 4], 5, k, stride, padding, output_padding));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vq_vae2_shapes_match_candle() {
        assert_eq!(compare(7, conv([2, 1, 32, 32], 64, 4, 2, 1)), [2, 64, 16, 16]);
        assert_eq!(compare(7, conv([2, 64, 32, 32], 128, 4, 2, 1)), [2, 128, 16, 16]);
        assert_eq!(compare(7, conv([2, 128, 8, 8], 128, 3, 1, 1)), [2, 128, 8, 8]);
        assert_eq!(compare(7, conv([2, 128, 8, 8], 64, 1, 1, 0)), [2, 64, 8, 8]);
        assert_eq!(compare(8, convt([2, 64, 4, 4], 64, 4, 2, 1, 0)), [2, 64, 8, 8]);
        assert_eq!(compare(8, convt([2, 128, 8, 8], 64, 4, 2, 1, 0)), [2, 64, 16, 16]);
        assert_eq!(compare(8, convt([2, 64, 16, 16], 1, 4, 2, 1, 0)), [2, 1, 32, 32]);
    }

    #[test]
    fn any_blocking_and_threading_give_the_same_result() {
        const P1: ConvConfig = ConvConfig { stride: 1, padding: 1 };
        let mut r = Rng::new(3, Stream::Eval, 0);
        // im2col, and Winograd (3x3 at stride 1, 8 channels or more).
        for (config, x, w) in
            [(ConvConfig { stride: 2, padding: 1 }, [5, 3, 8, 6], [4, 3, 3, 3]), (P1, [5, 8, 7, 6], [9, 8, 3, 3])]
        {
            let (n, g) = Kind::Conv(config).geometry(&x, &w).unwrap();
            let mut draw = |len: usize| r.normal(&[len], &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
            let (input, weight, output) = (draw(n * g.c * g.hw()), draw(g.m * g.k()), draw(n * g.m * g.p()));
            let all = |block, across| {
                let plan = Plan { block, across };
                (
                    correlate(&g, plan, &input, &weight, None),
                    scatter(&g, plan, &output, &weight, None),
                    weight_grad(&g, plan, &output, &input),
                )
            };
            let whole = all(n, false);
            for (block, across) in [(1, false), (2, false), (1, true), (2, true), (n, true)] {
                let part = all(block, across);
                assert!(rel_err(&part.0, &whole.0) < 1e-6);
                assert!(rel_err(&part.1, &whole.1) < 1e-6);
                assert!(rel_err(&part.2, &whole.2) < 1e-6);
            }
        }
    }

    /// The change of a random linear functional of the output under a perturbation of single
    /// entries of x and of the weight, against the analytic gradients. The layers are linear
    /// in each, so a central difference is exact up to rounding, which the f64 sum keeps to
    /// that of the f32 outputs.
    #[test]
    fn gradients_match_finite_differences() {
        let d = Device::Cpu;
        for transposed in [false, true] {
            let mut r = Rng::new(11, Stream::Eval, transposed as u64);
            // Weight [4, 3, 3, 3]: 3 -> 4 channels for conv2d, 4 -> 3 transposed. The input's
            // 6 x 5 leaves different remainders of the stride in height and width.
            let (x_dims, w_dims) = ([2, if transposed { 4 } else { 3 }, 6, 5], [4, 3, 3, 3]);
            let x = r.normal(&x_dims, &d).unwrap();
            let w = r.normal(&w_dims, &d).unwrap();
            let b = Var::from_tensor(&r.normal(&[if transposed { 3 } else { 4 }], &d).unwrap()).unwrap();
            let functional = |x: &Tensor, w: &Tensor| {
                let layer = Layer::new(transposed, &Var::from_tensor(w).unwrap(), &b, 2, 1, transposed as usize);
                layer.forward(x, true)
            };
            let probe = flat(&r.normal(functional(&x, &w).dims(), &d).unwrap());
            let value = |x: &Tensor, w: &Tensor| -> f64 {
                flat(&functional(x, w)).iter().zip(&probe).map(|(y, p)| *y as f64 * *p as f64).sum()
            };
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            let layer = Layer::new(transposed, &wv, &b, 2, 1, transposed as usize);
            let y = layer.forward(xv.as_tensor(), true);
            let probe_t = Tensor::from_vec(probe.clone(), y.dims(), &d).unwrap();
            let grads = (&y * &probe_t).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gw) = (flat(grads.get(xv.as_tensor()).unwrap()), flat(grads.get(wv.as_tensor()).unwrap()));
            let eps = 1e-2f32;
            let perturbed = |t: &Tensor, i: usize, by: f32| {
                let mut v = flat(t);
                v[i] += by;
                Tensor::from_vec(v, t.dims(), &d).unwrap()
            };
            let len = x.elem_count();
            for i in [0, len / 7, len / 3, len / 2, len - 1] {
                let fd = (value(&perturbed(&x, i, eps), &w) - value(&perturbed(&x, i, -eps), &w)) / (2.0 * eps as f64);
                assert!(
                    (fd - gx[i] as f64).abs() < 2e-4 * (1.0 + fd.abs()),
                    "x[{i}]: {fd} vs {}, transposed {transposed}",
                    gx[i]
                );
            }
            for i in [0, 13, 50, 107] {
                let fd = (value(&x, &perturbed(&w, i, eps)) - value(&x, &perturbed(&w, i, -eps))) / (2.0 * eps as f64);
                assert!(
                    (fd - gw[i] as f64).abs() < 2e-4 * (1.0 + fd.abs()),
                    "w[{i}]: {fd} vs {}, transposed {transposed}",
                    gw[i]
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_that_say_what_is_wrong() {
        let d = Device::Cpu;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &d).unwrap();
        let conv = Conv2d::new(zeros(&[4, 3, 3, 3]), zeros(&[4]), ConvConfig::default());
        let err = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(conv.forward(&zeros(&[2, 5, 8, 8]))).contains("has 5 channels, weight [4, 3, 3, 3] expects 3"));
        assert!(err(conv.forward(&zeros(&[3, 8, 8]))).contains("expected an input [N, C, H, W]"));
        assert!(err(conv.forward(&zeros(&[1, 3, 2, 8]))).contains("larger than the padded input"));
        let bad_bias = Conv2d::new(zeros(&[4, 3, 3, 3]), zeros(&[3]), ConvConfig::default());
        assert!(err(bad_bias.forward(&zeros(&[1, 3, 8, 8]))).contains("bias has shape [3], expected [4]"));
        let cfg = ConvTransposeConfig { stride: 2, padding: 1, output_padding: 2 };
        let convt = ConvTranspose2d::new(zeros(&[3, 4, 4, 4]), zeros(&[4]), cfg);
        assert!(err(convt.forward(&zeros(&[1, 3, 4, 4]))).contains("output_padding 2 must be smaller than stride 2"));
        // An empty batch is fine.
        assert_eq!(conv.forward(&zeros(&[0, 3, 8, 8])).unwrap().dims(), [0, 4, 6, 6]);
    }
}
