//! Input a hostile user might give, refused in one line naming the file, never a panic.

use crate::common::{assert_fails_naming, tool, train_tiny_vae};

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
