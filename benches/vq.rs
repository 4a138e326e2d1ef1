//! `make bench`, VQ-VAE-2 and PixelCNN priors: training images/s, encoding and decoding
//! images/s, and the two samplers' seconds, as JSON lines on stdout.
//!
//! Training runs the shared loop over the first 1,024 train digits (8 steps of 128; the
//! figures of the issue were taken the same way), encoding and decoding stream the 1,000
//! test digits in batches of 1,000, through the functions the tools call. Each figure is the
//! median of BENCH_REPEATS runs (default 3).

mod common;

use candle_core::{Device, Tensor};
use common::{repeats, seconds, train_digits, train_rate};
use genimg::data::code_set::CodeSet;
use genimg::data::codes::Level;
use genimg::data::stream::ImageStream;
use genimg::data::Split;
use genimg::io::{InputPath, OutputPath};
use genimg::models::pixelcnn::{sample, PixelCnnConfig, SampleMethod, SampleOptions, TopCondition};
use genimg::models::vqvae2::VqVae2Config;
use genimg::models::ModelConfig;
use genimg::nn::Params;
use genimg::rng::{Rng, RowStreams, Stream};
use genimg::tasks::prior::PriorTask;
use genimg::tasks::vqvae2::{decode, encode, DecodeOutput, VqTask};
use serde_json::json;

/// Repeats of each figure unless BENCH_REPEATS says otherwise.
const REPEATS: usize = 3;

const TRAIN_IMAGES: usize = 1024;

/// A code set of `n` random codes (training speed does not depend on their values).
fn random_codes(n: usize, side: usize, labels: bool, top: bool) -> CodeSet {
    let mut rng = Rng::new(0, Stream::Eval, side as u64);
    let mut draw =
        |count: usize, k: u32| -> Vec<u32> { (0..count).map(|_| rand::Rng::random_range(rng.inner(), 0..k)).collect() };
    let level = |s: usize| Level { height: s, width: s, n_embed: Some(512) };
    CodeSet {
        name: "random".into(),
        n,
        level: level(side),
        codes: draw(n * side * side, 512),
        labels: labels.then(|| draw(n, 10)),
        top: top.then(|| (level(side / 2), draw(n * side * side / 4, 512))),
    }
}

fn main() {
    genimg::cli::configure_threads();
    let dir = tempfile::tempdir().expect("temporary directory");
    let d = dir.path();
    let subset = train_digits(VqVae2Config::vqvae2_mnist().geometry(), Some(TRAIN_IMAGES));
    for levels in [2, 1] {
        let config = ModelConfig::VqVae2(VqVae2Config { levels, ..VqVae2Config::vqvae2_mnist() });
        let rate = train_rate(&config, &subset, d, repeats(REPEATS));
        println!(
            "{}",
            json!({"bench": "train", "model": "vqvae2-mnist", "levels": levels, "batch_size": 128, "images": TRAIN_IMAGES, "images_per_s": rate.round()})
        );
    }

    let model = VqTask::new(VqVae2Config::vqvae2_mnist(), Params::init(0, &Device::Cpu)).expect("model").model;
    let codes_path = d.join("codes.safetensors");
    let t = seconds(repeats(REPEATS), || {
        let mut images = ImageStream::open(
            &genimg::data::DataSpec::Bundled(genimg::data::Bundled::Mnist),
            Some(Split::Test),
            Default::default(),
            Some(model.config.geometry()),
            1000,
        )
        .expect("stream");
        encode(&model, &mut images, &OutputPath::File(codes_path.clone()), &Device::Cpu).expect("encode");
    });
    println!(
        "{}",
        json!({"bench": "encode", "model": "vqvae2-mnist", "images": 1000, "images_per_s": (1000.0 / t).round()})
    );
    let t = seconds(repeats(REPEATS), || {
        let mut codes = genimg::data::codes::CodeReader::open(&InputPath::File(codes_path.clone())).expect("codes");
        let out = DecodeOutput::Array(OutputPath::File(d.join("x.npy")), Default::default());
        decode(&model, &mut codes, &out, 1000, &Device::Cpu).expect("decode");
    });
    println!(
        "{}",
        json!({"bench": "decode", "model": "vqvae2-mnist", "images": 1000, "images_per_s": (1000.0 / t).round()})
    );

    for (side, labels, top) in [(8, false, false), (8, true, true), (4, false, false), (4, true, false)] {
        let codes = random_codes(TRAIN_IMAGES, side, labels, top);
        let config = ModelConfig::PixelCnn(PixelCnnConfig {
            height: side,
            width: side,
            n_classes: labels.then_some(10),
            top: top.then_some(TopCondition { n_embed: 512, height: side / 2, width: side / 2 }),
            ..PixelCnnConfig::pixelcnn_prior()
        });
        let rate = train_rate(&config, &codes, d, repeats(REPEATS));
        println!(
            "{}",
            json!({"bench": "train", "model": "pixelcnn-prior", "codes": format!("{side}x{side}"), "labels": labels, "top": top, "images_per_s": rate.round()})
        );
    }

    // Plain sampling at 16x16 runs the network 256 times: 20 samples, once.
    for (side, n, runs) in [(4, 100, repeats(REPEATS)), (8, 100, repeats(REPEATS)), (16, 20, 1)] {
        let config = PixelCnnConfig { height: side, width: side, ..PixelCnnConfig::pixelcnn_prior() };
        let prior = PriorTask::new(config, Params::init(0, &Device::Cpu)).expect("prior").model;
        let mut times = Vec::new();
        for method in [SampleMethod::Cached, SampleMethod::Plain] {
            let opts = SampleOptions { method, ..SampleOptions::default() };
            let t = seconds(runs, || {
                let codes: Tensor = sample(&prior, n, None, None, &opts, &mut RowStreams::new(0, Stream::Sample, 0..n))
                    .expect("sample");
                assert_eq!(codes.dims(), [n, side, side]);
            });
            times.push(t);
        }
        println!(
            "{}",
            json!({"bench": "sample", "model": "pixelcnn-prior", "codes": format!("{side}x{side}"), "samples": n, "cached_s": (times[0] * 1000.0).round() / 1000.0, "plain_s": (times[1] * 1000.0).round() / 1000.0, "speedup": (times[1] / times[0] * 10.0).round() / 10.0})
        );
    }
}
