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
//! where `c` is the sum of the projected top codes (an input [N H W, 2C], when the model has
//! them) and row `labels[n]` of the class table (when it is class-conditional), added to
//! every pixel of image n. The first layer applies mask A by reading only the unmasked taps
//! (the first 3 of `V_TAPS`, the vertical kernel's first row, and the first 1 of [`H_TAPS`]):
//! half its convolution work, and the masked taps' gradient is exactly zero. The vertical
//! convolution runs in Winograd form ([`VConv`]), the horizontal one as an unfold and a
//! product.
//!
//! Why: as separate candle ops a layer is about ten activation-sized edges (unfolds, products,
//! adds, gates), each with its own buffers and gradient bookkeeping in candle's backward pass
//! (a zero-filled gradient and an addition per input, before the patch of vendor/README.md);
//! this op has three inputs, writes its gradients once, and
//! keeps only what its backward pass needs (the gates' inputs, v_pre, gate(a_h)); the
//! transforms and the unfold are recomputed there rather than stored.
//!
//! Device rule: a CPU kernel (f32), run on the [`OpPath::Fused`](super::ops::OpPath) path;
//! elsewhere the network runs the composed candle ops of `GatedLayer::forward`, which
//! `composed_path_matches_the_fused_one_in_logits_and_every_gradient` and
//! `the_layer_op_matches_the_composed_layer` test it against.
//!
//! Every entry is a fixed sum in a fixed order whatever the thread count: the products split
//! only their output over threads, and the sums over rows (biases, the class table) add
//! fixed chunks of rows in order.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{gate_grad_row, gate_row, shifted, H_TAPS};
use super::vconv::VConv;
use crate::nn::gemm::{contiguous_f32, product, product_strided, Mat};

/// Rows of an elementwise pass or of a partial column sum that one task takes.
pub(super) const ROWS_PER_TASK: usize = 64;

/// Taps of the horizontal kernel the first layer reads: those mask A leaves, a prefix of
/// [`H_TAPS`] (the masked ones are `H_MASKED` of the model; of the vertical kernel it reads
/// the first row, see [`VConv`]).
pub(super) const H_UNMASKED: usize = 1;

/// Lengths of the layer's parameters in the flat `weights` input, in order: v_conv weight
/// [2C, C, 2, 3] and bias, h_conv [2C, C, 1, 2] and bias, v_to_h [2C, 2C] and bias, h_out
/// [C, C] and bias, the class table [classes, 2C] (empty without classes). Weights are in
/// PyTorch's order, [out, in, kh, kw].
fn sizes(c: usize, classes: usize) -> [usize; 9] {
    [12 * c * c, 2 * c, 4 * c * c, 2 * c, 4 * c * c, 2 * c, c * c, c, classes * 2 * c]
}

fn split(mut w: &[f32], sizes: [usize; 9]) -> [&[f32]; 9] {
    sizes.map(|n| {
        let (a, b) = w.split_at(n);
        w = b;
        a
    })
}

fn split_mut(mut w: &mut [f32], sizes: [usize; 9]) -> [&mut [f32]; 9] {
    sizes.map(|n| {
        let (a, b) = std::mem::take(&mut w).split_at_mut(n);
        w = b;
        a
    })
}

/// What the backward pass keeps from the forward pass.
struct Saved {
    a_v: Vec<f32>,
    a_h: Vec<f32>,
    v_pre: Vec<f32>,
    /// gate(a_h) [R, C].
    gh: Vec<f32>,
    /// The vertical convolution, its kernels transformed.
    vconv: VConv,
    /// The horizontal convolution's weight, taps major, used taps only: [2C, T C].
    wh: Vec<f32>,
}

/// One gated layer; see the module docs.
pub(super) struct LayerOp {
    c: usize,
    height: usize,
    width: usize,
    first: bool,
    /// Class label of each image, with the class table's row count.
    labels: Option<(Vec<u32>, usize)>,
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

/// The layer on `state` [N H W, 2C] of maps of `size` (height, width) pixels, with the
/// projected top codes `cond` [N H W, 2C] if any, the parameters `weights` (see
/// [`flat_weights`]) and the images' class labels with the class table's row count if the
/// model is class-conditional. `first` applies mask A and leaves out the residual.
pub(super) fn apply(
    state: &Tensor,
    cond: Option<&Tensor>,
    weights: &Tensor,
    size: (usize, usize),
    first: bool,
    labels: Option<(Vec<u32>, usize)>,
) -> candle_core::Result<Tensor> {
    let (_, c2) = state.dims2()?;
    let keep = state.track_op() || weights.track_op() || cond.is_some_and(|k| k.track_op());
    let op = LayerOp { c: c2 / 2, height: size.0, width: size.1, first, labels, keep, saved: Mutex::new(None) };
    let (state, weights) = (state.contiguous()?, weights.contiguous()?);
    match cond {
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

/// `row` repeated `rows` times.
fn repeat_rows(row: &[f32], rows: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * row.len());
    for _ in 0..rows {
        v.extend_from_slice(row);
    }
    v
}

/// Column sums of the `rows` x `out.len()` matrix whose rows lie `rs` apart in `data`, into
/// `out`: partial sums of fixed chunks of rows, added in order.
fn column_sums(data: &[f32], rows: usize, rs: usize, out: &mut [f32]) {
    let cols = out.len();
    let chunks = rows.div_ceil(ROWS_PER_TASK);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|b| {
            let mut s = vec![0f32; cols];
            for r in b * ROWS_PER_TASK..rows.min((b + 1) * ROWS_PER_TASK) {
                add(&mut s, &data[r * rs..r * rs + cols]);
            }
            s
        })
        .collect();
    out.fill(0.0);
    for s in &partial {
        add(out, s);
    }
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
    fn check(&self, state: &Layout, cond: Option<&Layout>, weights: &Layout) -> candle_core::Result<usize> {
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
        if let Some(k) = cond {
            if k.dims() != [rows, c2] {
                candle_core::bail!("{NAME}: conditioning {:?} for state {:?}", k.dims(), state.dims())
            }
        }
        let want: usize = sizes(c, self.classes()).iter().sum();
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

    /// The unfold of one stack (columns `off..off + C` of `x` [R, 2C]) for `taps`: [R, T C],
    /// entry (t, c) of a row channel c of the pixel at tap t, 0 outside the map.
    fn unfold(&self, x: &[f32], off: usize, taps: &[(isize, isize)]) -> Vec<f32> {
        let (c, hw, (h, w)) = (self.c, self.hw(), (self.height, self.width));
        let tc = taps.len() * c;
        let mut u = vec![0f32; x.len() / 2 * taps.len()];
        u.par_chunks_mut(hw * tc).zip(x.par_chunks(hw * 2 * c)).for_each(|(dst, image)| {
            for (p, row) in dst.chunks_exact_mut(tc).enumerate() {
                for (&tap, d) in taps.iter().zip(row.chunks_exact_mut(c)) {
                    if let Some(q) = shifted(p / w, p % w, tap, h, w) {
                        d.copy_from_slice(&image[q * 2 * c + off..][..c]);
                    }
                }
            }
        });
        u
    }

    /// The adjoint of [`LayerOp::unfold`]: adds each entry of `du` [R, T C] onto the pixel it
    /// was taken from, in columns `off..off + C` of `dx` [R, 2C].
    fn fold(&self, du: &[f32], dx: &mut [f32], off: usize, taps: &[(isize, isize)]) {
        let (c, hw, (h, w)) = (self.c, self.hw(), (self.height, self.width));
        let tc = taps.len() * c;
        dx.par_chunks_mut(hw * 2 * c).zip(du.par_chunks(hw * tc)).for_each(|(image, src)| {
            for (p, row) in src.chunks_exact(tc).enumerate() {
                for (&tap, v) in taps.iter().zip(row.chunks_exact(c)) {
                    if let Some(q) = shifted(p / w, p % w, tap, h, w) {
                        add(&mut image[q * 2 * c + off..][..c], v);
                    }
                }
            }
        });
    }

    /// The forward pass: state_out [R, 2C] and what the backward pass needs.
    fn forward(&self, x: &[f32], cond: Option<&[f32]>, weights: &[f32]) -> (Vec<f32>, Saved) {
        let (c, c2, hw) = (self.c, 2 * self.c, self.hw());
        let rows = x.len() / c2;
        let [vw, vb, hcw, hb, vhw, vhb, ow, ob, class] = split(weights, sizes(c, self.classes()));
        let th = self.h_taps();
        let thc = th.len() * c;
        let vconv = VConv::new(vw, c, (self.height, self.width), self.first);
        let wh = tap_major(hcw, c2, c, H_TAPS.len(), th.len());

        let v_pre = vconv.forward(x, vb);
        let uh = self.unfold(x, c, th);
        let bias: Vec<f32> = hb.iter().zip(vhb).map(|(a, b)| a + b).collect();
        let mut a_h = repeat_rows(&bias, rows);
        product(&mut a_h, Mat::rows(&uh, rows, thc), Mat::rows(&wh, c2, thc).t(), true, true);
        drop(uh);
        product(&mut a_h, Mat::rows(&v_pre, rows, c2), Mat::rows(vhw, c2, c2).t(), true, true);

        // Conditioning, gates, and the h half of the output up to the h_out product.
        let mut a_v = vec![0f32; rows * c2];
        let mut out = vec![0f32; rows * c2];
        let mut gh = vec![0f32; rows * c];
        let b = ROWS_PER_TASK;
        a_v.par_chunks_mut(b * c2)
            .zip(a_h.par_chunks_mut(b * c2))
            .zip(out.par_chunks_mut(b * c2))
            .zip(gh.par_chunks_mut(b * c))
            .enumerate()
            .for_each(|(task, (((av, ah), o), g))| {
                let ins = av.chunks_exact_mut(c2).zip(ah.chunks_exact_mut(c2));
                let outs = o.chunks_exact_mut(c2).zip(g.chunks_exact_mut(c));
                for (i, ((av, ah), (o, g))) in ins.zip(outs).enumerate() {
                    let r = task * b + i;
                    av.copy_from_slice(&v_pre[r * c2..][..c2]);
                    if let Some(k) = cond {
                        add(av, &k[r * c2..][..c2]);
                        add(ah, &k[r * c2..][..c2]);
                    }
                    if let Some((labels, _)) = &self.labels {
                        let e = &class[labels[r / hw] as usize * c2..][..c2];
                        add(av, e);
                        add(ah, e);
                    }
                    let (ov, oh) = o.split_at_mut(c);
                    gate_row(ov, &av[..c], &av[c..]);
                    gate_row(g, &ah[..c], &ah[c..]);
                    oh.copy_from_slice(ob);
                    if !self.first {
                        add(oh, &x[r * c2 + c..][..c]);
                    }
                }
            });
        if rows > 0 {
            product_strided(&mut out[c..], c2, Mat::rows(&gh, rows, c), Mat::rows(ow, c, c).t(), true, true);
        }
        (out, Saved { a_v, a_h, v_pre, gh, vconv, wh })
    }

    /// The backward pass from the output gradient `g` [R, 2C]: the gradients of the state
    /// (when `need_x`), of the conditioning (when `need_cond`) and of the weights.
    fn backward(
        &self,
        x: &[f32],
        weights: &[f32],
        g: &[f32],
        saved: Saved,
        need_x: bool,
        need_cond: bool,
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>, Vec<f32>) {
        let (c, c2, hw) = (self.c, 2 * self.c, self.hw());
        let rows = x.len() / c2;
        let sizes = sizes(c, self.classes());
        let [_, _, _, _, vhw, _, ow, _, _] = split(weights, sizes);
        let mut dw = vec![0f32; weights.len()];
        let [dvw, dvb, dhw, dhb, dvhw, dvhb, dow, dob, dclass] = split_mut(&mut dw, sizes);
        let th = self.h_taps();
        let thc = th.len() * c;
        let Saved { mut a_v, mut a_h, v_pre, gh, vconv, wh } = saved;
        let g_h = Mat { data: g.get(c..).unwrap_or(&[]), rows, cols: c, rs: c2, cs: 1 };

        // h_out, then the gates' input gradients in place of their inputs.
        product(dow, g_h.t(), Mat::rows(&gh, rows, c), false, true);
        column_sums(g_h.data, rows, c2, dob);
        let mut d_gh = gh;
        product(&mut d_gh, g_h, Mat::rows(ow, c, c), false, true);
        let b = ROWS_PER_TASK;
        a_v.par_chunks_mut(b * c2)
            .zip(a_h.par_chunks_mut(b * c2))
            .zip(g.par_chunks(b * c2).zip(d_gh.par_chunks(b * c)))
            .for_each(|((av, ah), (g, dg))| {
                let ins = av.chunks_exact_mut(c2).zip(ah.chunks_exact_mut(c2));
                for ((av, ah), (g, dg)) in ins.zip(g.chunks_exact(c2).zip(dg.chunks_exact(c))) {
                    let (f, s) = av.split_at_mut(c);
                    gate_grad_row(f, s, &g[..c]);
                    let (f, s) = ah.split_at_mut(c);
                    gate_grad_row(f, s, dg);
                }
            });
        drop(d_gh);
        let (mut da_v, da_h) = (a_v, a_h);

        // The conditioning: both stacks' pre-activation gradients, summed.
        let d_cond = need_cond.then(|| {
            let mut d = da_v.clone();
            d.par_chunks_mut(b * c2).zip(da_h.par_chunks(b * c2)).for_each(|(d, h)| add(d, h));
            d
        });
        if let Some((labels, _)) = &self.labels {
            let per_image: Vec<Vec<f32>> = (0..labels.len())
                .into_par_iter()
                .map(|n| {
                    let mut s = vec![0f32; c2];
                    for r in n * hw..(n + 1) * hw {
                        add(&mut s, &da_v[r * c2..][..c2]);
                        add(&mut s, &da_h[r * c2..][..c2]);
                    }
                    s
                })
                .collect();
            for (&y, s) in labels.iter().zip(&per_image) {
                add(&mut dclass[y as usize * c2..][..c2], s);
            }
        }

        // The horizontal stack: h_conv and v_to_h.
        column_sums(&da_h, rows, c2, dhb);
        dvhb.copy_from_slice(dhb);
        let da_h_m = Mat::rows(&da_h, rows, c2);
        product(dvhw, da_h_m.t(), Mat::rows(&v_pre, rows, c2), false, true);
        drop(v_pre);
        let mut dx = need_x.then(|| {
            let mut dx = vec![0f32; rows * c2];
            if !self.first {
                dx.par_chunks_mut(b * c2).zip(g.par_chunks(b * c2)).for_each(|(d, g)| {
                    for (d, g) in d.chunks_exact_mut(c2).zip(g.chunks_exact(c2)) {
                        d[c..].copy_from_slice(&g[c..]);
                    }
                });
            }
            dx
        });
        let mut uh = self.unfold(x, c, th);
        let mut dwh = vec![0f32; c2 * thc];
        product(&mut dwh, da_h_m.t(), Mat::rows(&uh, rows, thc), false, true);
        tap_major_back(&dwh, dhw, c, H_TAPS.len(), th.len());
        if let Some(dx) = dx.as_mut() {
            product(&mut uh, da_h_m, Mat::rows(&wh, c2, thc), false, true);
            self.fold(&uh, dx, c, th);
        }
        drop(uh);

        // The vertical stack: dv_pre = da_v + da_h v_to_h, then v_conv.
        product(&mut da_v, da_h_m, Mat::rows(vhw, c2, c2), true, true);
        drop(da_h);
        let dv = da_v;
        column_sums(&dv, rows, c2, dvb);
        dvw.copy_from_slice(&vconv.weight_grad(x, &dv));
        if let Some(dx) = dx.as_mut() {
            vconv.input_grad(&dv, dx);
        }
        (dx, d_cond, dw)
    }

    fn cpu_forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        cond: Option<(&CpuStorage, &Layout)>,
        (ws, wl): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(xl, cond.map(|k| k.1), wl)?;
        let x = contiguous_f32(NAME, xs, xl)?;
        let k = cond.map(|(s, l)| contiguous_f32(NAME, s, l)).transpose()?;
        let (out, saved) = self.forward(x, k, contiguous_f32(NAME, ws, wl)?);
        if self.keep {
            *self.saved.lock().map_err(|_| candle_core::Error::Msg(format!("{NAME}: poisoned")))? = Some(saved);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, 2 * self.c))))
    }

    /// The gradients of state, conditioning and weights from that of the output.
    fn grads(
        &self,
        state: &Tensor,
        cond: Option<&Tensor>,
        weights: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        if grad.dims() != state.dims() {
            candle_core::bail!("{NAME}: gradient {:?} for state {:?}", grad.dims(), state.dims())
        }
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg(format!("{NAME}: poisoned")))?.take();
        let mut tensors = vec![state, weights, &grad];
        tensors.extend(cond);
        let (need_x, need_cond) = (state.track_op(), cond.is_some_and(|k| k.track_op()));
        let (dx, dk, dw) = with_slices(&tensors, |s| {
            // A second backward pass over the same graph recomputes the forward pass.
            let saved = match saved {
                Some(saved) => saved,
                None => self.forward(s[0], s.get(3).copied(), s[1]).1,
            };
            Ok(self.backward(s[0], s[1], s[2], saved, need_x, need_cond))
        })?;
        let dev = state.device();
        let dx = dx.map(|d| Tensor::from_vec(d, state.dims(), dev)).transpose()?;
        let dk = dk.map(|d| Tensor::from_vec(d, state.dims(), dev)).transpose()?;
        let dw = weights.track_op().then(|| Tensor::from_vec(dw, weights.dims(), dev)).transpose()?;
        Ok((dx, dk, dw))
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
        cond: &Tensor,
        weights: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(state, Some(cond), weights, grad)
    }
}
