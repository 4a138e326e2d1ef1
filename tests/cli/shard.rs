//! `--shard K/N`: for each tool that takes it, three shards of a small run, joined by
//! tensor-cat, are the unsharded run's output byte for byte (with other batch sizes, one
//! shard on stdin, an empty shard, and on 1 and 2 threads), and bad values are usage errors.

use std::path::Path;

use crate::common::{dir_entries, tool, train_tiny_ddpm, train_vq, write_npy_f32};
use crate::prior::{codes, fit};

/// Runs `name` with `args` in `dir` (and `--shard K/N` when given) into `out`.
fn run(dir: &Path, name: &str, args: &[&str], shard: Option<String>, out: &str) {
    let mut cmd = tool(name);
    cmd.current_dir(dir).args(args).args(["-o", out]);
    if let Some(shard) = shard {
        cmd.args(["--shard", &shard]);
    }
    cmd.assert().success().stdout("");
}

/// Runs `name` unsharded with `whole`, and as shards 0..n of n with `part`, joins the shards
/// with tensor-cat (the middle one through stdin) and checks that the bytes are the same.
fn shards_join_to_the_whole(dir: &Path, name: &str, whole: &[&str], part: &[&str], n: usize, ext: &str) {
    let all = format!("{name}-all.{ext}");
    run(dir, name, whole, None, &all);
    let parts: Vec<String> = (0..n).map(|k| format!("{name}-{k}.{ext}")).collect();
    for (k, out) in parts.iter().enumerate() {
        run(dir, name, part, Some(format!("{k}/{n}")), out);
    }
    let middle = &parts[n / 2];
    let mut cat = tool("tensor-cat");
    cat.current_dir(dir).pipe_stdin(dir.join(middle)).unwrap();
    for p in &parts {
        cat.arg(if p == middle { "-" } else { p.as_str() });
    }
    let joined = cat.output().unwrap();
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    assert!(
        joined.stdout == std::fs::read(dir.join(&all)).unwrap(),
        "{name}: {n} shards joined differ from the whole run"
    );
}

#[test]
fn vq_encode_and_decode_shards_join_to_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_vq(d, "vq.safetensors", 2);
    train_vq(d, "vq1.safetensors", 1);
    let two = ["--model", "vq.safetensors", "x.npy", "--labels", "y.npy"];
    shards_join_to_the_whole(d, "vq-encode", &two, &[&two[..], &["--batch-size", "2"]].concat(), 3, "safetensors");
    let one = ["--model", "vq1.safetensors", "x.npy"];
    shards_join_to_the_whole(d, "vq-encode", &one, &[&one[..], &["--batch-size", "3"]].concat(), 3, "npy");
    let codes = ["--model", "vq.safetensors", "vq-encode-all.safetensors"];
    shards_join_to_the_whole(d, "vq-decode", &codes, &[&codes[..], &["--batch-size", "1"]].concat(), 3, "npy");
    // More shards than code maps: some shards are empty, and still valid arrays.
    shards_join_to_the_whole(d, "vq-decode", &codes, &codes, 20, "npy");
}

#[test]
fn prior_sample_shards_join_to_the_whole_run_and_batches_change_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    codes(d);
    fit(d, "top", "top.safetensors", "1", false);
    fit(d, "bottom", "bottom.safetensors", "1", false);
    // Both priors, classes in equal blocks over the 7 samples.
    let both = ["--model", "top.safetensors", "--bottom", "bottom.safetensors", "-n", "7", "--seed", "3"];
    shards_join_to_the_whole(d, "prior-sample", &both, &[&both[..], &["--batch-size", "2"]].concat(), 3, "safetensors");
    // Given top codes (16 maps) and the labels they carry.
    let given = ["--model", "bottom.safetensors", "--top", "codes.safetensors", "--top-k", "4"];
    let part = [&given[..], &["--batch-size", "3", "--sampler", "plain"]].concat();
    shards_join_to_the_whole(d, "prior-sample", &given, &part, 3, "safetensors");
    // One prior alone, and 2 samples in 4 shards: two of them empty.
    let alone = ["--model", "top.safetensors", "-n", "2", "--class", "4"];
    shards_join_to_the_whole(d, "prior-sample", &alone, &alone, 4, "npy");
    // Batch size and threads change no sample.
    let bytes = |threads: &str, batch: &str| {
        let out = format!("b{threads}-{batch}.safetensors");
        let mut cmd = tool("prior-sample");
        cmd.current_dir(d).env("RAYON_NUM_THREADS", threads).args(both).args(["--batch-size", batch, "-o", &out]);
        cmd.assert().success();
        std::fs::read(d.join(out)).unwrap()
    };
    let base = bytes("2", "100");
    assert!(bytes("1", "1") == base && bytes("2", "3") == base, "the batch size or the thread count changed a sample");
}

#[test]
fn ddpm_denoise_shards_join_to_the_whole_run_and_batches_change_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_tiny_ddpm(d, "m.safetensors");
    // From noise, with fresh noise at every DDIM step.
    let noise = ["--model", "m.safetensors", "-n", "7", "--sampler", "ddim", "--steps", "3", "--eta", "1"];
    shards_join_to_the_whole(d, "ddpm-denoise", &noise, &[&noise[..], &["--batch-size", "2"]].concat(), 3, "npy");
    // From x_t, ancestral.
    let x: Vec<f32> = (0..5 * 1024).map(|i| ((i % 17) as f32 - 8.0) / 5.0).collect();
    write_npy_f32(d, "xt.npy", &[5, 1, 32, 32], &x);
    let from = ["--model", "m.safetensors", "xt.npy", "--from-t", "3", "--seed", "9"];
    shards_join_to_the_whole(d, "ddpm-denoise", &from, &[&from[..], &["--batch-size", "1"]].concat(), 3, "npy");
    let bytes = |threads: &str, batch: &str| {
        let out = format!("b{threads}-{batch}.npy");
        let mut cmd = tool("ddpm-denoise");
        cmd.current_dir(d).env("RAYON_NUM_THREADS", threads).args(noise).args(["--batch-size", batch, "-o", &out]);
        cmd.assert().success();
        std::fs::read(d.join(out)).unwrap()
    };
    let base = bytes("2", "64");
    assert!(bytes("1", "1") == base && bytes("2", "4") == base, "the batch size or the thread count changed a sample");
}

#[test]
fn bad_shards_are_usage_errors_that_say_what_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [("3/3", "does not exist"), ("1/0", "N = 0"), ("a/2", "not a number"), ("2", "not K/N")];
    for name in ["vq-encode", "vq-decode", "prior-sample", "ddpm-denoise"] {
        for (bad, says) in cases {
            let out = tool(name)
                .current_dir(d)
                .args(["--model", "m.safetensors", "--shard", bad, "-o", "o.npy"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} --shard {bad}: {stderr}");
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.contains("--shard") && first.contains(says) && first.contains("expected K/N"),
                "{name}: {first}"
            );
            assert!(out.stdout.is_empty() && dir_entries(d).is_empty(), "{name} --shard {bad} wrote something");
        }
    }
}
