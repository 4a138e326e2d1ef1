//! A set of images (and optional labels) drawn by index for training and evaluation.

use std::str::FromStr;

use candle_core::{Device, Tensor};

use super::convert::{check_values, fit_margin, to_unit_f32, Geometry, PixelRange};
use super::dataset::{Batch, Dataset};
use super::rows::StoredRows;
use super::{emoji, mnist};
use crate::error::{Error, Result};
use crate::io::npy::{Array, DType, Elements};
use crate::io::{read_tensor_file, InputPath, TensorFile};

/// A part of the bundled set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Test,
    All,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        }
    }
}

/// A labelled image set compiled into the library, with a fixed train/test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundled {
    /// 10,000 MNIST digits, 1x28x28, 10 classes (data/mnist).
    Mnist,
    /// 3,781 Noto Emoji, 3x64x64 on white, 9 categories (data/emoji), served at `side`
    /// pixels: 64, or 64 divided by a whole number (`--size 32`).
    Emoji { side: usize },
}

impl Bundled {
    /// The name `--data` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bundled::Mnist => "mnist",
            Bundled::Emoji { .. } => "emoji",
        }
    }

    /// The set served at `size` x `size` pixels (`--size`): the emoji at 64 divided by a
    /// whole number, each pixel the mean of the k x k block it replaces (an area filter,
    /// which does not alias); `None` keeps the stored size.
    pub fn sized(self, size: Option<usize>) -> Result<Self> {
        match (self, size) {
            (set, None) => Ok(set),
            (Bundled::Emoji { .. }, Some(side)) if side > 0 && emoji::SIDE.is_multiple_of(side) => {
                Ok(Bundled::Emoji { side })
            }
            (Bundled::Emoji { .. }, Some(side)) => Err(Error::config(format!(
                "--size {side}: the bundled emoji are {0}x{0}; --size takes {0} divided by a whole number (32, 16, 8)",
                emoji::SIDE
            ))),
            (Bundled::Mnist, Some(side)) => Err(Error::config(format!(
                "--size {side}: the bundled digits come at 28x28 only (img-pack --size N resizes an array)"
            ))),
        }
    }

    /// The geometry of its images as stored.
    pub fn geometry(self) -> Geometry {
        match self {
            Bundled::Mnist => Geometry::MNIST,
            Bundled::Emoji { side } => Geometry { channels: emoji::CHANNELS, height: side, width: side },
        }
    }

    /// One split of the set: u8 images ([N, 28, 28] or [N, 3, side, side]) and their labels.
    pub fn load(self, split: Split) -> Result<(Array, Vec<u32>)> {
        let (images, labels, dims, train) = match self {
            Bundled::Mnist => {
                let (images, labels) = mnist::load_all()?;
                (images, labels, vec![mnist::SIDE, mnist::SIDE], mnist::TRAIN_COUNT)
            }
            Bundled::Emoji { side } => {
                let set = emoji::load_all()?;
                let images = shrink(&set.images, emoji::CHANNELS * set.labels.len(), emoji::SIDE, emoji::SIDE / side);
                (images, set.labels, vec![emoji::CHANNELS, side, side], set.train_count)
            }
        };
        let rows = match split {
            Split::Train => 0..train,
            Split::Test => train..labels.len(),
            Split::All => 0..labels.len(),
        };
        let per: usize = dims.iter().product();
        let shape = [vec![rows.len()], dims].concat();
        let data = Elements::U8(images[rows.start * per..rows.end * per].to_vec());
        Ok((Array { shape, data }, labels[rows].iter().map(|&l| l as u32).collect()))
    }
}

/// Square planes of `side` pixels shrunk by the whole factor `k`: each pixel the rounded mean
/// of its k x k block.
fn shrink(planes: &[u8], count: usize, side: usize, k: usize) -> Vec<u8> {
    if k == 1 {
        return planes.to_vec();
    }
    let small = side / k;
    let mut out = Vec::with_capacity(count * small * small);
    for plane in planes.chunks_exact(side * side) {
        for y in 0..small {
            for x in 0..small {
                let sum: u32 = (0..k)
                    .flat_map(|dy| (0..k).map(move |dx| (y * k + dy) * side + x * k + dx))
                    .map(|i| u32::from(plane[i]))
                    .sum();
                let n = (k * k) as u32;
                out.push(((sum + n / 2) / n) as u8);
            }
        }
    }
    out
}

/// Where images come from: a bundled set by name (`mnist`, `emoji`), else an image array file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    Bundled(Bundled),
    File(InputPath),
}

impl DataSpec {
    /// A bundled set served at `--size` pixels ([`Bundled::sized`]); for a file an error
    /// unless `size` is `None`.
    pub fn sized(self, size: Option<usize>) -> Result<Self> {
        match (self, size) {
            (DataSpec::Bundled(set), size) => Ok(DataSpec::Bundled(set.sized(size)?)),
            (file, None) => Ok(file),
            (DataSpec::File(path), Some(side)) => Err(Error::config(format!(
                "--size {side} resizes the bundled emoji; {path} is an array file (img-pack --size N resizes arrays)"
            ))),
        }
    }

    /// `e` as an error of the file images are read from, when they are; a bundled set's as it is.
    pub fn blame(&self, e: Error) -> Error {
        match self.file() {
            Some(path) => Error::bad_input(path, e.to_string()),
            None => e,
        }
    }

    /// The file images are read from; `None` for a bundled set.
    pub fn file(&self) -> Option<&InputPath> {
        match self {
            DataSpec::Bundled(_) => None,
            DataSpec::File(path) => Some(path),
        }
    }
}

impl FromStr for DataSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "mnist" => DataSpec::Bundled(Bundled::Mnist),
            "emoji" => DataSpec::Bundled(Bundled::Emoji { side: emoji::SIDE }),
            _ => DataSpec::File(s.parse()?),
        })
    }
}

/// Images (and optional class labels) drawn by index, served as f32 in [0,1], [N, C, H, W],
/// in a model's geometry. They stay as stored, u8 or float (an array file is read in place,
/// [`StoredRows`]), and each batch is converted when it is drawn, so memory does not grow
/// with the set.
pub struct ImageSet {
    /// Describes the source, e.g. `mnist:train` or a path; used in messages and to check
    /// that a resumed run trains on the same data.
    pub name: String,
    rows: StoredRows,
    /// As stored.
    stored: Geometry,
    /// As served: `stored` padded or cropped ([`to_unit_f32`]).
    geometry: Geometry,
    range: PixelRange,
    /// How many of the stored images the set is (the first ones): all but after
    /// [`ImageSet::head`].
    len: usize,
    pub labels: Option<Vec<u32>>,
    /// The split of the bundled set these images are, or `None` for an array file.
    pub bundled: Option<Split>,
}

impl ImageSet {
    /// Loads `spec`, fitted to `geometry` (28x28 is zero-padded to 32x32), or as stored when
    /// it is `None`. `split` applies to the bundled set only; `labels` to array files only.
    /// An array file's pixels are checked here, in one pass over the file, so a bad value
    /// stops the tool before it trains rather than in the middle of an epoch.
    pub fn load(
        spec: &DataSpec,
        split: Option<Split>,
        labels: Option<&InputPath>,
        range: PixelRange,
        geometry: Option<Geometry>,
    ) -> Result<Self> {
        match spec {
            DataSpec::Bundled(set) => {
                if labels.is_some() {
                    return Err(Error::config("--labels is for array files; the bundled set has its own labels"));
                }
                let split = split.unwrap_or(Split::Train);
                Self::bundled(*set, split, geometry.unwrap_or_else(|| set.geometry()))
            }
            DataSpec::File(path) => {
                if split.is_some() {
                    return Err(Error::config(
                        "--split applies to the bundled sets (mnist, emoji); an array file is used whole",
                    ));
                }
                let rows = StoredRows::open(path)?;
                let name = path.to_string();
                let stored = Geometry::of_shape(rows.shape()).map_err(|p| Error::bad_input(path, p))?;
                if rows.dtype() != DType::U8 {
                    rows.for_each_chunk(|chunk| check_values(&chunk.data, range, &name))?;
                }
                let labels = labels.map(|l| read_labels(l, rows.len())).transpose()?;
                let len = rows.len();
                let set = ImageSet { name, rows, stored, geometry: stored, range, len, labels, bundled: None };
                set.fitted(geometry.unwrap_or(stored))
            }
        }
    }

    /// One split of a bundled set, fitted to `geometry`.
    pub fn bundled(set: Bundled, split: Split, geometry: Geometry) -> Result<Self> {
        let (array, labels) = set.load(split)?;
        let name = format!("{}:{}", set.name(), split.name());
        let stored = set.geometry();
        let len = labels.len();
        let rows = StoredRows::in_memory(array, &name);
        let range = PixelRange::ZeroOne;
        let set =
            ImageSet { name, rows, stored, geometry: stored, range, len, labels: Some(labels), bundled: Some(split) };
        set.fitted(geometry)
    }

    /// The same images served padded or cropped to `geometry` ([`to_unit_f32`]'s rule), or an
    /// error naming the set when they do not fit it.
    pub fn fitted(self, geometry: Geometry) -> Result<Self> {
        fit_margin(self.stored, geometry, &self.name)?;
        Ok(ImageSet { geometry, ..self })
    }

    /// The first `n` images (all when there are fewer).
    pub fn head(mut self, n: usize) -> Self {
        self.len = self.len.min(n);
        if let Some(labels) = &mut self.labels {
            labels.truncate(self.len);
        }
        self
    }

    /// The geometry of the images served.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The images at `rows`, in that order.
    pub fn batch(&self, rows: &[usize], device: &Device) -> Result<Batch> {
        let g = self.geometry;
        if let Some(&r) = rows.iter().find(|&&r| r >= self.len) {
            return Err(Error::bad_input(&self.name, format!("has {} images, image {r} was asked for", self.len)));
        }
        let pixels = to_unit_f32(&self.rows.read(rows)?, self.range, g, &self.name)?;
        let x = Tensor::from_vec(pixels, (rows.len(), g.channels, g.height, g.width), device)?;
        let y = match &self.labels {
            Some(l) => Some(Tensor::from_vec(rows.iter().map(|&r| l[r]).collect::<Vec<_>>(), rows.len(), device)?),
            None => None,
        };
        Ok(Batch { x, y, cond: None })
    }
}

/// Reads a whole `.npy` image array.
pub fn read_array(path: &InputPath) -> Result<Array> {
    match read_tensor_file(path, &Device::Cpu)? {
        TensorFile::Npy(r) => r.read_all(),
        TensorFile::Safetensors(_) => {
            Err(Error::bad_input(path, "is a .safetensors file, expected an .npy image array"))
        }
    }
}

/// Reads integer class labels [N] (any integer dtype) and checks that there are `n`.
pub fn read_labels(path: &InputPath, n: usize) -> Result<Vec<u32>> {
    expect_label_count(path, read_label_file(path)?, n)
}

/// `labels` (read from `path`) if there are `n` of them, else an error naming the file.
pub fn expect_label_count(path: &InputPath, labels: Vec<u32>, n: usize) -> Result<Vec<u32>> {
    if labels.len() != n {
        return Err(Error::bad_input(
            path,
            format!("labels have shape [{}], expected [{n}] (one per image)", labels.len()),
        ));
    }
    Ok(labels)
}

/// Reads integer class labels [N] (any integer dtype), however many: an `.npy` array, or the
/// `labels` tensor of a `.safetensors` file (codes from vq-encode or prior-sample carry one).
pub fn read_label_file(path: &InputPath) -> Result<Vec<u32>> {
    let (shape, values): (Vec<usize>, Vec<i64>) = match read_tensor_file(path, &Device::Cpu)? {
        TensorFile::Npy(r) => {
            let a = r.read_all()?;
            let values = match a.data {
                Elements::U8(v) => v.into_iter().map(i64::from).collect(),
                Elements::U16(v) => v.into_iter().map(i64::from).collect(),
                Elements::I32(v) => v.into_iter().map(i64::from).collect(),
                Elements::I64(v) => v,
                other => {
                    return Err(Error::bad_input(
                        path,
                        format!("labels of dtype {} (expected integers: u8, u16, i32 or i64)", other.dtype().name()),
                    ))
                }
            };
            (a.shape, values)
        }
        TensorFile::Safetensors(map) => {
            let t = map.get("labels").ok_or_else(|| {
                Error::bad_input(path, format!("has no 'labels' tensor (it holds: {})", map.names().join(", ")))
            })?;
            if t.dtype().is_float() {
                return Err(Error::bad_input(path, format!("labels of dtype {:?} (expected integers)", t.dtype())));
            }
            (t.dims().to_vec(), t.flatten_all()?.to_dtype(candle_core::DType::I64)?.to_vec1::<i64>()?)
        }
    };
    if shape.len() != 1 {
        return Err(Error::bad_input(path, format!("labels have shape {shape:?}, expected [N] (one per image)")));
    }
    values
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| Error::bad_input(path, format!("label {v} is negative"))))
        .collect()
}

impl Dataset for ImageSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        ImageSet::len(self)
    }

    /// The bundled split's name (`test` for the default held-out set), else `eval`.
    fn metric_prefix(&self) -> &str {
        self.bundled.map_or("eval", Split::name)
    }

    fn batch(&self, rows: &[usize], device: &Device) -> Result<Batch> {
        ImageSet::batch(self, rows, device)
    }

    fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held-out metrics are named `test_*` for the bundled test split (the default held-out
    /// set), after the split for the other bundled splits, and `eval_*` for an array file.
    #[test]
    fn emoji_at_size_32_are_the_means_of_2x2_blocks() {
        let full = Bundled::Emoji { side: 64 }.load(Split::Test).unwrap().0;
        let small = Bundled::Emoji { side: 64 }.sized(Some(32)).unwrap().load(Split::Test).unwrap().0;
        assert_eq!(small.shape, vec![full.shape[0], 3, 32, 32]);
        let (Elements::U8(full), Elements::U8(small)) = (full.data, small.data) else { panic!("u8") };
        for (plane, (big, little)) in full.chunks_exact(64 * 64).zip(small.chunks_exact(32 * 32)).enumerate().take(30) {
            for (y, x) in [(0, 0), (5, 17), (31, 31), (16, 3)] {
                let sum: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dy, dx)| u32::from(big[(2 * y + dy) * 64 + 2 * x + dx]))
                    .sum();
                assert_eq!(u32::from(little[y * 32 + x]), (sum + 2) / 4, "plane {plane} ({y}, {x})");
            }
        }
        for bad in [0, 48, 128] {
            assert!(Bundled::Emoji { side: 64 }.sized(Some(bad)).is_err(), "{bad}");
        }
        assert!(Bundled::Mnist.sized(Some(14)).unwrap_err().to_string().contains("28x28 only"));
    }

    #[test]
    fn metric_prefix_names_the_bundled_split_else_eval() {
        let g = Geometry::MNIST;
        assert_eq!(ImageSet::bundled(Bundled::Mnist, Split::Test, g).unwrap().metric_prefix(), "test");
        assert_eq!(ImageSet::bundled(Bundled::Mnist, Split::Train, g).unwrap().metric_prefix(), "train");
        let dir = tempfile::tempdir().unwrap();
        // A file whose name looks like a bundled split is still a file.
        let path = dir.path().join("mnist:test");
        std::fs::write(&path, crate::io::npy::to_bytes(&[2, 28, 28], &[0u8; 2 * 784])).unwrap();
        let spec = DataSpec::File(InputPath::File(path));
        let file = ImageSet::load(&spec, None, None, PixelRange::ZeroOne, Some(g)).unwrap();
        assert_eq!((file.len(), file.metric_prefix()), (2, "eval"));
    }
}
