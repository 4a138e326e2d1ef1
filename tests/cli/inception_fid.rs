//! pytorch-fid's `InceptionV3([3])` state dicts load into [`InceptionV3`] and give the pool3
//! features pytorch-fid gives, for colour images upsampled and downsampled to 299x299 and for
//! a grey one; a file that is not such a state dict is refused in one line naming the tensor.
//!
//! The golden values come from tests/golden/inception_fid.py (pytorch-fid 0.3.0 itself, every
//! tensor filled by the counter-based generator [`fill`] also computes here, so no 95 MB
//! fixture file is needed, and a digest of its state dict's sorted names and shapes); run it to
//! regenerate the constants below. The state dict is written as `safetensors.torch.save_file`
//! writes it: the tensors by name, no metadata.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use genimg::io::InputPath;
use genimg::models::inception::{InceptionV3, CHUNK, FEATURES};
use genimg::nn::Params;

use crate::pytorch_vqvae2::{name_seed, splitmix, unit};

/// The script's `fill`: a tensor's values from its name and shape.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    let scale = |u: f64| {
        if name.ends_with("conv.weight") {
            u * (6.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
        } else if name.ends_with("bn.weight") {
            1.0 + 0.2 * u
        } else if name.ends_with("bn.running_var") {
            1.0 + 0.5 * u
        } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") {
            0.1 * u
        } else {
            panic!("no fill for {name}")
        }
    };
    splitmix(name_seed(name), n).map(|z| scale(unit(z)) as f32).collect()
}

/// The script's `image`: values in [0, 1).
fn image(name: &str, shape: [usize; 4]) -> Tensor {
    let values: Vec<f32> =
        splitmix(name_seed(name), shape.iter().product()).map(|z| ((unit(z) + 1.0) / 2.0) as f32).collect();
    Tensor::from_vec(values, &shape, &Device::Cpu).unwrap()
}

#[rustfmt::skip]
mod golden {
    // 564 tensors, 21820000 float values
    pub const NAMES: u64 = 17881985742782258889;
    pub const X_RGB_AT: &[(usize, f64)] = &[(5, 5.69861984e+00), (176, 3.65199059e-01), (347, 6.04670000e+00), (518, 1.43328831e-01), (689, 2.08813394e-03), (860, 4.59051752e+00), (1031, 1.51405614e-02), (1202, 1.24096870e+00), (1373, 4.95008707e+00), (1544, 2.08078671e+00), (1715, 1.71532631e-01), (1886, 0.00000000e+00), (2057, 1.31358266e-01), (2228, 1.16936624e-01), (2399, 3.21431935e-01), (2570, 0.00000000e+00), (2741, 4.27445350e-03), (2912, 2.82539837e-02), (3083, 4.20566589e-01), (3254, 1.98325783e-01), (3425, 7.23906159e-02), (3596, 7.14808607e+00), (3767, 1.08159328e+00), (3938, 1.50390416e-01)];
    pub const X_RGB_SQ_SUM: f64 = 2.1356394909e+04;
    pub const X_RGB_SUM: f64 = 5.5941942213e+03;
    pub const X_GREY_AT: &[(usize, f64)] = &[(5, 5.74322414e+00), (176, 6.07395649e-01), (347, 6.59868956e+00), (518, 1.28415361e-01), (689, 4.94983420e-03), (860, 4.83111000e+00), (1031, 3.83327436e-03), (1202, 1.34965050e+00), (1373, 5.53926516e+00), (1544, 2.28273463e+00), (1715, 1.80845231e-01), (1886, 0.00000000e+00)];
    pub const X_GREY_SQ_SUM: f64 = 1.2522902702e+04;
    pub const X_GREY_SUM: f64 = 3.0311633887e+03;
    pub const X_LARGE_AT: &[(usize, f64)] = &[(5, 6.29828358e+00), (176, 3.13143134e-01), (347, 6.16182470e+00), (518, 1.06291533e-01), (689, 1.36337476e-03), (860, 4.94096804e+00), (1031, 9.56472196e-03), (1202, 1.24873900e+00), (1373, 5.34576321e+00), (1544, 2.34620667e+00), (1715, 1.34815916e-01), (1886, 0.00000000e+00)];
    pub const X_LARGE_SQ_SUM: f64 = 1.1750196865e+04;
    pub const X_LARGE_SUM: f64 = 2.9349236762e+03;
}
use golden::*;

/// The network's state dict, filled as the script fills it (the BatchNorm counters stay the
/// i64 zeros PyTorch starts them at), and the digest of its sorted names and shapes (the
/// script's `digest`).
fn state_dict() -> (HashMap<String, Tensor>, u64) {
    let mut p = Params::init(0, &Device::Cpu);
    InceptionV3::new(&mut p).unwrap();
    let map = p.finish().unwrap().to_tensor_map().unwrap();
    let mut text = String::new();
    let mut state = HashMap::new();
    for name in map.names() {
        let t = map.get(name).unwrap();
        let shape = t.dims().to_vec();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        text += &format!("{name}:{};", dims.join(","));
        let t = match t.dtype() {
            DType::F32 => Tensor::from_vec(fill(name, &shape), shape, &Device::Cpu).unwrap(),
            _ => t.clone(),
        };
        state.insert(name.to_string(), t);
    }
    (state, name_seed(&text))
}

/// The features of `x` against the script's values, within 1e-4 of the larger of each value
/// and 1 (the features are averages of ReLUs, of order 1).
fn check(net: &InceptionV3, what: &str, x: &Tensor, at: &[(usize, f64)], sq_sum: f64, sum: f64) {
    let features = net.features(x).unwrap();
    assert_eq!(features.dims(), [x.dims()[0], FEATURES], "{what}");
    check_values(what, &features, at, sq_sum, sum);
}

/// `features` against the script's values, as [`check`] compares them.
fn check_values(what: &str, features: &Tensor, at: &[(usize, f64)], sq_sum: f64, sum: f64) {
    let got: Vec<f32> = features.flatten_all().unwrap().to_vec1().unwrap();
    for &(i, want) in at {
        let v = f64::from(got[i]);
        assert!((v - want).abs() < 1e-4 * want.abs().max(1.0), "{what}[{i}]: {v} against pytorch-fid's {want}");
    }
    let got_sum: f64 = got.iter().map(|&v| f64::from(v)).sum();
    let got_sq: f64 = got.iter().map(|&v| f64::from(v).powi(2)).sum();
    assert!((got_sum - sum).abs() < 1e-4 * sum, "{what}: sum {got_sum} against {sum}");
    assert!((got_sq - sq_sum).abs() < 1e-4 * sq_sum, "{what}: sum of squares {got_sq} against {sq_sum}");
}

#[test]
fn a_pytorch_fid_state_dict_gives_pytorch_fids_pool3_features() {
    let dir = tempfile::tempdir().unwrap();
    let (state, names) = state_dict();
    assert_eq!((state.len(), names), (564, NAMES), "the state dict's names and shapes differ from pytorch-fid's");
    let file = dir.path().join("pt_inception.safetensors");
    candle_core::safetensors::save(&state, &file).unwrap();
    let net = InceptionV3::load(&InputPath::File(file), &Device::Cpu).unwrap();
    check(&net, "x_rgb", &image("x_rgb", [2, 3, 64, 48]), X_RGB_AT, X_RGB_SQ_SUM, X_RGB_SUM);
    check(&net, "x_grey", &image("x_grey", [1, 1, 28, 28]), X_GREY_AT, X_GREY_SQ_SUM, X_GREY_SUM);
    check(&net, "x_large", &image("x_large", [1, 3, 331, 307]), X_LARGE_AT, X_LARGE_SQ_SUM, X_LARGE_SUM);
    // More than CHUNK images go through in parts: the last one, the grey image in colour,
    // still has pytorch-fid's features.
    let grey = image("x_grey", [1, 1, 28, 28]).repeat((CHUNK + 1, 3, 1, 1)).unwrap();
    let last = net.features(&grey).unwrap().narrow(0, CHUNK, 1).unwrap();
    check_values("the last of CHUNK + 1 grey images", &last, X_GREY_AT, X_GREY_SQ_SUM, X_GREY_SUM);

    // img-classify --model of the weights writes the same features, in batches and shards.
    let pixels = image("x_grey", [1, 1, 28, 28]).repeat((3, 1, 1, 1)).unwrap();
    let values = pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    crate::common::write_npy_f32(dir.path(), "grey.npy", &[3, 1, 28, 28], &values);
    let base = ["--model", "pt_inception.safetensors", "grey.npy", "--features", "--batch-size", "2"];
    for (extra, rows) in [(None, 3), (Some("1/2"), 1)] {
        let mut cmd = crate::common::tool("img-classify");
        cmd.current_dir(dir.path()).args(base).args(["-o", "f.npy"]);
        if let Some(shard) = extra {
            cmd.args(["--shard", shard]);
        }
        cmd.assert().success();
        let f = ndarray_npy::read_npy::<_, ndarray::Array2<f32>>(dir.path().join("f.npy")).unwrap();
        assert_eq!(f.dim(), (rows, FEATURES));
        let last = Tensor::from_slice(f.row(rows - 1).to_slice().unwrap(), (1, FEATURES), &Device::Cpu).unwrap();
        check_values("img-classify's features", &last, X_GREY_AT, X_GREY_SQ_SUM, X_GREY_SUM);
    }
    let mut cmd = crate::common::tool("img-classify");
    cmd.current_dir(dir.path()).args(["--model", "pt_inception.safetensors", "grey.npy", "-o", "p.npy"]);
    crate::common::assert_fails_naming(&mut cmd, dir.path(), "gives features only (pool3, 2048); add --features");
}

/// Missing, misshapen and foreign tensors are named in one line; a file of other tensors
/// altogether says what was expected and how to convert pytorch-fid's weights.
#[test]
fn a_file_that_is_not_the_state_dict_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = Device::Cpu;
    let load = |name: &str, tensors: &[(&str, Tensor)]| {
        let path = dir.path().join(name);
        let map: HashMap<String, Tensor> = tensors.iter().map(|(k, t)| (k.to_string(), t.clone())).collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        let e = InceptionV3::load(&InputPath::File(path), &d).err().expect("refused").to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &d).unwrap();
    let e =
        load("part.safetensors", &[("blocks.0.0.conv.weight", zeros(&[32, 3, 5, 5])), ("fc.weight", zeros(&[2, 2]))]);
    for part in [
        "part.safetensors: ",
        "'blocks.0.0.conv.weight' has shape [32, 3, 5, 5], expected [32, 3, 3, 3]",
        "'blocks.3.2.branch_pool.bn.running_var' [192] is missing",
        "unexpected 'fc.weight'",
    ] {
        assert!(e.contains(part), "{e} lacks {part}");
    }
    let e = load("vae.safetensors", &[("fc1.weight", zeros(&[2, 2]))]);
    assert!(e.contains("none of pytorch-fid's Inception tensors") && e.contains("InceptionV3([3])"), "{e}");
    let nan = Tensor::new(&[f32::NAN], &d).unwrap();
    let e = load("nan.safetensors", &[("blocks.0.0.bn.bias", nan)]);
    assert!(e.contains("blocks.0.0.bn.bias holds a non-finite value"), "{e}");
}
