//! The Gated PixelCNN prior over VQ-VAE codes (van den Oord et al. 2016, "Conditional Image
//! Generation with PixelCNN Decoders", <https://arxiv.org/abs/1606.05328>, as the VQ-VAE
//! papers use it; `pixelcnn-prior`, docs/models.md). There is no reference implementation
//! whose names it keeps: the names below are the project's own.
//!
//! Codes [N, H, W] are embedded to C channels and run through gated layers of two stacks.
//! The vertical stack's conv (2,3) reads rows i-1..i, the horizontal stack's conv (1,2)
//! columns j-1..j of row i; in the first layer the current row's taps of the one and the
//! current column's taps of the other are masked to zero (mask A), so the vertical stack at
//! row i sees only rows above it and the horizontal stack at (i, j) only pixels before it in
//! raster order, with no blind spot. Per layer, with `c` the conditioning:
//!
//! ```text
//! v = v_conv(v_in)                   h = h_conv(h_in)                      (C -> 2C)
//! v_out = gate(v + c)                h_out = h_out(gate(v_to_h(v) + h + c)) + h_in
//! ```
//!
//! where the residual `+ h_in` is left out in the first layer and gate(a) = tanh(a_f) *
//! sigmoid(a_g): the first C channels of a 2C-channel map are f, the last C are g. The head on
//! the last horizontal stack is ReLU, conv1x1 C->C, ReLU, conv1x1 C->n_embed. Conditioning,
//! added to both stacks in every layer: per layer a class embedding [n_classes, 2C], and for
//! the bottom level of VQ-VAE-2 the top codes, embedded, upsampled once by a convT4x4 s2 p1
//! (h x w -> 2h x 2w) and projected by a conv1x1 C->2C per layer.
//!
//! Parameter names and shapes (C = `channels`, E = `n_embed`; conv weights [out, in, kh, kw],
//! transposed-conv weights [in, out, kh, kw]):
//!
//! ```text
//! embed.weight                     [E, C]
//! layers.{i}.v_conv.weight         [2C, C, 2, 3]    .bias [2C]
//! layers.{i}.h_conv.weight         [2C, C, 1, 2]    .bias [2C]
//! layers.{i}.v_to_h.weight         [2C, 2C, 1, 1]   .bias [2C]
//! layers.{i}.h_out.weight          [C, C, 1, 1]     .bias [C]
//! layers.{i}.class_embed.weight    [n_classes, 2C]             with n_classes
//! layers.{i}.top_proj.weight       [2C, C, 1, 1]    .bias [2C] with top
//! top_embed.weight                 [top.n_embed, C]            with top
//! top_upsample.weight              [C, C, 4, 4]     .bias [C]  with top
//! head.1.weight                    [C, C, 1, 1]     .bias [C]
//! head.3.weight                    [E, C, 1, 1]     .bias [E]
//! ```
//!
//! The stored weights are the plain PyTorch tensors; mask A is applied by multiplying the
//! first layer's weights by a constant mask in every forward pass, so the masked taps get a
//! zero gradient and keep their initial values.
//!
//! The network runs channels-last ([N H W, C], one pixel a row): each convolution is an
//! unfold of its taps ([`ops::causal_unfold`]) and one matrix product, the 1x1
//! convolutions are plain products, and the gate takes its conditioning
//! ([`ops::gate`]). On the CPU each whole gated layer is one fused op with its own
//! backward pass, on the two stacks side by side ([`layer`]), and the head's products and the
//! cross-entropy are fused kernels; elsewhere they are candle's ops (the device rules of
//! [`ops`], [`layer`], [`Linear`] and [`mean_cross_entropy`]).

mod kernels;
mod layer;
mod ops;
mod sample;
mod vconv;

use candle_core::{DType, Module, Tensor};
use candle_nn::Embedding;
use serde::{Deserialize, Serialize};

use super::Demand;
use crate::error::{Error, Result};
use crate::memory::bytes_of;
use crate::nn::conv::{ConvTranspose2d, ConvTransposeConfig};
use crate::nn::functional::mean_cross_entropy;
use crate::nn::linear::Linear;
use crate::nn::params::{Init, Params};

use ops::OpPath;
pub use sample::{sample, SampleMethod, SampleOptions};

/// Conditioning on the top codes of VQ-VAE-2: a map of half the modelled map's height and
/// width, upsampled by a convT4x4 s2 p1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopCondition {
    /// Codebook size of the top level.
    pub n_embed: usize,
    pub height: usize,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelCnnConfig {
    /// Codebook size of the modelled level: the number of classes of each code.
    pub n_embed: usize,
    /// Size of the code map.
    pub height: usize,
    pub width: usize,
    /// Channels of each stack (C); the convolutions inside a layer produce 2C.
    pub channels: usize,
    /// Gated layers.
    pub layers: usize,
    /// Number of classes for class conditioning; `None` for none.
    pub n_classes: Option<usize>,
    /// Conditioning on top codes; `None` for none.
    pub top: Option<TopCondition>,
}

impl PixelCnnConfig {
    /// The `pixelcnn-prior` preset.
    /// The preset: 12 layers of 64 channels over an 8x8 map of 512 codes (the bottom level of
    /// `vqvae2-mnist`, or a one-level VQ-VAE), unconditioned. A prior of the top level sets
    /// 4x4; one of the bottom level of VQ-VAE-2 adds `top` (4x4 of 512).
    pub fn pixelcnn_prior() -> Self {
        PixelCnnConfig { n_embed: 512, height: 8, width: 8, channels: 64, layers: 12, n_classes: None, top: None }
    }
}

impl PixelCnnConfig {
    /// One code map's activations: the two stacks' features at every position.
    pub fn demands(&self) -> Vec<Demand> {
        let bytes = bytes_of(&[self.height, self.width, self.channels, 2], 4);
        // Named by the largest of the three factors, the one most likely to be the mistake.
        let sizes = [("height", self.height), ("width", self.width), ("channels", self.channels)];
        let (field, value) = sizes.into_iter().max_by_key(|&(_, v)| v).unwrap_or(sizes[0]);
        // Each gated layer holds about 21 C^2 weights (v_conv 12, h_conv 4, v_to_h 4, h_out 1).
        let layer_bytes = bytes_of(&[self.layers, self.channels, self.channels, 21], 4);
        vec![
            Demand { field, value, what: "one code map's activations (height x width x channels)", bytes },
            Demand { field: "layers", value: self.layers, what: "the gated layers' parameters", bytes: layer_bytes },
        ]
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("n_embed", self.n_embed),
            ("height", self.height),
            ("width", self.width),
            ("channels", self.channels),
            ("layers", self.layers),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(format!("pixelcnn-prior: {name} must be at least 1")));
        }
        if self.n_classes == Some(0) {
            return Err(Error::config("pixelcnn-prior: n_classes must be at least 1"));
        }
        if let Some(t) = &self.top {
            if t.n_embed == 0 || 2 * t.height != self.height || 2 * t.width != self.width {
                return Err(Error::config(format!(
                    "pixelcnn-prior: top codes of {}x{} upsample to {}x{}, not the {}x{} map, or top n_embed is 0",
                    t.height,
                    t.width,
                    2 * t.height,
                    2 * t.width,
                    self.height,
                    self.width
                )));
            }
        }
        Ok(())
    }
}

/// A convolution's weight [out, in, kh, kw] with PyTorch's default init, viewed as the matrix
/// [out, in kh kw] of a product with unfolded input, and its bias.
fn conv_matrix(p: &mut Params, name: &str, cin: usize, cout: usize, kh: usize, kw: usize) -> Result<Linear> {
    let bound = 1.0 / ((cin * kh * kw) as f32).sqrt();
    let w = p.tensor(&format!("{name}.weight"), &[cout, cin, kh, kw], Init::Uniform(bound))?;
    let b = p.tensor(&format!("{name}.bias"), &[cout], Init::Uniform(bound))?;
    // A view of the parameter's storage, so it follows in-place updates.
    Ok(Linear::new(w.reshape((cout, cin * kh * kw))?, b))
}

/// 1 for every column (tap t, channel c) of an [out, T C] weight matrix except the taps in
/// `masked`, as a [1, T C] row.
fn tap_mask(c: usize, taps: usize, masked: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let row: Vec<f32> = (0..c * taps).map(|i| if masked.contains(&(i / c)) { 0.0 } else { 1.0 }).collect();
    Ok(Tensor::from_vec(row, (1, c * taps), device)?)
}

/// A convolution's weight matrix [out, C T] (PyTorch's order, channels major) with its
/// columns in the taps-major order of [`ops::causal_unfold`], [out, T C], times
/// `mask` if any. Rebuilt on every forward pass, as a copy would not follow in-place updates
/// of the parameter.
fn tap_major(layer: &Linear, taps: usize, mask: Option<&Tensor>) -> Result<Linear> {
    let (out, ct) = layer.weight().dims2()?;
    let w = layer.weight().reshape((out, ct / taps, taps))?.transpose(1, 2)?.contiguous()?.reshape((out, ct))?;
    let w = match mask {
        Some(mask) => w.broadcast_mul(mask)?,
        None => w,
    };
    Ok(Linear::new(w, layer.bias().clone()))
}

/// Mask A: the current row (taps 3..6 of [`ops::V_TAPS`]) of the vertical kernel and the
/// current column (tap 1 of [`ops::H_TAPS`]) of the horizontal one.
const V_MASKED: &[usize] = &[3, 4, 5];
const H_MASKED: &[usize] = &[1];

struct GatedLayer {
    v_conv: Linear,
    h_conv: Linear,
    v_to_h: Linear,
    h_out: Linear,
    /// Mask A's [1, 6C] and [1, 2C] rows, in the first layer only.
    mask: Option<(Tensor, Tensor)>,
    class_embed: Option<Embedding>,
    top_proj: Option<Linear>,
}

impl GatedLayer {
    fn new(p: &mut Params, name: &str, first: bool, cfg: &PixelCnnConfig) -> Result<Self> {
        let c = cfg.channels;
        let mask = if first {
            Some((tap_mask(c, 6, V_MASKED, p.device())?, tap_mask(c, 2, H_MASKED, p.device())?))
        } else {
            None
        };
        Ok(GatedLayer {
            v_conv: conv_matrix(p, &format!("{name}.v_conv"), c, 2 * c, 2, 3)?,
            h_conv: conv_matrix(p, &format!("{name}.h_conv"), c, 2 * c, 1, 2)?,
            v_to_h: conv_matrix(p, &format!("{name}.v_to_h"), 2 * c, 2 * c, 1, 1)?,
            h_out: conv_matrix(p, &format!("{name}.h_out"), c, c, 1, 1)?,
            mask,
            class_embed: cfg.n_classes.map(|k| p.embedding(&format!("{name}.class_embed"), k, 2 * c)).transpose()?,
            top_proj: cfg
                .top
                .as_ref()
                .map(|_| conv_matrix(p, &format!("{name}.top_proj"), c, 2 * c, 1, 1))
                .transpose()?,
        })
    }

    /// The vertical and horizontal convolutions as products with unfolded input (taps
    /// major), mask A applied.
    fn convs(&self) -> Result<(Linear, Linear)> {
        let (v, h) = self.mask.as_ref().map(|(v, h)| (v, h)).unzip();
        Ok((tap_major(&self.v_conv, ops::V_TAPS.len(), v)?, tap_major(&self.h_conv, ops::H_TAPS.len(), h)?))
    }

    /// One layer on channels-last maps of `size` (height, width) pixels, `v`, `h` [N H W, C],
    /// with conditioning `cond` (each [N, 1 or H W, 2C]), as candle ops: the composed path.
    fn forward(&self, v: &Tensor, h: &Tensor, size: (usize, usize), cond: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        let (v_conv, h_conv) = self.convs()?;
        let v_pre = v_conv.forward(&ops::causal_unfold(v, ops::V_TAPS, size)?)?;
        let h_pre = h_conv.forward(&ops::causal_unfold(h, ops::H_TAPS, size)?)?;
        let h_pre = (self.v_to_h.forward(&v_pre)? + h_pre)?;
        let v_out = ops::gate(&v_pre, cond)?;
        let h_out = self.h_out.forward(&ops::gate(&h_pre, cond)?)?;
        let h_out = if self.mask.is_some() { h_out } else { (h_out + h)? };
        Ok((v_out, h_out))
    }

    /// [`GatedLayer::forward`] as one fused CPU op ([`layer`]) on the two stacks side by side,
    /// `state` [N H W, 2C] (v, then h), with the upsampled top codes `features` [N H W, C]
    /// (projected by top_proj inside the op) and the images' class labels, those the model
    /// has.
    fn forward_fused(
        &self,
        state: &Tensor,
        size: (usize, usize),
        features: Option<&Tensor>,
        labels: Option<&[u32]>,
    ) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(11);
        for l in [&self.v_conv, &self.h_conv, &self.v_to_h, &self.h_out] {
            parts.extend([l.weight(), l.bias()]);
        }
        let mut classes = None;
        if let (Some(e), Some(y)) = (&self.class_embed, labels) {
            parts.push(e.embeddings());
            classes = Some((y.to_vec(), e.embeddings().dim(0)?));
        }
        let features = match (&self.top_proj, features) {
            (Some(proj), Some(f)) => {
                parts.extend([proj.weight(), proj.bias()]);
                Some(f)
            }
            _ => None,
        };
        let weights = layer::flat_weights(&parts)?;
        Ok(layer::apply(state, features, &weights, size, self.mask.is_some(), classes)?)
    }
}

/// The top codes' path: embedding and upsampling, shared by all layers.
struct TopPath {
    embed: Embedding,
    upsample: ConvTranspose2d,
}

impl TopPath {
    /// Top codes [N, h, w] -> upsampled features, channels-last [N, 2h, 2w, C].
    fn features(&self, codes: &Tensor) -> Result<Tensor> {
        // (n, h, w, c) -> (n, c, h, w) and back.
        let x = self.embed.forward(codes)?.permute((0, 3, 1, 2))?;
        Ok(self.upsample.forward(&x)?.permute((0, 2, 3, 1))?.contiguous()?)
    }
}

pub struct PixelCnn {
    pub config: PixelCnnConfig,
    embed: Embedding,
    layers: Vec<GatedLayer>,
    top: Option<TopPath>,
    head1: Linear,
    head3: Linear,
}

impl PixelCnn {
    pub fn new(config: PixelCnnConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let c = config.channels;
        let embed = p.embedding("embed", config.n_embed, c)?;
        let layers = (0..config.layers)
            .map(|i| GatedLayer::new(p, &format!("layers.{i}"), i == 0, &config))
            .collect::<Result<Vec<_>>>()?;
        let top = match &config.top {
            Some(t) => Some(TopPath {
                embed: p.embedding("top_embed", t.n_embed, c)?,
                upsample: p.conv_transpose2d(
                    "top_upsample",
                    c,
                    c,
                    4,
                    ConvTransposeConfig { stride: 2, padding: 1, output_padding: 0 },
                )?,
            }),
            None => None,
        };
        let head1 = conv_matrix(p, "head.1", c, c, 1, 1)?;
        let head3 = conv_matrix(p, "head.3", c, config.n_embed, 1, 1)?;
        Ok(PixelCnn { config, embed, layers, top, head1, head3 })
    }

    /// The device the network lives on.
    pub fn device(&self) -> &candle_core::Device {
        self.embed.embeddings().device()
    }

    /// Logits [N, n_embed, H, W] of each code given the codes before it in raster order, for
    /// codes [N, H, W] (u32), class labels [N] (u32) when the model is class-conditional and
    /// top codes [N, H/2, W/2] (u32) when it is conditioned on them.
    pub fn forward(&self, codes: &Tensor, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<Tensor> {
        let (n, h, w) = codes.dims3()?;
        let logits = self.logits_rows(codes, labels, top)?;
        // (n h w, e) -> (n, e, h, w)
        Ok(logits.reshape((n, h, w, self.config.n_embed))?.permute((0, 3, 1, 2))?.contiguous()?)
    }

    /// The mean cross-entropy of the codes under the model, in nats per code.
    pub fn loss(&self, codes: &Tensor, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<Tensor> {
        let logits = self.logits_rows(codes, labels, top)?;
        mean_cross_entropy(&logits, &codes.flatten_all()?)
    }

    /// The logits channels-last, one row per code: [N H W, n_embed].
    fn logits_rows(&self, codes: &Tensor, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<Tensor> {
        // The maps are embeddings: on the table's device, in its dtype.
        self.logits_rows_by(OpPath::for_maps(self.embed.embeddings()), codes, labels, top)
    }

    /// [`PixelCnn::logits_rows`] with the unfolds and gates run by `ops`.
    fn logits_rows_by(
        &self,
        ops: OpPath,
        codes: &Tensor,
        labels: Option<&Tensor>,
        top: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.check(codes, labels, top)?;
        let x = self.embed.forward(&codes.flatten_all()?)?;
        let size = (self.config.height, self.config.width);
        let h = match ops {
            OpPath::Fused => {
                // The stacks side by side, one layer one op.
                let labels = labels.map(|y| y.to_vec1::<u32>()).transpose()?;
                let features = self.top_features(top)?;
                let mut state = Tensor::cat(&[&x, &x], 1)?;
                for layer in &self.layers {
                    state = layer.forward_fused(&state, size, features.as_ref(), labels.as_deref())?;
                }
                let c = self.config.channels;
                state.narrow(1, c, c)?
            }
            OpPath::Composed => {
                let conds = self.conditions(n, labels, top)?;
                let (mut v, mut h) = (x.clone(), x);
                for (layer, cond) in self.layers.iter().zip(&conds) {
                    (v, h) = layer.forward(&v, &h, size, &cond.iter().collect::<Vec<_>>())?;
                }
                h
            }
        };
        let x = self.head1.forward(&h.relu()?)?.relu()?;
        Ok(self.head3.forward(&x)?)
    }

    /// Each layer's conditioning: the projected top codes [N, H W, 2C] and the class
    /// embedding [N, 1, 2C], those the model has, in that order.
    fn conditions(&self, n: usize, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<Vec<Vec<Tensor>>> {
        let c2 = 2 * self.config.channels;
        let features = self.top_features(top)?;
        self.layers
            .iter()
            .map(|layer| {
                let mut cond = Vec::new();
                if let (Some(proj), Some(f)) = (&layer.top_proj, &features) {
                    cond.push(proj.forward(f)?.reshape((n, (), c2))?);
                }
                if let (Some(e), Some(y)) = (&layer.class_embed, labels) {
                    cond.push(e.forward(y)?.unsqueeze(1)?);
                }
                Ok(cond)
            })
            .collect()
    }

    /// The upsampled top codes, one pixel a row [N H W, C], when the model takes them.
    fn top_features(&self, top: Option<&Tensor>) -> Result<Option<Tensor>> {
        Ok(match (&self.top, top) {
            (Some(path), Some(codes)) => Some(path.features(codes)?.reshape(((), self.config.channels))?),
            _ => None,
        })
    }

    /// Checks the inputs against the configuration; returns the batch size.
    fn check(&self, codes: &Tensor, labels: Option<&Tensor>, top: Option<&Tensor>) -> Result<usize> {
        let cfg = &self.config;
        let n = codes.dims().first().copied().unwrap_or(0);
        check_ids("codes", codes, &[n, cfg.height, cfg.width], "[N, H, W]", cfg.n_embed)?;
        match (cfg.n_classes, labels) {
            (Some(k), Some(y)) => check_ids("labels", y, &[n], "[N]", k)?,
            (Some(k), None) => {
                return Err(Error::config(format!(
                    "pixelcnn-prior: the model is conditioned on {k} classes; labels are needed"
                )))
            }
            (None, Some(_)) => return Err(Error::config("pixelcnn-prior: the model takes no labels")),
            (None, None) => {}
        }
        match (&cfg.top, top) {
            (Some(t), Some(codes)) => check_ids("top codes", codes, &[n, t.height, t.width], "[N, h, w]", t.n_embed)?,
            (Some(_), None) => {
                return Err(Error::config("pixelcnn-prior: the model is conditioned on top codes; they are needed"))
            }
            (None, Some(_)) => return Err(Error::config("pixelcnn-prior: the model takes no top codes")),
            (None, None) => {}
        }
        Ok(n)
    }
}

/// Checks that `t` is a u32 tensor of dimensions `want` (described as `form`) whose values
/// are below `limit`.
fn check_ids(what: &str, t: &Tensor, want: &[usize], form: &str, limit: usize) -> Result<()> {
    if t.dtype() != DType::U32 {
        return Err(Error::config(format!("pixelcnn-prior: {what} must be u32, got {:?}", t.dtype())));
    }
    if t.dims() != want {
        return Err(Error::config(format!(
            "pixelcnn-prior: {what} have shape {:?}, expected {form} = {want:?}",
            t.dims()
        )));
    }
    if t.elem_count() > 0 {
        let max = t.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max >= limit {
            return Err(Error::config(format!(
                "pixelcnn-prior: {what} hold {max}, out of range for {limit} (0..={})",
                limit - 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
