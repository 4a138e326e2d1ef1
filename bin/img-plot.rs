//! img-plot: a line chart (SVG) of two fields of JSON lines (metrics files, quality tables).

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, OutputArgs};
use genimg::io::InputPath;
use genimg::tools::plot::{img_plot, ImgPlot};

const EXAMPLES: &str = "\
Examples:
  img-plot ddpm.jsonl -x epoch -y eval_mse --log-y -o mse.svg
  img-plot quality.jsonl -x class_accuracy -y fid --by temperature --label acceptance -o tradeoff.svg
  cat a.jsonl b.jsonl | img-plot -x epoch -y eval_bits_per_code --by run > curves.svg

Reads one JSON object per line and draws y against x over the lines that have numbers for
both (others are passed over), joined in input order, with one series per value of --by.
Writes SVG.";

/// Draw a line chart (SVG) of two numeric fields of JSON lines.
#[derive(Parser)]
#[command(name = "img-plot", version, after_help = EXAMPLES)]
struct Args {
    /// JSON lines (`-` for stdin).
    #[arg(value_name = "INPUT", default_value = "-")]
    input: InputPath,
    /// The field on the horizontal axis.
    #[arg(short, value_name = "FIELD")]
    x: String,
    /// The field on the vertical axis.
    #[arg(short, value_name = "FIELD")]
    y: String,
    /// One series per distinct value of this field.
    #[arg(long, value_name = "FIELD")]
    by: Option<String>,
    /// Write this field's value beside each point.
    #[arg(long, value_name = "FIELD")]
    label: Option<String>,
    /// The chart's title [default: "Y against X"].
    #[arg(long, value_name = "TEXT")]
    title: Option<String>,
    /// A logarithmic vertical axis.
    #[arg(long)]
    log_y: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn main() -> ExitCode {
    cli::run("img-plot", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    img_plot(&ImgPlot {
        input: args.input,
        x: args.x,
        y: args.y,
        by: args.by,
        label: args.label,
        title: args.title,
        log_y: args.log_y,
        output: args.output.output,
    })?;
    Ok(())
}
