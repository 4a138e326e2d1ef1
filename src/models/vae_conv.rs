//! A convolutional VAE for colour images (Kingma & Welling 2013,
//! <https://arxiv.org/abs/1312.6114>) in the layout of AntixK/PyTorch-VAE's `VanillaVAE`
//! (<https://github.com/AntixK/PyTorch-VAE>, `models/vanilla_vae.py`; `vae-conv`,
//! docs/models.md), whose attribute names are its parameter names, so that
//! implementation's state dict loads as it is and ours loads into it strictly:
//!
//! - `encoder.{i}`: for each of the hidden dims h (32, 64, 128, 256, 512): `.0` conv3x3
//!   stride 2 padding 1, `.1` BatchNorm2d, LeakyReLU(0.01); each halves the image;
//! - `fc_mu`, `fc_var`: Linear of the flattened last map (PyTorch's C, H, W order) -> latent;
//! - `decoder_input`: Linear latent -> the last map, viewed as [N, 512, H/32, W/32];
//! - `decoder.{i}`: for the hidden dims reversed, `.0` convT3x3 stride 2 padding 1 output
//!   padding 1 (each doubles the image), `.1` BatchNorm2d, LeakyReLU;
//! - `final_layer`: `.0` convT3x3 s2 p1 op1 32 -> 32, `.1` BatchNorm2d, LeakyReLU, `.3`
//!   conv3x3 padding 1 32 -> channels, tanh: the mean of p(x|z) on the [-1, 1] scale.
//!
//! The reference fixes 64x64 images (its `view(-1, 512, 2, 2)`) and 3 output channels; here
//! height and width are any multiples of 2^(hidden layers) (32 for the preset) and the output
//! has the input's channels, which for colour images at 64x64 is the reference exactly.
//!
//! Its loss (`loss_function`): mean squared error over every pixel on the [-1, 1] scale plus
//! `kld_weight` times the batch mean of KL(q(z|x) || N(0, I)). Reported likelihoods use the
//! discretized Gaussian of [`crate::nn::discretized`] with the fixed scale `sigma`.

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::latent::{reparameterize, GaussianVae};
use super::{Demand, Family};
use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::memory::bytes_of;
use crate::nn::conv::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
use crate::nn::discretized::ln_prob_per_image;
use crate::nn::functional::kl_std_normal;
use crate::nn::params::Params;
use crate::nn::{BatchNorm2d, Linear, Mode};
use crate::train::Metrics;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConvConfig {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    /// Channels of the encoder's maps, each at half the size of the one before; the decoder
    /// runs them backwards.
    pub hidden_dims: Vec<usize>,
    pub latent: usize,
    /// Weight of the KL term in the training loss (the reference's `M_N`).
    pub kld_weight: f64,
    /// The fixed scale, on the [-1, 1] scale, of the discretized Gaussian likelihood that
    /// evaluation reports (training does not use it).
    pub sigma: f64,
}

impl VaeConvConfig {
    /// The `vae-conv` preset: VanillaVAE on 3x64x64 with latent 128 and the reference's
    /// CelebA kld_weight; sigma 0.1 is 12.75 of the 255 grey levels.
    pub fn vae_conv() -> Self {
        VaeConvConfig {
            in_channels: 3,
            height: 64,
            width: 64,
            hidden_dims: vec![32, 64, 128, 256, 512],
            latent: 128,
            kld_weight: 0.00025,
            sigma: 0.1,
        }
    }

    pub fn geometry(&self) -> Geometry {
        Geometry { channels: self.in_channels, height: self.height, width: self.width }
    }

    /// The configuration for images of geometry `g` (from the training data); an error
    /// unless each side is a multiple of 2^(hidden layers), which the encoder halves that often.
    pub fn with_geometry(self, g: Geometry) -> Result<Self> {
        let c = VaeConvConfig { in_channels: g.channels, height: g.height, width: g.width, ..self };
        c.check_geometry()?;
        Ok(c)
    }

    /// How many times the encoder halves the image: 2^(hidden layers), or `None` when that
    /// does not fit a usize.
    fn stride(&self) -> Option<usize> {
        u32::try_from(self.hidden_dims.len()).ok().and_then(|l| 1usize.checked_shl(l))
    }

    fn check_geometry(&self) -> Result<()> {
        let (h, w) = (self.height, self.width);
        match self.stride() {
            Some(s) if h > 0 && w > 0 && h % s == 0 && w % s == 0 => Ok(()),
            s => Err(Error::config(format!(
                "vae-conv takes images whose height and width are multiples of {} (2 to the power of its {} hidden layers), not {h}x{w}",
                s.map_or_else(|| "2^64".to_string(), |s| s.to_string()),
                self.hidden_dims.len()
            ))),
        }
    }

    /// An error naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_dims.is_empty() || self.hidden_dims.contains(&0) {
            return Err(Error::config("vae-conv: hidden_dims must be one or more positive channel counts"));
        }
        if self.in_channels == 0 || self.latent == 0 {
            return Err(Error::config("vae-conv: in_channels and --latent must be positive"));
        }
        if !(self.kld_weight >= 0.0 && self.kld_weight.is_finite()) {
            return Err(Error::config(format!("--kld-weight {} must be a finite number >= 0", self.kld_weight)));
        }
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(Error::config(format!("--sigma {} must be a positive number", self.sigma)));
        }
        self.check_geometry()
    }

    /// One image's activations at full resolution (the final layer's maps).
    pub fn demands(&self) -> Vec<Demand> {
        let widest = self.hidden_dims.first().copied().unwrap_or(0).max(self.in_channels);
        let bytes = bytes_of(&[widest, self.height, self.width], 4);
        vec![Demand { field: "height", value: self.height, what: "one image's activations", bytes }]
    }

    /// The encoder's last map: channels, height, width.
    fn bottleneck(&self) -> (usize, usize, usize) {
        let s = self.stride().unwrap_or(usize::MAX).max(1);
        (*self.hidden_dims.last().unwrap_or(&0), self.height / s, self.width / s)
    }
}

const DOWN: ConvConfig = ConvConfig { stride: 2, padding: 1 };
const SAME: ConvConfig = ConvConfig { stride: 1, padding: 1 };
const UP: ConvTransposeConfig = ConvTransposeConfig { stride: 2, padding: 1, output_padding: 1 };

/// The reference's LeakyReLU slope (PyTorch's default).
const SLOPE: f64 = 0.01;

/// A convolution (plain or transposed), BatchNorm2d and LeakyReLU: one `nn.Sequential` of
/// the reference, `{name}.0` and `{name}.1`.
struct Stage<C> {
    conv: C,
    norm: BatchNorm2d,
}

impl<C: Module> Stage<C> {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(self.norm.forward_leaky_relu(&self.conv.forward(x)?, mode, SLOPE)?)
    }
}

pub struct VaeConv {
    pub config: VaeConvConfig,
    encoder: Vec<Stage<Conv2d>>,
    fc_mu: Linear,
    fc_var: Linear,
    decoder_input: Linear,
    decoder: Vec<Stage<ConvTranspose2d>>,
    final_stage: Stage<ConvTranspose2d>,
    final_conv: Conv2d,
}

impl VaeConv {
    pub fn new(config: VaeConvConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let dims = &config.hidden_dims;
        let mut encoder = Vec::with_capacity(dims.len());
        let mut cin = config.in_channels;
        for (i, &h) in dims.iter().enumerate() {
            let name = format!("encoder.{i}");
            encoder.push(Stage {
                conv: p.conv2d(&format!("{name}.0"), cin, h, 3, DOWN)?,
                norm: p.batch_norm2d(&format!("{name}.1"), h)?,
            });
            cin = h;
        }
        let (c, h, w) = config.bottleneck();
        let flat = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::config(format!("vae-conv: a {c}x{h}x{w} bottleneck is too large")))?;
        let (fc_mu, fc_var) = (p.linear("fc_mu", flat, config.latent)?, p.linear("fc_var", flat, config.latent)?);
        let decoder_input = p.linear("decoder_input", config.latent, flat)?;
        let reversed: Vec<usize> = dims.iter().rev().copied().collect();
        let mut decoder = Vec::with_capacity(dims.len() - 1);
        for (i, pair) in reversed.windows(2).enumerate() {
            let name = format!("decoder.{i}");
            decoder.push(Stage {
                conv: p.conv_transpose2d(&format!("{name}.0"), pair[0], pair[1], 3, UP)?,
                norm: p.batch_norm2d(&format!("{name}.1"), pair[1])?,
            });
        }
        let first = dims[0];
        let final_stage = Stage {
            conv: p.conv_transpose2d("final_layer.0", first, first, 3, UP)?,
            norm: p.batch_norm2d("final_layer.1", first)?,
        };
        let final_conv = p.conv2d("final_layer.3", first, config.in_channels, 3, SAME)?;
        Ok(VaeConv { config, encoder, fc_mu, fc_var, decoder_input, decoder, final_stage, final_conv })
    }

    /// q(z|x): mean and log-variance [N, latent] of images `x` [N, C, H, W] on the [-1, 1]
    /// scale.
    pub fn encode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for stage in &self.encoder {
            h = stage.forward(&h, mode)?;
        }
        let h = h.flatten_from(1)?;
        Ok((self.fc_mu.forward(&h)?, self.fc_var.forward(&h)?))
    }

    /// The mean of p(x|z) on the [-1, 1] scale: [N, C, H, W].
    pub fn decode(&self, z: &Tensor, mode: Mode) -> Result<Tensor> {
        let (c, h, w) = self.config.bottleneck();
        let mut x = self.decoder_input.forward(z)?.reshape(((), c, h, w))?;
        for stage in &self.decoder {
            x = stage.forward(&x, mode)?;
        }
        let x = self.final_stage.forward(&x, mode)?;
        Ok(self.final_conv.forward(&x)?.tanh()?)
    }

    /// The reference's `forward`: encode `x` (on the [-1, 1] scale), draw z with the noise
    /// `eps` [N, latent], decode it. Returns the reconstruction, mu and logvar.
    pub fn forward(&self, x: &Tensor, eps: &Tensor, mode: Mode) -> Result<(Tensor, Tensor, Tensor)> {
        let (mu, logvar) = VaeConv::encode(self, x, mode)?;
        let z = reparameterize(&mu, &logvar, eps)?;
        Ok((VaeConv::decode(self, &z, mode)?, mu, logvar))
    }

    /// The reference's `loss_function` for inputs `x`, their reconstructions `recons` and
    /// posteriors (`mu`, `logvar`).
    pub fn loss(&self, x: &Tensor, recons: &Tensor, mu: &Tensor, logvar: &Tensor) -> Result<Loss> {
        let mse = (recons - x)?.sqr()?.mean_all()?;
        let kld = kl_std_normal(mu, logvar)?.mean_all()?;
        let loss = (&mse + (&kld * self.config.kld_weight)?)?;
        Ok(Loss { loss, mse, kld })
    }
}

/// The terms of the training loss of one batch, scalars.
pub struct Loss {
    /// mse + kld_weight * kld.
    pub loss: Tensor,
    /// The mean squared error over every pixel, on the [-1, 1] scale.
    pub mse: Tensor,
    /// The batch mean of KL(q(z|x) || N(0, I)) (nats per image).
    pub kld: Tensor,
}

/// In evaluation mode, with the discretized Gaussian likelihood of fixed scale `sigma`.
impl GaussianVae for VaeConv {
    fn family(&self) -> Family {
        Family::VaeConv
    }

    fn latent(&self) -> usize {
        self.config.latent
    }

    fn geometry(&self) -> Geometry {
        self.config.geometry()
    }

    fn input(&self, images: &Tensor) -> Result<Tensor> {
        Ok(images.affine(2.0, -1.0)?)
    }

    fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        VaeConv::encode(self, x, Mode::Eval)
    }

    fn nll(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let mean = VaeConv::decode(self, z, Mode::Eval)?;
        let n = x.dim(0)?;
        let values = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let d = self.config.geometry().pixels();
        let ln_p = ln_prob_per_image(&values(x)?, &values(&mean)?, d, self.config.sigma);
        Ok(Tensor::from_vec(ln_p.into_iter().map(|v| -v as f32).collect::<Vec<_>>(), n, x.device())?)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(VaeConv::decode(self, z, Mode::Eval)?.affine(0.5, 0.5)?)
    }

    /// 64x64 images, so that a pass's maps stay in the hundreds of MB.
    fn decode_rows(&self) -> usize {
        256
    }

    /// The likelihood and, for the ELBO and log p(x), bits per dimension:
    /// -value / (C H W ln 2).
    fn report_fields(&self, metrics: &Metrics) -> Vec<(String, Value)> {
        let per_dim = self.config.geometry().pixels() as f64 * std::f64::consts::LN_2;
        let mut out = vec![
            ("likelihood".to_string(), json!("discretized-gaussian")),
            ("fixed_sigma".to_string(), json!(self.config.sigma)),
        ];
        for (name, v) in metrics.iter().filter(|(name, _)| name == "elbo" || name == "log_px") {
            out.push((format!("{name}_bits_per_dim"), json!(-v / per_dim)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use candle_core::{DType, Device};

    use crate::io::safetensors::TensorMap;
    use crate::io::InputPath;

    /// The reduced configuration of the golden test: two hidden layers on 3x8x8.
    pub(crate) fn tiny() -> VaeConvConfig {
        VaeConvConfig { height: 8, width: 8, hidden_dims: vec![8, 16], latent: 4, ..VaeConvConfig::vae_conv() }
    }

    /// The preset's parameters are VanillaVAE's state dict: names and shapes.
    #[test]
    fn the_preset_has_vanilla_vaes_names_and_shapes() {
        let mut p = Params::init(0, &Device::Cpu);
        VaeConv::new(VaeConvConfig::vae_conv(), &mut p).unwrap();
        let map = p.finish().unwrap().to_tensor_map().unwrap();
        assert_eq!(map.tensors.len(), 5 * 7 + 2 * 2 + 2 + 4 * 7 + 7 + 2);
        for (name, shape) in [
            ("encoder.0.0.weight", vec![32, 3, 3, 3]),
            ("encoder.4.0.weight", vec![512, 256, 3, 3]),
            ("encoder.4.1.running_var", vec![512]),
            ("encoder.2.1.num_batches_tracked", vec![]),
            ("fc_mu.weight", vec![128, 2048]),
            ("fc_var.bias", vec![128]),
            ("decoder_input.weight", vec![2048, 128]),
            ("decoder.0.0.weight", vec![512, 256, 3, 3]),
            ("decoder.3.0.weight", vec![64, 32, 3, 3]),
            ("decoder.3.1.running_mean", vec![32]),
            ("final_layer.0.weight", vec![32, 32, 3, 3]),
            ("final_layer.1.weight", vec![32]),
            ("final_layer.3.weight", vec![3, 32, 3, 3]),
            ("final_layer.3.bias", vec![3]),
        ] {
            assert_eq!(map.get(name).map(|t| t.dims().to_vec()), Some(shape), "{name}");
        }
        assert_eq!(map.get("decoder.1.1.num_batches_tracked").unwrap().dtype(), candle_core::DType::I64);
    }

    /// The tensors of a fixture file in tests/fixtures.
    fn fixture(name: &str) -> BTreeMap<String, Tensor> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        TensorMap::read(&InputPath::File(path), &Device::Cpu).unwrap().tensors
    }

    /// The largest difference between two tensors of the same shape.
    fn worst(got: &Tensor, want: &Tensor) -> f32 {
        assert_eq!(got.dims(), want.dims());
        let (g, w) = (got.flatten_all().unwrap(), want.flatten_all().unwrap());
        let (g, w) = (g.to_vec1::<f32>().unwrap(), w.to_vec1::<f32>().unwrap());
        g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    /// Against PyTorch: VanillaVAE's module structure in the reduced configuration,
    /// randomly initialised (BatchNorm's weights and running statistics too) and saved with
    /// `safetensors.torch.save_file(model.state_dict())`, loads strictly; one training-mode
    /// forward and backward of the reference's loss on a fixed input and noise gives its mu,
    /// logvar, reconstruction, loss terms, gradients and updated running statistics, and an
    /// evaluation-mode pass after it its outputs, all within 1e-5. The script that wrote the
    /// fixtures is tests/golden/vae_conv.py (torch 2.15.0, CPU).
    #[test]
    fn matches_pytorch_vanilla_vae() {
        let want = fixture("vae_conv_tiny_expected.safetensors");
        let mut p = Params::load(fixture("vae_conv_tiny.safetensors"), "vae_conv_tiny.safetensors", &Device::Cpu);
        let vae = VaeConv::new(VaeConvConfig { kld_weight: 0.00025, ..tiny() }, &mut p).unwrap();
        let set = p.finish().unwrap();
        let close = |name: &str, got: &Tensor, want: &Tensor, tol: f32| {
            let w = worst(got, want);
            assert!(w < tol, "{name}: off by {w}");
        };
        let (recons, mu, logvar) = vae.forward(&want["x"], &want["eps"], Mode::Train).unwrap();
        for (name, got) in [("mu", &mu), ("logvar", &logvar), ("recons", &recons)] {
            close(name, got, &want[name], 1e-5);
        }
        let l = vae.loss(&want["x"], &recons, &mu, &logvar).unwrap();
        for (name, got) in [("loss", &l.loss), ("mse", &l.mse), ("kld", &l.kld)] {
            close(name, &got.reshape(1).unwrap(), &want[name], 1e-5);
        }
        let grads = l.loss.backward().unwrap();
        let mut trained = 0;
        for (name, var) in set.trainable() {
            close(
                &format!("grad of {name}"),
                grads.get(var.as_tensor()).unwrap(),
                &want[&format!("grad.{name}")],
                1e-5,
            );
            trained += 1;
        }
        assert_eq!(trained, want.keys().filter(|k| k.starts_with("grad.")).count());
        let state = set.to_tensor_map().unwrap();
        let buffers: Vec<&String> = want.keys().filter(|k| k.starts_with("after.")).collect();
        assert_eq!(buffers.len(), 4 * 3);
        for key in buffers {
            let name = &key["after.".len()..];
            let got = state.get(name).unwrap();
            if name.ends_with("num_batches_tracked") {
                assert_eq!(got.dtype(), DType::I64, "{name}");
                assert_eq!(got.to_scalar::<i64>().unwrap(), want[key].to_scalar::<i64>().unwrap(), "{name}");
            } else {
                close(name, got, &want[key], 1e-5);
            }
        }
        let (mu, logvar) = vae.encode(&want["x"], Mode::Eval).unwrap();
        let recons = vae.decode(&mu, Mode::Eval).unwrap();
        for (name, got) in [("eval.mu", &mu), ("eval.logvar", &logvar), ("eval.recons", &recons)] {
            close(name, got, &want[name], 1e-5);
        }
    }

    #[test]
    fn encodes_and_decodes_any_multiple_of_the_stride() {
        for (h, w) in [(8, 8), (16, 8), (8, 24)] {
            let config = VaeConvConfig { height: h, width: w, ..tiny() };
            let vae = VaeConv::new(config, &mut Params::init(1, &Device::Cpu)).unwrap();
            let x = Tensor::zeros((2, 3, h, w), candle_core::DType::F32, &Device::Cpu).unwrap();
            let (mu, logvar) = vae.encode(&x, Mode::Eval).unwrap();
            assert_eq!((mu.dims(), logvar.dims()), (&[2, 4][..], &[2, 4][..]));
            assert_eq!(vae.decode(&mu, Mode::Eval).unwrap().dims(), [2, 3, h, w]);
        }
    }

    #[test]
    fn geometry_comes_from_the_data_and_must_fit_the_encoder() {
        let g = Geometry { channels: 1, height: 32, width: 96 };
        let c = VaeConvConfig::vae_conv().with_geometry(g).unwrap();
        assert_eq!((c.geometry(), c.bottleneck()), (g, (512, 1, 3)));
        let e = VaeConvConfig::vae_conv().with_geometry(Geometry { channels: 3, height: 28, width: 28 });
        let e = e.unwrap_err().to_string();
        assert!(e.contains("multiples of 32") && e.contains("not 28x28"), "{e}");
        assert!(tiny().with_geometry(Geometry { channels: 3, height: 12, width: 12 }).is_ok());
        let deep = VaeConvConfig { hidden_dims: vec![1; 70], ..tiny() };
        assert!(deep.validate().unwrap_err().to_string().contains("2^64"));
        for bad in [
            VaeConvConfig { hidden_dims: vec![], ..tiny() },
            VaeConvConfig { latent: 0, ..tiny() },
            VaeConvConfig { kld_weight: f64::NAN, ..tiny() },
            VaeConvConfig { sigma: 0.0, ..tiny() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
