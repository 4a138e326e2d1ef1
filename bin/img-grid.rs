//! img-grid: an image array -> a PNG grid of tiles, or one PNG per image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use genimg::cli::{self, OutputArgs};
use genimg::data::grid::GridOptions;
use genimg::data::PixelRange;
use genimg::io::InputPath;
use genimg::tools::img::{img_grid, GridTarget, ImgGrid};

const EXAMPLES: &str = "\
Examples:
  img-grid x.npy -o grid.png
  img-pack mnist --split test | img-grid --cols 40 --pad 1 -o digits.png
  vae-decode --model vae.safetensors --prior 64 | img-grid --cols 8 --scale 4 -o samples.png
  img-grid x.npy --dir tiles/

Reads .npy u8 0..255, or f32/f64 in [0,1] ([-1,1] with --range 11); shapes [N,H,W],
[N,C,H,W] with C 1 or 3, or [N,H*W] for square grey images.";

/// Draw an image array as a PNG grid, or as one PNG per image.
#[derive(Parser)]
#[command(name = "img-grid", version, after_help = EXAMPLES)]
struct Args {
    /// Images (.npy); `-` is stdin.
    #[arg(default_value = "-", value_name = "INPUT")]
    input: InputPath,
    /// Range of float pixels: 01 for [0,1], 11 for [-1,1] (u8 is always 0..255).
    #[arg(long, default_value = "01", value_name = "01|11")]
    range: PixelRange,
    /// Tiles per row [default: ceil(sqrt(N)), a square grid].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    cols: Option<u32>,
    /// Black pixels around every tile.
    #[arg(long, default_value_t = 2, value_name = "P")]
    pad: u32,
    /// Enlarge each pixel to S x S.
    #[arg(long, default_value_t = 1, value_name = "S", value_parser = clap::value_parser!(u32).range(1..))]
    scale: u32,
    /// Write one PNG per image (000000.png, 000001.png, ...) into this folder instead.
    #[arg(long, value_name = "OUT_DIR", conflicts_with = "output")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn main() -> ExitCode {
    cli::run("img-grid", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let scale = args.scale as usize;
    let target = match args.dir {
        Some(dir) => GridTarget::Tiles(dir, scale),
        None => GridTarget::Grid(
            args.output.output,
            GridOptions { cols: args.cols.map(|c| c as usize), pad: args.pad as usize, scale },
        ),
    };
    img_grid(&ImgGrid { input: args.input, range: args.range, target })?;
    Ok(())
}
