//! prior-fit: trains a Gated PixelCNN prior on the codes of a VQ model.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, DeviceArgs, OutputArgs, SeedArgs, TrainArgs};
use genimg::data::code_set::{CodeLevel, LabelSource};
use genimg::io::InputPath;
use genimg::models::{Family, Preset};
use genimg::tasks::prior::PriorShape;
use genimg::tools::prior::{prior_fit, PriorFit};

const EXAMPLES: &str = "\
Examples:
  vq-encode --model vq.safetensors --data mnist --split train -o train.safetensors
  vq-encode --model vq.safetensors --data mnist --split test -o test.safetensors
  prior-fit train.safetensors --level top --eval-data test.safetensors -o prior-top.safetensors
  prior-fit train.safetensors --level bottom --eval-data test.safetensors -o prior-bottom.safetensors
  vq-encode --model vq1.safetensors x.npy | prior-fit --n-embed 512 --labels y.npy --epochs 20 -o prior.safetensors

Codes come from vq-encode: an .npy [N, H, W] (one level; --n-embed gives its codebook size,
which an .npy cannot record) or one level of a .safetensors file;
the bottom level is conditioned on the top codes of the same file. Labels come from the file's
`labels` (or --labels), so the prior is class-conditional unless --no-labels. Writes the prior
(config in its metadata) and, beside it, its training state for --resume. One JSON line of
metrics per epoch (bits per code, held-out with --eval-data) goes to --metrics or stderr.";

/// Train a Gated PixelCNN prior (pixelcnn-prior) on discrete codes.
#[derive(Parser)]
#[command(name = "prior-fit", version, after_help = EXAMPLES)]
struct Args {
    /// Codes from vq-encode; `-` is stdin.
    #[arg(default_value = "-", value_name = "INPUT")]
    input: InputPath,
    /// Which level of a two-level code file to model: top, or bottom (conditioned on top).
    #[arg(long, value_name = "top|bottom")]
    level: Option<CodeLevel>,
    /// Class labels (.npy integers [N]) instead of the code file's.
    #[arg(long, value_name = "FILE", conflicts_with = "no_labels")]
    labels: Option<InputPath>,
    /// Ignore labels: an unconditional prior.
    #[arg(long)]
    no_labels: bool,
    /// The network; its map size, codebook and conditioning come from the codes.
    #[arg(long, default_value = "pixelcnn-prior", value_name = "NAME", value_parser = cli::presets_of(&[Family::PixelCnnPrior]))]
    preset: Preset,
    /// Codebook size, for codes whose file does not name it.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    n_embed: Option<u32>,
    /// Number of classes [default: the largest label plus one].
    #[arg(long, value_name = "K")]
    classes: Option<usize>,
    /// Channels of each stack [default: the preset's 64].
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Gated layers [default: the preset's 12].
    #[arg(long, value_name = "L")]
    layers: Option<usize>,
    /// Held-out codes (as INPUT: the same level is read) whose bits per code are reported after each epoch.
    #[arg(long, value_name = "FILE")]
    eval_data: Option<InputPath>,
    /// Labels of --eval-data instead of its own.
    #[arg(long, value_name = "FILE", requires = "eval_data")]
    eval_labels: Option<InputPath>,
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
    cli::run("prior-fit", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let labels = match (&args.labels, args.no_labels) {
        (_, true) => LabelSource::Ignore,
        (Some(path), _) => LabelSource::Array(path.clone()),
        (None, _) => LabelSource::File,
    };
    let device = args.device.device.device()?;
    let request = PriorFit {
        input: args.input,
        level: args.level,
        labels,
        eval: args.eval_data.map(|path| (path, args.eval_labels)),
        shape: PriorShape {
            n_embed: args.n_embed.map(|k| k as usize),
            classes: args.classes,
            channels: args.channels,
            layers: args.layers,
        },
        train: args.train.options(args.preset.family(), args.seed.seed, &args.output.output, device)?,
    };
    prior_fit(&request)?;
    Ok(())
}
