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

/// The bundled colour set: RGB planes on white, its nine categories, and `--size 32` giving
/// the 32x32 version.
#[test]
fn packs_the_bundled_emoji_in_colour_and_at_32() {
    let dir = tempfile::tempdir().unwrap();
    tool("img-pack")
        .current_dir(dir.path())
        .args(["emoji", "--split", "test", "-o", "x.npy", "--labels-out", "y.npy"])
        .assert()
        .success();
    let (shape, pixels) = u8s(&dir.path().join("x.npy"));
    assert_eq!(shape, vec![370, 3, 64, 64]);
    // The top-left pixel of every image is the white background.
    assert!(pixels.chunks_exact(64 * 64).all(|plane| plane[0] == 255));
    let (_, labels) = u8s(&dir.path().join("y.npy"));
    assert!(labels.iter().all(|&l| l <= 8) && labels.contains(&8) && labels.contains(&0));
    tool("img-pack").current_dir(dir.path()).args(["emoji", "--size", "32", "-o", "s.npy"]).assert().success();
    assert_eq!(u8s(&dir.path().join("s.npy")).0, vec![3_781, 3, 32, 32]);
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

/// Writes a palette PNG by hand (the image crate writes none): `index` picks each pixel's
/// entry of `palette`, whose alphas are `alpha` (a tRNS chunk).
fn write_palette_png(path: &Path, w: u32, h: u32, palette: &[[u8; 3]], alpha: &[u8], index: impl Fn(u32, u32) -> u8) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr = [w.to_be_bytes().as_slice(), &h.to_be_bytes(), &[8, 3, 0, 0, 0]].concat();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"PLTE", &palette.concat());
    chunk(&mut png, b"tRNS", alpha);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        raw.extend((0..w).map(|x| index(x, y)));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&raw).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap();
}

/// The pixel (x, y) of image `n` of a u8 [N, C, H, W] array, one value per channel.
fn pixel(shape: &[usize], v: &[u8], n: usize, x: usize, y: usize) -> Vec<u8> {
    let (c, h, w) = match shape {
        [_, c, h, w] => (*c, *h, *w),
        [_, h, w] => (1, *h, *w),
        _ => panic!("shape {shape:?}"),
    };
    (0..c).map(|ch| v[((n * c + ch) * h + y) * w + x]).collect()
}

fn near(got: &[u8], want: &[u8], tolerance: u8) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| a.abs_diff(*b) <= tolerance)
}

/// A folder of every mode: grey, grey+alpha, RGBA, palette with transparency, RGB JPEG.
fn mixed_folder(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    image::GrayImage::from_pixel(4, 4, image::Luma([40])).save(root.join("a-grey.png")).unwrap();
    // Grey+alpha: black at half opacity on the left, opaque black on the right.
    image::GrayAlphaImage::from_fn(4, 4, |x, _| image::LumaA([0, if x < 2 { 128 } else { 255 }]))
        .save(root.join("b-grey-alpha.png"))
        .unwrap();
    // RGBA: transparent red at the left, opaque blue at the right.
    image::RgbaImage::from_fn(4, 4, |x, _| image::Rgba(if x < 2 { [255, 0, 0, 0] } else { [0, 0, 255, 255] }))
        .save(root.join("c-rgba.png"))
        .unwrap();
    // Palette: entry 0 transparent green, entry 1 opaque yellow.
    write_palette_png(&root.join("d-palette.png"), 4, 4, &[[0, 255, 0], [255, 255, 0]], &[0, 255], |x, _| {
        (x >= 2) as u8
    });
    image::RgbImage::from_pixel(4, 4, image::Rgb([200, 100, 50])).save(root.join("e-rgb.jpg")).unwrap();
}

#[test]
fn mixed_modes_become_rgb_composited_on_white() {
    let dir = tempfile::tempdir().unwrap();
    mixed_folder(&dir.path().join("mixed"));
    tool("img-pack").current_dir(dir.path()).args(["mixed", "-o", "x.npy"]).assert().success();
    let (shape, v) = u8s(&dir.path().join("x.npy"));
    assert_eq!(shape, vec![5, 3, 4, 4]);
    let p = |n, x| pixel(&shape, &v, n, x, 1);
    assert_eq!(p(0, 0), [40, 40, 40], "grey repeated over RGB");
    assert_eq!((p(1, 0), p(1, 3)), (vec![127, 127, 127], vec![0, 0, 0]), "grey+alpha on white");
    assert_eq!((p(2, 0), p(2, 3)), (vec![255, 255, 255], vec![0, 0, 255]), "RGBA on white");
    assert_eq!((p(3, 0), p(3, 3)), (vec![255, 255, 255], vec![255, 255, 0]), "palette with transparency");
    assert!(near(&p(4, 1), &[200, 100, 50], 6), "JPEG {:?}", p(4, 1));

    // --gray: one channel, the composited values in grey.
    tool("img-pack").current_dir(dir.path()).args(["mixed", "--gray", "-o", "g.npy"]).assert().success();
    let (shape, v) = u8s(&dir.path().join("g.npy"));
    assert_eq!(shape, vec![5, 4, 4]);
    let g = |n, x| pixel(&shape, &v, n, x, 1)[0];
    assert_eq!([g(0, 0), g(1, 0), g(1, 3), g(2, 0), g(3, 0)], [40, 127, 0, 255, 255]);
    assert!(g(2, 3) < 40 && g(3, 3) > 200, "blue {} yellow {}", g(2, 3), g(3, 3));

    // An all-grey folder keeps one channel without --gray.
    std::fs::create_dir(dir.path().join("grey")).unwrap();
    for name in ["a-grey.png", "b-grey-alpha.png"] {
        std::fs::copy(dir.path().join("mixed").join(name), dir.path().join("grey").join(name)).unwrap();
    }
    tool("img-pack").current_dir(dir.path()).args(["grey", "-o", "one.npy"]).assert().success();
    let (shape, v) = u8s(&dir.path().join("one.npy"));
    assert_eq!((shape.clone(), pixel(&shape, &v, 1, 0, 0)), (vec![2, 4, 4], vec![127]));
}

#[test]
fn fits_crop_pad_and_stretch_to_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // 8x4, red on the left half and blue on the right; a tall grey 3x6 for the grey set.
    image::RgbImage::from_fn(8, 4, |x, _| image::Rgb(if x < 4 { [255, 0, 0] } else { [0, 0, 255] }))
        .save(p.join("wide.png"))
        .unwrap();
    std::fs::create_dir(p.join("colour")).unwrap();
    std::fs::copy(p.join("wide.png"), p.join("colour/wide.png")).unwrap();
    write_png(&p.join("grey/tall.png"), 3, 6, [90; 3]);
    let pack = |dir: &str, fit: &[&str], out: &str| {
        tool("img-pack").current_dir(p).args([dir, "--size", "4", "-o", out]).args(fit).assert().success();
        u8s(&p.join(out))
    };
    // crop (the default): the centre 4x4, red then blue columns, at the original scale.
    let (shape, v) = pack("colour", &[], "crop.npy");
    assert_eq!(shape, vec![1, 3, 4, 4]);
    assert_eq!((pixel(&shape, &v, 0, 0, 0), pixel(&shape, &v, 0, 3, 3)), (vec![255, 0, 0], vec![0, 0, 255]));
    // pad: 4x2 in the middle rows, white above and below.
    let (shape, v) = pack("colour", &["--fit", "pad"], "pad.npy");
    assert_eq!(shape, vec![1, 3, 4, 4]);
    assert_eq!((pixel(&shape, &v, 0, 0, 0), pixel(&shape, &v, 0, 3, 3)), (vec![255; 3], vec![255; 3]));
    assert!(near(&pixel(&shape, &v, 0, 0, 1), &[255, 0, 0], 8) && near(&pixel(&shape, &v, 0, 3, 2), &[0, 0, 255], 8));
    // stretch: the whole width squeezed into 4 columns, every row alike.
    let (shape, v) = pack("colour", &["--fit", "stretch"], "stretch.npy");
    assert_eq!(shape, vec![1, 3, 4, 4]);
    assert!(near(&pixel(&shape, &v, 0, 0, 0), &[255, 0, 0], 8) && near(&pixel(&shape, &v, 0, 3, 3), &[0, 0, 255], 8));
    assert_eq!(pixel(&shape, &v, 0, 1, 0), pixel(&shape, &v, 0, 1, 3));
    // A grey set pads with 0: 3x6 becomes 2x4, one black column on each side.
    let (shape, v) = pack("grey", &["--fit", "pad"], "grey-pad.npy");
    assert_eq!(shape, vec![1, 4, 4]);
    let columns: Vec<u8> = (0..4).map(|x| pixel(&shape, &v, 0, x, 2)[0]).collect();
    assert_eq!(columns.iter().filter(|&&c| c == 0).count(), 2, "{columns:?}");
    assert!(columns[1..3].iter().all(|&c| c.abs_diff(90) <= 2), "{columns:?}");
    // --size WxH still works, and a 1-pixel checkerboard shrunk 4x is uniform grey.
    image::GrayImage::from_fn(64, 32, |x, y| image::Luma([if (x + y) % 2 == 0 { 0 } else { 255 }]))
        .save(p.join("board.png"))
        .unwrap();
    std::fs::create_dir(p.join("boards")).unwrap();
    std::fs::rename(p.join("board.png"), p.join("boards/board.png")).unwrap();
    tool("img-pack").current_dir(p).args(["boards", "--size", "16x8", "-o", "b.npy"]).assert().success();
    let (shape, v) = u8s(&p.join("b.npy"));
    assert_eq!(shape, vec![1, 8, 16]);
    assert!(v.iter().all(|&g| (124..=131).contains(&g)), "{v:?}");
}

#[test]
fn word_named_class_folders_write_a_class_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_png(&p.join("pets/dogs/a.png"), 2, 2, [10; 3]);
    write_png(&p.join("pets/cats/b.png"), 2, 2, [20; 3]);
    write_png(&p.join("pets/cats/a.png"), 2, 2, [30; 3]);
    write_png(&p.join("pets/ants/z.png"), 2, 2, [40; 3]);
    std::fs::create_dir(p.join("pets/empty")).unwrap();
    tool("img-pack").current_dir(p).args(["pets", "-o", "x.npy", "--labels-out", "y.npy"]).assert().success();
    let (shape, v) = u8s(&p.join("x.npy"));
    assert_eq!((shape, [v[0], v[4], v[8], v[12]]), (vec![4, 2, 2], [40, 30, 20, 10]));
    assert_eq!(u8s(&p.join("y.npy")), (vec![4], vec![0, 1, 1, 2]));
    let table = std::fs::read_to_string(p.join("y.classes.json")).unwrap();
    assert_eq!(table, "[\"ants\",\"cats\",\"dogs\"]\n");

    // The table cannot go beside stdout.
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["pets", "-o", "x2.npy", "--labels-out", "-"]),
        p,
        "classes.json",
    );
    assert!(line.contains("give --labels-out a file"), "{line}");
    // Integer and word names mixed, or images beside class folders: one line each, no output.
    write_png(&p.join("pets/7/c.png"), 2, 2, [50; 3]);
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["pets", "-o", "x2.npy", "--labels-out", "y2.npy"]),
        p,
        "pets",
    );
    assert!(line.contains("integers (7/) and by words (ants/)"), "{line}");
    std::fs::remove_dir_all(p.join("pets/7")).unwrap();
    write_png(&p.join("pets/loose.png"), 2, 2, [60; 3]);
    let line = assert_fails_naming(tool("img-pack").current_dir(p).args(["pets", "-o", "x2.npy"]), p, "loose.png");
    assert!(line.contains("beside class folders"), "{line}");
}

#[test]
fn bad_files_are_named_or_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_png(&p.join("set/a.png"), 3, 3, [10; 3]);
    write_png(&p.join("set/d.png"), 3, 3, [40; 3]);
    std::fs::write(p.join("set/b-empty.png"), b"").unwrap();
    let good = std::fs::read(p.join("set/a.png")).unwrap();
    std::fs::write(p.join("set/c-truncated.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(p.join("set/e-text.jpg"), b"not a jpeg at all").unwrap();
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["set", "-o", "x.npy", "--labels-out", "y.npy"]),
        p,
        "b-empty.png",
    );
    assert!(line.contains("empty file") && line.contains("--skip-bad"), "{line}");
    std::fs::remove_file(p.join("set/b-empty.png")).unwrap();
    let line = assert_fails_naming(tool("img-pack").current_dir(p).args(["set", "-o", "x.npy"]), p, "c-truncated.png");
    assert!(line.contains("cannot decode image"), "{line}");
    std::fs::write(p.join("set/b-empty.png"), b"").unwrap();

    let out = tool("img-pack").current_dir(p).args(["set", "--skip-bad", "-o", "x.npy"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("img-pack: skipped 3 bad files: ") && stderr.contains("b-empty.png"), "{stderr}");
    let (shape, v) = u8s(&p.join("x.npy"));
    assert_eq!((shape, [v[0], v[9]]), (vec![2, 3, 3], [10, 40]));
    // A folder with nothing but bad files fails even with --skip-bad.
    std::fs::create_dir(p.join("bad")).unwrap();
    std::fs::write(p.join("bad/x.png"), b"").unwrap();
    let line =
        assert_fails_naming(tool("img-pack").current_dir(p).args(["bad", "--skip-bad", "-o", "z.npy"]), p, "bad");
    assert!(line.contains("no image that decodes (1 bad files skipped)"), "{line}");
}

/// A CIFAR-10 record: `label`, then red, green and blue planes whose pixel i is
/// `base + plane + i % 7`.
fn cifar_record(label: u8, base: u8) -> Vec<u8> {
    let mut r = vec![label];
    for plane in 0..3u8 {
        r.extend((0..1024).map(|i| base + 10 * plane + (i % 7) as u8));
    }
    r
}

#[test]
fn packs_cifar_records_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("one.bin"), [cifar_record(3, 0), cifar_record(9, 100)].concat()).unwrap();
    std::fs::write(p.join("two.bin"), cifar_record(0, 200)).unwrap();
    tool("img-pack")
        .current_dir(p)
        .args(["two.bin", "one.bin", "-o", "x.npy", "--labels-out", "y.npy"])
        .assert()
        .success();
    let (shape, v) = u8s(&p.join("x.npy"));
    assert_eq!(shape, vec![3, 3, 32, 32]);
    assert_eq!(u8s(&p.join("y.npy")), (vec![3], vec![0, 3, 9]));
    // Channel order R, G, B, each plane row-major: pixel (x, y) is index 32 y + x.
    assert_eq!(pixel(&shape, &v, 0, 0, 0), [200, 210, 220]);
    assert_eq!(pixel(&shape, &v, 1, 3, 1), [(35 % 7) as u8, 10 + (35 % 7) as u8, 20 + (35 % 7) as u8]);
    assert_eq!(pixel(&shape, &v, 2, 31, 31), [100 + (1023 % 7) as u8, 110 + 1, 120 + 1]);

    // A folder of batches: --split train is data_batch_1..5, test is test_batch, all both.
    let batches = p.join("cifar-10-batches-bin");
    std::fs::create_dir(&batches).unwrap();
    for i in 1..=5u8 {
        std::fs::write(batches.join(format!("data_batch_{i}.bin")), cifar_record(i, i)).unwrap();
    }
    std::fs::write(batches.join("test_batch.bin"), [cifar_record(7, 50), cifar_record(8, 60)].concat()).unwrap();
    std::fs::write(batches.join("batches.meta.txt"), "airplane\n").unwrap();
    for (split, labels) in [("train", vec![1, 2, 3, 4, 5]), ("test", vec![7, 8]), ("all", vec![1, 2, 3, 4, 5, 7, 8])] {
        tool("img-pack")
            .current_dir(p)
            .args(["cifar-10-batches-bin", "--split", split, "-o", "s.npy", "--labels-out", "l.npy"])
            .assert()
            .success();
        assert_eq!(u8s(&p.join("s.npy")).0, vec![labels.len(), 3, 32, 32]);
        assert_eq!(u8s(&p.join("l.npy")).1, labels, "{split}");
    }
    // --gray and --size apply as to any colour source.
    tool("img-pack").current_dir(p).args(["two.bin", "--gray", "--size", "16", "-o", "g.npy"]).assert().success();
    assert_eq!(u8s(&p.join("g.npy")).0, vec![1, 16, 16]);

    // A size that is not a multiple of 3,073, a label beyond 9, a missing batch: one line each.
    std::fs::write(p.join("cut.bin"), &cifar_record(1, 0)[..3000]).unwrap();
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["one.bin", "cut.bin", "-o", "z.npy", "--labels-out", "zl.npy"]),
        p,
        "cut.bin",
    );
    assert!(line.contains("3000 bytes, not a positive multiple of 3073"), "{line}");
    std::fs::write(p.join("cifar100.bin"), cifar_record(42, 0)).unwrap();
    let line =
        assert_fails_naming(tool("img-pack").current_dir(p).args(["cifar100.bin", "-o", "z.npy"]), p, "cifar100.bin");
    assert!(line.contains("label 42, expected 0..9"), "{line}");
    std::fs::remove_file(batches.join("data_batch_3.bin")).unwrap();
    let line = assert_fails_naming(
        tool("img-pack").current_dir(p).args(["cifar-10-batches-bin", "-o", "z.npy"]),
        p,
        "data_batch_3.bin",
    );
    assert!(line.contains("--split"), "{line}");
    let line =
        assert_fails_naming(tool("img-pack").current_dir(p).args(["one.bin", "mnist", "-o", "z.npy"]), p, "mnist");
    assert!(line.contains("several INPUTs"), "{line}");
}

#[test]
fn packs_fashion_mnist_when_installed() {
    let root = Path::new("/usr/share/datasets/fashion-mnist");
    if !root.is_dir() {
        eprintln!("skipped: {} is missing (apt-get install dataset-fashion-mnist)", root.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (images, labels, n) in [
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    ] {
        tool("img-pack")
            .current_dir(dir.path())
            .arg(root.join(images))
            .arg("--labels-from")
            .arg(root.join(labels))
            .args(["-o", "x.npy", "--labels-out", "y.npy"])
            .assert()
            .success();
        let (shape, pixels) = u8s(&dir.path().join("x.npy"));
        assert_eq!(shape, vec![n, 28, 28]);
        assert_eq!(pixels.iter().max(), Some(&255));
        let (shape, labels) = u8s(&dir.path().join("y.npy"));
        assert_eq!(shape, vec![n]);
        // Fashion-MNIST is balanced: n / 10 of each of the ten classes.
        let counts = (0..10u8).map(|c| labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>();
        assert_eq!(counts, vec![n / 10; 10]);
    }
}
