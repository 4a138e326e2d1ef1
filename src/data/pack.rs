//! Packing images into one array: the bundled digits, an IDX file or a folder of PNG/JPEG
//! files become u8 [N,H,W] / [N,C,H,W] (or f32 in a chosen range), optionally resized,
//! converted to grey or zero-padded, with class labels when the source has them.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};
use rayon::prelude::*;

use super::convert::PixelRange;
use super::idx::{Idx, Kind};
use super::image_set::{DataSpec, Split};
use super::image_set::Bundled;
use crate::io::npy::Elements;
use crate::error::{Error, Result};
use crate::io::npy::{DType, NpyWriter};
use crate::io::{InputPath, Output, OutputPath};
use crate::memory::{bytes_of, ensure_fits};

/// Lanczos3 keeps strokes sharp when resizing; its overshoot is clipped to 0..255.
const FILTER: FilterType = FilterType::Lanczos3;
/// Images converted to f32 per write, so a float output needs no second full-size buffer.
const ROWS_PER_WRITE: usize = 256;

/// Where `img-pack` takes its images from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A bundled set.
    Bundled(Bundled, Split),
    /// An IDX images file (or stdin), with an optional IDX labels file.
    Idx { images: InputPath, labels: Option<InputPath> },
    /// A folder of PNG/JPEG files, or of class subfolders named by integers.
    Dir(PathBuf),
}

impl Source {
    /// Resolves INPUT (`mnist`, a folder, or an IDX file / `-`) and checks that `split` and
    /// `labels_from` suit it.
    pub fn new(input: &DataSpec, split: Option<Split>, labels_from: Option<InputPath>) -> Result<Self> {
        let path = match input {
            DataSpec::Bundled(set) => {
                if labels_from.is_some() {
                    return Err(Error::config("--labels-from is for IDX files; the bundled sets have their own labels"));
                }
                return Ok(Source::Bundled(*set, split.unwrap_or(Split::All)));
            }
            DataSpec::File(path) => path,
        };
        if split.is_some() {
            return Err(Error::config("--split applies to the bundled sets (INPUT mnist or emoji)"));
        }
        match path {
            InputPath::File(dir) if dir.is_dir() => {
                if labels_from.is_some() {
                    return Err(Error::config(
                        "--labels-from is for IDX files; a folder's labels are its class subfolders",
                    ));
                }
                Ok(Source::Dir(dir.clone()))
            }
            _ => Ok(Source::Idx { images: path.clone(), labels: labels_from }),
        }
    }
}

/// `--size WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid size '{s}' (expected WIDTHxHEIGHT, e.g. 32x32)");
        let (w, h) = s.split_once('x').ok_or_else(bad)?;
        let (width, height) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        if width == 0 || height == 0 {
            return Err(bad());
        }
        Ok(Size { width, height })
    }
}

/// How images are changed on the way in, applied in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackOptions {
    /// Convert colour images to one channel.
    pub gray: bool,
    /// Resize every image to this size.
    pub size: Option<Size>,
    /// Zero-pad every image, centred, to N x N.
    pub pad_to: Option<u32>,
}

impl PackOptions {
    /// An error naming `--size` or `--pad-to` when `count` images of that size (three u8
    /// channels at most) would not fit in the machine's memory.
    fn check(&self, count: usize) -> Result<()> {
        let images = if count == 1 { "one image" } else { "the images" };
        if let Some(s) = self.size {
            let bytes = bytes_of(&[count, s.width as usize, s.height as usize], 3);
            ensure_fits(format!("--size {}x{}: {images}", s.width, s.height), bytes).map_err(Error::config)?;
        }
        if let Some(n) = self.pad_to {
            let bytes = bytes_of(&[count, n as usize, n as usize], 3);
            ensure_fits(format!("--pad-to {n}: {images}"), bytes).map_err(Error::config)?;
        }
        Ok(())
    }
}

/// u8 images [N, C, H, W], row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// The array shape: [N, H, W] for one channel, else [N, C, H, W].
    pub fn shape(&self) -> Vec<usize> {
        match self.channels {
            1 => vec![self.count, self.height, self.width],
            c => vec![self.count, c, self.height, self.width],
        }
    }

    /// Pixels of one image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Class labels, u8 when they all fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    U8(Vec<u8>),
    I64(Vec<i64>),
}

impl Labels {
    fn from_i64(v: Vec<i64>) -> Self {
        if v.iter().all(|&l| (0..=255).contains(&l)) {
            Labels::U8(v.into_iter().map(|l| l as u8).collect())
        } else {
            Labels::I64(v)
        }
    }

    fn to_npy(&self) -> Vec<u8> {
        match self {
            Labels::U8(v) => crate::io::npy::to_bytes(&[v.len()], v),
            Labels::I64(v) => crate::io::npy::to_bytes(&[v.len()], v),
        }
    }
}

/// Packed images and, when the source has them, their labels.
#[derive(Debug, Clone)]
pub struct Packed {
    pub images: Images,
    pub labels: Option<Labels>,
    /// The source's name and why it has no labels, for the error when labels are asked for.
    source: String,
    no_labels: &'static str,
}

/// One decoded image on its way in, with the name of where it came from.
struct Picture {
    name: String,
    image: DynamicImage,
}

/// Reads `source` and applies `opts`.
pub fn pack(source: &Source, opts: &PackOptions) -> Result<Packed> {
    opts.check(1)?;
    let (pictures, labels, name, no_labels) = match source {
        Source::Bundled(set, split) => {
            let (array, labels) = set.load(*split)?;
            let name = format!("{}:{}", set.name(), split.name());
            let Elements::U8(pixels) = &array.data else { unreachable!("the bundled sets are u8") };
            let pictures = match array.shape[..] {
                [n, h, w] => gray_pictures(pixels, [n, h, w], &name),
                [n, _, h, w] => rgb_pictures(pixels, [n, h, w], &name),
                _ => unreachable!("the bundled sets are [N, H, W] or [N, 3, H, W]"),
            };
            let labels = Some(Labels::U8(labels.into_iter().map(|l| l as u8).collect()));
            (pictures, labels, name, "")
        }
        Source::Idx { images, labels } => {
            let idx = Idx::read(images, Kind::Images)?;
            let n = idx.shape[0];
            if n == 0 {
                return Err(Error::bad_input(images, "holds no images (IDX images [0, H, W]), expected at least one"));
            }
            let labels = match labels {
                Some(path) => {
                    let l = Idx::read(path, Kind::Labels)?;
                    if l.shape[0] != n {
                        return Err(Error::bad_input(
                            path,
                            format!("holds {} labels, expected {n} (one per image of {images})", l.shape[0]),
                        ));
                    }
                    Some(Labels::U8(l.data))
                }
                None => None,
            };
            let pictures = gray_pictures(&idx.data, [n, idx.shape[1], idx.shape[2]], &images.to_string());
            let no_labels = "an IDX file's labels come from --labels-from FILE";
            (pictures, labels, images.to_string(), no_labels)
        }
        Source::Dir(dir) => {
            let (files, labels) = list_dir(dir)?;
            let pictures = decode_all(&files)?;
            let no_labels =
                "a folder has labels only when all its images are in subfolders named by integer class (0/, 1/, ...)";
            let name = dir.display().to_string();
            (pictures, labels.map(Labels::from_i64), name, no_labels)
        }
    };
    let images = assemble(pictures, opts)?;
    Ok(Packed { images, labels, source: name, no_labels })
}

/// Splits u8 [N, H, W] into one-channel pictures.
fn gray_pictures(pixels: &[u8], [n, h, w]: [usize; 3], name: &str) -> Vec<Picture> {
    // IDX and the bundled set store sizes below 2^32, so the casts are exact.
    let (width, height) = (w as u32, h as u32);
    pixels
        .chunks_exact(h * w)
        .take(n)
        .map(|p| Picture {
            name: name.to_string(),
            image: DynamicImage::ImageLuma8(GrayImage::from_fn(width, height, |x, y| {
                Luma([p[y as usize * w + x as usize]])
            })),
        })
        .collect()
}

/// Splits u8 [N, 3, H, W] (channels first) into RGB pictures.
fn rgb_pictures(pixels: &[u8], [n, h, w]: [usize; 3], name: &str) -> Vec<Picture> {
    // The bundled sets store sizes below 2^32, so the casts are exact.
    let (width, height, plane) = (w as u32, h as u32, h * w);
    pixels
        .chunks_exact(3 * plane)
        .take(n)
        .map(|p| Picture {
            name: name.to_string(),
            image: DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
                let i = y as usize * w + x as usize;
                image::Rgb([p[i], p[plane + i], p[2 * plane + i]])
            })),
        })
        .collect()
}

/// True for names the image crate decodes here (the format itself is read from the bytes).
fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// The image files of `dir`, sorted by path, and their labels when every image lies in a
/// subfolder named by an integer. Files with other extensions and hidden entries are skipped.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Option<Vec<i64>>)> {
    let entries = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v = Vec::new();
        for entry in std::fs::read_dir(d).map_err(|e| Error::io(d.display(), e))? {
            let path = entry.map_err(|e| Error::io(d.display(), e))?.path();
            if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                v.push(path);
            }
        }
        Ok(v)
    };
    let mut files: Vec<(PathBuf, Option<i64>)> = Vec::new();
    let mut all_labelled = true;
    for path in entries(dir)? {
        if path.is_dir() {
            let class = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok());
            all_labelled &= class.is_some();
            files.extend(entries(&path)?.into_iter().filter(|p| p.is_file() && is_image_file(p)).map(|p| (p, class)));
        } else if is_image_file(&path) {
            all_labelled = false;
            files.push((path, None));
        }
    }
    if files.is_empty() {
        return Err(Error::bad_input(
            dir.display(),
            "holds no PNG or JPEG images (expected *.png, *.jpg or *.jpeg, directly or in subfolders)",
        ));
    }
    files.sort();
    let labels = all_labelled.then(|| files.iter().filter_map(|(_, l)| *l).collect());
    Ok((files.into_iter().map(|(p, _)| p).collect(), labels))
}

/// Decodes every file (in parallel); the first failure in path order is the one reported.
fn decode_all(files: &[PathBuf]) -> Result<Vec<Picture>> {
    let decoded: Vec<Result<Picture>> = files
        .par_iter()
        .map(|path| {
            let name = path.display().to_string();
            let bad =
                |e: String| Error::bad_input(&name, format!("cannot decode image ({e}); expected a PNG or JPEG file"));
            let reader = image::ImageReader::open(path).map_err(|e| Error::io(&name, e))?;
            let image = reader
                .with_guessed_format()
                .map_err(|e| Error::io(&name, e))?
                .decode()
                .map_err(|e| bad(e.to_string()))?;
            Ok(Picture { name, image })
        })
        .collect();
    decoded.into_iter().collect()
}

/// Converts, resizes, checks sizes and pads the pictures into one array. Colour survives
/// unless `opts.gray`; when some pictures are grey and some colour, grey ones are repeated
/// over three channels.
fn assemble(pictures: Vec<Picture>, opts: &PackOptions) -> Result<Images> {
    opts.check(pictures.len())?;
    let pictures: Vec<Picture> = pictures
        .into_par_iter()
        .map(|Picture { name, image }| {
            let image = if opts.gray || !image.color().has_color() {
                DynamicImage::ImageLuma8(image.into_luma8())
            } else {
                DynamicImage::ImageRgb8(image.into_rgb8())
            };
            let image = match opts.size {
                Some(s) if (s.width, s.height) != (image.width(), image.height()) => {
                    image.resize_exact(s.width, s.height, FILTER)
                }
                _ => image,
            };
            Picture { name, image }
        })
        .collect();
    let Some(first) = pictures.first() else {
        return Err(Error::config("no images to pack"));
    };
    let (w, h) = (first.image.width() as usize, first.image.height() as usize);
    if let Some(odd) = pictures.iter().find(|p| (p.image.width() as usize, p.image.height() as usize) != (w, h)) {
        return Err(Error::bad_input(
            &odd.name,
            format!(
                "is {}x{}, but {} is {w}x{h} (all images must have one size; pass --size WxH to resize them)",
                odd.image.width(),
                odd.image.height(),
                first.name
            ),
        ));
    }
    let (out_h, out_w) = match opts.pad_to {
        None => (h, w),
        Some(n) if h <= n as usize && w <= n as usize => (n as usize, n as usize),
        Some(n) => {
            return Err(Error::bad_input(
                &first.name,
                format!("images are {w}x{h}, larger than --pad-to {n} (pass --size to shrink them first)"),
            ));
        }
    };
    let channels = pictures.iter().map(|p| p.image.color().channel_count() as usize).max().unwrap_or(1);
    let (top, left) = ((out_h - h) / 2, (out_w - w) / 2);
    let mut pixels = vec![0u8; pictures.len() * channels * out_h * out_w];
    for (p, dst) in pictures.iter().zip(pixels.chunks_exact_mut(channels * out_h * out_w)) {
        // Interleaved (H, W, c) -> planar (C, H, W), a grey picture repeated over C.
        let c = p.image.color().channel_count() as usize;
        let src = p.image.as_bytes();
        for (ch, plane) in dst.chunks_exact_mut(out_h * out_w).enumerate() {
            let from = ch.min(c - 1);
            for y in 0..h {
                let row = &mut plane[(top + y) * out_w + left..][..w];
                for (x, px) in row.iter_mut().enumerate() {
                    *px = src[(y * w + x) * c + from];
                }
            }
        }
    }
    Ok(Images { count: pictures.len(), channels, height: out_h, width: out_w, pixels })
}

/// Writes the images (u8, or f32 in `range`) to `out` and the labels to `labels_out`. Both
/// files appear only when both are complete.
pub fn write(
    packed: &Packed,
    range: Option<PixelRange>,
    out: &OutputPath,
    labels_out: Option<&OutputPath>,
) -> Result<()> {
    let labels = match (labels_out, &packed.labels) {
        (None, _) => None,
        (Some(path), Some(labels)) => {
            if path.is_stdout() && out.is_stdout() {
                return Err(Error::config("-o and --labels-out both write to stdout; give one of them a file"));
            }
            Some((path, labels))
        }
        (Some(_), None) => {
            return Err(Error::bad_input(
                &packed.source,
                format!("has no labels for --labels-out: {}", packed.no_labels),
            ))
        }
    };
    let images = write_images(&packed.images, range, out)?;
    let labels = match labels {
        Some((path, labels)) => {
            let mut o = path.create()?;
            std::io::Write::write_all(&mut o, &labels.to_npy()).map_err(|e| Error::io(path, e))?;
            Some(o)
        }
        None => None,
    };
    images.finish()?;
    labels.map(Output::finish).transpose()?;
    Ok(())
}

/// Writes the image array; the returned output is complete but not yet finished.
fn write_images(images: &Images, range: Option<PixelRange>, out: &OutputPath) -> Result<Output> {
    let io = |e| Error::io(out, e);
    let dtype = if range.is_some() { DType::F32 } else { DType::U8 };
    let mut o = out.create()?;
    let mut w = NpyWriter::new(&mut o, dtype, &images.shape()).map_err(io)?;
    match range {
        None => w.write_rows(&images.pixels).map_err(io)?,
        Some(range) => {
            for chunk in images.pixels.chunks(ROWS_PER_WRITE * images.image_len().max(1)) {
                let values: Vec<f32> = chunk.iter().map(|&p| range.from_unit(p as f32 / 255.0)).collect();
                w.write_rows(&values).map_err(io)?;
            }
        }
    }
    w.finish().map_err(io)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(name: &str, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Picture {
        Picture { name: name.into(), image: DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| Luma([f(x, y)]))) }
    }

    #[test]
    fn pads_centred_and_keeps_values() {
        let p = vec![gray("a", 2, 2, |x, y| (1 + x + 2 * y) as u8)];
        let opts = PackOptions { pad_to: Some(4), ..Default::default() };
        let im = assemble(p, &opts).unwrap();
        assert_eq!(im.shape(), vec![1, 4, 4]);
        #[rustfmt::skip]
        assert_eq!(im.pixels, vec![
            0, 0, 0, 0,
            0, 1, 2, 0,
            0, 3, 4, 0,
            0, 0, 0, 0,
        ]);
        let big = vec![gray("big.png", 5, 5, |_, _| 0)];
        let e = assemble(big, &opts).unwrap_err().to_string();
        assert!(e.starts_with("big.png: images are 5x5, larger than --pad-to 4"), "{e}");
    }

    #[test]
    fn mixes_grey_into_colour_and_converts_to_grey() {
        let rgb = Picture {
            name: "c".into(),
            image: DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([10, 20, 30]))),
        };
        let p = vec![gray("g", 1, 1, |_, _| 7), rgb];
        let im = assemble(p, &PackOptions::default()).unwrap();
        assert_eq!((im.shape(), im.pixels), (vec![2, 3, 1, 1], vec![7, 7, 7, 10, 20, 30]));
        let rgb = Picture {
            name: "c".into(),
            image: DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([255, 255, 255]))),
        };
        let im = assemble(vec![rgb], &PackOptions { gray: true, ..Default::default() }).unwrap();
        assert_eq!((im.shape(), im.pixels), (vec![1, 1, 1], vec![255]));
    }

    #[test]
    fn resizes_and_names_the_first_odd_file() {
        let p =
            || vec![gray("a.png", 4, 4, |_, _| 200), gray("b.png", 4, 4, |_, _| 200), gray("c.png", 6, 4, |_, _| 200)];
        let e = assemble(p(), &PackOptions::default()).unwrap_err().to_string();
        assert!(e.starts_with("c.png: is 6x4, but a.png is 4x4") && e.contains("--size"), "{e}");
        let opts = PackOptions { size: Some("2x3".parse().unwrap()), ..Default::default() };
        let im = assemble(p(), &opts).unwrap();
        assert_eq!(im.shape(), vec![3, 3, 2]);
        assert!(im.pixels.iter().all(|&v| v == 200), "{:?}", im.pixels);
    }

    #[test]
    fn sizes_beyond_the_machine_are_refused_naming_the_flag() {
        let size = PackOptions { size: Some("1000000x1000000".parse().unwrap()), ..Default::default() };
        assert!(size
            .check(1)
            .unwrap_err()
            .to_string()
            .starts_with("--size 1000000x1000000: one image would need 3.0 TB"));
        let pad = PackOptions { pad_to: Some(10_000), ..Default::default() };
        assert!(pad.check(1).is_ok());
        let e = pad.check(1_000_000).unwrap_err().to_string();
        assert!(e.starts_with("--pad-to 10000: the images would need 300.0 TB"), "{e}");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!("32x16".parse::<Size>(), Ok(Size { width: 32, height: 16 }));
        for bad in ["32", "0x4", "ax4", "4x", "-1x4"] {
            assert!(bad.parse::<Size>().unwrap_err().contains("WIDTHxHEIGHT"), "{bad}");
        }
    }

    #[test]
    fn labels_narrow_to_u8_when_they_fit() {
        assert_eq!(Labels::from_i64(vec![0, 255]), Labels::U8(vec![0, 255]));
        assert_eq!(Labels::from_i64(vec![0, 256]), Labels::I64(vec![0, 256]));
    }
}
