//! Memory that does not grow with the number of samples: a tool asked for more rows than
//! memory could ever hold streams them batch by batch, so under a 2 GB address-space limit it
//! runs until its reader stops reading (or, for vae-eval's k, keeps running) instead of
//! failing to allocate them all up front.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{bin_path, tool, train_tiny_ddpm, train_tiny_vae, write_npy_u8};

/// The address-space limit (KiB) the tools run under: far below what N rows would take.
const LIMIT_KIB: u64 = 2_000_000;

/// Runs `tool args | head -c 100000` under the limit; the pipeline (the tool included) must
/// succeed, the tool ending quietly once `head` has gone, within `within`.
fn head_of(dir: &Path, name: &str, args: &str, within: Duration) {
    let script = format!(
        "set -o pipefail; ulimit -v {LIMIT_KIB}; '{}' {args} | head -c 100000 >/dev/null",
        bin_path(name).display()
    );
    let start = Instant::now();
    let out = bash(dir, &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} {args}: {:?} {stderr}", out.status);
    assert!(start.elapsed() < within, "{name} {args} took {:?}", start.elapsed());
}

/// Runs `script` with bash in `dir` on two threads.
fn bash(dir: &Path, script: &str) -> std::process::Output {
    std::process::Command::new("bash")
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "2")
        .args(["-c", script])
        .output()
        .unwrap()
}

/// A class-conditional prior over one level of 2x2 codes of 4, trained for one epoch.
fn tiny_prior(dir: &Path) {
    write_npy_u8(dir, "codes.npy", &[8, 2, 2], &(0..32).map(|i| (i % 4) as u8).collect::<Vec<_>>());
    write_npy_u8(dir, "labels.npy", &[8], &[0, 1, 2, 3, 0, 1, 2, 3]);
    tool("prior-fit")
        .current_dir(dir)
        .args(["codes.npy", "--labels", "labels.npy", "--n-embed", "4", "--layers", "2", "--channels", "8"])
        .args(["--epochs", "1", "--batch-size", "4", "-o", "p.safetensors"])
        .assert()
        .success();
}

#[test]
fn prior_sample_streams_a_trillion_labelled_samples() {
    let dir = tempfile::tempdir().unwrap();
    tiny_prior(dir.path());
    head_of(dir.path(), "prior-sample", "--model p.safetensors -n 1000000000000", Duration::from_secs(30));
}

#[test]
fn ddpm_denoise_streams_a_trillion_images() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    let args = "--model m.safetensors -n 1000000000000 --sampler ddim --steps 1 --batch-size 8";
    head_of(dir.path(), "ddpm-denoise", args, Duration::from_secs(30));
}

#[test]
fn ddpm_denoise_refuses_a_png_grid_too_large_to_build() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    let out = tool("ddpm-denoise")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "-n", "10001", "--png", "g.png"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--png") && stderr.contains("10001") && stderr.contains("10000"), "{stderr}");
    assert!(!dir.path().join("g.png").exists());
}

#[test]
fn vae_decode_streams_a_manifold_of_a_trillion_points() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    head_of(dir.path(), "vae-decode", "--model vae.safetensors --manifold 1000000", Duration::from_secs(30));
    let e = tool("vae-decode")
        .current_dir(dir.path())
        .args(["--model", "vae.safetensors", "--manifold", "10000000000"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8(e).unwrap().contains("--manifold 10000000000"));
}

/// A billion importance samples of two images would take 16 GB as a list; summed as they come
/// they take none, so vae-eval is still at work when the test stops it.
#[test]
fn vae_eval_sums_importance_weights_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    write_npy_u8(dir.path(), "two.npy", &[2, 28, 28], &[128; 2 * 784]);
    let bin = bin_path("vae-eval");
    let script = format!(
        "ulimit -v {LIMIT_KIB}; exec timeout 3 '{}' --model vae.safetensors --data two.npy -k 1000000000",
        bin.display()
    );
    let out = bash(dir.path(), &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "stopped by the timeout, not by memory: {stderr}");
}

/// Training reads its images from the file as batches ask for them: a 4 GB array (sparse on
/// disk, 5.5 million digits) trains under the same 2 GB address-space limit, which holding
/// the set in memory, as bytes or as f32, could not. Stopped partway, the run saves as an
/// interrupted run does, past its first batches.
#[test]
fn vae_train_trains_on_an_array_larger_than_its_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let n: u64 = 5_500_000;
    let path = dir.path().join("big.npy");
    let header = genimg::io::npy::to_bytes::<u8>(&[n as usize, 28, 28], &[]);
    std::fs::write(&path, &header).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(header.len() as u64 + n * 784).unwrap();
    let script = format!(
        "ulimit -v {LIMIT_KIB}; '{}' --preset vae-mlp --data big.npy --epochs 1 --batch-size 64 -o m.safetensors & \
         pid=$!; sleep 6; kill -INT $pid; wait $pid",
        bin_path("vae-train").display()
    );
    let out = bash(dir.path(), &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "interrupted, not out of memory: {stderr}");
    let step: u64 =
        stderr.split("interrupted at step ").nth(1).and_then(|s| s.split(':').next()).unwrap().parse().unwrap();
    assert!(step >= 10, "only {step} steps in 6 s: {stderr}");
    assert!(dir.path().join("m.state.safetensors").exists());
}

/// img-select reads scores and labels, then only the rows it keeps, in place: from a 9.8 GB
/// array (sparse on disk, 200,000 colour samples of 128x128) it keeps 3 per class under the
/// 2 GB address-space limit, which reading the samples whole could not.
#[test]
fn img_select_reads_only_the_kept_rows_of_an_array_larger_than_its_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let n: usize = 200_000;
    let path = dir.path().join("big.npy");
    let header = genimg::io::npy::to_bytes::<u8>(&[n, 3, 128, 128], &[]);
    std::fs::write(&path, &header).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len((header.len() + n * 3 * 128 * 128) as u64)
        .unwrap();
    let scores: Vec<f32> = (0..2 * n).map(|i| (i % 7) as f32 / 7.0).collect();
    crate::common::write_npy_f32(dir.path(), "p.npy", &[n, 2], &scores);
    write_npy_u8(dir.path(), "l.npy", &[n], &(0..n).map(|i| (i % 2) as u8).collect::<Vec<_>>());
    let script = format!(
        "ulimit -v {LIMIT_KIB}; '{}' big.npy --scores p.npy --labels l.npy --keep 3 -o k.npy",
        bin_path("img-select").display()
    );
    let out = bash(dir.path(), &script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(crate::common::read_npy(&dir.path().join("k.npy")).shape, [6, 3, 128, 128]);
}
