//! tensor-cat: joins tensor files along axis 0 (the outputs of `--shard K/N` runs, in order).

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, OutputArgs};
use genimg::io::InputPath;
use genimg::tools::cat::{tensor_cat, TensorCat};

const EXAMPLES: &str = "\
Examples:
  tensor-cat codes.0.safetensors codes.1.safetensors codes.2.safetensors -o codes.safetensors
  tensor-cat x0.{0..3}.npy -o x0.npy
  vq-encode --model vq.safetensors big.npy --shard 1/2 | tensor-cat part0.safetensors - > codes.safetensors

.npy arrays join when their dtypes and their shapes past axis 0 agree; .safetensors files
(as vq-encode and prior-sample write codes) when they hold the same names, each with the
same dtype and shape past axis 0, and the same metadata: each named tensor is joined along
axis 0. The output is of the inputs' kind. One input may be `-` (stdin).";

/// Join .npy arrays, or .safetensors files tensor by tensor, along axis 0.
#[derive(Parser)]
#[command(name = "tensor-cat", version, after_help = EXAMPLES)]
struct Args {
    /// The files, in order (.npy, or .safetensors, all of one kind); one may be `-` (stdin).
    #[arg(value_name = "INPUT", required = true)]
    inputs: Vec<InputPath>,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn main() -> ExitCode {
    cli::run("tensor-cat", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    tensor_cat(&TensorCat { inputs: args.inputs, output: args.output.output })?;
    Ok(())
}
