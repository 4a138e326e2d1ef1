//! vae-decode: latent codes (or draws from the prior) -> images, with a trained VAE.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ModelArgs, OutputArgs, SeedArgs};
use genimg::io::InputPath;
use genimg::tasks::vae::Latents;
use genimg::tools::vae::{vae_decode, VaeDecode};

const EXAMPLES: &str = "\
Examples:
  vae-decode --model vae.safetensors z.npy -o images.npy
  vae-decode --model vae.safetensors --prior 64 --seed 1 | img-grid --cols 8 -o samples.png
  vae-decode --model vae2d.safetensors --manifold 20 | img-grid --cols 20 -o manifold.png

Writes .npy f32 [N, C, H, W] in [0,1] (1x28x28 for vae-mlp, 3x64x64 for vae-conv):
the mean of p(x|z).";

/// Decode latent codes, or samples of the prior, to images with a trained VAE (vae-mlp,
/// vae-conv).
#[derive(Parser)]
#[command(name = "vae-decode", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Latent codes (.npy f32 [N, latent]); `-` is stdin.
    #[arg(value_name = "INPUT", conflicts_with_all = ["prior", "manifold"])]
    input: Option<InputPath>,
    /// Decode N draws of z from the prior N(0, I) instead of INPUT.
    #[arg(long, value_name = "N", conflicts_with = "manifold")]
    prior: Option<usize>,
    /// For a 2-D latent space: decode a SIDE x SIDE grid at the normal's quantiles
    /// (Kingma & Welling, Figure 4).
    #[arg(long, value_name = "SIDE")]
    manifold: Option<usize>,
    /// Codes per batch (with --prior and --seed, fixes every draw).
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
    cli::run("vae-decode", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let latents = match (args.prior, args.manifold) {
        (Some(n), _) => Latents::Prior(n),
        (_, Some(side)) => Latents::Manifold(side),
        _ => Latents::File(args.input.unwrap_or(InputPath::Stdin)),
    };
    let request = VaeDecode {
        model: args.model.source(),
        latents,
        batch_size: args.batch_size as usize,
        seed: args.seed.seed,
        output: args.output.output,
        device: args.device.device.device()?,
    };
    vae_decode(&request)?;
    Ok(())
}
