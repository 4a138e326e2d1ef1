//! vq-decode: discrete codes -> images, with a trained VQ-VAE or VQ-VAE-2.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ModelArgs, OutputArgs, ShardArgs};
use genimg::data::PixelRange;
use genimg::io::{InputPath, OutputPath};
use genimg::tasks::vqvae2::DecodeOutput;
use genimg::tools::vq::{vq_decode, VqDecode};

const EXAMPLES: &str = "\
Examples:
  vq-decode --model vqvae2.safetensors codes.safetensors -o images.npy
  vq-decode --model vqvae2.safetensors codes.safetensors --png grid.png --cols 10
  prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 100 | vq-decode --model vqvae2.safetensors --png samples.png
  vq-decode --model vqvae2.safetensors codes.safetensors --shard 0/4 -o images.0.npy   # then tensor-cat images.{0..3}.npy

Reads codes as vq-encode writes them (or plain top/bottom integer tensors from another
program) and writes .npy f32 [N, 1, 32, 32] in [0,1] (--range 11 for [-1,1]), or a PNG grid.";

/// Decode discrete codes to images with a trained vqvae2-mnist (or one-level VQ-VAE).
#[derive(Parser)]
#[command(name = "vq-decode", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Codes: .safetensors (two levels) or .npy [N, H, W] (one level); `-` is stdin.
    #[arg(default_value = "-", value_name = "INPUT")]
    input: InputPath,
    /// Range of the output pixels: 01 for [0,1], 11 for [-1,1].
    #[arg(long, default_value = "01", value_name = "01|11")]
    range: PixelRange,
    /// Draw the images as one PNG grid into this file instead of writing an array.
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    png: Option<OutputPath>,
    /// With --png: images per row [default: a square grid].
    #[arg(long, value_name = "K", requires = "png", value_parser = clap::value_parser!(u32).range(1..))]
    cols: Option<u32>,
    /// Code maps per batch [default: 500, fewer for large images: as many as keep a batch's
    /// activations within 1 GiB, e.g. 128 at 128x128 and 32 at 256x256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("vq-decode", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let output = match args.png {
        Some(png) => DecodeOutput::Png(png, args.cols.map(|c| c as usize)),
        None => DecodeOutput::Array(args.output.output, args.range),
    };
    let request = VqDecode {
        model: args.model.source(),
        input: args.input,
        output,
        batch_size: args.batch_size.map(|b| b as usize),
        shard: args.shard.shard(),
        device: args.device.device.device()?,
    };
    vq_decode(&request)?;
    Ok(())
}
