//! ddpm-denoise: pure noise or a noised image x_t -> x_0, with a trained diffusion model.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use genimg::cli::{self, DeviceArgs, ModelArgs, OutputArgs, SeedArgs, ShardArgs, UnetConfigArgs};
use genimg::data::image_set::read_label_file;
use genimg::diffusion::Variance;
use genimg::io::{InputPath, OutputPath};
use genimg::tasks::ddpm::Start;
use genimg::tasks::prior::SampleClasses;
use genimg::tools::ddpm::{ddpm_denoise, DdpmDenoise, DenoiseOutput, SamplerChoice};

const EXAMPLES: &str = "\
Examples:
  ddpm-denoise --model ddpm.safetensors -n 64 --sampler ddim --steps 50 --png samples.png
  ddpm-denoise --model ddpm.safetensors -n 16 --clip --seed 3 -o x0.npy      # the full DDPM chain
  ddpm-denoise --model diffusion_pytorch_model.safetensors --preset ddpm-cifar10 -n 16 --sampler ddim --clip --png cifar.png
  ddpm-denoise --model diffusion_pytorch_model.safetensors --unet-config config.json -n 4 --sampler ddim -o x0.npy
  ddpm-noise --t 300 x.npy | ddpm-denoise --model ddpm.safetensors --from-t 300 - -o edited.npy
  ddpm-denoise --model ddpm.safetensors -n 64 --sampler ddim --steps 20 --eta 1 | img-grid -o s.png
  ddpm-denoise --model ddpm.safetensors -n 10000 --sampler ddim --shard 1/4 -o x0.1.npy   # then tensor-cat x0.{0..3}.npy
  ddpm-denoise --model cond.safetensors -n 100 --sampler ddim --guidance 3 --png grid.png   # a row per class
  ddpm-denoise --model cond.safetensors -n 64 --class 7 --guidance 1 -o sevens.npy

Writes .npy f32 [N, 1, 32, 32] in [0,1] (or a PNG grid with --png). INPUT is x_t as
ddpm-noise writes it: .npy f32 [N, 1, 32, 32] in the model's [-1,1] space, at step --from-t.
All samples of a batch go through the network together. Sample i draws from its own stream
of --seed, so it is the same in any batch (--batch-size) and any shard (--shard K/N).
A class-conditional model (ddpm-train on labelled data) samples --class K, --labels y.npy, or
by default equal blocks of its classes in order, so -n 100 of 10 classes is a row per class.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SamplerKind {
    /// Ancestral sampling (Ho et al.), one network call per step.
    Ddpm,
    /// DDIM (Song et al.): --steps network calls, noise --eta.
    Ddim,
}

/// Sample images from pure noise, or denoise x_t, with a trained diffusion U-Net (ours or diffusers').
#[derive(Parser)]
#[command(name = "ddpm-denoise", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    unet: UnetConfigArgs,
    /// x_t to denoise (.npy, as ddpm-noise writes); `-` is stdin. Needs --from-t.
    #[arg(value_name = "INPUT", conflicts_with = "samples")]
    input: Option<InputPath>,
    /// Sample N images from pure noise instead.
    #[arg(short = 'n', long, value_name = "N")]
    samples: Option<usize>,
    /// The step INPUT is at, 0-based in [0, T-1] [default with -n: T-1].
    #[arg(long, value_name = "T")]
    from_t: Option<usize>,
    /// The reverse process.
    #[arg(long, value_enum, default_value = "ddpm")]
    sampler: SamplerKind,
    /// DDIM: network calls, evenly spaced over the steps, at most one per step [default: 50, or one per step when fewer].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    steps: Option<u32>,
    /// DDIM: 0 is deterministic, 1 as noisy as ancestral sampling [default: 0].
    #[arg(long, value_name = "ETA", value_parser = cli::unit_interval)]
    eta: Option<f64>,
    /// DDPM: the variance of each step, beta or beta-tilde [default: beta].
    #[arg(long, value_name = "beta|beta-tilde")]
    var: Option<Variance>,
    /// Clip each predicted x_0 to [-1, 1] (as Ho et al. sample).
    #[arg(long)]
    clip: bool,
    /// Samples per network call.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// A class-conditional model: sample every image of class K [default: equal blocks of
    /// the classes, in order].
    #[arg(long, value_name = "K", conflicts_with = "labels")]
    class: Option<u32>,
    /// A class-conditional model: one class per sample (.npy integers [N]; N samples unless -n).
    #[arg(long, value_name = "FILE")]
    labels: Option<InputPath>,
    /// Classifier-free guidance W: eps = (1 + W) eps(x, class) - W eps(x, null) (diffusers'
    /// guidance_scale is 1 + W).
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    guidance: f64,
    /// Also write the class of each sample here (.npy i64 [N]), e.g. for vae-eval --labels.
    #[arg(long, value_name = "FILE.npy")]
    labels_out: Option<OutputPath>,
    /// Write a PNG grid of the images here instead of the .npy.
    #[arg(long, value_name = "FILE.png", conflicts_with = "output")]
    png: Option<OutputPath>,
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
    cli::run("ddpm-denoise", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let sampler = match args.sampler {
        SamplerKind::Ddpm => {
            if args.steps.is_some() || args.eta.is_some() {
                anyhow::bail!("--steps and --eta apply to --sampler ddim");
            }
            SamplerChoice::Ddpm(args.var.unwrap_or(Variance::Beta))
        }
        SamplerKind::Ddim => {
            if args.var.is_some() {
                anyhow::bail!("--var applies to --sampler ddpm");
            }
            SamplerChoice::Ddim { steps: args.steps.map(|k| k as usize), eta: args.eta.unwrap_or(0.0) }
        }
    };
    let classes = match (args.class, &args.labels) {
        (Some(k), _) => Some(SampleClasses::One(k)),
        (None, Some(path)) => Some(SampleClasses::Given(read_label_file(path)?)),
        (None, None) => None,
    };
    let samples = match (&classes, args.samples, &args.input) {
        (Some(SampleClasses::Given(labels)), None, None) => Some(labels.len()),
        (_, n, _) => n,
    };
    let start = match (samples, args.input) {
        (Some(n), _) => Start::Noise(n),
        (None, input) => {
            if args.from_t.is_none() {
                anyhow::bail!("give -n N to sample from pure noise, or x_t as INPUT with --from-t T");
            }
            Start::Input(input.unwrap_or(InputPath::Stdin))
        }
    };
    let request = DdpmDenoise {
        model: args.model.source_with(&args.unet)?,
        start,
        sampler,
        from_t: args.from_t,
        clip: args.clip,
        seed: args.seed.seed,
        batch_size: args.batch_size as usize,
        shard: args.shard.shard(),
        classes,
        guidance: args.guidance,
        labels_out: args.labels_out,
        output: match args.png {
            Some(png) => DenoiseOutput::Png(png),
            None => DenoiseOutput::Array(args.output.output),
        },
        device: args.device.device.device()?,
    };
    ddpm_denoise(&request)?;
    Ok(())
}
