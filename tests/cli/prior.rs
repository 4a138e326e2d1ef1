//! prior-fit and prior-sample: priors over both levels of vq-encode's codes, the shared
//! training loop's resume, samplers that agree, the pipe into vq-decode, and clear errors.

use std::path::Path;

use candle_core::Device;
use genimg::io::safetensors::TensorMap;

use crate::common::{assert_fails_naming, bin_path, json_lines, tool, train_vq, write_npy_u8};

const SMALL: [&str; 4] = ["--layers", "2", "--channels", "8"];

/// A tiny VQ-VAE-2 and the codes of its 16 images with their labels: `codes.safetensors`.
pub fn codes(dir: &Path) {
    train_vq(dir, "vq.safetensors", 2);
    tool("vq-encode")
        .current_dir(dir)
        .args(["--model", "vq.safetensors", "x.npy", "--labels", "y.npy", "-o", "codes.safetensors"])
        .assert()
        .success();
}

/// Fits a small prior on one level of `codes.safetensors` into `out`; returns its stderr.
pub fn fit(dir: &Path, level: &str, out: &str, epochs: &str, resume: bool) -> String {
    let mut cmd = tool("prior-fit");
    cmd.current_dir(dir)
        .args(["codes.safetensors", "--level", level, "--eval-data", "codes.safetensors"])
        .args(SMALL)
        .args(["--epochs", epochs, "--batch-size", "4", "--seed", "2", "-o", out]);
    if resume {
        cmd.arg("--resume");
    }
    let out = cmd.assert().success().get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

fn read_map(path: &Path) -> TensorMap {
    TensorMap::read(&genimg::io::InputPath::File(path.to_path_buf()), &Device::Cpu).unwrap()
}

fn config(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read_map(path).metadata["genimg.config"]).unwrap()
}

#[test]
fn priors_fit_both_levels_report_bits_per_code_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    codes(d);
    let stderr = fit(d, "top", "top.safetensors", "2", false);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    for key in ["train_bits_per_code", "eval_bits_per_code"] {
        let bits = lines[1][key].as_f64().unwrap();
        assert!(bits > 0.0 && bits < 12.0, "{key} = {bits}");
    }
    let top = config(&d.join("top.safetensors"));
    assert_eq!(top["model"], "pixelcnn-prior");
    assert_eq!(
        (top["height"].as_u64(), top["n_embed"].as_u64(), top["n_classes"].as_u64()),
        (Some(4), Some(512), Some(10))
    );
    assert!(top["top"].is_null());

    fit(d, "bottom", "bottom.safetensors", "1", false);
    let bottom = config(&d.join("bottom.safetensors"));
    assert_eq!(bottom["height"].as_u64(), Some(8));
    assert_eq!(bottom["top"]["height"].as_u64(), Some(4));
    assert!(read_map(&d.join("bottom.safetensors")).get("layers.1.top_proj.weight").is_some());

    // One epoch, then --resume to two: the bytes of two epochs in one run.
    fit(d, "top", "cut.safetensors", "1", false);
    fit(d, "top", "cut.safetensors", "2", true);
    assert!(std::fs::read(d.join("cut.safetensors")).unwrap() == std::fs::read(d.join("top.safetensors")).unwrap());
}

#[test]
fn samples_pipe_into_vq_decode_and_both_samplers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    codes(d);
    fit(d, "top", "top.safetensors", "1", false);
    fit(d, "bottom", "bottom.safetensors", "1", false);
    let sample = |extra: &[&str]| {
        let mut cmd = tool("prior-sample");
        cmd.current_dir(d)
            .args(["--model", "top.safetensors", "--bottom", "bottom.safetensors", "-n", "12"])
            .args(extra);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let cached = sample(&["--seed", "4"]);
    let map = TensorMap::decode(&cached, "stdout", &Device::Cpu).unwrap();
    assert_eq!(map.names(), ["bottom", "labels", "top"]);
    assert_eq!(map.get("top").unwrap().dims(), [12, 4, 4]);
    assert_eq!(map.get("bottom").unwrap().dims(), [12, 8, 8]);
    // Classes in equal blocks, in order.
    let labels = map.get("labels").unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(labels, (0..12).map(|i| i * 10 / 12).collect::<Vec<i64>>());
    assert_eq!(map.metadata.get("genimg.n_embed_bottom").map(String::as_str), Some("512"));

    assert!(sample(&["--seed", "4", "--sampler", "plain"]) == cached, "plain and cached samplers drew different codes");
    assert!(sample(&["--seed", "4"]) == cached, "a seeded run does not repeat");
    assert!(sample(&["--seed", "5"]) != cached);
    let sevens = TensorMap::decode(&sample(&["--class", "7", "--top-k", "3"]), "s", &Device::Cpu).unwrap();
    assert!(sevens.get("labels").unwrap().to_vec1::<i64>().unwrap().iter().all(|&l| l == 7));
    let nucleus = sample(&["--top-p", "0.8"]);
    assert!(sample(&["--top-p", "0.8", "--sampler", "plain"]) == nucleus, "the samplers differ under --top-p");
    assert!(nucleus != cached, "--top-p 0.8 drew the codes of no truncation");
    tool("prior-sample")
        .current_dir(d)
        .args(["--model", "top.safetensors", "--bottom", "bottom.safetensors", "-n", "2", "--top-p", "0", "-o", "p.st"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("top-p 0 must be in (0, 1]"));
    assert!(!d.join("p.st").exists());

    // Bottom codes for given top codes, from stdin.
    std::fs::write(d.join("s.safetensors"), &cached).unwrap();
    let out = tool("prior-sample")
        .current_dir(d)
        .args(["--model", "bottom.safetensors", "--top", "-"])
        .pipe_stdin(d.join("s.safetensors"))
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resampled = TensorMap::decode(&out.stdout, "stdout", &Device::Cpu).unwrap();
    let top = |m: &TensorMap| m.get("top").unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(top(&resampled), top(&map));
    assert_eq!(resampled.get("labels").unwrap().to_vec1::<i64>().unwrap(), labels);

    // The pipe of the README.
    let pipe = format!(
        "{} --model top.safetensors --bottom bottom.safetensors -n 6 | {} --model vq.safetensors --png s.png --cols 3",
        bin_path("prior-sample").display(),
        bin_path("vq-decode").display()
    );
    assert!(std::process::Command::new("sh").arg("-c").arg(&pipe).current_dir(d).status().unwrap().success());
    let png = image::open(d.join("s.png")).unwrap();
    assert_eq!((png.width(), png.height()), (3 * 34 + 2, 2 * 34 + 2));
}

#[test]
fn codes_and_classes_that_do_not_fit_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    codes(d);
    fit(d, "top", "top.safetensors", "1", false);
    fit(d, "bottom", "bottom.safetensors", "1", false);
    let fails = |args: &[&str], culprit: &str, message: &str| {
        let (tool_name, rest) = args.split_first().unwrap();
        let line = assert_fails_naming(tool(tool_name).current_dir(d).args(rest), d, culprit);
        assert!(line.contains(message), "{line}");
    };
    fails(
        &["prior-fit", "codes.safetensors", "-o", "p.safetensors"],
        "codes.safetensors",
        "--level top or --level bottom",
    );
    fails(&["prior-sample", "--model", "vq.safetensors", "-o", "s.npy"], "vq.safetensors", "expected pixelcnn-prior");
    fails(
        &[
            "prior-sample",
            "--model",
            "top.safetensors",
            "--bottom",
            "bottom.safetensors",
            "--class",
            "12",
            "-o",
            "s.npy",
        ],
        "class 12",
        "the prior knows 10 classes (0..9)",
    );
    // Codes of another program: no codebook size in the metadata.
    let mut plain = read_map(&d.join("codes.safetensors"));
    plain.metadata.clear();
    plain.write(&genimg::io::OutputPath::File(d.join("plain.safetensors"))).unwrap();
    fails(
        &["prior-fit", "plain.safetensors", "--level", "top", "-o", "p.safetensors"],
        "plain.safetensors",
        "--n-embed",
    );
    // Top codes of the wrong size for the bottom prior.
    write_npy_u8(d, "small.npy", &[2, 2, 2], &[0; 8]);
    fails(&["prior-sample", "--model", "bottom.safetensors", "--top", "small.npy", "-o", "s.npy"], "small.npy", "2x2");
    // One-level codes have no top level.
    write_npy_u8(d, "one.npy", &[4, 8, 8], &[1; 256]);
    fails(
        &["prior-fit", "one.npy", "--level", "top", "--n-embed", "4", "-o", "p.safetensors"],
        "one.npy",
        "no top level",
    );
}
