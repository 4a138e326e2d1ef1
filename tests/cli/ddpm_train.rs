//! ddpm-train: metrics, the model file (the weight average under the documented names, the
//! configuration in its metadata), exact resume, and refusals.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{assert_fails_naming, json_lines, noise_pixels, tool, write_npy_u8, TINY_DDPM};

fn train(dir: &Path, out: &str, epochs: &str, extra: &[&str]) -> String {
    let out = tool("ddpm-train")
        .current_dir(dir)
        .args(TINY_DDPM)
        .args(["--data", "x.npy", "--eval-data", "x.npy", "--batch-size", "8", "--seed", "4"])
        .args(["--epochs", epochs, "-o", out])
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    String::from_utf8(out).unwrap()
}

/// Each tensor's shape and raw bytes, by name.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<u8>)>;

/// Tensors and metadata of a `.safetensors` file, read with the safetensors crate.
fn read(path: &Path) -> (Tensors, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors().into_iter().map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec()))).collect();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, meta.metadata().clone().unwrap_or_default().into_iter().collect())
}

#[test]
fn trains_saves_the_weight_average_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[16, 28, 28], &noise_pixels(16, 1));
    let stderr = train(dir.path(), "full.safetensors", "2", &[]);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    for key in ["train_mse", "eval_mse", "eval_ema_mse", "images_per_s"] {
        assert!(lines[1].get(key).and_then(|v| v.as_f64()).is_some_and(f64::is_finite), "{key} in {:?}", lines[1]);
    }
    // Fixed evaluation noise: the same weights give the same figure, so it moves only with them.
    assert_ne!(lines[0]["eval_mse"], lines[1]["eval_mse"]);

    let (model, meta) = read(&dir.path().join("full.safetensors"));
    let config: serde_json::Value = serde_json::from_str(&meta["genimg.config"]).unwrap();
    assert_eq!(config["model"], "ddpm-unet");
    assert_eq!(config["schedule"], "linear");
    assert_eq!(config["block_out_channels"], serde_json::json!([8, 16, 16]));
    assert_eq!(config["down_block_types"][2], "AttnDownBlock2D");
    for (name, shape) in [
        ("time_embedding.linear_1.weight", vec![32, 8]),
        ("conv_in.weight", vec![8, 1, 3, 3]),
        ("down_blocks.2.attentions.0.to_q.weight", vec![16, 16]),
        ("mid_block.resnets.1.norm2.weight", vec![16]),
        ("up_blocks.2.resnets.0.conv_shortcut.weight", vec![8, 24, 1, 1]),
        ("conv_out.bias", vec![1]),
    ] {
        assert_eq!(model.get(name).map(|t| &t.0), Some(&shape), "{name}");
    }
    // The model file holds the average, which the training state keeps beside the raw weights.
    let (state, _) = read(&dir.path().join("full.state.safetensors"));
    assert!(state.contains_key("extra.ema_updates"));
    for (name, (_, data)) in &model {
        assert_eq!(&state[&format!("extra.ema.{name}")].1, data, "{name}");
    }
    assert_ne!(state["param.conv_in.weight"].1, model["conv_in.weight"].1);

    // One epoch, then --resume to two: the same bytes as two epochs in one run.
    train(dir.path(), "cut.safetensors", "1", &[]);
    train(dir.path(), "cut.safetensors", "2", &["--resume"]);
    let (full, cut) = (
        std::fs::read(dir.path().join("full.safetensors")).unwrap(),
        std::fs::read(dir.path().join("cut.safetensors")).unwrap(),
    );
    assert!(full == cut, "the resumed run differs from the uninterrupted one");
}

#[test]
fn stores_the_schedule_and_refuses_other_networks_and_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[8, 28, 28], &noise_pixels(8, 2));
    tool("ddpm-train")
        .current_dir(dir.path())
        .args(TINY_DDPM)
        .args(["--schedule", "cosine", "--data", "x.npy", "--epochs", "1", "--batch-size", "8", "-o", "c.safetensors"])
        .assert()
        .success();
    let (_, meta) = read(&dir.path().join("c.safetensors"));
    assert!(meta["genimg.config"].contains(r#""schedule":"cosine""#), "{meta:?}");

    // Another family's preset is a usage error that lists the ones ddpm-train takes.
    let out = tool("ddpm-train")
        .current_dir(dir.path())
        .args(["--preset", "vae-mlp", "--data", "x.npy", "-o", "v.safetensors"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'vae-mlp'") && stderr.contains("ddpm-unet-mnist"), "{stderr}");
    assert!(!dir.path().join("v.safetensors").exists());
    let mut cmd = tool("ddpm-train");
    cmd.current_dir(dir.path()).args(["--base-channels", "12", "--data", "x.npy", "-o", "b.safetensors"]);
    assert_fails_naming(&mut cmd, dir.path(), "groups");
    let mut cmd = tool("ddpm-train");
    cmd.current_dir(dir.path()).args(TINY_DDPM).args(["--data", "missing.npy", "-o", "m.safetensors"]);
    assert_fails_naming(&mut cmd, dir.path(), "missing.npy");
}
