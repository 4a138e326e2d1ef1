//! vae-eval: evaluates a trained VAE or VIB on held-out images; one JSON object on stdout.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use genimg::cli::{self, DataArgs, DeviceArgs, ModelArgs, OutputArgs, SeedArgs};
use genimg::data::{ImageSet, Split};
use genimg::models::ModelConfig;
use genimg::nn::Params;
use genimg::tasks::{vae::VaeTask, vib::VibTask};

const EXAMPLES: &str = "\
Examples:
  vae-eval --model vae.safetensors --data mnist --split test -k 5000
  vae-eval --model vib.safetensors                 # test error, I(Z;X), I(Z;Y)
  vae-eval --model vae.safetensors --data x.npy | jq .elbo

VAE: elbo, log_px (importance-weighted, k samples; k=1 is the ELBO), recon_nll, kl,
recon_mse, in nats per image. VIB: error (softmax averaged over 12 samples), i_zx, i_zy.";

/// Evaluate a trained vae-mlp or vib-mlp on held-out images.
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
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> ExitCode {
    cli::run("vae-eval", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.device.device()?;
    let ckpt = args.model.load(&device)?;
    ckpt.expect(&["vae-mlp", "vib-mlp"])?;
    let split =
        Some(args.data.split.unwrap_or(Split::Test)).filter(|_| args.data.data == genimg::data::DataSpec::Mnist);
    let data =
        ImageSet::load(&args.data.data, split, args.data.labels.as_ref(), args.data.range, ckpt.config.geometry()?)?;
    let params = Params::load(ckpt.tensors, &ckpt.origin, &device);
    let report = match ckpt.config {
        ModelConfig::Vae(c) => {
            genimg::tasks::vae::evaluate(&VaeTask::new(c, params)?.vae, &data, args.k, args.seed.seed, &device)?
        }
        ModelConfig::Vib(c) => {
            genimg::tasks::vib::evaluate(&VibTask::new(c, params)?.vib, &data, args.seed.seed, &device)?
        }
        other => anyhow::bail!("{}: is a {} checkpoint, expected vae-mlp or vib-mlp", ckpt.origin, other.name()),
    };
    let mut out = args.output.output.create()?;
    writeln!(out, "{}", serde_json::Value::Object(report)).context("writing the report")?;
    out.finish()?;
    Ok(())
}
