//! ddpm-denoise: sampling from noise and from x_t (through a real pipe from ddpm-noise),
//! DDIM with eta 0 as a deterministic map, both output forms, and refusals.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{assert_fails_naming, bin_path, read_f32, tool, train_tiny_ddpm, train_tiny_vae, write_npy_f32};

/// Runs ddpm-denoise with the tiny model in `dir` and returns the images' shape and values.
fn denoise(dir: &Path, args: &[&str], out: &str) -> (Vec<usize>, Vec<f32>) {
    tool("ddpm-denoise")
        .current_dir(dir)
        .args(["--model", "m.safetensors"])
        .args(args)
        .args(["-o", out])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    let (shape, v) = read_f32(&dir.join(out));
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)), "pixels outside [0,1]");
    (shape, v)
}

#[test]
fn samples_from_noise_and_ddim_with_eta_zero_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    let ddim = ["-n", "3", "--sampler", "ddim", "--steps", "4", "--batch-size", "2"];
    let (shape, a) = denoise(dir.path(), &[&ddim[..], &["--seed", "1"]].concat(), "a.npy");
    assert_eq!(shape, [3, 1, 32, 32]);
    assert_ne!(a[..1024], a[1024..2048], "two samples are the same");
    assert_eq!(denoise(dir.path(), &[&ddim[..], &["--seed", "1"]].concat(), "b.npy").1, a);
    assert_ne!(denoise(dir.path(), &[&ddim[..], &["--seed", "2"]].concat(), "c.npy").1, a);

    // From a given x_t, DDIM with eta 0 draws nothing: any seed gives the same images;
    // ancestral sampling draws fresh noise at every step.
    write_npy_f32(
        dir.path(),
        "xt.npy",
        &[2, 1, 32, 32],
        &(0..2048).map(|i| ((i % 13) as f32 - 6.0) / 4.0).collect::<Vec<_>>(),
    );
    let from = ["xt.npy", "--from-t", "40", "--sampler", "ddim", "--steps", "5"];
    let (_, d1) = denoise(dir.path(), &[&from[..], &["--seed", "1"]].concat(), "d1.npy");
    let (_, d2) = denoise(dir.path(), &[&from[..], &["--seed", "2"]].concat(), "d2.npy");
    assert_eq!(d1, d2);
    let ancestral = ["xt.npy", "--from-t", "10", "--var", "beta-tilde", "--clip"];
    let (_, p1) = denoise(dir.path(), &[&ancestral[..], &["--seed", "1"]].concat(), "p1.npy");
    let (_, p2) = denoise(dir.path(), &[&ancestral[..], &["--seed", "2"]].concat(), "p2.npy");
    assert_ne!(p1, p2);

    // A PNG grid instead of the array.
    tool("ddpm-denoise")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "-n", "4", "--sampler", "ddim", "--steps", "2", "--png", "s.png"])
        .assert()
        .success();
    assert!(std::fs::read(dir.path().join("s.png")).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn edits_images_noised_by_ddpm_noise_through_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    let mut noiser = Command::new(bin_path("ddpm-noise"))
        .current_dir(dir.path())
        .args(["x.npy", "--t", "30"])
        .env_clear()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let denoiser = Command::new(bin_path("ddpm-denoise"))
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "--from-t", "30", "--sampler", "ddim", "--steps", "3", "-", "-o", "e.npy"])
        .env_clear()
        .stdin(noiser.stdout.take().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(noiser.wait().unwrap().success());
    let out = denoiser.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_f32(&dir.path().join("e.npy")).0, [16, 1, 32, 32]);
}

#[test]
fn refuses_bad_steps_shapes_and_models() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_ddpm(dir.path(), "m.safetensors");
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    write_npy_f32(dir.path(), "small.npy", &[2, 1, 28, 28], &[0.5; 2 * 784]);
    write_npy_f32(dir.path(), "ok.npy", &[2, 1, 32, 32], &[0.5; 2 * 1024]);
    let cases: [(&[&str], &str); 6] = [
        (&["--model", "m.safetensors", "-n", "2", "--from-t", "1000"], "[0, 999]"),
        (&["--model", "m.safetensors", "small.npy", "--from-t", "5"], "small.npy"),
        (&["--model", "m.safetensors", "ok.npy"], "--from-t"),
        (&["--model", "vae.safetensors", "-n", "2"], "vae.safetensors"),
        (&["--model", "x.npy", "-n", "2"], "x.npy"),
        (&["--model", "m.safetensors", "-n", "2", "--eta", "0.5"], "--sampler ddim"),
    ];
    for (args, culprit) in cases {
        let mut cmd = tool("ddpm-denoise");
        cmd.current_dir(dir.path()).args(args).args(["-o", "out.npy"]);
        assert_fails_naming(&mut cmd, dir.path(), culprit);
    }
}
