//! rosinality/vq-vae-2-pytorch's `VQVAE()` state dict loads with `--preset vqvae2` and gives
//! that implementation's codes and decodings.
//!
//! The golden values come from tests/golden/vqvae2_rosinality.py (that project's modules, every
//! tensor filled by the counter-based generator [`fill`] also computes here, so no fixture file
//! is needed); run it to regenerate the constants below. The state dict is written as
//! `safetensors.torch.save_file` writes it: the tensors by name, no metadata.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use genimg::models::vqvae2::{VqVae2, VqVae2Config};
use genimg::nn::Params;

use crate::common::tool;

/// splitmix64 of `seed + i * gamma` for i in 1..=n, as the script's `splitmix`.
pub fn splitmix(seed: u64, n: usize) -> impl Iterator<Item = u64> {
    (1..=n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// FNV-1a of a name, as the script's `name_seed`.
pub fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// Uniform in [-1, 1) from the top 53 bits, as the script computes it in f64.
pub fn unit(z: u64) -> f64 {
    (z >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0
}

/// The script's `fill`: a tensor's values from its name and shape.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    let scale = if name.ends_with("bias") {
        0.01
    } else if shape.len() == 4 {
        (6.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
    } else {
        1.0
    };
    splitmix(name_seed(name), n).map(|z| (unit(z) * scale) as f32).collect()
}

/// The script's `images`: two 3x64x64 images of smooth waves, in [0, 1].
fn images() -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * 3 * 64 * 64);
    for n in 0..2 {
        for c in 0..3 {
            let f = 0.05 + 0.03 * n as f64 + 0.02 * c as f64;
            for y in 0..64 {
                for x in 0..64 {
                    let v = 0.5 + 0.5 * (f * x as f64 + 1.7 * f * y as f64 + c as f64 + 2.0 * n as f64).sin();
                    out.push(v as f32);
                }
            }
        }
    }
    out
}

#[rustfmt::skip]
mod golden {
    // From the script: 64 tensors, 1520963 values
    pub const TOP: [u16; 128] = [461, 158, 501, 158, 433, 433, 0, 292, 102, 52, 0, 349, 506, 349, 83, 89, 461, 415, 506, 220, 220, 366, 349, 89, 102, 220, 432, 28, 349, 199, 0, 321, 461, 28, 349, 415, 89, 506, 220, 52, 461, 28, 0, 506, 28, 52, 220, 89, 190, 394, 52, 52, 432, 432, 101, 126, 28, 28, 28, 28, 3, 3, 451, 415, 291, 0, 0, 0, 433, 89, 292, 109, 461, 205, 54, 16, 0, 0, 205, 89, 205, 16, 52, 432, 16, 432, 0, 350, 432, 432, 0, 506, 220, 506, 506, 0, 506, 415, 220, 506, 349, 168, 168, 156, 102, 432, 28, 491, 415, 28, 52, 52, 432, 28, 415, 28, 28, 16, 220, 433, 415, 28, 28, 28, 28, 415, 227, 415];
    pub const BOTTOM: [u16; 512] = [373, 373, 373, 373, 501, 373, 392, 373, 164, 373, 373, 373, 373, 373, 81, 373, 373, 373, 373, 373, 185, 373, 373, 373, 373, 373, 373, 373, 373, 373, 149, 373, 373, 373, 81, 373, 373, 284, 373, 284, 56, 284, 56, 373, 56, 373, 81, 149, 373, 81, 373, 373, 88, 373, 373, 88, 474, 88, 451, 109, 29, 109, 149, 373, 373, 373, 373, 284, 149, 109, 284, 284, 511, 81, 149, 373, 318, 373, 128, 373, 373, 373, 373, 373, 474, 373, 88, 109, 77, 493, 381, 109, 185, 373, 185, 373, 373, 373, 373, 284, 56, 241, 373, 79, 149, 88, 181, 373, 373, 109, 370, 109, 373, 56, 474, 373, 373, 284, 88, 109, 185, 109, 185, 373, 185, 373, 370, 109, 373, 241, 241, 284, 149, 88, 318, 373, 373, 373, 373, 109, 444, 503, 77, 373, 77, 284, 437, 109, 149, 373, 373, 109, 373, 109, 370, 109, 109, 109, 451, 213, 109, 109, 109, 373, 373, 109, 373, 373, 109, 109, 109, 503, 373, 284, 81, 373, 370, 109, 373, 373, 373, 373, 370, 503, 503, 21, 421, 373, 373, 373, 373, 373, 373, 373, 373, 373, 370, 109, 370, 181, 185, 284, 90, 373, 149, 284, 501, 88, 373, 373, 370, 109, 503, 109, 503, 81, 94, 373, 373, 373, 149, 81, 88, 373, 373, 373, 501, 181, 501, 109, 133, 284, 79, 284, 373, 241, 318, 88, 318, 88, 370, 444, 503, 503, 503, 501, 77, 373, 77, 149, 149, 88, 318, 77, 149, 318, 373, 373, 373, 373, 373, 373, 373, 373, 373, 373, 373, 373, 128, 284, 374, 373, 370, 421, 474, 373, 373, 373, 109, 373, 373, 86, 373, 392, 284, 373, 373, 373, 373, 109, 373, 109, 284, 109, 373, 373, 373, 373, 318, 109, 373, 373, 373, 88, 109, 128, 284, 437, 88, 373, 373, 370, 185, 503, 373, 373, 373, 373, 88, 241, 373, 284, 373, 373, 373, 284, 392, 109, 373, 284, 373, 373, 56, 373, 241, 149, 370, 128, 373, 128, 185, 373, 185, 373, 88, 373, 88, 373, 88, 88, 88, 149, 373, 373, 373, 109, 81, 284, 81, 373, 373, 88, 56, 109, 149, 109, 318, 373, 373, 373, 185, 373, 373, 373, 373, 373, 373, 88, 88, 109, 318, 109, 373, 373, 373, 373, 373, 373, 373, 373, 56, 88, 149, 149, 318, 109, 373, 109, 370, 109, 373, 373, 373, 373, 474, 56, 88, 88, 149, 109, 373, 373, 185, 373, 88, 109, 373, 373, 373, 373, 56, 373, 149, 109, 318, 373, 392, 109, 181, 503, 373, 109, 451, 241, 474, 149, 149, 109, 373, 373, 392, 109, 370, 109, 373, 373, 373, 373, 373, 241, 149, 109, 373, 109, 392, 109, 109, 109, 109, 181, 373, 373, 501, 373, 373, 109, 109, 109, 109, 373, 370, 109, 45, 109, 373, 373, 437, 284, 88, 88, 109, 373, 392, 373, 392, 109, 77, 109, 373, 284, 373, 284, 373, 88, 318, 88, 370, 109, 370, 109, 503, 109, 77, 501, 241, 488, 88, 77, 88, 109, 349, 109];
    pub const DECODED_AT: [(usize, f64); 9] = [(0, 5.3995627e-01), (1, 5.5949509e-01), (777, 1.4636156e-01), (4095, 2.9022199e-01), (4096, 7.2123235e-01), (12287, 5.6081879e-01), (12288, 5.8583558e-01), (20000, 1.0000000e+00), (24575, 5.5304003e-01)];
    pub const DECODED_SUM: f64 = 1.241802582e+04;
}
use golden::*;

#[test]
fn a_rosinality_state_dict_gives_its_codes_and_decodings() {
    let dir = tempfile::tempdir().unwrap();
    // The reference's state dict: the names and shapes of the preset's network, filled as the script fills them.
    let mut plan = Params::init(0, &Device::Cpu);
    VqVae2::new(VqVae2Config::vqvae2(), &mut plan).unwrap();
    let names = plan.finish().unwrap().to_tensor_map().unwrap();
    let state: HashMap<String, Tensor> = names
        .names()
        .into_iter()
        .map(|name| {
            let shape = names.get(name).unwrap().dims().to_vec();
            (name.to_string(), Tensor::from_vec(fill(name, &shape), shape, &Device::Cpu).unwrap())
        })
        .collect();
    assert_eq!(state.len(), 64);
    candle_core::safetensors::save(&state, dir.path().join("rosinality.safetensors")).unwrap();
    std::fs::write(dir.path().join("x.npy"), genimg::io::npy::to_bytes(&[2, 3, 64, 64], &images())).unwrap();

    let preset = ["--preset", "vqvae2", "--model", "rosinality.safetensors"];
    tool("vq-encode")
        .current_dir(dir.path())
        .args(preset)
        .args(["x.npy", "-o", "codes.safetensors"])
        .assert()
        .success();
    let codes = candle_core::safetensors::load(dir.path().join("codes.safetensors"), &Device::Cpu).unwrap();
    let level = |name: &str, dims: &[usize]| {
        assert_eq!(codes[name].dims(), dims, "{name}");
        codes[name].flatten_all().unwrap().to_dtype(candle_core::DType::I64).unwrap().to_vec1::<i64>().unwrap()
    };
    let widen = |v: &[u16]| v.iter().map(|&c| i64::from(c)).collect::<Vec<_>>();
    assert_eq!(level("top", &[2, 8, 8]), widen(&TOP));
    assert_eq!(level("bottom", &[2, 16, 16]), widen(&BOTTOM));

    tool("vq-decode")
        .current_dir(dir.path())
        .args(preset)
        .args(["codes.safetensors", "-o", "y.npy"])
        .assert()
        .success();
    let bytes = std::fs::read(dir.path().join("y.npy")).unwrap();
    let y: Vec<f32> = bytes[bytes.len() - 4 * 2 * 3 * 64 * 64..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (i, want) in DECODED_AT {
        assert!((f64::from(y[i]) - want).abs() < 1e-5, "pixel {i}: {} against {want}", y[i]);
    }
    let sum: f64 = y.iter().map(|&v| f64::from(v)).sum();
    assert!((sum - DECODED_SUM).abs() < 1e-5 * DECODED_SUM, "sum {sum} against {DECODED_SUM}");
}
