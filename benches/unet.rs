//! `make bench`: the diffusion U-Net at the scale of the DDPM paper, `ddpm-cifar10`
//! (diffusers' UNet2DModel of google/ddpm-cifar10-32, 35.7 M parameters), as JSON lines on
//! stdout: images/s of training at batch 16 through the training loop (the first 64 bundled
//! emoji at 3x32x32, four steps) and milliseconds of one forward pass at batch 16 as the
//! samplers call it, medians of repeats (BENCH_REPEATS, default 3). benches/unet.sh runs this
//! and its PyTorch peer (benches/peer/unet_cifar10.py, diffusers itself) and prints the ratios.

// The helpers shared by every bench; this one uses three of them.
#[allow(dead_code)]
mod common;

use candle_core::Device;
use common::{repeats, seconds, train_rate_at};
use genimg::data::{Bundled, ImageSet, Split};
use genimg::models::{ModelConfig, Preset};
use genimg::nn::Params;
use serde_json::json;

const REPEATS: usize = 3;
const BATCH: usize = 16;

fn main() {
    genimg::cli::configure_threads();
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = Preset::DdpmCifar10.config();
    let geometry = config.geometry().expect("geometry");
    let all = ImageSet::bundled(Bundled::Emoji { side: 32 }, Split::Train, geometry).expect("bundled emoji");
    let n = 4 * BATCH;
    let mut data = all.head(n);
    data.name = format!("emoji:train[..{n}]");
    data.labels = None;
    let rate = train_rate_at(&config, &data, dir.path(), repeats(REPEATS), BATCH);
    println!(
        "{}",
        json!({"bench": "train", "model": "ddpm-cifar10", "batch_size": BATCH, "images_per_s": (rate * 100.0).round() / 100.0, "repeats": repeats(REPEATS)})
    );
    let ModelConfig::Ddpm(c) = config else { unreachable!("a U-Net preset") };
    let task = genimg::tasks::ddpm::DdpmTask::new(c, Params::init(0, &Device::Cpu)).expect("task");
    let x =
        genimg::rng::Rng::new(0, genimg::rng::Stream::Eval, 0).normal(&[BATCH, 3, 32, 32], &Device::Cpu).expect("x");
    let t: Vec<usize> = (0..BATCH).map(|i| i * 60).collect();
    let forward = || task.model.forward(&x, &t, None, None).expect("forward");
    forward();
    let ms = seconds(repeats(REPEATS), || drop(forward())) * 1e3;
    println!(
        "{}",
        json!({"bench": "forward", "model": "ddpm-cifar10", "batch_size": BATCH, "ms": ms.round(), "repeats": repeats(REPEATS)})
    );
}
