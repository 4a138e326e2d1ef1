//! Ctrl-C during training saves the run, and `--resume` finishes it exactly as an
//! uninterrupted run would have.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tool;

#[test]
fn interrupt_saves_and_resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("vae-train");
    let args = |out: &str| -> Vec<String> {
        ["--preset", "vae-mlp", "--data", "mnist", "--epochs", "3", "--seed", "5", "-o", out]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };

    // The reference: three epochs in one go.
    tool("vae-train").args(args("full.safetensors")).current_dir(dir.path()).assert().success();

    // The same run, interrupted partway through the second epoch.
    let metrics = dir.path().join("m.jsonl");
    let child = Command::new(&bin)
        .args(args("cut.safetensors"))
        .arg("--metrics")
        .arg(&metrics)
        .env_clear()
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map(|s| s.lines().count()).unwrap_or(0) < 1 {
        assert!(start.elapsed() < Duration::from_secs(60), "no epoch finished in a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("interrupted at step") && stderr.contains("--resume"), "stderr: {stderr}");
    let step: u64 = stderr.split("interrupted at step ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    let per_epoch = 9000u64.div_ceil(128);
    assert!(step > per_epoch && step < 3 * per_epoch, "interrupted at step {step}, expected during epoch 2 or 3");
    assert!(dir.path().join("cut.state.safetensors").exists());

    tool("vae-train")
        .args(args("cut.safetensors"))
        .arg("--resume")
        .arg("--metrics")
        .arg(&metrics)
        .current_dir(dir.path())
        .assert()
        .success();
    let full = std::fs::read(dir.path().join("full.safetensors")).unwrap();
    let resumed = std::fs::read(dir.path().join("cut.safetensors")).unwrap();
    assert!(full == resumed, "resumed model differs from the uninterrupted one");
}
