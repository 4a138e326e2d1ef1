//! vae-train: trains a network of a preset on images; the one training loop of the toolkit.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, AugmentArgs, DataArgs, DeviceArgs, EvalArgs, ModelOverrides, OutputArgs, SeedArgs, TrainArgs};
use genimg::models::{Family, Preset};
use genimg::tools::train::train_on_images;

/// The families vae-train trains.
const FAMILIES: &[Family] = &[Family::VaeMlp, Family::VaeConv, Family::VibMlp, Family::ClfConv, Family::VqVae2];

const EXAMPLES: &str = "\
Examples:
  vae-train --preset vae-mlp --data mnist --epochs 10 -o vae.safetensors
  vae-train --preset vib-mlp --epochs 10 --metrics vib.jsonl -o vib.safetensors
  vae-train --preset clf-conv --data emoji --epochs 3 -o clf.safetensors   # to score samples
  vae-train --preset vqvae2 --data emoji --epochs 3 -o vq.safetensors   # colour, 64x64
  vae-train --preset vqvae2 --data faces.npy --batch-size 32 -o vq.safetensors  # [N,3,256,256] u8
  vae-train --preset vae-mlp --likelihood gaussian --sigma learned --beta 4 -o bvae.safetensors
  vae-train --preset vae-conv --data emoji --epochs 20 -o conv.safetensors
  vae-train --data x.npy --labels y.npy --eval-data xt.npy -o m.safetensors
  vae-train --resume --epochs 20 -o vae.safetensors     # continue a run

Writes MODEL.safetensors (the network, config in its metadata) and, beside it,
MODEL.state.safetensors (optimizer state for --resume), after every epoch.
One JSON line of metrics per epoch goes to --metrics or stderr. The network takes the
training images' channels and size (stored in the model file; 28x28 digits are padded to
the 32x32 of the -mnist presets).";

/// Train a VAE (vae-mlp, or vae-conv for colour images), a Deep Variational Information
/// Bottleneck (vib-mlp), a convolutional classifier (clf-conv) or a VQ-VAE-2.
#[derive(Parser)]
#[command(name = "vae-train", version, after_help = EXAMPLES)]
struct Args {
    /// The network.
    #[arg(long, default_value = "vae-mlp", value_name = "NAME", value_parser = cli::presets_of(FAMILIES))]
    preset: Preset,
    #[command(flatten)]
    overrides: ModelOverrides,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    eval: EvalArgs,
    #[command(flatten)]
    augment: AugmentArgs,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("vae-train", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.overrides.apply(args.preset.config())?;
    let train =
        args.train.options(config.family(), args.seed.seed, &args.output.output, args.device.device.device()?)?;
    train_on_images("vae-train", &args.data.training(config, &args.eval, &args.augment, train)?)?;
    Ok(())
}
