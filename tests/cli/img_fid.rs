//! img-fid: one JSON object of every metric for two feature files, a statistics file that
//! stands in for its set, and one clear line for sets that cannot be compared.

use std::path::Path;

use crate::common::{assert_fails_naming, report_of, tool, write_npy_f32};

const KEYS: [&str; 13] = [
    "fid",
    "kid_mean",
    "kid_std",
    "kid_subsets",
    "kid_subset_size",
    "precision",
    "recall",
    "density",
    "coverage",
    "k",
    "n_a",
    "n_b",
    "dim",
];

/// `rows` x `dim` features: a seeded spread around `shift`.
fn features(dir: &Path, name: &str, rows: usize, dim: usize, shift: f32, seed: u64) {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let values: Vec<f32> = (0..rows * dim)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5 + shift
        })
        .collect();
    write_npy_f32(dir, name, &[rows, dim], &values);
}

#[test]
fn two_feature_files_give_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    features(d, "a.npy", 300, 8, 0.0, 1);
    features(d, "b.npy", 200, 8, 0.1, 2);
    let r = report_of("img-fid", d, &["a.npy", "b.npy", "--kid-subsets", "20"]);
    let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!((r["n_a"].as_u64(), r["n_b"].as_u64(), r["dim"].as_u64()), (Some(300), Some(200), Some(8)));
    assert_eq!(
        (r["kid_subsets"].as_u64(), r["kid_subset_size"].as_u64(), r["k"].as_u64()),
        (Some(20), Some(200), Some(5))
    );
    // Shifted by 0.1 in each of 8 coordinates: FID near 8 x 0.01.
    let fid = r["fid"].as_f64().unwrap();
    assert!((0.05..0.12).contains(&fid), "{fid}");
    for key in ["precision", "recall", "coverage"] {
        assert!((0.0..=1.0).contains(&r[key].as_f64().unwrap()), "{key}: {}", r[key]);
    }
    // A set against itself.
    let same = report_of("img-fid", d, &["a.npy", "a.npy"]);
    assert!(same["fid"].as_f64().unwrap().abs() < 1e-9, "{}", same["fid"]);
    assert_eq!((same["precision"].as_f64(), same["recall"].as_f64()), (Some(1.0), Some(1.0)));
}

#[test]
fn a_statistics_file_stands_in_for_its_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    features(d, "a.npy", 120, 6, 0.0, 3);
    features(d, "b.npy", 150, 6, 0.2, 4);
    let direct = report_of("img-fid", d, &["a.npy", "b.npy", "--seed", "7"]);
    tool("img-fid").current_dir(d).args(["--save-stats", "b.safetensors", "b.npy"]).assert().success().stdout("");
    assert_eq!(report_of("img-fid", d, &["a.npy", "b.safetensors", "--seed", "7"]), direct);
    // A second file of the statistics only: the same FID, the other metrics null.
    tool("img-fid")
        .current_dir(d)
        .args(["--save-stats", "mu-sigma.safetensors", "--no-features", "b.safetensors"])
        .assert()
        .success();
    let fid_only = report_of("img-fid", d, &["a.npy", "mu-sigma.safetensors"]);
    assert_eq!(fid_only["fid"], direct["fid"]);
    assert_eq!((fid_only["n_b"].as_u64(), fid_only["dim"].as_u64()), (Some(150), Some(6)));
    for key in ["kid_mean", "kid_std", "precision", "recall", "density", "coverage"] {
        assert!(fid_only[key].is_null(), "{key}: {}", fid_only[key]);
    }
    assert!(std::fs::metadata(d.join("mu-sigma.safetensors")).unwrap().len() < 1000);
}

#[test]
fn sets_that_cannot_be_compared_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    features(d, "a.npy", 50, 8, 0.0, 5);
    features(d, "narrow.npy", 50, 4, 0.0, 6);
    features(d, "one.npy", 1, 8, 0.0, 7);
    write_npy_f32(d, "images.npy", &[2, 2, 2], &[0.0; 8]);
    let line = assert_fails_naming(tool("img-fid").current_dir(d).args(["a.npy", "narrow.npy"]), d, "narrow.npy");
    assert!(line.contains("4 dimensions") && line.contains("has 8"), "{line}");
    let line = assert_fails_naming(tool("img-fid").current_dir(d).args(["one.npy", "a.npy"]), d, "one.npy");
    assert!(line.contains("at least 2"), "{line}");
    let line = assert_fails_naming(tool("img-fid").current_dir(d).args(["a.npy", "images.npy"]), d, "images.npy");
    assert!(line.contains("[N, D]"), "{line}");
    let line = assert_fails_naming(tool("img-fid").current_dir(d).args(["a.npy", "a.npy", "--k", "50"]), d, "--k 50");
    assert!(line.contains("more than 50 rows"), "{line}");
    // A covariance too large for the machine is refused before it is allocated.
    write_npy_f32(d, "wide.npy", &[2, 300_000], &vec![0.0; 600_000]);
    let line = assert_fails_naming(tool("img-fid").current_dir(d).args(["wide.npy", "a.npy"]), d, "wide.npy");
    assert!(line.contains("more than the"), "{line}");
    // REFERENCE is needed, except with --save-stats, which takes one set: usage errors.
    tool("img-fid").current_dir(d).arg("a.npy").assert().code(2);
    tool("img-fid").current_dir(d).args(["--save-stats", "s.safetensors", "a.npy", "a.npy"]).assert().code(2);
}

/// `--features MODEL` reads images and computes their features first: the same object as the
/// pipe `img-classify --features` then `img-fid` on the feature files; a statistics file is
/// still read as one.
#[test]
fn with_a_feature_model_images_give_the_pipes_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::train_tiny_clf(d, "clf.safetensors");
    crate::common::write_npy_u8(d, "other.npy", &[40, 28, 28], &crate::common::noise_pixels(40, 9));
    for (images, features) in [("images.npy", "fa.npy"), ("other.npy", "fb.npy")] {
        tool("img-classify")
            .current_dir(d)
            .args(["--model", "clf.safetensors", images, "--features", "-o", features])
            .assert()
            .success();
    }
    let piped = report_of("img-fid", d, &["fa.npy", "fb.npy"]);
    let direct = report_of("img-fid", d, &["--features", "clf.safetensors", "images.npy", "other.npy"]);
    assert_eq!(direct, piped);
    tool("img-fid").current_dir(d).args(["--save-stats", "b.safetensors", "fb.npy"]).assert().success();
    let against_stats = report_of("img-fid", d, &["--features", "clf.safetensors", "images.npy", "b.safetensors"]);
    assert_eq!(against_stats, piped);
    let mut cmd = tool("img-fid");
    cmd.current_dir(d)
        .args(["--features", "clf.safetensors", "-", "other.npy", "-o", "r.json"])
        .write_stdin(std::fs::read(d.join("images.npy")).unwrap());
    assert_fails_naming(&mut cmd, d, "<stdin>: with --features the images must be a file");
}
