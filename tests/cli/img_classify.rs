//! img-classify: class probabilities and features of clf-conv and vib-mlp, batch by batch,
//! and the inputs it refuses.

use std::path::Path;

use genimg::io::npy::Elements;

use crate::common::{
    dir_entries, fails_with_one_line, read_npy, tool, train_tiny_clf, train_tiny_vae, train_tiny_vib, write_npy_u8,
};

fn f32s(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = read_npy(path);
    match a.data {
        Elements::F32(v) => (a.shape, v),
        other => panic!("{other:?}"),
    }
}

fn classify(dir: &Path, args: &[&str], out: &str) -> (Vec<usize>, Vec<f32>) {
    tool("img-classify").current_dir(dir).args(args).args(["-o", out]).assert().success();
    f32s(&dir.join(out))
}

#[test]
fn clf_conv_writes_probabilities_and_features_in_any_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_clf(dir.path(), "clf.safetensors");
    let (shape, p) = classify(dir.path(), &["--model", "clf.safetensors", "images.npy"], "p.npy");
    assert_eq!(shape, [64, 10]);
    for row in p.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5 && row.iter().all(|&v| v >= 0.0), "{row:?}");
    }
    let (_, batched) =
        classify(dir.path(), &["--model", "clf.safetensors", "images.npy", "--batch-size", "7"], "b.npy");
    assert_eq!(batched, p);
    let (shape, f) = classify(dir.path(), &["--model", "clf.safetensors", "images.npy", "--features"], "f.npy");
    assert_eq!(shape, [64, 128]);
    assert!(f.iter().all(|&v| v >= 0.0) && f.iter().any(|&v| v > 0.0), "ReLU features");
    // vae-eval reports the classifier's test error and cross-entropy.
    let out = tool("vae-eval")
        .current_dir(dir.path())
        .args(["--model", "clf.safetensors", "--data", "images.npy", "--labels", "labels.npy"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let error = report["error"].as_f64().unwrap();
    let labels: Vec<u8> = match read_npy(&dir.path().join("labels.npy")).data {
        Elements::U8(v) => v,
        other => panic!("{other:?}"),
    };
    let argmax = |row: &[f32]| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
    let wrong = p.chunks(10).zip(&labels).filter(|(row, &l)| argmax(row) != l as usize).count();
    assert!((error - wrong as f64 / 64.0).abs() < 1e-9, "{report}");
    assert!(report["ce"].as_f64().unwrap() > 0.0 && report["model"] == "clf-conv", "{report}");
}

/// The oracle of vib-mlp's averaging: vae-eval with --batch-size 1 draws image i's z from
/// the stream img-classify gives image i, so its error is that of img-classify's argmax.
#[test]
fn vib_probabilities_are_vae_evals_and_do_not_depend_on_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_vib(dir.path(), "vib.safetensors");
    let base = ["--model", "vib.safetensors", "images.npy", "--seed", "4"];
    let (shape, p) = classify(dir.path(), &base, "p.npy");
    assert_eq!(shape, [64, 10]);
    let (_, batched) = classify(dir.path(), &[&base[..], &["--batch-size", "5"]].concat(), "b.npy");
    assert_eq!(batched, p);
    // Shards K of 3 (rows 0..22, 22..43, 43..64) are the whole run's rows, in order.
    let shards: Vec<f32> = (0..3)
        .flat_map(|k| {
            let shard = format!("{k}/3");
            let (shape, part) = classify(dir.path(), &[&base[..], &["--shard", &shard]].concat(), "k.npy");
            assert_eq!(shape, [[22, 21, 21][k], 10]);
            part
        })
        .collect();
    assert_eq!(shards, p);
    let (_, other_seed) = classify(dir.path(), &["--model", "vib.safetensors", "images.npy"], "s.npy");
    assert_ne!(other_seed, p);
    let (shape, _) = classify(dir.path(), &[&base[..], &["--features"]].concat(), "f.npy");
    assert_eq!(shape, [64, 4]);
    let out = tool("vae-eval")
        .current_dir(dir.path())
        .args(["--model", "vib.safetensors", "--data", "images.npy", "--labels", "labels.npy"])
        .args(["--batch-size", "1", "--seed", "4"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let argmax = |row: &[f32]| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
    let wrong = p.chunks(10).enumerate().filter(|(i, row)| argmax(row) != i % 10).count();
    assert_eq!(report["error"].as_f64().unwrap(), wrong as f64 / 64.0, "{report}");
}

#[test]
fn images_of_another_geometry_or_a_model_of_another_family_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_clf(dir.path(), "clf.safetensors");
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    write_npy_u8(dir.path(), "colour.npy", &[2, 3, 28, 28], &[0; 2 * 3 * 784]);
    write_npy_u8(dir.path(), "big.npy", &[2, 40, 40], &[0; 2 * 1600]);
    let before = dir_entries(dir.path());
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--model", "clf.safetensors", "colour.npy"], &["colour.npy", "3 channel(s), the model expects 1"]),
        (&["--model", "clf.safetensors", "big.npy"], &["big.npy", "40x40, the model expects 28x28"]),
        (&["--model", "vae.safetensors", "images.npy"], &["vae.safetensors", "vae-mlp", "vib-mlp or clf-conv"]),
        (&["--model", "clf.safetensors", "--data", "emoji"], &["3 channel(s)"]),
    ];
    for (args, words) in cases {
        fails_with_one_line(dir.path(), "img-classify", &[args, &["-o", "out.npy"]].concat(), words);
    }
    assert_eq!(dir_entries(dir.path()), before, "a failed run left a file");
}
