//! Images read batch by batch, so tools that map images to something (encoders) use memory
//! that does not grow with the number of images.

use std::io::Read;

use candle_core::{Device, Tensor};

use super::convert::{to_unit_f32, Geometry, PixelRange};
use super::dataset::Batch;
use super::image_set::{read_labels, DataSpec, ImageSet, Split};
use crate::error::{Error, Result};
use crate::io::npy::NpyReader;
use crate::io::{read_tensor_file, InputPath, TensorFile};

enum Source {
    Npy(NpyReader<Box<dyn Read>>),
    Memory(ImageSet, usize),
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
                (Source::Memory(set, 0), name, geometry)
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
        Ok(ImageStream { source, name, range, geometry, batch_size: batch_size.max(1), labels: None, next: 0 })
    }

    /// Gives an array file's images the labels in `path` (one integer per image). The
    /// bundled set has its own.
    pub fn with_labels(mut self, path: &InputPath) -> Result<Self> {
        if matches!(self.source, Source::Memory(..)) {
            return Err(Error::config("--labels is for array files; the bundled set has its own labels"));
        }
        self.labels = Some(read_labels(path, self.len())?);
        Ok(self)
    }

    /// Whether batches come with labels.
    pub fn has_labels(&self) -> bool {
        match &self.source {
            Source::Npy(_) => self.labels.is_some(),
            Source::Memory(set, _) => set.labels.is_some(),
        }
    }

    /// The geometry of the batches.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The same stream with its batches fitted to `geometry` instead (padded or cropped by
    /// [`to_unit_f32`]'s rule), before any batch is read.
    pub fn fitted(mut self, geometry: Geometry) -> Result<Self> {
        if let Source::Memory(set, pos) = self.source {
            self.source = Source::Memory(set.fitted(geometry)?, pos);
        }
        self.geometry = geometry;
        Ok(self)
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Npy(r) => r.header().rows(),
            Source::Memory(s, _) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next batch, [B, C, H, W] f32 in [0,1] with its labels if any; `None` at the end.
    pub fn next_batch(&mut self, device: &Device) -> Result<Option<Batch>> {
        let g = self.geometry;
        let batch = match &mut self.source {
            Source::Npy(r) => {
                let Some(array) = r.read_rows(self.batch_size)? else { return Ok(None) };
                let n = array.shape[0];
                let pixels = to_unit_f32(&array, self.range, g, &self.name)?;
                let x = Tensor::from_vec(pixels, (n, g.channels, g.height, g.width), device)?;
                let y = match &self.labels {
                    Some(l) => Some(Tensor::new(&l[self.next..self.next + n], device)?),
                    None => None,
                };
                Batch { x, y, cond: None }
            }
            Source::Memory(set, pos) => {
                if *pos >= set.len() {
                    return Ok(None);
                }
                let rows: Vec<usize> = (*pos..(*pos + self.batch_size).min(set.len())).collect();
                *pos += rows.len();
                set.batch(&rows, device)?
            }
        };
        self.next += batch.x.dim(0)?;
        Ok(Some(batch))
    }
}

/// Opens an `.npy` input for streaming, rejecting other formats.
pub fn open_npy(path: &InputPath) -> Result<NpyReader<Box<dyn Read>>> {
    match read_tensor_file(path, &Device::Cpu)? {
        TensorFile::Npy(r) => Ok(r),
        TensorFile::Safetensors(_) => Err(Error::bad_input(path, "is a .safetensors file, expected an .npy array")),
    }
}
