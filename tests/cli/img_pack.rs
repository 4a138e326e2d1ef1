//! img-pack: the bundled digits, IDX files (plain and gzipped) and image folders (with class
//! subfolders) packed into .npy arrays, and refusals of bad inputs.

use std::io::Write;
use std::path::Path;

use genimg::io::npy::Elements;

use crate::common::{assert_fails_naming, read_npy, tool};

/// An IDX file: big-endian magic, sizes, then the bytes.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn u8s(path: &Path) -> (Vec<usize>, Vec<u8>) {
    match read_npy(path) {
        genimg::io::npy::Array { shape, data: Elements::U8(v) } => (shape, v),
        other => panic!("{}: expected u8, got {:?}", path.display(), other.data.dtype()),
    }
}

/// Writes a `w` x `h` PNG whose pixels are all `rgb` (grey when the three are equal).
fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb[0] == rgb[1] && rgb[1] == rgb[2] {
        image::GrayImage::from_pixel(w, h, image::Luma([rgb[0]])).save(path).unwrap();
    } else {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
    }
}

#[test]
fn packs_the_bundled_test_split_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    tool("img-pack")
        .current_dir(dir.path())
        .args(["mnist", "--split", "test", "-o", "x.npy", "--labels-out", "y.npy"])
        .assert()
        .success();
    let (shape, pixels) = u8s(&dir.path().join("x.npy"));
    assert_eq!((shape, pixels.len()), (vec![1000, 28, 28], 1000 * 784));
    assert_eq!(pixels.iter().max(), Some(&255));
    let (shape, labels) = u8s(&dir.path().join("y.npy"));
    assert_eq!(shape, vec![1000]);
    assert!(labels.iter().all(|&l| l <= 9) && labels.contains(&9));
}

#[test]
fn pads_to_32_in_minus_one_one() {
    let dir = tempfile::tempdir().unwrap();
    tool("img-pack")
        .current_dir(dir.path())
        .args(["mnist", "--split", "test", "--pad-to", "32", "--range", "11", "-o", "x.npy"])
        .assert()
        .success();
    let (shape, v) = crate::common::read_f32(&dir.path().join("x.npy"));
    assert_eq!(shape, vec![1000, 32, 32]);
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    assert_eq!(v.iter().cloned().fold(f32::MIN, f32::max), 1.0);
    for image in v.chunks_exact(32 * 32) {
        let border =
            (0..32).flat_map(|i| [i, 32 + i, 30 * 32 + i, 31 * 32 + i, 32 * i, 32 * i + 1, 32 * i + 30, 32 * i + 31]);
        assert!(border.into_iter().all(|i| image[i] == -1.0));
    }
}

#[test]
fn packs_a_folder_with_class_subfolders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("digits");
    write_png(&root.join("7/b.png"), 4, 3, [70; 3]);
    write_png(&root.join("3/a.png"), 4, 3, [30; 3]);
    write_png(&root.join("3/c.jpg.png"), 4, 3, [31; 3]);
    std::fs::write(root.join("3/notes.txt"), "not an image").unwrap();
    tool("img-pack")
        .current_dir(dir.path())
        .args(["digits", "-o", "x.npy", "--labels-out", "y.npy"])
        .assert()
        .success();
    let (shape, pixels) = u8s(&dir.path().join("x.npy"));
    assert_eq!(shape, vec![3, 3, 4]);
    // Path order: 3/a.png, 3/c.jpg.png, 7/b.png.
    assert_eq!([pixels[0], pixels[12], pixels[24]], [30, 31, 70]);
    assert_eq!(u8s(&dir.path().join("y.npy")), (vec![3], vec![3, 3, 7]));

    // A colour image makes the array RGB; --gray and --size turn it back into one channel.
    write_png(&root.join("300/d.png"), 8, 6, [255, 0, 0]);
    tool("img-pack")
        .current_dir(dir.path())
        .args(["digits", "--size", "4x3", "-o", "rgb.npy", "--labels-out", "y.npy"])
        .assert()
        .success();
    let (shape, pixels) = u8s(&dir.path().join("rgb.npy"));
    assert_eq!(shape, vec![4, 3, 3, 4]);
    // Path order puts 300/ before 7/.
    assert_eq!(&pixels[2 * 36..3 * 36], [[255; 12], [0; 12], [0; 12]].concat());
    let labels = read_npy(&dir.path().join("y.npy"));
    assert_eq!(labels.data, Elements::I64(vec![3, 3, 300, 7]), "a label over 255 makes them i64");
    tool("img-pack")
        .current_dir(dir.path())
        .args(["digits", "--gray", "--size", "4x3", "-o", "g.npy"])
        .assert()
        .success();
    assert_eq!(u8s(&dir.path().join("g.npy")).0, vec![4, 3, 4]);

    // Without --size, the first image of another size is named.
    let line = assert_fails_naming(
        tool("img-pack").current_dir(dir.path()).args(["digits", "-o", "x2.npy"]),
        dir.path(),
        "300/d.png",
    );
    assert!(line.contains("8x6") && line.contains("--size"), "{line}");
}

#[test]
fn packs_idx_files_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 2 * 5).map(|i| i * 8).collect();
    std::fs::write(dir.path().join("images-idx3-ubyte"), idx(0x803, &[3, 2, 5], &pixels)).unwrap();
    std::fs::write(dir.path().join("images.gz"), gzip(&idx(0x803, &[3, 2, 5], &pixels))).unwrap();
    std::fs::write(dir.path().join("labels.gz"), gzip(&idx(0x801, &[3], &[4, 1, 9]))).unwrap();
    for input in ["images-idx3-ubyte", "images.gz"] {
        tool("img-pack")
            .current_dir(dir.path())
            .args([input, "--labels-from", "labels.gz", "-o", "x.npy", "--labels-out", "y.npy"])
            .assert()
            .success();
        assert_eq!(u8s(&dir.path().join("x.npy")), (vec![3, 2, 5], pixels.clone()));
        assert_eq!(u8s(&dir.path().join("y.npy")), (vec![3], vec![4, 1, 9]));
    }
    // Labels of another count are refused, naming the labels file.
    std::fs::write(dir.path().join("two-labels"), idx(0x801, &[2], &[4, 1])).unwrap();
    let line = assert_fails_naming(
        tool("img-pack").current_dir(dir.path()).args(["images.gz", "--labels-from", "two-labels", "-o", "z.npy"]),
        dir.path(),
        "two-labels",
    );
    assert!(line.contains("expected 3"), "{line}");
}

#[test]
fn refuses_bad_inputs_with_one_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("empty"), b"").unwrap();
    std::fs::write(p.join("text.txt"), b"0 0 0 255\n255 0 0 0\n").unwrap();
    let mut truncated = idx(0x803, &[4, 28, 28], &[9; 4 * 784]);
    truncated.truncate(truncated.len() - 100);
    std::fs::write(p.join("truncated-idx3-ubyte"), &truncated).unwrap();
    std::fs::write(p.join("truncated.gz"), gzip(&truncated)).unwrap();
    std::fs::create_dir(p.join("no-images")).unwrap();
    write_png(&p.join("labels-free/a.png"), 2, 2, [1; 3]);
    for (culprit, word) in [
        ("empty", "empty"),
        ("text.txt", "looks like text"),
        ("truncated-idx3-ubyte", "truncated"),
        ("truncated.gz", "truncated (after gunzip)"),
        ("no-images", "no PNG or JPEG"),
    ] {
        let line = assert_fails_naming(
            tool("img-pack").current_dir(p).args([culprit, "-o", "x.npy", "--labels-out", "y.npy"]),
            p,
            culprit,
        );
        assert!(line.starts_with("img-pack: ") && line.contains(word), "{line}");
    }
    // Asking for labels a source does not have is an error too.
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["labels-free", "-o", "x.npy", "--labels-out", "y.npy"]),
        p,
        "labels-free",
    );
    assert!(line.contains("has no labels") && line.contains("subfolders"), "{line}");
}
