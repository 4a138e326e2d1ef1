//! `clf-conv`: a small LeNet-style convolutional classifier (LeCun et al. 1998,
//! <http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf>, with the ReLU, max-pooling and
//! dropout of the PyTorch MNIST example, <https://github.com/pytorch/examples/blob/main/mnist/main.py>),
//! trained on labelled images to score generated samples: class probabilities for rejection
//! sampling (VQ-VAE-2, section 3.3) and penultimate-layer features for FID/KID-style metrics
//! (docs/models.md).
//!
//! conv3x3(C->32)+ReLU, conv3x3(32->32)+ReLU, maxpool 2; conv3x3(32->64)+ReLU,
//! conv3x3(64->64)+ReLU, maxpool 2; global average pool -> fc1 64->128 + ReLU (the features,
//! D = 128) -> dropout 0.5 in training -> fc2 128->K. The convolutions pad by 1, and the
//! global pool makes the network take any image of at least 4x4 pixels.
//!
//! Parameter names (PyTorch-like): `conv1` .. `conv4`, `fc1`, `fc2`.

use candle_core::{Module, Tensor, D};
use serde::{Deserialize, Serialize};

use super::Demand;
use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::memory::bytes_of;
use crate::nn::functional::{dropout_mask, relu};
use crate::nn::params::Params;
use crate::nn::{Conv2d, ConvConfig, Linear};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClfConvConfig {
    /// The training images' geometry (the network takes any size of at least 4x4 with
    /// these channels; tools check images against it as for every model).
    pub image: Geometry,
    pub classes: usize,
    /// Channels of the first two convolutions; the last two have twice as many.
    pub channels: usize,
    /// Width of the penultimate layer, the features.
    pub features: usize,
    /// Dropout before the last layer, in training.
    pub dropout: f64,
}

/// The smallest side two 2x2 max-pools leave a pixel of.
const MIN_SIDE: usize = 4;

const SAME: ConvConfig = ConvConfig { stride: 1, padding: 1 };

impl ClfConvConfig {
    /// The `clf-conv` preset (its classes and geometry come from the training data).
    pub fn clf_conv() -> Self {
        ClfConvConfig { image: Geometry::MNIST, classes: 10, channels: 32, features: 128, dropout: 0.5 }
    }

    pub fn geometry(&self) -> Geometry {
        self.image
    }

    /// An error naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.classes < 2 || self.channels == 0 || self.features == 0 {
            return Err(Error::config("clf-conv needs at least 2 classes, channels and features"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(format!("clf-conv: dropout {} must be in [0, 1)", self.dropout)));
        }
        let g = self.image;
        if g.channels == 0 || g.height < MIN_SIDE || g.width < MIN_SIDE {
            return Err(Error::config(format!(
                "clf-conv takes images of at least {MIN_SIDE}x{MIN_SIDE} pixels; these are {}x{}x{}",
                g.channels, g.height, g.width
            )));
        }
        Ok(())
    }

    /// One image's widest activations: the second block's maps at full size.
    pub fn demands(&self) -> Vec<Demand> {
        let widest = 2 * self.channels.max(self.image.channels);
        let bytes = bytes_of(&[widest, self.image.height, self.image.width], 4);
        vec![Demand { field: "height", value: self.image.height, what: "one image's activations", bytes }]
    }
}

pub struct ClfConv {
    pub config: ClfConvConfig,
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl ClfConv {
    pub fn new(config: ClfConvConfig, p: &mut Params) -> Result<Self> {
        config.validate()?;
        let (c, w, f) = (config.image.channels, config.channels, config.features);
        Ok(ClfConv {
            conv1: p.conv2d("conv1", c, w, 3, SAME)?,
            conv2: p.conv2d("conv2", w, w, 3, SAME)?,
            conv3: p.conv2d("conv3", w, 2 * w, 3, SAME)?,
            conv4: p.conv2d("conv4", 2 * w, 2 * w, 3, SAME)?,
            fc1: p.linear("fc1", 2 * w, f)?,
            fc2: p.linear("fc2", f, config.classes)?,
            config,
        })
    }

    /// The penultimate layer for images `x` [N, C, H, W] in [0,1] (H, W >= 4): [N, features].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.config.image.channels || h < MIN_SIDE || w < MIN_SIDE {
            return Err(Error::config(format!(
                "clf-conv takes {}-channel images of at least {MIN_SIDE}x{MIN_SIDE}; got {c}x{h}x{w}",
                self.config.image.channels
            )));
        }
        let h = relu(&self.conv2.forward(&relu(&self.conv1.forward(x)?)?)?)?.max_pool2d(2)?;
        let h = relu(&self.conv4.forward(&relu(&self.conv3.forward(&h)?)?)?)?.max_pool2d(2)?;
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        relu(&self.fc1.forward(&pooled)?)
    }

    /// Class logits [N, classes] from the features; `rng` draws the training dropout mask
    /// (`None`: evaluation, no dropout).
    pub fn logits_of(&self, features: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = match rng {
            Some(rng) if self.config.dropout > 0.0 => {
                (features * dropout_mask(features.dims(), self.config.dropout, rng, features.device())?)?
            }
            _ => features.clone(),
        };
        Ok(self.fc2.forward(&h)?)
    }

    /// Class logits [N, classes] of images `x`; see [`ClfConv::logits_of`] for `rng`.
    pub fn logits(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        self.logits_of(&self.features(x)?, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::vib::cross_entropy;
    use crate::rng::Stream;
    use candle_core::Device;

    fn tiny(image: Geometry) -> ClfConvConfig {
        ClfConvConfig { image, classes: 3, channels: 4, features: 6, dropout: 0.5 }
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_features_have_their_width() {
        let g = Geometry { channels: 3, height: 8, width: 8 };
        let mut p = Params::init(1, &Device::Cpu);
        let net = ClfConv::new(tiny(g), &mut p).unwrap();
        let set = p.finish().unwrap();
        assert_eq!(set.trainable().count(), 12);
        let x = Rng::new(1, Stream::Eval, 0).uniform(&[5, 3, 8, 8], 0.0, 1.0, &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 1, 0], &Device::Cpu).unwrap();
        let logits = net.logits(&x, Some(&mut Rng::new(1, Stream::Step, 0))).unwrap();
        assert_eq!(logits.dims(), &[5, 3]);
        let grads = cross_entropy(&logits, &y).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in set.trainable() {
            let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = grad.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{name}'s gradient is zero");
        }
        assert_eq!(net.features(&x).unwrap().dims(), &[5, 6]);
    }

    #[test]
    fn takes_any_size_of_at_least_four_pixels() {
        let mut p = Params::init(1, &Device::Cpu);
        let net = ClfConv::new(tiny(Geometry::MNIST), &mut p).unwrap();
        for (h, w) in [(4, 4), (5, 9), (28, 28), (32, 17)] {
            let x = Tensor::zeros((2, 1, h, w), candle_core::DType::F32, &Device::Cpu).unwrap();
            assert_eq!(net.features(&x).unwrap().dims(), &[2, 6], "{h}x{w}");
        }
        let small = Tensor::zeros((2, 1, 3, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(net.features(&small).unwrap_err().to_string().contains("at least 4x4"));
        let e = tiny(Geometry { channels: 1, height: 2, width: 2 }).validate().unwrap_err().to_string();
        assert!(e.contains("at least 4x4"), "{e}");
    }

    #[test]
    fn evaluation_has_no_dropout_and_training_drops_features() {
        let mut p = Params::init(1, &Device::Cpu);
        let net = ClfConv::new(tiny(Geometry { channels: 1, height: 4, width: 4 }), &mut p).unwrap();
        let f = Tensor::ones((1, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let eval = |net: &ClfConv| net.logits_of(&f, None).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(eval(&net), eval(&net));
        let trained = net.logits_of(&f, Some(&mut Rng::new(3, Stream::Step, 0))).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(trained, eval(&net));
    }
}
