//! `make bench`: throughput of the toolkit's real code paths, as JSON lines on stdout.
//!
//! Each figure is the median of several repeats (this kind of machine is shared and noisy),
//! measured through the same functions the tools call: the training loop for images/s in
//! training, the streaming encoder and decoder for inference, the diffusion U-Net's forward
//! pass as the samplers call it. Set BENCH_REPEATS to change the number of repeats
//! (default 5).

mod common;

use candle_core::Device;
use common::{repeats, seconds, train_digits, train_rate};
use genimg::data::{Geometry, Split};
use genimg::models::{ModelConfig, Preset};
use genimg::nn::Params;
use serde_json::json;

/// Repeats of each figure unless BENCH_REPEATS says otherwise.
const REPEATS: usize = 5;

/// ddpm-unet-mnist: images per second of training at batch 128 (the first 512 train
/// digits, four steps, through the training loop) and milliseconds of one forward pass at
/// batch 64, medians of repeats.
fn ddpm(dir: &std::path::Path) -> (f64, f64) {
    let config = Preset::DdpmUnetMnist.config();
    let data = train_digits(config.geometry().expect("geometry"), Some(512));
    let rate = train_rate(&config, &data, dir, repeats(REPEATS));
    let ModelConfig::Ddpm(c) = config else { unreachable!() };
    let task = genimg::tasks::ddpm::DdpmTask::new(c, Params::init(0, &Device::Cpu)).expect("task");
    let x = genimg::rng::Rng::new(0, genimg::rng::Stream::Eval, 0).normal(&[64, 1, 32, 32], &Device::Cpu).expect("x");
    let t: Vec<usize> = (0..64).map(|i| i * 15).collect();
    let forward = || task.model.forward(&x, &t, None, None).expect("forward");
    forward();
    (rate, seconds(repeats(REPEATS), || drop(forward())) * 1e3)
}

/// Images per second of `f`, which processes `n` images, median of repeats.
fn rate(n: usize, f: impl FnMut()) -> f64 {
    n as f64 / seconds(repeats(REPEATS), f)
}

fn main() {
    genimg::cli::configure_threads();
    let dir = tempfile::tempdir().expect("temporary directory");
    for preset in [Preset::VaeMlp, Preset::VibMlp] {
        let (_, batch) = preset.family().train_defaults();
        let config = preset.config();
        let data = train_digits(config.geometry().expect("geometry"), None);
        let r = train_rate(&config, &data, dir.path(), repeats(REPEATS));
        println!(
            "{}",
            json!({"bench": "train", "model": preset.name(), "batch_size": batch, "images_per_s": r.round(), "repeats": repeats(REPEATS)})
        );
    }

    let (ddpm_rate, ddpm_ms) = ddpm(dir.path());
    println!(
        "{}",
        json!({"bench": "train", "model": "ddpm-unet-mnist", "batch_size": 128, "images_per_s": (ddpm_rate * 10.0).round() / 10.0, "repeats": repeats(REPEATS)})
    );
    println!(
        "{}",
        json!({"bench": "forward", "model": "ddpm-unet-mnist", "batch_size": 64, "ms": ddpm_ms.round(), "repeats": repeats(REPEATS)})
    );

    // Streaming encode and decode of the 1,000 test digits with a fresh vae-mlp.
    let ModelConfig::Vae(config) = Preset::VaeMlp.config() else { unreachable!() };
    let vae = genimg::tasks::vae::VaeTask::new(config, Params::init(0, &Device::Cpu)).expect("vae").vae;
    let z_path = dir.path().join("z.npy");
    let z_out = genimg::io::OutputPath::File(z_path.clone());
    let encode = rate(1000, || {
        let mut images = genimg::data::stream::ImageStream::open(
            &genimg::data::DataSpec::Bundled(genimg::data::Bundled::Mnist),
            Some(Split::Test),
            Default::default(),
            Some(Geometry::MNIST),
            1000,
        )
        .expect("stream");
        genimg::tasks::vae::encode(&vae, &mut images, &z_out, false, 0, &Device::Cpu).expect("encode");
    });
    println!("{}", json!({"bench": "encode", "model": "vae-mlp", "images": 1000, "images_per_s": encode.round()}));
    let latents = genimg::tasks::vae::Latents::File(genimg::io::InputPath::File(z_path));
    let x_out = genimg::io::OutputPath::File(dir.path().join("x.npy"));
    let decode =
        rate(1000, || genimg::tasks::vae::decode(&vae, &latents, &x_out, 1000, 0, &Device::Cpu).expect("decode"));
    println!("{}", json!({"bench": "decode", "model": "vae-mlp", "images": 1000, "images_per_s": decode.round()}));
}
