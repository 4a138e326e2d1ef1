//! Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016) for 3x3 convolutions of
//! stride 1, the bulk of the U-Net's and the VQ-VAE-2 decoder's work.
//!
//! A 4x4 tile of output pixels needs the 6x6 input pixels under it. With V = Bᵀ d B the
//! tile's input and U = G g Gᵀ the kernel, both 6x6, the tile is Aᵀ (U ⊙ V) A: the 36
//! products of point ξ, summed over input channels, are one matrix product per point,
//! Out_ξ [T, M] = V_ξ [T, C] U_ξ [C, M] over the T tiles of a block of images. That is
//! 36 x 2 M C multiply-adds per 16 output pixels against 9 x 2 M C for im2col: a quarter.
//! The transforms run on NHWC copies, so that each of their vector operations covers all
//! the channels of one pixel. In f32 the result is within a few 1e-6 of direct
//! convolution, relative to the largest output (tested against im2col and candle).
//!
//! A convolution's input gradient at stride 1 is itself a 3x3 correlation: of the output
//! gradient with the kernels flipped and input and output channels exchanged, at padding
//! 2 - p. The weight gradient is the forward pass's adjoint in the kernel: with Ŷ = A dY Aᵀ
//! each output-gradient tile taken back through the output transform, the gradient of point
//! ξ's kernels is dU_ξ [C, M] = V_ξᵀ Ŷ_ξ summed over the tiles, and dW = Gᵀ dU G. Again 36
//! products per 16 output pixels against im2col's 144. So all three passes run here. Which
//! convolutions come here is the dispatcher's choice (`super::op`); this kernel takes any
//! 3x3 one at stride 1 with padding at most 2.
//!
//! The 1-D transforms (`input_1d` and the others, with their adjoints) also serve the
//! PixelCNN's vertical convolution, F(4, 3) along each row (`models::pixelcnn::vconv`).

use multiversion::multiversion;

use super::plan::{for_blocks, sized, sum_over_blocks, Geometry, Plan};
use crate::nn::gemm::{product, transpose, Mat};

/// Side of an output tile.
pub(crate) const TILE: usize = 4;
/// Side of an input tile, TILE + 2.
pub(crate) const SIDE: usize = 6;
/// Points of the transformed tile, SIDE².
const POINTS: usize = SIDE * SIDE;

/// Floats of a block's transformed inputs and outputs together (1 MiB): as many images per
/// block as fit, at least one.
const BLOCK_BUDGET: usize = 1 << 18;

/// The 4x4 output tiles of one 3x3, stride-1 correlation, and the transforms between its
/// planes and tiles that the three passes share.
struct Tiling {
    /// The correlation's shapes: input side c x h x w, output side m x ho x wo.
    g: Geometry,
    /// Tiles down and across one output plane.
    th: usize,
    tw: usize,
}

/// A 3x3, stride-1 correlation in Winograd form.
pub(super) struct Winograd {
    tiling: Tiling,
    /// The transformed kernels, U [C, POINTS, M]: point ξ's matrix [C, M] has rows
    /// POINTS M apart.
    u: Vec<f32>,
}

/// Buffers one thread reuses from block to block.
#[derive(Default)]
pub(super) struct Buffers {
    /// The block's input side as NHWC, padded with zeros to whole tiles.
    padded: Vec<f32>,
    /// The transformed input tiles, V [POINTS, T, C].
    v: Vec<f32>,
    /// The products [POINTS, T, M]; in the weight gradient, the output gradient's
    /// transformed tiles Ŷ [POINTS, T, M].
    products: Vec<f32>,
    /// The output side as NHWC, in whole tiles.
    tiles: Vec<f32>,
    /// One tile's intermediate transform.
    scratch: Vec<f32>,
}

impl Winograd {
    /// Whether this kernel computes `g`: 3x3 at stride 1, padding at most 2.
    pub(super) fn supports(g: &Geometry) -> bool {
        (g.kh, g.kw, g.stride) == (3, 3, 1) && g.pad <= 2
    }

    /// The convolution `g` itself (forward pass) in Winograd form.
    ///
    /// # Panics
    /// When the kernel does not [support](Self::supports) `g`.
    pub(super) fn correlate(g: &Geometry, weight: &[f32]) -> Self {
        assert!(Self::supports(g), "winograd: {g:?} is not 3x3 at stride 1 with padding at most 2");
        Self::new(*g, weight, false)
    }

    /// The adjoint of `g` (input gradient) as a correlation.
    ///
    /// # Panics
    /// When the kernel does not [support](Self::supports) `g`.
    pub(super) fn scatter(g: &Geometry, weight: &[f32]) -> Self {
        assert!(Self::supports(g), "winograd: {g:?} is not 3x3 at stride 1 with padding at most 2");
        let adjoint = Geometry { c: g.m, h: g.ho, w: g.wo, m: g.c, ho: g.h, wo: g.w, pad: 2 - g.pad, ..*g };
        Self::new(adjoint, weight, true)
    }

    /// The correlation `g` with the convolution's `weight` [M, C, 3, 3]; `flipped` builds
    /// the adjoint's kernels from it.
    fn new(g: Geometry, weight: &[f32], flipped: bool) -> Self {
        let (c, m) = (g.c, g.m);
        // Per input channel ci, its M kernels' taps as [9, M] (row mi of the weight [M, C, 3, 3]
        // holds them at mi C 9 + ci 9; the adjoint's, from [C, M, 3, 3], at (ci M + mi) 9,
        // flipped), then G g Gᵀ over all M at once.
        let mut u = Vec::with_capacity(c * POINTS * m);
        let mut taps = vec![0f32; 9 * m];
        let mut scratch = vec![0f32; SIDE * 3 * m];
        for ci in 0..c {
            if flipped {
                transpose(&weight[ci * m * 9..], 9, &mut taps, m, m, 9);
                taps.reverse();
                taps.chunks_exact_mut(m).for_each(|row| row.reverse());
            } else {
                transpose(&weight[ci * 9..], c * 9, &mut taps, m, m, 9);
            }
            kernel_transform(&taps, &mut scratch, &mut u);
        }
        debug_assert_eq!(u.len(), c * POINTS * m);
        Winograd { tiling: Tiling::new(g), u }
    }

    /// The blocks for a batch of `n` on `threads` threads.
    pub(super) fn plan(&self, n: usize, threads: usize) -> Plan {
        self.tiling.plan(n, threads)
    }

    /// Output side [N, M, Ho, Wo] from input side [N, C, H, W], plus `bias` [M].
    pub(super) fn run(&self, plan: Plan, input: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let g = &self.tiling.g;
        let (src_image, dst_image) = (g.c * g.hw(), g.m * g.p());
        let n = input.len() / src_image;
        let mut out = vec![0f32; n * dst_image];
        for_blocks(plan, &mut out, dst_image, input, src_image, |s: &mut Buffers, dst, src, parallel| {
            self.block(s, dst, src, bias, parallel)
        });
        out
    }

    fn block(&self, s: &mut Buffers, dst: &mut [f32], src: &[f32], bias: Option<&[f32]>, parallel: bool) {
        let tiling = &self.tiling;
        let (c, m) = (tiling.g.c, tiling.g.m);
        let b = src.len() / (c * tiling.g.hw());
        let t = b * tiling.th * tiling.tw;
        let v = sized(&mut s.v, POINTS * t * c);
        tiling.transform_inputs(&mut s.padded, &mut s.scratch, src, v);
        let products = sized(&mut s.products, POINTS * t * m);
        for (point, (out, v)) in products.chunks_exact_mut(t * m).zip(v.chunks_exact(t * c)).enumerate() {
            let u = Mat { data: &self.u[point * m..], rows: c, cols: m, rs: POINTS * m, cs: 1 };
            product(out, Mat::rows(v, t, c), u, false, parallel);
        }
        let tiles = sized(&mut s.tiles, b * tiling.th * TILE * tiling.tw * TILE * m);
        tiling.transform_outputs(&mut s.scratch, products, tiles);
        tiling.to_planes(tiles, bias, dst);
    }
}

/// The blocks of [`weight_grad`] for a batch of `n` of `g` on `threads` threads.
pub(super) fn weight_grad_plan(g: &Geometry, n: usize, threads: usize) -> Plan {
    Tiling::new(*g).plan(n, threads)
}

/// dW [M, C, 3, 3] of the 3x3, stride-1 convolution `g` from its output side [N, M, Ho, Wo]
/// (the output gradient) and input side [N, C, H, W]: per block, dU_ξ [C, M] = V_ξᵀ Ŷ_ξ
/// over the block's tiles, summed over the blocks in order, then Gᵀ dU G.
///
/// # Panics
/// When the kernel does not [support](Winograd::supports) `g`.
pub(super) fn weight_grad(g: &Geometry, plan: Plan, output: &[f32], input: &[f32]) -> Vec<f32> {
    assert!(Winograd::supports(g), "winograd: {g:?} is not 3x3 at stride 1 with padding at most 2");
    let tiling = Tiling::new(*g);
    let (c, m, in_image) = (g.c, g.m, g.c * g.hw());
    let block_grad = |s: &mut Buffers, part: &mut [f32], out: &[f32], src: &[f32], parallel| {
        let t = src.len() / in_image * tiling.th * tiling.tw;
        let v = sized(&mut s.v, POINTS * t * c);
        tiling.transform_inputs(&mut s.padded, &mut s.scratch, src, v);
        let y = sized(&mut s.products, POINTS * t * m);
        tiling.transform_output_grads(&mut s.tiles, &mut s.scratch, out, y);
        for (point, part) in part.chunks_exact_mut(c * m).enumerate() {
            let v = Mat { data: &v[point * t * c..], rows: c, cols: t, rs: 1, cs: c };
            product(part, v, Mat::rows(&y[point * t * m..], t, m), false, parallel);
        }
    };
    // dU [POINTS, C, M].
    let du = sum_over_blocks(plan, POINTS * c * m, output, m * g.p(), input, in_image, block_grad);
    let mut dw = vec![0f32; m * c * 9];
    let (mut points, mut taps) = (vec![0f32; POINTS * m], vec![0f32; 9 * m]);
    let mut scratch = vec![0f32; SIDE * 3 * m];
    for ci in 0..c {
        for (point, row) in points.chunks_exact_mut(m).enumerate() {
            row.copy_from_slice(&du[(point * c + ci) * m..][..m]);
        }
        kernel_adjoint(&points, &mut scratch, &mut taps);
        // Tap k of kernel mi goes to mi C 9 + ci 9 + k.
        transpose(&taps, m, &mut dw[ci * 9..], c * 9, 9, m);
    }
    dw
}

impl Tiling {
    fn new(g: Geometry) -> Self {
        Tiling { g, th: g.ho.div_ceil(TILE), tw: g.wo.div_ceil(TILE) }
    }

    /// Blocks of as many images as their transformed tiles, input and output side, fit
    /// [`BLOCK_BUDGET`], for a batch of `n` on `threads` threads.
    fn plan(&self, n: usize, threads: usize) -> Plan {
        Plan::fitting(n, POINTS * self.th * self.tw * (self.g.c + self.g.m), BLOCK_BUDGET, threads)
    }

    /// Copies images [B, C, H, W] into zero-padded NHWC planes and writes every tile's
    /// Bᵀ d B into `v` [POINTS, T, C].
    fn transform_inputs(&self, padded: &mut Vec<f32>, scratch: &mut Vec<f32>, src: &[f32], v: &mut [f32]) {
        let (c, h, w) = (self.g.c, self.g.h, self.g.w);
        let (hp, wp) = (self.th * TILE + 2, self.tw * TILE + 2);
        let padded = sized(padded, src.len() / (c * h * w) * hp * wp * c);
        to_nhwc(src, (c, h, w), self.g.pad, (hp, wp), padded);
        input_tiles(padded, (self.th, self.tw), wp, c, sized(scratch, POINTS * c), v);
    }

    /// Copies output-side images [B, M, Ho, Wo] (gradients) into NHWC planes of whole tiles,
    /// zero beyond the images, and writes every tile's A y Aᵀ into `y` [POINTS, T, M]: the
    /// adjoint of [`Self::transform_outputs`] and [`Self::to_planes`].
    fn transform_output_grads(&self, tiles: &mut Vec<f32>, scratch: &mut Vec<f32>, src: &[f32], y: &mut [f32]) {
        let (m, ho, wo) = (self.g.m, self.g.ho, self.g.wo);
        let (hp, wp) = (self.th * TILE, self.tw * TILE);
        let tiles = sized(tiles, src.len() / (m * ho * wo) * hp * wp * m);
        to_nhwc(src, (m, ho, wo), 0, (hp, wp), tiles);
        output_grad_tiles(tiles, (self.th, self.tw), m, sized(scratch, TILE * SIDE * m), y);
    }

    /// Writes every tile's Aᵀ P A, P its 36 products, into `tiles` [B, th 4, tw 4, M].
    fn transform_outputs(&self, scratch: &mut Vec<f32>, products: &[f32], tiles: &mut [f32]) {
        output_tiles(products, (self.th, self.tw), self.g.m, sized(scratch, SIDE * TILE * self.g.m), tiles);
    }

    /// `tiles` [B, th 4, tw 4, M] cropped to images [B, M, Ho, Wo], plus `bias`.
    fn to_planes(&self, tiles: &[f32], bias: Option<&[f32]>, dst: &mut [f32]) {
        let (m, ho, wo) = (self.g.m, self.g.ho, self.g.wo);
        let row = self.tw * TILE * m;
        for (image, out) in tiles.chunks_exact(self.th * TILE * row).zip(dst.chunks_exact_mut(m * ho * wo)) {
            // Four planes at a time, as in `transform_inputs`.
            for first in (0..m).step_by(LANES) {
                for (y, pixels) in image.chunks_exact(row).take(ho).enumerate() {
                    transpose(
                        &pixels[first..],
                        m,
                        &mut out[first * ho * wo + y * wo..],
                        ho * wo,
                        wo,
                        LANES.min(m - first),
                    );
                }
            }
            if let Some(bias) = bias {
                for (plane, b) in out.chunks_exact_mut(ho * wo).zip(bias) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        }
    }
}

/// Planes whose layout changes together.
const LANES: usize = 4;

/// The fractions in G, the kernel transform.
const SIXTH: f32 = 1.0 / 6.0;
const TWELFTH: f32 = 1.0 / 12.0;
const TWENTY_FOURTH: f32 = 1.0 / 24.0;

/// Copies images [B, C, H, W] (`dims` C, H, W) into `dst` [B, hp, wp, C] (`padded` hp, wp),
/// each image `pad` pixels down and right of the corner, with zeros around it.
fn to_nhwc(src: &[f32], dims: (usize, usize, usize), pad: usize, padded: (usize, usize), dst: &mut [f32]) {
    let ((c, h, w), (hp, wp)) = (dims, padded);
    for (image, plane) in src.chunks_exact(c * h * w).zip(dst.chunks_exact_mut(hp * wp * c)) {
        // Zeros around the image, which fills the rest.
        let (top, rest) = plane.split_at_mut(pad * wp * c);
        top.fill(0.0);
        let (middle, bottom) = rest.split_at_mut(h * wp * c);
        bottom.fill(0.0);
        for row in middle.chunks_exact_mut(wp * c) {
            row[..pad * c].fill(0.0);
            row[(pad + w) * c..].fill(0.0);
        }
        // Four planes at a time, top to bottom: the reads then stream through four
        // planes, which the prefetcher follows, rather than through all C at once.
        for first in (0..c).step_by(LANES) {
            for y in 0..h {
                let inside = &mut middle[(y * wp + pad) * c + first..];
                transpose(&image[first * h * w + y * w..], h * w, inside, c, LANES.min(c - first), w);
            }
        }
    }
}

/// Bᵀ d B of every 6x6 tile of `padded` [B, hp, wp, C] (`tiles` down and across each
/// image) into `v` [POINTS, T, C].
#[multiversion(targets("x86_64+avx2+fma"))]
fn input_tiles(padded: &[f32], tiles: (usize, usize), wp: usize, c: usize, scratch: &mut [f32], v: &mut [f32]) {
    to_points::<SIDE>(padded, tiles, wp, c, scratch, v, input_1d);
}

/// Every N x N window of `planes` [B, (th - 1) 4 + N, wp, C] at the corners of the tiles
/// (`tiles` th down and tw across each image, 4 pixels apart) through the separable
/// transform `f` into the 36 points of `v` [POINTS, T, C]: `f` down each column of a window
/// into `scratch` [column][row][C], then along each row. The input transform's walk (N = 6)
/// and the output gradient's (N = 4); inlined into each caller's compiled versions.
#[inline(always)]
fn to_points<const N: usize>(
    planes: &[f32],
    tiles: (usize, usize),
    wp: usize,
    c: usize,
    scratch: &mut [f32],
    v: &mut [f32],
    f: impl Fn([&[f32]; N], [&mut [f32]; SIDE]),
) {
    let (th, tw) = tiles;
    let t = v.len() / (POINTS * c);
    let mut points: Vec<&mut [f32]> = v.chunks_exact_mut(t * c).collect();
    let row = wp * c;
    let plane_len = ((th - 1) * TILE + N) * row;
    let mut tile = 0;
    for plane in planes.chunks_exact(plane_len) {
        for ty in 0..th {
            for tx in 0..tw {
                let corner = &plane[(ty * TILE * wp + tx * TILE) * c..];
                for (j, column) in scratch.chunks_exact_mut(SIDE * c).take(N).enumerate() {
                    let d = std::array::from_fn(|i| &corner[i * row + j * c..][..c]);
                    f(d, six(column, c));
                }
                for (i, outs) in points.chunks_exact_mut(SIDE).enumerate() {
                    let d = std::array::from_fn(|j| &scratch[(j * SIDE + i) * c..][..c]);
                    let mut outs = outs.iter_mut();
                    f(d, std::array::from_fn(|_| &mut outs.next().expect("six points")[tile * c..][..c]));
                }
                tile += 1;
            }
        }
    }
}

/// Aᵀ P A of every tile, P its 36 products in `products` [POINTS, T, M], into `out`
/// [B, th 4, tw 4, M]: Aᵀ down each column into `scratch` [column][row][M], then along
/// each row.
#[multiversion(targets("x86_64+avx2+fma"))]
fn output_tiles(products: &[f32], tiles: (usize, usize), m: usize, scratch: &mut [f32], out: &mut [f32]) {
    let (th, tw) = tiles;
    let t = products.len() / (POINTS * m);
    let points: Vec<&[f32]> = products.chunks_exact(t * m).collect();
    let row = tw * TILE * m;
    for tile in 0..t {
        let (image, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
        for (j, column) in scratch.chunks_exact_mut(TILE * m).enumerate() {
            let p = std::array::from_fn(|i| &points[i * SIDE + j][tile * m..][..m]);
            output_1d(p, four(column, m));
        }
        let corner = ((image * th + ty) * TILE * tw + tx) * TILE * m;
        for (i, out_row) in out[corner..].chunks_mut(row).take(TILE).enumerate() {
            let p = std::array::from_fn(|j| &scratch[(j * TILE + i) * m..][..m]);
            output_1d(p, four(&mut out_row[..TILE * m], m));
        }
    }
}

/// A y Aᵀ of every 4x4 tile of `tiles` [B, th 4, tw 4, M] into `y` [POINTS, T, M]: the
/// adjoint of [`output_tiles`].
#[multiversion(targets("x86_64+avx2+fma"))]
fn output_grad_tiles(tiles: &[f32], counts: (usize, usize), m: usize, scratch: &mut [f32], y: &mut [f32]) {
    to_points::<TILE>(tiles, counts, counts.1 * TILE, m, scratch, y, output_grad_1d);
}

/// Six consecutive runs of `len` floats.
pub(crate) fn six(s: &mut [f32], len: usize) -> [&mut [f32]; SIDE] {
    let mut runs = s.chunks_exact_mut(len);
    std::array::from_fn(|_| runs.next().expect("six runs"))
}

/// Four consecutive runs of `len` floats.
pub(crate) fn four(s: &mut [f32], len: usize) -> [&mut [f32]; TILE] {
    let mut runs = s.chunks_exact_mut(len);
    std::array::from_fn(|_| runs.next().expect("four runs"))
}

/// v = Bᵀ d, lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn input_1d(d: [&[f32]; SIDE], v: [&mut [f32]; SIDE]) {
    let n = v[0].len();
    let [d0, d1, d2, d3, d4, d5] = d.map(|d| &d[..n]);
    let [v0, v1, v2, v3, v4, v5] = v.map(|v| &mut v[..n]);
    for l in 0..n {
        let (a0, a1, a2, a3, a4, a5) = (d0[l], d1[l], d2[l], d3[l], d4[l], d5[l]);
        v0[l] = 4.0 * a0 - 5.0 * a2 + a4;
        v1[l] = a3 + a4 - 4.0 * (a1 + a2);
        v2[l] = a4 - a3 + 4.0 * (a1 - a2);
        v3[l] = a4 - a2 + 2.0 * (a3 - a1);
        v4[l] = a4 - a2 + 2.0 * (a1 - a3);
        v5[l] = 4.0 * a1 - 5.0 * a3 + a5;
    }
}

/// d = B v, the adjoint of [`input_1d`], lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn input_grad_1d(v: [&[f32]; SIDE], d: [&mut [f32]; SIDE]) {
    let n = d[0].len();
    let [v0, v1, v2, v3, v4, v5] = v.map(|v| &v[..n]);
    let [d0, d1, d2, d3, d4, d5] = d.map(|d| &mut d[..n]);
    for l in 0..n {
        let (sum12, diff21) = (v1[l] + v2[l], v2[l] - v1[l]);
        let (sum34, diff43) = (v3[l] + v4[l], v4[l] - v3[l]);
        d0[l] = 4.0 * v0[l];
        d1[l] = 4.0 * (diff21 + v5[l]) + 2.0 * diff43;
        d2[l] = -5.0 * v0[l] - 4.0 * sum12 - sum34;
        d3[l] = -diff21 - 2.0 * diff43 - 5.0 * v5[l];
        d4[l] = v0[l] + sum12 + sum34;
        d5[l] = v5[l];
    }
}

/// y = Aᵀ p, lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn output_1d(p: [&[f32]; SIDE], y: [&mut [f32]; TILE]) {
    let n = y[0].len();
    let [p0, p1, p2, p3, p4, p5] = p.map(|p| &p[..n]);
    let [y0, y1, y2, y3] = y.map(|y| &mut y[..n]);
    for l in 0..n {
        let (sum12, diff12) = (p1[l] + p2[l], p1[l] - p2[l]);
        let (sum34, diff34) = (p3[l] + p4[l], p3[l] - p4[l]);
        y0[l] = p0[l] + sum12 + sum34;
        y1[l] = diff12 + 2.0 * diff34;
        y2[l] = sum12 + 4.0 * sum34;
        y3[l] = diff12 + 8.0 * diff34 + p5[l];
    }
}

/// p = A y, the adjoint of [`output_1d`], lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn output_grad_1d(y: [&[f32]; TILE], p: [&mut [f32]; SIDE]) {
    let n = p[0].len();
    let [y0, y1, y2, y3] = y.map(|y| &y[..n]);
    let [p0, p1, p2, p3, p4, p5] = p.map(|p| &mut p[..n]);
    for l in 0..n {
        let (even1, odd1) = (y0[l] + y2[l], y1[l] + y3[l]);
        let (even2, odd2) = (y0[l] + 4.0 * y2[l], 2.0 * y1[l] + 8.0 * y3[l]);
        p0[l] = y0[l];
        p1[l] = even1 + odd1;
        p2[l] = even1 - odd1;
        p3[l] = even2 + odd2;
        p4[l] = even2 - odd2;
        p5[l] = y3[l];
    }
}

/// Gᵀ dU G of M kernels at once, the adjoint of [`kernel_transform`]: `points` [36, M]
/// (row-major 6x6) to `taps` [9, M] (row-major 3x3). Gᵀ along each row into `scratch`
/// [6, 3, M], then down the columns.
#[multiversion(targets("x86_64+avx2+fma"))]
fn kernel_adjoint(points: &[f32], scratch: &mut [f32], taps: &mut [f32]) {
    let m = taps.len() / 9;
    for (i, row) in scratch.chunks_exact_mut(3 * m).enumerate() {
        let u = std::array::from_fn(|j| &points[(i * SIDE + j) * m..][..m]);
        let mut outs = row.chunks_exact_mut(m);
        kernel_adjoint_1d(u, std::array::from_fn(|_| outs.next().expect("three taps")));
    }
    for j in 0..3 {
        let u = std::array::from_fn(|i| &scratch[(i * 3 + j) * m..][..m]);
        let mut column = taps.chunks_exact_mut(m).skip(j).step_by(3);
        kernel_adjoint_1d(u, std::array::from_fn(|_| column.next().expect("three taps")));
    }
}

/// g = Gᵀ u, the adjoint of [`kernel_1d`], lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn kernel_adjoint_1d(u: [&[f32]; SIDE], g: [&mut [f32]; 3]) {
    let n = g[0].len();
    let [u0, u1, u2, u3, u4, u5] = u.map(|u| &u[..n]);
    let [g0, g1, g2] = g.map(|g| &mut g[..n]);
    for l in 0..n {
        let (sum12, diff21) = (u1[l] + u2[l], u2[l] - u1[l]);
        let (sum34, diff34) = (u3[l] + u4[l], u3[l] - u4[l]);
        g0[l] = u0[l] * 0.25 - sum12 * SIXTH + sum34 * TWENTY_FOURTH;
        g1[l] = diff21 * SIXTH + diff34 * TWELFTH;
        g2[l] = (sum34 - sum12) * SIXTH + u5[l];
    }
}

/// G g Gᵀ of M kernels at once: `taps` [9, M] holds tap k (row-major 3x3) of every kernel;
/// the 36 points [36, M] (row-major 6x6) are appended to `u`. G down the kernels' columns
/// into `scratch` [6, 3, M], then along the rows, straight into `u`.
#[multiversion(targets("x86_64+avx2+fma"))]
fn kernel_transform(taps: &[f32], scratch: &mut [f32], u: &mut Vec<f32>) {
    let m = taps.len() / 9;
    let tap = |k: usize| &taps[k * m..(k + 1) * m];
    for j in 0..3 {
        let mut rows = scratch.chunks_exact_mut(3 * m).map(|r| &mut r[j * m..(j + 1) * m]);
        kernel_1d([tap(j), tap(3 + j), tap(6 + j)], std::array::from_fn(|_| rows.next().expect("six rows")));
    }
    let start = u.len();
    u.resize(start + POINTS * m, 0.0);
    for (i, row) in u[start..].chunks_exact_mut(SIDE * m).enumerate() {
        let g = std::array::from_fn(|j| &scratch[(i * 3 + j) * m..][..m]);
        kernel_1d(g, six(row, m));
    }
}

/// u = G g, lane by lane over vectors of equal length.
#[inline(always)]
pub(crate) fn kernel_1d(g: [&[f32]; 3], u: [&mut [f32]; SIDE]) {
    let n = u[0].len();
    let [g0, g1, g2] = g.map(|g| &g[..n]);
    let [u0, u1, u2, u3, u4, u5] = u.map(|u| &mut u[..n]);
    for l in 0..n {
        let (a, b, c) = (g0[l], g1[l], g2[l]);
        u0[l] = a * 0.25;
        u1[l] = -(a + b + c) * SIXTH;
        u2[l] = -(a - b + c) * SIXTH;
        u3[l] = a * TWENTY_FOURTH + b * TWELFTH + c * SIXTH;
        u4[l] = a * TWENTY_FOURTH - b * TWELFTH + c * SIXTH;
        u5[l] = c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::im2col;
    use crate::nn::conv::layers::ConvConfig;
    use crate::nn::conv::op::Kind;
    use crate::nn::conv::testing::{normal, rel_err, rng};

    /// The geometry of a 3x3 convolution at stride 1: batch, channels in and out, height,
    /// width and padding.
    fn geometry(n: usize, c: usize, m: usize, h: usize, w: usize, padding: usize) -> Geometry {
        let (batch, g) = Kind::Conv(ConvConfig { stride: 1, padding }).geometry(&[n, c, h, w], &[m, c, 3, 3]).unwrap();
        assert_eq!(batch, n);
        g
    }

    /// Forward pass and input gradient against the im2col kernel on random data: channels
    /// that are not multiples of the four planes transposed together, planes that are not
    /// whole tiles, every padding, one image and several, and channels thinner than the
    /// dispatcher sends here.
    #[test]
    fn matches_im2col_forward_and_input_gradient() {
        let mut r = rng(21);
        for (n, c, m, h, w, pad) in [
            (1, 8, 12, 8, 8, 1),
            (3, 13, 9, 7, 5, 0),
            (2, 10, 17, 5, 9, 2),
            (1, 9, 11, 1, 9, 1),
            (4, 11, 8, 13, 4, 1),
            (2, 3, 5, 6, 6, 1),
        ] {
            let g = geometry(n, c, m, h, w, pad);
            let (input, weight) = (normal(&mut r, n * c * g.hw()), normal(&mut r, m * g.k()));
            let (output, bias) = (normal(&mut r, n * m * g.p()), normal(&mut r, m));
            let plan = im2col::plan(&g, n, 1);
            let forward = Winograd::correlate(&g, &weight).run(plan, &input, Some(&bias));
            let want = im2col::correlate(&g, plan, &input, &weight, Some(&bias));
            assert!(rel_err(&forward, &want) < 1e-5, "forward, {g:?}: {}", rel_err(&forward, &want));
            let grad = Winograd::scatter(&g, &weight).run(plan, &output, None);
            let want = im2col::scatter(&g, plan, &output, &weight, None);
            assert!(rel_err(&grad, &want) < 1e-5, "input gradient, {g:?}: {}", rel_err(&grad, &want));
            let dw = weight_grad(&g, weight_grad_plan(&g, n, 1), &output, &input);
            let want = im2col::weight_grad(&g, plan, &output, &input);
            assert!(rel_err(&dw, &want) < 1e-5, "weight gradient, {g:?}: {}", rel_err(&dw, &want));
        }
    }

    /// The weight gradient is the adjoint of the forward pass in the kernel: for any dW',
    /// <dY, conv(x; dW')> = <weight_grad(dY, x), dW'>, in f64 sums, on a map of several
    /// tiles with partial ones at its edges.
    #[test]
    fn weight_gradient_is_the_adjoint_of_the_forward_pass() {
        let mut r = rng(23);
        for pad in 0..=2 {
            let (n, g) = (2, geometry(2, 5, 7, 9, 6, pad));
            let (input, probe) = (normal(&mut r, n * g.c * g.hw()), normal(&mut r, g.m * g.k()));
            let output = normal(&mut r, n * g.m * g.p());
            let plan = im2col::plan(&g, n, 1);
            let forward = im2col::correlate(&g, plan, &input, &probe, None);
            let dw = weight_grad(&g, weight_grad_plan(&g, n, 1), &output, &input);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
            let (lhs, rhs) = (dot(&output, &forward), dot(&dw, &probe));
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "padding {pad}: {lhs} against {rhs}");
        }
    }

    /// All three passes on any block plan, across threads or not, against one block of the
    /// whole batch.
    #[test]
    fn any_blocking_and_threading_give_the_same_result() {
        let mut r = rng(22);
        let (n, g) = (5, geometry(5, 9, 10, 7, 6, 1));
        let (input, weight) = (normal(&mut r, n * g.c * g.hw()), normal(&mut r, g.m * g.k()));
        let (output, bias) = (normal(&mut r, n * g.m * g.p()), normal(&mut r, g.m));
        let (forward, adjoint) = (Winograd::correlate(&g, &weight), Winograd::scatter(&g, &weight));
        let all = |block, across| {
            let plan = Plan { block, across };
            let weight_grad = weight_grad(&g, plan, &output, &input);
            (forward.run(plan, &input, Some(&bias)), adjoint.run(plan, &output, None), weight_grad)
        };
        let whole = all(n, false);
        for (block, across) in [(1, false), (2, false), (1, true), (2, true), (n, true)] {
            let part = all(block, across);
            assert!(rel_err(&part.0, &whole.0) < 1e-6);
            assert!(rel_err(&part.1, &whole.1) < 1e-6);
            // The weight gradient sums over blocks, so its rounding follows the blocking.
            assert!(rel_err(&part.2, &whole.2) < 1e-5, "{block} {across}: {}", rel_err(&part.2, &whole.2));
        }
    }
}
