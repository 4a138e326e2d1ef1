//! img-grid: image arrays drawn as PNG grids or one PNG per image, a real pipe from
//! img-pack, and refusals of bad arrays.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{assert_fails_naming, bin_path, tool, write_bad_images, write_npy_f32, write_npy_u8};

fn decode(path: &Path) -> image::DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Five 2x3 images, each filled with its own value, on 3 columns with 1 pixel of padding:
/// 3 * (3 + 1) + 1 = 13 wide, 2 * (2 + 1) + 1 = 7 high.
#[test]
fn tiles_land_in_their_cells() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u8> = (0..5u8).flat_map(|i| [40 * (i + 1); 6]).collect();
    write_npy_u8(dir.path(), "x.npy", &[5, 2, 3], &values);
    tool("img-grid")
        .current_dir(dir.path())
        .args(["x.npy", "--cols", "3", "--pad", "1", "-o", "g.png"])
        .assert()
        .success();
    let g = decode(&dir.path().join("g.png")).into_luma8();
    assert_eq!(g.dimensions(), (13, 7));
    for i in 0..5u32 {
        let (x0, y0) = (1 + (i % 3) * 4, 1 + (i / 3) * 3);
        for (dx, dy) in [(0, 0), (2, 1)] {
            assert_eq!(g.get_pixel(x0 + dx, y0 + dy).0, [40 * (i as u8 + 1)], "tile {i}");
        }
        assert_eq!(g.get_pixel(x0 - 1, y0).0, [0], "padding left of tile {i}");
    }
    assert_eq!(g.get_pixel(1 + 2 * 4, 4).0, [0], "the empty sixth cell");

    // Scaled, default layout (ceil(sqrt(5)) = 3 columns) and default padding 2.
    tool("img-grid").current_dir(dir.path()).args(["x.npy", "--scale", "2", "-o", "s.png"]).assert().success();
    assert_eq!(decode(&dir.path().join("s.png")).into_luma8().dimensions(), (3 * (6 + 2) + 2, 2 * (4 + 2) + 2));
}

#[test]
fn draws_colour_floats_in_minus_one_one_and_writes_one_file_per_image() {
    let dir = tempfile::tempdir().unwrap();
    // Two [3, 1, 2] images: red and blue, left pixel -1 (black) in the first.
    let v = [-1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0];
    write_npy_f32(dir.path(), "x.npy", &[2, 3, 1, 2], &v);
    tool("img-grid").current_dir(dir.path()).args(["x.npy", "--range", "11", "--dir", "tiles"]).assert().success();
    let tiles = dir.path().join("tiles");
    assert_eq!(crate::common::dir_entries(&tiles), ["000000.png", "000001.png"]);
    let first = decode(&tiles.join("000000.png")).into_rgb8();
    assert_eq!(
        (first.dimensions(), first.get_pixel(0, 0).0, first.get_pixel(1, 0).0),
        ((2, 1), [0, 0, 0], [255, 0, 0])
    );
    assert_eq!(decode(&tiles.join("000001.png")).into_rgb8().get_pixel(1, 0).0, [0, 0, 255]);

    // -o - writes the PNG itself to stdout.
    let out = tool("img-grid").current_dir(dir.path()).args(["x.npy", "--range", "11", "-o", "-"]).assert().success();
    assert!(out.get_output().stdout.starts_with(b"\x89PNG\r\n\x1a\n"));
}

/// 1,000 digits through a real pipe: 32 columns of 28 + 2 pixels, plus 2.
#[test]
fn draws_img_pack_output_through_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let mut pack = Command::new(bin_path("img-pack"))
        .args(["mnist", "--split", "test"])
        .env_clear()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new(bin_path("img-grid"))
        .args(["-o", "g.png"])
        .current_dir(dir.path())
        .env_clear()
        .stdin(pack.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(pack.wait().unwrap().success() && status.success());
    assert_eq!(decode(&dir.path().join("g.png")).into_luma8().dimensions(), (32 * 30 + 2, 32 * 30 + 2));
}

#[test]
fn refuses_bad_arrays_with_one_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut cases = write_bad_images(p);
    // Arrays a model would refuse (64x64, RGB) are fine to draw.
    cases.retain(|(name, _)| !["big.npy", "rgb.npy"].contains(name));
    write_npy_f32(p, "three.npy", &[1, 2, 2], &[0.0, 0.5, 3.0, 1.0]);
    write_npy_u8(p, "four-channels.npy", &[1, 4, 2, 2], &[0; 16]);
    cases.extend([("three.npy", "outside [0,1]"), ("four-channels.npy", "expected 1 (grey) or 3")]);
    for (culprit, word) in cases {
        let line = assert_fails_naming(tool("img-grid").current_dir(p).args([culprit, "-o", "g.png"]), p, culprit);
        assert!(line.starts_with("img-grid: ") && line.contains(word), "{line}");
        assert_fails_naming(tool("img-grid").current_dir(p).args([culprit, "--dir", "tiles"]), p, culprit);
    }
}
