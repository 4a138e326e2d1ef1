//! img-classify: images -> class probabilities (or features) of a trained classifier.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ImageInputArgs, ModelArgs, OutputArgs, SeedArgs, ShardArgs};
use genimg::tools::classify::{img_classify, ClassifyOutput, ImgClassify};

const EXAMPLES: &str = "\
Examples:
  img-classify --model clf.safetensors samples.npy -o probs.npy
  img-classify --model clf.safetensors --data mnist --split test --features > feats.npy
  vq-decode --model vq.safetensors codes.safetensors | img-classify --model clf.safetensors > probs.npy
  img-classify --model vib.safetensors digits.npy --seed 3 > probs.npy
  img-classify --model clf.safetensors --data mnist --split train --shard 0/9 --features -o floor.npy
  img-classify --model pt_inception.safetensors --data emoji --features -o inception.npy

Writes .npy f32 [N, K]: each image's class probabilities (rows sum to 1), in input order;
with --features, [N, D]: clf-conv's penultimate layer (D = 128) or vib-mlp's posterior mean
(D = 256), for the sample-quality metrics of img-fid. vib-mlp averages its softmax over 12
draws of z, image i's from its own stream of --seed, so no row depends on --batch-size or
--shard (rows K of N, as in vq-encode). The images must have the classifier's channels and
size (28x28 and 32x32 are padded or cropped to each other). --model may also be pytorch-fid's
Inception-v3 weights (README: Inception features for FID): --features then writes their
pool3 features [N, 2048] of the images as they are (any size, grey or RGB).";

/// Classify images with a trained classifier (clf-conv, vib-mlp).
#[derive(Parser)]
#[command(name = "img-classify", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: ImageInputArgs,
    /// Write the penultimate-layer features [N, D] instead of probabilities.
    #[arg(long)]
    features: bool,
    /// Images per batch (changes no output; 100 ran 8 % faster than 500 on clf-conv, with
    /// half the memory).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("img-classify", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = ImgClassify {
        model: args.model.source(),
        images: args.input.source()?,
        output_kind: if args.features { ClassifyOutput::Features } else { ClassifyOutput::Probabilities },
        batch_size: args.batch_size as usize,
        shard: args.shard.shard(),
        seed: args.seed.seed,
        output: args.output.output,
        device: args.device.device.device()?,
    };
    img_classify(&request)?;
    Ok(())
}
