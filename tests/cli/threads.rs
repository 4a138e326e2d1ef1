//! Seeded training writes the same bytes on any number of threads: vae-train's VQ-VAE-2,
//! ddpm-train's U-Net and prior-fit's PixelCNN (the bottom prior, whose conditioning is a
//! transposed convolution), each trained on 1 and on 2 threads.

use std::path::Path;

use crate::common::{noise_pixels, tool, train_vq, write_npy_u8, TINY_DDPM};

/// Runs `name` with `args` and `-o model` on `threads` threads in `dir`; returns the model
/// file's bytes.
fn model_bytes(dir: &Path, threads: &str, name: &str, args: &[&str]) -> Vec<u8> {
    let model = format!("{name}-{threads}.safetensors");
    tool(name).current_dir(dir).env("RAYON_NUM_THREADS", threads).args(args).args(["-o", &model]).assert().success();
    std::fs::read(dir.join(model)).unwrap()
}

/// Whether `name` with `args` writes the same model on 1 and 2 threads.
fn same_on_1_and_2_threads(dir: &Path, name: &str, args: &[&str]) -> bool {
    model_bytes(dir, "1", name, args) == model_bytes(dir, "2", name, args)
}

#[test]
fn vqvae2_trains_to_the_same_bytes_on_1_and_2_threads() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[32, 28, 28], &noise_pixels(32, 7));
    let args = ["--preset", "vqvae2-mnist", "--data", "x.npy", "--epochs", "1", "--batch-size", "16", "--seed", "3"];
    assert!(same_on_1_and_2_threads(dir.path(), "vae-train", &args));
}

#[test]
fn ddpm_trains_to_the_same_bytes_on_1_and_2_threads() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[32, 28, 28], &noise_pixels(32, 8));
    let args = ["--data", "x.npy", "--epochs", "1", "--batch-size", "16", "--timesteps", "50", "--seed", "3"];
    assert!(same_on_1_and_2_threads(dir.path(), "ddpm-train", &[&TINY_DDPM[..], &args].concat()));
}

#[test]
fn pixelcnn_prior_fits_to_the_same_bytes_on_1_and_2_threads() {
    let dir = tempfile::tempdir().unwrap();
    train_vq(dir.path(), "vq.safetensors", 2);
    tool("vq-encode")
        .current_dir(dir.path())
        .args(["--model", "vq.safetensors", "x.npy", "--labels", "y.npy", "-o", "codes.safetensors"])
        .assert()
        .success();
    let args = ["codes.safetensors", "--level", "bottom", "--layers", "2", "--channels", "8", "--epochs", "1"];
    assert!(same_on_1_and_2_threads(
        dir.path(),
        "prior-fit",
        &[&args[..], &["--batch-size", "4", "--seed", "2"]].concat()
    ));
}
