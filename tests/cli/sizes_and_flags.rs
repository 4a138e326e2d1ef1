//! Sizes checked before memory is taken, non-finite weights refused, flags that contradict
//! refused. Tools meet absurd sizes under `ulimit -v 4000000` (4 GB of address space), so a
//! giant allocation would abort them instead of leaving the one-line refusal these expect.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use candle_core::{Device, Tensor};
use genimg::checkpoint::CONFIG_KEY;
use genimg::io::safetensors::TensorMap;

use crate::common::{assert_fails_naming, bin_path, tool, train_tiny_ddpm, train_tiny_vae, train_vq};

/// The named tool run with at most 4 GB of address space.
fn capped(name: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.env_clear().env("RAYON_NUM_THREADS", "2");
    cmd.args(["-c", "ulimit -v 4000000 && exec \"$0\" \"$@\""]).arg(bin_path(name));
    cmd
}

/// Runs `cmd` in `dir`, which must be refused quickly in one line naming `culprit`.
fn refused_fast(cmd: &mut Command, dir: &Path, culprit: &str) -> String {
    let start = Instant::now();
    let line = assert_fails_naming(cmd.current_dir(dir), dir, culprit);
    assert!(start.elapsed() < Duration::from_secs(2), "{culprit}: took {:?}", start.elapsed());
    assert!(!line.contains("memory allocation"), "{line}");
    line
}

/// Rewrites the model file at `path` through `edit`.
fn rewrite(path: &Path, edit: impl FnOnce(&mut TensorMap)) {
    let bytes = std::fs::read(path).unwrap();
    let mut map = TensorMap::decode(&bytes, "test", &Device::Cpu).unwrap();
    edit(&mut map);
    std::fs::write(path, map.encode().unwrap()).unwrap();
}

/// Sets `field` of the file's model config to `value`.
fn set_config(path: &Path, field: &str, value: serde_json::Value) {
    rewrite(path, |map| {
        let mut config: serde_json::Value = serde_json::from_str(&map.metadata[CONFIG_KEY]).unwrap();
        config[field] = value;
        map.metadata.insert(CONFIG_KEY.into(), config.to_string());
    });
}

/// Writes `value` into the first element of the file's tensor `name`.
fn poison(path: &Path, name: &str, value: f32) {
    rewrite(path, |map| {
        let t = &map.tensors[name];
        let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[0] = value;
        let poisoned = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
        map.insert(name, poisoned);
    });
}

fn copy(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    dir.join(to)
}

#[test]
fn a_vae_config_that_does_not_match_its_tensors_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 2);
    set_config(&dir.path().join("m.safetensors"), "hidden", 1_000_000_000.into());
    let line = refused_fast(
        capped("vae-encode").args(["--model", "m.safetensors", "images.npy"]),
        dir.path(),
        "m.safetensors",
    );
    assert!(line.contains("'fc1.weight' has shape [16, 784], expected [1000000000, 784]"), "{line}");
    assert!(line.contains("the config's parameters would need 3.1 TB"), "{line}");
}

#[test]
fn image_sizes_and_timesteps_beyond_the_machine_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    train_vq(dir.path(), "vq.safetensors", 1);
    set_config(
        &dir.path().join("vq.safetensors"),
        "image",
        serde_json::json!({"channels": 1, "height": 100_000, "width": 100_000}),
    );
    let line =
        refused_fast(capped("vq-encode").args(["--model", "vq.safetensors", "x.npy"]), dir.path(), "vq.safetensors");
    assert!(line.contains("config field height = 100000: one image's activations would need"), "{line}");

    train_tiny_ddpm(dir.path(), "m.safetensors");
    let wide = copy(dir.path(), "m.safetensors", "wide.safetensors");
    set_config(&wide, "image", serde_json::json!({"channels": 1, "height": 1_000_000, "width": 1_000_000}));
    let long = copy(dir.path(), "m.safetensors", "long.safetensors");
    set_config(&long, "timesteps", 1_000_000_000.into());
    for (model, field) in [("wide.safetensors", "height = 1000000"), ("long.safetensors", "timesteps 1000000000")] {
        let line = refused_fast(capped("ddpm-denoise").args(["--model", model, "-n", "1"]), dir.path(), model);
        assert!(line.contains(field), "{line}");
    }
}

#[test]
fn training_flags_for_a_network_beyond_the_machine_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 4] = [
        ("vae-train", &["--hidden", "1000000000"], "--hidden 1000000000: the network's parameters would need 3.1 TB"),
        ("vae-train", &["--preset", "vib-mlp", "--latent", "1000000000"], "--latent 1000000000"),
        ("ddpm-train", &["--base-channels", "1000000"], "--base-channels 1000000: the network's parameters"),
        ("ddpm-train", &["--timesteps", "1000000000"], "timesteps 1000000000 is more than 1000000"),
    ];
    for (name, flags, message) in cases {
        refused_fast(capped(name).args(flags).args(["-o", "m.safetensors"]), dir.path(), message);
    }
}

#[test]
fn a_prior_wider_than_the_machine_is_refused_naming_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_npy_u8(dir.path(), "codes.npy", &[4, 4, 4], &[3; 64]);
    let cases =
        [("--channels", "1000000000", "--channels 1000000000"), ("--layers", "100000000", "--layers 100000000")];
    for (flag, value, named) in cases {
        let mut cmd = capped("prior-fit");
        cmd.args(["codes.npy", "--n-embed", "16", flag, value, "-o", "p.safetensors"]);
        let line = refused_fast(&mut cmd, dir.path(), named);
        assert!(line.contains("would need"), "{line}");
    }
}

#[test]
fn img_pack_refuses_sizes_beyond_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--size", "1000000x1000000"], "--size 1000000x1000000: one image would need 3.0 TB"),
        (&["--pad-to", "1000000"], "--pad-to 1000000: one image would need 3.0 TB"),
        (&["--size", "10000x10000"], "--size 10000x10000: the images would need 3.0 TB"),
    ];
    for (flags, message) in cases {
        refused_fast(capped("img-pack").arg("mnist").args(flags).args(["-o", "x.npy"]), dir.path(), message);
    }
}

#[test]
fn checkpoints_holding_nan_or_infinity_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    train_vq(dir.path(), "vq.safetensors", 1);
    poison(&dir.path().join("vq.safetensors"), "quantize_b.embed", f32::NAN);
    let line =
        refused_fast(tool("vq-encode").args(["--model", "vq.safetensors", "x.npy"]), dir.path(), "vq.safetensors");
    assert!(line.contains("tensor quantize_b.embed holds a non-finite value (NaN)"), "{line}");

    train_tiny_ddpm(dir.path(), "m.safetensors");
    poison(&dir.path().join("m.safetensors"), "conv_out.weight", f32::INFINITY);
    let mut cmd = tool("ddpm-denoise");
    let line = refused_fast(cmd.args(["--model", "m.safetensors", "-n", "1"]), dir.path(), "m.safetensors");
    assert!(line.contains("tensor conv_out.weight holds a non-finite value (an infinity)"), "{line}");
}

#[test]
fn resuming_from_a_training_state_holding_nan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 2);
    let state = dir.path().join("m.state.safetensors");
    let name = {
        let map = TensorMap::decode(&std::fs::read(&state).unwrap(), "state", &Device::Cpu).unwrap();
        map.names().into_iter().find(|n| n.contains("fc1.weight")).expect("the state holds fc1's weight").to_string()
    };
    poison(&state, &name, f32::NAN);
    let mut cmd = tool("vae-train");
    cmd.args([
        "--hidden",
        "16",
        "--latent",
        "2",
        "--data",
        "images.npy",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--resume",
        "-o",
        "m.safetensors",
    ]);
    let line = assert_fails_naming(cmd.current_dir(dir.path()), dir.path(), "m.state.safetensors");
    assert!(line.contains(&format!("tensor {name} holds a non-finite value (NaN)")), "{line}");
}

/// Runs `cmd` in `dir`, which clap must refuse as a usage error (exit 2) naming `flag`,
/// writing nothing.
fn usage_error(cmd: &mut Command, dir: &Path, flag: &str) {
    let before = crate::common::dir_entries(dir);
    let out = cmd.current_dir(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
    assert!(stderr.contains(flag), "the usage error does not name {flag}: {stderr}");
    assert_eq!(crate::common::dir_entries(dir), before, "{flag}: files were written");
}

#[test]
fn ddpm_denoise_refuses_ddim_steps_and_eta_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    let ddim = ["--model", "m.safetensors", "-n", "1", "--sampler", "ddim", "-o", "out.npy"];
    for (flags, flag) in [
        (&["--steps", "0"][..], "--steps"),
        (&["--eta", "1.5"], "--eta"),
        (&["--eta=-0.1"], "--eta"),
        (&["--batch-size", "0"], "--batch-size"),
    ] {
        usage_error(tool("ddpm-denoise").args(ddim).args(flags), dir.path(), flag);
    }
    let mut cmd = tool("ddpm-denoise");
    cmd.current_dir(dir.path()).args(ddim).args(["--from-t", "3", "--steps", "5"]);
    let line = assert_fails_naming(&mut cmd, dir.path(), "--steps 5");
    assert!(line.contains("must be in [1, 4]"), "{line}");
    // Without --steps, DDIM takes its default of 50 calls, or one per step when fewer.
    tool("ddpm-denoise").current_dir(dir.path()).args(ddim).args(["--from-t", "3"]).assert().success();
}

#[test]
fn vae_decode_refuses_input_beside_prior_or_manifold() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 2);
    crate::common::write_npy_f32(dir.path(), "z.npy", &[1, 2], &[0.0, 0.0]);
    for (flag, value) in [("--prior", "4"), ("--manifold", "3")] {
        usage_error(tool("vae-decode").args(["--model", "m.safetensors", flag, value, "z.npy"]), dir.path(), flag);
    }
    tool("vae-decode")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "z.npy", "-o", "x.npy"])
        .assert()
        .success();
}

#[test]
fn prior_fit_refuses_a_codebook_size_of_zero_or_unlike_the_files() {
    let dir = tempfile::tempdir().unwrap();
    train_vq(dir.path(), "vq.safetensors", 2);
    tool("vq-encode")
        .current_dir(dir.path())
        .args(["--model", "vq.safetensors", "x.npy", "-o", "codes.safetensors"])
        .assert()
        .success();
    let fit = [
        "codes.safetensors",
        "--level",
        "top",
        "--layers",
        "1",
        "--channels",
        "4",
        "--epochs",
        "1",
        "-o",
        "p.safetensors",
    ];
    usage_error(tool("prior-fit").args(fit).args(["--n-embed", "0"]), dir.path(), "--n-embed");
    let mut cmd = tool("prior-fit");
    cmd.current_dir(dir.path()).args(fit).args(["--n-embed", "7"]);
    let line = assert_fails_naming(&mut cmd, dir.path(), "codes.safetensors");
    assert!(line.contains("codebook of 512 codes, but --n-embed is 7"), "{line}");
}

#[test]
fn training_refuses_a_learning_rate_or_beta_that_cannot_train() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_tiny_data(dir.path());
    for (flags, culprit) in [
        (&["--lr", "0"][..], "--lr 0 must be a positive number"),
        (&["--lr", "NaN"], "--lr NaN must be a positive number"),
        (&["--preset", "vib-mlp", "--beta=-1"], "--beta -1 must be a finite number >= 0"),
        (&["--preset", "vib-mlp", "--hidden", "0"], "--hidden and --latent must be positive"),
    ] {
        let mut cmd = tool("vae-train");
        cmd.current_dir(dir.path()).args(flags).args([
            "--data",
            "images.npy",
            "--labels",
            "labels.npy",
            "-o",
            "m.safetensors",
        ]);
        assert_fails_naming(&mut cmd, dir.path(), culprit);
    }
}
