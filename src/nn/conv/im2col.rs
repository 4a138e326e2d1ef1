//! The general kernel: every convolution as matrix products around the gemm kernel, with the
//! input side unfolded into an im2col matrix [C kh kw, B Ho Wo] (col2im folds it back).
//! Any kernel size, stride and padding.

use rayon::prelude::*;

use super::plan::{for_blocks, sized, sum_over_blocks, Geometry, Plan};
use crate::nn::gemm::{product, Mat};

/// The most floats one block's im2col matrix may take (512 KiB, a core's L2 cache here), unless
/// one image alone needs more: a block is as many images as fit, and one product covers them
/// all. Measured on the benchmark's shapes (batches of 8x8 to 32x32 images, 2 threads),
/// blocks of 2-4 MiB or more ran the three products 10-40 % slower, as the matrix falls out
/// of cache between im2col and the product; wider products gained nothing.
const COLS_BUDGET: usize = 1 << 17;

/// The im2col blocks for a batch of `n` of `g` on `threads` threads.
pub(super) fn plan(g: &Geometry, n: usize, threads: usize) -> Plan {
    Plan::fitting(n, g.k() * g.p(), COLS_BUDGET, threads)
}

/// Buffers one thread reuses from block to block.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    matrix: Vec<f32>,
}

/// Output side [N, M, Ho, Wo] = W [M, K] im2col(input side [N, C, H, W]) (+ bias [M]).
pub(super) fn correlate(g: &Geometry, plan: Plan, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
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
pub(super) fn scatter(g: &Geometry, plan: Plan, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
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
/// transposed at the end. Each block's dW^T is a product of its own, summed in block order
/// ([`sum_over_blocks`]).
pub(super) fn weight_grad(g: &Geometry, plan: Plan, output: &[f32], input: &[f32]) -> Vec<f32> {
    let (k, p, m) = (g.k(), g.p(), g.m);
    let block_grad = |s: &mut Scratch, part: &mut [f32], out: &[f32], src: &[f32], parallel| {
        let b = out.len() / (m * p);
        let cols = sized(&mut s.cols, k * b * p);
        im2col(g, src, cols, parallel);
        let out = channel_major(out, m, p, &mut s.matrix);
        product(part, Mat::rows(cols, k, b * p), Mat::rows(out, m, b * p).t(), false, parallel);
    };
    let dwt = sum_over_blocks(plan, k * m, output, m * p, input, g.c * g.hw(), block_grad);
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
    use crate::nn::conv::layers::ConvConfig;
    use crate::nn::conv::op::Kind;
    use crate::nn::conv::testing::{normal, rel_err, rng};

    /// All three matrix forms on any block plan, across threads or not, against one block of
    /// the whole batch: a strided convolution and a 3x3 one at stride 1.
    #[test]
    fn any_blocking_and_threading_give_the_same_result() {
        let mut r = rng(3);
        for (config, x, w) in [
            (ConvConfig { stride: 2, padding: 1 }, [5, 3, 8, 6], [4, 3, 3, 3]),
            (ConvConfig { stride: 1, padding: 1 }, [5, 8, 7, 6], [9, 8, 3, 3]),
        ] {
            let (n, g) = Kind::Conv(config).geometry(&x, &w).unwrap();
            let (input, weight) = (normal(&mut r, n * g.c * g.hw()), normal(&mut r, g.m * g.k()));
            let output = normal(&mut r, n * g.m * g.p());
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
}
