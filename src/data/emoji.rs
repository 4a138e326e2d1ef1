//! The bundled colour set: 3,781 Noto Emoji images of 64x64 RGB, composited on white, with
//! their nine emoji categories as labels, from the npm package `emoji-datasource-google`
//! 16.0.0 (images Apache License 2.0, data MIT; see data/emoji/README.md). Compiled into the
//! library, so `--data emoji` works offline from any directory.
//!
//! The fixed split: every tenth emoji in sort order is a test emoji, with all its skin-tone
//! variants; the rows hold the train images first, then the test images (`split.npy` marks
//! each row, and [`load_all`] checks that order).

use crate::error::{Error, Result};

static SHEET_PNG: &[u8] = include_bytes!("../../data/emoji/emoji.png");
static LABELS_NPY: &[u8] = include_bytes!("../../data/emoji/labels.npy");
static SPLIT_NPY: &[u8] = include_bytes!("../../data/emoji/split.npy");
static CLASSES_JSON: &str = include_str!("../../data/emoji/classes.json");

pub const SIDE: usize = 64;
pub const CHANNELS: usize = 3;
pub const COUNT: usize = 3_781;
pub const CLASSES: usize = 9;
/// Images per row of the sheet.
const GRID: usize = 64;

/// The set: u8 [COUNT, 3, 64, 64] (channels first, row-major), the labels, and the number of
/// train images (the rows before it are the train split, the rest the test split).
pub struct Emoji {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub train_count: usize,
}

/// The u8 data of a bundled `.npy` of `COUNT` u8 values.
fn npy_u8(bytes: &'static [u8], what: &str) -> Result<&'static [u8]> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < COUNT {
        return Err(Error::bad_input("bundled emoji", format!("{what} is not a .npy of {COUNT} u8 values")));
    }
    Ok(&bytes[bytes.len() - COUNT..])
}

/// The category names, in label order.
pub fn class_names() -> Result<Vec<String>> {
    let names: Vec<String> = serde_json::from_str(CLASSES_JSON)
        .map_err(|e| Error::bad_input("bundled emoji", format!("classes.json: {e}")))?;
    if names.len() != CLASSES {
        return Err(Error::bad_input(
            "bundled emoji",
            format!("classes.json names {} classes, expected {CLASSES}", names.len()),
        ));
    }
    Ok(names)
}

/// Decodes the whole set.
pub fn load_all() -> Result<Emoji> {
    let bad = |e: String| Error::bad_input("bundled emoji", e);
    let sheet = image::load_from_memory_with_format(SHEET_PNG, image::ImageFormat::Png)
        .map_err(|e| bad(e.to_string()))?
        .into_rgb8();
    let rows = COUNT.div_ceil(GRID);
    if sheet.width() as usize != GRID * SIDE || sheet.height() as usize != rows * SIDE {
        return Err(bad(format!(
            "sheet is {}x{}, expected {}x{}",
            sheet.width(),
            sheet.height(),
            GRID * SIDE,
            rows * SIDE
        )));
    }
    let (sheet, stride) = (sheet.as_raw(), GRID * SIDE * CHANNELS);
    let plane = SIDE * SIDE;
    let mut images = vec![0u8; COUNT * CHANNELS * plane];
    for (i, image) in images.chunks_exact_mut(CHANNELS * plane).enumerate() {
        let (gy, gx) = (i / GRID, i % GRID);
        for y in 0..SIDE {
            let start = (gy * SIDE + y) * stride + gx * SIDE * CHANNELS;
            for (x, px) in sheet[start..start + SIDE * CHANNELS].chunks_exact(CHANNELS).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    image[c * plane + y * SIDE + x] = v;
                }
            }
        }
    }
    let labels = npy_u8(LABELS_NPY, "labels.npy")?.to_vec();
    if labels.iter().any(|&l| l as usize >= CLASSES) {
        return Err(bad(format!("labels.npy holds a label beyond the {CLASSES} classes")));
    }
    let split = npy_u8(SPLIT_NPY, "split.npy")?;
    let train_count = split.iter().take_while(|&&s| s == 0).count();
    if split[train_count..].iter().any(|&s| s != 1) {
        return Err(bad("split.npy does not hold the train rows first, then the test rows".into()));
    }
    Ok(Emoji { images, labels, train_count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_emoji_decode_with_every_class_in_both_splits() {
        let set = load_all().unwrap();
        assert_eq!(set.images.len(), COUNT * 3 * 64 * 64);
        assert_eq!((set.train_count, COUNT - set.train_count), (3_411, 370));
        for part in [&set.labels[..set.train_count], &set.labels[set.train_count..]] {
            let mut counts = [0usize; CLASSES];
            part.iter().for_each(|&l| counts[l as usize] += 1);
            assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        }
        // Composited on white: the corners of the first image are white in every channel.
        let plane = SIDE * SIDE;
        for c in 0..3 {
            assert_eq!(set.images[c * plane], 255);
            assert_eq!(set.images[c * plane + plane - 1], 255);
        }
        // Colour: the channels differ somewhere.
        let first = &set.images[..3 * plane];
        assert!((0..plane).any(|i| first[i] != first[plane + i] || first[i] != first[2 * plane + i]));
        assert_eq!(class_names().unwrap()[0], "Smileys & Emotion");
    }
}
