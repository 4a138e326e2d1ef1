//! vae-encode: images -> latent codes of a trained VAE.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ImageInputArgs, ModelArgs, OutputArgs, SeedArgs};
use genimg::tools::vae::{vae_encode, VaeEncode};

const EXAMPLES: &str = "\
Examples:
  vae-encode --model vae.safetensors digits.npy -o z.npy
  vae-encode --model vae.safetensors --data mnist --split test --sample > z.npy
  img-pack mnist --split test | vae-encode --model vae.safetensors | vae-decode --model vae.safetensors > recon.npy
  vae-encode --model vanilla_vae.safetensors --preset vae-conv --data emoji -o z.npy   # a PyTorch state dict

Writes .npy f32 [N, latent]: the posterior mean, or one draw of z with --sample.";

/// Encode images to the latent space of a trained VAE (vae-mlp, vae-conv).
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
    /// Images per batch (with --sample and --seed, fixes every draw).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("vae-encode", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = VaeEncode {
        model: args.model.source(),
        images: args.input.source()?,
        sample: args.sample,
        batch_size: args.batch_size as usize,
        seed: args.seed.seed,
        output: args.output.output,
        device: args.device.device.device()?,
    };
    vae_encode(&request)?;
    Ok(())
}
