//! Sampling codes in raster order.
//!
//! Two samplers draw the same codes for the same seed. [`SampleMethod::Plain`] runs the whole
//! network once per position, the reference. [`SampleMethod::Cached`] recomputes only what
//! each new code changes: the vertical stacks depend only on earlier rows, so every layer's
//! is computed once per row, for the whole row; the horizontal stacks are then advanced one
//! position at a time from each layer's output at the position before. Both draw each code by
//! inverse CDF from one uniform number per position, in raster order, from the sample's own
//! stream ([`RowStreams`]), so they differ only where rounding differences of the logits move
//! a CDF boundary across the uniform, and a sample's codes do not depend on the samples drawn
//! with it.

use candle_core::{Module, Tensor};
use rand::Rng as _;

use super::ops::{gate_rows, H_TAPS, V_TAPS};
use super::PixelCnn;
use crate::error::{Error, Result};
use crate::nn::gemm::{matmul, Mat};
use crate::nn::linear::Linear;
use crate::rng::RowStreams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleMethod {
    /// The whole network once per position: the reference.
    Plain,
    /// Per-row vertical stacks and per-position horizontal stacks, from cached layer states.
    Cached,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Logits are divided by this before the softmax; below 1 sharpens, above 1 flattens.
    pub temperature: f64,
    /// Draw only among the k most likely codes; `None` for all.
    pub top_k: Option<usize>,
    /// Nucleus sampling (Holtzman et al. 2020, <https://arxiv.org/abs/1904.09751>): draw only
    /// among the fewest most likely codes whose probability (after the temperature and top-k)
    /// reaches p, in (0, 1]; `None` (or 1) for all.
    pub top_p: Option<f64>,
    pub method: SampleMethod,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { temperature: 1.0, top_k: None, top_p: None, method: SampleMethod::Cached }
    }
}

/// Draws `n` code maps [n, H, W] (u32) in raster order, given class labels [n] and top codes
/// [n, H/2, W/2] when the model is conditioned on them; map i draws from `rngs.row(i)`.
pub fn sample(
    model: &PixelCnn,
    n: usize,
    labels: Option<&Tensor>,
    top: Option<&Tensor>,
    opts: &SampleOptions,
    rngs: &mut RowStreams,
) -> Result<Tensor> {
    if rngs.len() != n {
        return Err(Error::config(format!("pixelcnn-prior: {} random streams for {n} samples", rngs.len())));
    }
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return Err(Error::config(format!("pixelcnn-prior: temperature {} must be positive", opts.temperature)));
    }
    if opts.top_k == Some(0) {
        return Err(Error::config("pixelcnn-prior: top-k must be at least 1"));
    }
    if let Some(p) = opts.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(Error::config(format!("pixelcnn-prior: top-p {p} must be in (0, 1]")));
    }
    let (h, w) = (model.config.height, model.config.width);
    let device = model.embed.embeddings().device().clone();
    let mut codes = vec![0u32; n * h * w];
    // The checks of the forward pass, on a map of zeros.
    model.check(&Tensor::from_slice(&codes, (n, h, w), &device)?, labels, top)?;
    if n > 0 {
        match opts.method {
            SampleMethod::Plain => plain(model, n, &mut codes, labels, top, opts, rngs)?,
            SampleMethod::Cached => Cached::new(model, n, labels, top)?.run(&mut codes, opts, rngs)?,
        }
    }
    Ok(Tensor::from_vec(codes, (n, h, w), &device)?)
}

/// The reference: the whole network over the codes drawn so far, once per position.
fn plain(
    model: &PixelCnn,
    n: usize,
    codes: &mut [u32],
    labels: Option<&Tensor>,
    top: Option<&Tensor>,
    opts: &SampleOptions,
    rngs: &mut RowStreams,
) -> Result<()> {
    let (h, w, e) = (model.config.height, model.config.width, model.config.n_embed);
    let device = model.embed.embeddings().device().clone();
    for p in 0..h * w {
        let x = Tensor::from_slice(codes, (n, h, w), &device)?;
        // (n h w, e) -> (n, h w, e) -> the rows of position p, (n, e)
        let logits = model.logits_rows(&x, labels, top)?.reshape((n, h * w, e))?;
        let at = logits.narrow(1, p, 1)?.flatten_all()?.to_vec1::<f32>()?;
        for (b, code) in draw_all(&at, e, opts, rngs).into_iter().enumerate() {
            codes[b * h * w + p] = code;
        }
    }
    Ok(())
}

/// One code for each row of `logits` [N, E], with the next uniform number of the row's stream.
fn draw_all(logits: &[f32], e: usize, opts: &SampleOptions, rngs: &mut RowStreams) -> Vec<u32> {
    logits
        .chunks_exact(e)
        .enumerate()
        .map(|(b, row)| {
            let u: f64 = rngs.row(b).inner().random();
            draw(row, opts, u)
        })
        .collect()
}

/// The code whose interval of the CDF of softmax(logits / temperature) holds `u` in [0, 1),
/// the softmax restricted first to the `top_k` largest logits, then to the fewest most likely
/// of those whose probability reaches `top_p` (ties in both to the lower code, the order of
/// Hugging Face's logits warpers: temperature, top-k, top-p). The CDF runs in code order.
pub(super) fn draw(logits: &[f32], opts: &SampleOptions, u: f64) -> u32 {
    // The codes from most to least likely.
    let by_rank = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut codes: Vec<usize> = (0..logits.len()).collect();
    if let Some(k) = opts.top_k.filter(|&k| k < logits.len()) {
        codes.select_nth_unstable_by(k - 1, by_rank);
        codes.truncate(k);
    }
    let max = codes.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
    let weight = |i: usize| ((logits[i] as f64 - max) / opts.temperature).exp();
    if let Some(p) = opts.top_p.filter(|&p| p < 1.0) {
        codes.sort_unstable_by(by_rank);
        let total: f64 = codes.iter().map(|&i| weight(i)).sum();
        let mut mass = 0.0;
        let kept = codes.iter().position(|&i| {
            mass += weight(i);
            mass >= p * total
        });
        codes.truncate(kept.map_or(codes.len(), |last| last + 1));
    }
    codes.sort_unstable();
    let weights: Vec<f64> = codes.iter().map(|&i| weight(i)).collect();
    let target = u * weights.iter().sum::<f64>();
    let mut cumulative = 0.0;
    for (&code, weight) in codes.iter().zip(&weights) {
        cumulative += weight;
        if cumulative > target {
            return code as u32;
        }
    }
    // Only rounding can leave the loop: the last code of the support.
    *codes.last().expect("at least one code") as u32
}

/// A 1x1 convolution (or an unfolded one) on host memory: weight [out, in], bias [out].
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Dense {
    fn new(layer: &Linear) -> Result<Self> {
        Ok(Dense { weight: layer.weight().flatten_all()?.to_vec1()?, bias: layer.bias().to_vec1()? })
    }

    /// y [rows, out] = x [rows, in] W^T + b.
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let (out, inp) = (self.bias.len(), self.weight.len() / self.bias.len());
        let rows = x.len() / inp;
        for row in y.chunks_exact_mut(out) {
            row.copy_from_slice(&self.bias);
        }
        matmul(y, Mat::rows(x, rows, inp), Mat::rows(&self.weight, out, inp).t(), true);
    }
}

/// One layer's weights, mask A applied, and its class conditioning.
struct Layer {
    v_conv: Dense,
    h_conv: Dense,
    v_to_h: Dense,
    h_out: Dense,
    /// The class embedding of each sample, [N, 2C].
    class: Option<Vec<f32>>,
    top_proj: Option<Dense>,
}

/// The state of the cached sampler; every map is channels-last on the host.
struct Cached {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    e: usize,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    head1: Dense,
    head3: Dense,
    /// Upsampled top-code features [N, H, W, C].
    top: Option<Vec<f32>>,
}

/// Copies pixel rows into the unfolded matrix `cols` [rows, T C] (entry t C + c of a row is
/// channel c at tap t, as in `OpPath::causal_unfold`): `src(row, tap)` gives the row's pixel [C] at
/// `tap`, or `None` for 0.
fn unfold<'a>(cols: &mut [f32], c: usize, taps: usize, src: impl Fn(usize, usize) -> Option<&'a [f32]>) {
    for (r, row) in cols.chunks_exact_mut(c * taps).enumerate() {
        for (tap, dst) in row.chunks_exact_mut(c).enumerate() {
            match src(r, tap) {
                Some(px) => dst.copy_from_slice(px),
                None => dst.fill(0.0),
            }
        }
    }
}

impl Cached {
    fn new(model: &PixelCnn, n: usize, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<Self> {
        let cfg = &model.config;
        let layers = model
            .layers
            .iter()
            .map(|layer| {
                let (v_conv, h_conv) = layer.convs()?;
                let class = match (&layer.class_embed, labels) {
                    (Some(e), Some(y)) => Some(e.forward(y)?.flatten_all()?.to_vec1()?),
                    _ => None,
                };
                Ok(Layer {
                    v_conv: Dense::new(&v_conv)?,
                    h_conv: Dense::new(&h_conv)?,
                    v_to_h: Dense::new(&layer.v_to_h)?,
                    h_out: Dense::new(&layer.h_out)?,
                    class,
                    top_proj: layer.top_proj.as_ref().map(Dense::new).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let top = match (&model.top, top) {
            (Some(path), Some(codes)) => Some(path.features(codes)?.flatten_all()?.to_vec1()?),
            _ => None,
        };
        Ok(Cached {
            n,
            h: cfg.height,
            w: cfg.width,
            c: cfg.channels,
            e: cfg.n_embed,
            embed: model.embed.embeddings().flatten_all()?.to_vec1()?,
            layers,
            head1: Dense::new(&model.head1)?,
            head3: Dense::new(&model.head3)?,
            top,
        })
    }

    fn run(&self, codes: &mut [u32], opts: &SampleOptions, rngs: &mut RowStreams) -> Result<()> {
        let (n, h, w, c, e) = (self.n, self.h, self.w, self.c, self.e);
        let nl = self.layers.len();
        let row = n * w * c;
        // Row i-1 and row i of each layer's vertical output, [N, W, C]; zeros above the map.
        let mut v_prev = vec![vec![0f32; row]; nl];
        let mut v_cur = vec![vec![0f32; row]; nl];
        // The embedded codes of row i-1 and row i, [N, W, C].
        let mut emb_prev_row = vec![0f32; row];
        let mut emb_row = vec![0f32; row];
        // Per layer, v_to_h(v) and the projected top codes (when there are any) over row i,
        // [N, W, 2C].
        let mut v_to_h = vec![vec![0f32; 2 * row]; nl];
        let mut top_proj = vec![vec![0f32; 2 * row]; nl];
        // Per layer, its horizontal output at (i, j-1), [N, C]; and the embedded codes there.
        let mut h_prev = vec![vec![0f32; n * c]; nl];
        let mut emb_prev = vec![0f32; n * c];
        // Scratch.
        let mut cols = vec![0f32; 6 * row];
        let mut pre = vec![0f32; 2 * row];
        let mut top_row = vec![0f32; row];
        let (mut hcols, mut hpre, mut gated) = (vec![0f32; 2 * n * c], vec![0f32; 2 * n * c], vec![0f32; n * c]);
        let (mut x, mut y, mut head, mut logits) =
            (vec![0f32; n * c], vec![0f32; n * c], vec![0f32; n * c], vec![0f32; n * e]);
        for i in 0..h {
            // The vertical stacks over row i, layer by layer; they see rows < i only.
            std::mem::swap(&mut v_prev, &mut v_cur);
            std::mem::swap(&mut emb_prev_row, &mut emb_row);
            if let Some(top) = &self.top {
                for (b, dst) in top_row.chunks_exact_mut(w * c).enumerate() {
                    dst.copy_from_slice(&top[(b * h + i) * w * c..][..w * c]);
                }
            }
            for (l, layer) in self.layers.iter().enumerate() {
                let (above, here) = if l == 0 { (&emb_prev_row, None) } else { (&v_prev[l - 1], Some(&v_cur[l - 1])) };
                unfold(&mut cols, c, V_TAPS.len(), |r, tap| {
                    let (b, j) = (r / w, r % w);
                    let (di, dj) = V_TAPS[tap];
                    let x = j.checked_add_signed(dj).filter(|&x| x < w)?;
                    let src = if di < 0 { Some(above) } else { here }?;
                    // Above the first row there is nothing: `above` holds zeros then.
                    Some(&src[(b * w + x) * c..][..c])
                });
                layer.v_conv.apply(&cols, &mut pre);
                // v_to_h acts on the convolution's output before the conditioning.
                layer.v_to_h.apply(&pre, &mut v_to_h[l]);
                if let Some(proj) = &layer.top_proj {
                    proj.apply(&top_row, &mut top_proj[l]);
                }
                self.condition(layer, &top_proj[l], &mut pre, (0..n).flat_map(|b| (0..w).map(move |j| (b, j))));
                gate_rows(&pre, &mut v_cur[l], c);
            }
            // The horizontal stacks, position by position.
            h_prev.iter_mut().for_each(|s| s.fill(0.0));
            emb_prev.fill(0.0);
            for j in 0..w {
                for (l, layer) in self.layers.iter().enumerate() {
                    let (left, here) = if l == 0 { (&emb_prev, None) } else { (&h_prev[l - 1], Some(&x)) };
                    unfold(&mut hcols, c, H_TAPS.len(), |b, tap| {
                        let src = if H_TAPS[tap].1 < 0 { Some(left) } else { here }?;
                        Some(&src[b * c..][..c])
                    });
                    layer.h_conv.apply(&hcols, &mut hpre);
                    // (h + v_to_h(v)) + conditioning, in the order of the forward pass.
                    for (b, dst) in hpre.chunks_exact_mut(2 * c).enumerate() {
                        let add = &v_to_h[l][(b * w + j) * 2 * c..][..2 * c];
                        dst.iter_mut().zip(add).for_each(|(d, a)| *d += a);
                    }
                    self.condition(layer, &top_proj[l], &mut hpre, (0..n).map(|b| (b, j)));
                    gate_rows(&hpre, &mut gated, c);
                    layer.h_out.apply(&gated, &mut y);
                    if l > 0 {
                        y.iter_mut().zip(&x).for_each(|(y, x)| *y += x);
                        // Layer l-1's output here is the left neighbour at the next position.
                        h_prev[l - 1].copy_from_slice(&x);
                    }
                    std::mem::swap(&mut x, &mut y);
                }
                x.iter_mut().for_each(|v| *v = v.max(0.0));
                self.head1.apply(&x, &mut head);
                head.iter_mut().for_each(|v| *v = v.max(0.0));
                self.head3.apply(&head, &mut logits);
                for (b, code) in draw_all(&logits, e, opts, rngs).into_iter().enumerate() {
                    codes[(b * h + i) * w + j] = code;
                    let embedded = &self.embed[code as usize * c..][..c];
                    emb_prev[b * c..][..c].copy_from_slice(embedded);
                    emb_row[(b * w + j) * c..][..c].copy_from_slice(embedded);
                }
            }
        }
        Ok(())
    }

    /// Adds `layer`'s conditioning to `x`, rows of 2C for the pixels `pixels` (b, j) of the
    /// current row: the projected top codes `top` [N, W, 2C], then the class, in the order
    /// of the forward pass.
    fn condition(&self, layer: &Layer, top: &[f32], x: &mut [f32], pixels: impl Iterator<Item = (usize, usize)>) {
        let c2 = 2 * self.c;
        for ((b, j), x) in pixels.zip(x.chunks_exact_mut(c2)) {
            if layer.top_proj.is_some() {
                x.iter_mut().zip(&top[(b * self.w + j) * c2..][..c2]).for_each(|(x, k)| *x += k);
            }
            if let Some(class) = &layer.class {
                x.iter_mut().zip(&class[b * c2..][..c2]).for_each(|(x, k)| *x += k);
            }
        }
    }
}
