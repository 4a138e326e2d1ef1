//! img-select: rejection sampling by class and score, the rows copied as they are, and the
//! inputs it refuses.

use std::path::Path;

use genimg::io::npy::Elements;

use crate::common::{dir_entries, fails_with_one_line, read_npy, tool, train_tiny_clf, write_npy_f32, write_npy_u8};

/// Six 2x2 u8 samples, sample i all of value i; labels 1, 0, 1, 0, 1, 1; scores [6, 2].
fn write_samples(dir: &Path) {
    let pixels: Vec<u8> = (0..6u8).flat_map(|i| [i; 4]).collect();
    write_npy_u8(dir, "s.npy", &[6, 2, 2], &pixels);
    write_npy_u8(dir, "l.npy", &[6], &[1, 0, 1, 0, 1, 1]);
    // The score of sample i is column labels[i]: 0.3, 0.6, 0.9, 0.2, 0.5, 0.95.
    let scores = [0.7, 0.3, 0.6, 0.4, 0.1, 0.9, 0.2, 0.8, 0.5, 0.5, 0.05, 0.95];
    write_npy_f32(dir, "p.npy", &[6, 2], &scores);
}

/// The first pixel of each kept sample: its index.
fn kept(dir: &Path, args: &[&str]) -> Vec<u8> {
    tool("img-select")
        .current_dir(dir)
        .args(["s.npy", "--scores", "p.npy", "--labels", "l.npy"])
        .args(args)
        .args(["-o", "k.npy"])
        .assert()
        .success();
    let a = read_npy(&dir.join("k.npy"));
    assert_eq!(a.shape[1..], [2, 2]);
    match a.data {
        Elements::U8(v) => v.chunks(4).map(|c| c[0]).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keeps_the_best_of_each_class_by_class_then_score() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(dir.path());
    // Class 0: samples 1 (0.6), 3 (0.2); class 1: 5 (0.95), 2 (0.9), 4 (0.5), 0 (0.3).
    assert_eq!(kept(dir.path(), &["--keep", "1"]), [1, 5]);
    assert_eq!(kept(dir.path(), &["--keep", "3"]), [1, 3, 5, 2, 4]);
    assert_eq!(kept(dir.path(), &["--keep-fraction", "0.5"]), [1, 5, 2]);
    assert_eq!(kept(dir.path(), &["--min-prob", "0.5"]), [1, 5, 2, 4]);
    assert_eq!(kept(dir.path(), &["--min-prob", "1"]), [] as [u8; 0]);
    tool("img-select")
        .current_dir(dir.path())
        .args([
            "s.npy",
            "--scores",
            "p.npy",
            "--labels",
            "l.npy",
            "--keep",
            "1",
            "--labels-out",
            "kl.npy",
            "-o",
            "k.npy",
        ])
        .assert()
        .success();
    assert_eq!(read_npy(&dir.path().join("kl.npy")).data, Elements::I64(vec![0, 1]));
}

#[test]
fn scores_labels_and_samples_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(dir.path());
    write_npy_u8(dir.path(), "l5.npy", &[5], &[0; 5]);
    write_npy_u8(dir.path(), "l9.npy", &[6], &[0, 1, 9, 0, 0, 0]);
    write_npy_f32(dir.path(), "p7.npy", &[7, 2], &[0.5; 14]);
    write_npy_u8(dir.path(), "pu8.npy", &[6, 2], &[0; 12]);
    let before = dir_entries(dir.path());
    let cases: [(&[&str], &[&str]); 6] = [
        (&["s.npy", "--scores", "p.npy", "--labels", "l5.npy"], &["l5.npy", "has 5 labels", "6 samples"]),
        (
            &["s.npy", "--scores", "p.npy", "--labels", "l9.npy"],
            &["l9.npy", "label 9 of sample 2 is out of range", "2 classes"],
        ),
        (&["s.npy", "--scores", "p7.npy", "--labels", "l5.npy"], &["l5.npy", "has 5 labels", "7 samples"]),
        (&["p7.npy", "--scores", "p.npy", "--labels", "l.npy"], &["p7.npy", "holds 7 samples"]),
        (&["s.npy", "--scores", "pu8.npy", "--labels", "l.npy"], &["pu8.npy", "expected float scores"]),
        (&["-", "--scores", "p.npy", "--labels", "l.npy"], &["<stdin>", "not a regular file"]),
    ];
    for (args, words) in cases {
        fails_with_one_line(dir.path(), "img-select", &[args, &["--keep", "1", "-o", "out.npy"]].concat(), words);
    }
    assert_eq!(dir_entries(dir.path()), before, "a failed run left a file");
}

/// The pipe of the README: a classifier's probabilities of samples, then the best of them.
#[test]
fn classifier_scores_select_samples_of_their_class() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_clf(dir.path(), "clf.safetensors");
    tool("img-classify")
        .current_dir(dir.path())
        .args(["--model", "clf.safetensors", "images.npy", "-o", "p.npy"])
        .assert()
        .success();
    tool("img-select")
        .current_dir(dir.path())
        .args(["images.npy", "--scores", "p.npy", "--labels", "labels.npy", "--keep-fraction", "0.5"])
        .args(["-o", "k.npy", "--labels-out", "kl.npy"])
        .assert()
        .success();
    let images = read_npy(&dir.path().join("k.npy"));
    assert_eq!(images.shape, [34, 28, 28]);
    let Elements::I64(labels) = read_npy(&dir.path().join("kl.npy")).data else { panic!() };
    // The 64 samples are 6 or 7 of each of 10 classes; half of each, rounded, is 3 or 4.
    assert!(labels.windows(2).all(|w| w[0] <= w[1]), "{labels:?}");
    assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 4);
}
