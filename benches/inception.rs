//! `make bench`, the FID Inception: seconds of `InceptionV3::features` for 1,000 images of
//! 3x299x299 (BENCH_INCEPTION_IMAGES to change the count), one batch as a caller passes it,
//! as a JSON line on stdout with the time extrapolated to 1,000 images. The weights are seeded
//! (the time does not depend on their values); the median of BENCH_REPEATS runs (default 1).

#[allow(dead_code)]
mod common;

use candle_core::{Device, Tensor};
use common::{repeats, seconds};
use genimg::models::inception::InceptionV3;
use genimg::nn::Params;
use serde_json::json;

fn main() {
    genimg::cli::configure_threads();
    let images: usize = std::env::var("BENCH_INCEPTION_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let d = Device::Cpu;
    let net = InceptionV3::new(&mut Params::init(0, &d)).expect("network");
    let x = Tensor::rand(0f32, 1f32, (images, 3, 299, 299), &d).expect("images");
    let t = seconds(repeats(1), || {
        net.features(&x).expect("features");
    });
    println!(
        "{}",
        json!({"bench": "inception-features", "images": images, "size": 299, "seconds": (t * 100.0).round() / 100.0,
               "seconds_per_1000": (t * 1000.0 / images as f64).round(), "images_per_s": (images as f64 / t * 10.0).round() / 10.0})
    );
}
