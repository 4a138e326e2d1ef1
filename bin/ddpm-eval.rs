//! ddpm-eval: the variational bound of a trained diffusion model on held-out images, in bits
//! per dimension; one JSON object on stdout.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DataArgs, DeviceArgs, ModelArgs, OutputArgs, SeedArgs, UnetConfigArgs};
use genimg::diffusion::Variance;
use genimg::tasks::ddpm::BoundOptions;
use genimg::tools::ddpm::{ddpm_eval, DdpmEval};

const EXAMPLES: &str = "\
Examples:
  ddpm-eval --model ddpm.safetensors -n 100 | jq .bits_per_dim
  ddpm-eval --model ddpm.safetensors --data xt.npy --var beta-tilde
  ddpm-eval --model ddpm.safetensors -n 16 | jq -c '.terms_bpd' > lt.json   # L_t against t
  ddpm-eval --model diffusion_pytorch_model.safetensors --preset ddpm-cifar10 --data cifar.npy -n 100

The bound of Ho et al. (2020), eq. 5, as their Table 2 reports it: bits_per_dim is the mean
over images of L_T (prior_bpd) + the KL terms of t = 1..T-1 (kl_bpd) + the discretized
Gaussian decoder's -log p(x_0 | x_1) over the 256 levels (decoder_bpd), in bits per pixel
and channel; terms_bpd[t] is each step's term (terms_bpd[0] the decoder). T network calls
per batch of images. Image i's noise comes from its own stream of --seed, so it does not
depend on --batch-size.";

/// Evaluate a trained DDPM's variational bound (bits/dim) on held-out images.
#[derive(Parser)]
#[command(name = "ddpm-eval", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    unet: UnetConfigArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluate the first N images only [default: all].
    #[arg(short = 'n', long, value_name = "N")]
    limit: Option<usize>,
    /// The variance of p(x_{t-1} | x_t): beta (the sampler's default) or beta-tilde.
    #[arg(long, default_value = "beta", value_name = "beta|beta-tilde")]
    var: Variance,
    /// Do not clip the predicted x_0 to [-1, 1] (the reference evaluation clips).
    #[arg(long)]
    no_clip: bool,
    /// Images per network call.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("ddpm-eval", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.data.labels.is_some() {
        anyhow::bail!("--labels: ddpm-eval evaluates images only");
    }
    let request = DdpmEval {
        model: args.model.source_with(&args.unet)?,
        data: args.data.data.sized(args.data.size)?,
        split: args.data.split,
        range: args.data.range,
        limit: args.limit,
        bound: BoundOptions {
            variance: args.var,
            clip: !args.no_clip,
            seed: args.seed.seed,
            batch_size: args.batch_size as usize,
        },
        output: args.output.output,
        device: args.device.device.device()?,
    };
    ddpm_eval(&request)?;
    Ok(())
}
