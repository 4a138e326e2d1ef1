//! Class-conditional diffusion: ddpm-train on labelled images adds a class embedding (and a
//! null class); ddpm-denoise samples classes in equal blocks, one class, or given labels,
//! with classifier-free guidance, and writes the classes it drew for.

use std::path::Path;

use crate::common::{read_f32, read_npy, tool, write_tiny_data, TINY_DDPM};

/// A tiny U-Net of 50 steps trained one epoch on the 64 labelled noise images.
fn train(dir: &Path, extra: &[&str]) {
    tool("ddpm-train")
        .current_dir(dir)
        .args(TINY_DDPM)
        .args(["--timesteps", "50", "--epochs", "1", "--batch-size", "32", "--data", "images.npy"])
        .args(extra)
        .assert()
        .success();
}

fn sample(dir: &Path, args: &[&str]) -> Vec<f32> {
    tool("ddpm-denoise")
        .current_dir(dir)
        .args(["--model", "cond.safetensors", "--sampler", "ddim", "--steps", "4", "--seed", "1", "-o", "s.npy"])
        .args(args)
        .assert()
        .success();
    read_f32(&dir.join("s.npy")).1
}

#[test]
fn labelled_data_trains_a_class_conditional_model_that_guidance_steers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_data(d);
    train(d, &["--labels", "labels.npy", "-o", "cond.safetensors"]);
    let bytes = std::fs::read(d.join("cond.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // Ten classes (labels 0..9) and the null class, each a row of the 4 x 8 time embedding.
    assert_eq!(st.tensor("class_embedding.weight").unwrap().shape(), [11, 32]);

    // Equal blocks by default: 20 samples of 10 classes, two each, in order.
    let plain = sample(d, &["-n", "20", "--labels-out", "y.npy"]);
    let y = read_npy(&d.join("y.npy"));
    assert_eq!(y.shape, vec![20]);
    let genimg::io::npy::Elements::I64(y) = y.data else { panic!("i64 labels") };
    assert_eq!(y, (0..20).map(|i| i / 2).collect::<Vec<i64>>());
    let guided = sample(d, &["-n", "20", "--guidance", "3"]);
    assert_eq!(guided.len(), plain.len());
    assert_ne!(guided, plain, "guidance changes the samples");
    assert!(guided.iter().all(|v| (0.0..=1.0).contains(v)));
    // The same with guidance in batches of 3: a sample does not depend on its batch.
    assert_eq!(sample(d, &["-n", "20", "--guidance", "3", "--batch-size", "3"]), guided);
    // --class K is --labels of K for all.
    crate::common::write_npy_u8(d, "threes.npy", &[6], &[3; 6]);
    let one = sample(d, &["-n", "6", "--class", "3", "--guidance", "1"]);
    assert_eq!(sample(d, &["--labels", "threes.npy", "--guidance", "1"]), one);
    // A class the model does not know is refused.
    tool("ddpm-denoise")
        .current_dir(d)
        .args(["--model", "cond.safetensors", "-n", "2", "--class", "10", "-o", "bad.npy"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("class 10"));
    assert!(!d.join("bad.npy").exists());
}

#[test]
fn an_unconditional_model_refuses_classes_and_guidance() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_data(d);
    train(d, &["--unconditional", "-o", "uncond.safetensors"]);
    let bytes = std::fs::read(d.join("uncond.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("class_embedding.weight").is_err());
    for (flag, value) in [("--guidance", "2"), ("--class", "1"), ("--labels-out", "y.npy")] {
        tool("ddpm-denoise")
            .current_dir(d)
            .args(["--model", "uncond.safetensors", "-n", "2", flag, value, "-o", "s.npy"])
            .assert()
            .code(1);
        assert!(!d.join("s.npy").exists() && !d.join("y.npy").exists(), "{flag}");
    }
    tool("ddpm-train")
        .current_dir(d)
        .args(["--data", "images.npy", "--labels", "labels.npy", "--unconditional", "-o", "m.safetensors"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--unconditional"));
}
