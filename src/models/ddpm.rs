//! The noise-prediction U-Net of DDPM (Ho et al. 2020, <https://arxiv.org/abs/2006.11239>),
//! scaled down for 32x32 digits (`ddpm-unet-mnist`, docs/models.md); t is 0-based as in the
//! original code, <https://github.com/hojonathanho/diffusion>. Module names are the
//! project's own, in PyTorch style (`.weight` / `.bias` under each):
//!
//! - `time_embed.0`, `time_embed.2`: Linear base->4 base, SiLU, Linear 4 base->4 base on the
//!   sinusoidal embedding of t (dim base: half sines, half cosines).
//! - `conv_in`: conv3x3 in->base.
//! - `down.{level}.res.{i}`, `down.{level}.attn.{i}` (at the attention resolutions),
//!   `down.{level}.downsample` (conv3x3 stride 2, not after the last level).
//! - `mid.res.0`, `mid.attn.0`, `mid.res.1`.
//! - `up.{level}.res.{i}` (i < num_res_blocks + 1, each on concat(h, skip)),
//!   `up.{level}.attn.{i}`, `up.{level}.upsample` (nearest x2, conv3x3; not at level 0);
//!   levels run from the last (8x8) up to 0.
//! - `norm_out`, `conv_out`: GroupNorm, SiLU, conv3x3 base->in.
//!
//! A ResBlock has `norm1`, `conv1`, `temb` (Linear 4 base->cout on SiLU(temb)), `norm2`,
//! `conv2` and, when cin != cout, `skip` (conv1x1); an Attention block `norm`, `qkv`
//! (conv1x1 c->3c, q then k then v) and `proj` (conv1x1 c->c).

use candle_core::{Module, Tensor, D};
use serde::{Deserialize, Serialize};

use super::Demand;
use crate::data::Geometry;
use crate::diffusion::ScheduleKind;
use crate::error::{Error, Result};
use crate::memory::bytes_of;
use crate::nn::conv::{Conv2d, ConvConfig};
use crate::nn::params::Params;
use crate::nn::{GroupNorm, Linear};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdpmConfig {
    /// The images: any height and width that halve once per level after the first.
    pub image: Geometry,
    /// Channels at the first level; also the size of the sinusoidal time embedding, whose
    /// MLP is 4 x this wide.
    pub base_channels: usize,
    /// Channels of each level as multiples of `base_channels`; each level after the first
    /// halves the resolution.
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Resolutions (the map's height in pixels) whose ResBlocks are followed by self-attention.
    pub attn_resolutions: Vec<usize>,
    pub groups: usize,
    pub dropout: f64,
    /// T, the number of diffusion steps.
    pub timesteps: usize,
    pub schedule: ScheduleKind,
    /// Decay of the exponential moving average of the weights (the sampled ones).
    pub ema_decay: f64,
}

impl DdpmConfig {
    /// The `ddpm-unet-mnist` preset.
    pub fn ddpm_unet_mnist() -> Self {
        DdpmConfig {
            image: Geometry { channels: 1, height: 32, width: 32 },
            base_channels: 32,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![8],
            groups: 8,
            dropout: 0.1,
            timesteps: 1000,
            schedule: ScheduleKind::Linear,
            ema_decay: 0.9999,
        }
    }
}

impl DdpmConfig {
    /// One image's activations at the widest level.
    pub fn demands(&self) -> Vec<Demand> {
        let Geometry { height, width, .. } = self.image;
        let widest = self.channel_mult.iter().copied().max().unwrap_or(1);
        let bytes = bytes_of(&[height, width, self.base_channels, widest], 4);
        let (field, value) = self.image.longer_side();
        vec![Demand { field, value, what: "one image's activations", bytes }]
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }

    /// What the image size must be a multiple of: the maps halve once per level after the first.
    pub fn stride(&self) -> usize {
        1 << self.channel_mult.len().saturating_sub(1).min(usize::BITS as usize - 1)
    }

    /// An error naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let levels = self.channel_mult.len();
        let bad = |what: String| Err(Error::config(format!("ddpm-unet-mnist: {what}")));
        if levels == 0 || self.channel_mult.contains(&0) {
            return bad("channel multipliers must be at least 1, and there must be one per level".into());
        }
        if self.base_channels < 2 || self.base_channels % 2 != 0 {
            return bad(format!("--base-channels {} must be even and at least 2", self.base_channels));
        }
        if self.groups == 0 || self.channel_mult.iter().any(|m| (m * self.base_channels) % self.groups != 0) {
            return bad(format!(
                "every level's channels ({} x {:?}) must split into {} groups",
                self.base_channels, self.channel_mult, self.groups
            ));
        }
        self.image.check_stride("ddpm-unet", self.stride())?;
        if self.timesteps > MAX_TIMESTEPS {
            return bad(format!("timesteps {} is more than {MAX_TIMESTEPS}", self.timesteps));
        }
        if self.num_res_blocks == 0 || self.timesteps == 0 || self.image.channels == 0 {
            return bad("ResBlocks per level, timesteps and channels must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..=1.0).contains(&self.ema_decay) {
            return bad(format!(
                "dropout {} must be in [0, 1) and EMA decay {} in [0, 1]",
                self.dropout, self.ema_decay
            ));
        }
        Ok(())
    }

    fn temb_dim(&self) -> usize {
        4 * self.base_channels
    }
}

/// The most diffusion steps a configuration may have. DDPM uses 1,000; the schedule and the
/// samplers keep several values per step, and a chain of a million steps is already far too
/// long to sample, so a larger T is a mistake rather than a network.
pub const MAX_TIMESTEPS: usize = 1_000_000;

const P1: ConvConfig = ConvConfig { stride: 1, padding: 1 };
const S2P1: ConvConfig = ConvConfig { stride: 2, padding: 1 };

/// GroupNorm, SiLU, conv3x3 cin->cout, plus a per-channel projection of SiLU(temb);
/// GroupNorm, SiLU, dropout, conv3x3 cout->cout; plus the input (through a conv1x1 when
/// cin != cout).
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f64,
}

impl ResBlock {
    fn new(p: &mut Params, name: &str, cin: usize, cout: usize, cfg: &DdpmConfig) -> Result<Self> {
        let g = cfg.groups;
        Ok(ResBlock {
            norm1: p.group_norm(&format!("{name}.norm1"), g, cin)?,
            conv1: p.conv2d(&format!("{name}.conv1"), cin, cout, 3, P1)?,
            temb: p.linear(&format!("{name}.temb"), cfg.temb_dim(), cout)?,
            norm2: p.group_norm(&format!("{name}.norm2"), g, cout)?,
            conv2: p.conv2d(&format!("{name}.conv2"), cout, cout, 3, P1)?,
            skip: (cin != cout)
                .then(|| p.conv2d(&format!("{name}.skip"), cin, cout, 1, ConvConfig::default()))
                .transpose()?,
            dropout: cfg.dropout,
        })
    }

    /// `x` [B, cin, H, W], `temb` SiLU of the time embedding [B, 4 base]; `rng` draws the
    /// dropout masks in training (None: evaluation, no dropout).
    fn forward(&self, x: &Tensor, temb: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let (b, c, _, _) = h.dims4()?;
        // (b, c) -> (b, c, 1, 1): one value per channel, broadcast over the pixels.
        let h = h.broadcast_add(&self.temb.forward(temb)?.reshape((b, c, 1, 1))?)?;
        let mut h = self.norm2.forward_silu(&h)?;
        if let (Some(rng), true) = (rng, self.dropout > 0.0) {
            let mask = dropout_mask(h.dims(), self.dropout, rng, h.device())?;
            h = (h * mask)?;
        }
        let h = self.conv2.forward(&h)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// Inverted dropout: each element kept with probability 1 - p and scaled by 1 / (1 - p),
/// drawn from our seeded generator (candle's cannot be seeded).
fn dropout_mask(shape: &[usize], p: f64, rng: &mut Rng, device: &candle_core::Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let threshold = (p * 4_294_967_296.0) as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> =
        (0..n).map(|_| if (rand::Rng::random::<u32>(rng.inner()) as u64) < threshold { 0.0 } else { keep }).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Self-attention over the pixels: GroupNorm, conv1x1 c->3c (q, k, v),
/// softmax(q^T k / sqrt(c)) over the keys, conv1x1 c->c, plus the input.
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
}

impl Attention {
    fn new(p: &mut Params, name: &str, c: usize, cfg: &DdpmConfig) -> Result<Self> {
        let one = ConvConfig::default();
        Ok(Attention {
            norm: p.group_norm(&format!("{name}.norm"), cfg.groups, c)?,
            qkv: p.conv2d(&format!("{name}.qkv"), c, 3 * c, 1, one)?,
            proj: p.conv2d(&format!("{name}.proj"), c, c, 1, one)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        // (b, 3c, h, w) -> (b, 3, c, h*w)
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?.reshape((b, 3, c, h * w))?;
        let part = |i: usize| qkv.narrow(1, i, 1).and_then(|t| t.squeeze(1)?.contiguous());
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        // scores[b, i, j] = q_i . k_j / sqrt(c): (b, hw, c) x (b, c, hw) -> (b, hw, hw)
        let scores = (q.transpose(1, 2)?.contiguous()?.matmul(&k)? * (1.0 / (c as f64).sqrt()))?;
        // candle's fused softmax_last_dim has no gradient (docs/candle.md).
        let attn = candle_nn::ops::softmax(&scores, D::Minus1)?;
        // out[b, :, i] = sum_j attn[b, i, j] v[b, :, j]: (b, c, hw) x (b, hw, hw) -> (b, c, hw)
        let out = v.matmul(&attn.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj.forward(&out.reshape((b, c, h, w))?)?;
        Ok((x + out)?)
    }
}

/// Nearest-neighbour x2 upsampling by reshape and broadcast: candle's `upsample_nearest2d`
/// backward overwrites other gradients reaching its input (docs/candle.md).
fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    // (b, c, h, w) -> (b, c, h, 1, w, 1) -> (b, c, h, 2, w, 2) -> (b, c, 2h, 2w)
    Ok(x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))?)
}

/// One resolution of the encoder or the decoder.
struct Level {
    res: Vec<ResBlock>,
    /// Empty unless the level's resolution is an attention resolution.
    attn: Vec<Attention>,
    /// `downsample` on the way down, `upsample` on the way up.
    resample: Option<Conv2d>,
}

impl Level {
    fn attention_after(&self, i: usize) -> Option<&Attention> {
        self.attn.get(i)
    }
}

pub struct UNet {
    pub config: DdpmConfig,
    time_embed: [Linear; 2],
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResBlock, Attention, ResBlock),
    /// In the order they run: the last level first.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(config: DdpmConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let cfg = &config;
        let (base, levels) = (cfg.base_channels, cfg.channel_mult.len());
        let time_embed = [
            p.linear("time_embed.0", base, cfg.temb_dim())?,
            p.linear("time_embed.2", cfg.temb_dim(), cfg.temb_dim())?,
        ];
        let conv_in = p.conv2d("conv_in", cfg.image.channels, base, 3, P1)?;
        // Channels of every output kept for a skip connection, in order.
        let mut skips = vec![base];
        let (mut ch, mut res) = (base, cfg.image.height);
        let mut down = Vec::new();
        for (level, mult) in cfg.channel_mult.iter().enumerate() {
            let out = base * mult;
            let with_attn = cfg.attn_resolutions.contains(&res);
            let (mut blocks, mut attn) = (Vec::new(), Vec::new());
            for i in 0..cfg.num_res_blocks {
                blocks.push(ResBlock::new(p, &format!("down.{level}.res.{i}"), ch, out, cfg)?);
                ch = out;
                if with_attn {
                    attn.push(Attention::new(p, &format!("down.{level}.attn.{i}"), ch, cfg)?);
                }
                skips.push(ch);
            }
            let resample = if level + 1 < levels {
                skips.push(ch);
                res /= 2;
                Some(p.conv2d(&format!("down.{level}.downsample"), ch, ch, 3, S2P1)?)
            } else {
                None
            };
            down.push(Level { res: blocks, attn, resample });
        }
        let mid = (
            ResBlock::new(p, "mid.res.0", ch, ch, cfg)?,
            Attention::new(p, "mid.attn.0", ch, cfg)?,
            ResBlock::new(p, "mid.res.1", ch, ch, cfg)?,
        );
        let mut up = Vec::new();
        for (level, mult) in cfg.channel_mult.iter().enumerate().rev() {
            let out = base * mult;
            let with_attn = cfg.attn_resolutions.contains(&res);
            let (mut blocks, mut attn) = (Vec::new(), Vec::new());
            for i in 0..=cfg.num_res_blocks {
                let skip = skips.pop().expect("one skip per block");
                blocks.push(ResBlock::new(p, &format!("up.{level}.res.{i}"), ch + skip, out, cfg)?);
                ch = out;
                if with_attn {
                    attn.push(Attention::new(p, &format!("up.{level}.attn.{i}"), ch, cfg)?);
                }
            }
            let resample = if level > 0 {
                res *= 2;
                Some(p.conv2d(&format!("up.{level}.upsample"), ch, ch, 3, P1)?)
            } else {
                None
            };
            up.push(Level { res: blocks, attn, resample });
        }
        let norm_out = p.group_norm("norm_out", cfg.groups, ch)?;
        let conv_out = p.conv2d("conv_out", ch, cfg.image.channels, 3, P1)?;
        Ok(UNet { config, time_embed, conv_in, down, mid, up, norm_out, conv_out })
    }

    /// Predicts the noise in `x` [B, C, H, W] at steps `t` (one per image, 0-based). `rng`
    /// draws dropout masks in training; `None` evaluates without dropout.
    pub fn forward(&self, x: &Tensor, t: &[usize], mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let g = self.config.image;
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
        let emb = timestep_embedding(t, self.config.base_channels, x.device())?;
        let temb = self.time_embed[1].forward(&self.time_embed[0].forward(&emb)?.silu()?)?.silu()?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (i, block) in level.res.iter().enumerate() {
                h = block.forward(&h, &temb, rng.as_deref_mut())?;
                if let Some(attn) = level.attention_after(i) {
                    h = attn.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.0.forward(&h, &temb, rng.as_deref_mut())?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &temb, rng.as_deref_mut())?;
        for level in &self.up {
            for (i, block) in level.res.iter().enumerate() {
                let skip = skips.pop().expect("one skip per block");
                h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb, rng.as_deref_mut())?;
                if let Some(attn) = level.attention_after(i) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(up) = &level.resample {
                h = up.forward(&upsample2(&h)?)?;
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward_silu(&h)?)?)
    }
}

/// The sinusoidal embedding of steps `t` [B] -> [B, dim]: dim/2 sines then dim/2 cosines
/// of t f_i, f_i = exp(-ln(10000) i / (dim/2 - 1)).
pub fn timestep_embedding(t: &[usize], dim: usize, device: &candle_core::Device) -> Result<Tensor> {
    let half = dim / 2;
    let step = if half > 1 { (10000f64).ln() / (half - 1) as f64 } else { 0.0 };
    let mut v = Vec::with_capacity(t.len() * dim);
    for &t in t {
        let angles: Vec<f64> = (0..half).map(|i| t as f64 * (-step * i as f64).exp()).collect();
        v.extend(angles.iter().map(|a| a.sin() as f32));
        v.extend(angles.iter().map(|a| a.cos() as f32));
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
    /// at 8 px, a skip conv where channels change.
    fn tiny() -> DdpmConfig {
        DdpmConfig {
            image: Geometry { channels: 1, height: 16, width: 16 },
            base_channels: 8,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            groups: 4,
            ..DdpmConfig::ddpm_unet_mnist()
        }
    }

    fn build(cfg: DdpmConfig, seed: u64) -> (UNet, ParamSet) {
        let mut p = Params::init(seed, &Device::Cpu);
        let net = UNet::new(cfg, &mut p).unwrap();
        (net, p.finish().unwrap())
    }

    #[test]
    fn preset_has_the_documented_names_and_output_shape() {
        let (net, params) = build(DdpmConfig::ddpm_unet_mnist(), 0);
        let names: Vec<&str> = params.trainable().map(|(k, _)| k.as_str()).collect();
        for name in [
            "time_embed.0.weight",
            "time_embed.2.bias",
            "conv_in.weight",
            "down.0.res.0.norm1.weight",
            "down.0.res.1.conv2.weight",
            "down.0.downsample.weight",
            "down.1.res.0.skip.weight",
            "down.2.attn.1.qkv.weight",
            "mid.res.0.temb.weight",
            "mid.attn.0.proj.bias",
            "mid.res.1.conv1.weight",
            "up.2.res.2.skip.weight",
            "up.2.attn.2.norm.weight",
            "up.2.upsample.weight",
            "up.0.res.0.skip.weight",
            "norm_out.bias",
            "conv_out.weight",
        ] {
            assert!(names.contains(&name), "no {name}");
        }
        assert!(!names.iter().any(|n| n.starts_with("down.2.downsample") || n.starts_with("up.0.upsample")));
        assert!(!names.iter().any(|n| n.starts_with("down.0.attn") || n.starts_with("up.1.attn")));
        let dims = |n: &str| params.get(n).unwrap().dims().to_vec();
        assert_eq!(dims("up.0.res.0.conv1.weight"), [32, 96, 3, 3], "64 channels from below, 32 from the skip");
        assert_eq!(dims("down.2.attn.0.qkv.weight"), [192, 64, 1, 1]);
        assert_eq!(dims("time_embed.0.weight"), [128, 32]);
        assert_eq!(dims("up.1.res.0.temb.weight"), [64, 128]);
        let x = Rng::new(0, Stream::Eval, 0).normal(&[2, 1, 32, 32], &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, &[0, 999], None).unwrap().dims(), [2, 1, 32, 32]);
    }

    /// Every parameter, attention and normalisation included, gets a non-zero gradient.
    #[test]
    fn every_parameter_gets_a_gradient() {
        let (net, params) = build(tiny(), 1);
        let d = Device::Cpu;
        let x = Rng::new(1, Stream::Eval, 0).normal(&[3, 1, 16, 16], &d).unwrap();
        let target = Rng::new(2, Stream::Eval, 0).normal(&[3, 1, 16, 16], &d).unwrap();
        let mut rng = Rng::new(3, Stream::Step, 0);
        let y = net.forward(&x, &[5, 500, 999], Some(&mut rng)).unwrap();
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

    /// The attention's softmax passes gradients to q and k: compared with finite differences
    /// of the block on a tiny input.
    #[test]
    fn attention_gradient_matches_finite_differences() {
        let d = Device::Cpu;
        let cfg = DdpmConfig { groups: 2, ..tiny() };
        let mut p = Params::init(4, &d);
        let attn = Attention::new(&mut p, "a", 4, &cfg).unwrap();
        let params = p.finish().unwrap();
        let x0 = (Rng::new(5, Stream::Eval, 0).normal(&[2, 4, 3, 3], &d).unwrap() * 2.0).unwrap();
        let probe = Rng::new(6, Stream::Eval, 0).normal(&[2, 4, 3, 3], &d).unwrap();
        let loss = |x: &Tensor| (attn.forward(x).unwrap() * &probe).unwrap().sum_all().unwrap();
        let x = Var::from_tensor(&x0).unwrap();
        let grads = loss(x.as_tensor()).backward().unwrap();
        // The q/k part of the qkv weight only matters through the softmax.
        let w = params.get("a.qkv.weight").unwrap();
        let gw: Vec<f32> = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(gw[..8 * 4].iter().any(|g| g.abs() > 1e-4), "no gradient reaches q and k: {gw:?}");
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
                "x[{idx}]: {} vs {numeric}",
                gx[idx]
            );
        }
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
    fn time_embedding_is_sines_then_cosines() {
        let e = timestep_embedding(&[0, 10], 32, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0][..16], [0.0; 16]);
        assert_eq!(e[0][16..], [1.0; 16]);
        // f_0 = 1, f_15 = 1e-4.
        assert!((e[1][0] - 10f32.sin()).abs() < 1e-6 && (e[1][16] - 10f32.cos()).abs() < 1e-6);
        assert!((e[1][15] - (10.0f64 * 1e-4).sin() as f32).abs() < 1e-7);
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
    fn rejects_configurations_that_cannot_be_built() {
        for cfg in [
            DdpmConfig { base_channels: 12, ..DdpmConfig::ddpm_unet_mnist() },
            DdpmConfig { image: Geometry { channels: 1, height: 30, width: 32 }, ..DdpmConfig::ddpm_unet_mnist() },
            DdpmConfig { channel_mult: vec![], ..DdpmConfig::ddpm_unet_mnist() },
            DdpmConfig { dropout: 1.0, ..DdpmConfig::ddpm_unet_mnist() },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
