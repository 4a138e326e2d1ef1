//! ddpm-noise: images -> x_t, the forward diffusion process in closed form.

use std::process::ExitCode;
use std::str::FromStr;

use clap::Parser;
use genimg::checkpoint::ModelSource;
use genimg::cli::{self, DeviceArgs, ImageInputArgs, OutputArgs, SeedArgs, UnetConfigArgs};
use genimg::diffusion::forward::NoiseSteps;
use genimg::diffusion::ScheduleKind;
use genimg::io::InputPath;
use genimg::models::{Family, Preset};
use genimg::tools::ddpm::{ddpm_noise, DdpmNoise, Diffusion};

const EXAMPLES: &str = "\
Examples:
  ddpm-noise --t 300 digits.npy -o x300.npy
  img-pack mnist --split test | ddpm-noise --t random --with-eps -o noised.safetensors
  ddpm-noise --data mnist --trajectory 0,100,250,500,999 --clip | img-grid --range 11 --cols 5 -o strips.png
  ddpm-noise --t 300 x.npy | ddpm-denoise --model ddpm.safetensors --from-t 300 - --png edit.png

x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with t 0-based in [0, T-1] and x_0 the images
mapped to [-1,1] (28x28 is zero-padded to 32x32). Writes .npy f32 [N, 1, 32, 32] in that
space (noise goes beyond [-1,1]; --clip for viewing). With --trajectory t1,...,tk:
[N*k, 1, 32, 32], image i at t1..tk in rows i*k..i*k+k-1 (one eps per image), so
img-grid --cols k draws one strip per image. With --with-eps: a .safetensors of x_t
[N, 1, 32, 32], eps [N, 1, 32, 32] and t [N] (i64). Image i's t and eps come from the
seed and i alone.";

/// The step: a number or `random`.
#[derive(Debug, Clone, Copy)]
enum StepArg {
    Fixed(usize),
    Random,
}

impl FromStr for StepArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "random" {
            return Ok(StepArg::Random);
        }
        s.parse().map(StepArg::Fixed).map_err(|_| format!("'{s}' is not a step (a number in [0, T-1]) or 'random'"))
    }
}

/// Noise images to step t of the diffusion process (no model needed).
#[derive(Parser)]
#[command(name = "ddpm-noise", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    input: ImageInputArgs,
    /// The step, 0-based in [0, T-1], or `random` for one uniform t per image.
    #[arg(long, value_name = "T|random", required_unless_present = "trajectory")]
    t: Option<StepArg>,
    /// Write each image at each of these steps (comma-separated) instead.
    #[arg(long, value_name = "T,T,...", value_delimiter = ',', conflicts_with_all = ["t", "with_eps"])]
    trajectory: Option<Vec<usize>>,
    /// Write a .safetensors holding x_t, eps and t.
    #[arg(long)]
    with_eps: bool,
    /// Clip x_t to [-1, 1] (for viewing with img-grid --range 11).
    #[arg(long, conflicts_with = "with_eps")]
    clip: bool,
    /// Noise schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal) [default: linear].
    #[arg(long, value_name = "linear|cosine")]
    schedule: Option<ScheduleKind>,
    /// T, the number of diffusion steps [default: 1000].
    #[arg(long, value_name = "T")]
    timesteps: Option<usize>,
    /// The diffusion (image size, schedule, T) of this network [default: ddpm-unet-mnist].
    #[arg(long, value_name = "NAME", value_parser = cli::presets_of(&[Family::DdpmUnet]), conflicts_with = "model")]
    preset: Option<Preset>,
    /// Take the image size, schedule and T from a trained diffusion model instead.
    #[arg(long, value_name = "CHECKPOINT", conflicts_with_all = ["schedule", "timesteps", "unet_config"])]
    model: Option<InputPath>,
    #[command(flatten)]
    unet: UnetConfigArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("ddpm-noise", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let diffusion = match args.model {
        Some(path) => Diffusion::Model(ModelSource { path, plain: None }),
        None => Diffusion::Network {
            network: match args.unet.plain()? {
                Some(network) => network,
                None => args.preset.unwrap_or(Preset::DdpmUnetMnist).into(),
            },
            schedule: args.schedule,
            timesteps: args.timesteps,
        },
    };
    let steps = match (args.trajectory, args.t) {
        (Some(ts), _) => NoiseSteps::Trajectory(ts),
        (None, Some(StepArg::Fixed(t))) => NoiseSteps::Fixed(t),
        (None, _) => NoiseSteps::Random,
    };
    let request = DdpmNoise {
        images: args.input.source()?,
        diffusion,
        steps,
        with_eps: args.with_eps,
        clip: args.clip,
        seed: args.seed.seed,
        batch_size: args.batch_size as usize,
        output: args.output.output,
        device: args.device.device.device()?,
    };
    ddpm_noise(&request)?;
    Ok(())
}
