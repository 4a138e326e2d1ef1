//! How the bundled sets are stored: the images as one PNG grid ("sheet") of equal square
//! cells, row-major, and the labels (and the emoji split) as `.npy` files of u8, all compiled
//! into the library (data/mnist, data/emoji).

use crate::error::{Error, Result};

/// `count` images of `side` x `side` pixels cut from a PNG sheet of `grid` cells a row, as
/// u8 [count, channels, side, side] (channels first): one channel for a grey sheet, three for
/// an RGB one. `name` names the set in errors.
pub fn cells(png: &[u8], name: &str, channels: usize, side: usize, grid: usize, count: usize) -> Result<Vec<u8>> {
    let bad = |e: String| Error::bad_input(name, e);
    let sheet = image::load_from_memory_with_format(png, image::ImageFormat::Png).map_err(|e| bad(e.to_string()))?;
    let sheet = match channels {
        1 => sheet.into_luma8().into_raw(),
        _ => sheet.into_rgb8().into_raw(),
    };
    let (width, height) = (grid * side, count.div_ceil(grid) * side);
    if sheet.len() != width * height * channels {
        return Err(bad(format!("sheet is not {width}x{height} with {channels} channel(s)")));
    }
    let (stride, plane) = (width * channels, side * side);
    let mut images = vec![0u8; count * channels * plane];
    for (i, image) in images.chunks_exact_mut(channels * plane).enumerate() {
        let (gy, gx) = (i / grid, i % grid);
        for y in 0..side {
            let start = (gy * side + y) * stride + gx * side * channels;
            for (x, px) in sheet[start..start + side * channels].chunks_exact(channels).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    image[c * plane + y * side + x] = v;
                }
            }
        }
    }
    Ok(images)
}

/// The `count` u8 values of a bundled `.npy` file; `what` names it in errors.
pub fn npy_u8(bytes: &'static [u8], name: &str, what: &str, count: usize) -> Result<&'static [u8]> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < count {
        return Err(Error::bad_input(name, format!("{what} is not a .npy of {count} u8 values")));
    }
    Ok(&bytes[bytes.len() - count..])
}
