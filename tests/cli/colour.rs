//! Colour images through every image family: the bundled emoji (at `--size 8`, so each run
//! takes a second) train vae-mlp, vib-mlp, vqvae2 and the U-Net, whose tools then take and
//! write 3-channel arrays and RGB PNG grids.

use crate::common::tool;

/// The PNG's width, height and colour type (2 is RGB) from its IHDR chunk.
fn png_header(path: &std::path::Path) -> (u32, u32, u8) {
    let b = std::fs::read(path).unwrap();
    let word = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    (word(16), word(20), b[25])
}

/// The shape in an .npy file's header, as numpy prints it.
fn npy_shape(path: &std::path::Path) -> String {
    let b = std::fs::read(path).unwrap();
    let header = String::from_utf8_lossy(&b[10..128]).into_owned();
    let start = header.find("'shape': (").unwrap() + 10;
    header[start..start + header[start..].find(')').unwrap()].to_string()
}

#[test]
fn every_image_family_trains_and_runs_on_colour_emoji() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let emoji = ["--data", "emoji", "--size", "8"];
    let run = |name: &str, args: &[&str]| {
        tool(name).current_dir(d).args(args).assert().success();
    };
    run(
        "vae-train",
        &[&emoji[..], &["--hidden", "8", "--latent", "2", "--epochs", "1", "-o", "vae.safetensors"]].concat(),
    );
    run("vae-encode", &[&emoji[..], &["--model", "vae.safetensors", "-o", "z.npy"]].concat());
    run("vae-decode", &["--model", "vae.safetensors", "z.npy", "-o", "x.npy"]);
    assert_eq!(npy_shape(&d.join("x.npy")), "370, 3, 8, 8");
    run("img-grid", &["x.npy", "--cols", "10", "-o", "x.png"]);
    assert_eq!(png_header(&d.join("x.png")).2, 2, "an RGB grid");

    run("vae-train", &[&emoji[..], &["--preset", "vib-mlp", "--epochs", "1", "-o", "vib.safetensors"]].concat());
    run("vae-eval", &[&emoji[..], &["--model", "vib.safetensors", "-o", "vib.json"]].concat());
    let report = std::fs::read_to_string(d.join("vib.json")).unwrap();
    assert!(report.contains("\"images\":370"), "{report}");

    let vq = ["--preset", "vqvae2", "--epochs", "1", "--batch-size", "64", "-o", "vq.safetensors"];
    run("vae-train", &[&emoji[..], &vq[..]].concat());
    run("vq-encode", &[&emoji[..], &["--model", "vq.safetensors", "-o", "codes.safetensors"]].concat());
    run("vq-decode", &["--model", "vq.safetensors", "codes.safetensors", "--png", "vq.png", "--cols", "37"]);
    // 37 x 10 tiles of 8x8 with 2 pixels of padding.
    assert_eq!(png_header(&d.join("vq.png")), (37 * 10 + 2, 10 * 10 + 2, 2));

    let unet = ["--base-channels", "8", "--res-blocks", "1", "--epochs", "1", "-o", "ddpm.safetensors"];
    run("ddpm-train", &[&emoji[..], &unet[..]].concat());
    run(
        "ddpm-denoise",
        &["--model", "ddpm.safetensors", "-n", "4", "--sampler", "ddim", "--steps", "2", "--png", "s.png"],
    );
    assert_eq!(png_header(&d.join("s.png")).2, 2, "an RGB grid");
}
