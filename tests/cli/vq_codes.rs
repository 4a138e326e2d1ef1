//! vq-encode and vq-decode: the two forms of code files, pipes, codes from other programs,
//! plain PyTorch state dicts, and clear errors for codes that do not fit the model.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use genimg::io::safetensors::TensorMap;
use genimg::io::OutputPath;

use crate::common::{assert_fails_naming, bin_path, read_f32, read_npy, tool, train_vq, write_npy_u8};

/// A tiny two-level model `vq.safetensors` and the codes of its 16 images, `c.safetensors`.
fn train_and_encode(d: &Path) {
    train_vq(d, "vq.safetensors", 2);
    tool("vq-encode")
        .current_dir(d)
        .args(["--model", "vq.safetensors", "x.npy", "-o", "c.safetensors"])
        .assert()
        .success();
}

fn read_map(path: &Path) -> TensorMap {
    TensorMap::read(&genimg::io::InputPath::File(path.to_path_buf()), &Device::Cpu).unwrap()
}

fn write_map(path: &Path, map: &TensorMap) {
    map.write(&OutputPath::File(path.to_path_buf())).unwrap();
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

#[test]
fn two_level_codes_hold_top_bottom_labels_and_codebook_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_vq(d, "vq.safetensors", 2);
    tool("vq-encode")
        .current_dir(d)
        .args(["--model", "vq.safetensors", "x.npy", "--labels", "y.npy", "-o", "codes.safetensors"])
        .assert()
        .success()
        .stdout("");
    let codes = read_map(&d.join("codes.safetensors"));
    assert_eq!(codes.names(), ["bottom", "labels", "top"]);
    assert_eq!(codes.get("top").unwrap().dims(), [16, 4, 4]);
    assert_eq!(codes.get("bottom").unwrap().dims(), [16, 8, 8]);
    assert_eq!(i64s(codes.get("labels").unwrap()), (0..16).map(|i| i % 10).collect::<Vec<i64>>());
    for level in ["top", "bottom"] {
        assert!(i64s(codes.get(level).unwrap()).iter().all(|c| (0..512).contains(c)), "{level}");
    }
    assert_eq!(codes.metadata.get("genimg.n_embed_top").map(String::as_str), Some("512"));
    assert_eq!(codes.metadata.get("genimg.n_embed_bottom").map(String::as_str), Some("512"));

    // Without labels, none are written; the codes are the same.
    let out = tool("vq-encode").current_dir(d).args(["--model", "vq.safetensors", "x.npy"]).output().unwrap();
    let plain = TensorMap::decode(&out.stdout, "stdout", &Device::Cpu).unwrap();
    assert_eq!(plain.names(), ["bottom", "top"]);
    assert_eq!(i64s(plain.get("bottom").unwrap()), i64s(codes.get("bottom").unwrap()));
}

#[test]
fn decoding_through_a_pipe_equals_the_file_form() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_and_encode(d);
    tool("vq-decode")
        .current_dir(d)
        .args(["--model", "vq.safetensors", "c.safetensors", "-o", "r.npy"])
        .assert()
        .success();
    let pipe = format!(
        "{} --model vq.safetensors --batch-size 5 - < x.npy | {} --model vq.safetensors --batch-size 3 > p.npy",
        bin_path("vq-encode").display(),
        bin_path("vq-decode").display()
    );
    let status = std::process::Command::new("sh").arg("-c").arg(&pipe).current_dir(d).status().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(d.join("p.npy")).unwrap(), std::fs::read(d.join("r.npy")).unwrap());
    let (shape, values) = read_f32(&d.join("r.npy"));
    assert_eq!(shape, [16, 1, 32, 32]);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));

    // --range 11 writes the same images in [-1, 1]; --png draws them.
    tool("vq-decode")
        .current_dir(d)
        .args(["--model", "vq.safetensors", "c.safetensors", "--range", "11", "-o", "r11.npy"])
        .assert()
        .success();
    let (_, signed) = read_f32(&d.join("r11.npy"));
    assert!(signed.iter().zip(&values).all(|(s, u)| (s - (2.0 * u - 1.0)).abs() < 1e-6));
    tool("vq-decode")
        .current_dir(d)
        .args(["--model", "vq.safetensors", "c.safetensors", "--png", "g.png", "--cols", "4"])
        .assert()
        .success();
    let png = image::open(d.join("g.png")).unwrap();
    assert_eq!((png.width(), png.height()), (4 * 34 + 2, 4 * 34 + 2));
}

#[test]
fn one_level_codes_are_an_npy_array() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_vq(d, "vq1.safetensors", 1);
    tool("vq-encode").current_dir(d).args(["--model", "vq1.safetensors", "x.npy", "-o", "c.npy"]).assert().success();
    let codes = read_npy(&d.join("c.npy"));
    assert_eq!(codes.shape, [16, 8, 8]);
    assert!(matches!(codes.data, genimg::io::npy::Elements::I64(_)));
    tool("vq-decode").current_dir(d).args(["--model", "vq1.safetensors", "c.npy", "-o", "r.npy"]).assert().success();
    assert_eq!(read_f32(&d.join("r.npy")).0, [16, 1, 32, 32]);
}

/// Plain tensors of other integer dtypes and no metadata, as another program writes them.
#[test]
fn codes_from_another_program_decode_like_ours() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_and_encode(d);
    let ours = read_map(&d.join("c.safetensors"));
    let mut foreign = TensorMap::new();
    foreign.insert("top", ours.get("top").unwrap().to_dtype(candle_core::DType::U32).unwrap());
    foreign.insert("bottom", ours.get("bottom").unwrap().to_dtype(candle_core::DType::U32).unwrap());
    write_map(&d.join("foreign.safetensors"), &foreign);
    for (codes, out) in [("c.safetensors", "a.npy"), ("foreign.safetensors", "b.npy")] {
        tool("vq-decode").current_dir(d).args(["--model", "vq.safetensors", codes, "-o", out]).assert().success();
    }
    assert_eq!(std::fs::read(d.join("a.npy")).unwrap(), std::fs::read(d.join("b.npy")).unwrap());
}

#[test]
fn codes_that_do_not_fit_the_model_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_and_encode(d);
    let ours = read_map(&d.join("c.safetensors"));
    let with = |changes: &[(&str, Tensor)], drop: &str| {
        let mut m = ours.clone();
        m.tensors.remove(drop);
        for (k, v) in changes {
            m.insert(*k, v.clone());
        }
        m
    };
    let dev = Device::Cpu;
    let mut outside = i64s(ours.get("bottom").unwrap());
    outside[64 * 3 + 5] = 512;
    let cases = [
        (
            "outside.safetensors",
            with(&[("bottom", Tensor::from_vec(outside, (16, 8, 8), &dev).unwrap())], ""),
            "bottom code 512 of image 3 is outside the codebook",
        ),
        (
            "small.safetensors",
            with(&[("bottom", Tensor::zeros((16, 4, 4), candle_core::DType::I64, &dev).unwrap())], ""),
            "bottom codes are 4x4, the model expects 8x8",
        ),
        ("no-bottom.safetensors", with(&[], "bottom"), "has no 'bottom' tensor"),
        ("no-top.safetensors", with(&[], "top"), "one level of codes, the model has two"),
        (
            "floats.safetensors",
            with(&[("top", Tensor::zeros((16, 4, 4), candle_core::DType::F32, &dev).unwrap())], ""),
            "expected an integer dtype",
        ),
    ];
    for (name, map, message) in cases {
        write_map(&d.join(name), &map);
        let line = assert_fails_naming(
            tool("vq-decode").current_dir(d).args(["--model", "vq.safetensors", name, "-o", "out.npy"]),
            d,
            name,
        );
        assert!(line.contains(message), "{name}: {line}");
        std::fs::remove_file(d.join(name)).unwrap();
    }
    write_npy_u8(d, "flat.npy", &[16, 64], &[0; 16 * 64]);
    let line = assert_fails_naming(
        tool("vq-decode").current_dir(d).args(["--model", "vq.safetensors", "flat.npy", "-o", "out.npy"]),
        d,
        "flat.npy",
    );
    assert!(line.contains("expected [N, H, W]"), "{line}");

    // A checkpoint of another kind.
    crate::common::train_tiny_vae(d, "vae.safetensors", 2);
    let line = assert_fails_naming(
        tool("vq-encode").current_dir(d).args(["--model", "vae.safetensors", "x.npy", "-o", "out.safetensors"]),
        d,
        "vae.safetensors",
    );
    assert!(line.contains("is a vae-mlp checkpoint, expected vqvae2"), "{line}");
    // An output that is an input is refused before it is touched.
    let (codes, model) =
        (std::fs::read(d.join("c.safetensors")).unwrap(), std::fs::read(d.join("vq.safetensors")).unwrap());
    for (name, args) in [
        ("vq-decode", ["--model", "vq.safetensors", "c.safetensors", "-o", "c.safetensors"]),
        ("vq-decode", ["--model", "vq.safetensors", "c.safetensors", "--png", "vq.safetensors"]),
        ("vq-encode", ["--model", "vq.safetensors", "x.npy", "-o", "vq.safetensors"]),
    ] {
        let line = assert_fails_naming(tool(name).current_dir(d).args(args), d, "is both an input");
        assert!(line.contains(args[4]), "{line}");
    }
    assert!(
        std::fs::read(d.join("c.safetensors")).unwrap() == codes
            && std::fs::read(d.join("vq.safetensors")).unwrap() == model
    );
}

/// A state dict without our metadata, as PyTorch's `save_file(model.state_dict())` writes it,
/// loads with --preset and gives the same codes; unknown or missing names are listed.
#[test]
fn a_plain_state_dict_loads_with_preset_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_vq(d, "vq.safetensors", 2);
    let mut plain = read_map(&d.join("vq.safetensors"));
    plain.metadata = BTreeMap::new();
    write_map(&d.join("plain.safetensors"), &plain);
    let encode = |model: &str, preset: bool| {
        let mut cmd = tool("vq-encode");
        cmd.current_dir(d).args(["--model", model, "x.npy"]);
        if preset {
            cmd.args(["--preset", "vqvae2-mnist"]);
        }
        cmd.output().unwrap()
    };
    let ours = encode("vq.safetensors", false);
    let theirs = encode("plain.safetensors", true);
    assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
    assert_eq!(ours.stdout, theirs.stdout);
    let without = encode("plain.safetensors", false);
    assert!(String::from_utf8_lossy(&without.stderr).contains("--preset"));

    let mut extra = plain.clone();
    extra.insert("enc_b.blocks.9.weight", Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap());
    extra.tensors.remove("quantize_b.embed_avg");
    write_map(&d.join("odd.safetensors"), &extra);
    let out = encode("odd.safetensors", true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("enc_b.blocks.9.weight") && err.contains("quantize_b.embed_avg"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
