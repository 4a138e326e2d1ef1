//! What the benches share: how many repeats, medians of timed runs, and the images/s of an
//! epoch of the training loop.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use genimg::data::{Dataset, Geometry, ImageSet, Split};
use genimg::models::ModelConfig;
use genimg::nn::{AdamConfig, Params};
use genimg::train::{train, TrainOptions};

/// Repeats of each figure: BENCH_REPEATS, else `default`.
pub fn repeats(default: usize) -> usize {
    std::env::var("BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of `f`, median of `runs`.
pub fn seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Images per second of one epoch of the shared loop over `data` with the preset's learning
/// rate and batch size (the loop's own `images_per_s`), median of `runs` from fresh weights.
pub fn train_rate(config: &ModelConfig, data: &dyn Dataset, dir: &Path, runs: usize) -> f64 {
    train_rate_at(config, data, dir, runs, config.family().train_defaults().1)
}

/// [`train_rate`] at another batch size.
pub fn train_rate_at(config: &ModelConfig, data: &dyn Dataset, dir: &Path, runs: usize, batch_size: usize) -> f64 {
    let (lr, _) = config.family().train_defaults();
    median(
        (0..runs)
            .map(|r| {
                let mut task =
                    genimg::tasks::build(config.clone(), Params::init(r as u64, &Device::Cpu)).expect("task");
                let opts = TrainOptions {
                    epochs: 1,
                    batch_size,
                    seed: r as u64,
                    adam: AdamConfig::with_lr(lr),
                    recipe: Default::default(),
                    output: dir.join("bench.safetensors"),
                    metrics: Some(dir.join("metrics.jsonl")),
                    resume: false,
                    device: Device::Cpu,
                };
                let last = train(task.as_mut(), data, None, &opts).expect("training").expect("one epoch ran");
                last["images_per_s"].as_f64().expect("images_per_s")
            })
            .collect(),
    )
}

/// The first `n` bundled train digits, unlabelled, fitted to `geometry` (all 9,000 with
/// `None`).
pub fn train_digits(geometry: Geometry, n: Option<usize>) -> ImageSet {
    let all = ImageSet::bundled(genimg::data::Bundled::Mnist, Split::Train, geometry).expect("bundled data");
    match n {
        None => all,
        Some(n) => {
            let mut head = all.head(n);
            head.name = format!("mnist:train[..{n}]");
            head.labels = None;
            head
        }
    }
}
