//! One training step of every family's task (tasks::build, as `vae-train`, `prior-fit` and
//! `ddpm-train` run it), compared by [`check_step`].

use candle_core::Device;
use genimg::data::{Batch, Geometry};
use genimg::models::vqvae2::{VqVae2, VqVae2Config};
use genimg::models::ModelConfig;
use genimg::nn::{ParamSet, Params};

use crate::cases::{self, image_batch, integers, CLASSES};
use crate::forward::{assert_clear_nearest, vq_images};
use crate::training::{check_step, SEED};

#[test]
fn vae_mlp() {
    check_step("vae-mlp", ModelConfig::Vae(cases::vae_mlp()), &image_batch(4, Geometry::MNIST, None, 11), None);
}

#[test]
fn vib_mlp() {
    let batch = image_batch(4, Geometry::MNIST, Some(CLASSES), 12);
    check_step("vib-mlp", ModelConfig::Vib(cases::vib_mlp()), &batch, None);
}

/// BatchNorm in training mode: the batch's statistics, and the running ones updated.
#[test]
fn vae_conv() {
    let config = cases::vae_conv();
    let batch = image_batch(2, config.geometry(), None, 13);
    check_step("vae-conv", ModelConfig::VaeConv(config), &batch, None);
}

/// BatchNorm in training mode and dropout (its mask drawn on the host from the step's stream).
#[test]
fn clf_conv() {
    let config = cases::clf_conv();
    let batch = image_batch(4, config.image, Some(CLASSES), 14);
    check_step("clf-conv", ModelConfig::ClfConv(config), &batch, None);
}

#[test]
fn vqvae2_mnist() {
    vqvae2("vqvae2-mnist", cases::vqvae2_mnist());
}

#[test]
fn vqvae2_colour() {
    vqvae2("vqvae2 3x32x32", cases::vqvae2_colour());
}

/// The images of the forward test, whose codes are clear of near-ties (checked here again);
/// the codebooks start as if they had been updated once, see [`settled_codebooks`].
fn vqvae2(what: &str, config: VqVae2Config) {
    let x = vq_images(&config);
    let mut p = Params::init(SEED, &Device::Cpu);
    let net = VqVae2::new(config.clone(), &mut p).unwrap();
    let set = p.finish().unwrap();
    let out = net.forward(&x.affine(2.0, -1.0).unwrap()).unwrap();
    assert_clear_nearest(&format!("{what} bottom"), out.bottom_inputs, &set, "quantize_b");
    if let Some(z) = out.top_inputs {
        assert_clear_nearest(&format!("{what} top"), z, &set, "quantize_t");
    }
    check_step(what, ModelConfig::VqVae2(config), &Batch { x, y: None, cond: None }, Some(settled_codebooks));
}

/// A fresh codebook's first update replaces it with randomly chosen encoder outputs and
/// then assigns every output to its nearest code among them: with duplicated picks those
/// are exact ties, which the two devices may break differently. Each codebook here counts as
/// used once (cluster_size 1, embed_avg = embed), so the update is the EMA step itself, on
/// the codes the forward pass chose.
fn settled_codebooks(params: &ParamSet) {
    for level in ["quantize_t", "quantize_b"] {
        let (Some(size), Some(embed), Some(avg)) = (
            params.get(&format!("{level}.cluster_size")),
            params.get(&format!("{level}.embed")),
            params.get(&format!("{level}.embed_avg")),
        ) else {
            continue;
        };
        size.set(&size.ones_like().unwrap()).unwrap();
        avg.set(embed.as_tensor()).unwrap();
    }
}

#[test]
fn pixelcnn_top_class_conditional() {
    let batch = Batch { x: integers(&[4, 4, 4], 512, 15), y: Some(integers(&[4], CLASSES, 15)), cond: None };
    check_step("prior (top)", ModelConfig::PixelCnn(cases::prior_top()), &batch, None);
}

#[test]
fn pixelcnn_bottom_conditioned_on_top_codes() {
    let batch = Batch { x: integers(&[2, 8, 8], 512, 16), y: None, cond: Some(integers(&[2, 4, 4], 512, 17)) };
    check_step("prior (bottom)", ModelConfig::PixelCnn(cases::prior_bottom()), &batch, None);
}

/// Random steps, noise and dropout masks from the step's stream, and the weight average after it.
#[test]
fn ddpm_unet_mnist() {
    let config = cases::ddpm_mnist();
    let batch = image_batch(2, config.image, None, 18);
    check_step("ddpm-unet-mnist", ModelConfig::Ddpm(config), &batch, None);
}

/// Also the labels dropped to the null class (p_uncond) on the host.
#[test]
fn ddpm_unet_mnist_class_conditional() {
    let config = cases::ddpm_mnist_classes();
    let batch = image_batch(2, config.image, Some(CLASSES), 19);
    check_step("ddpm-unet-mnist, class-conditional", ModelConfig::Ddpm(config), &batch, None);
}

#[test]
fn ddpm_cifar10() {
    let config = cases::ddpm_cifar10();
    let batch = image_batch(1, config.image, None, 20);
    check_step("ddpm-cifar10", ModelConfig::Ddpm(config), &batch, None);
}
