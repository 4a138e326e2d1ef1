//! vae-eval: one JSON object on stdout for a VAE (ELBO and importance-weighted log p(x)) or a
//! VIB (error and information terms), and refusals of bad models and data.

use serde_json::Value;

use crate::common::{assert_fails_naming, eval_report, number, tool, train_tiny_vae, train_tiny_vib, write_bad_images};

/// With k = 1 the importance-weighted estimate is a one-sample ELBO, so over 1,000 test
/// digits it lands within a few nats of the analytic-KL ELBO; the ELBO itself does not
/// depend on k (it is drawn first, from the same seed).
#[test]
fn vae_report_has_the_elbo_and_log_px() {
    let dir = tempfile::tempdir().unwrap();
    tool("vae-train")
        .current_dir(dir.path())
        .args(["--hidden", "16", "--latent", "2", "--epochs", "1", "--metrics", "m.jsonl", "-o", "vae.safetensors"])
        .assert()
        .success();
    let k1 = eval_report(dir.path(), &["--model", "vae.safetensors", "--data", "mnist", "--split", "test", "-k", "1"]);
    let k10 = eval_report(dir.path(), &["--model", "vae.safetensors", "-k", "10"]);
    for r in [&k1, &k10] {
        assert_eq!(r["model"], "vae-mlp");
        assert_eq!(r["data"], "mnist:test");
        assert_eq!(r["images"], 1000);
        for key in ["recon_nll", "kl", "recon_mse"] {
            number(r, key);
        }
    }
    assert_eq!((k1["k"].as_u64(), k10["k"].as_u64()), (Some(1), Some(10)));
    let elbo = number(&k1, "elbo");
    assert!((-600.0..0.0).contains(&elbo), "{elbo}");
    assert_eq!(number(&k10, "elbo"), elbo);
    assert!((number(&k1, "elbo") - (-number(&k1, "recon_nll") - number(&k1, "kl"))).abs() < 1e-6);
    let log_px = number(&k1, "log_px");
    assert!((log_px - elbo).abs() < 3.0, "k=1 log_px {log_px} vs elbo {elbo}");
    number(&k10, "log_px");
    // The epoch's held-out ELBO is the same evaluation.
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(line["test_elbo"].as_f64(), Some(elbo));
    // k = 0 skips the estimate.
    assert!(!eval_report(dir.path(), &["--model", "vae.safetensors", "-k", "0"]).contains_key("log_px"));
}

#[test]
fn evaluates_an_array_file() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    let r = eval_report(dir.path(), &["--model", "vae.safetensors", "--data", "images.npy", "-k", "2", "-o", "-"]);
    assert_eq!(r["data"], "images.npy");
    assert_eq!(r["images"], 64);
    tool("vae-eval")
        .current_dir(dir.path())
        .args(["--model", "vae.safetensors", "--data", "images.npy", "-k", "2", "-o", "report.json"])
        .assert()
        .success()
        .stdout("");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, Value::Object(r), "the same seed gives the same report");
}

#[test]
fn vib_report_has_error_and_information_terms() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vib(dir.path(), "vib.safetensors");
    let r = eval_report(dir.path(), &["--model", "vib.safetensors"]);
    assert_eq!(r["model"], "vib-mlp");
    assert_eq!(r["data"], "mnist:test");
    let error = number(&r, "error");
    assert!((0.0..=1.0).contains(&error), "{error}");
    assert!(number(&r, "i_zx") >= 0.0, "a KL divergence");
    let (i_zy, h_y) = (number(&r, "i_zy"), number(&r, "h_y"));
    assert!(i_zy <= h_y, "I(Z;Y) {i_zy} above H(Y) {h_y}");
    assert!(!r.contains_key("log_px"));
}

#[test]
fn refuses_bad_data_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    for (file, reason) in write_bad_images(dir.path()) {
        let mut cmd = tool("vae-eval");
        cmd.current_dir(dir.path()).args([
            "--model",
            "vae.safetensors",
            "--data",
            file,
            "-k",
            "1",
            "-o",
            "report.json",
        ]);
        let msg = assert_fails_naming(&mut cmd, dir.path(), file);
        assert!(msg.contains(reason), "{file}: expected '{reason}' in: {msg}");
    }
}

#[test]
fn refuses_what_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    let mut cmd = tool("vae-eval");
    cmd.current_dir(dir.path()).args(["--model", "images.npy", "-k", "1", "-o", "report.json"]);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "images.npy").contains("not a checkpoint"));
    let mut cmd = tool("vae-eval");
    cmd.current_dir(dir.path()).args(["--model", "missing.safetensors", "-k", "1", "-o", "report.json"]);
    assert_fails_naming(&mut cmd, dir.path(), "missing.safetensors");
    // A VIB needs labels, which a bare array does not have.
    train_tiny_vib(dir.path(), "vib.safetensors");
    let mut cmd = tool("vae-eval");
    cmd.current_dir(dir.path()).args(["--model", "vib.safetensors", "--data", "images.npy", "-o", "report.json"]);
    assert!(assert_fails_naming(&mut cmd, dir.path(), "images.npy").contains("no labels"));
}
