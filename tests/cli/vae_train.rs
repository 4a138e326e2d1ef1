//! vae-train: the files it writes, the metric lines, the checkpoint format, exact repeats and
//! resumes, the NaN guard, and refusals of bad data.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{
    assert_fails_naming, dir_entries, json_lines, noise_pixels, tool, write_bad_images, write_npy_u8, write_tiny_data,
};

/// `vae-train ARGS` in `dir` on the tiny noise data, tiny network, 24 images a step.
fn train_tiny(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    tool("vae-train")
        .current_dir(dir)
        .args(["--hidden", "16", "--latent", "2", "--data", "images.npy", "--batch-size", "24"])
        .args(args)
        .assert()
}

/// Tensor names and shapes, and metadata, of a `.safetensors` file (read with the
/// `safetensors` crate, not ours).
fn read_checkpoint(path: &Path) -> (BTreeMap<String, Vec<usize>>, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut shapes = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        shapes.insert(name, view.shape().to_vec());
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    (shapes, metadata)
}

#[test]
fn writes_model_state_and_a_json_line_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = tool("vae-train")
        .current_dir(dir.path())
        .args(["--hidden", "16", "--latent", "2", "--epochs", "2", "--metrics", "m.jsonl", "-o", "vae.safetensors"])
        .assert()
        .success();
    assert_eq!(dir_entries(dir.path()), ["m.jsonl", "vae.safetensors", "vae.state.safetensors"]);
    // With --metrics, stderr has only the closing line.
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("vae-train: wrote vae.safetensors"), "{stderr}");
    let lines = json_lines(&std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap());
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1);
        assert_eq!(line["step"], (i + 1) * 71, "9,000 images in steps of 128");
        for key in ["train_elbo", "train_recon", "train_kl", "test_elbo", "test_recon_nll", "test_kl", "images_per_s"] {
            let v = line.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no {key} in {line:?}"));
            assert!(v.is_finite(), "{key} = {v}");
        }
        let elbo = line["test_elbo"].as_f64().unwrap();
        assert!((-600.0..0.0).contains(&elbo), "test_elbo {elbo}");
        assert!(line["images_per_s"].as_f64().unwrap() > 0.0);
    }
    // The ELBO improves from the first epoch to the second.
    assert!(lines[1]["test_elbo"].as_f64() > lines[0]["test_elbo"].as_f64(), "{lines:?}");
}

#[test]
fn metric_lines_go_to_stderr_without_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    let out = train_tiny(dir.path(), &["--epochs", "3", "--eval-data", "images.npy", "-o", "m.safetensors"]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let lines = json_lines(&stderr);
    assert_eq!(lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "{stderr}");
    assert!(lines.iter().all(|l| l["eval_elbo"].as_f64().is_some() && l["train_elbo"].as_f64().is_some()), "{stderr}");
    assert_eq!(stderr.lines().count(), 4, "three metric lines and the closing line: {stderr}");
    assert!(stderr.lines().last().unwrap().starts_with("vae-train: wrote m.safetensors"), "{stderr}");
}

#[test]
fn model_file_is_a_pytorch_state_dict_with_its_config() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    train_tiny(dir.path(), &["--epochs", "1", "-o", "vae.safetensors"]).success();
    let (shapes, metadata) = read_checkpoint(&dir.path().join("vae.safetensors"));
    let expected: BTreeMap<String, Vec<usize>> = [
        ("fc1.weight", vec![16, 784]),
        ("fc1.bias", vec![16]),
        ("fc21.weight", vec![2, 16]),
        ("fc21.bias", vec![2]),
        ("fc22.weight", vec![2, 16]),
        ("fc22.bias", vec![2]),
        ("fc3.weight", vec![16, 2]),
        ("fc3.bias", vec![16]),
        ("fc4.weight", vec![784, 16]),
        ("fc4.bias", vec![784]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(shapes, expected);
    let config: serde_json::Value = serde_json::from_str(&metadata["genimg.config"]).unwrap();
    assert_eq!(config["model"], "vae-mlp");
    assert_eq!(config["image"], serde_json::json!({"channels": 1, "height": 28, "width": 28}));
    assert_eq!((config["hidden"].as_u64(), config["latent"].as_u64()), (Some(16), Some(2)));
    assert_eq!(config["likelihood"], "bernoulli");
    // The state file beside it holds the raw weights and Adam's moments.
    let (state, _) = read_checkpoint(&dir.path().join("vae.state.safetensors"));
    assert!(state.len() > shapes.len(), "{state:?}");
    assert_eq!(state["param.fc1.weight"], [16, 784]);
}

#[test]
fn trains_vib_mlp() {
    let dir = tempfile::tempdir().unwrap();
    tool("vae-train")
        .current_dir(dir.path())
        .args(["--preset", "vib-mlp", "--hidden", "16", "--latent", "4", "--epochs", "1"])
        .args(["--metrics", "m.jsonl", "-o", "vib.safetensors"])
        .assert()
        .success();
    let lines = json_lines(&std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap());
    assert_eq!(lines.len(), 1);
    for key in ["train_ce", "train_kl", "test_error", "test_i_zx", "test_i_zy", "images_per_s"] {
        assert!(lines[0].get(key).and_then(|v| v.as_f64()).is_some_and(f64::is_finite), "no {key} in {:?}", lines[0]);
    }
    let error = lines[0]["test_error"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&error), "{error}");
    let (shapes, metadata) = read_checkpoint(&dir.path().join("vib.safetensors"));
    assert_eq!(shapes["fc1.weight"], [16, 784]);
    assert_eq!(shapes["fc3.weight"], [8, 16], "fc3 gives mean and scale of z");
    assert_eq!(shapes["classifier.weight"], [10, 4]);
    assert!(metadata["genimg.config"].contains("\"vib-mlp\""));
}

#[test]
fn same_seed_repeats_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    for (name, seed) in [("a.safetensors", "7"), ("b.safetensors", "7"), ("c.safetensors", "8")] {
        train_tiny(dir.path(), &["--epochs", "2", "--seed", seed, "-o", name]).success();
    }
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(read("a.safetensors") == read("b.safetensors"), "same seed, different model files");
    assert!(read("a.state.safetensors") == read("b.state.safetensors"), "same seed, different state files");
    assert!(read("a.safetensors") != read("c.safetensors"), "another seed gave the same model");
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    // 64 images in steps of 24: the last step of each epoch is short.
    train_tiny(dir.path(), &["--epochs", "2", "--seed", "3", "-o", "whole.safetensors"]).success();
    train_tiny(dir.path(), &["--epochs", "1", "--seed", "3", "--metrics", "m.jsonl", "-o", "split.safetensors"])
        .success();
    train_tiny(
        dir.path(),
        &["--epochs", "2", "--seed", "3", "--metrics", "m.jsonl", "--resume", "-o", "split.safetensors"],
    )
    .success();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(read("whole.safetensors") == read("split.safetensors"), "a resumed run differs from the whole run");
    assert!(read("whole.state.safetensors") == read("split.state.safetensors"));
    let lines = json_lines(&std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap());
    assert_eq!(lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "appended");
}

#[test]
fn resume_with_other_settings_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    train_tiny(dir.path(), &["--epochs", "1", "-o", "m.safetensors"]).success();
    let before = std::fs::read(dir.path().join("m.safetensors")).unwrap();
    let mut cmd = tool("vae-train");
    cmd.current_dir(dir.path())
        .args(["--hidden", "16", "--latent", "2", "--data", "images.npy", "--batch-size", "16"])
        .args(["--epochs", "2", "--resume", "-o", "m.safetensors"]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "m.state.safetensors");
    assert!(msg.contains("--batch-size 24") && msg.contains("16"), "{msg}");
    assert_eq!(std::fs::read(dir.path().join("m.safetensors")).unwrap(), before);
    // Nothing to resume from.
    let mut cmd = tool("vae-train");
    cmd.current_dir(dir.path()).args([
        "--hidden",
        "16",
        "--latent",
        "2",
        "--data",
        "images.npy",
        "--resume",
        "-o",
        "new.safetensors",
    ]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "new.state.safetensors");
    assert!(msg.contains("no training state"), "{msg}");
}

#[test]
fn a_diverging_run_stops_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    let out = train_tiny(dir.path(), &["--epochs", "1", "--lr", "1e30", "-o", "m.safetensors"]).failure().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("diverged") && stderr.contains("no checkpoint had been written"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    assert_eq!(dir_entries(dir.path()), ["images.npy", "labels.npy"]);
}

#[test]
fn a_run_diverging_after_a_good_epoch_keeps_that_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    train_tiny(dir.path(), &["--epochs", "1", "--metrics", "m.jsonl", "-o", "m.safetensors"]).success();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let (model, state) = (read("m.safetensors"), read("m.state.safetensors"));
    // A second epoch with an absurd learning rate (the rate may change on resume).
    let out = train_tiny(
        dir.path(),
        &["--epochs", "2", "--lr", "1e30", "--resume", "--metrics", "m.jsonl", "-o", "m.safetensors"],
    )
    .failure()
    .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("diverged") && stderr.contains("epoch 2"), "{stderr}");
    assert!(stderr.contains("the last good checkpoint is kept in m.safetensors"), "{stderr}");
    assert!(read("m.safetensors") == model, "the good checkpoint changed");
    assert!(read("m.state.safetensors") == state, "the good training state changed");
    assert_eq!(json_lines(&String::from_utf8(read("m.jsonl")).unwrap()).len(), 1);
    assert_eq!(
        dir_entries(dir.path()),
        ["images.npy", "labels.npy", "m.jsonl", "m.safetensors", "m.state.safetensors"]
    );
}

#[test]
fn refuses_bad_data_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = write_bad_images(dir.path());
    // Training takes any geometry (the next test); these two are bad input for a trained model only.
    cases.retain(|(name, _)| !["big.npy", "rgb.npy"].contains(name));
    for (file, reason) in cases {
        let mut cmd = tool("vae-train");
        cmd.current_dir(dir.path()).args([
            "--hidden",
            "16",
            "--latent",
            "2",
            "--epochs",
            "1",
            "--data",
            file,
            "-o",
            "m.safetensors",
        ]);
        let msg = assert_fails_naming(&mut cmd, dir.path(), file);
        assert!(msg.contains(reason), "{file}: expected '{reason}' in: {msg}");
    }
}

#[test]
fn refuses_stdout_as_the_model_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    let out = train_tiny(dir.path(), &["--epochs", "1"]).failure().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("-o PATH"), "{stderr}");
    assert_eq!(dir_entries(dir.path()), ["images.npy", "labels.npy"]);
}

/// The network takes the training images' channels and size, stores them in its config, and
/// refuses (one line naming the file) a size its strides cannot take; a trained model refuses
/// images of another geometry.
#[test]
fn the_network_takes_the_geometry_of_its_training_images() {
    let dir = tempfile::tempdir().unwrap();
    write_npy_u8(dir.path(), "rgb.npy", &[4, 3, 24, 40], &noise_pixels(16, 7)[..4 * 3 * 24 * 40]);
    write_npy_u8(dir.path(), "odd.npy", &[4, 3, 20, 20], &noise_pixels(4 * 3, 8)[..4 * 3 * 400]);
    let image = |model: &str| {
        let path = genimg::io::InputPath::File(dir.path().join(model));
        let map = genimg::io::read_tensor_file(&path, &candle_core::Device::Cpu);
        let genimg::io::TensorFile::Safetensors(map) = map.unwrap() else { panic!("not safetensors") };
        let config: serde_json::Value = serde_json::from_str(&map.metadata["genimg.config"]).unwrap();
        config["image"].clone()
    };
    let train = |preset: &str, data: &str, model: &str| {
        let mut cmd = tool("vae-train");
        cmd.current_dir(dir.path()).args(["--preset", preset, "--data", data, "--epochs", "1", "--batch-size", "4"]);
        cmd.args(["--metrics", "m.jsonl", "-o", model]);
        if preset == "vae-mlp" {
            cmd.args(["--hidden", "8", "--latent", "2"]);
        }
        cmd
    };
    train("vae-mlp", "rgb.npy", "mlp.safetensors").assert().success();
    assert_eq!(image("mlp.safetensors"), serde_json::json!({"channels": 3, "height": 24, "width": 40}));
    train("vqvae2", "rgb.npy", "vq.safetensors").assert().success();
    assert_eq!(image("vq.safetensors"), serde_json::json!({"channels": 3, "height": 24, "width": 40}));
    let line = assert_fails_naming(&mut train("vqvae2", "odd.npy", "bad.safetensors"), dir.path(), "odd.npy");
    assert!(line.contains("multiples of 8; these are 20x20"), "{line}");
    let mut encode = tool("vq-encode");
    encode.current_dir(dir.path()).args(["--model", "vq.safetensors", "odd.npy", "-o", "c.safetensors"]);
    let line = assert_fails_naming(&mut encode, dir.path(), "odd.npy");
    assert!(line.contains("images are 20x20, the model expects 24x40"), "{line}");
}

/// The recipe (warm-up, clipping, weight decay, flips) changes the run, repeats for a seed,
/// resumes exactly, reports the rate and the gradients' norm, and a resume with another
/// recipe is refused.
#[test]
fn the_training_recipe_resumes_exactly_and_must_match() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_data(dir.path());
    let recipe = ["--lr-warmup", "3", "--grad-clip", "0.5", "--weight-decay", "0.01", "--flip", "--seed", "3"];
    let run = |epochs: &str, extra: &[&str], out: &str| {
        let mut args = vec!["--epochs", epochs, "--metrics", "m.jsonl", "-o", out];
        args.extend_from_slice(&recipe);
        args.extend_from_slice(extra);
        train_tiny(dir.path(), &args).success();
    };
    run("2", &[], "whole.safetensors");
    run("2", &[], "again.safetensors");
    run("1", &[], "split.safetensors");
    run("2", &["--resume"], "split.safetensors");
    train_tiny(dir.path(), &["--epochs", "2", "--seed", "3", "-o", "plain.safetensors"]).success();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(read("whole.safetensors") == read("again.safetensors"), "the same seed and recipe repeat");
    assert!(read("whole.safetensors") == read("split.safetensors"), "a resumed run follows the whole run");
    assert!(read("whole.safetensors") != read("plain.safetensors"), "the recipe changes the run");
    let lines = json_lines(&std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap());
    let first = &lines[0];
    // Three steps a 64-image epoch at batch 24: after steps 0, 1, 2 of the warm-up the rate
    // the last step used is 2/3 of the preset's 1e-3.
    assert!((first["lr"].as_f64().unwrap() - 1e-3 * 2.0 / 3.0).abs() < 1e-12, "{first:?}");
    assert!(first["train_grad_norm"].as_f64().unwrap() > 0.0, "{first:?}");

    let mut cmd = tool("vae-train");
    cmd.current_dir(dir.path())
        .args(["--hidden", "16", "--latent", "2", "--data", "images.npy", "--batch-size", "24"])
        .args(["--epochs", "3", "--seed", "3", "--lr-warmup", "3", "--resume", "-o", "whole.safetensors"]);
    let msg = assert_fails_naming(&mut cmd, dir.path(), "whole.state.safetensors");
    assert!(msg.contains("recipe") && msg.contains("\"flip\":true"), "{msg}");
}
