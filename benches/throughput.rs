//! `make bench`: throughput of the toolkit's real code paths, as JSON lines on stdout.
//!
//! Each figure is the median of several repeats (this kind of machine is shared and noisy),
//! measured through the same functions the tools call: the training loop for images/s in
//! training, the streaming encoder and decoder for inference, the diffusion U-Net's forward
//! pass as the samplers call it. Set BENCH_REPEATS to change the number of repeats
//! (default 5).

use std::time::Instant;

use candle_core::Device;
use genimg::data::{Geometry, ImageSet, Split};
use genimg::models::ModelConfig;
use genimg::nn::{AdamConfig, Params};
use genimg::train::{train, TrainOptions};
use serde_json::json;

fn repeats() -> usize {
    std::env::var("BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Images per second of one training epoch over the bundled train split, median of repeats.
fn train_throughput(preset: &str, dir: &std::path::Path) -> f64 {
    let config = ModelConfig::preset(preset).expect("preset");
    let data = ImageSet::mnist(Split::Train, config.geometry().expect("geometry")).expect("bundled data");
    let (lr, batch_size) = config.train_defaults();
    let rates = (0..repeats())
        .map(|r| {
            let mut task = genimg::tasks::build(config.clone(), Params::init(r as u64, &Device::Cpu)).expect("task");
            let opts = TrainOptions {
                epochs: 1,
                batch_size,
                seed: r as u64,
                adam: AdamConfig::with_lr(lr),
                output: dir.join(format!("{preset}.safetensors")),
                metrics: Some(dir.join("metrics.jsonl")),
                resume: false,
                device: Device::Cpu,
            };
            let last = train(task.as_mut(), &data, None, &opts).expect("training");
            last["images_per_s"].as_f64().expect("images_per_s")
        })
        .collect();
    median(rates)
}

/// ddpm-unet-mnist: images per second of training at batch 128 (the first 512 train
/// digits, four steps, through the training loop) and milliseconds of one forward pass at
/// batch 64, medians of repeats.
fn ddpm(dir: &std::path::Path) -> (f64, f64) {
    let config = ModelConfig::preset("ddpm-unet-mnist").expect("preset");
    let full = ImageSet::mnist(Split::Train, config.geometry().expect("geometry")).expect("bundled data");
    let n = 512;
    let data = ImageSet { pixels: full.pixels[..n * full.geometry.pixels()].to_vec(), labels: None, ..full };
    let (lr, batch_size) = config.train_defaults();
    let rates = (0..repeats())
        .map(|r| {
            let mut task = genimg::tasks::build(config.clone(), Params::init(r as u64, &Device::Cpu)).expect("task");
            let opts = TrainOptions {
                epochs: 1,
                batch_size,
                seed: r as u64,
                adam: AdamConfig::with_lr(lr),
                output: dir.join("ddpm.safetensors"),
                metrics: Some(dir.join("metrics.jsonl")),
                resume: false,
                device: Device::Cpu,
            };
            let last = train(task.as_mut(), &data, None, &opts).expect("training");
            last["images_per_s"].as_f64().expect("images_per_s")
        })
        .collect();
    let ModelConfig::Ddpm(c) = config else { unreachable!() };
    let task = genimg::tasks::ddpm::DdpmTask::new(c, Params::init(0, &Device::Cpu)).expect("task");
    let x = genimg::rng::Rng::new(0, genimg::rng::Stream::Eval, 0).normal(&[64, 1, 32, 32], &Device::Cpu).expect("x");
    let t: Vec<usize> = (0..64).map(|i| i * 15).collect();
    let forward = || task.model.forward(&x, &t, None).expect("forward");
    forward();
    let ms = median(
        (0..repeats())
            .map(|_| {
                let start = Instant::now();
                forward();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    (median(rates), ms)
}

/// Images per second of `f`, which processes `n` images, median of repeats.
fn rate(n: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..repeats())
            .map(|_| {
                let t = Instant::now();
                f();
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    genimg::cli::configure_threads();
    let dir = tempfile::tempdir().expect("temporary directory");
    for preset in ["vae-mlp", "vib-mlp"] {
        let (_, batch) = ModelConfig::preset(preset).expect("preset").train_defaults();
        let r = train_throughput(preset, dir.path());
        println!(
            "{}",
            json!({"bench": "train", "model": preset, "batch_size": batch, "images_per_s": r.round(), "repeats": repeats()})
        );
    }

    let (ddpm_rate, ddpm_ms) = ddpm(dir.path());
    println!(
        "{}",
        json!({"bench": "train", "model": "ddpm-unet-mnist", "batch_size": 128, "images_per_s": (ddpm_rate * 10.0).round() / 10.0, "repeats": repeats()})
    );
    println!(
        "{}",
        json!({"bench": "forward", "model": "ddpm-unet-mnist", "batch_size": 64, "ms": ddpm_ms.round(), "repeats": repeats()})
    );

    // Streaming encode and decode of the 1,000 test digits with a fresh vae-mlp.
    let ModelConfig::Vae(config) = ModelConfig::preset("vae-mlp").expect("preset") else { unreachable!() };
    let vae = genimg::tasks::vae::VaeTask::new(config, Params::init(0, &Device::Cpu)).expect("vae").vae;
    let z_path = dir.path().join("z.npy");
    let z_out = genimg::io::OutputPath::File(z_path.clone());
    let encode = rate(1000, || {
        let mut images = genimg::data::stream::ImageStream::open(
            &genimg::data::DataSpec::Mnist,
            Some(Split::Test),
            Default::default(),
            Geometry::MNIST,
            1000,
        )
        .expect("stream");
        genimg::tasks::vae::encode(&vae, &mut images, &z_out, false, 0, &Device::Cpu).expect("encode");
    });
    println!("{}", json!({"bench": "encode", "model": "vae-mlp", "images": 1000, "images_per_s": encode.round()}));
    let latents = genimg::tasks::vae::Latents::File(genimg::io::InputPath::File(z_path));
    let x_out = genimg::io::OutputPath::File(dir.path().join("x.npy"));
    let decode = rate(1000, || genimg::tasks::vae::decode(&vae, &latents, &x_out, 0, &Device::Cpu).expect("decode"));
    println!("{}", json!({"bench": "decode", "model": "vae-mlp", "images": 1000, "images_per_s": decode.round()}));
}
