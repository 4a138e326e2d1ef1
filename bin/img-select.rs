//! img-select: rejection sampling; keeps the samples a classifier scores best for their class.

use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use genimg::cli::{self, OutputArgs};
use genimg::data::select::Keep;
use genimg::io::{InputPath, OutputPath};
use genimg::tools::select::{img_select, ImgSelect};

const EXAMPLES: &str = "\
Examples:
  img-select s.npy --scores p.npy --labels l.npy --keep-fraction 0.1 > kept.npy
  img-select s.npy --scores p.npy --labels l.npy --keep 100 -o kept.npy --labels-out kept_labels.npy
  img-select s.npy --scores p.npy --labels codes.safetensors --min-prob 0.9 -o kept.npy

Rejection sampling (VQ-VAE-2, section 3.3): each sample's score is its probability of the
class it was drawn for (column labels[i] of row i of --scores, as img-classify writes
them); the best of each class are kept. Output order: by class, then by score, highest
first. The samples are copied as they are (dtype and shape); only the kept ones are read.
INPUT must be a file.";

/// Keep the samples a classifier scores best for their class (rejection sampling).
#[derive(Parser)]
#[command(name = "img-select", version, after_help = EXAMPLES)]
#[command(group(ArgGroup::new("rule").required(true).args(["keep", "keep_fraction", "min_prob"])))]
struct Args {
    /// Samples (.npy [M, ...], e.g. vq-decode's images); a file.
    #[arg(value_name = "INPUT")]
    input: InputPath,
    /// Class probabilities [M, K] of the samples (img-classify's output).
    #[arg(long, value_name = "FILE")]
    scores: InputPath,
    /// The class each sample was drawn for: .npy of integers [M], or the `labels` of a .safetensors.
    #[arg(long, value_name = "FILE")]
    labels: InputPath,
    /// Keep the N best samples of each class.
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
    /// Keep the best fraction F of each class (rounded to the nearest count).
    #[arg(long, value_name = "F", value_parser = cli::unit_interval)]
    keep_fraction: Option<f64>,
    /// Keep every sample whose score is at least P.
    #[arg(long, value_name = "P", value_parser = cli::unit_interval)]
    min_prob: Option<f64>,
    #[command(flatten)]
    output: OutputArgs,
    /// Write the kept samples' labels (.npy i64 [N]) here.
    #[arg(long, value_name = "FILE")]
    labels_out: Option<OutputPath>,
}

pub fn main() -> ExitCode {
    cli::run("img-select", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let keep = match (args.keep, args.keep_fraction, args.min_prob) {
        (Some(n), ..) => Keep::PerClass(n),
        (_, Some(f), _) => Keep::Fraction(f),
        (.., Some(p)) => Keep::MinProb(p as f32),
        _ => unreachable!("clap requires one rule"),
    };
    let request = ImgSelect {
        images: args.input,
        scores: args.scores,
        labels: args.labels,
        keep,
        output: args.output.output,
        labels_out: args.labels_out,
    };
    img_select(&request)?;
    Ok(())
}
