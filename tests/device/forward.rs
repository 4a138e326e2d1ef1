//! Forward passes of every network on the CPU and on the device under test: the same seeded
//! parameters (drawn on the host, then copied) and the same inputs.

use candle_core::{Device, Tensor};
use genimg::data::Geometry;
use genimg::models::clf_conv::ClfConv;
use genimg::models::ddpm::UNet;
use genimg::models::inception::InceptionV3;
use genimg::models::pixelcnn::PixelCnn;
use genimg::models::vae::Vae;
use genimg::models::vae_conv::VaeConv;
use genimg::models::vib::Vib;
use genimg::models::vqvae2::{VqVae2, VqVae2Config};
use genimg::nn::{Mode, ParamSet, Params};

use crate::cases::{self, images, integers, normal, CLASSES};
use crate::harness::{assert_close, assert_same_codes, device_under_test, host, to};
use crate::training::SEED;

/// An f32 forward pass: max |cpu - device| <= FORWARD * max(1, max |cpu|).
pub const FORWARD: f64 = 1e-4;

/// `build` on the CPU and on the device under test, from the same seed; `None` when skipped.
fn both<N>(build: impl Fn(&mut Params) -> genimg::Result<N>) -> Option<[(N, ParamSet, Device); 2]> {
    let device = device_under_test()?;
    let side = |d: Device| {
        let mut p = Params::init(SEED, &d);
        let net = build(&mut p).expect("network builds");
        (net, p.finish().expect("parameters"), d)
    };
    Some([side(Device::Cpu), side(device)])
}

#[test]
fn vae_mlp() {
    let Some([(r, _, _), (d, _, dev)]) = both(|p| Vae::new(cases::vae_mlp(), p)) else { return };
    let x = images(4, Geometry::MNIST, 1).flatten_from(1).unwrap();
    let ((mu_r, lv_r), (mu_d, lv_d)) = (r.encode(&x).unwrap(), d.encode(&to(&x, &dev)).unwrap());
    assert_close("vae-mlp mu", &mu_r, &mu_d, FORWARD);
    assert_close("vae-mlp logvar", &lv_r, &lv_d, FORWARD);
    let z = normal(&[4, 20], 1);
    assert_close(
        "vae-mlp decoder logits",
        &r.decode_logits(&z).unwrap(),
        &d.decode_logits(&to(&z, &dev)).unwrap(),
        FORWARD,
    );
}

#[test]
fn vib_mlp() {
    let Some([(r, _, _), (d, _, dev)]) = both(|p| Vib::new(cases::vib_mlp(), p)) else { return };
    let x = images(4, Geometry::MNIST, 2).flatten_from(1).unwrap();
    let (q_r, q_d) = (r.encode(&x).unwrap(), d.encode(&to(&x, &dev)).unwrap());
    assert_close("vib-mlp mu", &q_r.mu, &q_d.mu, FORWARD);
    assert_close("vib-mlp sigma", &q_r.sigma, &q_d.sigma, FORWARD);
    let (l_r, l_d) = (r.classify(&q_r.mu).unwrap(), d.classify(&q_d.mu).unwrap());
    assert_close("vib-mlp logits", &l_r, &l_d, FORWARD);
}

#[test]
fn vae_conv() {
    let config = cases::vae_conv();
    let Some([(r, _, _), (d, _, dev)]) = both(|p| VaeConv::new(config.clone(), p)) else { return };
    let x = images(2, config.geometry(), 3).affine(2.0, -1.0).unwrap();
    let eps = normal(&[2, config.latent], 3);
    let out_r = r.forward(&x, &eps, Mode::Eval).unwrap();
    let out_d = d.forward(&to(&x, &dev), &to(&eps, &dev), Mode::Eval).unwrap();
    assert_close("vae-conv reconstruction", &out_r.0, &out_d.0, FORWARD);
    assert_close("vae-conv mu", &out_r.1, &out_d.1, FORWARD);
    assert_close("vae-conv logvar", &out_r.2, &out_d.2, FORWARD);
}

#[test]
fn clf_conv() {
    let config = cases::clf_conv();
    let Some([(r, _, _), (d, _, dev)]) = both(|p| ClfConv::new(config.clone(), p)) else { return };
    let x = images(4, config.image, 4);
    assert_close("clf-conv features", &r.features(&x).unwrap(), &d.features(&to(&x, &dev)).unwrap(), FORWARD);
    assert_close("clf-conv logits", &r.logits(&x, None).unwrap(), &d.logits(&to(&x, &dev), None).unwrap(), FORWARD);
}

#[test]
fn vqvae2_mnist() {
    vqvae2("vqvae2-mnist", cases::vqvae2_mnist());
}

#[test]
fn vqvae2_colour() {
    vqvae2("vqvae2 3x32x32", cases::vqvae2_colour());
}

/// The images a VQ-VAE-2 test encodes (the training step's batch too).
pub fn vq_images(config: &VqVae2Config) -> Tensor {
    images(2, config.image, 5)
}

fn vqvae2(what: &str, config: VqVae2Config) {
    let Some([(r, set, _), (d, _, dev)]) = both(|p| VqVae2::new(config.clone(), p)) else { return };
    let x = vq_images(&config).affine(2.0, -1.0).unwrap();
    let (out_r, out_d) = (r.forward(&x).unwrap(), d.forward(&to(&x, &dev)).unwrap());
    assert_clear_nearest(&format!("{what} bottom"), out_r.bottom_inputs.clone(), &set, "quantize_b");
    assert_close(&format!("{what} bottom encoder output"), &out_r.bottom_inputs, &out_d.bottom_inputs, FORWARD);
    assert_same_codes(&format!("{what} bottom codes"), &out_r.bottom.codes, &out_d.bottom.codes);
    if let (Some(t_r), Some(t_d), Some(z_r), Some(z_d)) = (&out_r.top, &out_d.top, &out_r.top_inputs, &out_d.top_inputs)
    {
        assert_clear_nearest(&format!("{what} top"), z_r.clone(), &set, "quantize_t");
        assert_close(&format!("{what} top encoder output"), z_r, z_d, FORWARD);
        assert_same_codes(&format!("{what} top codes"), &t_r.codes, &t_d.codes);
    }
    assert_close(&format!("{what} reconstruction"), &out_r.reconstruction, &out_d.reconstruction, FORWARD);
    let top = out_r.top.as_ref().map(|t| t.codes.clone());
    let decoded_r = r.decode_codes(top.as_ref(), &out_r.bottom.codes).unwrap();
    let top_d = top.as_ref().map(|t| to(t, &dev));
    let decoded_d = d.decode_codes(top_d.as_ref(), &to(&out_r.bottom.codes, &dev)).unwrap();
    assert_close(&format!("{what} decoded codes"), &decoded_r, &decoded_d, FORWARD);
}

/// The least gap between the nearest and the second nearest code, relative to the nearest
/// distance, that makes the codes a fixed input must take certain on any device: rounding
/// moves the distances by about 1e-6 of their size, the forward tolerance by 1e-4.
const NEAREST_GAP: f64 = 1e-3;

/// Asserts that every vector of `inputs` [..., dim] (the reference's encoder outputs) has
/// its nearest code in the codebook `{name}.embed` [dim, n] of `set` by a clear margin, so
/// that the device must choose the same codes: a precondition on the seed, checked on the
/// CPU, that keeps a near-tie from failing the comparison of codes.
pub fn assert_clear_nearest(what: &str, inputs: Tensor, set: &ParamSet, name: &str) {
    let embed = set.get(&format!("{name}.embed")).expect("codebook").as_tensor().clone();
    let (dim, n) = embed.dims2().unwrap();
    let e = host(&embed.t().unwrap());
    let x = host(&inputs);
    let mut least = f64::INFINITY;
    for row in x.chunks_exact(dim) {
        let mut d: Vec<f64> =
            e.chunks_exact(dim).map(|c| c.iter().zip(row).map(|(a, b)| (a - b).powi(2)).sum()).collect();
        d.sort_by(f64::total_cmp);
        least = least.min((d[1] - d[0]) / d[0].max(1.0));
    }
    assert!(
        n > 1 && least > NEAREST_GAP,
        "{what}: a near-tie between codes ({least:.2e}) at seed {SEED}; pick another"
    );
}

#[test]
fn pixelcnn_top_class_conditional() {
    let config = cases::prior_top();
    let Some([(r, _, _), (d, _, dev)]) = both(|p| PixelCnn::new(config.clone(), p)) else { return };
    let codes = integers(&[4, 4, 4], 512, 6);
    let labels = integers(&[4], CLASSES, 6);
    let (c_d, l_d) = (to(&codes, &dev), to(&labels, &dev));
    let logits_r = r.forward(&codes, Some(&labels), None).unwrap();
    assert_close("prior (top) logits", &logits_r, &d.forward(&c_d, Some(&l_d), None).unwrap(), FORWARD);
    let loss_r = r.loss(&codes, Some(&labels), None).unwrap();
    assert_close("prior (top) loss", &loss_r, &d.loss(&c_d, Some(&l_d), None).unwrap(), FORWARD);
}

#[test]
fn pixelcnn_bottom_conditioned_on_top_codes() {
    let config = cases::prior_bottom();
    let Some([(r, _, _), (d, _, dev)]) = both(|p| PixelCnn::new(config.clone(), p)) else { return };
    let codes = integers(&[2, 8, 8], 512, 7);
    let top = integers(&[2, 4, 4], 512, 8);
    let (c_d, t_d) = (to(&codes, &dev), to(&top, &dev));
    let logits_r = r.forward(&codes, None, Some(&top)).unwrap();
    assert_close("prior (bottom) logits", &logits_r, &d.forward(&c_d, None, Some(&t_d)).unwrap(), FORWARD);
    let loss_r = r.loss(&codes, None, Some(&top)).unwrap();
    assert_close("prior (bottom) loss", &loss_r, &d.loss(&c_d, None, Some(&t_d)).unwrap(), FORWARD);
}

/// The U-Net's noise prediction for images at two steps, with `classes` labels when given.
fn unet(what: &str, config: genimg::models::ddpm::DdpmConfig, n: usize, classes: bool) {
    let Some([(r, _, _), (d, _, dev)]) = both(|p| UNet::new(config.clone(), p)) else { return };
    let x = normal(&[n, config.image.channels, config.image.height, config.image.width], 9);
    let t: Vec<usize> = [10, 900].into_iter().cycle().take(n).collect();
    let y = classes.then(|| integers(&[n], CLASSES, 9));
    let y_d = y.as_ref().map(|y| to(y, &dev));
    let eps_r = r.forward(&x, &t, y.as_ref(), None).unwrap();
    let eps_d = d.forward(&to(&x, &dev), &t, y_d.as_ref(), None).unwrap();
    assert_close(what, &eps_r, &eps_d, FORWARD);
}

#[test]
fn ddpm_unet_mnist() {
    unet("ddpm-unet-mnist", cases::ddpm_mnist(), 2, false);
}

#[test]
fn ddpm_unet_mnist_class_conditional() {
    unet("ddpm-unet-mnist, class-conditional", cases::ddpm_mnist_classes(), 2, true);
}

#[test]
fn ddpm_cifar10() {
    unet("ddpm-cifar10", cases::ddpm_cifar10(), 1, false);
}

#[test]
fn inception_random_weights() {
    let Some([(r, _, _), (d, _, dev)]) = both(InceptionV3::new) else { return };
    let x = images(1, Geometry { channels: 3, height: 32, width: 32 }, 10);
    assert_close("inception pool3 features", &r.features(&x).unwrap(), &d.features(&to(&x, &dev)).unwrap(), FORWARD);
}
