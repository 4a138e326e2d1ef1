//! Images read batch by batch, so tools that map images to something (encoders) use memory
//! that does not grow with the number of images. A stream can be restricted to some rows
//! (a shard's), which are then the only ones read.

use std::ops::Range;

use candle_core::{Device, Tensor};

use super::convert::{to_unit_f32, Geometry, PixelRange};
use super::dataset::Batch;
use super::image_set::{read_labels, DataSpec, ImageSet, Split};
use crate::error::{Error, Result};
use crate::io::npy::NpyReader;
use crate::io::tensor_file::Peeked;
use crate::io::{read_tensor_file, InputPath, TensorFile};

enum Source {
    Npy(NpyReader<Peeked>),
    Memory(ImageSet),
}

/// A batch-by-batch reader of images, fitted to a model's geometry, as f32 in [0,1].
pub struct ImageStream {
    source: Source,
    name: String,
    range: PixelRange,
    geometry: Geometry,
    batch_size: usize,
    /// Labels of an array file's images, read whole (they are small).
    labels: Option<Vec<u32>>,
    /// The images this stream reads, numbered from the file's (or set's) first.
    rows: Range<usize>,
    /// The next one.
    next: usize,
}

impl ImageStream {
    /// Opens an image array (`.npy`, a file or stdin) or the bundled set, whose images are
    /// fitted to `geometry`, or come as stored when it is `None` ([`ImageStream::geometry`]).
    pub fn open(
        spec: &DataSpec,
        split: Option<Split>,
        range: PixelRange,
        geometry: Option<Geometry>,
        batch_size: usize,
    ) -> Result<Self> {
        let (source, name, geometry) = match spec {
            DataSpec::Bundled(bundled) => {
                let geometry = geometry.unwrap_or_else(|| bundled.geometry());
                let set = ImageSet::bundled(*bundled, split.unwrap_or(Split::Test), geometry)?;
                let name = set.name.clone();
                (Source::Memory(set), name, geometry)
            }
            DataSpec::File(path) => {
                if split.is_some() {
                    return Err(Error::config("--split applies to the bundled sets (mnist, emoji)"));
                }
                let reader = open_npy(path)?;
                if reader.header().shape.is_empty() {
                    return Err(Error::bad_input(path, "holds a scalar, expected an image array [N,H,W] or [N,C,H,W]"));
                }
                let stored = Geometry::of_shape(&reader.header().shape).map_err(|p| Error::bad_input(path, p))?;
                (Source::Npy(reader), path.to_string(), geometry.unwrap_or(stored))
            }
        };
        let total = match &source {
            Source::Npy(r) => r.header().rows(),
            Source::Memory(set) => set.len(),
        };
        let batch_size = batch_size.max(1);
        Ok(ImageStream { source, name, range, geometry, batch_size, labels: None, rows: 0..total, next: 0 })
    }

    /// Reads only the images `rows` (of the whole file or set), from the next batch on: an
    /// array file seeks past the others (a pipe reads and drops them). Call before reading.
    pub fn only(mut self, rows: Range<usize>) -> Result<Self> {
        if self.next != self.rows.start || rows.start > rows.end || rows.end > self.rows.end {
            return Err(Error::config(format!(
                "{}: images {rows:?} are not among the {:?} left to read",
                self.name,
                self.next..self.rows.end
            )));
        }
        if let Source::Npy(r) = &mut self.source {
            r.skip_rows(rows.start - self.next)?;
        }
        self.next = rows.start;
        self.rows = rows;
        Ok(self)
    }

    /// Gives an array file's images the labels in `path` (one integer per image). The
    /// bundled set has its own.
    pub fn with_labels(mut self, path: &InputPath) -> Result<Self> {
        let total = match &self.source {
            Source::Memory(_) => {
                return Err(Error::config("--labels is for array files; the bundled set has its own labels"))
            }
            Source::Npy(r) => r.header().rows(),
        };
        self.labels = Some(read_labels(path, total)?);
        Ok(self)
    }

    /// Whether batches come with labels.
    pub fn has_labels(&self) -> bool {
        match &self.source {
            Source::Npy(_) => self.labels.is_some(),
            Source::Memory(set) => set.labels.is_some(),
        }
    }

    /// The geometry of the batches.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The same stream with its batches fitted to `geometry` instead (padded or cropped by
    /// [`to_unit_f32`]'s rule), before any batch is read.
    pub fn fitted(mut self, geometry: Geometry) -> Result<Self> {
        if let Source::Memory(set) = self.source {
            self.source = Source::Memory(set.fitted(geometry)?);
        }
        self.geometry = geometry;
        Ok(self)
    }

    /// The same stream reading `batch_size` images a batch (at least 1) from the next on.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The number of images the stream reads.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next batch, [B, C, H, W] f32 in [0,1] with its labels if any; `None` at the end.
    pub fn next_batch(&mut self, device: &Device) -> Result<Option<Batch>> {
        let g = self.geometry;
        let take = self.batch_size.min(self.rows.end - self.next);
        if take == 0 {
            return Ok(None);
        }
        let batch = match &mut self.source {
            Source::Npy(r) => {
                let array = r.read_rows(take)?.ok_or_else(|| Error::bad_input(&self.name, "ended early"))?;
                let n = array.shape[0];
                let pixels = to_unit_f32(&array, self.range, g, &self.name)?;
                let x = Tensor::from_vec(pixels, (n, g.channels, g.height, g.width), device)?;
                let y = match &self.labels {
                    Some(l) => Some(Tensor::new(&l[self.next..self.next + n], device)?),
                    None => None,
                };
                Batch { x, y, cond: None }
            }
            Source::Memory(set) => set.batch(&(self.next..self.next + take).collect::<Vec<_>>(), device)?,
        };
        self.next += batch.x.dim(0)?;
        Ok(Some(batch))
    }
}

/// Opens an `.npy` input for streaming, rejecting other formats.
pub fn open_npy(path: &InputPath) -> Result<NpyReader<Peeked>> {
    match read_tensor_file(path, &Device::Cpu)? {
        TensorFile::Npy(r) => Ok(r),
        TensorFile::Safetensors(_) => Err(Error::bad_input(path, "is a .safetensors file, expected an .npy array")),
    }
}
