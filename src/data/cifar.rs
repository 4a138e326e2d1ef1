//! The CIFAR-10 binary format (www.cs.toronto.edu/~kriz/cifar.html, `cifar-10-binary.tar.gz`):
//! files `data_batch_1.bin` .. `data_batch_5.bin` (train, 10,000 images each) and
//! `test_batch.bin` (test), each a run of 3,073-byte records with no header: one label byte
//! (0..9), then the 32x32 image as 1,024 red, 1,024 green and 1,024 blue bytes, each plane
//! row-major, so a record's pixels are already [3, 32, 32].
//!
//! The format has no magic number: a file is taken for CIFAR-10 by its `.bin` name, and its
//! size (a multiple of 3,073) and labels (0..9) are checked before and while it is read.

use std::path::{Path, PathBuf};

use super::image_set::Split;
use crate::error::{Error, Result};
use crate::memory::ensure_fits;

/// The side of a CIFAR image.
pub const SIDE: usize = 32;
/// Bytes of one image: three planes of 32x32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Bytes of one record: the label, then the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// The files of the training split, in order.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The file of the test split.
pub const TEST_FILE: &str = "test_batch.bin";

/// True for a path INPUT names as a CIFAR-10 file (`*.bin`).
pub fn is_cifar_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"))
}

/// True for a folder that holds the CIFAR-10 batches (as `cifar-10-batches-bin/` does).
pub fn is_cifar_folder(dir: &Path) -> bool {
    dir.join(TRAIN_FILES[0]).is_file() || dir.join(TEST_FILE).is_file()
}

/// The files of `split` in a CIFAR-10 folder, in order (train then test for `all`); an error
/// names the first one missing.
pub fn split_files(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let names: Vec<&str> = match split {
        Split::Train => TRAIN_FILES.to_vec(),
        Split::Test => vec![TEST_FILE],
        Split::All => TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect(),
    };
    let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        let name = missing.file_name().unwrap_or_default().to_string_lossy();
        return Err(Error::bad_input(
            dir.display(),
            format!(
                "is a CIFAR-10 folder without {name} (--split {} needs {}; pick another with --split train|test)",
                split.name(),
                names.join(", ")
            ),
        ));
    }
    Ok(files)
}

/// Images u8 [N, 3, 32, 32] and labels [N] of CIFAR-10 files, concatenated in order.
#[derive(Debug)]
pub struct Cifar {
    pub count: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

/// Reads `files` in order. Every size is checked (a multiple of 3,073 bytes, not empty) and
/// the total against the machine's memory before anything is allocated.
pub fn read(files: &[PathBuf]) -> Result<Cifar> {
    let mut total = 0u128;
    for file in files {
        let name = file.display().to_string();
        let meta = std::fs::metadata(file).map_err(|e| Error::io(&name, e))?;
        if meta.is_dir() {
            return Err(Error::bad_input(&name, "is a directory, expected a CIFAR-10 .bin file"));
        }
        let len = meta.len();
        if len == 0 || len % RECORD_BYTES as u64 != 0 {
            return Err(Error::bad_input(
                name,
                format!(
                    "is {len} bytes, not a positive multiple of {RECORD_BYTES} (expected CIFAR-10 records: a label \
                     byte, then 1024 red, 1024 green and 1024 blue bytes)"
                ),
            ));
        }
        total += len as u128;
    }
    ensure_fits(format!("{} CIFAR-10 file(s)", files.len()), Some(total)).map_err(Error::config)?;
    let count = (total / RECORD_BYTES as u128) as usize;
    let mut pixels = Vec::with_capacity(count * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(count);
    for file in files {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).map_err(|e| Error::io(&name, e))?;
        if bytes.len() % RECORD_BYTES != 0 {
            return Err(Error::bad_input(&name, format!("changed size while being read ({} bytes)", bytes.len())));
        }
        for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            if record[0] > 9 {
                return Err(Error::bad_input(
                    name,
                    format!(
                        "record {i} (byte {}) has label {}, expected 0..9 (CIFAR-10; CIFAR-100's records are 3074 \
                         bytes and not read here)",
                        i * RECORD_BYTES,
                        record[0]
                    ),
                ));
            }
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
    }
    Ok(Cifar { count: labels.len(), pixels, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_in_file_order_and_checks_sizes_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let record = |label: u8, fill: u8| {
            let mut r = vec![label];
            r.extend(std::iter::repeat_n(fill, IMAGE_BYTES));
            r
        };
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        std::fs::write(&a, [record(3, 10), record(9, 20)].concat()).unwrap();
        std::fs::write(&b, record(0, 30)).unwrap();
        let c = read(&[b.clone(), a.clone()]).unwrap();
        assert_eq!((c.count, c.labels.clone()), (3, vec![0, 3, 9]));
        assert_eq!([c.pixels[0], c.pixels[IMAGE_BYTES], c.pixels[2 * IMAGE_BYTES]], [30, 10, 20]);
        std::fs::write(&b, &record(0, 30)[..100]).unwrap();
        let e = read(&[a.clone(), b]).unwrap_err().to_string();
        assert!(e.contains("b.bin: is 100 bytes, not a positive multiple of 3073"), "{e}");
        std::fs::write(&a, record(10, 0)).unwrap();
        let e = read(&[a]).unwrap_err().to_string();
        assert!(e.contains("record 0 (byte 0) has label 10, expected 0..9"), "{e}");
    }

    #[test]
    fn a_folder_names_the_missing_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TEST_FILE), []).unwrap();
        assert!(is_cifar_folder(dir.path()));
        assert_eq!(split_files(dir.path(), Split::Test).unwrap(), vec![dir.path().join(TEST_FILE)]);
        let e = split_files(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(e.contains("without data_batch_1.bin"), "{e}");
    }
}
