//! The configurations under test, one per network family (presets, at small sizes where a
//! preset's own is large), and their inputs, drawn on the CPU from the project's seeded
//! streams.

use candle_core::{Device, Tensor};
use genimg::data::{Batch, Geometry};
use genimg::models::clf_conv::ClfConvConfig;
use genimg::models::ddpm::DdpmConfig;
use genimg::models::pixelcnn::{PixelCnnConfig, TopCondition};
use genimg::models::vae::VaeConfig;
use genimg::models::vae_conv::VaeConvConfig;
use genimg::models::vib::VibConfig;
use genimg::models::vqvae2::VqVae2Config;
use genimg::rng::{Rng, Stream};
use rand::Rng as _;

pub fn vae_mlp() -> VaeConfig {
    VaeConfig::vae_mlp()
}

pub fn vib_mlp() -> VibConfig {
    VibConfig::vib_mlp()
}

/// The preset, 3x64x64.
pub fn vae_conv() -> VaeConvConfig {
    VaeConvConfig::vae_conv()
}

pub fn clf_conv() -> ClfConvConfig {
    ClfConvConfig::clf_conv()
}

pub fn vqvae2_mnist() -> VqVae2Config {
    VqVae2Config::vqvae2_mnist()
}

/// rosinality's `VQVAE()` on 3x32x32 colour images (the preset's 256x256 is 64 times larger).
pub fn vqvae2_colour() -> VqVae2Config {
    VqVae2Config { image: Geometry { channels: 3, height: 32, width: 32 }, ..VqVae2Config::vqvae2() }
}

/// The classes of the class-conditional networks.
pub const CLASSES: usize = 10;

/// The top-level prior of pipeline-vqvae2: class-conditional, over 4x4 maps of 512 codes.
pub fn prior_top() -> PixelCnnConfig {
    PixelCnnConfig { height: 4, width: 4, n_classes: Some(CLASSES), ..PixelCnnConfig::pixelcnn_prior() }
}

/// The bottom-level prior: 8x8 maps of 512 codes conditioned on 4x4 top codes.
pub fn prior_bottom() -> PixelCnnConfig {
    PixelCnnConfig { top: Some(TopCondition { n_embed: 512, height: 4, width: 4 }), ..PixelCnnConfig::pixelcnn_prior() }
}

pub fn ddpm_mnist() -> DdpmConfig {
    DdpmConfig::ddpm_unet_mnist()
}

/// pipeline-ddpm's class-conditional U-Net: ten classes and the null class.
pub fn ddpm_mnist_classes() -> DdpmConfig {
    DdpmConfig { num_class_embeds: Some(CLASSES + 1), ..DdpmConfig::ddpm_unet_mnist() }
}

/// google/ddpm-cifar10-32's network, 3x32x32.
pub fn ddpm_cifar10() -> DdpmConfig {
    DdpmConfig::ddpm_cifar10()
}

/// `n` images of `g` with pixels uniform in [0, 1]; `index` picks the stream.
pub fn images(n: usize, g: Geometry, index: u64) -> Tensor {
    Rng::new(index, Stream::Eval, 0).uniform(&[n, g.channels, g.height, g.width], 0.0, 1.0, &Device::Cpu).unwrap()
}

/// Standard normal values of `shape`.
pub fn normal(shape: &[usize], index: u64) -> Tensor {
    Rng::new(index, Stream::Eval, 1).normal(shape, &Device::Cpu).unwrap()
}

/// Uniform u32 values below `below`, of `shape` (class labels, codes).
pub fn integers(shape: &[usize], below: usize, index: u64) -> Tensor {
    let mut rng = Rng::new(index, Stream::Eval, 2);
    let n = shape.iter().product();
    let v: Vec<u32> = (0..n).map(|_| rng.inner().random_range(0..below as u32)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A batch of images, with labels when `classes` is given.
pub fn image_batch(n: usize, g: Geometry, classes: Option<usize>, index: u64) -> Batch {
    Batch { x: images(n, g, index), y: classes.map(|k| integers(&[n], k, index)), cond: None }
}
