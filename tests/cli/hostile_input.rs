//! Input a hostile user might give, refused in one line naming the file, never a panic.

use crate::common::{assert_fails_naming, tool, train_tiny_vae, write_tiny_data};

/// An .npy holding a 0-d array (a scalar) where images are expected.
#[test]
fn a_scalar_array_is_not_images() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    std::fs::write(dir.path().join("x.npy"), genimg::io::npy::to_bytes(&[], &[7u8])).unwrap();
    for (name, args) in [
        ("vae-encode", &["--model", "vae.safetensors", "x.npy", "-o", "z.npy"][..]),
        ("ddpm-noise", &["x.npy", "--t", "5", "-o", "out.npy"][..]),
    ] {
        let mut cmd = tool(name);
        cmd.current_dir(dir.path()).args(args);
        let line = assert_fails_naming(&mut cmd, dir.path(), "x.npy");
        assert!(line.contains("holds a scalar, expected an image array [N,H,W] or [N,C,H,W]"), "{name}: {line}");
    }
}

/// A run killed after an epoch's model file but before its state (the order the two are
/// written in) leaves the state an epoch behind: `--resume` repeats that epoch and ends with
/// the model file of an uninterrupted run.
#[test]
fn a_run_killed_between_model_and_state_is_repaired_by_resume() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    let train = |out: &str, epochs: &str, resume: bool| {
        let mut cmd = tool("vae-train");
        cmd.current_dir(dir.path())
            .args(["--hidden", "16", "--latent", "2", "--data", "images.npy", "--batch-size", "16"])
            .args(["--epochs", epochs, "--metrics", "m.jsonl", "-o", out]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.assert().success();
    };
    train("whole.safetensors", "2", false);
    train("run.safetensors", "1", false);
    let state = dir.path().join("run.state.safetensors");
    let epoch_one = std::fs::read(&state).unwrap();
    train("run.safetensors", "2", true);
    std::fs::write(&state, epoch_one).unwrap();
    train("run.safetensors", "2", true);
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert_eq!(read("run.safetensors"), read("whole.safetensors"));
}
