//! ddpm-train: trains the DDPM noise-prediction U-Net (diffusers' UNet2DModel: ddpm-unet-mnist,
//! ddpm-cifar10, or a --unet-config) with the shared loop.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{
    self, DataArgs, DdpmOverrides, DeviceArgs, EvalArgs, OutputArgs, SeedArgs, TrainArgs, UnetConfigArgs,
};
use genimg::models::{Family, Preset};
use genimg::tools::train::train_on_images;

const EXAMPLES: &str = "\
Examples:
  ddpm-train --preset ddpm-unet-mnist --data mnist --epochs 10 -o ddpm.safetensors
  ddpm-train --schedule cosine --metrics ddpm.jsonl -o ddpm-cos.safetensors
  ddpm-train --preset ddpm-cifar10 --data emoji --size 32 --batch-size 16 -o cifar.safetensors   # the paper's CIFAR-10 net
  ddpm-train --unet-config config.json --data x.npy -o unet.safetensors   # any diffusers UNet2DModel of these blocks
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
    #[arg(long, default_value = "ddpm-unet-mnist", value_name = "NAME", value_parser = cli::presets_of(&[Family::DdpmUnet]))]
    preset: Preset,
    #[command(flatten)]
    unet: UnetConfigArgs,
    #[command(flatten)]
    overrides: DdpmOverrides,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    eval: EvalArgs,
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
    // Refused rather than ignored until the U-Net takes a class embedding.
    if args.data.labels.is_some() || args.eval.eval_labels.is_some() {
        anyhow::bail!("--labels and --eval-labels: ddpm-train trains unconditional models; class conditioning is not supported yet");
    }
    let network = match args.unet.plain()? {
        Some(plain) => plain.config,
        None => args.preset.config(),
    };
    let config = args.overrides.apply(network)?;
    let train =
        args.train.options(config.family(), args.seed.seed, &args.output.output, args.device.device.device()?)?;
    train_on_images("ddpm-train", &args.data.training(config, &args.eval, train)?)?;
    Ok(())
}
