//! Helpers shared by the command tests.

use std::path::Path;

use assert_cmd::Command;

/// The named binary of this package, with a clean environment.
pub fn tool(name: &str) -> Command {
    let mut cmd = Command::cargo_bin(name).unwrap_or_else(|e| panic!("binary {name}: {e}"));
    cmd.env_clear().env("RAYON_NUM_THREADS", "2");
    cmd
}

/// Writes an `.npy` of `values` with `shape` (f32) into `dir/name`; returns the path.
pub fn write_npy_f32(dir: &Path, name: &str, shape: &[usize], values: &[f32]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, genimg::io::npy::to_bytes(shape, values)).unwrap();
    path
}

/// Writes an `.npy` of u8 `values` with `shape` into `dir/name`; returns the path.
pub fn write_npy_u8(dir: &Path, name: &str, shape: &[usize], values: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, genimg::io::npy::to_bytes(shape, values)).unwrap();
    path
}

/// A copy of a `.safetensors` file without its metadata, as PyTorch's `save_file` of a
/// state dict would write it.
pub fn strip_metadata(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    std::fs::write(to, safetensors::serialize(st.tensors(), None).unwrap()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&std::fs::read(to).unwrap()).unwrap();
    assert!(meta.metadata().is_none());
}

/// Reads an `.npy` file fully.
pub fn read_npy(path: &Path) -> genimg::io::npy::Array {
    let bytes = std::fs::read(path).unwrap();
    genimg::io::npy::NpyReader::new(&bytes[..], Some(bytes.len() as u64), "test").unwrap().read_all().unwrap()
}

/// The entries of a directory, to check that a failed run left nothing behind.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The path of the named binary of this package, for spawning it by hand (real pipes).
pub fn bin_path(name: &str) -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

/// `n` images u8 [n, 28, 28] of seeded noise.
pub fn noise_pixels(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n * 28 * 28)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// Writes 64 noise images, u8 [64, 28, 28], as `dir/images.npy` and labels u8 [64] as
/// `dir/labels.npy`: data that trains a tiny network in milliseconds.
pub fn write_tiny_data(dir: &Path) {
    write_npy_u8(dir, "images.npy", &[64, 28, 28], &noise_pixels(64, 1));
    write_npy_u8(dir, "labels.npy", &[64], &(0..64).map(|i| (i % 10) as u8).collect::<Vec<_>>());
}

/// Trains a tiny vae-mlp (`--hidden 16`, latent `latent`) for one epoch on the data of
/// [`write_tiny_data`] (written when missing) into `dir/model`.
pub fn train_tiny_vae(dir: &Path, model: &str, latent: usize) {
    if !dir.join("images.npy").exists() {
        write_tiny_data(dir);
    }
    let latent = latent.to_string();
    tool("vae-train")
        .current_dir(dir)
        .args(["--hidden", "16", "--latent", &latent, "--epochs", "1", "--data", "images.npy", "--batch-size", "16"])
        .args(["--metrics", "train.jsonl", "-o", model])
        .assert()
        .success();
}

/// Like [`train_tiny_vae`], a tiny vib-mlp (latent 4) trained on the labelled noise.
pub fn train_tiny_vib(dir: &Path, model: &str) {
    if !dir.join("images.npy").exists() {
        write_tiny_data(dir);
    }
    tool("vae-train")
        .current_dir(dir)
        .args(["--preset", "vib-mlp", "--hidden", "16", "--latent", "4", "--epochs", "1"])
        .args(["--data", "images.npy", "--labels", "labels.npy", "--batch-size", "16"])
        .args(["--metrics", "train.jsonl", "-o", model])
        .assert()
        .success();
}

/// `.npy` bytes (format 1.0) with a hand-written header dict, padded as numpy pads it.
pub fn npy_with_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Writes image files a tool must refuse into `dir`; returns each file's name with a word
/// its error message must contain.
pub fn write_bad_images(dir: &Path) -> Vec<(&'static str, &'static str)> {
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("empty.npy", b"");
    write("text.npy", b"0 0 0 255\n255 0 0 0\n");
    let mut truncated = genimg::io::npy::to_bytes(&[4, 28, 28], &noise_pixels(4, 2));
    truncated.truncate(truncated.len() - 100);
    write("truncated.npy", &truncated);
    write("i64.npy", &genimg::io::npy::to_bytes(&[2, 28, 28], &[7i64; 2 * 784]));
    let fortran = "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 28, 28), }";
    write("fortran.npy", &npy_with_header(fortran, &noise_pixels(2, 3)));
    let huge = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000, 28, 28), }";
    write("huge.npy", &npy_with_header(huge, &noise_pixels(2, 4)));
    let overflow = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999), }";
    write("overflow.npy", &npy_with_header(overflow, &[]));
    write_npy_u8(dir, "big.npy", &[2, 64, 64], &[9; 2 * 64 * 64]);
    write_npy_u8(dir, "rgb.npy", &[2, 3, 28, 28], &[9; 2 * 3 * 784]);
    vec![
        ("empty.npy", "empty"),
        ("text.npy", "not a tensor file"),
        ("truncated.npy", "truncated"),
        ("i64.npy", "dtype i64"),
        ("fortran.npy", "Fortran"),
        ("huge.npy", "truncated"),
        ("overflow.npy", "absurd"),
        ("big.npy", "64x64"),
        ("rgb.npy", "3 channel"),
    ]
}

/// Runs `cmd`, which must fail because of the file `culprit`: exit status 1, nothing on
/// stdout, exactly one line on stderr that names the file, no panic, and no file left in
/// `dir` (outputs appear only when complete). Returns the line.
pub fn assert_fails_naming(cmd: &mut Command, dir: &Path, culprit: &str) -> String {
    let before = dir_entries(dir);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit status 1 for {culprit}; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "expected one line on stderr for {culprit}: {stderr}");
    assert!(stderr.contains(culprit), "the message does not name {culprit}: {stderr}");
    assert!(out.stdout.is_empty(), "stdout is not empty for {culprit}");
    assert_eq!(dir_entries(dir), before, "a failed run on {culprit} left files behind");
    stderr
}

/// Runs vae-eval in `dir` and parses its stdout, which must be exactly one JSON object.
pub fn eval_report(dir: &Path, args: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    report_of("vae-eval", dir, args)
}

/// Runs tool `name` in `dir` and parses its stdout, which must be exactly one JSON object.
pub fn report_of(name: &str, dir: &Path, args: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let out = tool(name).current_dir(dir).args(args).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    match serde_json::from_str(&stdout) {
        Ok(serde_json::Value::Object(m)) => m,
        other => panic!("not one JSON object: {stdout} ({other:?})"),
    }
}

/// The number `key` of a report, which must be there and finite.
pub fn number(report: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    let v = report.get(key).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no {key} in {report:?}"));
    assert!(v.is_finite(), "{key} = {v}");
    v
}

/// Parses JSON lines (skipping others) into objects.
pub fn json_lines(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not a JSON object: {l} ({other:?})"),
        })
        .collect()
}

/// The f32 values of an `.npy` file, with its shape.
pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    match read_npy(path) {
        genimg::io::npy::Array { shape, data: genimg::io::npy::Elements::F32(v) } => (shape, v),
        other => panic!("{}: expected f32, got {:?}", path.display(), other.data.dtype()),
    }
}

/// Writes 16 noise images with labels and trains a vqvae2-mnist of `levels` levels on them
/// for one epoch into `dir/model`.
pub fn train_vq(dir: &Path, model: &str, levels: u32) {
    if !dir.join("x.npy").exists() {
        write_npy_u8(dir, "x.npy", &[16, 28, 28], &noise_pixels(16, 5));
        write_npy_u8(dir, "y.npy", &[16], &(0..16).map(|i| (i % 10) as u8).collect::<Vec<_>>());
    }
    tool("vae-train")
        .current_dir(dir)
        .args(["--preset", "vqvae2-mnist", "--levels", &levels.to_string(), "--data", "x.npy"])
        .args(["--epochs", "1", "--batch-size", "8", "--metrics", "train.jsonl", "-o", model])
        .assert()
        .success();
}

/// The flags of a tiny ddpm-unet-mnist (8 base channels, one ResBlock per level, attention
/// still at 8x8) that trains in about a second.
pub const TINY_DDPM: [&str; 6] = ["--base-channels", "8", "--channel-mult", "1,2,2", "--res-blocks", "1"];

/// Trains a tiny ddpm-unet-mnist for one epoch on 16 noise images (`dir/x.npy`, written when
/// missing) into `dir/model`.
pub fn train_tiny_ddpm(dir: &Path, model: &str) {
    if !dir.join("x.npy").exists() {
        write_npy_u8(dir, "x.npy", &[16, 28, 28], &noise_pixels(16, 1));
    }
    tool("ddpm-train")
        .current_dir(dir)
        .args(TINY_DDPM)
        .args(["--epochs", "1", "--data", "x.npy", "--batch-size", "8", "--metrics", "train.jsonl", "-o", model])
        .assert()
        .success();
}

/// Like [`train_tiny_vib`], a clf-conv (the preset) trained for one epoch on the labelled
/// noise.
pub fn train_tiny_clf(dir: &Path, model: &str) {
    if !dir.join("images.npy").exists() {
        write_tiny_data(dir);
    }
    tool("vae-train")
        .current_dir(dir)
        .args(["--preset", "clf-conv", "--epochs", "1", "--data", "images.npy", "--labels", "labels.npy"])
        .args(["--batch-size", "16", "--metrics", "train.jsonl", "-o", model])
        .assert()
        .success();
}

/// Runs `name args` in `dir`, which must fail with exit status 1 and one line on stderr that
/// contains each of `words`; returns the line.
pub fn fails_with_one_line(dir: &Path, name: &str, args: &[&str], words: &[&str]) -> String {
    let out = tool(name).current_dir(dir).args(args).assert().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{name} {args:?}: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "{name} {args:?}: no '{w}' in {stderr}");
    }
    assert!(out.stdout.is_empty(), "{name} {args:?} wrote to stdout");
    stderr
}
