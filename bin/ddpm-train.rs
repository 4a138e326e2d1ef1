//! ddpm-train: trains the DDPM noise-prediction U-Net (ddpm-unet-mnist) with the shared loop.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DataArgs, DdpmOverrides, DeviceArgs, OutputArgs, SeedArgs, TrainArgs};
use genimg::models::ModelConfig;

const EXAMPLES: &str = "\
Examples:
  ddpm-train --preset ddpm-unet-mnist --data mnist --epochs 10 -o ddpm.safetensors
  ddpm-train --schedule cosine --metrics ddpm.jsonl -o ddpm-cos.safetensors
  ddpm-train --base-channels 16 --epochs 2 -o small.safetensors   # a smaller U-Net
  ddpm-train --resume --epochs 20 -o ddpm.safetensors             # continue a run

Writes MODEL.safetensors (the moving average of the weights, which sampling uses; config
in its metadata) and, beside it, MODEL.state.safetensors (raw weights, the average, Adam's
state, for --resume), after every epoch. One JSON line of metrics per epoch goes to
--metrics or stderr: train_mse (the simple loss), and on held-out data mse and ema_mse,
the noise-prediction error of the raw and averaged weights with fixed noise.";

/// Train a denoising diffusion model (Ho et al. 2020) on images.
#[derive(Parser)]
#[command(name = "ddpm-train", version, after_help = EXAMPLES)]
struct Args {
    /// The network.
    #[arg(long, default_value = "ddpm-unet-mnist", value_name = "NAME")]
    preset: String,
    #[command(flatten)]
    overrides: DdpmOverrides,
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
    cli::run("ddpm-train", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.overrides.apply(ModelConfig::preset(&args.preset)?)?;
    let device = args.device.device.device()?;
    cli::train_on_images("ddpm-train", config, &args.data, &args.train, args.seed.seed, &args.output.output, device)?;
    Ok(())
}
