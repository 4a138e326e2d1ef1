//! The vae-conv family through the tools: vae-train on a colour image array (metrics, the
//! PyTorch state dict with BatchNorm's buffers, an exact resume), then vae-eval, vae-encode
//! and vae-decode on the trained model, a plain state dict with --preset, and refusals.

use std::path::Path;

use serde_json::Value;

use crate::common::{eval_report, json_lines, noise_pixels, number, read_f32, strip_metadata, tool, write_npy_u8};

/// Images in the tiny run.
const N: usize = 12;
/// Values of one 3x64x64 image.
const D: usize = 3 * 64 * 64;

/// `N` colour images u8 [N, 3, 64, 64] of seeded noise as `dir/x.npy`.
fn write_colour_images(dir: &Path) {
    let mut pixels = noise_pixels((N * D).div_ceil(784), 6);
    pixels.truncate(N * D);
    write_npy_u8(dir, "x.npy", &[N, 3, 64, 64], &pixels);
}

/// Trains the vae-conv preset on `x.npy` (held out: the same images) into `dir/out`, in
/// batches of 4; returns stderr.
fn train(dir: &Path, out: &str, epochs: &str, extra: &[&str]) -> String {
    let out = tool("vae-train")
        .current_dir(dir)
        .args(["--preset", "vae-conv", "--data", "x.npy", "--eval-data", "x.npy", "--batch-size", "4"])
        .args(["--epochs", epochs, "--seed", "2", "-o", out])
        .args(extra)
        .assert()
        .success();
    String::from_utf8(out.get_output().stderr.clone()).unwrap()
}

#[test]
fn trains_saves_the_state_dict_with_its_buffers_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_colour_images(dir.path());
    let lines = json_lines(&train(dir.path(), "full.safetensors", "2", &[]));
    assert_eq!(lines.len(), 2);
    for key in ["train_loss", "train_mse", "train_kld", "eval_loss", "eval_mse", "eval_kld"] {
        number(&lines[1], key);
    }
    // The held-out loss is its terms, with the preset's KL weight.
    let (loss, mse, kld) =
        (number(&lines[1], "eval_loss"), number(&lines[1], "eval_mse"), number(&lines[1], "eval_kld"));
    assert!((loss - (mse + 0.00025 * kld)).abs() < 1e-5, "{loss} vs {mse} + 0.00025 * {kld}");

    let bytes = std::fs::read(dir.path().join("full.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), 78);
    assert_eq!(st.tensor("encoder.0.0.weight").unwrap().shape(), &[32, 3, 3, 3]);
    assert_eq!(st.tensor("fc_mu.weight").unwrap().shape(), &[128, 2048]);
    assert_eq!(st.tensor("final_layer.3.weight").unwrap().shape(), &[3, 32, 3, 3]);
    // num_batches_tracked is an i64 scalar, as PyTorch saves it: 3 steps an epoch, 2 epochs.
    let count = st.tensor("decoder.2.1.num_batches_tracked").unwrap();
    assert_eq!((count.dtype(), count.shape()), (safetensors::Dtype::I64, &[][..]));
    assert_eq!(i64::from_le_bytes(count.data().try_into().unwrap()), 6);
    let mean = st.tensor("encoder.1.1.running_mean").unwrap();
    assert!(mean.data().iter().any(|&b| b != 0), "the running mean never moved");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config: Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["genimg.config"]).unwrap();
    assert_eq!((config["model"].as_str(), config["latent"].as_u64()), (Some("vae-conv"), Some(128)));

    // One epoch, then --resume to two: the same bytes as two epochs in one run.
    train(dir.path(), "cut.safetensors", "1", &[]);
    train(dir.path(), "cut.safetensors", "2", &["--resume"]);
    assert!(bytes == std::fs::read(dir.path().join("cut.safetensors")).unwrap(), "the resumed run differs");
}

#[test]
fn evaluates_encodes_and_decodes_a_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    write_colour_images(dir.path());
    train(dir.path(), "m.safetensors", "1", &["--sigma", "0.5", "--latent", "8", "--kld-weight", "0.01"]);

    let k1 = eval_report(dir.path(), &["--model", "m.safetensors", "--data", "x.npy", "-k", "1"]);
    let k4 = eval_report(dir.path(), &["--model", "m.safetensors", "--data", "x.npy", "-k", "4"]);
    assert_eq!((k1["model"].as_str(), k1["images"].as_u64()), (Some("vae-conv"), Some(N as u64)));
    assert_eq!((k1["likelihood"].as_str(), k1["fixed_sigma"].as_f64()), (Some("discretized-gaussian"), Some(0.5)));
    let (elbo, nll, kl) = (number(&k1, "elbo"), number(&k1, "recon_nll"), number(&k1, "kl"));
    assert!((elbo + nll + kl).abs() < 1e-6 * elbo.abs(), "{elbo} vs -({nll} + {kl})");
    // A discretized likelihood: no more than certainty, about 8 bits a pixel for noise.
    assert!(elbo < 0.0 && nll > 0.0 && kl >= 0.0);
    let bits = number(&k1, "elbo_bits_per_dim");
    assert!((bits + elbo / (D as f64 * std::f64::consts::LN_2)).abs() < 1e-9, "{bits} vs {elbo}");
    assert!((5.0..20.0).contains(&bits), "{bits}");
    let (log_px, log_px_bits) = (number(&k4, "log_px"), number(&k4, "log_px_bits_per_dim"));
    assert!((log_px_bits + log_px / (D as f64 * std::f64::consts::LN_2)).abs() < 1e-9);
    assert!((log_px - elbo).abs() < 0.01 * elbo.abs(), "k=4 log_px {log_px} vs elbo {elbo}");
    assert_eq!(number(&k4, "elbo"), elbo, "the ELBO does not depend on k");
    number(&k1, "recon_mse");

    tool("vae-encode")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "x.npy", "-o", "z.npy"])
        .assert()
        .success();
    let (shape, z) = read_f32(&dir.path().join("z.npy"));
    assert_eq!(shape, [N, 8]);
    assert!(z.iter().all(|v| v.is_finite()));
    for (args, n) in [(vec!["z.npy"], N), (vec!["--prior", "3"], 3)] {
        tool("vae-decode")
            .current_dir(dir.path())
            .args(["--model", "m.safetensors", "-o", "r.npy"])
            .args(args)
            .assert()
            .success();
        let (shape, r) = read_f32(&dir.path().join("r.npy"));
        assert_eq!(shape, [n, 3, 64, 64]);
        assert!(r.iter().all(|v| (0.0..=1.0).contains(v)), "pixels outside [0,1]");
    }
}

/// A state dict without the config (as `safetensors.torch.save_file(model.state_dict())`
/// writes VanillaVAE's) loads with --preset vae-conv and gives the same codes.
#[test]
fn a_plain_state_dict_loads_with_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    write_colour_images(dir.path());
    train(dir.path(), "m.safetensors", "1", &[]);
    strip_metadata(&dir.path().join("m.safetensors"), &dir.path().join("plain.safetensors"));
    let encode = |args: &[&str]| {
        let out = tool("vae-encode").current_dir(dir.path()).args(args).arg("x.npy").assert().success();
        out.get_output().stdout.clone()
    };
    let with_config = encode(&["--model", "m.safetensors"]);
    assert!(with_config == encode(&["--model", "plain.safetensors", "--preset", "vae-conv"]));
    let out =
        tool("vae-encode").current_dir(dir.path()).args(["--model", "plain.safetensors", "x.npy"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("--preset"), "{stderr}");
}

#[test]
fn refuses_images_and_flags_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    write_colour_images(dir.path());
    let fails = |args: &[&str]| -> String {
        let out = tool("vae-train").current_dir(dir.path()).args(args).args(["-o", "m.safetensors"]).assert().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!dir.path().join("m.safetensors").exists());
        stderr
    };
    // The network takes its data's geometry, if its strides allow it.
    let e = fails(&["--preset", "vae-conv", "--data", "mnist"]);
    assert!(e.contains("multiples of 32") && e.contains("not 28x28"), "{e}");
    let e = fails(&["--preset", "vae-conv", "--sigma", "learned", "--data", "x.npy"]);
    assert!(e.contains("--sigma learned does not apply to vae-conv"), "{e}");
    let e = fails(&["--preset", "vae-conv", "--beta", "2", "--data", "x.npy"]);
    assert!(e.contains("--beta does not apply to vae-conv") && e.contains("--kld-weight"), "{e}");
    let e = fails(&["--preset", "vae-conv", "--kld-weight=-1", "--data", "x.npy"]);
    assert!(e.contains("--kld-weight -1 must be"), "{e}");
    let e = fails(&["--preset", "vae-mlp", "--kld-weight", "0.1"]);
    assert!(e.contains("--kld-weight does not apply to vae-mlp"), "{e}");
}
