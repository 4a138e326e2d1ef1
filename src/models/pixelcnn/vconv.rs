//! The vertical stack's 2x3 convolution in Winograd form, F(4, 3) along each row of the map
//! (Lavin & Gray 2016, <https://arxiv.org/abs/1509.09308>), with the 1-D transforms of
//! [`crate::nn::conv::winograd`].
//!
//! Output pixel (i, j) reads columns j-1..j+1 of rows i-1 and i (of row i-1 alone in the
//! first layer, under mask A): a correlation of 3 taps along the row for each kernel row.
//! Four outputs along a row need the six input pixels under them in each kernel row. With
//! v = Bᵀ d of those six pixels (C channels each) and the kernel rows' vectors stacked into one
//! of R C per point ξ (R kernel rows), and U_ξ = G g [R C, 2C] the kernels, the four outputs
//! are Aᵀ p with p_ξ = v_ξ U_ξ: over the T tiles of a block of images, six products
//! [T, R C] x [R C, 2C] per four output pixels, where the unfold and product of
//! [`super::layer`] take one [4, 3 R C] x [3 R C, 2C]: half the multiply-adds. The same
//! holds in the other two passes: the input gradient runs the products and transforms
//! backwards (dv_ξ = p̂_ξ U_ξᵀ, then B dv onto the six pixels), and the weight gradient sums
//! dU_ξ = v_ξᵀ p̂_ξ over the tiles, with p̂ = A dY the output gradient taken back through the
//! output transform, then dW = Gᵀ dU. In f32 the results are within a few 1e-6 of the direct
//! convolution, relative to the largest (tested against it).
//!
//! The passes take one block of whole images at a time, as the gated layer cuts the batch
//! ([`super::layer`]); within a block every sum runs in a fixed order, and an image's input
//! gradient is gathered in tile order.

use multiversion::multiversion;

use crate::nn::conv::plan::sized;
use crate::nn::conv::winograd::{
    four, input_1d, input_grad_1d, kernel_1d, kernel_adjoint_1d, output_1d, output_grad_1d, six, SIDE, TILE,
};
use crate::nn::gemm::{product, Mat};

/// Taps along a row, and kernel rows, of the vertical stack's kernel [2C, C, 2, 3]: under
/// mask A the first TAPS of `V_TAPS`, one row, are read.
pub(super) const TAPS: usize = 3;
const KERNEL_ROWS: usize = 2;

/// The shapes of one layer's vertical convolution.
#[derive(Clone, Copy)]
struct Geometry {
    /// Input channels C (columns 0..C of the state [N H W, 2C]) and outputs M = 2C.
    c: usize,
    m: usize,
    /// Kernel rows read: 1 (row i-1, under mask A) or 2.
    rows: usize,
    height: usize,
    width: usize,
}

impl Geometry {
    /// Tiles across one row of the map.
    fn across(&self) -> usize {
        self.width.div_ceil(TILE)
    }

    /// Tiles of one image.
    fn tiles(&self) -> usize {
        self.height * self.across()
    }

    /// Length of one point's input vector, R C.
    fn k(&self) -> usize {
        self.rows * self.c
    }

    fn hw(&self) -> usize {
        self.height * self.width
    }

    /// Image, row and first column of tile `t` of a block.
    fn corner(&self, t: usize) -> (usize, usize, usize) {
        let (tiles, across) = (self.tiles(), self.across());
        (t / tiles, t % tiles / across, t % across * TILE)
    }
}

/// The vertical convolution of one gated layer, with its kernels transformed.
pub(super) struct VConv {
    g: Geometry,
    /// U [SIDE, R C, M]: point ξ's matrix [R C, M] holds entry ((r, c), o) = (G g)_ξ of
    /// kernel row r of w[o, c].
    u: Vec<f32>,
}

/// Buffers one thread reuses from block to block.
#[derive(Default)]
pub(super) struct Buffers {
    /// Transformed inputs (or their gradients) [SIDE, T, R C].
    v: Vec<f32>,
    /// Products (or the transformed output gradients) [SIDE, T, M].
    p: Vec<f32>,
    /// One tile's worth of rows or columns.
    scratch: Vec<f32>,
}

impl VConv {
    /// The convolution of `weight` [2C, C, 2, 3] (PyTorch's order) over maps of `size`
    /// (height, width) pixels of C = `c` channels; under mask A (`masked`) it reads the
    /// kernel's first row alone.
    pub fn new(weight: &[f32], c: usize, size: (usize, usize), masked: bool) -> Self {
        let rows = if masked { 1 } else { KERNEL_ROWS };
        let g = Geometry { c, m: 2 * c, rows, height: size.0, width: size.1 };
        let (k, m) = (g.k(), g.m);
        let mut u = vec![0f32; SIDE * k * m];
        let mut taps = vec![0f32; TAPS * m];
        for r in 0..rows {
            for ch in 0..c {
                for (s, tap) in taps.chunks_exact_mut(m).enumerate() {
                    for (o, t) in tap.iter_mut().enumerate() {
                        *t = weight[((o * c + ch) * KERNEL_ROWS + r) * TAPS + s];
                    }
                }
                let mut points = u.chunks_exact_mut(k * m);
                let outs = std::array::from_fn(|_| &mut points.next().expect("six points")[(r * c + ch) * m..][..m]);
                kernel_1d(std::array::from_fn(|s| &taps[s * m..][..m]), outs);
            }
        }
        VConv { g, u }
    }

    /// Floats of the transformed kernels' gradient [SIDE, R C, M], which
    /// [`VConv::backward_block`] writes.
    pub fn du_len(&self) -> usize {
        SIDE * self.g.k() * self.g.m
    }

    /// v_conv(x) + `bias` into `out` [B H W, M] for a block of whole images of the state
    /// `x` [B H W, 2C]; the products split over threads when `parallel`.
    pub fn forward_block(&self, s: &mut Buffers, x: &[f32], bias: &[f32], out: &mut [f32], parallel: bool) {
        let (g, t) = (self.g, self.tiles_of(x.len(), 2 * self.g.c));
        let v = sized(&mut s.v, SIDE * t * g.k());
        input_tiles(g, x, v);
        let p = sized(&mut s.p, SIDE * t * g.m);
        self.products(v, p, parallel);
        output_tiles(g, p, bias, sized(&mut s.scratch, TILE * g.m), out);
    }

    /// Tiles of a block whose pixels hold `per_pixel` floats each, in `len` floats.
    fn tiles_of(&self, len: usize, per_pixel: usize) -> usize {
        len / (self.g.hw() * per_pixel) * self.g.tiles()
    }

    /// p_ξ = v_ξ U_ξ for the six points.
    fn products(&self, v: &[f32], p: &mut [f32], parallel: bool) {
        let (k, m) = (self.g.k(), self.g.m);
        let t = v.len() / (SIDE * k);
        for ((p, v), u) in p.chunks_exact_mut(t * m).zip(v.chunks_exact(t * k)).zip(self.u.chunks_exact(k * m)) {
            product(p, Mat::rows(v, t, k), Mat::rows(u, k, m), false, parallel);
        }
    }

    /// The backward pass of a block, from its output gradient `dy` [B H W, M] and state `x`
    /// [B H W, 2C]: its part of the transformed kernels' gradient, dU_ξ = v_ξᵀ (A dY)_ξ
    /// summed over its tiles, into `du` [SIDE, R C, M] ([`VConv::weight_grad`] turns the sum
    /// over the blocks into the weight's), and, given `dx` [B H W, 2C], the input gradient
    /// added to its columns 0..C. A dY is transformed once for both.
    pub fn backward_block(
        &self,
        s: &mut Buffers,
        x: &[f32],
        dy: &[f32],
        du: &mut [f32],
        dx: Option<&mut [f32]>,
        parallel: bool,
    ) {
        let (g, t) = (self.g, self.tiles_of(dy.len(), self.g.m));
        let (k, m) = (g.k(), g.m);
        let p = sized(&mut s.p, SIDE * t * m);
        output_grad_tiles(g, dy, sized(&mut s.scratch, TILE * m), p);
        let v = sized(&mut s.v, SIDE * t * k);
        input_tiles(g, x, v);
        for ((du, v), p) in du.chunks_exact_mut(k * m).zip(v.chunks_exact(t * k)).zip(p.chunks_exact(t * m)) {
            product(du, Mat::rows(v, t, k).t(), Mat::rows(p, t, m), false, parallel);
        }
        if let Some(dx) = dx {
            let dv = v;
            for ((dv, p), u) in dv.chunks_exact_mut(t * k).zip(p.chunks_exact(t * m)).zip(self.u.chunks_exact(k * m)) {
                product(dv, Mat::rows(p, t, m), Mat::rows(u, k, m).t(), false, parallel);
            }
            input_grad_tiles(g, dv, sized(&mut s.scratch, SIDE * g.c), dx);
        }
    }

    /// The weight's gradient [2C, C, 2, 3] from dU summed over the batch (zero in the kernel
    /// rows not read).
    pub fn weight_grad(&self, du: &[f32]) -> Vec<f32> {
        kernel_adjoint(self.g, du)
    }
}

/// Pixel (image, row, column) of the state, if inside the map: its row in a block.
fn pixel(g: Geometry, image: usize, row: Option<usize>, col: Option<usize>) -> Option<usize> {
    match (row, col) {
        (Some(y), Some(x)) if y < g.height && x < g.width => Some((image * g.height + y) * g.width + x),
        _ => None,
    }
}

/// Bᵀ d of every tile's six input pixels per kernel row, from columns 0..C of the block's
/// state `x` [B H W, 2C], into `v` [SIDE, T, R C].
#[multiversion(targets("x86_64+avx2+fma"))]
fn input_tiles(g: Geometry, x: &[f32], v: &mut [f32]) {
    let (c, k) = (g.c, g.k());
    let t = v.len() / (SIDE * k);
    let zeros = vec![0f32; c];
    let mut points: [&mut [f32]; SIDE] = six(v, t * k);
    for tile in 0..t {
        let (image, i, j) = g.corner(tile);
        for r in 0..g.rows {
            let row = (i + r).checked_sub(1);
            let d = std::array::from_fn(|s| match pixel(g, image, row, (j + s).checked_sub(1)) {
                Some(q) => &x[q * 2 * c..][..c],
                None => &zeros[..],
            });
            input_1d(d, points.each_mut().map(|p| &mut p[tile * k + r * c..][..c]));
        }
    }
}

/// Aᵀ p of every tile's six products `p` [SIDE, T, M], plus `bias`, into the block's
/// output `out` [B H W, M]; the columns of a last tile past the map's edge are dropped.
#[multiversion(targets("x86_64+avx2+fma"))]
fn output_tiles(g: Geometry, p: &[f32], bias: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    let m = g.m;
    let t = p.len() / (SIDE * m);
    for tile in 0..t {
        let (image, i, j) = g.corner(tile);
        let points = std::array::from_fn(|x| &p[(x * t + tile) * m..][..m]);
        let first = (image * g.height + i) * g.width + j;
        let cols = TILE.min(g.width - j);
        let dst = &mut out[first * m..][..cols * m];
        if cols == TILE {
            output_1d(points, four(dst, m));
        } else {
            output_1d(points, four(scratch, m));
            dst.copy_from_slice(&scratch[..cols * m]);
        }
        for row in dst.chunks_exact_mut(m) {
            row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
        }
    }
}

/// A dy of every tile's four output pixels (zero past the map's edge), from the block's
/// output gradient `dy` [B H W, M], into `p` [SIDE, T, M]: the adjoint of [`output_tiles`].
#[multiversion(targets("x86_64+avx2+fma"))]
fn output_grad_tiles(g: Geometry, dy: &[f32], scratch: &mut [f32], p: &mut [f32]) {
    let m = g.m;
    let t = p.len() / (SIDE * m);
    let mut points: [&mut [f32]; SIDE] = six(p, t * m);
    for tile in 0..t {
        let (image, i, j) = g.corner(tile);
        let first = (image * g.height + i) * g.width + j;
        let cols = TILE.min(g.width - j);
        let src = &dy[first * m..][..cols * m];
        let rows: [&[f32]; TILE] = if cols == TILE {
            std::array::from_fn(|x| &src[x * m..][..m])
        } else {
            scratch.fill(0.0);
            scratch[..cols * m].copy_from_slice(src);
            std::array::from_fn(|x| &scratch[x * m..][..m])
        };
        output_grad_1d(rows, points.each_mut().map(|p| &mut p[tile * m..][..m]));
    }
}

/// B dv of every tile's transformed input gradients `dv` [SIDE, T, R C], added onto the
/// pixels they came from, columns 0..C of the block's `dx` [B H W, 2C]: the adjoint of
/// [`input_tiles`].
#[multiversion(targets("x86_64+avx2+fma"))]
fn input_grad_tiles(g: Geometry, dv: &[f32], scratch: &mut [f32], dx: &mut [f32]) {
    let (c, k) = (g.c, g.k());
    let t = dv.len() / (SIDE * k);
    for tile in 0..t {
        let (image, i, j) = g.corner(tile);
        for r in 0..g.rows {
            let points = std::array::from_fn(|x| &dv[(x * t + tile) * k + r * c..][..c]);
            input_grad_1d(points, six(scratch, c));
            let row = (i + r).checked_sub(1);
            for (s, d) in scratch.chunks_exact(c).enumerate() {
                if let Some(q) = pixel(g, image, row, (j + s).checked_sub(1)) {
                    dx[q * 2 * c..][..c].iter_mut().zip(d).for_each(|(x, d)| *x += d);
                }
            }
        }
    }
}

/// Gᵀ dU of the summed `du` [SIDE, R C, M] into the weight's gradient [M, C, 2, 3].
fn kernel_adjoint(g: Geometry, du: &[f32]) -> Vec<f32> {
    let (c, k, m) = (g.c, g.k(), g.m);
    let mut dw = vec![0f32; m * c * KERNEL_ROWS * TAPS];
    let mut taps = vec![0f32; TAPS * m];
    for r in 0..g.rows {
        for ch in 0..c {
            let points = std::array::from_fn(|x| &du[(x * k + r * c + ch) * m..][..m]);
            let mut outs = taps.chunks_exact_mut(m);
            kernel_adjoint_1d(points, std::array::from_fn(|_| outs.next().expect("three taps")));
            for (s, tap) in taps.chunks_exact(m).enumerate() {
                for (o, &d) in tap.iter().enumerate() {
                    dw[((o * c + ch) * KERNEL_ROWS + r) * TAPS + s] = d;
                }
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::pixelcnn::ops::{shifted, V_TAPS};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) * 1e-3).collect()
    }

    /// The direct convolution: out[p, o] = bias[o] + Σ over taps and channels, from the
    /// first `rows` kernel rows.
    fn direct(x: &[f32], w: &[f32], bias: &[f32], c: usize, (h, wd): (usize, usize), rows: usize) -> Vec<f32> {
        let m = 2 * c;
        let pixels = x.len() / (2 * c);
        let mut out = vec![0f32; pixels * m];
        for p in 0..pixels {
            let (image, q) = (p / (h * wd), p % (h * wd));
            for o in 0..m {
                let mut sum = bias[o] as f64;
                for (t, &tap) in V_TAPS.iter().enumerate().take(rows * TAPS) {
                    if let Some(src) = shifted(q / wd, q % wd, tap, h, wd) {
                        for ch in 0..c {
                            sum += (w[(o * c + ch) * 6 + t] * x[(image * h * wd + src) * 2 * c + ch]) as f64;
                        }
                    }
                }
                out[p * m + o] = sum as f32;
            }
        }
        out
    }

    /// The three passes over the whole batch as blocks of `block` images, the weight
    /// gradient summed over the blocks in order, as the gated layer runs them.
    fn passes(conv: &VConv, block: usize, x: &[f32], bias: &[f32], dy: &[f32], dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
        let (hw, c, m) = (conv.g.hw(), conv.g.c, conv.g.m);
        let s = &mut Buffers::default();
        let mut out = vec![0f32; dy.len()];
        let mut du = vec![0f32; conv.du_len()];
        let mut part = du.clone();
        let blocks = x.chunks(block * hw * 2 * c).zip(dy.chunks(block * hw * m));
        for ((x, dy), (out, dx)) in blocks.zip(out.chunks_mut(block * hw * m).zip(dx.chunks_mut(block * hw * 2 * c))) {
            conv.forward_block(s, x, bias, out, true);
            conv.backward_block(s, x, dy, &mut part, Some(dx), false);
            du.iter_mut().zip(&part).for_each(|(d, p)| *d += p);
        }
        (out, conv.weight_grad(&du))
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
        a.iter().zip(b).fold(0f32, |e, (a, b)| e.max((a - b).abs())) / scale
    }

    /// Forward pass against the direct convolution, and both gradients against the
    /// forward pass's adjoint: <dy, conv(x)> = <dW, w> + <dx, x> checked through a direct
    /// computation of each gradient, on widths that leave a partial last tile, both masks,
    /// and batches of one block and of several.
    #[test]
    fn matches_the_direct_convolution_in_all_three_passes() {
        for (n, c, size, masked) in
            [(3, 4, (5, 7), false), (2, 3, (4, 8), true), (40, 2, (3, 5), false), (1, 5, (1, 2), false)]
        {
            let rows = if masked { 1 } else { 2 };
            let m = 2 * c;
            let (x, w, bias) = (values(n * size.0 * size.1 * 2 * c, 1), values(m * c * 6, 2), values(m, 3));
            let conv = VConv::new(&w, c, size, masked);
            let dy = values(n * size.0 * size.1 * m, 4);
            let mut dx = values(x.len(), 5);
            let before = dx.clone();
            let (got, dw) = passes(&conv, 2, &x, &bias, &dy, &mut dx);
            let want = direct(&x, &w, &bias, c, size, rows);
            assert!(max_rel(&got, &want) < 1e-5, "{n} {c} {size:?} {rows}: forward {}", max_rel(&got, &want));

            // The gradients of L = <dy, conv(x)>: the convolution is linear, so dL/dw and
            // dL/dx are <dy, direct(x, e)> and <dy, direct(e, w)> for the unit vectors e.
            let zero = vec![0f32; m];
            let mut dw_want = vec![0f32; w.len()];
            for (i, d) in dw_want.iter_mut().enumerate() {
                if i % 6 >= rows * TAPS {
                    continue;
                }
                let mut e = vec![0f32; w.len()];
                e[i] = 1.0;
                let y = direct(&x, &e, &zero, c, size, rows);
                *d = y.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32;
            }
            assert!(max_rel(&dw, &dw_want) < 1e-5, "{n} {c} {size:?} {rows}: weight gradient");

            let (mut got, mut want) = (vec![], vec![]);
            for (i, (&after, &was)) in dx.iter().zip(&before).enumerate() {
                if i % (2 * c) < c {
                    let mut e = vec![0f32; x.len()];
                    e[i] = 1.0;
                    let y = direct(&e, &w, &zero, c, size, rows);
                    got.push(after - was);
                    want.push(y.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32);
                } else {
                    assert_eq!(after, was, "{n} {c} {size:?} {rows}: the horizontal stack's columns changed");
                }
            }
            assert!(max_rel(&got, &want) < 1e-5, "{n} {c} {size:?} {rows}: input gradient {}", max_rel(&got, &want));
        }
    }

    /// Products split over threads or not, the same bits.
    #[test]
    fn threads_give_the_same_bits() {
        let (c, size) = (3, (4, 6));
        let (x, w, bias) = (values(64 * 24 * 6, 1), values(6 * 3 * 6, 2), values(6, 3));
        let dy = values(64 * 24 * 6, 4);
        let conv = VConv::new(&w, c, size, false);
        let run = |threads, parallel| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let s = &mut Buffers::default();
                let (mut out, mut du, mut dx) = (vec![0f32; dy.len()], vec![0f32; conv.du_len()], vec![0f32; x.len()]);
                conv.forward_block(s, &x, &bias, &mut out, parallel);
                conv.backward_block(s, &x, &dy, &mut du, Some(&mut dx), parallel);
                (out, du, dx)
            })
        };
        let one = run(1, false);
        assert!(one == run(2, true) && one == run(3, true));
    }
}
