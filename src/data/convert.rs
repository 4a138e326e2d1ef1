//! Pixel ranges and input geometry. Image arrays are u8 (0..255) or float in [0,1] (or
//! [-1,1] with `--range 11`); each model takes its own range (VAE and VIB [0,1], VQ-VAE and
//! DDPM [-1,1], docs/models.md) and its own size. A 28x28 image given to a 32x32 model is
//! zero-padded (2 pixels of background on each side), as the presets specify.

use crate::error::{Error, Result};
use crate::io::npy::{Array, Elements};

/// The range of float pixel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum PixelRange {
    /// [0, 1]
    #[default]
    #[serde(rename = "01")]
    #[value(name = "01")]
    ZeroOne,
    /// [-1, 1]
    #[serde(rename = "11")]
    #[value(name = "11")]
    MinusOneOne,
}

impl PixelRange {
    /// Maps a value in [0,1] to this range.
    pub fn from_unit(self, v: f32) -> f32 {
        match self {
            PixelRange::ZeroOne => v,
            PixelRange::MinusOneOne => 2.0 * v - 1.0,
        }
    }

    /// Maps a value in this range to [0,1].
    pub fn to_unit(self, v: f32) -> f32 {
        match self {
            PixelRange::ZeroOne => v,
            PixelRange::MinusOneOne => (v + 1.0) * 0.5,
        }
    }
}

/// Channels, height and width of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Geometry {
    pub const MNIST: Geometry = Geometry { channels: 1, height: 28, width: 28 };

    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// What a network whose preset takes `preset` takes when trained on images of this
    /// geometry: their channels, and their size unless it is within 8 pixels of the preset's
    /// with the same even margin on every side, which [`to_unit_f32`] pads or crops to the
    /// preset's size (28x28 digits become the 32x32 a `-mnist` preset takes).
    pub fn fitted_to(self, preset: Geometry) -> Geometry {
        let size =
            if margin(self, preset).is_some() { (preset.height, preset.width) } else { (self.height, self.width) };
        Geometry { channels: self.channels, height: size.0, width: size.1 }
    }

    /// The longer of height and width, named (`height` when they are equal): the field a
    /// size demand names.
    pub fn longer_side(&self) -> (&'static str, usize) {
        if self.height >= self.width {
            ("height", self.height)
        } else {
            ("width", self.width)
        }
    }

    /// An error unless the height and width are positive multiples of `stride`, for a
    /// network (`model` names it) that halves its maps that many times over.
    pub fn check_stride(&self, model: &str, stride: usize) -> Result<()> {
        let fits = |s: usize| s > 0 && s.is_multiple_of(stride);
        if fits(self.height) && fits(self.width) {
            return Ok(());
        }
        Err(Error::config(format!(
            "{model} takes images whose height and width are multiples of {stride}; these are {}x{} \
             (img-pack --size N or --fit pad makes such arrays)",
            self.height, self.width
        )))
    }

    /// Reads an image array's geometry from its shape: [N,H,W], [N,C,H,W], or [N,D] with D a
    /// square number of one-channel pixels (flattened MNIST).
    pub fn of_shape(shape: &[usize]) -> std::result::Result<Geometry, String> {
        match *shape {
            [_, c, h, w] => Ok(Geometry { channels: c, height: h, width: w }),
            [_, h, w] => Ok(Geometry { channels: 1, height: h, width: w }),
            [_, d] if d > 0 && d.isqrt() * d.isqrt() == d => {
                Ok(Geometry { channels: 1, height: d.isqrt(), width: d.isqrt() })
            }
            _ => Err(format!("shape {shape:?} is not an image array (expected [N,H,W], [N,C,H,W] or [N,H*W])")),
        }
    }
}

/// A value in [0,1] as a u8 pixel, 0..255, rounded to the nearest. Values outside [0,1]
/// saturate at 0 or 255 (Rust's float-to-int `as`).
pub fn unit_to_u8(v: f32) -> u8 {
    (v * 255.0).round() as u8
}

/// Converts a batch of images (u8, or float in `range`) to f32 in [0,1] with geometry
/// `want`: 28x28 images are zero-padded to 32x32 (2 pixels on every side, centred) and 32x32
/// images centre-cropped to 28x28, the inverse. `source` names the input in errors.
pub fn to_unit_f32(batch: &Array, range: PixelRange, want: Geometry, source: &str) -> Result<Vec<f32>> {
    let have = Geometry::of_shape(&batch.shape).map_err(|p| Error::bad_input(source, p))?;
    let n = batch.shape[0];
    let dh = fit_margin(have, want, source)?;
    let unit = unit_values(&batch.data, range, source)?;
    if dh == 0 {
        return Ok(unit);
    }
    let margin = dh.unsigned_abs() / 2;
    let mut out = vec![0f32; n * want.pixels()];
    let planes = unit.chunks_exact(have.height * have.width).zip(out.chunks_exact_mut(want.height * want.width));
    for (src, dst) in planes {
        if dh > 0 {
            for (y, row) in src.chunks_exact(have.width).enumerate() {
                let start = (y + margin) * want.width + margin;
                dst[start..start + have.width].copy_from_slice(row);
            }
        } else {
            for (y, row) in dst.chunks_exact_mut(want.width).enumerate() {
                let start = (y + margin) * have.width + margin;
                row.copy_from_slice(&src[start..start + want.width]);
            }
        }
    }
    Ok(out)
}

/// The size difference `want - have` by which [`to_unit_f32`] pads (> 0) or crops (< 0)
/// images of `have` to `want`, or an error of `source` saying why they do not fit.
pub fn fit_margin(have: Geometry, want: Geometry, source: &str) -> Result<isize> {
    if have.channels != want.channels {
        return Err(Error::bad_input(
            source,
            format!(
                "images have {} channel(s), the model expects {}{}",
                have.channels,
                want.channels,
                if want.channels == 1 { " (img-pack --gray makes one-channel arrays)" } else { "" }
            ),
        ));
    }
    margin(have, want).ok_or_else(|| {
        Error::bad_input(
            source,
            format!(
                "images are {}x{}, the model expects {}x{} (sizes within 8 pixels, such as 28x28 and 32x32, are \
                 padded or cropped to each other)",
                have.height, have.width, want.height, want.width
            ),
        )
    })
}

/// The size difference `want - have` (pixels, the same on both axes) when images of `have`
/// are padded (> 0) or centre-cropped (< 0) to `want`: an even margin of at most 8 pixels in
/// all, the same in height and width; `None` when they are not.
fn margin(have: Geometry, want: Geometry) -> Option<isize> {
    let (dh, dw) = (want.height as isize - have.height as isize, want.width as isize - have.width as isize);
    (dh == dw && dh % 2 == 0 && dh.abs() <= 8).then_some(dh)
}

/// An error of `source` unless every value of `data` is a pixel [`to_unit_f32`] takes: any u8,
/// or a float in `range` (1e-3 of slack for rounding).
pub fn check_values(data: &Elements, range: PixelRange, source: &str) -> Result<()> {
    let (lo, hi) = match range {
        PixelRange::ZeroOne => (0.0, 1.0),
        PixelRange::MinusOneOne => (-1.0, 1.0),
    };
    let outside = |x: f32| {
        let hint = if range == PixelRange::ZeroOne { "; pass --range 11 for [-1,1] data" } else { "" };
        Error::bad_input(
            source,
            format!("pixel value {x} is outside [{lo},{hi}] (expected u8 0..255 or floats in [{lo},{hi}]{hint})"),
        )
    };
    let inside = |x: f32| (lo - 1e-3..=hi + 1e-3).contains(&x);
    match data {
        Elements::U8(_) => Ok(()),
        Elements::F32(v) => v.iter().copied().find(|&x| !inside(x)).map_or(Ok(()), |x| Err(outside(x))),
        Elements::F64(v) => v.iter().map(|&x| x as f32).find(|&x| !inside(x)).map_or(Ok(()), |x| Err(outside(x))),
        other => Err(Error::bad_input(
            source,
            format!(
                "images of dtype {} are not supported (expected u8 0..255, or f32/f64 pixels)",
                other.dtype().name()
            ),
        )),
    }
}

fn unit_values(data: &Elements, range: PixelRange, source: &str) -> Result<Vec<f32>> {
    check_values(data, range, source)?;
    Ok(match data {
        Elements::U8(v) => v.iter().map(|&p| p as f32 / 255.0).collect(),
        Elements::F32(v) => v.iter().map(|&x| range.to_unit(x).clamp(0.0, 1.0)).collect(),
        Elements::F64(v) => v.iter().map(|&x| range.to_unit(x as f32).clamp(0.0, 1.0)).collect(),
        _ => unreachable!("check_values admits u8 and floats only"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_28_to_32_and_maps_ranges() {
        let a = Array { shape: vec![1, 28, 28], data: Elements::U8(vec![255; 784]) };
        let g = Geometry { channels: 1, height: 32, width: 32 };
        let v = to_unit_f32(&a, PixelRange::ZeroOne, g, "x").unwrap();
        assert_eq!(v.len(), 1024);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[2 * 32 + 2], 1.0);
        assert_eq!(v[2 * 32 + 30], 0.0);
        assert_eq!(v.iter().sum::<f32>(), 784.0);
        let f = Array { shape: vec![1, 2, 2], data: Elements::F32(vec![-1.0, 0.0, 1.0, 0.5]) };
        let g2 = Geometry { channels: 1, height: 2, width: 2 };
        assert_eq!(to_unit_f32(&f, PixelRange::MinusOneOne, g2, "x").unwrap(), vec![0.0, 0.5, 1.0, 0.75]);
        let e = to_unit_f32(&f, PixelRange::ZeroOne, g2, "x").unwrap_err().to_string();
        assert!(e.contains("outside [0,1]") && e.contains("--range 11"), "{e}");
    }

    #[test]
    fn rejects_wrong_geometry() {
        let a = Array { shape: vec![1, 3, 28, 28], data: Elements::U8(vec![0; 3 * 784]) };
        let g = Geometry::MNIST;
        assert!(to_unit_f32(&a, PixelRange::ZeroOne, g, "x").unwrap_err().to_string().contains("3 channel"));
        let b = Array { shape: vec![1, 64, 64], data: Elements::U8(vec![0; 4096]) };
        assert!(to_unit_f32(&b, PixelRange::ZeroOne, g, "x").unwrap_err().to_string().contains("64x64"));
        let c = Array { shape: vec![2, 784], data: Elements::U8(vec![0; 2 * 784]) };
        assert_eq!(to_unit_f32(&c, PixelRange::ZeroOne, g, "x").unwrap().len(), 2 * 784);
        let d = Array { shape: vec![2, 5], data: Elements::U8(vec![0; 10]) };
        assert!(to_unit_f32(&d, PixelRange::ZeroOne, g, "x").is_err());
        let e = Array { shape: vec![1, 28, 28], data: Elements::I64(vec![0; 784]) };
        assert!(to_unit_f32(&e, PixelRange::ZeroOne, g, "x").unwrap_err().to_string().contains("dtype i64"));
    }

    #[test]
    fn unit_values_round_to_the_nearest_byte_and_saturate() {
        let bytes: Vec<u8> = [0.0, 0.5, 1.0 / 255.0, 0.4 / 255.0, 1.0, -0.1, 1.5].into_iter().map(unit_to_u8).collect();
        assert_eq!(bytes, [0, 128, 1, 0, 255, 0, 255]);
        assert!((0..=255u8).all(|b| unit_to_u8(b as f32 / 255.0) == b));
    }

    /// 32x32 to 28x28 drops the 2-pixel border: the inverse of the padding.
    #[test]
    fn crops_32_to_28_inverting_the_padding() {
        let digit: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        let a = Array { shape: vec![1, 28, 28], data: Elements::U8(digit.clone()) };
        let padded =
            to_unit_f32(&a, PixelRange::ZeroOne, Geometry { channels: 1, height: 32, width: 32 }, "x").unwrap();
        let b = Array { shape: vec![1, 32, 32], data: Elements::F32(padded) };
        let back = to_unit_f32(&b, PixelRange::ZeroOne, Geometry::MNIST, "x").unwrap();
        assert_eq!(back, digit.iter().map(|&p| p as f32 / 255.0).collect::<Vec<_>>());
    }
}
