//! vae-train: trains a network of a preset on images; the one training loop of the toolkit.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DataArgs, DeviceArgs, ModelOverrides, OutputArgs, SeedArgs, TrainArgs};
use genimg::models::ModelConfig;

const EXAMPLES: &str = "\
Examples:
  vae-train --preset vae-mlp --data mnist --epochs 10 -o vae.safetensors
  vae-train --preset vib-mlp --epochs 10 --metrics vib.jsonl -o vib.safetensors
  vae-train --preset vae-mlp --likelihood gaussian --sigma learned --beta 4 -o bvae.safetensors
  vae-train --data x.npy --labels y.npy --eval-data xt.npy -o m.safetensors
  vae-train --resume --epochs 20 -o vae.safetensors     # continue a run

Writes MODEL.safetensors (the network, config in its metadata) and, beside it,
MODEL.state.safetensors (optimizer state for --resume), after every epoch.
One JSON line of metrics per epoch goes to --metrics or stderr.";

/// Train a VAE (vae-mlp) or a Deep Variational Information Bottleneck (vib-mlp).
#[derive(Parser)]
#[command(name = "vae-train", version, after_help = EXAMPLES)]
struct Args {
    /// The network: vae-mlp or vib-mlp.
    #[arg(long, default_value = "vae-mlp", value_name = "NAME")]
    preset: String,
    #[command(flatten)]
    overrides: ModelOverrides,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> ExitCode {
    cli::run("vae-train", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.overrides.apply(ModelConfig::preset(&args.preset)?)?;
    let device = args.device.device.device()?;
    cli::train_on_images("vae-train", config, &args.data, &args.train, args.seed.seed, &args.output.output, device)?;
    Ok(())
}
