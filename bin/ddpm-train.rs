//! ddpm-train: trains the DDPM noise-prediction U-Net (diffusers' UNet2DModel: ddpm-unet-mnist,
//! ddpm-cifar10, or a --unet-config) with the shared loop.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{
    self, AugmentArgs, DataArgs, DdpmOverrides, DeviceArgs, EvalArgs, OutputArgs, SeedArgs, TrainArgs, UnetConfigArgs,
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
  ddpm-train --data emoji --size 32 --flip --lr-warmup 5000 --grad-clip 1 -o e.safetensors
  ddpm-train --resume --epochs 20 -o ddpm.safetensors             # continue a run

On labelled data (the bundled sets, or --labels y.npy) the model is class-conditional: a class
embedding is added to the time embedding, and each label is dropped to a null class with
probability --p-uncond (0.1), so the one network also predicts unconditionally, as
classifier-free guidance needs (ddpm-denoise --guidance W). --unconditional ignores labels.

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
    /// Ignore the labels of labelled data (the bundled sets are): train an unconditional model.
    #[arg(long)]
    unconditional: bool,
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
    cli::run("ddpm-train", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.unconditional && args.data.labels.is_some() {
        anyhow::bail!("--labels and --unconditional: an unconditional model takes no labels");
    }
    let network = match args.unet.plain()? {
        Some(plain) => plain.config,
        None => args.preset.config(),
    };
    let config = args.overrides.apply(network)?;
    let train =
        args.train.options(config.family(), args.seed.seed, &args.output.output, args.device.device.device()?)?;
    let mut request = args.data.training(config, &args.eval, &args.augment, train)?;
    request.class_conditional = !args.unconditional;
    train_on_images("ddpm-train", &request)?;
    Ok(())
}
