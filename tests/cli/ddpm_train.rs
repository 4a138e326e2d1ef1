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

/// A tensor's shape and raw bytes.
type Raw = (Vec<usize>, Vec<u8>);

/// Each tensor's shape and raw bytes, by name.
type Tensors = BTreeMap<String, Raw>;

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

/// A tensor's name in the project's U-Net layout from before it followed diffusers (the old
/// `src/models/ddpm.rs`: `time_embed.{0,2}`, `down.{l}.res.{i}` with `temb` and `skip`,
/// `down.{l}.attn.{i}` with `norm`, a fused `qkv` and `proj`, `down.{l}.downsample`,
/// `mid.{res,attn}`, `up.{l}` numbered by level, `norm_out`), for `levels` levels.
fn old_name(name: &str, levels: usize) -> String {
    let up = |u: &str| levels - 1 - u.parse::<usize>().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    let (module, rest) = match parts.as_slice() {
        ["time_embedding", "linear_1", rest @ ..] => ("time_embed.0".to_string(), rest),
        ["time_embedding", "linear_2", rest @ ..] => ("time_embed.2".to_string(), rest),
        ["conv_norm_out", rest @ ..] => ("norm_out".to_string(), rest),
        ["down_blocks", l, "resnets", i, rest @ ..] => (format!("down.{l}.res.{i}"), rest),
        ["down_blocks", l, "attentions", i, rest @ ..] => (format!("down.{l}.attn.{i}"), rest),
        ["down_blocks", l, "downsamplers", "0", "conv", rest @ ..] => (format!("down.{l}.downsample"), rest),
        ["mid_block", "resnets", i, rest @ ..] => (format!("mid.res.{i}"), rest),
        ["mid_block", "attentions", i, rest @ ..] => (format!("mid.attn.{i}"), rest),
        ["up_blocks", u, "resnets", i, rest @ ..] => (format!("up.{}.res.{i}", up(u)), rest),
        ["up_blocks", u, "attentions", i, rest @ ..] => (format!("up.{}.attn.{i}", up(u)), rest),
        ["up_blocks", u, "upsamplers", "0", "conv", rest @ ..] => (format!("up.{}.upsample", up(u)), rest),
        _ => return name.to_string(),
    };
    let leaf = match rest {
        ["time_emb_proj", kind] => format!("temb.{kind}"),
        ["conv_shortcut", kind] => format!("skip.{kind}"),
        ["group_norm", kind] => format!("norm.{kind}"),
        ["to_q" | "to_k" | "to_v", kind] => format!("qkv.{kind}"),
        ["to_out", "0", kind] => format!("proj.{kind}"),
        _ => rest.join("."),
    };
    format!("{module}.{leaf}")
}

/// Writes `tensors` (under their groups' prefixes) in the old layout: names by [`old_name`],
/// q, k and v fused into one conv1x1 [3c, c, 1, 1] (its bias [3c]) in that order, the
/// output projection a conv1x1 [c, c, 1, 1].
fn to_old_layout(tensors: &Tensors, levels: usize) -> Tensors {
    let mut out = Tensors::new();
    let mut fused: BTreeMap<String, [Option<Raw>; 3]> = BTreeMap::new();
    for (name, (shape, data)) in tensors {
        let (prefix, inner) = ["param.", "exp_avg.", "exp_avg_sq.", "extra.ema."]
            .iter()
            .find_map(|p| name.strip_prefix(p).map(|rest| (*p, rest)))
            .unwrap_or(("", name.as_str()));
        let old = format!("{prefix}{}", if prefix.is_empty() { inner.to_string() } else { old_name(inner, levels) });
        let which = ["to_q.", "to_k.", "to_v."].iter().position(|p| inner.contains(&format!(".{p}")));
        let mut shape = shape.clone();
        if old.ends_with("proj.weight") {
            shape.extend([1, 1]);
        }
        match which {
            Some(i) => fused.entry(old).or_default()[i] = Some((shape, data.clone())),
            None => {
                out.insert(old, (shape, data.clone()));
            }
        }
    }
    for (name, parts) in fused {
        let parts: Vec<_> = parts.into_iter().map(|p| p.expect("q, k and v")).collect();
        let mut shape = parts[0].0.clone();
        shape[0] *= 3;
        if shape.len() == 2 {
            shape.extend([1, 1]);
        }
        out.insert(name, (shape, parts.into_iter().flat_map(|p| p.1).collect()));
    }
    out
}

/// The configuration JSON as the old release wrote it: `base_channels`, `channel_mult`,
/// `num_res_blocks`, `attn_resolutions`, `groups` instead of diffusers' fields.
fn old_config(config: &str) -> String {
    let mut c: serde_json::Map<String, serde_json::Value> = serde_json::from_str(config).unwrap();
    let groups = c["norm_num_groups"].clone();
    for key in [
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "norm_num_groups",
        "norm_eps",
        "flip_sin_to_cos",
        "freq_shift",
        "downsample_padding",
        "attention_head_dim",
        "mid_block_scale_factor",
    ] {
        c.remove(key).unwrap_or_else(|| panic!("{key} in {config}"));
    }
    let old = serde_json::json!({"base_channels": 8, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attn_resolutions": [8], "groups": groups});
    c.extend(old.as_object().unwrap().clone());
    serde_json::Value::Object(c).to_string()
}

/// A training state written before the U-Net followed diffusers (its names, its fused
/// attention, its configuration fields) resumes, and ends where an uninterrupted run ends.
#[test]
fn a_training_state_of_the_old_layout_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "x.npy", &[16, 28, 28], &noise_pixels(16, 1));
    train(dir.path(), "full.safetensors", "2", &[]);
    train(dir.path(), "cut.safetensors", "1", &[]);

    let state_file = dir.path().join("cut.state.safetensors");
    let (state, mut meta) = read(&state_file);
    let old = to_old_layout(&state, 3);
    assert!(old.contains_key("param.mid.attn.0.qkv.weight") && old.contains_key("exp_avg.up.0.res.1.temb.bias"));
    assert!(old.contains_key("extra.ema.down.2.attn.0.proj.weight") && !old.keys().any(|k| k.contains("blocks")));
    assert_eq!(old["param.mid.attn.0.qkv.weight"].0, [48, 16, 1, 1]);
    meta.insert("genimg.config".into(), old_config(&meta["genimg.config"]));
    let views: Vec<(String, safetensors::tensor::TensorView)> = old
        .iter()
        .map(|(k, (shape, data))| {
            let dtype = if k == "extra.ema_updates" { safetensors::Dtype::I64 } else { safetensors::Dtype::F32 };
            (k.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, Some(meta.into_iter().collect()), &state_file).unwrap();

    train(dir.path(), "cut.safetensors", "2", &["--resume"]);
    let (full, cut) = (read(&dir.path().join("full.safetensors")), read(&dir.path().join("cut.safetensors")));
    assert!(full.0 == cut.0, "the resumed run differs from the uninterrupted one");
    assert_eq!(full.1["genimg.config"], cut.1["genimg.config"]);
}
