//! vae-eval: evaluates a trained VAE or VIB on held-out images; one JSON object on stdout.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DataArgs, DeviceArgs, ModelArgs, OutputArgs, SeedArgs};
use genimg::tools::vae::{vae_eval, VaeEval};

const EXAMPLES: &str = "\
Examples:
  vae-eval --model vae.safetensors --data mnist --split test -k 5000
  vae-eval --model vib.safetensors                 # test error, I(Z;X), I(Z;Y)
  vae-eval --model clf.safetensors --data emoji    # test error and cross-entropy
  vae-eval --model vae.safetensors --data x.npy | jq .elbo
  vae-eval --model conv.safetensors --data emoji -k 100 | jq .log_px_bits_per_dim

VAE: elbo, log_px (importance-weighted, k samples; k=1 is the ELBO), recon_nll, kl,
recon_mse, in nats per image; vae-conv also elbo_bits_per_dim and log_px_bits_per_dim
(a discretized Gaussian over the 256 levels, with the model's fixed_sigma).
VIB: error (softmax averaged over 12 samples), i_zx, i_zy.
clf-conv: error, ce (nats).";

/// Evaluate a trained VAE (vae-mlp, vae-conv) or classifier (vib-mlp, clf-conv) on held-out images.
#[derive(Parser)]
#[command(name = "vae-eval", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Importance samples per image for log p(x) (VAE); 0 skips the estimate.
    #[arg(short, default_value_t = 1000, value_name = "K")]
    k: usize,
    /// Images per batch (with --seed, fixes every draw).
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("vae-eval", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = VaeEval {
        model: args.model.source(),
        data: args.data.data.sized(args.data.size)?,
        split: args.data.split,
        labels: args.data.labels,
        range: args.data.range,
        k: args.k,
        batch_size: args.batch_size as usize,
        seed: args.seed.seed,
        output: args.output.output,
        device: args.device.device.device()?,
    };
    vae_eval(&request)?;
    Ok(())
}
