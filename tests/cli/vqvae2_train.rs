//! vae-train with the vqvae2-mnist preset: the shared loop trains it, evaluates codebook
//! use, saves the PyTorch state dict with its buffers, and resumes exactly.

use crate::common::{json_lines, noise_pixels, tool, write_npy_u8};

fn train(dir: &std::path::Path, out: &str, epochs: &str, resume: bool) -> String {
    let mut cmd = tool("vae-train");
    cmd.args(["--preset", "vqvae2-mnist", "--data", "x.npy", "--eval-data", "x.npy", "--batch-size", "8"])
        .args(["--epochs", epochs, "--seed", "3", "-o", out])
        .current_dir(dir);
    if resume {
        cmd.arg("--resume");
    }
    let out = cmd.assert().success().get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn vqvae2_trains_reports_codebook_use_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[16, 28, 28], &noise_pixels(16, 1));

    let stderr = train(dir.path(), "full.safetensors", "2", false);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    let last = &lines[1];
    for key in
        ["train_mse", "train_commitment_t", "train_commitment_b", "eval_mse", "eval_codes_used_t", "eval_perplexity_b"]
    {
        assert!(last.get(key).and_then(|v| v.as_f64()).is_some_and(f64::is_finite), "{key} in {last:?}");
    }
    let used = last["eval_codes_used_b"].as_f64().unwrap();
    assert!((1.0..=512.0).contains(&used));

    // The model file is the PyTorch state dict, codebook buffers included.
    let bytes = std::fs::read(dir.path().join("full.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("quantize_t.embed").unwrap().shape(), &[64, 512]);
    assert_eq!(st.tensor("quantize_b.cluster_size").unwrap().shape(), &[512]);
    assert_eq!(st.tensor("dec.blocks.6.weight").unwrap().shape(), &[64, 1, 4, 4]);
    assert_eq!(st.names().len(), 64);

    // One epoch, then --resume to two: the same bytes as two epochs in one run.
    train(dir.path(), "cut.safetensors", "1", false);
    train(dir.path(), "cut.safetensors", "2", true);
    let resumed = std::fs::read(dir.path().join("cut.safetensors")).unwrap();
    assert!(bytes == resumed, "resumed VQ-VAE-2 differs from the uninterrupted run");
}
