//! Packing images into one array: the bundled digits, an IDX file or a folder of PNG/JPEG
//! files become u8 [N,H,W] / [N,C,H,W] (or f32 in a chosen range), optionally resized,
//! converted to grey or zero-padded, with class labels when the source has them.

use std::path::PathBuf;
use std::str::FromStr;

use image::{DynamicImage, GrayImage, Luma, RgbImage};
use rayon::prelude::*;

use super::cifar;
use super::convert::PixelRange;
use super::fit::{self, Fit};
use super::folder::{self, Skipped};
use super::idx::{Idx, Kind};
use super::image_set::{Bundled, DataSpec, Split};
use crate::error::{Error, Result};
use crate::io::npy::{DType, Elements, NpyWriter};
use crate::io::{InputPath, Output, OutputPath};
use crate::memory::{bytes_of, ensure_fits};

/// Images converted to f32 per write, so a float output needs no second full-size buffer.
const ROWS_PER_WRITE: usize = 256;

/// Where `img-pack` takes its images from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A bundled set.
    Bundled(Bundled, Split),
    /// An IDX images file (or stdin), with an optional IDX labels file.
    Idx { images: InputPath, labels: Option<InputPath> },
    /// A folder of PNG/JPEG files, or of class subfolders named by integers or by words.
    Dir(PathBuf),
    /// CIFAR-10 binary files, concatenated in this order.
    Cifar(Vec<PathBuf>),
}

impl Source {
    /// Resolves the INPUTs (`mnist`, a folder of images, a CIFAR-10 folder, CIFAR-10 `.bin`
    /// files, or an IDX file / `-`) and checks that `split` and `labels_from` suit them.
    pub fn new(inputs: &[DataSpec], split: Option<Split>, labels_from: Option<InputPath>) -> Result<Self> {
        let no_split = |what: &str| match split {
            Some(_) => Err(Error::config(format!(
                "--split applies to the bundled sets (INPUT mnist or emoji) and to a CIFAR-10 folder, not to {what}"
            ))),
            None => Ok(()),
        };
        let no_labels_from = |why: &str| match labels_from {
            Some(_) => Err(Error::config(format!("--labels-from is for IDX files; {why}"))),
            None => Ok(()),
        };
        if inputs.len() > 1 {
            let mut files = Vec::new();
            for input in inputs {
                match input {
                    DataSpec::File(InputPath::File(p)) if cifar::is_cifar_file(p) && !p.is_dir() => {
                        files.push(p.clone())
                    }
                    other => {
                        let name = match other {
                            DataSpec::Bundled(set) => set.name().to_string(),
                            DataSpec::File(p) => p.to_string(),
                        };
                        return Err(Error::config(format!(
                            "several INPUTs are taken only as CIFAR-10 .bin files to concatenate; {name} is not one"
                        )));
                    }
                }
            }
            no_split("several CIFAR-10 files (pass their folder to pick a split)")?;
            no_labels_from("CIFAR-10 records hold their labels")?;
            return Ok(Source::Cifar(files));
        }
        let path = match inputs.first() {
            None => return Err(Error::config("no INPUT given")),
            Some(DataSpec::Bundled(set)) => {
                no_labels_from("the bundled sets have their own labels")?;
                return Ok(Source::Bundled(*set, split.unwrap_or(Split::All)));
            }
            Some(DataSpec::File(path)) => path,
        };
        match path {
            InputPath::File(dir) if dir.is_dir() && cifar::is_cifar_folder(dir) => {
                no_labels_from("CIFAR-10 records hold their labels")?;
                Ok(Source::Cifar(cifar::split_files(dir, split.unwrap_or(Split::All))?))
            }
            InputPath::File(dir) if dir.is_dir() => {
                no_split("a folder of images")?;
                no_labels_from("a folder's labels are its class subfolders")?;
                Ok(Source::Dir(dir.clone()))
            }
            InputPath::File(file) if cifar::is_cifar_file(file) => {
                no_split("a CIFAR-10 file (pass its folder to pick a split)")?;
                no_labels_from("CIFAR-10 records hold their labels")?;
                Ok(Source::Cifar(vec![file.clone()]))
            }
            _ => {
                no_split("an IDX file")?;
                Ok(Source::Idx { images: path.clone(), labels: labels_from })
            }
        }
    }
}

/// `--size N` (square) or `--size WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid size '{s}' (expected N or WIDTHxHEIGHT, e.g. 64 or 32x32)");
        let (w, h) = s.split_once('x').unwrap_or((s, s));
        let (width, height) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        if width == 0 || height == 0 {
            return Err(bad());
        }
        Ok(Size { width, height })
    }
}

/// How images are changed on the way in, applied in this order: alpha composited on white
/// and the colour mode set, resized to `size` by `fit`, zero-padded to `pad_to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackOptions {
    /// Convert colour images to one channel.
    pub gray: bool,
    /// Resize every image to this size.
    pub size: Option<Size>,
    /// How `size` is met when the aspect ratio differs.
    pub fit: Fit,
    /// Zero-pad every image, centred, to N x N.
    pub pad_to: Option<u32>,
    /// Skip files of a folder that do not decode (and count them) instead of failing.
    pub skip_bad: bool,
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

    /// One image in its set's mode (grey unless it has colour and `gray` is off, alpha on
    /// white) and fitted to `size`.
    fn prepare(&self, image: DynamicImage) -> DynamicImage {
        let gray = self.gray || !image.color().has_color();
        let image = fit::to_mode(image, gray);
        match self.size {
            Some(s) if (s.width, s.height) != (image.width(), image.height()) => fit::fit(image, s, self.fit),
            _ => image,
        }
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
    /// The class names in label order, for class folders named by words.
    pub classes: Option<Vec<String>>,
    /// The files `--skip-bad` left out, in file order.
    pub skipped: Vec<Skipped>,
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
    let mut classes = None;
    let mut skipped = Vec::new();
    let (pictures, labels, name, no_labels) = match source {
        Source::Bundled(set, split) => {
            let (array, labels) = set.load(*split)?;
            let name = format!("{}:{}", set.name(), split.name());
            opts.check(labels.len())?;
            let Elements::U8(pixels) = &array.data else { unreachable!("the bundled sets are u8") };
            let pictures = match array.shape[..] {
                [n, h, w] => gray_pictures(pixels, [n, h, w], &name),
                [n, _, h, w] => rgb_pictures(pixels, [n, h, w], &name),
                _ => unreachable!("the bundled sets are [N, H, W] or [N, 3, H, W]"),
            };
            let labels = Some(Labels::U8(labels.into_iter().map(|l| l as u8).collect()));
            (prepare_all(pictures, opts), labels, name, "")
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
            opts.check(n)?;
            let pictures = gray_pictures(&idx.data, [n, idx.shape[1], idx.shape[2]], &images.to_string());
            let no_labels = "an IDX file's labels come from --labels-from FILE";
            (prepare_all(pictures, opts), labels, images.to_string(), no_labels)
        }
        Source::Cifar(files) => {
            let c = cifar::read(files)?;
            opts.check(c.count)?;
            let name = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ");
            let pictures = rgb_pictures(&c.pixels, [c.count, cifar::SIDE, cifar::SIDE], &name);
            (prepare_all(pictures, opts), Some(Labels::U8(c.labels)), name, "")
        }
        Source::Dir(dir) => {
            let listing = folder::list(dir)?;
            opts.check(listing.files.len())?;
            let folder::Decoded { kept: decoded, skipped: bad } =
                folder::decode_all(&listing.files, opts.skip_bad, |image| opts.prepare(image))?;
            let name = dir.display().to_string();
            if decoded.is_empty() {
                return Err(Error::bad_input(
                    &name,
                    format!(
                        "holds no image that decodes ({} bad files skipped), expected PNG or JPEG images",
                        bad.len()
                    ),
                ));
            }
            let labels = listing.labels.map(|l| Labels::from_i64(decoded.iter().map(|&(i, _)| l[i]).collect()));
            let pictures = decoded
                .into_iter()
                .map(|(i, image)| Picture { name: listing.files[i].display().to_string(), image })
                .collect();
            classes = listing.classes;
            skipped = bad;
            let no_labels = "a folder has labels only when all its images are in class subfolders (0/, 1/, ... or \
                             cats/, dogs/, ...)";
            (pictures, labels, name, no_labels)
        }
    };
    let images = assemble(pictures, opts)?;
    Ok(Packed { images, labels, classes, skipped, source: name, no_labels })
}

/// [`PackOptions::prepare`] on every picture, in parallel.
fn prepare_all(pictures: Vec<Picture>, opts: &PackOptions) -> Vec<Picture> {
    pictures.into_par_iter().map(|Picture { name, image }| Picture { name, image: opts.prepare(image) }).collect()
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

/// Splits planar u8 [N, 3, H, W] (channels first: the bundled emoji, CIFAR-10) into RGB
/// pictures.
fn rgb_pictures(pixels: &[u8], [n, h, w]: [usize; 3], name: &str) -> Vec<Picture> {
    // The sources store sizes below 2^32, so the casts are exact.
    let (width, height, plane) = (w as u32, h as u32, h * w);
    pixels
        .par_chunks_exact(3 * plane)
        .take(n)
        .map(|p| Picture {
            name: name.to_string(),
            image: DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
                let i = y as usize * w + x as usize;
                image::Rgb([p[i], p[plane + i], p[2 * plane + i]])
            })),
        })
        .collect()
}

/// Checks sizes and places the prepared pictures into one array. Colour survives unless
/// `opts.gray`; when some pictures are grey and some colour, grey ones are repeated over
/// three channels. With `--size` every picture is centred on a canvas of that size (filled
/// white for a colour set and 0 for a grey one, which only `--fit pad` leaves visible),
/// then zero-padded to `--pad-to`.
fn assemble(pictures: Vec<Picture>, opts: &PackOptions) -> Result<Images> {
    opts.check(pictures.len())?;
    let Some(first) = pictures.first() else {
        return Err(Error::config("no images to pack"));
    };
    let dims = |p: &Picture| (p.image.width() as usize, p.image.height() as usize);
    let (w, h) = match opts.size {
        Some(s) => (s.width as usize, s.height as usize),
        None => {
            let (w, h) = dims(first);
            if let Some(odd) = pictures.iter().find(|p| dims(p) != (w, h)) {
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
            (w, h)
        }
    };
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
    let fill = if channels == 3 { 255 } else { 0 };
    let (top, left) = ((out_h - h) / 2, (out_w - w) / 2);
    let mut pixels = vec![0u8; pictures.len() * channels * out_h * out_w];
    pixels.par_chunks_exact_mut(channels * out_h * out_w).zip(&pictures).for_each(|(dst, p)| {
        // Interleaved (H, W, c) -> planar (C, H, W), a grey picture repeated over C.
        let c = p.image.color().channel_count() as usize;
        let (pw, ph) = dims(p);
        let src = p.image.as_bytes();
        let (y0, x0) = (top + (h - ph) / 2, left + (w - pw) / 2);
        for (ch, plane) in dst.chunks_exact_mut(out_h * out_w).enumerate() {
            if (pw, ph) != (w, h) && fill != 0 {
                for y in 0..h {
                    plane[(top + y) * out_w + left..][..w].fill(fill);
                }
            }
            let from = ch.min(c - 1);
            for y in 0..ph {
                let row = &mut plane[(y0 + y) * out_w + x0..][..pw];
                for (x, px) in row.iter_mut().enumerate() {
                    *px = src[(y * pw + x) * c + from];
                }
            }
        }
    });
    Ok(Images { count: pictures.len(), channels, height: out_h, width: out_w, pixels })
}

/// Where the class table of `--labels-out` goes: `y.npy` -> `y.classes.json`. `None` for
/// stdout and for a device or FIFO (`/dev/null`), which have no "beside".
pub fn classes_path(labels_out: &OutputPath) -> Option<PathBuf> {
    match labels_out {
        OutputPath::File(p) if !std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir()) => {
            Some(p.with_extension("classes.json"))
        }
        _ => None,
    }
}

/// Writes the images (u8, or f32 in `range`) to `out`, the labels to `labels_out` and, for
/// class folders named by words, the class names (a JSON array in label order) beside the
/// labels ([`classes_path`]). The files appear only when all are complete.
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
    // The class table of word-named class folders goes beside the labels file.
    let table = match (labels, &packed.classes) {
        (Some((path, _)), Some(classes)) => {
            if path.is_stdout() {
                return Err(Error::config(format!(
                    "--labels-out -: the class folders of {} are named by words, and their table (NAME.classes.json)                      is written beside a labels file; give --labels-out a file",
                    packed.source
                )));
            }
            classes_path(path).map(|p| (OutputPath::File(p), classes))
        }
        _ => None,
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
    let table = match table {
        Some((path, classes)) => {
            let mut json = serde_json::to_string(classes).map_err(|e| Error::config(e.to_string()))?;
            json.push('\n');
            let mut o = path.create()?;
            std::io::Write::write_all(&mut o, json.as_bytes()).map_err(|e| Error::io(&path, e))?;
            Some(o)
        }
        None => None,
    };
    images.finish()?;
    labels.map(Output::finish).transpose()?;
    table.map(Output::finish).transpose()?;
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
        let opts = PackOptions { gray: true, ..Default::default() };
        let im = assemble(prepare_all(vec![rgb], &opts), &opts).unwrap();
        assert_eq!((im.shape(), im.pixels), (vec![1, 1, 1], vec![255]));
    }

    #[test]
    fn resizes_and_names_the_first_odd_file() {
        let p =
            || vec![gray("a.png", 4, 4, |_, _| 200), gray("b.png", 4, 4, |_, _| 200), gray("c.png", 6, 4, |_, _| 200)];
        let e = assemble(p(), &PackOptions::default()).unwrap_err().to_string();
        assert!(e.starts_with("c.png: is 6x4, but a.png is 4x4") && e.contains("--size"), "{e}");
        let opts = PackOptions { size: Some("2x3".parse().unwrap()), fit: Fit::Stretch, ..Default::default() };
        let im = assemble(prepare_all(p(), &opts), &opts).unwrap();
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
        assert_eq!("64".parse::<Size>(), Ok(Size { width: 64, height: 64 }));
        for bad in ["0", "0x4", "ax4", "4x", "-1x4", "x"] {
            assert!(bad.parse::<Size>().unwrap_err().contains("N or WIDTHxHEIGHT"), "{bad}");
        }
    }

    #[test]
    fn labels_narrow_to_u8_when_they_fit() {
        assert_eq!(Labels::from_i64(vec![0, 255]), Labels::U8(vec![0, 255]));
        assert_eq!(Labels::from_i64(vec![0, 256]), Labels::I64(vec![0, 256]));
    }
}
