//! One whole gated layer of the PixelCNN as a single CPU op, with its own backward pass.
//!
//! The two stacks travel as one map `state` [N H W, 2C], one pixel a row: columns 0..C are the
//! vertical stack, C..2C the horizontal one. The op computes, for the layer's parameters
//! (module docs of [`super`]; `c` its conditioning),
//!
//! ```text
//! v_pre = v_conv(v_in)                                a_v = v_pre + c
//! a_h = v_to_h(v_pre) + h_conv(h_in) + c
//! state_out = [gate(a_v) | h_out(gate(a_h)) + h_in]   (no + h_in in the first layer)
//! ```
//!
//! where `c` is the sum of the projected top codes, top_proj(features) of the upsampled top
//! codes' features (an input [N H W, C], when the model has them), and row `labels[n]` of the
//! class table (when it is class-conditional), added to every pixel of image n. The first
//! layer applies mask A by reading only the unmasked taps (the first 3 of `V_TAPS`, the
//! vertical kernel's first row, and the first 1 of [`H_TAPS`]): half its convolution work,
//! and the masked taps' gradient is exactly zero. The vertical convolution runs in Winograd
//! form ([`VConv`]), the horizontal one as an unfold and a product.
//!
//! Why: as separate candle ops a layer is about ten activation-sized edges (unfolds, products,
//! adds, gates), each with its own buffers and gradient bookkeeping in candle's backward pass
//! (a zero-filled gradient and an addition per input, before the patch of vendor/README.md);
//! this op has three inputs, writes its gradients once, and
//! keeps only what its backward pass needs (the gates' halves, v_pre, gate(a_h)); the
//! transforms and the unfold are recomputed there rather than stored. The top codes' projection is part of the op, not twelve candle linear layers
//! with twelve gradients of the shared features to add: 7 % of the bottom prior's training.
//!
//! The passes run in blocks of whole images ([`BLOCK_ROWS`]), each block on one thread: the
//! elementwise passes then find their operands in the core's caches, not in memory, and a
//! layer is one parallel region per pass rather than one per product.
//!
//! Device rule: a CPU kernel (f32), run on the [`OpPath::Fused`](super::ops::OpPath) path;
//! elsewhere the network runs the composed candle ops of `GatedLayer::forward`, which
//! `composed_path_matches_the_fused_one_in_logits_and_every_gradient` and
//! `the_layer_op_matches_the_composed_layer` test it against.
//!
//! Every entry is a fixed sum in a fixed order whatever the thread count: the blocks depend on
//! the batch alone ([`Plan`]), the products split only their output over threads, the sums
//! over rows (biases, the class table) run in row order within a block, and the blocks' parts
//! of the weights' gradient are added in block order.

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{gate_grad_kept, gate_row_keeping, shifted, H_TAPS};
use super::vconv::{Buffers as VConvBuffers, VConv};
use crate::nn::conv::plan::{add_in_order, sized, Plan};
use crate::nn::functional::zeros;
use crate::nn::gemm::{contiguous_f32, product, product_strided, Mat};

/// Taps of the horizontal kernel the first layer reads: those mask A leaves, a prefix of
/// [`H_TAPS`] (the masked ones are `H_MASKED` of the model; of the vertical kernel it reads
/// the first row, see [`VConv`]).
pub(super) const H_UNMASKED: usize = 1;

/// Lengths of the layer's parameters in the flat `weights` input, in order: v_conv weight
/// [2C, C, 2, 3] and bias, h_conv [2C, C, 1, 2] and bias, v_to_h [2C, 2C] and bias, h_out
/// [C, C] and bias, the class table [classes, 2C] (empty without classes), top_proj [2C, C]
/// and bias (empty without top codes). Weights are in PyTorch's order, [out, in, kh, kw].
fn sizes(c: usize, classes: usize, top: bool) -> [usize; 11] {
    let t = usize::from(top);
    [12 * c * c, 2 * c, 4 * c * c, 2 * c, 4 * c * c, 2 * c, c * c, c, classes * 2 * c, t * 2 * c * c, t * 2 * c]
}

fn split(mut w: &[f32], sizes: [usize; 11]) -> [&[f32]; 11] {
    sizes.map(|n| {
        let (a, b) = w.split_at(n);
        w = b;
        a
    })
}

fn split_mut(mut w: &mut [f32], sizes: [usize; 11]) -> [&mut [f32]; 11] {
    sizes.map(|n| {
        let (a, b) = std::mem::take(&mut w).split_at_mut(n);
        w = b;
        a
    })
}

/// What the backward pass keeps from the forward pass.
struct Saved {
    /// Each block's arrays, in block order.
    blocks: Vec<SavedBlock>,
    /// The vertical convolution, its kernels transformed.
    vconv: VConv,
    /// The horizontal convolution's weight, taps major, used taps only: [2C, T C].
    wh: Vec<f32>,
}

/// What the backward pass keeps of one block of images, allocated and first written by the
/// thread that runs the block (a serial zero fill of the whole batch's arrays took a tenth of
/// the forward pass on 2 cores).
struct SavedBlock {
    /// The gates' halves of both stacks, [rows, 2C] each: tanh(f) and sigmoid(g) of a_v and
    /// a_h (see [`gate_row_keeping`]), from which the gates' gradient needs no exponential.
    a_v: Vec<f32>,
    a_h: Vec<f32>,
    v_pre: Vec<f32>,
    /// gate(a_h) [rows, C].
    gh: Vec<f32>,
}

/// One gated layer; see the module docs.
pub(super) struct LayerOp {
    c: usize,
    height: usize,
    width: usize,
    first: bool,
    /// Class label of each image, with the class table's row count.
    labels: Option<(Vec<u32>, usize)>,
    /// Whether the model takes top codes: an input of their features, and top_proj's
    /// parameters at the end of the weights.
    top: bool,
    /// Whether to keep [`Saved`] for a backward pass (some input needs a gradient).
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

/// The flat `weights` input of [`apply`]: the layer's parameters flattened and concatenated
/// in the order of [`sizes`] (candle's cat hands each its part of the gradient).
pub(super) fn flat_weights(parts: &[&Tensor]) -> candle_core::Result<Tensor> {
    let flat = parts.iter().map(|t| t.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&flat, 0)
}

/// The layer on `state` [N H W, 2C] of maps of `size` (height, width) pixels, with the top
/// codes' features `features` [N H W, C] if the model has them (then `weights` ends with
/// top_proj's), the parameters `weights` (see [`flat_weights`]) and the images' class
/// labels with the class table's row count if the model is class-conditional. `first`
/// applies mask A and leaves out the residual.
pub(super) fn apply(
    state: &Tensor,
    features: Option<&Tensor>,
    weights: &Tensor,
    size: (usize, usize),
    first: bool,
    labels: Option<(Vec<u32>, usize)>,
) -> candle_core::Result<Tensor> {
    let (_, c2) = state.dims2()?;
    let keep = state.track_op() || weights.track_op() || features.is_some_and(|k| k.track_op());
    let top = features.is_some();
    let op = LayerOp { c: c2 / 2, height: size.0, width: size.1, first, labels, top, keep, saved: Mutex::new(None) };
    let (state, weights) = (state.contiguous()?, weights.contiguous()?);
    match features {
        Some(k) => state.apply_op3(&k.contiguous()?, &weights, op),
        None => state.apply_op2(&weights, op),
    }
}

const NAME: &str = "gated-layer";

/// The CPU data of contiguous f32 tensors, for a backward pass.
fn with_slices<T>(tensors: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> candle_core::Result<T>) -> candle_core::Result<T> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => slices.push(contiguous_f32(NAME, s, layout)?),
            _ => candle_core::bail!("{NAME}: CPU tensors only"),
        }
    }
    f(&slices)
}

/// A PyTorch-order conv weight [out, C, T] as the taps-major matrix [out, U C] of its first
/// `used` taps: entry (o, t C + c) is w[o, c, t].
fn tap_major(w: &[f32], out: usize, c: usize, taps: usize, used: usize) -> Vec<f32> {
    let mut m = vec![0f32; out * used * c];
    for (o, row) in m.chunks_exact_mut(used * c).enumerate() {
        for (t, dst) in row.chunks_exact_mut(c).enumerate() {
            dst.iter_mut().enumerate().for_each(|(ch, d)| *d = w[(o * c + ch) * taps + t]);
        }
    }
    m
}

/// The adjoint of [`tap_major`]: writes the taps-major gradient `m` [out, U C] into the
/// PyTorch-order `w` [out, C, T], leaving the unused taps as they are (zero).
fn tap_major_back(m: &[f32], w: &mut [f32], c: usize, taps: usize, used: usize) {
    for (o, row) in m.chunks_exact(used * c).enumerate() {
        for (t, src) in row.chunks_exact(c).enumerate() {
            src.iter().enumerate().for_each(|(ch, &v)| w[(o * c + ch) * taps + t] = v);
        }
    }
}

#[inline]
fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// Column sums of the `rows` x `out.len()` matrix whose rows lie `rs` apart in `data`, into
/// `out`, in row order.
fn column_sums(data: &[f32], rows: usize, rs: usize, out: &mut [f32]) {
    out.fill(0.0);
    for r in 0..rows {
        add(out, &data[r * rs..][..out.len()]);
    }
}

/// The sum of the blocks' parts of a gradient, added in block order: each float's sum runs
/// in an order fixed by the plan, whichever thread ran which block.
fn sum_in_order<'a>(parts: impl Iterator<Item = &'a [f32]>, len: usize) -> Vec<f32> {
    let mut sum = vec![0f32; len];
    add_in_order(&mut sum, &parts.collect::<Vec<_>>());
    sum
}

/// Rows of the maps that one block of the passes takes, about (whole images, at most a
/// quarter of the batch): a block's activations, a dozen arrays [rows, 2C] or [rows, C], are
/// then mostly in a core's caches between the passes over them, where the whole batch's
/// would stream from memory at each. Blocks of 512 to 2,048 rows ran the bottom prior's
/// training (64 channels) equally fast, 12 % faster than the whole batch at once; blocks of
/// 128 were 25 % slower (the weight gradients' parts added per block).
const BLOCK_ROWS: usize = 2048;

/// A thread's buffers, reused from block to block.
#[derive(Default)]
struct Scratch {
    vconv: VConvBuffers,
    /// The horizontal unfold, or its gradient [rows, T C].
    uh: Vec<f32>,
    /// gate(a_h)'s gradient [rows, C].
    d_gh: Vec<f32>,
    /// The projected top codes, or their gradient [rows, 2C].
    cond: Vec<f32>,
}

thread_local! {
    /// Each thread's [`Scratch`], kept from call to call: fresh buffers per block cost as
    /// much as the Winograd transforms that fill them (page faults and zero fills).
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f(scratch, job, parallel)` on each block's job, in order of the results: on
/// separate threads when `plan.across`, else in turn with `parallel` set, for `f`'s
/// products to split their work. Either way every float comes out the same.
fn run_blocks<J: Send, R: Send>(plan: Plan, jobs: Vec<J>, f: impl Fn(&mut Scratch, J, bool) -> R + Sync) -> Vec<R> {
    // A thread that steals another block while its own waits gets buffers of its own.
    let run = |job, parallel| {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => f(&mut s, job, parallel),
            Err(_) => f(&mut Scratch::default(), job, parallel),
        })
    };
    if plan.across {
        jobs.into_par_iter().map(|job| run(job, false)).collect()
    } else {
        jobs.into_iter().map(|job| run(job, true)).collect()
    }
}

/// The `blocks` chunks of `len` floats of an optional output, or as many `None`s.
fn chunks(v: Option<&mut [f32]>, len: usize, blocks: usize) -> Vec<Option<&mut [f32]>> {
    match v {
        Some(v) => v.chunks_mut(len).map(Some).collect(),
        None => (0..blocks).map(|_| None).collect(),
    }
}

/// The layer's parameters as its passes use them.
struct Weights<'a> {
    vb: &'a [f32],
    vhw: &'a [f32],
    ow: &'a [f32],
    ob: &'a [f32],
    class: &'a [f32],
    /// top_proj's weight [2C, C] and bias (empty without top codes).
    top_w: &'a [f32],
    top_b: &'a [f32],
    /// a_h's bias: h_conv's plus v_to_h's.
    bias_h: Vec<f32>,
    vconv: VConv,
    /// h_conv's weight, taps major, used taps only: [2C, T C].
    wh: Vec<f32>,
}

impl<'a> Weights<'a> {
    fn new(op: &LayerOp, weights: &'a [f32]) -> Self {
        let [vw, _, hw, ..] = split(weights, sizes(op.c, op.classes(), op.top));
        let vconv = VConv::new(vw, op.c, (op.height, op.width), op.first);
        let wh = tap_major(hw, 2 * op.c, op.c, H_TAPS.len(), op.h_taps().len());
        Self::with(op, weights, vconv, wh)
    }

    /// With the convolutions' weights as [`Saved`] keeps them.
    fn with(op: &LayerOp, weights: &'a [f32], vconv: VConv, wh: Vec<f32>) -> Self {
        let [_, vb, _, hb, vhw, vhb, ow, ob, class, top_w, top_b] = split(weights, sizes(op.c, op.classes(), op.top));
        let bias_h = hb.iter().zip(vhb).map(|(a, b)| a + b).collect();
        Weights { vb, vhw, ow, ob, class, top_w, top_b, bias_h, vconv, wh }
    }
}

/// One block's inputs and outputs in the forward pass: its rows of every array.
struct ForwardBlock<'a> {
    x: &'a [f32],
    /// The top codes' features [rows, C].
    features: Option<&'a [f32]>,
    labels: Option<&'a [u32]>,
    out: &'a mut [f32],
}

/// One block's inputs and outputs in the backward pass; the gates' halves turn into their
/// gradients in place.
struct BackwardBlock<'a> {
    x: &'a [f32],
    g: &'a [f32],
    labels: Option<&'a [u32]>,
    saved: SavedBlock,
    features: Option<&'a [f32]>,
    dx: Option<&'a mut [f32]>,
    d_features: Option<&'a mut [f32]>,
}

impl LayerOp {
    /// The taps of the horizontal convolution that this layer reads (the vertical one's
    /// are [`VConv`]'s).
    fn h_taps(&self) -> &'static [(isize, isize)] {
        if self.first {
            &H_TAPS[..H_UNMASKED]
        } else {
            H_TAPS
        }
    }

    fn hw(&self) -> usize {
        self.height * self.width
    }

    fn classes(&self) -> usize {
        self.labels.as_ref().map_or(0, |l| l.1)
    }

    /// Checks the inputs' shapes; returns the rows R.
    fn check(&self, state: &Layout, features: Option<&Layout>, weights: &Layout) -> candle_core::Result<usize> {
        let (rows, c2) = state.shape().dims2()?;
        let (hw, c) = (self.hw(), self.c);
        if c == 0 || c2 != 2 * c || hw == 0 || rows % hw != 0 {
            candle_core::bail!(
                "{NAME}: state {:?} is not rows of {}x{} maps of 2C",
                state.dims(),
                self.height,
                self.width
            )
        }
        if let Some(k) = features {
            if k.dims() != [rows, c] {
                candle_core::bail!("{NAME}: top features {:?} for state {:?}", k.dims(), state.dims())
            }
        }
        let want: usize = sizes(c, self.classes(), self.top).iter().sum();
        if weights.shape().elem_count() != want || weights.dims().len() != 1 {
            candle_core::bail!("{NAME}: weights {:?}, expected [{want}]", weights.dims())
        }
        if let Some((labels, classes)) = &self.labels {
            if labels.len() != rows / hw || labels.iter().any(|&y| y as usize >= *classes) {
                candle_core::bail!("{NAME}: {} labels below {classes} for {} maps", labels.len(), rows / hw)
            }
        }
        Ok(rows)
    }

    /// The blocks of whole images that the passes cut a batch of `n` maps into: about
    /// [`BLOCK_ROWS`] rows each, at least one image, at most a quarter of the batch.
    fn plan(&self, n: usize) -> Plan {
        Plan::fitting(n, self.hw(), BLOCK_ROWS, rayon::current_num_threads())
    }

    /// The unfold of one stack (columns `off..off + C` of a block of `x` [B H W, 2C]) for
    /// `taps` into `u` [B H W, T C]: entry (t, c) of a row is channel c of the pixel at tap
    /// t, 0 outside the map.
    fn unfold(&self, x: &[f32], off: usize, taps: &[(isize, isize)], u: &mut [f32]) {
        let (c, hw, (h, w)) = (self.c, self.hw(), (self.height, self.width));
        for (p, row) in u.chunks_exact_mut(taps.len() * c).enumerate() {
            let (base, q) = (p - p % hw, p % hw);
            for (&tap, d) in taps.iter().zip(row.chunks_exact_mut(c)) {
                match shifted(q / w, q % w, tap, h, w) {
                    Some(src) => d.copy_from_slice(&x[(base + src) * 2 * c + off..][..c]),
                    None => d.fill(0.0),
                }
            }
        }
    }

    /// The adjoint of [`LayerOp::unfold`]: adds each entry of `du` [B H W, T C] onto the
    /// pixel it was taken from, in columns `off..off + C` of the block's `dx` [B H W, 2C].
    fn fold(&self, du: &[f32], dx: &mut [f32], off: usize, taps: &[(isize, isize)]) {
        let (c, hw, (h, w)) = (self.c, self.hw(), (self.height, self.width));
        for (p, row) in du.chunks_exact(taps.len() * c).enumerate() {
            let (base, q) = (p - p % hw, p % hw);
            for (&tap, v) in taps.iter().zip(row.chunks_exact(c)) {
                if let Some(src) = shifted(q / w, q % w, tap, h, w) {
                    add(&mut dx[(base + src) * 2 * c + off..][..c], v);
                }
            }
        }
    }

    /// The forward pass: state_out [R, 2C] and what the backward pass needs, block by block.
    fn forward(&self, x: &[f32], features: Option<&[f32]>, weights: &[f32]) -> (Vec<f32>, Saved) {
        let (c2, hw) = (2 * self.c, self.hw());
        let rows = x.len() / c2;
        let w = Weights::new(self, weights);
        let mut out = zeros(rows * c2);
        let plan = self.plan(rows / hw);
        let (images, len) = (plan.block, plan.block * hw * c2);
        let jobs: Vec<_> = out
            .chunks_mut(len)
            .enumerate()
            .map(|(b, out)| {
                let at = b * len..b * len + out.len();
                let x = &x[at.clone()];
                let features = features.map(|f| &f[at.start / 2..at.end / 2]);
                let labels = self.labels.as_ref().map(|l| &l.0[b * images..][..out.len() / (hw * c2)]);
                ForwardBlock { x, features, labels, out }
            })
            .collect();
        let blocks = run_blocks(plan, jobs, |s, job, par| self.forward_block(&w, s, job, par));
        let Weights { vconv, wh, .. } = w;
        (out, Saved { blocks, vconv, wh })
    }

    fn forward_block(&self, w: &Weights, s: &mut Scratch, job: ForwardBlock, par: bool) -> SavedBlock {
        let ForwardBlock { x, features, labels, out } = job;
        let (c, c2, hw) = (self.c, 2 * self.c, self.hw());
        let rows = x.len() / c2;
        let th = self.h_taps();
        let thc = th.len() * c;
        let mut v_pre = vec![0f32; rows * c2];
        w.vconv.forward_block(&mut s.vconv, x, w.vb, &mut v_pre, par);
        let uh = sized(&mut s.uh, rows * thc);
        self.unfold(x, c, th, uh);
        // a_h starts as its bias and a_v as v_pre: no zero fill before them.
        let mut a_h = Vec::with_capacity(rows * c2);
        (0..rows).for_each(|_| a_h.extend_from_slice(&w.bias_h));
        product(&mut a_h, Mat::rows(uh, rows, thc), Mat::rows(&w.wh, c2, thc).t(), true, par);
        product(&mut a_h, Mat::rows(&v_pre, rows, c2), Mat::rows(w.vhw, c2, c2).t(), true, par);
        let mut saved = SavedBlock { a_v: v_pre.clone(), a_h, v_pre, gh: vec![0f32; rows * c] };
        let SavedBlock { a_v, a_h, gh, .. } = &mut saved;

        // Conditioning, gates, and the h half of the output up to the h_out product.
        let cond = features.map(|f| {
            let k = sized(&mut s.cond, rows * c2);
            k.chunks_exact_mut(c2).for_each(|row| row.copy_from_slice(w.top_b));
            product(k, Mat::rows(f, rows, c), Mat::rows(w.top_w, c2, c).t(), true, par);
            &*k
        });
        let ins = a_v.chunks_exact_mut(c2).zip(a_h.chunks_exact_mut(c2));
        let outs = out.chunks_exact_mut(c2).zip(gh.chunks_exact_mut(c)).zip(x.chunks_exact(c2));
        for (r, ((av, ah), ((o, g), x))) in ins.zip(outs).enumerate() {
            if let Some(k) = cond {
                add(av, &k[r * c2..][..c2]);
                add(ah, &k[r * c2..][..c2]);
            }
            if let Some(labels) = labels {
                let e = &w.class[labels[r / hw] as usize * c2..][..c2];
                add(av, e);
                add(ah, e);
            }
            let (ov, oh) = o.split_at_mut(c);
            let (f, s) = av.split_at_mut(c);
            gate_row_keeping(ov, f, s);
            let (f, s) = ah.split_at_mut(c);
            gate_row_keeping(g, f, s);
            oh.copy_from_slice(w.ob);
            if !self.first {
                add(oh, &x[c..]);
            }
        }
        if rows > 0 {
            product_strided(&mut out[c..], c2, Mat::rows(gh, rows, c), Mat::rows(w.ow, c, c).t(), true, par);
        }
        saved
    }

    /// The backward pass from the output gradient `g` [R, 2C]: the gradients of the state
    /// (when `need_x`), of the top codes' features (given with whether their gradient is
    /// needed) and of the weights. Each block writes its part of the weights' gradient, and
    /// the parts are added in block order.
    fn backward(
        &self,
        x: &[f32],
        weights: &[f32],
        g: &[f32],
        saved: Saved,
        need_x: bool,
        features: Option<(&[f32], bool)>,
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>, Vec<f32>) {
        let need_features = features.is_some_and(|f| f.1);
        let features = features.map(|f| f.0);
        let (c2, hw) = (2 * self.c, self.hw());
        let rows = x.len() / c2;
        let Saved { blocks: saved, vconv, wh } = saved;
        let w = Weights::with(self, weights, vconv, wh);
        let mut dx = need_x.then(|| zeros(rows * c2));
        let mut d_features = need_features.then(|| zeros(rows * self.c));
        let plan = self.plan(rows / hw);
        let (images, len) = (plan.block, plan.block * hw * c2);
        let blocks = rows.div_ceil(plan.block * hw);
        let (dxs, dks) = (chunks(dx.as_deref_mut(), len, blocks), chunks(d_features.as_deref_mut(), len / 2, blocks));
        let jobs: Vec<_> = saved
            .into_iter()
            .zip(dxs.into_iter().zip(dks))
            .enumerate()
            .map(|(b, (saved, (dx, d_features)))| {
                let at = b * len..b * len + saved.a_v.len();
                let labels = self.labels.as_ref().map(|l| &l.0[b * images..][..at.len() / (hw * c2)]);
                let features = features.map(|f| &f[at.start / 2..at.end / 2]);
                let (x, g) = (&x[at.clone()], &g[at]);
                BackwardBlock { x, g, labels, saved, features, dx, d_features }
            })
            .collect();
        let parts = run_blocks(plan, jobs, |s, job, par| self.backward_block(&w, s, job, par));
        let mut dw = sum_in_order(parts.iter().map(|p| &p.0[..]), weights.len());
        let du = sum_in_order(parts.iter().map(|p| &p.1[..]), w.vconv.du_len());
        split_mut(&mut dw, sizes(self.c, self.classes(), self.top))[0].copy_from_slice(&w.vconv.weight_grad(&du));
        (dx, d_features, dw)
    }

    /// One block's backward pass: its input gradients in place, and its parts of the weights'
    /// gradient (v_conv's left zero) and of v_conv's transformed one.
    fn backward_block(&self, w: &Weights, s: &mut Scratch, job: BackwardBlock, par: bool) -> (Vec<f32>, Vec<f32>) {
        let BackwardBlock { x, g, labels, saved, features, mut dx, d_features } = job;
        let SavedBlock { mut a_v, mut a_h, v_pre, gh } = saved;
        let (a_v, a_h, v_pre, gh) = (&mut a_v[..], &mut a_h[..], &v_pre[..], &gh[..]);
        let (c, c2, hw) = (self.c, 2 * self.c, self.hw());
        let rows = x.len() / c2;
        let sizes = sizes(c, self.classes(), self.top);
        let mut dw = vec![0f32; sizes.iter().sum()];
        let [_, dvb, dhw, dhb, dvhw, dvhb, dow, dob, dclass, dtop_w, dtop_b] = split_mut(&mut dw, sizes);
        let th = self.h_taps();
        let thc = th.len() * c;
        let g_h = Mat { data: g.get(c..).unwrap_or(&[]), rows, cols: c, rs: c2, cs: 1 };

        // h_out, then the gates' input gradients in place of their inputs, and from them the
        // conditioning's gradient (both stacks' pre-activation gradients, summed).
        let mut d_cond = features.map(|_| sized(&mut s.cond, rows * c2));
        product(dow, g_h.t(), Mat::rows(gh, rows, c), false, par);
        column_sums(g_h.data, rows, c2, dob);
        let d_gh = sized(&mut s.d_gh, rows * c);
        product(d_gh, g_h, Mat::rows(w.ow, c, c), false, par);
        let ins = a_v.chunks_exact_mut(c2).zip(a_h.chunks_exact_mut(c2));
        for (r, ((av, ah), (gr, dg))) in ins.zip(g.chunks_exact(c2).zip(d_gh.chunks_exact(c))).enumerate() {
            let (f, sg) = av.split_at_mut(c);
            gate_grad_kept(f, sg, &gr[..c]);
            let (f, sg) = ah.split_at_mut(c);
            gate_grad_kept(f, sg, dg);
            if let Some(k) = d_cond.as_deref_mut() {
                let k = &mut k[r * c2..][..c2];
                k.copy_from_slice(av);
                add(k, ah);
            }
            if let Some(labels) = labels {
                let e = &mut dclass[labels[r / hw] as usize * c2..][..c2];
                add(e, av);
                add(e, ah);
            }
        }
        let (da_v, da_h) = (a_v, a_h);
        if let (Some(k), Some(f)) = (d_cond, features) {
            product(dtop_w, Mat::rows(k, rows, c2).t(), Mat::rows(f, rows, c), false, par);
            column_sums(k, rows, c2, dtop_b);
            if let Some(df) = d_features {
                product(df, Mat::rows(k, rows, c2), Mat::rows(w.top_w, c2, c), false, par);
            }
        }

        // The horizontal stack: h_conv and v_to_h.
        column_sums(da_h, rows, c2, dhb);
        dvhb.copy_from_slice(dhb);
        let da_h_m = Mat::rows(da_h, rows, c2);
        product(dvhw, da_h_m.t(), Mat::rows(v_pre, rows, c2), false, par);
        if let (Some(dx), false) = (dx.as_deref_mut(), self.first) {
            for (d, gr) in dx.chunks_exact_mut(c2).zip(g.chunks_exact(c2)) {
                d[c..].copy_from_slice(&gr[c..]);
            }
        }
        let uh = sized(&mut s.uh, rows * thc);
        self.unfold(x, c, th, uh);
        let mut dwh = vec![0f32; c2 * thc];
        product(&mut dwh, da_h_m.t(), Mat::rows(uh, rows, thc), false, par);
        tap_major_back(&dwh, dhw, c, H_TAPS.len(), th.len());
        if let Some(dx) = dx.as_deref_mut() {
            product(uh, da_h_m, Mat::rows(&w.wh, c2, thc), false, par);
            self.fold(uh, dx, c, th);
        }

        // The vertical stack: dv_pre = da_v + da_h v_to_h, then v_conv.
        product(da_v, da_h_m, Mat::rows(w.vhw, c2, c2), true, par);
        let dv = &*da_v;
        column_sums(dv, rows, c2, dvb);
        let mut du = vec![0f32; w.vconv.du_len()];
        w.vconv.backward_block(&mut s.vconv, x, dv, &mut du, dx, par);
        (dw, du)
    }

    fn cpu_forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        features: Option<(&CpuStorage, &Layout)>,
        (ws, wl): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(xl, features.map(|k| k.1), wl)?;
        let x = contiguous_f32(NAME, xs, xl)?;
        let k = features.map(|(s, l)| contiguous_f32(NAME, s, l)).transpose()?;
        let (out, saved) = self.forward(x, k, contiguous_f32(NAME, ws, wl)?);
        if self.keep {
            *self.saved.lock().map_err(|_| candle_core::Error::Msg(format!("{NAME}: poisoned")))? = Some(saved);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, 2 * self.c))))
    }

    /// The gradients of state, top features and weights from that of the output.
    fn grads(
        &self,
        state: &Tensor,
        features: Option<&Tensor>,
        weights: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        if grad.dims() != state.dims() {
            candle_core::bail!("{NAME}: gradient {:?} for state {:?}", grad.dims(), state.dims())
        }
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg(format!("{NAME}: poisoned")))?.take();
        let mut tensors = vec![state, weights, &grad];
        tensors.extend(features);
        let (need_x, need_features) = (state.track_op(), features.is_some_and(|k| k.track_op()));
        let (dx, df, dw) = with_slices(&tensors, |s| {
            let features = s.get(3).copied();
            // A second backward pass over the same graph recomputes the forward pass.
            let saved = match saved {
                Some(saved) => saved,
                None => self.forward(s[0], features, s[1]).1,
            };
            Ok(self.backward(s[0], s[1], s[2], saved, need_x, features.map(|f| (f, need_features))))
        })?;
        let dev = state.device();
        let dx = dx.map(|d| Tensor::from_vec(d, state.dims(), dev)).transpose()?;
        let df = match (df, features) {
            (Some(d), Some(f)) => Some(Tensor::from_vec(d, f.dims(), dev)?),
            _ => None,
        };
        let dw = weights.track_op().then(|| Tensor::from_vec(dw, weights.dims(), dev)).transpose()?;
        Ok((dx, df, dw))
    }
}

impl CustomOp2 for LayerOp {
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
        self.cpu_forward((s1, l1), None, (s2, l2))
    }

    fn bwd(
        &self,
        state: &Tensor,
        weights: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, _, dw) = self.grads(state, None, weights, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LayerOp {
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
        self.cpu_forward((s1, l1), Some((s2, l2)), (s3, l3))
    }

    fn bwd(
        &self,
        state: &Tensor,
        features: &Tensor,
        weights: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(state, Some(features), weights, grad)
    }
}
