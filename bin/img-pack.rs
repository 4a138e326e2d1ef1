//! img-pack: the bundled digits, an IDX file or a folder of images -> one .npy image array.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, OutputArgs};
use genimg::data::pack::{PackOptions, Size, Source};
use genimg::data::{DataSpec, PixelRange, Split};
use genimg::io::{InputPath, OutputPath};
use genimg::tools::img::{img_pack, ImgPack};

const EXAMPLES: &str = "\
Examples:
  img-pack mnist --split test -o x.npy --labels-out y.npy
  img-pack mnist --pad-to 32 --range 11 -o x32.npy
  img-pack images-idx3-ubyte.gz --labels-from labels-idx1-ubyte.gz -o x.npy --labels-out y.npy
  img-pack photos/ --size 64x64 -o x.npy
  img-pack mnist --split test | img-grid -o digits.png

Writes .npy u8 [N,H,W] (one channel) or [N,C,H,W], or f32 with --range. A folder's images
are taken in path order; subfolders named by integers (0/, 1/, ...) are class labels.";

/// Pack images into one .npy array.
#[derive(Parser)]
#[command(name = "img-pack", version, after_help = EXAMPLES)]
struct Args {
    /// A bundled set (`mnist` digits, `emoji` colour emoji), a folder of PNG/JPEG files, or an
    /// IDX images file (gzipped or not; `-` is stdin). A folder named mnist is `./mnist`.
    #[arg(value_name = "mnist|emoji|DIR|FILE")]
    input: DataSpec,
    /// With a bundled set: train, test or all (mnist 9,000 / 1,000; emoji 3,411 / 370).
    #[arg(long, value_name = "SPLIT")]
    split: Option<Split>,
    /// The IDX labels file that goes with an IDX images INPUT.
    #[arg(long, value_name = "FILE")]
    labels_from: Option<InputPath>,
    /// Also write the class labels (.npy u8 [N], or i64 when a label exceeds 255).
    #[arg(long, value_name = "FILE")]
    labels_out: Option<OutputPath>,
    /// Convert colour images to one grey channel.
    #[arg(long)]
    gray: bool,
    /// Resize every image to WIDTHxHEIGHT (Lanczos3).
    #[arg(long, value_name = "WxH")]
    size: Option<Size>,
    /// Zero-pad every image, centred, to N x N (after --size).
    #[arg(long, value_name = "N")]
    pad_to: Option<u32>,
    /// Write f32 pixels in [0,1] (01) or [-1,1] (11) instead of u8 0..255.
    #[arg(long, value_name = "01|11")]
    range: Option<PixelRange>,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> ExitCode {
    cli::run("img-pack", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = ImgPack {
        source: Source::new(&args.input, args.split, args.labels_from)?,
        options: PackOptions { gray: args.gray, size: args.size, pad_to: args.pad_to },
        range: args.range,
        output: args.output.output,
        labels_out: args.labels_out,
    };
    img_pack(&request)?;
    Ok(())
}
