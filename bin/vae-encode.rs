//! vae-encode: images -> latent codes of a trained VAE.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ImageInputArgs, ModelArgs, OutputArgs, SeedArgs};
use genimg::data::stream::ImageStream;
use genimg::tasks::vae::{encode, VaeTask};

const EXAMPLES: &str = "\
Examples:
  vae-encode --model vae.safetensors digits.npy -o z.npy
  vae-encode --model vae.safetensors --data mnist --split test --sample > z.npy
  img-pack mnist --split test | vae-encode --model vae.safetensors | vae-decode --model vae.safetensors > recon.npy

Writes .npy f32 [N, latent]: the posterior mean, or one draw of z with --sample.";

/// Encode images to the latent space of a trained vae-mlp.
#[derive(Parser)]
#[command(name = "vae-encode", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: ImageInputArgs,
    /// Write one sample z ~ q(z|x) instead of the mean.
    #[arg(long)]
    sample: bool,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> ExitCode {
    cli::run("vae-encode", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.device.device()?;
    let ckpt = args.model.load(&device)?;
    let vae = VaeTask::from_checkpoint(ckpt, &device)?.vae;
    let geometry = vae.config.geometry()?;
    let i = &args.input;
    let mut images = ImageStream::open(&i.spec(), i.split, i.range, geometry, 1000)?;
    encode(&vae, &mut images, &args.output.output, args.sample, args.seed.seed, &device)?;
    Ok(())
}
