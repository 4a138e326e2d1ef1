//! `img-pack` and `img-grid`: images in and out of the toolkit's arrays.

use std::path::PathBuf;

use crate::data::folder::Skipped;
use crate::data::grid::{grid_png, read_images, write_tiles, GridOptions};
use crate::data::pack::{classes_path, pack, write, PackOptions, Source};
use crate::data::PixelRange;
use crate::error::Result;
use crate::io::{check_io, InputPath, OutputPath};

/// What `img-pack` packs.
pub struct ImgPack {
    pub source: Source,
    pub options: PackOptions,
    /// f32 pixels in this range instead of u8.
    pub range: Option<PixelRange>,
    pub output: OutputPath,
    pub labels_out: Option<OutputPath>,
}

/// Writes the images as one .npy array (and the labels beside them when asked).
pub fn img_pack(r: &ImgPack) -> Result<()> {
    let (images, labels) = match &r.source {
        Source::Idx { images, labels } => (Some(images), labels.as_ref()),
        Source::Bundled(..) | Source::Dir(_) | Source::Cifar(_) => (None, None),
    };
    check_io(
        &[("INPUT", images), ("--labels-from", labels)],
        &[("-o", Some(&r.output)), ("--labels-out", r.labels_out.as_ref())],
    )?;
    if let (Source::Dir(_), Some(labels)) = (&r.source, &r.labels_out) {
        // A folder of word-named classes writes its class table beside the labels.
        if let Some(table) = classes_path(labels) {
            OutputPath::File(table).check_writable()?;
        }
    }
    let packed = pack(&r.source, &r.options)?;
    write(&packed, r.range, &r.output, r.labels_out.as_ref())?;
    if let Some(note) = skipped_note(&packed.skipped) {
        eprintln!("img-pack: {note}");
    }
    Ok(())
}

/// The names shown of the files `--skip-bad` left out.
const SKIPPED_SHOWN: usize = 3;

/// One line for the files `--skip-bad` left out: the count and the first few names.
fn skipped_note(skipped: &[Skipped]) -> Option<String> {
    let first = skipped.first()?;
    let names: Vec<&str> = skipped.iter().take(SKIPPED_SHOWN).map(|s| s.name.as_str()).collect();
    let more = match skipped.len().saturating_sub(SKIPPED_SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let files = if skipped.len() == 1 { "file" } else { "files" };
    Some(format!("skipped {} bad {files}: {}{more} (the first: {})", skipped.len(), names.join(", "), first.problem))
}

/// Where `img-grid` draws.
pub enum GridTarget {
    /// One PNG grid.
    Grid(OutputPath, GridOptions),
    /// One PNG per image in this folder, upscaled by the factor.
    Tiles(PathBuf, usize),
}

/// What `img-grid` draws.
pub struct ImgGrid {
    pub input: InputPath,
    pub range: PixelRange,
    pub target: GridTarget,
}

/// Draws an image array as a PNG grid or as one PNG per image.
pub fn img_grid(r: &ImgGrid) -> Result<()> {
    // The files of --dir are checked as they are written: their names depend on the count.
    let output = match &r.target {
        GridTarget::Grid(out, _) => Some(out),
        GridTarget::Tiles(..) => None,
    };
    check_io(&[("INPUT", Some(&r.input))], &[("-o", output)])?;
    let images = read_images(&r.input, r.range)?;
    let source = r.input.to_string();
    match &r.target {
        GridTarget::Tiles(dir, scale) => write_tiles(&images, *scale, dir, &source),
        GridTarget::Grid(out, opts) => out.write_all(&grid_png(&images, opts, &source)?),
    }
}
