//! VQ-VAE-2 (Razavi et al. 2019, <https://arxiv.org/abs/1906.00446>) in the layout of
//! rosinality/vq-vae-2-pytorch (<https://github.com/rosinality/vq-vae-2-pytorch>, `VQVAE`;
//! `vqvae2-mnist`, docs/models.md), and with `levels: 1` the plain VQ-VAE of van den Oord et
//! al. (2017, <https://arxiv.org/abs/1711.00937>). Module names are that implementation's
//! attribute names, so its state dict loads as it is:
//!
//! - `enc_b` (stride 4): conv4x4 s2 in->c/2, ReLU, conv4x4 s2 c/2->c, ReLU, conv3x3 c->c,
//!   ResBlocks, ReLU (32x32 -> 8x8); `enc_t` (stride 2): conv4x4 s2 c->c/2, ReLU, conv3x3
//!   c/2->c, ResBlocks, ReLU (8x8 -> 4x4).
//! - `quantize_conv_t` 1x1 c->d and `quantize_t`; `dec_t`: conv3x3 d->c, ResBlocks, ReLU,
//!   convT4x4 s2 c->d; `quantize_conv_b` 1x1 (d+c)->d on concat(dec_t, enc_b) and `quantize_b`.
//! - `upsample_t` convT4x4 s2 d->d; `dec`: conv3x3 2d->c, ResBlocks, ReLU, convT4x4 s2 c->c/2,
//!   ReLU, convT4x4 s2 c/2->in on concat(upsample_t(q_t), q_b).
//!
//! A ResBlock is ReLU, conv3x3 c->r, ReLU, conv1x1 r->c, plus its input (`conv.1`, `conv.3`).

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use super::quantize::{Quantized, Quantizer, QuantizerConfig};
use super::Demand;
use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::memory::{batch_within, bytes_of};
use crate::nn::conv::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
use crate::nn::functional::relu;
use crate::nn::params::Params;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVae2Config {
    /// The images: `in_channel` of the reference is `image.channels`; the height and width
    /// are any multiple of the encoder's stride ([`VqVae2Config::stride`]).
    pub image: Geometry,
    pub channel: usize,
    pub n_res_block: usize,
    pub n_res_channel: usize,
    pub embed_dim: usize,
    pub n_embed: usize,
    /// 2 for VQ-VAE-2 (top and bottom codes), 1 for VQ-VAE (bottom codes only).
    pub levels: usize,
    /// Weight of the commitment term in the loss.
    pub commitment: f64,
    pub decay: f32,
    /// Restart codes unused for this many updates (`--restart-dead`); `None` never.
    pub restart_after: Option<u32>,
}

/// The activation memory a default inference batch plans for, and its largest size.
const INFERENCE_BUDGET: u128 = 1 << 30;
const MAX_INFERENCE_BATCH: usize = 500;

impl VqVae2Config {
    /// The `vqvae2` preset: the reference's `VQVAE()` with its defaults, on 3x256x256
    /// images (top codes 32x32, bottom codes 64x64), as in that project's FFHQ runs. Training
    /// takes the size of its data.
    ///
    /// Codes unused for 20 updates are restarted, not 100 as on the digits: a colour set of a
    /// few thousand images gives 27 updates an epoch at batch 128, and with 100 the bundled
    /// emoji kept 14 bottom and 6 top codes of 512 after 3 epochs (held-out MSE 0.109); with
    /// 20, 249 and 69 after the first. A code no vector of 20 batches (655,360 vectors of
    /// 16x16 bottom maps) came nearest to is dead.
    pub fn vqvae2() -> Self {
        VqVae2Config {
            image: Geometry { channels: 3, height: 256, width: 256 },
            restart_after: Some(20),
            ..Self::vqvae2_mnist()
        }
    }

    /// The `vqvae2-mnist` preset: the same network on 1x32x32 (the digits padded by 2 pixels).
    pub fn vqvae2_mnist() -> Self {
        VqVae2Config {
            image: Geometry { channels: 1, height: 32, width: 32 },
            channel: 128,
            n_res_block: 2,
            n_res_channel: 32,
            embed_dim: 64,
            n_embed: 512,
            levels: 2,
            commitment: 0.25,
            decay: 0.99,
            restart_after: Some(100),
        }
    }
}

impl VqVae2Config {
    /// One image's activations: the input and the encoder's first, full-resolution maps.
    pub fn demands(&self) -> Vec<Demand> {
        let Geometry { channels, height, width } = self.image;
        let bytes = bytes_of(&[height, width, channels.max(self.channel)], 4);
        let (field, value) = self.image.longer_side();
        vec![Demand { field, value, what: "one image's activations", bytes }]
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }

    /// The batch vq-encode and vq-decode use unless told: 500 images, or fewer so that a
    /// batch's activations ([`VqVae2Config::demands`] per image) stay within 1 GiB. A batch of
    /// 500 took 2.4 GB of peak RSS at 3x128x128 and would take about 10 GB at 256x256.
    pub fn inference_batch(&self) -> usize {
        let per_image = self.demands().iter().map(|d| d.bytes).try_fold(0u128, |acc, b| acc.checked_add(b?));
        batch_within(per_image, INFERENCE_BUDGET, MAX_INFERENCE_BATCH)
    }

    /// An error naming what is out of range: the levels, the channels, or an image size the
    /// strides cannot take.
    pub fn validate(&self) -> Result<()> {
        if !(1..=2).contains(&self.levels) || self.channel < 2 || self.image.channels == 0 {
            return Err(Error::config("vqvae2: levels must be 1 or 2, channel >= 2, channels >= 1"));
        }
        self.image.check_stride(&format!("vqvae2 with {} level(s)", self.levels), self.stride())
    }

    /// What the image size must be a multiple of: the bottom codes are a quarter of it, the
    /// top codes half of those.
    pub fn stride(&self) -> usize {
        if self.levels == 2 {
            8
        } else {
            4
        }
    }

    /// The code maps' sizes (height, width): the top level's (two levels) and the bottom's.
    pub fn code_sizes(&self) -> (Option<(usize, usize)>, (usize, usize)) {
        let bottom = (self.image.height / 4, self.image.width / 4);
        ((self.levels == 2).then_some((bottom.0 / 2, bottom.1 / 2)), bottom)
    }

    fn quantizer(&self) -> QuantizerConfig {
        QuantizerConfig {
            dim: self.embed_dim,
            n_embed: self.n_embed,
            decay: self.decay,
            eps: 1e-5,
            restart_after: self.restart_after,
        }
    }
}

const S2P1: ConvConfig = ConvConfig { stride: 2, padding: 1 };
const P1: ConvConfig = ConvConfig { stride: 1, padding: 1 };
const UP2: ConvTransposeConfig = ConvTransposeConfig { stride: 2, padding: 1, output_padding: 0 };

/// ReLU, conv3x3 c->r, ReLU, conv1x1 r->c, plus the input.
struct ResBlock {
    conv1: Conv2d,
    conv3: Conv2d,
}

impl ResBlock {
    fn new(p: &mut Params, name: &str, c: usize, r: usize) -> Result<Self> {
        Ok(ResBlock {
            conv1: p.conv2d(&format!("{name}.conv.1"), c, r, 3, P1)?,
            conv3: p.conv2d(&format!("{name}.conv.3"), r, c, 1, ConvConfig::default())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv3.forward(&relu(&self.conv1.forward(&relu(x)?)?)?)?;
        Ok((h + x)?)
    }
}

/// The ResBlocks `{name}.blocks.{first}..` followed by a ReLU.
fn res_stack(p: &mut Params, name: &str, first: usize, cfg: &VqVae2Config) -> Result<Vec<ResBlock>> {
    (0..cfg.n_res_block)
        .map(|i| ResBlock::new(p, &format!("{name}.blocks.{}", first + i), cfg.channel, cfg.n_res_channel))
        .collect()
}

fn run_res(blocks: &[ResBlock], x: Tensor) -> Result<Tensor> {
    let mut h = x;
    for b in blocks {
        h = b.forward(&h)?;
    }
    relu(&h)
}

/// An encoder of stride 4 (`enc_b`) or 2 (`enc_t`).
struct Encoder {
    convs: Vec<Conv2d>,
    res: Vec<ResBlock>,
}

impl Encoder {
    fn new(p: &mut Params, name: &str, cin: usize, stride: usize, cfg: &VqVae2Config) -> Result<Self> {
        let (c, half) = (cfg.channel, cfg.channel / 2);
        let convs = if stride == 4 {
            vec![
                p.conv2d(&format!("{name}.blocks.0"), cin, half, 4, S2P1)?,
                p.conv2d(&format!("{name}.blocks.2"), half, c, 4, S2P1)?,
                p.conv2d(&format!("{name}.blocks.4"), c, c, 3, P1)?,
            ]
        } else {
            vec![
                p.conv2d(&format!("{name}.blocks.0"), cin, half, 4, S2P1)?,
                p.conv2d(&format!("{name}.blocks.2"), half, c, 3, P1)?,
            ]
        };
        let res = res_stack(p, name, 2 * convs.len() - 1, cfg)?;
        Ok(Encoder { convs, res })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h)?;
            if i + 1 < self.convs.len() {
                h = relu(&h)?;
            }
        }
        run_res(&self.res, h)
    }
}

/// A decoder of stride 2 (`dec_t`) or 4 (`dec`).
struct Decoder {
    conv: Conv2d,
    res: Vec<ResBlock>,
    ups: Vec<ConvTranspose2d>,
}

impl Decoder {
    fn new(p: &mut Params, name: &str, cin: usize, cout: usize, stride: usize, cfg: &VqVae2Config) -> Result<Self> {
        let c = cfg.channel;
        let conv = p.conv2d(&format!("{name}.blocks.0"), cin, c, 3, P1)?;
        let res = res_stack(p, name, 1, cfg)?;
        let after = 2 + cfg.n_res_block;
        let ups = if stride == 4 {
            vec![
                p.conv_transpose2d(&format!("{name}.blocks.{after}"), c, c / 2, 4, UP2)?,
                p.conv_transpose2d(&format!("{name}.blocks.{}", after + 2), c / 2, cout, 4, UP2)?,
            ]
        } else {
            vec![p.conv_transpose2d(&format!("{name}.blocks.{after}"), c, cout, 4, UP2)?]
        };
        Ok(Decoder { conv, res, ups })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = run_res(&self.res, self.conv.forward(x)?)?;
        for (i, up) in self.ups.iter().enumerate() {
            h = up.forward(&h)?;
            if i + 1 < self.ups.len() {
                h = relu(&h)?;
            }
        }
        Ok(h)
    }
}

/// The top level: its encoder, quantizer and decoder, and the upsampling of its codes.
struct Top {
    enc: Encoder,
    quantize_conv: Conv2d,
    quantize: Quantizer,
    dec: Decoder,
    upsample: ConvTranspose2d,
}

pub struct VqVae2 {
    pub config: VqVae2Config,
    enc_b: Encoder,
    top: Option<Top>,
    quantize_conv_b: Conv2d,
    quantize_b: Quantizer,
    dec: Decoder,
}

/// The quantized maps of an encoding, with the encoder outputs they came from.
pub struct Encoded {
    /// Quantized top (when two levels) and bottom maps, with codes and commitment terms.
    pub top: Option<Quantized>,
    pub bottom: Quantized,
    /// Encoder outputs before quantization, [N, h, w, d].
    pub top_inputs: Option<Tensor>,
    pub bottom_inputs: Tensor,
}

/// Everything one forward pass yields.
pub struct Forward {
    /// Reconstruction in [-1, 1] space, [N, C, H, W].
    pub reconstruction: Tensor,
    /// Quantized top (when two levels) and bottom maps, with codes and commitment terms.
    pub top: Option<Quantized>,
    pub bottom: Quantized,
    /// Encoder outputs before quantization, [N, h, w, d] (for codebook updates).
    pub top_inputs: Option<Tensor>,
    pub bottom_inputs: Tensor,
}

impl VqVae2 {
    pub fn new(config: VqVae2Config, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let (c, d) = (config.channel, config.embed_dim);
        let enc_b = Encoder::new(p, "enc_b", config.image.channels, 4, &config)?;
        let top = if config.levels == 2 {
            Some(Top {
                enc: Encoder::new(p, "enc_t", c, 2, &config)?,
                quantize_conv: p.conv2d("quantize_conv_t", c, d, 1, ConvConfig::default())?,
                quantize: Quantizer::new("quantize_t", config.quantizer(), p)?,
                dec: Decoder::new(p, "dec_t", d, d, 2, &config)?,
                upsample: p.conv_transpose2d("upsample_t", d, d, 4, UP2)?,
            })
        } else {
            None
        };
        let b_in = if top.is_some() { d + c } else { c };
        let quantize_conv_b = p.conv2d("quantize_conv_b", b_in, d, 1, ConvConfig::default())?;
        let quantize_b = Quantizer::new("quantize_b", config.quantizer(), p)?;
        let dec_in = if top.is_some() { 2 * d } else { d };
        let dec = Decoder::new(p, "dec", dec_in, config.image.channels, 4, &config)?;
        Ok(VqVae2 { config, enc_b, top, quantize_conv_b, quantize_b, dec })
    }

    /// Encodes, quantizes and decodes images `x` [N, C, H, W] in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Forward> {
        let Encoded { top, top_inputs, bottom, bottom_inputs } = self.encode(x)?;
        let q_t = top.as_ref().map(|q| q.output.permute((0, 3, 1, 2))).transpose()?;
        let reconstruction = self.decode_quantized(q_t.as_ref(), &bottom.output.permute((0, 3, 1, 2))?)?;
        Ok(Forward { reconstruction, top, bottom, top_inputs, bottom_inputs })
    }

    /// Encodes and quantizes images `x` [N, C, H, W] in [-1, 1], without decoding.
    pub fn encode(&self, x: &Tensor) -> Result<Encoded> {
        let enc_b = self.enc_b.forward(x)?;
        let (top, top_inputs, enc_b) = match &self.top {
            Some(t) => {
                // (n, d, h, w) -> (n, h, w, d): the quantizer works on the last axis.
                let z_t = t.quantize_conv.forward(&t.enc.forward(&enc_b)?)?.permute((0, 2, 3, 1))?;
                let q_t = t.quantize.forward(&z_t)?;
                let dec_t = t.dec.forward(&q_t.output.permute((0, 3, 1, 2))?)?;
                (Some(q_t), Some(z_t), Tensor::cat(&[&dec_t, &enc_b], 1)?)
            }
            None => (None, None, enc_b),
        };
        let z_b = self.quantize_conv_b.forward(&enc_b)?.permute((0, 2, 3, 1))?;
        let bottom = self.quantize_b.forward(&z_b)?;
        Ok(Encoded { top, top_inputs, bottom, bottom_inputs: z_b })
    }

    /// Decodes quantized maps [N, d, h, w] to images in [-1, 1].
    fn decode_quantized(&self, q_t: Option<&Tensor>, q_b: &Tensor) -> Result<Tensor> {
        let input = match (&self.top, q_t) {
            (Some(t), Some(q_t)) => Tensor::cat(&[&t.upsample.forward(q_t)?, q_b], 1)?,
            (None, None) => q_b.clone(),
            _ => return Err(Error::config("vqvae2: top codes are needed exactly when the model has two levels")),
        };
        self.dec.forward(&input)
    }

    /// Decodes integer codes: top [N, h/2, w/2] (two levels) and bottom [N, h, w].
    pub fn decode_codes(&self, top: Option<&Tensor>, bottom: &Tensor) -> Result<Tensor> {
        let q_t = match (&self.top, top) {
            (Some(t), Some(codes)) => Some(t.quantize.embed_codes(codes)?.permute((0, 3, 1, 2))?),
            _ => None,
        };
        let q_b = self.quantize_b.embed_codes(bottom)?.permute((0, 3, 1, 2))?;
        self.decode_quantized(q_t.as_ref(), &q_b)
    }

    /// The quantizers (top first when present).
    pub fn quantizers(&self) -> (Option<&Quantizer>, &Quantizer) {
        (self.top.as_ref().map(|t| &t.quantize), &self.quantize_b)
    }

    /// The quantizers (top first when present), for codebook updates.
    pub fn quantizers_mut(&mut self) -> (Option<&mut Quantizer>, &mut Quantizer) {
        (self.top.as_mut().map(|t| &mut t.quantize), &mut self.quantize_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};
    use candle_core::Device;

    #[test]
    fn the_default_inference_batch_keeps_large_images_within_a_gibibyte() {
        let at = |side: usize| VqVae2Config {
            image: Geometry { channels: 3, height: side, width: side },
            ..VqVae2Config::vqvae2()
        };
        assert_eq!(VqVae2Config::vqvae2_mnist().inference_batch(), 500);
        assert_eq!(at(64).inference_batch(), 500);
        assert_eq!(at(128).inference_batch(), 128);
        assert_eq!(at(256).inference_batch(), 32);
        assert_eq!(at(1 << 20).inference_batch(), 1);
    }

    /// The parameter and buffer names and shapes of the common PyTorch implementation's
    /// VQVAE(in_channel=1, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64,
    /// n_embed=512), as listed by `{k: tuple(v.shape) for k, v in model.state_dict().items()}`.
    #[test]
    fn names_and_shapes_are_the_pytorch_state_dict() {
        let mut p = Params::init(0, &Device::Cpu);
        VqVae2::new(VqVae2Config::vqvae2_mnist(), &mut p).unwrap();
        let set = p.finish().unwrap();
        let map = set.to_tensor_map().unwrap();
        let shape = |n: &str| map.get(n).unwrap_or_else(|| panic!("missing {n}")).dims().to_vec();
        let expect: &[(&str, &[usize])] = &[
            ("enc_b.blocks.0.weight", &[64, 1, 4, 4]),
            ("enc_b.blocks.2.weight", &[128, 64, 4, 4]),
            ("enc_b.blocks.4.weight", &[128, 128, 3, 3]),
            ("enc_b.blocks.5.conv.1.weight", &[32, 128, 3, 3]),
            ("enc_b.blocks.6.conv.3.weight", &[128, 32, 1, 1]),
            ("enc_t.blocks.0.weight", &[64, 128, 4, 4]),
            ("enc_t.blocks.2.weight", &[128, 64, 3, 3]),
            ("enc_t.blocks.4.conv.3.bias", &[128]),
            ("quantize_conv_t.weight", &[64, 128, 1, 1]),
            ("quantize_t.embed", &[64, 512]),
            ("quantize_t.cluster_size", &[512]),
            ("quantize_t.embed_avg", &[64, 512]),
            ("dec_t.blocks.0.weight", &[128, 64, 3, 3]),
            ("dec_t.blocks.2.conv.1.weight", &[32, 128, 3, 3]),
            ("dec_t.blocks.4.weight", &[128, 64, 4, 4]),
            ("quantize_conv_b.weight", &[64, 192, 1, 1]),
            ("quantize_b.embed", &[64, 512]),
            ("upsample_t.weight", &[64, 64, 4, 4]),
            ("dec.blocks.0.weight", &[128, 128, 3, 3]),
            ("dec.blocks.2.conv.3.weight", &[128, 32, 1, 1]),
            ("dec.blocks.4.weight", &[128, 64, 4, 4]),
            ("dec.blocks.6.weight", &[64, 1, 4, 4]),
            ("dec.blocks.6.bias", &[1]),
        ];
        for (name, want) in expect {
            assert_eq!(shape(name), *want, "{name}");
        }
        // 10 convs with biases in the encoders and decoders' main paths, 8 ResBlocks of 2 convs,
        // 2 quantize convs, upsample_t: 29 convolutions of weight and bias; 2 x 3 buffers.
        assert_eq!(map.tensors.len(), 29 * 2 + 6, "{:?}", map.names());
    }

    #[test]
    fn one_and_two_levels_map_32x32_to_codes_and_back() {
        for levels in [1, 2] {
            let cfg = VqVae2Config {
                channel: 16,
                n_res_channel: 8,
                embed_dim: 8,
                n_embed: 16,
                levels,
                ..VqVae2Config::vqvae2_mnist()
            };
            let mut p = Params::init(0, &Device::Cpu);
            let model = VqVae2::new(cfg, &mut p).unwrap();
            let set = p.finish().unwrap();
            let x = Rng::new(0, Stream::Eval, 0).uniform(&[3, 1, 32, 32], -1.0, 1.0, &Device::Cpu).unwrap();
            let out = model.forward(&x).unwrap();
            assert_eq!(out.reconstruction.dims(), &[3, 1, 32, 32]);
            assert_eq!(out.bottom.codes.dims(), &[3, 8, 8]);
            assert_eq!(out.top.as_ref().map(|t| t.codes.dims().to_vec()), (levels == 2).then(|| vec![3, 4, 4]));
            // Decoding the codes gives the forward pass's reconstruction.
            let again = model.decode_codes(out.top.as_ref().map(|t| &t.codes), &out.bottom.codes).unwrap();
            let diff =
                (again - &out.reconstruction).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "levels {levels}: {diff}");
            // Every trainable tensor gets a gradient through the straight-through estimator.
            let loss = (out.reconstruction - &x).unwrap().sqr().unwrap().mean_all().unwrap();
            let loss = (loss + out.bottom.commitment).unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in set.trainable() {
                assert!(grads.get(var.as_tensor()).is_some(), "levels {levels}: no gradient for {name}");
            }
            assert!(set.trainable().all(|(n, _)| levels == 2 || !n.contains("_t")));
        }
    }
}
