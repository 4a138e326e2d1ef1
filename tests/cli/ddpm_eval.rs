//! ddpm-eval: the variational bound of a trained model in bits per dimension, its parts
//! adding up, the same for any batch size, and refusals of data the model cannot take.

use std::path::Path;

use crate::common::{assert_fails_naming, noise_pixels, number, report_of, tool, write_npy_u8, TINY_DDPM};

/// A tiny U-Net of 50 steps trained one epoch on 16 noise images (`dir/x.npy`), as `dir/m.safetensors`.
fn train_tiny_ddpm(dir: &Path) {
    write_npy_u8(dir, "x.npy", &[16, 28, 28], &noise_pixels(16, 1));
    tool("ddpm-train")
        .current_dir(dir)
        .args(TINY_DDPM)
        .args(["--timesteps", "50", "--epochs", "1", "--data", "x.npy", "--batch-size", "8", "-o", "m.safetensors"])
        .assert()
        .success();
}

#[test]
fn the_bound_adds_up_and_does_not_depend_on_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path());
    let args = ["--model", "m.safetensors", "--data", "x.npy", "-n", "3", "--seed", "2"];
    let whole = report_of("ddpm-eval", dir.path(), &[&args[..], &["--batch-size", "3"]].concat());
    let single = report_of("ddpm-eval", dir.path(), &[&args[..], &["--batch-size", "1"]].concat());
    let bpd = number(&whole, "bits_per_dim");
    // A barely trained network on noise: far above the 8 bits a uniform model needs, but finite.
    assert!(bpd.is_finite() && bpd > 1.0, "{whole:?}");
    let parts = number(&whole, "prior_bpd") + number(&whole, "kl_bpd") + number(&whole, "decoder_bpd");
    assert!((parts - bpd).abs() < 1e-9 * bpd, "{parts} vs {bpd}");
    let terms: Vec<f64> = whole["terms_bpd"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((terms.len(), number(&whole, "timesteps")), (50, 50.0));
    assert_eq!(terms[0], number(&whole, "decoder_bpd"));
    assert!(terms.iter().all(|t| t.is_finite() && *t >= 0.0), "every KL term is >= 0");
    assert_eq!(number(&whole, "images"), 3.0);
    for key in ["bits_per_dim", "prior_bpd", "kl_bpd", "decoder_bpd"] {
        let (a, b) = (number(&whole, key), number(&single, key));
        assert!((a - b).abs() < 1e-6 * a.abs().max(1e-9), "{key}: {a} vs {b}");
    }
    // Another seed draws other x_t: close, not equal.
    let other =
        report_of("ddpm-eval", dir.path(), &["--model", "m.safetensors", "--data", "x.npy", "-n", "3", "--seed", "5"]);
    assert_ne!(number(&other, "bits_per_dim"), bpd);
}

#[test]
fn refuses_images_the_model_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path());
    write_npy_u8(dir.path(), "rgb.npy", &[2, 3, 32, 32], &[0; 2 * 3 * 1024]);
    let mut cmd = tool("ddpm-eval");
    cmd.current_dir(dir.path()).args(["--model", "m.safetensors", "--data", "rgb.npy"]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "rgb.npy");
    assert!(msg.contains("3 channel"), "{msg}");
}
