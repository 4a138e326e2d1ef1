//! Image arrays drawn as PNG: one grid of tiles, or one file per image.
//!
//! The grid follows torchvision's `make_grid`: `pad` black pixels around every tile, so a
//! grid of `cols` x `rows` tiles of w x h pixels is `cols * (w + pad) + pad` pixels wide and
//! `rows * (h + pad) + pad` high, tiles filled row by row.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;

use super::convert::{to_unit_f32, unit_to_u8, Geometry, PixelRange};
use super::image_set::read_array;
use super::pack::Images;
use crate::error::{Error, Result};
use crate::io::{InputPath, OutputPath};

/// The most bytes of pixels one PNG may have; a larger grid is refused before allocating.
const MAX_PNG_BYTES: u64 = 1 << 30;

/// How images are laid out in a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridOptions {
    /// Tiles per row; `None` for ceil(sqrt(N)), a square grid.
    pub cols: Option<usize>,
    /// Black pixels around every tile.
    pub pad: usize,
    /// Integer upscaling of each image (nearest neighbour, so pixels stay sharp).
    pub scale: usize,
}

/// Reads an image array (.npy u8 0..255, or f32/f64 in `range`; [N,H,W], [N,C,H,W] with C 1
/// or 3, or [N,H*W]) as u8 images.
pub fn read_images(input: &InputPath, range: PixelRange) -> Result<Images> {
    let array = read_array(input)?;
    let source = input.to_string();
    let g = Geometry::of_shape(&array.shape).map_err(|p| Error::bad_input(&source, p))?;
    if g.channels != 1 && g.channels != 3 {
        return Err(Error::bad_input(
            &source,
            format!("images have {} channels (shape {:?}), expected 1 (grey) or 3 (RGB)", g.channels, array.shape),
        ));
    }
    let count = array.shape[0];
    if count == 0 || g.pixels() == 0 {
        return Err(Error::bad_input(
            &source,
            format!("holds no pixels (shape {:?}), expected at least one image", array.shape),
        ));
    }
    let unit = to_unit_f32(&array, range, g, &source)?;
    Ok(Images {
        count,
        channels: g.channels,
        height: g.height,
        width: g.width,
        pixels: unit.into_iter().map(unit_to_u8).collect(),
    })
}

/// Draws all images as one grid and encodes it as PNG. `source` names the input in errors.
pub fn grid_png(images: &Images, opts: &GridOptions, source: &str) -> Result<Vec<u8>> {
    let n = images.count;
    let cols = opts.cols.unwrap_or_else(|| n.isqrt() + usize::from(n.isqrt() * n.isqrt() < n)).clamp(1, n.max(1));
    render_png(images, 0..n, cols, opts.pad, opts.scale, source)
}

/// Writes each image, upscaled by `scale`, to `dir/000000.png`, `dir/000001.png`, ...
/// (creating `dir`); each file appears only when complete.
pub fn write_tiles(images: &Images, scale: usize, dir: &Path, source: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    // Six digits, more when needed, so that the names sort in image order.
    let digits = images.count.saturating_sub(1).to_string().len().max(6);
    let results: Vec<Result<()>> = (0..images.count)
        .into_par_iter()
        .map(|i| {
            let png = render_png(images, i..i + 1, 1, 0, scale, source)?;
            OutputPath::File(dir.join(format!("{i:0digits$}.png"))).write_all(&png)
        })
        .collect();
    results.into_iter().collect()
}

/// Draws images `which` in a grid of `cols` columns and encodes it as PNG.
fn render_png(
    images: &Images,
    which: std::ops::Range<usize>,
    cols: usize,
    pad: usize,
    scale: usize,
    source: &str,
) -> Result<Vec<u8>> {
    if scale == 0 {
        return Err(Error::config("--scale must be at least 1"));
    }
    let (c, h, w) = (images.channels, images.height, images.width);
    let rows = which.len().div_ceil(cols);
    let too_large = |size: String| {
        Error::bad_input(source, format!("the picture would be {size} pixels, too large for one PNG (at most {MAX_PNG_BYTES} bytes); lower --scale or --cols, or write one file per image with --dir"))
    };
    let side = |tiles: usize, len: usize| -> Option<u64> {
        let tile = (len as u64).checked_mul(scale as u64)?.checked_add(pad as u64)?;
        (tiles as u64).checked_mul(tile)?.checked_add(pad as u64)
    };
    let (Some(width), Some(height)) = (side(cols, w), side(rows, h)) else {
        return Err(too_large("more than 2^64".into()));
    };
    if width.checked_mul(height).and_then(|p| p.checked_mul(c as u64)).is_none_or(|b| b > MAX_PNG_BYTES) {
        return Err(too_large(format!("{width}x{height}")));
    }
    // Both sides fit in u32 and usize: their product with c is at most MAX_PNG_BYTES.
    let (width, height) = (width as usize, height as usize);
    let mut canvas = vec![0u8; width * height * c];
    let (tile_w, tile_h) = (w * scale, h * scale);
    let len = images.image_len();
    for (k, i) in which.enumerate() {
        let (x0, y0) = (pad + (k % cols) * (tile_w + pad), pad + (k / cols) * (tile_h + pad));
        let image = &images.pixels[i * len..(i + 1) * len];
        for y in 0..tile_h {
            // Planar (C, H, W) source -> interleaved (H, W, C) canvas row.
            let src_row = (y / scale) * w;
            let dst = &mut canvas[((y0 + y) * width + x0) * c..][..tile_w * c];
            for (x, px) in dst.chunks_exact_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = image[ch * h * w + src_row + x / scale];
                }
            }
        }
    }
    let color = if c == 1 { ExtendedColorType::L8 } else { ExtendedColorType::Rgb8 };
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&canvas, width as u32, height as u32, color)
        .map_err(|e| Error::bad_input(source, format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::DynamicImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap()
    }

    /// Three 1x2 grey images with distinct values.
    fn three() -> Images {
        Images { count: 3, channels: 1, height: 1, width: 2, pixels: vec![10, 11, 20, 21, 30, 31] }
    }

    #[test]
    fn lays_out_tiles_row_by_row_with_padding_and_scale() {
        let opts = GridOptions { cols: None, pad: 1, scale: 2 };
        let g = decode(&grid_png(&three(), &opts, "x").unwrap()).into_luma8();
        // 2 columns of 4-pixel tiles, 2 rows of 2-pixel tiles, 1 pixel around each.
        assert_eq!(g.dimensions(), (2 * 5 + 1, 2 * 3 + 1));
        let at = |x, y| g.get_pixel(x, y).0[0];
        assert_eq!((at(0, 0), at(1, 1), at(2, 2), at(3, 1), at(4, 2), at(5, 1)), (0, 10, 10, 11, 11, 0));
        assert_eq!((at(6, 1), at(9, 2), at(1, 4), at(4, 5), at(6, 4)), (20, 21, 30, 31, 0));
    }

    #[test]
    fn colour_is_interleaved_from_planes() {
        let im = Images { count: 1, channels: 3, height: 1, width: 1, pixels: vec![1, 2, 3] };
        let opts = GridOptions { cols: Some(4), pad: 0, scale: 1 };
        let g = decode(&grid_png(&im, &opts, "x").unwrap()).into_rgb8();
        assert_eq!((g.dimensions(), g.get_pixel(0, 0).0), ((1, 1), [1, 2, 3]));
    }

    #[test]
    fn refuses_absurd_grids() {
        let opts = GridOptions { cols: None, pad: 0, scale: usize::MAX };
        let e = grid_png(&three(), &opts, "x.npy").unwrap_err().to_string();
        assert!(e.starts_with("x.npy: the picture would be") && e.contains("--scale"), "{e}");
        let opts = GridOptions { cols: None, pad: 1 << 20, scale: 1 };
        assert!(grid_png(&three(), &opts, "x.npy").unwrap_err().to_string().contains("too large"));
    }
}
