//! img-pack: the bundled digits, IDX files, CIFAR-10 files or a folder of images -> one .npy
//! image array.

use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, OutputArgs};
use genimg::data::fit::Fit;
use genimg::data::pack::{PackOptions, Size, Source};
use genimg::data::{DataSpec, PixelRange, Split};
use genimg::io::{InputPath, OutputPath};
use genimg::tools::img::{img_pack, ImgPack};

const EXAMPLES: &str = "\
Examples:
  img-pack mnist --split test -o x.npy --labels-out y.npy
  img-pack mnist --pad-to 32 --range 11 -o x32.npy
  img-pack images-idx3-ubyte.gz --labels-from labels-idx1-ubyte.gz -o x.npy --labels-out y.npy
  img-pack photos/ --size 64 -o x.npy
  img-pack pets/ --size 128 --fit pad --skip-bad -o x.npy --labels-out y.npy   # y.classes.json too
  img-pack cifar-10-batches-bin/ --split train -o x.npy --labels-out y.npy
  img-pack data_batch_1.bin data_batch_2.bin -o x.npy
  img-pack mnist --split test | img-grid -o digits.png

Writes .npy u8 [N,H,W] (one channel) or [N,C,H,W], or f32 with --range.

A folder's images are taken in sorted path order. Transparency (RGBA, grey+alpha, palette
with transparency) is composited on white; the array is RGB when any image has colour (grey
images are repeated over the three channels), one channel when none has or with --gray.
Subfolders are class labels: named by integers (0/, 1/, ...), the integer is the label;
named by words (cats/, dogs/), the classes are numbered in sorted name order and, with
--labels-out y.npy, their names are written beside the labels as y.classes.json (a JSON
array of names in label order). Mixing the two kinds, or images beside class folders, is
an error. Every output appears only when all are complete.

A file named *.bin is CIFAR-10 binary (3,073-byte records: a label byte, then 1024 red,
1024 green and 1024 blue bytes): u8 [N,3,32,32] with labels. A folder holding
data_batch_1.bin .. data_batch_5.bin and test_batch.bin is CIFAR-10 too (--split).";

/// Pack images into one .npy array.
#[derive(Parser)]
#[command(name = "img-pack", version, after_help = EXAMPLES)]
struct Args {
    /// A bundled set (`mnist` digits, `emoji` colour emoji), a folder of PNG/JPEG files, a
    /// CIFAR-10 folder or .bin files (several are concatenated in order), or an IDX images file
    /// (gzipped or not; `-` is stdin). A folder named mnist is `./mnist`.
    #[arg(value_name = "mnist|emoji|DIR|FILE", required = true, num_args = 1..)]
    inputs: Vec<DataSpec>,
    /// With a bundled set: train, test or all [default] (mnist 9,000 / 1,000; emoji 3,411 / 370).
    /// With a CIFAR-10 folder: train (data_batch_1..5.bin), test (test_batch.bin) or all
    /// [default], in that order.
    #[arg(long, value_name = "SPLIT")]
    split: Option<Split>,
    /// The IDX labels file that goes with an IDX images INPUT.
    #[arg(long, value_name = "FILE")]
    labels_from: Option<InputPath>,
    /// Also write the class labels (.npy u8 [N], or i64 when a label exceeds 255); for class
    /// folders named by words also FILE's name with .classes.json, the names in label order.
    #[arg(long, value_name = "FILE")]
    labels_out: Option<OutputPath>,
    /// Convert every image to one grey channel.
    #[arg(long)]
    gray: bool,
    /// Resize every image to N x N or WIDTHxHEIGHT (Lanczos3, widened when shrinking, so
    /// it does not alias), as --fit says.
    #[arg(long, value_name = "N|WxH")]
    size: Option<Size>,
    /// With --size: crop (resize on the shorter side, cut out the centre), pad (resize on the
    /// longer side, pad centred: white for a colour set, 0 for a grey one) or stretch.
    #[arg(long, value_name = "FIT", default_value = "crop", requires = "size")]
    fit: Fit,
    /// Zero-pad every image, centred, to N x N (after --size).
    #[arg(long, value_name = "N")]
    pad_to: Option<u32>,
    /// Skip files of a folder that do not decode (empty, truncated, not an image) instead of
    /// failing; one line on stderr at the end counts them and names the first few.
    #[arg(long)]
    skip_bad: bool,
    /// Write f32 pixels in [0,1] (01) or [-1,1] (11) instead of u8 0..255.
    #[arg(long, value_name = "01|11")]
    range: Option<PixelRange>,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn main() -> ExitCode {
    cli::run("img-pack", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = ImgPack {
        source: Source::new(&args.inputs, args.split, args.labels_from)?,
        options: PackOptions {
            gray: args.gray,
            size: args.size,
            fit: args.fit,
            pad_to: args.pad_to,
            skip_bad: args.skip_bad,
        },
        range: args.range,
        output: args.output.output,
        labels_out: args.labels_out,
    };
    img_pack(&request)?;
    Ok(())
}
