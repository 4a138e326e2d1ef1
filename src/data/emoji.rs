//! The bundled colour set: 3,781 Noto Emoji images of 64x64 RGB, composited on white, with
//! their nine emoji categories as labels, from the npm package `emoji-datasource-google`
//! 16.0.0 (images Apache License 2.0, data MIT; see data/emoji/README.md). Compiled into the
//! library, so `--data emoji` works offline from any directory.
//!
//! The fixed split: every tenth emoji in sort order is a test emoji, with all its skin-tone
//! variants; the rows hold the train images first, then the test images (`split.npy` marks
//! each row, and [`load_all`] checks that order).

use super::sheet;
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
const NAME: &str = "bundled emoji";

/// The set: u8 [COUNT, 3, 64, 64] (channels first, row-major), the labels, and the number of
/// train images (the rows before it are the train split, the rest the test split).
pub struct Emoji {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub train_count: usize,
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
    let images = sheet::cells(SHEET_PNG, NAME, CHANNELS, SIDE, GRID, COUNT)?;
    let labels = sheet::npy_u8(LABELS_NPY, NAME, "labels.npy", COUNT)?.to_vec();
    if labels.iter().any(|&l| l as usize >= CLASSES) {
        return Err(Error::bad_input(NAME, format!("labels.npy holds a label beyond the {CLASSES} classes")));
    }
    let split = sheet::npy_u8(SPLIT_NPY, NAME, "split.npy", COUNT)?;
    let train_count = split.iter().take_while(|&&s| s == 0).count();
    if split[train_count..].iter().any(|&s| s != 1) {
        return Err(Error::bad_input(NAME, "split.npy does not hold the train rows first, then the test rows"));
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
