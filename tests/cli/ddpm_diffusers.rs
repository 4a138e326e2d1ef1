//! diffusers' own `UNet2DModel` state dicts load with `--preset ddpm-cifar10` or
//! `--unet-config config.json` and predict the eps diffusers predicts; so do those whose
//! attention tensors have the names of the published google/ddpm-* files.
//!
//! The golden values come from tests/golden/ddpm_diffusers.py (diffusers 0.42.1 itself, every
//! tensor filled by the counter-based generator [`fill`] also computes here, so no fixture file
//! is needed, and a digest of its state dict's sorted names and shapes); run it to regenerate
//! the constants below. The state dict is written as `safetensors.torch.save_file` writes it:
//! the tensors by name, no metadata.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use genimg::checkpoint::{ModelSource, PlainConfig};
use genimg::models::ddpm::{DdpmConfig, UNet};
use genimg::models::ddpm_compat::from_diffusers_config;
use genimg::models::{ModelConfig, Preset};
use genimg::nn::Params;

use crate::common::tool;
use crate::pytorch_vqvae2::{name_seed, splitmix, unit};

/// The script's `CONFIGS`, as the same JSON text.
const CIFAR10: &str = r#"{"_class_name": "UNet2DModel", "_diffusers_version": "0.1.0.dev0", "act_fn": "silu",
 "attention_head_dim": null, "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
 "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
 "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
 "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}"#;
const HEADS: &str = r#"{"block_out_channels": [16, 32], "layers_per_block": 1, "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
 "up_block_types": ["UpBlock2D", "AttnUpBlock2D"], "norm_num_groups": 4, "attention_head_dim": 8,
 "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "mid_block_scale_factor": 1.4142135623730951,
 "in_channels": 1, "out_channels": 1, "sample_size": [16, 8], "dropout": 0.0}"#;
const PADDED: &str = r#"{"block_out_channels": [8, 16, 16], "layers_per_block": 2,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
 "norm_num_groups": 4, "norm_eps": 1e-06, "attention_head_dim": null, "downsample_padding": 0, "flip_sin_to_cos": false,
 "freq_shift": 1, "in_channels": 3, "out_channels": 3, "sample_size": 16}"#;

/// The script's `STEPS`.
const STEPS: [usize; 2] = [10, 600];

/// The script's `fill`: a tensor's values from its name and shape.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    splitmix(name_seed(name), n)
        .map(|z| {
            let u = unit(z);
            let v = if name.ends_with("bias") {
                u * 0.05
            } else if shape.len() == 1 {
                1.0 + 0.2 * u
            } else {
                u * (3.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
            };
            v as f32
        })
        .collect()
}

#[rustfmt::skip]
mod golden {
    pub const CIFAR10_NAMES: u64 = 6389326368064842953;
    pub const CIFAR10_AT: [(usize, f64); 5] = [(0, -2.50178427e-01), (1, -4.14805382e-01), (77, -3.32404524e-01), (200, -2.90839046e-01), (255, 7.28242621e-02)];
    pub const CIFAR10_ABS_SUM: f64 = 2.4351383278e+03;
    pub const CIFAR10_SUM: f64 = 6.1579841241e+02;
    pub const HEADS_NAMES: u64 = 17561860358422358537;
    pub const HEADS_AT: [(usize, f64); 5] = [(0, 8.05761218e-02), (1, 3.53874028e-01), (77, 1.36975423e-01), (200, -5.45508206e-01), (255, -1.81036487e-01)];
    pub const HEADS_ABS_SUM: f64 = 1.0325721233e+02;
    pub const HEADS_SUM: f64 = -2.6212418025e+01;
    pub const PADDED_NAMES: u64 = 5721884194889410294;
    pub const PADDED_AT: [(usize, f64); 5] = [(0, -2.09291294e-01), (1, -1.23780012e-01), (77, 3.29964161e-01), (200, 4.00207251e-01), (255, 2.42139086e-01)];
    pub const PADDED_ABS_SUM: f64 = 8.0210826506e+02;
    pub const PADDED_SUM: f64 = 3.7606961060e+02;
}
use golden::*;

/// The state dict of `config`'s network, filled as the script fills it, and the digest of its
/// sorted names and shapes (the script's `digest`).
fn state_dict(config: &DdpmConfig) -> (HashMap<String, Tensor>, u64) {
    let mut p = Params::init(0, &Device::Cpu);
    UNet::new(config.clone(), &mut p).unwrap();
    let map = p.finish().unwrap().to_tensor_map().unwrap();
    let mut text = String::new();
    let mut state = HashMap::new();
    for name in map.names() {
        let shape = map.get(name).unwrap().dims().to_vec();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        text += &format!("{name}:{};", dims.join(","));
        state.insert(name.to_string(), Tensor::from_vec(fill(name, &shape), shape, &Device::Cpu).unwrap());
    }
    (state, name_seed(&text))
}

/// eps of the network in `file` (a plain state dict, `plain` saying which) for the script's
/// x_t and steps, checked against its golden values.
fn check_eps(file: &std::path::Path, plain: PlainConfig, at: &[(usize, f64)], abs_sum: f64, sum: f64) {
    let source = ModelSource { path: genimg::io::InputPath::File(file.to_path_buf()), plain: Some(plain) };
    let net: UNet = source.network(&Device::Cpu).unwrap();
    let g = net.config.image;
    let shape = [STEPS.len(), g.channels, g.height, g.width];
    let x = Tensor::from_vec(fill("x_t", &shape), &shape, &Device::Cpu).unwrap();
    let eps: Vec<f32> = net.forward(&x, &STEPS, None, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for &(i, want) in at {
        let got = f64::from(eps[i]);
        assert!((got - want).abs() < 1e-4 * want.abs().max(0.1), "{file:?} eps[{i}]: {got} against diffusers' {want}");
    }
    let got_abs: f64 = eps.iter().map(|&v| f64::from(v).abs()).sum();
    let got_sum: f64 = eps.iter().map(|&v| f64::from(v)).sum();
    assert!((got_abs - abs_sum).abs() < 1e-4 * abs_sum, "{file:?}: sum |eps| {got_abs} against {abs_sum}");
    assert!((got_sum - sum).abs() < 1e-4 * abs_sum, "{file:?}: sum eps {got_sum} against {sum}");
}

#[test]
fn a_diffusers_cifar10_state_dict_predicts_diffusers_eps_with_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let config = from_diffusers_config(CIFAR10).unwrap();
    assert_eq!(config, DdpmConfig::ddpm_cifar10());
    let (state, names) = state_dict(&config);
    assert_eq!((state.len(), names), (328, CIFAR10_NAMES), "the state dict's names and shapes differ from diffusers'");
    let file = dir.path().join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&state, &file).unwrap();
    check_eps(&file, Preset::DdpmCifar10.into(), &CIFAR10_AT, CIFAR10_ABS_SUM, CIFAR10_SUM);
    // And the sampler runs from it, as the tool loads it.
    tool("ddpm-denoise")
        .current_dir(dir.path())
        .args(["--model", "diffusion_pytorch_model.safetensors", "--preset", "ddpm-cifar10"])
        .args(["-n", "1", "--sampler", "ddim", "--steps", "1", "-o", "x0.npy"])
        .assert()
        .success();
    assert!(std::fs::metadata(dir.path().join("x0.npy")).unwrap().len() > 4 * 3 * 32 * 32);
}

/// The small configs, through `--unet-config`; PADDED also with the attention names of the
/// published files (`query`, `key`, `value`, `proj_attn`).
#[test]
fn diffusers_state_dicts_of_other_configs_predict_its_eps_with_unet_config() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("heads", HEADS, HEADS_NAMES, &HEADS_AT, HEADS_ABS_SUM, HEADS_SUM),
        ("padded", PADDED, PADDED_NAMES, &PADDED_AT, PADDED_ABS_SUM, PADDED_SUM),
    ];
    for (key, json, digest, at, abs_sum, sum) in cases {
        let config = from_diffusers_config(json).unwrap();
        let (state, names) = state_dict(&config);
        assert_eq!(names, digest, "{key}: the state dict's names and shapes differ from diffusers'");
        let file = dir.path().join(format!("{key}.safetensors"));
        candle_core::safetensors::save(&state, &file).unwrap();
        let plain =
            || PlainConfig { config: ModelConfig::Ddpm(config.clone()), flag: format!("--unet-config {key}.json") };
        check_eps(&file, plain(), at, abs_sum, sum);
        let old = |name: &str| {
            [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")]
                .iter()
                .fold(name.to_string(), |n, (new, old)| n.replace(&format!(".{new}."), &format!(".{old}.")))
        };
        let renamed: HashMap<String, Tensor> = state.iter().map(|(k, v)| (old(k), v.clone())).collect();
        assert!(renamed.contains_key("mid_block.attentions.0.proj_attn.weight"));
        let file = dir.path().join(format!("{key}-published-names.safetensors"));
        candle_core::safetensors::save(&renamed, &file).unwrap();
        check_eps(&file, plain(), at, abs_sum, sum);
        std::fs::write(dir.path().join(format!("{key}.json")), json).unwrap();
    }
    tool("ddpm-denoise")
        .current_dir(dir.path())
        .args(["--model", "heads.safetensors", "--unet-config", "heads.json"])
        .args(["-n", "2", "--sampler", "ddim", "--steps", "2", "-o", "x0.npy"])
        .assert()
        .success();
    let bytes = std::fs::read(dir.path().join("x0.npy")).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("(2, 1, 16, 8)"), "{:?}", &bytes[..128]);
}

/// A config.json this network cannot build gets one line naming the key and its value.
#[test]
fn an_unsupported_unet_config_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = HEADS.replace(r#""dropout": 0.0"#, r#""dropout": 0.0, "act_fn": "gelu""#);
    std::fs::write(dir.path().join("bad.json"), bad).unwrap();
    let blocks = HEADS.replace("\"AttnDownBlock2D\"", "\"SkipDownBlock2D\"");
    std::fs::write(dir.path().join("blocks.json"), blocks).unwrap();
    for (file, expect) in [
        ("bad.json", r#"bad.json: act_fn = "gelu" is not supported (only "silu")"#),
        ("blocks.json", "blocks.json: down_block_types: block type 'SkipDownBlock2D' is not supported"),
    ] {
        for args in [&["ddpm-train", "--data", "x.npy"][..], &["ddpm-denoise", "--model", "m.safetensors", "-n", "1"]] {
            let out = tool(args[0])
                .current_dir(dir.path())
                .args(&args[1..])
                .args(["--unet-config", file, "-o", "o.npy"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {stderr}");
            assert!(stderr.contains(expect) && stderr.trim().lines().count() == 1, "{args:?} {file}: {stderr}");
        }
    }
}
