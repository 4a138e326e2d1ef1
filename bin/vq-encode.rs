//! vq-encode: images -> discrete codes of a trained VQ-VAE or VQ-VAE-2.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ImageInputArgs, ModelArgs, OutputArgs, ShardArgs};
use genimg::io::InputPath;
use genimg::tools::vq::{vq_encode, VqEncode};

const EXAMPLES: &str = "\
Examples:
  vq-encode --model vqvae2.safetensors --data mnist --split train -o codes.safetensors
  vq-encode --model vqvae2.safetensors digits.npy --labels y.npy > codes.safetensors
  img-pack mnist --split test | vq-encode --model vqvae2.safetensors | vq-decode --model vqvae2.safetensors > recon.npy
  vq-encode --preset vqvae2 --model rosinality-vqvae.safetensors faces.npy -o codes.safetensors
  vq-encode --model vqvae2.safetensors big.npy --shard 2/8 -o codes.2.safetensors   # then tensor-cat codes.{0..7}.safetensors

Two levels write .safetensors: top i64 [N, H/8, W/8], bottom i64 [N, H/4, W/4] (4x4 and 8x8
for 32x32 digits), labels i64 [N] when the images have labels (the bundled sets do), and the
codebook sizes in the metadata (genimg.n_embed_top, genimg.n_embed_bottom). One level
(--levels 1) writes .npy i64 [N, H/4, W/4]. A plain PyTorch state dict (--preset) takes the
images' size; a trained model checks the images against its own.
Images are u8 0..255 or float in [0,1] (--range 11 for [-1,1]); 28x28 is zero-padded to 32x32.";

/// Encode images to the discrete codes of a trained vqvae2-mnist (or one-level VQ-VAE).
#[derive(Parser)]
#[command(name = "vq-encode", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: ImageInputArgs,
    /// Class labels of INPUT's images (.npy integers [N]), written beside the codes.
    #[arg(long, value_name = "FILE")]
    labels: Option<InputPath>,
    /// Images per batch [default: 500, fewer for large images: as many as keep a batch's
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
    cli::run("vq-encode", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = VqEncode {
        model: args.model.source(),
        images: args.input.source()?,
        labels: args.labels,
        batch_size: args.batch_size.map(|b| b as usize),
        shard: args.shard.shard(),
        output: args.output.output,
        device: args.device.device.device()?,
    };
    vq_encode(&request)?;
    Ok(())
}
