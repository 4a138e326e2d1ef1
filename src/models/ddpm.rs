//! The noise-prediction U-Net of DDPM (Ho et al. 2020, <https://arxiv.org/abs/2006.11239>),
//! as diffusers' `UNet2DModel` builds it (reference implementation:
//! <https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/unets/unet_2d.py>,
//! blocks in `unet_2d_blocks.py`, `resnet.py`, `attention_processor.py`), with its
//! configuration fields and its state-dict names and shapes exactly, so that a diffusers
//! checkpoint (`google/ddpm-cifar10-32`'s `diffusion_pytorch_model.safetensors`) loads
//! unchanged. t is 0-based, as in diffusers and the original code
//! (<https://github.com/hojonathanho/diffusion>). Presets: `ddpm-cifar10` (that model's
//! `config.json`) and the small `ddpm-unet-mnist` (docs/models.md).
//!
//! Names (`.weight` / `.bias` under each):
//!
//! - `time_embedding.linear_1`, `time_embedding.linear_2`: Linear c0->4 c0, SiLU, Linear
//!   4 c0->4 c0 on the sinusoidal embedding of t (dim c0 = `block_out_channels[0]`).
//! - `conv_in`: conv3x3 in->c0.
//! - `down_blocks.{i}.resnets.{j}` (j < layers_per_block), `down_blocks.{i}.attentions.{j}`
//!   (AttnDownBlock2D only), `down_blocks.{i}.downsamplers.0.conv` (conv3x3 stride 2; not
//!   after the last block).
//! - `mid_block.resnets.0`, `mid_block.attentions.0`, `mid_block.resnets.1`.
//! - `up_blocks.{i}.resnets.{j}` (j < layers_per_block + 1, each on concat(h, skip)),
//!   `up_blocks.{i}.attentions.{j}` (AttnUpBlock2D only), `up_blocks.{i}.upsamplers.0.conv`
//!   (nearest x2, conv3x3; not after the last block); block 0 is the deepest.
//! - `conv_norm_out`, `conv_out`: GroupNorm, SiLU, conv3x3 c0->in.
//!
//! A ResnetBlock2D has `norm1`, `conv1`, `time_emb_proj` (Linear 4 c0->cout on SiLU(temb)),
//! `norm2`, `conv2` and, when cin != cout, `conv_shortcut` (conv1x1); an attention block
//! `group_norm`, `to_q`, `to_k`, `to_v` and `to_out.0`, Linear layers c->c over the pixels
//! (channels last). Files in older layouts are read by [`super::ddpm_compat`].

use candle_core::{Module, Tensor, D};
use serde::{Deserialize, Serialize};

use super::Demand;
use crate::data::Geometry;
use crate::diffusion::ScheduleKind;
use crate::error::{Error, Result};
use crate::memory::bytes_of;
use crate::nn::conv::{Conv2d, ConvConfig};
use crate::nn::functional::dropout_mask;
use crate::nn::params::{Init, Params};
use crate::nn::{GroupNorm, Linear};
use crate::rng::Rng;

/// A block on the way down (diffusers' `down_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// ResnetBlock2Ds.
    #[serde(rename = "DownBlock2D")]
    Plain,
    /// ResnetBlock2Ds, each followed by self-attention.
    #[serde(rename = "AttnDownBlock2D")]
    Attn,
}

/// A block on the way up (diffusers' `up_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    #[serde(rename = "UpBlock2D")]
    Plain,
    #[serde(rename = "AttnUpBlock2D")]
    Attn,
}

/// diffusers' `UNet2DModel` configuration (the fields it shares with `config.json`, under
/// the same names), with SiLU, a positional time embedding and no class embedding, plus the
/// diffusion and training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdpmConfig {
    /// The images (`in_channels` = `out_channels`, `sample_size`): any height and width that
    /// halve once per block after the first.
    pub image: Geometry,
    /// Channels of each block; each block after the first halves the resolution. The first
    /// is also the size of the sinusoidal time embedding, whose MLP is 4 x as wide.
    pub block_out_channels: Vec<usize>,
    /// ResnetBlock2Ds per down block (an up block has one more).
    pub layers_per_block: usize,
    pub down_block_types: Vec<DownBlockType>,
    /// From the deepest block up.
    pub up_block_types: Vec<UpBlockType>,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    /// The time embedding is cosines then sines (else sines then cosines).
    pub flip_sin_to_cos: bool,
    /// The embedding's frequencies are exp(-ln(10000) i / (c0/2 - freq_shift)).
    pub freq_shift: f64,
    /// 0: pad the right and bottom by one, then a stride-2 conv without padding (the DDPM
    /// checkpoints); 1: a stride-2 conv with padding 1.
    pub downsample_padding: usize,
    /// Channels of each attention head; `None` is one head over all the channels.
    pub attention_head_dim: Option<usize>,
    /// The mid block's ResnetBlock2Ds and attention divide their output by this.
    pub mid_block_scale_factor: f64,
    pub dropout: f64,
    /// T, the number of diffusion steps.
    pub timesteps: usize,
    pub schedule: ScheduleKind,
    /// Decay of the exponential moving average of the weights (the sampled ones).
    pub ema_decay: f64,
    /// Class conditioning (diffusers' `num_class_embeds`): an embedding of the label added to
    /// the time embedding, `class_embedding.weight` [num_class_embeds, 4 c0]. The model's
    /// classes are 0..num_class_embeds - 1 and the last embedding is the null class: training
    /// drops a label to it with probability `p_uncond`, and it is the unconditional half of
    /// classifier-free guidance (Ho & Salimans 2022). `None`: unconditional.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// The probability that a training label is replaced by the null class.
    #[serde(default = "default_p_uncond")]
    pub p_uncond: f64,
}

/// Ho & Salimans' probability of training unconditionally.
fn default_p_uncond() -> f64 {
    0.1
}

impl DdpmConfig {
    /// The `ddpm-unet-mnist` preset: the DDPM topology scaled down for 32x32 digits (32, 64,
    /// 64 channels, attention at 8x8).
    pub fn ddpm_unet_mnist() -> Self {
        DdpmConfig {
            image: Geometry { channels: 1, height: 32, width: 32 },
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 2,
            down_block_types: vec![DownBlockType::Plain, DownBlockType::Plain, DownBlockType::Attn],
            up_block_types: vec![UpBlockType::Attn, UpBlockType::Plain, UpBlockType::Plain],
            norm_num_groups: 8,
            norm_eps: 1e-5,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            downsample_padding: 1,
            attention_head_dim: None,
            mid_block_scale_factor: 1.0,
            dropout: 0.1,
            timesteps: 1000,
            schedule: ScheduleKind::Linear,
            ema_decay: 0.9999,
            num_class_embeds: None,
            p_uncond: default_p_uncond(),
        }
    }

    /// The `ddpm-cifar10` preset: `google/ddpm-cifar10-32`'s `config.json` (Ho et al.'s
    /// CIFAR-10 network, 35.7 M parameters), with the paper's dropout 0.1 for training.
    pub fn ddpm_cifar10() -> Self {
        use DownBlockType as Down;
        use UpBlockType as Up;
        DdpmConfig {
            image: Geometry { channels: 3, height: 32, width: 32 },
            block_out_channels: vec![128, 256, 256, 256],
            layers_per_block: 2,
            down_block_types: vec![Down::Plain, Down::Attn, Down::Plain, Down::Plain],
            up_block_types: vec![Up::Plain, Up::Plain, Up::Attn, Up::Plain],
            norm_num_groups: 32,
            norm_eps: 1e-6,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            downsample_padding: 0,
            attention_head_dim: None,
            mid_block_scale_factor: 1.0,
            dropout: 0.1,
            timesteps: 1000,
            schedule: ScheduleKind::Linear,
            ema_decay: 0.9999,
            num_class_embeds: None,
            p_uncond: default_p_uncond(),
        }
    }

    /// One image's activations at the widest block, and the attention scores of one image
    /// at the largest map that has attention.
    pub fn demands(&self) -> Vec<Demand> {
        let Geometry { height, width, .. } = self.image;
        let widest = self.block_out_channels.iter().copied().max().unwrap_or(1);
        let (field, value) = self.image.longer_side();
        let mut demands = vec![Demand {
            field,
            value,
            what: "one image's activations",
            bytes: bytes_of(&[height, width, widest], 4),
        }];
        if let Some((level, c)) = self.attention_levels().next() {
            let pixels = (height >> level) * (width >> level);
            let heads = self.heads(c).max(1);
            demands.push(Demand {
                field,
                value,
                what: "one image's attention scores",
                bytes: bytes_of(&[heads, pixels, pixels], 4),
            });
        }
        demands
    }

    /// The levels (0: full resolution) with self-attention, shallowest first, and their
    /// channels; the mid block's is the deepest level's.
    fn attention_levels(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let n = self.block_out_channels.len();
        let down = self.down_block_types.iter().enumerate().filter(|(_, t)| **t == DownBlockType::Attn).map(|(l, _)| l);
        let up = self
            .up_block_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == UpBlockType::Attn)
            .map(move |(i, _)| n - 1 - i);
        let mut levels: Vec<usize> = down.chain(up).chain(n.checked_sub(1)).collect();
        levels.sort_unstable();
        levels.dedup();
        levels.into_iter().filter_map(|l| self.block_out_channels.get(l).map(|&c| (l, c)))
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }

    /// The classes a class-conditional model takes (its null class not counted).
    pub fn classes(&self) -> Option<usize> {
        self.num_class_embeds.map(|k| k - 1)
    }

    /// What the image size must be a multiple of: the maps halve once per block after the first.
    pub fn stride(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1).min(usize::BITS as usize - 1)
    }

    /// The attention heads over `c` channels.
    fn heads(&self, c: usize) -> usize {
        self.attention_head_dim.map_or(1, |d| c / d.max(1))
    }

    /// The width of the time embedding's MLP.
    fn temb_dim(&self) -> usize {
        4 * self.block_out_channels.first().copied().unwrap_or(0)
    }

    /// An error naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::config(format!("ddpm-unet: {what}")));
        let levels = self.block_out_channels.len();
        if levels == 0 || self.block_out_channels.contains(&0) {
            return bad("block_out_channels must be at least 1, and there must be one per block".into());
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return bad(format!(
                "down_block_types ({}) and up_block_types ({}) must have one entry per block_out_channels ({levels})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let c0 = self.block_out_channels[0];
        if c0 < 2 {
            return bad(format!("block_out_channels[0] {c0} (the time embedding's size) must be at least 2"));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return bad(format!(
                "every block's channels (block_out_channels {:?}) must split into norm_num_groups {g} groups",
                self.block_out_channels
            ));
        }
        if let Some(d) = self.attention_head_dim {
            if let Some((_, c)) = self.attention_levels().find(|&(_, c)| d == 0 || c % d != 0) {
                return bad(format!("attention_head_dim {d} must divide the {c} channels of every attention block"));
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad(format!("norm_eps {} must be positive", self.norm_eps));
        }
        if !(self.freq_shift >= 0.0 && self.freq_shift < (c0 / 2) as f64) {
            return bad(format!(
                "freq_shift {} must be in [0, block_out_channels[0] / 2 = {})",
                self.freq_shift,
                c0 / 2
            ));
        }
        if self.downsample_padding > 1 {
            return bad(format!("downsample_padding {} must be 0 or 1", self.downsample_padding));
        }
        if !(self.mid_block_scale_factor > 0.0 && self.mid_block_scale_factor.is_finite()) {
            return bad(format!("mid_block_scale_factor {} must be positive", self.mid_block_scale_factor));
        }
        if let Some(k) = self.num_class_embeds {
            if k < 2 {
                return bad(format!("num_class_embeds {k} must be at least 2 (a class and the null class)"));
            }
        }
        if !(0.0..1.0).contains(&self.p_uncond) {
            return bad(format!("--p-uncond {} must be in [0, 1)", self.p_uncond));
        }
        self.image.check_stride("ddpm-unet", self.stride())?;
        if self.timesteps > MAX_TIMESTEPS {
            return bad(format!("timesteps {} is more than {MAX_TIMESTEPS}", self.timesteps));
        }
        if self.layers_per_block == 0 || self.timesteps == 0 || self.image.channels == 0 {
            return bad("layers_per_block, timesteps and channels must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..=1.0).contains(&self.ema_decay) {
            return bad(format!(
                "dropout {} must be in [0, 1) and EMA decay {} in [0, 1]",
                self.dropout, self.ema_decay
            ));
        }
        Ok(())
    }
}

/// The most diffusion steps a configuration may have. DDPM uses 1,000; the schedule and the
/// samplers keep several values per step, and a chain of a million steps is already far too
/// long to sample, so a larger T is a mistake rather than a network.
pub const MAX_TIMESTEPS: usize = 1_000_000;

const P1: ConvConfig = ConvConfig { stride: 1, padding: 1 };

/// diffusers' ResnetBlock2D: GroupNorm, SiLU, conv3x3 cin->cout, plus a per-channel
/// projection of SiLU(temb); GroupNorm, SiLU, dropout, conv3x3 cout->cout; plus the input
/// (through a conv1x1 when cin != cout); divided by the output scale.
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    dropout: f64,
    output_scale: f64,
}

/// A GroupNorm of the configuration's groups and eps.
fn group_norm(p: &mut Params, name: &str, channels: usize, cfg: &DdpmConfig) -> Result<GroupNorm> {
    Ok(p.group_norm(name, cfg.norm_num_groups, channels)?.with_eps(cfg.norm_eps as f32))
}

impl ResBlock {
    fn new(p: &mut Params, name: &str, cin: usize, cout: usize, cfg: &DdpmConfig, output_scale: f64) -> Result<Self> {
        Ok(ResBlock {
            norm1: group_norm(p, &format!("{name}.norm1"), cin, cfg)?,
            conv1: p.conv2d(&format!("{name}.conv1"), cin, cout, 3, P1)?,
            time_emb_proj: p.linear(&format!("{name}.time_emb_proj"), cfg.temb_dim(), cout)?,
            norm2: group_norm(p, &format!("{name}.norm2"), cout, cfg)?,
            conv2: p.conv2d(&format!("{name}.conv2"), cout, cout, 3, P1)?,
            conv_shortcut: (cin != cout)
                .then(|| p.conv2d(&format!("{name}.conv_shortcut"), cin, cout, 1, ConvConfig::default()))
                .transpose()?,
            dropout: cfg.dropout,
            output_scale,
        })
    }

    /// `x` [B, cin, H, W], `temb` SiLU of the time embedding [B, 4 c0]; `rng` draws the
    /// dropout masks in training (None: evaluation, no dropout).
    fn forward(&self, x: &Tensor, temb: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let (b, c, _, _) = h.dims4()?;
        // (b, c) -> (b, c, 1, 1): one value per channel, broadcast over the pixels.
        let h = h.broadcast_add(&self.time_emb_proj.forward(temb)?.reshape((b, c, 1, 1))?)?;
        let mut h = self.norm2.forward_silu(&h)?;
        if let (Some(rng), true) = (rng, self.dropout > 0.0) {
            let mask = dropout_mask(h.dims(), self.dropout, rng, h.device())?;
            h = (h * mask)?;
        }
        let h = self.conv2.forward(&h)?;
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        rescaled(skip + h, self.output_scale)
    }
}

/// `x` / `scale`, skipping the pass over memory when the scale is 1.
fn rescaled(x: candle_core::Result<Tensor>, scale: f64) -> Result<Tensor> {
    let x = x?;
    Ok(if scale == 1.0 { x } else { x.affine(1.0 / scale, 0.0)? })
}

/// diffusers' `Attention` as its DDPM blocks use it: GroupNorm, then over the pixels as rows
/// of channels, q, k, v = Linear c->c, per head softmax(q k^T / sqrt(head dim)) v, Linear
/// c->c, plus the input, divided by the output scale. Every image and head is one batched
/// matmul.
struct Attention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    output_scale: f64,
}

impl Attention {
    fn new(p: &mut Params, name: &str, c: usize, cfg: &DdpmConfig, output_scale: f64) -> Result<Self> {
        Ok(Attention {
            group_norm: group_norm(p, &format!("{name}.group_norm"), c, cfg)?,
            to_q: p.linear(&format!("{name}.to_q"), c, c)?,
            to_k: p.linear(&format!("{name}.to_k"), c, c)?,
            to_v: p.linear(&format!("{name}.to_v"), c, c)?,
            to_out: p.linear(&format!("{name}.to_out.0"), c, c)?,
            heads: cfg.heads(c),
            output_scale,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (hw, heads) = (h * w, self.heads);
        let d = c / heads;
        // (b, c, h, w) -> (b, hw, c) -> (b hw, c): a row of channels per pixel.
        let rows =
            self.group_norm.forward(x)?.reshape((b, c, hw))?.transpose(1, 2)?.contiguous()?.reshape((b * hw, c))?;
        // (b hw, c) -> (b, hw, heads, d) -> (b, heads, hw, d)
        let split = |t: Tensor| t.reshape((b, hw, heads, d))?.transpose(1, 2)?.contiguous();
        let q = split(self.to_q.forward(&rows)?)?;
        let k = split(self.to_k.forward(&rows)?)?;
        let v = split(self.to_v.forward(&rows)?)?;
        // (b, heads, hw, d) x (b, heads, d, hw) -> (b, heads, hw, hw)
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
        // candle's fused softmax_last_dim has no gradient (docs/candle.md).
        let attn = candle_nn::ops::softmax(&scores, D::Minus1)?;
        // (b, heads, hw, d) -> (b, hw, heads, d) -> (b hw, c)
        let out = attn.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * hw, c))?;
        let out = self.to_out.forward(&out)?.reshape((b, hw, c))?.transpose(1, 2)?.reshape((b, c, h, w))?;
        rescaled(x + out, self.output_scale)
    }
}

/// Nearest-neighbour x2 upsampling by reshape and broadcast: candle's `upsample_nearest2d`
/// backward overwrites other gradients reaching its input (docs/candle.md).
fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    // (b, c, h, w) -> (b, c, h, 1, w, 1) -> (b, c, h, 2, w, 2) -> (b, c, 2h, 2w)
    Ok(x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))?)
}

/// diffusers' Downsample2D with a conv: stride 2, padded by `downsample_padding` on every
/// side, or (padding 0) by one row and column of zeros at the bottom and right.
struct Downsample {
    conv: Conv2d,
    pad_bottom_right: bool,
}

impl Downsample {
    fn new(p: &mut Params, name: &str, c: usize, cfg: &DdpmConfig) -> Result<Self> {
        let conv = ConvConfig { stride: 2, padding: cfg.downsample_padding };
        Ok(Downsample { conv: p.conv2d(name, c, c, 3, conv)?, pad_bottom_right: cfg.downsample_padding == 0 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_bottom_right {
            return Ok(self.conv.forward(&x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?)?);
        }
        Ok(self.conv.forward(x)?)
    }
}

/// One down or up block: its ResnetBlock2Ds, their attentions (none, or one after each) and
/// its resampler (`Down`: [`Downsample`]; up: nearest x2 then a conv3x3).
struct Block<R> {
    resnets: Vec<ResBlock>,
    attentions: Vec<Attention>,
    resample: Option<R>,
}

impl<R> Block<R> {
    /// The j-th ResnetBlock2D, then its attention if the block has them.
    fn layer(&self, j: usize, h: &Tensor, temb: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.resnets[j].forward(h, temb, rng)?;
        match self.attentions.get(j) {
            Some(attn) => attn.forward(&h),
            None => Ok(h),
        }
    }
}

pub struct UNet {
    pub config: DdpmConfig,
    time_embedding: [Linear; 2],
    /// [num_class_embeds, 4 c0], for a class-conditional model.
    class_embedding: Option<Tensor>,
    conv_in: Conv2d,
    down_blocks: Vec<Block<Downsample>>,
    mid_block: (ResBlock, Attention, ResBlock),
    /// In the order they run: the deepest first.
    up_blocks: Vec<Block<Conv2d>>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(config: DdpmConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let cfg = &config;
        let chans = &cfg.block_out_channels;
        let (c0, n) = (chans[0], chans.len());
        let conv_in = p.conv2d("conv_in", cfg.image.channels, c0, 3, P1)?;
        let time_embedding = [
            p.linear("time_embedding.linear_1", c0, cfg.temb_dim())?,
            p.linear("time_embedding.linear_2", cfg.temb_dim(), cfg.temb_dim())?,
        ];
        // N(0, 1), as torch.nn.Embedding initialises.
        let class_embedding = cfg
            .num_class_embeds
            .map(|k| p.tensor("class_embedding.weight", &[k, cfg.temb_dim()], Init::Normal(1.0)))
            .transpose()?;
        // Channels of every output kept for a skip connection, in order.
        let mut skips = vec![c0];
        let mut ch = c0;
        let mut down_blocks = Vec::new();
        for (i, (&out, kind)) in chans.iter().zip(&cfg.down_block_types).enumerate() {
            let name = format!("down_blocks.{i}");
            let (mut resnets, mut attentions) = (Vec::new(), Vec::new());
            for j in 0..cfg.layers_per_block {
                resnets.push(ResBlock::new(p, &format!("{name}.resnets.{j}"), ch, out, cfg, 1.0)?);
                ch = out;
                if *kind == DownBlockType::Attn {
                    attentions.push(Attention::new(p, &format!("{name}.attentions.{j}"), ch, cfg, 1.0)?);
                }
                skips.push(ch);
            }
            let resample = if i + 1 < n {
                skips.push(ch);
                Some(Downsample::new(p, &format!("{name}.downsamplers.0.conv"), ch, cfg)?)
            } else {
                None
            };
            down_blocks.push(Block { resnets, attentions, resample });
        }
        let scale = cfg.mid_block_scale_factor;
        let mid_block = (
            ResBlock::new(p, "mid_block.resnets.0", ch, ch, cfg, scale)?,
            Attention::new(p, "mid_block.attentions.0", ch, cfg, scale)?,
            ResBlock::new(p, "mid_block.resnets.1", ch, ch, cfg, scale)?,
        );
        let mut up_blocks = Vec::new();
        for (i, (&out, kind)) in chans.iter().rev().zip(&cfg.up_block_types).enumerate() {
            let name = format!("up_blocks.{i}");
            let (mut resnets, mut attentions) = (Vec::new(), Vec::new());
            for j in 0..=cfg.layers_per_block {
                let skip = skips.pop().expect("one skip per block");
                resnets.push(ResBlock::new(p, &format!("{name}.resnets.{j}"), ch + skip, out, cfg, 1.0)?);
                ch = out;
                if *kind == UpBlockType::Attn {
                    attentions.push(Attention::new(p, &format!("{name}.attentions.{j}"), ch, cfg, 1.0)?);
                }
            }
            let resample =
                (i + 1 < n).then(|| p.conv2d(&format!("{name}.upsamplers.0.conv"), ch, ch, 3, P1)).transpose()?;
            up_blocks.push(Block { resnets, attentions, resample });
        }
        let conv_norm_out = group_norm(p, "conv_norm_out", ch, cfg)?;
        let conv_out = p.conv2d("conv_out", ch, cfg.image.channels, 3, P1)?;
        Ok(UNet {
            config,
            time_embedding,
            class_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// Predicts the noise in `x` [B, C, H, W] at steps `t` (one per image, 0-based), for a
    /// class-conditional model of classes `y` (u32 [B]; `None` is the null class for all).
    /// `rng` draws dropout masks in training; `None` evaluates without dropout.
    pub fn forward(&self, x: &Tensor, t: &[usize], y: Option<&Tensor>, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let cfg = &self.config;
        let g = cfg.image;
        if t.len() != b || (c, h, w) != (g.channels, g.height, g.width) {
            return Err(Error::config(format!(
                "the U-Net takes [B, {}, {}, {}] and B steps, got {:?} and {} steps",
                g.channels,
                g.height,
                g.width,
                x.dims(),
                t.len()
            )));
        }
        let emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift, x.device())?;
        let mut temb = self.time_embedding[1].forward(&self.time_embedding[0].forward(&emb)?.silu()?)?;
        match (&self.class_embedding, y) {
            (Some(table), y) => {
                let null = self.null_labels(b, x.device())?;
                let y = y.unwrap_or(&null);
                if y.dims() != [b] {
                    return Err(Error::config(format!("{} class labels for a batch of {b}", y.elem_count())));
                }
                temb = (temb + table.index_select(y, 0)?)?;
            }
            (None, Some(_)) => return Err(Error::config("an unconditional U-Net takes no class labels")),
            (None, None) => {}
        }
        // Each ResnetBlock2D takes SiLU of the embedding.
        let temb = temb.silu()?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for j in 0..block.resnets.len() {
                h = block.layer(j, &h, &temb, rng.as_deref_mut())?;
                skips.push(h.clone());
            }
            if let Some(down) = &block.resample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_block.0.forward(&h, &temb, rng.as_deref_mut())?;
        h = self.mid_block.1.forward(&h)?;
        h = self.mid_block.2.forward(&h, &temb, rng.as_deref_mut())?;
        for block in &self.up_blocks {
            for j in 0..block.resnets.len() {
                let skip = skips.pop().expect("one skip per block");
                h = block.layer(j, &Tensor::cat(&[&h, &skip], 1)?, &temb, rng.as_deref_mut())?;
            }
            if let Some(up) = &block.resample {
                h = up.forward(&upsample2(&h)?)?;
            }
        }
        Ok(self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)?)
    }
}

impl UNet {
    /// The null class for `n` images, u32 [n]; an error for an unconditional model.
    pub fn null_labels(&self, n: usize, device: &candle_core::Device) -> Result<Tensor> {
        let k =
            self.config.num_class_embeds.ok_or_else(|| Error::config("an unconditional U-Net has no null class"))?;
        Ok(Tensor::full(k as u32 - 1, n, device)?)
    }
}

/// diffusers' `get_timestep_embedding` of steps `t` [B] -> [B, dim], in f32 as it computes
/// it: dim/2 sines then dim/2 cosines (the other way round when `flip_sin_to_cos`) of
/// t f_i, f_i = exp(-ln(10000) i / (dim/2 - freq_shift)); a zero column pads an odd dim.
pub fn timestep_embedding(
    t: &[usize],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let divisor = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (log_period * i as f32 / divisor).exp()).collect();
    let mut v = Vec::with_capacity(t.len() * dim);
    for &t in t {
        let angles: Vec<f32> = freqs.iter().map(|f| t as f32 * f).collect();
        let (sin, cos) = (angles.iter().map(|a| a.sin()), angles.iter().map(|a| a.cos()));
        if flip_sin_to_cos {
            v.extend(cos.chain(sin));
        } else {
            v.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            v.push(0.0);
        }
    }
    Ok(Tensor::from_vec(v, (t.len(), dim), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamSet;
    use crate::rng::Stream;
    use candle_core::{Device, Var};

    /// A small U-Net that still has every kind of block: two levels (16 and 8 px), attention
    /// at 8 px on the way down and up, a shortcut conv where channels change.
    fn tiny() -> DdpmConfig {
        DdpmConfig {
            image: Geometry { channels: 1, height: 16, width: 16 },
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            down_block_types: vec![DownBlockType::Plain, DownBlockType::Attn],
            up_block_types: vec![UpBlockType::Attn, UpBlockType::Plain],
            norm_num_groups: 4,
            ..DdpmConfig::ddpm_unet_mnist()
        }
    }

    fn build(cfg: DdpmConfig, seed: u64) -> (UNet, ParamSet) {
        let mut p = Params::init(seed, &Device::Cpu);
        let net = UNet::new(cfg, &mut p).unwrap();
        (net, p.finish().unwrap())
    }

    #[test]
    fn mnist_preset_has_diffusers_names_and_the_output_shape() {
        let (net, params) = build(DdpmConfig::ddpm_unet_mnist(), 0);
        let names: Vec<&str> = params.trainable().map(|(k, _)| k.as_str()).collect();
        for name in [
            "time_embedding.linear_1.weight",
            "time_embedding.linear_2.bias",
            "conv_in.weight",
            "down_blocks.0.resnets.0.norm1.weight",
            "down_blocks.0.resnets.1.conv2.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            "down_blocks.2.attentions.1.to_q.weight",
            "mid_block.resnets.0.time_emb_proj.weight",
            "mid_block.attentions.0.to_out.0.bias",
            "mid_block.resnets.1.conv1.weight",
            "up_blocks.0.resnets.2.conv_shortcut.weight",
            "up_blocks.0.attentions.2.group_norm.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.2.resnets.0.conv_shortcut.weight",
            "conv_norm_out.bias",
            "conv_out.weight",
        ] {
            assert!(names.contains(&name), "no {name}");
        }
        assert!(!names
            .iter()
            .any(|n| n.starts_with("down_blocks.2.downsamplers") || n.starts_with("up_blocks.2.upsamplers")));
        assert!(!names
            .iter()
            .any(|n| n.starts_with("down_blocks.0.attentions") || n.starts_with("up_blocks.1.attentions")));
        let dims = |n: &str| params.get(n).unwrap().dims().to_vec();
        assert_eq!(
            dims("up_blocks.2.resnets.0.conv1.weight"),
            [32, 96, 3, 3],
            "64 channels from below, 32 from the skip"
        );
        assert_eq!(dims("down_blocks.2.attentions.0.to_k.weight"), [64, 64]);
        assert_eq!(dims("time_embedding.linear_1.weight"), [128, 32]);
        assert_eq!(dims("up_blocks.1.resnets.0.time_emb_proj.weight"), [64, 128]);
        let x = Rng::new(0, Stream::Eval, 0).normal(&[2, 1, 32, 32], &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, &[0, 999], None, None).unwrap().dims(), [2, 1, 32, 32]);
    }

    /// google/ddpm-cifar10-32 has 35,746,307 parameters (diffusers' `num_parameters()`).
    #[test]
    fn cifar10_preset_has_the_published_parameter_count() {
        let mut plan = Params::plan();
        UNet::new(DdpmConfig::ddpm_cifar10(), &mut plan).unwrap();
        assert_eq!(plan.planned_bytes(), 35_746_307 * 4);
        let mnist = DdpmConfig::ddpm_unet_mnist();
        let mut plan = Params::plan();
        UNet::new(mnist, &mut plan).unwrap();
        assert!(plan.planned_bytes() / 4 < 2_000_000);
    }

    /// Every parameter, attention and normalisation included, gets a non-zero gradient.
    #[test]
    fn every_parameter_gets_a_gradient() {
        let (net, params) = build(tiny(), 1);
        let d = Device::Cpu;
        let x = Rng::new(1, Stream::Eval, 0).normal(&[3, 1, 16, 16], &d).unwrap();
        let target = Rng::new(2, Stream::Eval, 0).normal(&[3, 1, 16, 16], &d).unwrap();
        let mut rng = Rng::new(3, Stream::Step, 0);
        let y = net.forward(&x, &[5, 500, 999], None, Some(&mut rng)).unwrap();
        let grads = (y - target).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap();
        let mut n = 0;
        for (name, var) in params.trainable() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
            n += 1;
        }
        assert!(n > 60, "{n} parameters");
    }

    /// The attention's softmax passes gradients to q and k, one head or several: compared with
    /// finite differences of the block on a tiny input.
    #[test]
    fn attention_gradient_matches_finite_differences() {
        let d = Device::Cpu;
        for head_dim in [None, Some(2)] {
            let cfg = DdpmConfig { norm_num_groups: 2, attention_head_dim: head_dim, ..tiny() };
            let mut p = Params::init(4, &d);
            let attn = Attention::new(&mut p, "a", 4, &cfg, 1.0).unwrap();
            assert_eq!(attn.heads, if head_dim.is_some() { 2 } else { 1 });
            let params = p.finish().unwrap();
            let x0 = (Rng::new(5, Stream::Eval, 0).normal(&[2, 4, 3, 3], &d).unwrap() * 2.0).unwrap();
            let probe = Rng::new(6, Stream::Eval, 0).normal(&[2, 4, 3, 3], &d).unwrap();
            let loss = |x: &Tensor| (attn.forward(x).unwrap() * &probe).unwrap().sum_all().unwrap();
            let x = Var::from_tensor(&x0).unwrap();
            let grads = loss(x.as_tensor()).backward().unwrap();
            // q and k only matter through the softmax.
            for name in ["a.to_q.weight", "a.to_k.weight"] {
                let w = params.get(name).unwrap();
                let gw: Vec<f32> = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert!(gw.iter().any(|g| g.abs() > 1e-4), "no gradient reaches {name}: {gw:?}");
            }
            let gx: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
            let h = 1e-2f32;
            for idx in [0usize, 17, 40, 71] {
                let at = |delta: f32| {
                    let mut v = base.clone();
                    v[idx] += delta;
                    loss(&Tensor::from_vec(v, (2, 4, 3, 3), &d).unwrap()).to_scalar::<f32>().unwrap() as f64
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                assert!(
                    (gx[idx] as f64 - numeric).abs() < 1e-2 * (1.0 + numeric.abs()),
                    "heads {head_dim:?}, x[{idx}]: {} vs {numeric}",
                    gx[idx]
                );
            }
        }
    }

    /// Two heads over 4 channels are two independent softmaxes: computed here by hand from
    /// the block's own q, k, v layers.
    #[test]
    fn two_heads_attend_separately() {
        let d = Device::Cpu;
        let cfg = DdpmConfig { norm_num_groups: 2, attention_head_dim: Some(2), ..tiny() };
        let mut p = Params::init(7, &d);
        let attn = Attention::new(&mut p, "a", 4, &cfg, 1.0).unwrap();
        let x = Rng::new(8, Stream::Eval, 0).normal(&[1, 4, 2, 1], &d).unwrap();
        let got: Vec<f32> = attn.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let rows = attn.group_norm.forward(&x).unwrap().reshape((4, 2)).unwrap().t().unwrap().contiguous().unwrap();
        let lin = |l: &Linear| l.forward(&rows).unwrap().to_vec2::<f32>().unwrap();
        let (q, k, v) = (lin(&attn.to_q), lin(&attn.to_k), lin(&attn.to_v));
        let mut heads_out = vec![vec![0f32; 4]; 2];
        for head in 0..2 {
            let cols = head * 2..head * 2 + 2;
            for i in 0..2 {
                let s: Vec<f32> =
                    (0..2).map(|j| cols.clone().map(|c| q[i][c] * k[j][c]).sum::<f32>() / 2f32.sqrt()).collect();
                // The softmax of two scores.
                let a0 = 1.0 / (1.0 + (s[1] - s[0]).exp());
                let a1 = 1.0 - a0;
                for c in cols.clone() {
                    heads_out[i][c] = a0 * v[0][c] + a1 * v[1][c];
                }
            }
        }
        let merged = Tensor::new(heads_out, &d).unwrap();
        let out = attn.to_out.forward(&merged).unwrap().t().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..8 {
            assert!((got[i] - (xs[i] + out[i])).abs() < 1e-5, "{i}: {} vs {}", got[i], xs[i] + out[i]);
        }
    }

    /// downsample_padding 0 pads the bottom and right only: the first output pixel sees the
    /// input's top-left 3x3, where padding 1 sees a zero border there.
    #[test]
    fn downsample_padding_zero_pads_bottom_and_right() {
        let d = Device::Cpu;
        let x = Tensor::arange(0f32, 16.0, &d).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let ones = |padding| {
            let conv = ConvConfig { stride: 2, padding };
            let w = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &d).unwrap();
            Downsample {
                conv: Conv2d::new(w, Tensor::zeros(1, candle_core::DType::F32, &d).unwrap(), conv),
                pad_bottom_right: padding == 0,
            }
        };
        let y0: Vec<f32> = ones(0).forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // Rows and columns 0-2, then 2-4 with 4 the zero padding: 2+3+6+7+10+11 for the second,
        // 10+11+14+15 for the last.
        assert_eq!(y0, [45.0, 39.0, 66.0, 50.0]);
        let y1: Vec<f32> = ones(1).forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y1[0], 0.0 + 1.0 + 4.0 + 5.0);
    }

    #[test]
    fn upsampling_repeats_pixels_and_sums_gradients() {
        let d = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &d).unwrap()).unwrap();
        let y = upsample2(x.as_tensor()).unwrap();
        assert_eq!(y.dims(), [1, 1, 4, 4]);
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[..8], [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        // Each pixel feeds four outputs (weight 2 each) and the loss directly (weight 1).
        let loss = ((y.sum_all().unwrap() * 2.0).unwrap() + x.as_tensor().sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let gx: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(gx, [9.0; 4]);
    }

    #[test]
    fn time_embedding_is_sines_then_cosines_or_flipped() {
        let e = timestep_embedding(&[0, 10], 32, false, 1.0, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0][..16], [0.0; 16]);
        assert_eq!(e[0][16..], [1.0; 16]);
        // freq_shift 1: f_0 = 1, f_15 = 1e-4.
        assert!((e[1][0] - 10f32.sin()).abs() < 1e-6 && (e[1][16] - 10f32.cos()).abs() < 1e-6);
        assert!((e[1][15] - (10.0f64 * 1e-4).sin() as f32).abs() < 1e-7);
        // freq_shift 0: f_i = 10000^(-i / 16); flipped: cosines first.
        let f = timestep_embedding(&[10], 32, true, 0.0, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let f8 = 10000f64.powf(-0.5);
        assert!(
            (f[0][8] - (10.0 * f8).cos() as f32).abs() < 1e-6 && (f[0][24] - (10.0 * f8).sin() as f32).abs() < 1e-6
        );
        let odd = timestep_embedding(&[3], 5, false, 0.0, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(odd[0][4], 0.0);
    }

    #[test]
    fn dropout_follows_the_seed_and_rate() {
        let d = Device::Cpu;
        let m = |seed| {
            dropout_mask(&[10_000], 0.1, &mut Rng::new(seed, Stream::Step, 0), &d).unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (m(1), m(1));
        assert_eq!(a, b);
        assert_ne!(a, m(2));
        let dropped = a.iter().filter(|&&v| v == 0.0).count();
        assert!((900..1100).contains(&dropped), "{dropped} of 10,000 dropped");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn rejects_configurations_that_cannot_be_built_naming_the_field() {
        let mnist = DdpmConfig::ddpm_unet_mnist;
        for (cfg, field) in [
            (DdpmConfig { block_out_channels: vec![12, 24, 24], ..mnist() }, "norm_num_groups"),
            (DdpmConfig { image: Geometry { channels: 1, height: 30, width: 32 }, ..mnist() }, "multiples of 4"),
            (DdpmConfig { block_out_channels: vec![], ..mnist() }, "block_out_channels"),
            (DdpmConfig { up_block_types: vec![UpBlockType::Plain], ..mnist() }, "up_block_types"),
            (DdpmConfig { attention_head_dim: Some(48), ..mnist() }, "attention_head_dim"),
            (DdpmConfig { downsample_padding: 2, ..mnist() }, "downsample_padding"),
            (DdpmConfig { freq_shift: 16.0, ..mnist() }, "freq_shift"),
            (DdpmConfig { norm_eps: 0.0, ..mnist() }, "norm_eps"),
            (DdpmConfig { mid_block_scale_factor: 0.0, ..mnist() }, "mid_block_scale_factor"),
            (DdpmConfig { dropout: 1.0, ..mnist() }, "dropout"),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{cfg:?}: {e}");
        }
        assert!(DdpmConfig { attention_head_dim: Some(16), ..mnist() }.validate().is_ok());
        DdpmConfig::ddpm_cifar10().validate().unwrap();
    }
}
