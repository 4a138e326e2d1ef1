//! One image on its way into an array: transparency composited on white, the colour mode
//! chosen for the set (one grey channel or RGB), and the geometry fitted to `--size` by
//! cropping, padding or stretching.
//!
//! Resizing uses `image::imageops::resize` with [`FILTER`]. That function widens the
//! filter's support by the shrink ratio when it shrinks (`sratio` in `imageops/sample.rs` of
//! image 0.25: `src_support = filter.support * ratio` for `ratio > 1`, and the kernel is
//! evaluated at `distance / ratio`), so every output pixel averages all the source pixels it
//! covers and shrinking does not alias: a one-pixel checkerboard shrunk 4x comes out uniform
//! grey (tested below). This holds for its Lanczos3, CatmullRom and Triangle filters alike;
//! `DynamicImage::resize_exact` is the same function. (`thumbnail`, which does not scale
//! the support, is not used.)

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, Pixel, RgbImage};

use super::pack::Size;

/// Lanczos3 keeps strokes sharp when resizing; its overshoot is clipped to 0..255.
pub const FILTER: FilterType = FilterType::Lanczos3;

/// How `--size` is met when an image's aspect ratio differs from the target's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fit {
    /// Resize on the shorter side and cut the centre out.
    #[default]
    Crop,
    /// Resize on the longer side and pad, centred (white for colour sets, 0 for grey ones).
    Pad,
    /// Resize each side to the target, changing the aspect ratio.
    Stretch,
}

/// The image as 8-bit grey (`gray`) or RGB, with any alpha channel composited on white.
/// Only these two modes leave this function.
pub fn to_mode(image: DynamicImage, gray: bool) -> DynamicImage {
    let alpha = image.color().has_alpha();
    match (gray, alpha) {
        (true, false) => DynamicImage::ImageLuma8(image.into_luma8()),
        (false, false) => DynamicImage::ImageRgb8(image.into_rgb8()),
        (true, true) => {
            let la = image.into_luma_alpha8();
            DynamicImage::ImageLuma8(GrayImage::from_fn(la.width(), la.height(), |x, y| {
                let [v, a] = la.get_pixel(x, y).0;
                image::Luma([on_white(v, a)])
            }))
        }
        (false, true) => {
            let rgba = image.into_rgba8();
            DynamicImage::ImageRgb8(RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                let [r, g, b, a] = rgba.get_pixel(x, y).0;
                image::Rgb([on_white(r, a), on_white(g, a), on_white(b, a)])
            }))
        }
    }
}

/// A channel value of opacity `a` over white, rounded.
fn on_white(v: u8, a: u8) -> u8 {
    let (v, a) = (v as u32, a as u32);
    ((v * a + 255 * (255 - a) + 127) / 255) as u8
}

/// Fits a grey or RGB image (see [`to_mode`]) to `size`. With [`Fit::Pad`] the result is as
/// large as fits inside `size` with the aspect ratio kept; the padding is added when the
/// array is assembled, where the set's colour mode (and so the fill) is known.
pub fn fit(image: DynamicImage, size: Size, fit: Fit) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(g) => DynamicImage::ImageLuma8(fit_buffer(&g, size, fit)),
        DynamicImage::ImageRgb8(c) => DynamicImage::ImageRgb8(fit_buffer(&c, size, fit)),
        other => DynamicImage::ImageRgb8(fit_buffer(&other.into_rgb8(), size, fit)),
    }
}

fn fit_buffer<P>(image: &image::ImageBuffer<P, Vec<u8>>, size: Size, fit: Fit) -> image::ImageBuffer<P, Vec<u8>>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = (image.width() as u64, image.height() as u64);
    let (tw, th) = (size.width as u64, size.height as u64);
    // Is the image wider than the target (w/h > tw/th)?
    let wider = w * th > h * tw;
    let clamp = |v: u64, max: u64| v.clamp(1, max) as u32;
    let round_div = |a: u64, b: u64| (a + b / 2) / b;
    match fit {
        Fit::Stretch => imageops::resize(image, size.width, size.height, FILTER),
        Fit::Crop => {
            // The largest centred region with the target's aspect ratio.
            let (cw, ch) = if wider {
                (clamp(round_div(h * tw, th), w), h as u32)
            } else {
                (w as u32, clamp(round_div(w * th, tw), h))
            };
            let (x, y) = ((w as u32 - cw) / 2, (h as u32 - ch) / 2);
            let region = imageops::crop_imm(image, x, y, cw, ch);
            imageops::resize(&*region, size.width, size.height, FILTER)
        }
        Fit::Pad => {
            let (nw, nh) = if wider {
                (size.width, clamp(round_div(h * tw, w), th))
            } else {
                (clamp(round_div(w * th, h), tw), size.height)
            };
            imageops::resize(image, nw, nh, FILTER)
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{Luma, Rgba, RgbaImage};

    use super::*;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    #[test]
    fn composites_alpha_on_white() {
        let rgba =
            RgbaImage::from_fn(3, 1, |x, _| Rgba([[200, 0, 0, 255], [200, 0, 0, 0], [0, 100, 200, 128]][x as usize]));
        let rgb = to_mode(DynamicImage::ImageRgba8(rgba), false).into_rgb8();
        assert_eq!(rgb.as_raw(), &[200, 0, 0, 255, 255, 255, 127, 177, 227]);
        let la = image::GrayAlphaImage::from_fn(2, 1, |x, _| image::LumaA([[0, 0], [0, 255]][x as usize]));
        let g = to_mode(DynamicImage::ImageLumaA8(la), true);
        assert_eq!(g.as_bytes(), &[255, 0]);
    }

    #[test]
    fn shrinking_a_checkerboard_does_not_alias() {
        let board = GrayImage::from_fn(64, 64, |x, y| Luma([if (x + y) % 2 == 0 { 0 } else { 255 }]));
        for filter in [FilterType::Lanczos3, FilterType::CatmullRom, FilterType::Triangle] {
            let small = imageops::resize(&board, 16, 16, filter);
            let (lo, hi) = small.as_raw().iter().fold((255, 0), |(lo, hi), &v| (v.min(lo), v.max(hi)));
            assert!(lo >= 124 && hi <= 131, "{filter:?}: {lo}..{hi}");
        }
        let small = fit(DynamicImage::ImageLuma8(board), size(16, 16), Fit::Crop);
        assert!(small.as_bytes().iter().all(|&v| (124..=131).contains(&v)), "{:?}", small.as_bytes());
    }

    #[test]
    fn crops_pads_and_stretches_to_the_target() {
        // 8x4: left half black, right half white.
        let image = || DynamicImage::ImageLuma8(GrayImage::from_fn(8, 4, |x, _| Luma([if x < 4 { 0 } else { 255 }])));
        let crop = fit(image(), size(2, 2), Fit::Crop);
        assert_eq!((crop.width(), crop.height()), (2, 2));
        let pad = fit(image(), size(4, 4), Fit::Pad);
        assert_eq!((pad.width(), pad.height()), (4, 2));
        let stretch = fit(image(), size(4, 4), Fit::Stretch);
        assert_eq!((stretch.width(), stretch.height()), (4, 4));
        // A tall image pads on the sides instead, and crops top and bottom.
        let tall = || DynamicImage::ImageLuma8(GrayImage::from_pixel(3, 9, Luma([9])));
        let pad = fit(tall(), size(6, 6), Fit::Pad);
        assert_eq!((pad.width(), pad.height()), (2, 6));
        let crop = fit(tall(), size(6, 3), Fit::Crop);
        assert_eq!((crop.width(), crop.height(), crop.as_bytes()[0]), (6, 3, 9));
    }
}
