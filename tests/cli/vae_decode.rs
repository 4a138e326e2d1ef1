//! vae-decode: latent codes, prior samples or the 2-D manifold to f32 images in [0,1];
//! checkpoints without config metadata (plain PyTorch state dicts) with --preset; refusals.

use std::path::Path;

use crate::common::{
    assert_fails_naming, dir_entries, read_f32, strip_metadata, tool, train_tiny_vae, train_tiny_vib, write_npy_f32,
    write_npy_u8, write_tiny_data,
};

/// Decodes with `args` in `dir` into `out` and returns the images' shape and values.
fn decode(dir: &Path, args: &[&str], out: &str) -> (Vec<usize>, Vec<f32>) {
    tool("vae-decode").current_dir(dir).args(args).args(["-o", out]).assert().success().stdout("").stderr("");
    let (shape, v) = read_f32(&dir.join(out));
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)), "pixels outside [0,1]");
    (shape, v)
}

#[test]
fn decodes_codes_to_images_in_the_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    tool("vae-encode")
        .current_dir(dir.path())
        .args(["--model", "vae.safetensors", "images.npy", "-o", "z.npy"])
        .assert()
        .success();
    let (shape, x) = decode(dir.path(), &["--model", "vae.safetensors", "z.npy"], "x.npy");
    assert_eq!(shape, [64, 1, 28, 28]);
    assert!(x.chunks(784).any(|img| img != &x[..784]), "every code decodes to the same image");
    // f64 codes are taken too.
    let (_, z) = read_f32(&dir.path().join("z.npy"));
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    std::fs::write(dir.path().join("z64.npy"), genimg::io::npy::to_bytes(&[64, 2], &z64)).unwrap();
    assert_eq!(decode(dir.path(), &["--model", "vae.safetensors", "z64.npy"], "x64.npy").1, x);
}

#[test]
fn samples_the_prior() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    let (shape, a) = decode(dir.path(), &["--model", "vae.safetensors", "--prior", "7", "--seed", "1"], "a.npy");
    assert_eq!(shape, [7, 1, 28, 28]);
    assert_eq!(decode(dir.path(), &["--model", "vae.safetensors", "--prior", "7", "--seed", "1"], "b.npy").1, a);
    assert_ne!(decode(dir.path(), &["--model", "vae.safetensors", "--prior", "7", "--seed", "2"], "c.npy").1, a);
}

#[test]
fn draws_the_manifold_of_a_2d_latent_space_only() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae2.safetensors", 2);
    let (shape, x) = decode(dir.path(), &["--model", "vae2.safetensors", "--manifold", "3"], "grid.npy");
    assert_eq!(shape, [9, 1, 28, 28]);
    assert_ne!(x[..784], x[8 * 784..], "opposite corners of the grid decode alike");
    train_tiny_vae(dir.path(), "vae4.safetensors", 4);
    let before = dir_entries(dir.path());
    let out = tool("vae-decode")
        .current_dir(dir.path())
        .args(["--model", "vae4.safetensors", "--manifold", "3", "-o", "grid4.npy"])
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--manifold needs a 2-D latent space") && stderr.contains("4 dimensions"), "{stderr}");
    assert_eq!(dir_entries(dir.path()), before);
}

/// A file without config metadata loads with --preset when its tensors fit the preset's
/// network, and gives the same images as the original.
#[test]
fn a_plain_state_dict_loads_with_the_matching_preset() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    // The vae-mlp preset's own sizes (784-400-20), trained for a few steps.
    tool("vae-train")
        .current_dir(dir.path())
        .args([
            "--data",
            "images.npy",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--metrics",
            "m.jsonl",
            "-o",
            "full.safetensors",
        ])
        .assert()
        .success();
    strip_metadata(&dir.path().join("full.safetensors"), &dir.path().join("plain.safetensors"));
    let with_config = decode(dir.path(), &["--model", "full.safetensors", "--prior", "5"], "a.npy");
    let plain = decode(dir.path(), &["--model", "plain.safetensors", "--preset", "vae-mlp", "--prior", "5"], "b.npy");
    assert_eq!(with_config, plain);
}

#[test]
fn a_plain_state_dict_needs_a_preset_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "tiny.safetensors", 2);
    strip_metadata(&dir.path().join("tiny.safetensors"), &dir.path().join("plain.safetensors"));
    let mut cmd = tool("vae-decode");
    cmd.current_dir(dir.path()).args(["--model", "plain.safetensors", "--prior", "3", "-o", "x.npy"]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "plain.safetensors");
    assert!(msg.contains("--preset"), "{msg}");
    // The preset's network is 784-400-20; this one is 784-16-2.
    let mut cmd = tool("vae-decode");
    cmd.current_dir(dir.path()).args([
        "--model",
        "plain.safetensors",
        "--preset",
        "vae-mlp",
        "--prior",
        "3",
        "-o",
        "x.npy",
    ]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "plain.safetensors");
    for name in ["fc1.weight", "fc1.bias", "fc21.weight", "fc22.weight", "fc3.weight", "fc4.weight"] {
        assert!(msg.contains(&format!("'{name}' has shape")), "{name} not listed: {msg}");
    }
    assert!(!msg.contains("'fc4.bias'"), "fc4.bias [784] fits: {msg}");
}

#[test]
fn refuses_bad_codes_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    write_npy_f32(dir.path(), "z3.npy", &[4, 3], &[0.0; 12]);
    write_npy_f32(dir.path(), "z1d.npy", &[4], &[0.0; 4]);
    write_npy_u8(dir.path(), "zu8.npy", &[4, 2], &[0; 8]);
    std::fs::write(dir.path().join("empty.npy"), b"").unwrap();
    for (file, reason) in [("z3.npy", "[N, 2]"), ("z1d.npy", "[N, 2]"), ("zu8.npy", "dtype u8"), ("empty.npy", "empty")]
    {
        let mut cmd = tool("vae-decode");
        cmd.current_dir(dir.path()).args(["--model", "vae.safetensors", file, "-o", "x.npy"]);
        let msg = assert_fails_naming(&mut cmd, dir.path(), file);
        assert!(msg.contains(reason), "{file}: expected '{reason}' in: {msg}");
    }
}

#[test]
fn refuses_a_model_of_another_kind_or_no_model() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vib(dir.path(), "vib.safetensors");
    let mut cmd = tool("vae-decode");
    cmd.current_dir(dir.path()).args(["--model", "vib.safetensors", "--prior", "3", "-o", "x.npy"]);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "vib.safetensors").contains("expected vae-mlp"));
    let mut cmd = tool("vae-decode");
    cmd.current_dir(dir.path()).args(["--model", "images.npy", "--prior", "3", "-o", "x.npy"]);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "images.npy").contains("not a checkpoint"));
    std::fs::write(dir.path().join("text.safetensors"), "not a model\n").unwrap();
    let mut cmd = tool("vae-decode");
    cmd.current_dir(dir.path()).args(["--model", "text.safetensors", "--prior", "3", "-o", "x.npy"]);
    assert_fails_naming(&mut cmd, dir.path(), "text.safetensors");
}
