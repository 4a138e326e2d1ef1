//! vae-encode: images (a file, stdin or the bundled digits) to f32 [N, latent], and refusals.

use crate::common::{
    assert_fails_naming, read_f32, tool, train_tiny_vae, train_tiny_vib, write_bad_images, write_npy_u8,
};

#[test]
fn encodes_to_f32_rows_of_the_latent_size() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 3);
    tool("vae-encode")
        .current_dir(dir.path())
        .args(["--model", "vae.safetensors", "--data", "mnist", "--split", "test", "-o", "z.npy"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    let (shape, z) = read_f32(&dir.path().join("z.npy"));
    assert_eq!(shape, [1000, 3]);
    assert!(z.iter().all(|v| v.is_finite()));
    assert!(z.chunks(3).any(|a| a != &z[..3]), "every digit has the same code");
}

#[test]
fn a_file_and_stdin_give_the_same_codes() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    let run = |args: &[&str], stdin: Vec<u8>| -> Vec<u8> {
        let out = tool("vae-encode")
            .current_dir(dir.path())
            .args(["--model", "vae.safetensors"])
            .args(args)
            .write_stdin(stdin)
            .assert()
            .success();
        out.get_output().stdout.clone()
    };
    let from_file = run(&["images.npy"], Vec::new());
    let from_stdin = run(&[], std::fs::read(dir.path().join("images.npy")).unwrap());
    let from_data = run(&["--data", "images.npy"], Vec::new());
    assert!(from_file == from_stdin && from_file == from_data);
    std::fs::write(dir.path().join("z.npy"), &from_file).unwrap();
    assert_eq!(read_f32(&dir.path().join("z.npy")).0, [64, 2]);
    // --sample draws z ~ q(z|x): other values, the same for the same seed.
    let sample = run(&["images.npy", "--sample", "--seed", "4"], Vec::new());
    assert!(sample != from_file);
    assert!(sample == run(&["images.npy", "--sample", "--seed", "4"], Vec::new()));
    assert!(sample != run(&["images.npy", "--sample", "--seed", "5"], Vec::new()));
}

#[test]
fn refuses_bad_images_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    for (file, reason) in write_bad_images(dir.path()) {
        let mut cmd = tool("vae-encode");
        cmd.current_dir(dir.path()).args(["--model", "vae.safetensors", file, "-o", "z.npy"]);
        let msg = assert_fails_naming(&mut cmd, dir.path(), file);
        assert!(msg.contains(reason), "{file}: expected '{reason}' in: {msg}");
    }
    // On stdin, a short array is found out when its data runs out, after the output began.
    let mut short = genimg::io::npy::to_bytes(&[2000, 28, 28], &vec![0u8; 2000 * 784]);
    short.truncate(short.len() - 784);
    let mut cmd = tool("vae-encode");
    cmd.current_dir(dir.path()).args(["--model", "vae.safetensors", "-o", "z.npy"]).write_stdin(short);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "<stdin>").contains("truncated"));
}

#[test]
fn refuses_a_model_of_another_kind_or_no_model() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vib(dir.path(), "vib.safetensors");
    let mut cmd = tool("vae-encode");
    cmd.current_dir(dir.path()).args(["--model", "vib.safetensors", "images.npy", "-o", "z.npy"]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "vib.safetensors");
    assert!(msg.contains("vib-mlp") && msg.contains("expected vae-mlp"), "{msg}");
    let mut cmd = tool("vae-encode");
    cmd.current_dir(dir.path()).args(["--model", "images.npy", "images.npy", "-o", "z.npy"]);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "images.npy").contains("not a checkpoint"));
    write_npy_u8(dir.path(), "one.npy", &[1, 28, 28], &[0; 784]);
    let mut cmd = tool("vae-encode");
    cmd.current_dir(dir.path()).args(["--model", "labels.npy", "one.npy", "-o", "z.npy"]);
    assert_fails_naming(&mut cmd, dir.path(), "labels.npy");
}
