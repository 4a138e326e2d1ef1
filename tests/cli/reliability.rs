//! Hostile uses of outputs and of the process: a device, a FIFO or an input as the output, a
//! closed stdout, `ulimit -f`, signals, and outputs that cannot be written, which fail before
//! any work.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_fails_naming, bin_path, dir_entries, tool, train_tiny_vae, write_tiny_data};

/// A directory with the tiny data and a tiny vae-mlp (`m.safetensors`, latent 4).
fn with_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "m.safetensors", 4);
    dir
}

/// Runs `script` with `sh -c` in `dir`; `$BIN` is the directory of the binaries.
fn sh(dir: &Path, script: &str) -> Output {
    let bin_dir = bin_path("vae-decode").parent().unwrap().to_path_buf();
    Command::new("sh").arg("-c").arg(script).env("BIN", bin_dir).current_dir(dir).output().unwrap()
}

/// The one line a failed run printed, after checking it failed with status 1 and no panic.
fn one_line_failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// vae-encode of `images.npy` with `m.safetensors` (see [`with_model`]) in `dir`, to `out`.
fn encode_to(dir: &Path, out: &str) -> assert_cmd::Command {
    let mut cmd = tool("vae-encode");
    cmd.current_dir(dir).args(["images.npy", "--model", "m.safetensors", "-o", out]);
    cmd
}

#[test]
fn a_device_output_is_written_in_place_and_stays_a_device() {
    let dir = with_model();
    let d = dir.path();
    let encode = |out: &str| encode_to(d, out);
    encode("/dev/null").assert().success();
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null was replaced");
    let line = assert_fails_naming(
        tool("vae-train").current_dir(d).args(["--data", "images.npy", "--epochs", "1", "-o", "/dev/null"]),
        d,
        "/dev/null",
    );
    assert!(line.contains("is not a regular file"), "{line}");
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

#[test]
fn a_fifo_output_is_written_in_place() {
    let dir = with_model();
    let d = dir.path();
    let encode = |out: &str| encode_to(d, out);
    encode("codes.npy").assert().success();
    assert!(Command::new("mkfifo").arg(d.join("fifo")).status().unwrap().success());
    let fifo = d.join("fifo");
    let reader = std::thread::spawn(move || std::fs::read(fifo).unwrap());
    encode("fifo").assert().success();
    assert!(reader.join().unwrap() == std::fs::read(d.join("codes.npy")).unwrap(), "the FIFO got other bytes");
    assert!(std::fs::metadata(d.join("fifo")).unwrap().file_type().is_fifo(), "the FIFO was replaced");
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = with_model();
    let d = dir.path();
    std::os::unix::fs::symlink("images.npy", d.join("link.npy")).unwrap();
    let before: Vec<Vec<u8>> =
        ["images.npy", "labels.npy", "m.safetensors"].iter().map(|f| std::fs::read(d.join(f)).unwrap()).collect();
    let cases: [(&str, &[&str], &str); 6] = [
        ("vae-encode", &["images.npy", "--model", "m.safetensors", "-o", "images.npy"], "(INPUT) and the output (-o)"),
        ("vae-encode", &["link.npy", "--model", "m.safetensors", "-o", "images.npy"], "(INPUT) and the output (-o)"),
        ("vae-encode", &["images.npy", "--model", "m.safetensors", "-o", "m.safetensors"], "(--model)"),
        ("vae-train", &["--data", "images.npy", "--labels", "labels.npy", "-o", "labels.npy"], "(--labels)"),
        ("vae-train", &["--data", "images.npy", "-o", "images.npy"], "(--data)"),
        ("vae-train", &["--data", "images.npy", "--metrics", "link.npy", "-o", "x.safetensors"], "(--metrics)"),
    ];
    for (name, args, culprit) in cases {
        let line = assert_fails_naming(tool(name).current_dir(d).args(args), d, culprit);
        assert!(line.contains("is both an input") && line.contains("choose another output"), "{line}");
    }
    let after: Vec<Vec<u8>> =
        ["images.npy", "labels.npy", "m.safetensors"].iter().map(|f| std::fs::read(d.join(f)).unwrap()).collect();
    assert!(before == after, "an input was changed");
}

/// `tool - -o x < x` and `tool x >> x` would destroy (or grow while reading) the input too.
#[test]
fn a_redirection_onto_an_input_is_refused() {
    let dir = with_model();
    let d = dir.path();
    let images = std::fs::read(d.join("images.npy")).unwrap();
    let read_back = sh(d, r#"exec "$BIN/vae-encode" --model m.safetensors - -o images.npy < images.npy"#);
    let line = one_line_failure(&read_back);
    assert!(line.contains("images.npy: is both an input (INPUT) and the output (-o)"), "{line}");
    let appended = sh(d, r#"exec "$BIN/vae-encode" --model m.safetensors images.npy >> images.npy"#);
    let line = one_line_failure(&appended);
    assert!(line.contains("<stdout>: is both an input (INPUT) and the output (-o)"), "{line}");
    assert!(std::fs::read(d.join("images.npy")).unwrap() == images, "the input was changed");
}

#[test]
fn a_closed_stdout_is_an_error_and_a_closed_pipe_is_not() {
    let dir = with_model();
    let d = dir.path();
    let closed = sh(d, r#"exec "$BIN/vae-encode" images.npy --model m.safetensors >&-"#);
    let line = one_line_failure(&closed);
    assert!(line.starts_with("vae-encode: <stdout>: closed (EBADF)"), "{line}");
    let devnull = sh(d, r#"exec "$BIN/vae-encode" images.npy --model m.safetensors >/dev/null"#);
    assert!(devnull.status.success(), "{}", String::from_utf8_lossy(&devnull.stderr));
    let piped = sh(d, r#""$BIN/vae-decode" --model m.safetensors --prior 20000 | head -c 10 >/dev/null"#);
    assert!(piped.status.success() && piped.stderr.is_empty(), "{}", String::from_utf8_lossy(&piped.stderr));
}

#[test]
fn a_file_size_limit_is_an_error_that_leaves_no_file() {
    let dir = with_model();
    let d = dir.path();
    let before = dir_entries(d);
    let out = sh(d, r#"ulimit -f 100; exec "$BIN/vae-decode" --model m.safetensors --prior 100000 -o out.npy"#);
    let line = one_line_failure(&out);
    assert!(line.starts_with("vae-decode: out.npy: File too large"), "{line}");
    assert_eq!(dir_entries(d), before, "a file was left behind");
}

#[test]
fn a_signal_during_streaming_removes_the_temporary_file() {
    let dir = with_model();
    let d = dir.path();
    let before = dir_entries(d);
    for signal in ["-TERM", "-INT"] {
        let child = Command::new(bin_path("vae-decode"))
            .args(["--model", "m.safetensors", "--prior", "1000000", "-o", "out.npy"])
            .current_dir(d)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while dir_entries(d).len() == before.len() {
            assert!(start.elapsed() < Duration::from_secs(30), "no temporary file appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dir_entries(d).iter().any(|f| f.starts_with(".out.npy.") && f.ends_with(".tmp")));
        Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{signal}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(dir_entries(d), before, "{signal} left a file behind");
    }
}

/// Outputs that cannot be written fail at once, before the data is read (the bundled digits
/// take longer than this to load and a training epoch far longer).
#[test]
fn an_output_that_cannot_be_written_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_data(d);
    std::fs::write(d.join("file.txt"), "not a directory").unwrap();
    let train = ["--data", "mnist", "--epochs", "1"];
    let cases: [(&[&str], &str); 4] = [
        (&["-o", "/nonexistent/m.safetensors"], "/nonexistent/m.safetensors"),
        (&["-o", "file.txt/m.safetensors"], "file.txt/m.safetensors"),
        (&["-o", "m.safetensors", "--metrics", "missing/m.jsonl"], "missing/m.jsonl"),
        (&["-o", "."], "."),
    ];
    for (args, culprit) in cases {
        let start = Instant::now();
        assert_fails_naming(tool("vae-train").current_dir(d).args(train).args(args), d, culprit);
        assert!(start.elapsed() < Duration::from_millis(500), "{culprit}: took {:?}", start.elapsed());
    }
    let line = assert_fails_naming(
        tool("img-pack").current_dir(d).args(["mnist", "-o", "x.npy", "--labels-out", "file.txt/y.npy"]),
        d,
        "file.txt/y.npy",
    );
    assert!(line.contains("Not a directory"), "{line}");
}

#[test]
fn resuming_a_finished_run_says_so_and_writes_nothing() {
    let dir = with_model();
    let d = dir.path();
    let model = std::fs::read(d.join("m.safetensors")).unwrap();
    let out = tool("vae-train")
        .current_dir(d)
        .args(["--hidden", "16", "--latent", "4", "--epochs", "1", "--data", "images.npy", "--batch-size", "16"])
        .args(["--metrics", "train.jsonl", "-o", "m.safetensors", "--resume"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "vae-train: m.safetensors: already trained to epoch 1; nothing written\n");
    assert!(std::fs::read(d.join("m.safetensors")).unwrap() == model, "the model was rewritten");
}
