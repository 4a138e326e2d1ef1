//! prior-sample: draws codes from trained PixelCNN priors, in the form vq-decode reads.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, ModelArgs, OutputArgs, SeedArgs, ShardArgs};
use genimg::io::InputPath;
use genimg::models::pixelcnn::{SampleMethod, SampleOptions};
use genimg::tasks::prior::{Draw, SampleRequest};
use genimg::tools::prior::{prior_sample, PriorSample};

const EXAMPLES: &str = "\
Examples:
  prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 100 | vq-decode --model vq.safetensors --png samples.png --cols 10
  prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 64 --class 7 --temperature 0.8 -o sevens.safetensors
  prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 100 --top-p 0.9 -o nucleus.safetensors
  prior-sample --model prior-bottom.safetensors --top codes.safetensors -o resampled.safetensors
  prior-sample --model prior.safetensors -n 16 --sampler plain > codes.npy
  prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 100000 --shard 3/10 -o s.3.safetensors

With a top prior and --bottom, writes .safetensors with top, bottom and labels (as vq-encode
does); a single prior writes .npy [N, H, W]. For a class-conditional prior the classes are
--class K for all, --labels y.npy one per sample, or by default equal blocks 0, 1, ... in order
(so -n 100 and --cols 10 show one class per row). Sample i draws from its own stream of --seed,
so it is the same in any batch (--batch-size) and any shard (--shard K/N of the N samples).";

/// Sample discrete codes from PixelCNN priors (raster order; cached or plain sampler).
#[derive(Parser)]
#[command(name = "prior-sample", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The bottom-level prior (conditioned on top codes), sampled after --model's top codes.
    #[arg(long, value_name = "CHECKPOINT", conflicts_with = "top")]
    bottom: Option<InputPath>,
    /// Take the top codes from this file (`-` for stdin) instead of a top prior; --model is then
    /// the bottom prior.
    #[arg(long, value_name = "FILE")]
    top: Option<InputPath>,
    /// Number of samples [default: 64, or one per image of --top or --labels].
    #[arg(short, value_name = "N")]
    n: Option<usize>,
    /// Sample every code map of this class.
    #[arg(long, value_name = "K", conflicts_with = "labels")]
    class: Option<u32>,
    /// One class per sample (.npy integers [N]).
    #[arg(long, value_name = "FILE")]
    labels: Option<InputPath>,
    /// Divide the logits by T: below 1 sharper, above 1 more varied.
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    temperature: f64,
    /// Draw only among the K most likely codes at each position.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Nucleus sampling: draw only among the fewest most likely codes whose probability
    /// reaches P, in (0, 1] (after --temperature and --top-k).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// cached (recomputes only what each new code changes) or plain (the whole network per code).
    #[arg(long, default_value = "cached", value_name = "cached|plain")]
    sampler: SampleMethod,
    /// Samples drawn together.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("prior-sample", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let opts =
        SampleOptions { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, method: args.sampler };
    let request = PriorSample {
        model: args.model.source(),
        bottom: args.bottom,
        request: SampleRequest {
            n: args.n,
            class: args.class,
            labels: args.labels,
            top: args.top,
            shard: args.shard.shard(),
        },
        draw: Draw { opts, batch_size: args.batch_size as usize, seed: args.seed.seed },
        output: args.output.output,
        device: args.device.device.device()?,
    };
    prior_sample(&request)?;
    Ok(())
}
