//! The tools chained through real pipes, as a shell runs them.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::common::{bin_path, tool, train_tiny_vae};

/// `vae-encode --data mnist --split test | vae-decode` writes what the two steps write
/// through a file.
#[test]
fn vae_encode_into_vae_decode_equals_the_steps_through_files() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 2);
    let spawn = |name: &str| {
        let mut cmd = Command::new(bin_path(name));
        cmd.current_dir(dir.path()).env_clear().env("RAYON_NUM_THREADS", "2").stderr(Stdio::piped());
        cmd
    };
    let mut encode = spawn("vae-encode")
        .args(["--model", "m.safetensors", "--data", "mnist", "--split", "test"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let decode = spawn("vae-decode")
        .args(["--model", "m.safetensors"])
        .stdin(encode.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let decoded = decode.wait_with_output().unwrap();
    let encoded = encode.wait_with_output().unwrap();
    for (name, out) in [("vae-encode", &encoded), ("vae-decode", &decoded)] {
        assert!(out.status.success() && out.stderr.is_empty(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    tool("vae-encode")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "--data", "mnist", "--split", "test", "-o", "z.npy"])
        .assert()
        .success();
    tool("vae-decode")
        .current_dir(dir.path())
        .args(["--model", "m.safetensors", "z.npy", "-o", "x.npy"])
        .assert()
        .success();
    let through_files = std::fs::read(dir.path().join("x.npy")).unwrap();
    assert_eq!(through_files.len(), 128 + 1000 * 784 * 4, "a header and 1,000 images");
    assert!(decoded.stdout == through_files, "the pipe's output differs from the files'");
}

/// `vae-decode --prior 20000 | head -c 1000`: once the reader is gone, vae-decode ends
/// quietly with status 0 (62 MB cannot fit in a pipe, so it must hit the closed end).
#[test]
fn vae_decode_ends_quietly_when_the_pipe_downstream_closes() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 2);
    let mut decode = Command::new(bin_path("vae-decode"))
        .current_dir(dir.path())
        .env_clear()
        .args(["--model", "m.safetensors", "--prior", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 1000];
    decode.stdout.take().unwrap().read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"\x93NUMPY"));
    // The read end closes here, when the pipe's handle is dropped.
    let out = decode.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
