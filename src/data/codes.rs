//! Discrete codes of a VQ model in files, read and written batch by batch so that memory
//! stays flat however many images they describe.
//!
//! Two forms, told apart by their first bytes:
//! - one level: an `.npy` integer array [N, H, W];
//! - two levels: a `.safetensors` file holding `top` [N, h, w], `bottom` [N, H, W] and, when
//!   the images had labels, `labels` [N]; its metadata names the codebook sizes
//!   ([`N_EMBED_TOP`], [`N_EMBED_BOTTOM`]) so that a prior or decoder can check it got
//!   matching codes.
//!
//! We write i64, the index type of numpy and PyTorch. Codes written by other programs (any
//! integer dtype, no metadata) are accepted; whether they fit a model is checked by
//! [`CodeLayout::check`] and, value by value, as they are read.
//!
//! A reader can be restricted to some images (a shard's), which are then the only ones read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;

use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, Elements, NpyReader, NpyWriter};
use crate::io::safetensors::{read_header, Entry, SafetensorsWriter};
use crate::io::tensor_file::{Format, Peeked};
use crate::io::{InputPath, Output, OutputPath};

/// Metadata key holding the top codebook size.
pub const N_EMBED_TOP: &str = "genimg.n_embed_top";
/// Metadata key holding the bottom codebook size.
pub const N_EMBED_BOTTOM: &str = "genimg.n_embed_bottom";

/// One level's code map size and, when known, its codebook size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub height: usize,
    pub width: usize,
    pub n_embed: Option<usize>,
}

impl Level {
    /// Codes per image.
    pub fn len(&self) -> usize {
        self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a code file holds: N images' codes of one or two levels, and maybe labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLayout {
    pub n: usize,
    pub top: Option<Level>,
    pub bottom: Level,
    pub labels: bool,
}

/// What a model expects of one level: its code map size and codebook size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelSpec {
    pub height: usize,
    pub width: usize,
    pub n_embed: usize,
}

impl CodeLayout {
    /// Checks that the file's levels, sizes and declared codebooks are those of a model
    /// expecting `top` (two levels) and `bottom`; `source` names the file in errors.
    pub fn check(&self, source: &str, top: Option<LevelSpec>, bottom: LevelSpec) -> Result<()> {
        let level = |name: &str, have: Level, want: LevelSpec| -> Result<()> {
            if (have.height, have.width) != (want.height, want.width) {
                return Err(Error::bad_input(
                    source,
                    format!(
                        "{name} codes are {}x{}, the model expects {}x{}",
                        have.height, have.width, want.height, want.width
                    ),
                ));
            }
            match have.n_embed {
                Some(n) if n != want.n_embed => Err(Error::bad_input(
                    source,
                    format!("{name} codes come from a codebook of {n}, the model's has {}", want.n_embed),
                )),
                _ => Ok(()),
            }
        };
        match (self.top, top) {
            (Some(have), Some(want)) => level("top", have, want)?,
            (None, Some(_)) => {
                return Err(Error::bad_input(
                    source,
                    "holds one level of codes, the model has two (expected a .safetensors file with top and bottom)",
                ))
            }
            (Some(_), None) => {
                return Err(Error::bad_input(
                    source,
                    "holds two levels of codes, the model has one (expected an .npy array [N, H, W])",
                ))
            }
            (None, None) => {}
        }
        level(if self.top.is_some() { "bottom" } else { "the" }, self.bottom, bottom)
    }
}

/// Codes of some images, row-major.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeBatch {
    pub n: usize,
    pub top: Option<Vec<u32>>,
    pub bottom: Vec<u32>,
    pub labels: Option<Vec<u32>>,
}

impl CodeBatch {
    /// Checks every code against the codebook sizes; `first` is the batch's first image.
    pub fn check_range(&self, source: &str, first: usize, top: Option<usize>, bottom: usize) -> Result<()> {
        let levels = [("top", self.top.as_deref(), top), ("bottom", Some(self.bottom.as_slice()), Some(bottom))];
        for (name, codes, n_embed) in levels {
            let (Some(codes), Some(n_embed)) = (codes, n_embed) else { continue };
            if let Some(i) = codes.iter().position(|&c| c as usize >= n_embed) {
                let per_image = codes.len() / self.n.max(1);
                return Err(Error::bad_input(
                    source,
                    format!(
                        "{name} code {} of image {} is outside the codebook (expected 0..{})",
                        codes[i],
                        first + i / per_image.max(1),
                        n_embed - 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An integer element type of a tensor file.
#[derive(Debug, Clone, Copy)]
enum IntType {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
}

impl IntType {
    fn size(self) -> usize {
        match self {
            IntType::U8 | IntType::I8 => 1,
            IntType::U16 | IntType::I16 => 2,
            IntType::U32 | IntType::I32 => 4,
            IntType::U64 | IntType::I64 => 8,
        }
    }

    fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as D;
        Some(match d {
            D::U8 => IntType::U8,
            D::U16 => IntType::U16,
            D::U32 => IntType::U32,
            D::U64 => IntType::U64,
            D::I8 => IntType::I8,
            D::I16 => IntType::I16,
            D::I32 => IntType::I32,
            D::I64 => IntType::I64,
            _ => return None,
        })
    }

    /// Little-endian bytes to values; a value that is negative or beyond u32 is an error.
    fn decode(self, bytes: &[u8], what: &str, source: &str) -> Result<Vec<u32>> {
        let size = self.size();
        bytes
            .chunks_exact(size)
            .map(|c| {
                let v: i128 = match self {
                    IntType::U8 => c[0] as i128,
                    IntType::I8 => c[0] as i8 as i128,
                    IntType::U16 => u16::from_le_bytes([c[0], c[1]]) as i128,
                    IntType::I16 => i16::from_le_bytes([c[0], c[1]]) as i128,
                    IntType::U32 => u32::from_le_bytes(c.try_into().expect("4 bytes")) as i128,
                    IntType::I32 => i32::from_le_bytes(c.try_into().expect("4 bytes")) as i128,
                    IntType::U64 => u64::from_le_bytes(c.try_into().expect("8 bytes")) as i128,
                    IntType::I64 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as i128,
                };
                u32::try_from(v).map_err(|_| Error::bad_input(source, format!("{what} holds {v}, not a code or class")))
            })
            .collect()
    }
}

/// Integers from an `.npy` batch, as u32.
fn npy_integers(data: Elements, what: &str, source: &str) -> Result<Vec<u32>> {
    let widen = |v: Vec<i64>| -> Result<Vec<u32>> {
        v.into_iter()
            .map(|x| u32::try_from(x).map_err(|_| Error::bad_input(source, format!("{what} holds {x}, not a code"))))
            .collect()
    };
    match data {
        Elements::U8(v) => Ok(v.into_iter().map(u32::from).collect()),
        Elements::U16(v) => Ok(v.into_iter().map(u32::from).collect()),
        Elements::I32(v) => widen(v.into_iter().map(i64::from).collect()),
        Elements::I64(v) => widen(v),
        other => Err(Error::bad_input(
            source,
            format!("{what} of dtype {} (expected integers: u8, u16, i32 or i64)", other.dtype().name()),
        )),
    }
}

/// Where one tensor's rows are in a seekable file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    dtype: IntType,
    offset: u64,
    /// Elements per row.
    row: usize,
}

enum Source {
    Npy(NpyReader<Peeked>),
    Safetensors { file: File, top: Option<Slot>, bottom: Slot, labels: Option<Slot> },
}

/// Reads a code file batch by batch.
pub struct CodeReader {
    name: String,
    /// What the reader reads: `n` is the number of images it reads (all of the file's, or
    /// a shard's).
    layout: CodeLayout,
    source: Source,
    /// The next image, numbered from the file's first.
    next: usize,
    /// One past the last image read.
    end: usize,
}

impl CodeReader {
    /// Opens a code file (or stdin) in either form. A `.safetensors` file on stdin is first
    /// copied to an anonymous temporary file, as its tensors are read by seeking.
    pub fn open(input: &InputPath) -> Result<Self> {
        let name = input.to_string();
        let peeked = Peeked::open(input)?;
        if peeked.is_empty() {
            return Err(Error::bad_input(input, "empty input (expected codes from vq-encode: .npy or .safetensors)"));
        }
        match peeked.format() {
            Some(Format::Npy) => {
                let len = peeked.len;
                return Self::from_npy(NpyReader::new(peeked, len, &name)?, name);
            }
            Some(Format::Safetensors) => {}
            None => return Err(Error::bad_input(
                input,
                "not a code file: expected an .npy array [N, H, W] or a .safetensors file with top and bottom codes",
            )),
        }
        let mut file = match input {
            InputPath::File(p) => File::open(p).map_err(|e| Error::io(input, e))?,
            InputPath::Stdin => {
                let mut spool = tempfile::tempfile().map_err(|e| Error::io("a temporary file", e))?;
                let mut peeked = peeked;
                io::copy(&mut peeked, &mut spool).map_err(|e| Error::io(input, e))?;
                spool.seek(SeekFrom::Start(0)).map_err(|e| Error::io(input, e))?;
                spool
            }
        };
        let len = file.metadata().map_err(|e| Error::io(input, e))?.len();
        let header = read_header(&mut BufReader::new(&mut file), len, &name)?;
        Self::from_safetensors(file, header, name)
    }

    fn from_npy(reader: NpyReader<Peeked>, name: String) -> Result<Self> {
        let shape = &reader.header().shape;
        if shape.len() != 3 {
            return Err(Error::bad_input(&name, format!("codes have shape {shape:?}, expected [N, H, W]")));
        }
        let bottom = Level { height: shape[1], width: shape[2], n_embed: None };
        let layout = CodeLayout { n: shape[0], top: None, bottom, labels: false };
        Ok(CodeReader { name, end: layout.n, layout, source: Source::Npy(reader), next: 0 })
    }

    fn from_safetensors(file: File, header: crate::io::safetensors::Header, name: String) -> Result<Self> {
        let found = || header.tensors.keys().cloned().collect::<Vec<_>>().join(", ");
        let bottom = header.tensors.get("bottom").ok_or_else(|| {
            Error::bad_input(
                &name,
                format!(
                    "has no 'bottom' tensor (it holds: {}); expected codes from vq-encode: top [N, h, w], bottom [N, H, W], labels [N]",
                    found()
                ),
            )
        })?;
        let n = bottom.0.shape.first().copied().unwrap_or(0);
        let slot = |key: &str, rank: usize| -> Result<Option<(Slot, &Entry)>> {
            let Some((entry, offset)) = header.tensors.get(key) else { return Ok(None) };
            let dtype = IntType::from_safetensors(entry.dtype).ok_or_else(|| {
                Error::bad_input(&name, format!("'{key}' is {:?}, expected an integer dtype", entry.dtype))
            })?;
            if entry.shape.len() != rank || entry.shape[0] != n {
                let want = if rank == 1 { format!("[{n}]") } else { format!("[{n}, H, W]") };
                return Err(Error::bad_input(&name, format!("'{key}' has shape {:?}, expected {want}", entry.shape)));
            }
            let row = entry.shape[1..].iter().product();
            Ok(Some((Slot { dtype, offset: *offset, row }, entry)))
        };
        let n_embed = |key: &str| -> Result<Option<usize>> {
            header
                .metadata
                .get(key)
                .map(|v| {
                    v.parse().map_err(|_| Error::bad_input(&name, format!("metadata {key} = '{v}' is not a number")))
                })
                .transpose()
        };
        let level = |e: &Entry, n_embed: Option<usize>| Level { height: e.shape[1], width: e.shape[2], n_embed };
        let (bottom_slot, bottom_entry) = slot("bottom", 3)?.expect("bottom is present");
        let top = slot("top", 3)?;
        let labels = slot("labels", 1)?;
        let layout = CodeLayout {
            n,
            top: top
                .map(|(_, e)| level(e, None))
                .map(|l| n_embed(N_EMBED_TOP).map(|k| Level { n_embed: k, ..l }))
                .transpose()?,
            bottom: level(bottom_entry, n_embed(N_EMBED_BOTTOM)?),
            labels: labels.is_some(),
        };
        let source =
            Source::Safetensors { file, top: top.map(|(s, _)| s), bottom: bottom_slot, labels: labels.map(|(s, _)| s) };
        Ok(CodeReader { name, end: n, layout, source, next: 0 })
    }

    /// Reads only the images `rows` of the file, from the next batch on (`layout().n`
    /// becomes their number): the others are seeked past (read and dropped from a pipe).
    /// Call before reading.
    pub fn only(&mut self, rows: Range<usize>) -> Result<()> {
        if self.next != 0 || rows.start > rows.end || rows.end > self.end {
            return Err(Error::config(format!("{}: images {rows:?} are not among the {} left", self.name, self.end)));
        }
        if let Source::Npy(r) = &mut self.source {
            r.skip_rows(rows.start)?;
        }
        (self.next, self.end, self.layout.n) = (rows.start, rows.end, rows.len());
        Ok(())
    }

    /// The next image's number in the file, for messages.
    pub fn position(&self) -> usize {
        self.next
    }

    pub fn layout(&self) -> &CodeLayout {
        &self.layout
    }

    /// The input's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next batch of up to `max` images; `None` at the end.
    pub fn read(&mut self, max: usize) -> Result<Option<CodeBatch>> {
        let rows = max.max(1).min(self.end - self.next);
        if rows == 0 {
            return Ok(None);
        }
        let name = &self.name;
        let batch = match &mut self.source {
            Source::Npy(r) => {
                let array = r.read_rows(rows)?.ok_or_else(|| Error::bad_input(name, "ended early"))?;
                CodeBatch { n: rows, top: None, bottom: npy_integers(array.data, "the codes", name)?, labels: None }
            }
            Source::Safetensors { file, top, bottom, labels } => {
                let first = self.next;
                let mut read = |slot: Slot, what: &str| -> Result<Vec<u32>> {
                    let row_bytes = (slot.row * slot.dtype.size()) as u64;
                    file.seek(SeekFrom::Start(slot.offset + first as u64 * row_bytes))
                        .map_err(|e| Error::io(name, e))?;
                    let mut bytes = vec![0u8; rows * row_bytes as usize];
                    file.read_exact(&mut bytes).map_err(|e| Error::io(name, e))?;
                    slot.dtype.decode(&bytes, what, name)
                };
                CodeBatch {
                    n: rows,
                    top: top.map(|s| read(s, "'top'")).transpose()?,
                    bottom: read(*bottom, "'bottom'")?,
                    labels: labels.map(|s| read(s, "'labels'")).transpose()?,
                }
            }
        };
        self.next += rows;
        Ok(Some(batch))
    }

    /// Every remaining image's codes.
    pub fn read_all(mut self) -> Result<CodeBatch> {
        let rest = self.end - self.next;
        Ok(self.read(rest)?.unwrap_or_default())
    }
}

/// Where codes go: one level's array, or a two-level file of `tensors` (top, bottom and
/// maybe labels), in that order.
enum Sink {
    Npy(NpyWriter<Output>),
    Safetensors(SafetensorsWriter<Output>),
}

/// Writes codes in the form their layout calls for, batch by batch and atomically.
pub struct CodeWriter {
    path: OutputPath,
    layout: CodeLayout,
    sink: Sink,
    written: usize,
}

impl CodeWriter {
    /// One level gives an `.npy` array (labels are not kept); two levels a `.safetensors`
    /// file. Codebook sizes known to the layout go into the metadata.
    pub fn create(path: &OutputPath, layout: CodeLayout) -> Result<Self> {
        let n = layout.n;
        let shape = |l: Level| vec![n, l.height, l.width];
        let sink = match layout.top {
            None => Sink::Npy(
                NpyWriter::new(path.create()?, NpyDType::I64, &shape(layout.bottom)).map_err(|e| Error::io(path, e))?,
            ),
            Some(top) => {
                let i64 = |name: &str, shape: Vec<usize>| Entry::new(name, safetensors::Dtype::I64, shape);
                let mut entries = vec![i64("top", shape(top)), i64("bottom", shape(layout.bottom))];
                if layout.labels {
                    entries.push(i64("labels", vec![n]));
                }
                let mut metadata = BTreeMap::new();
                for (key, level) in [(N_EMBED_TOP, top), (N_EMBED_BOTTOM, layout.bottom)] {
                    if let Some(k) = level.n_embed {
                        metadata.insert(key.to_string(), k.to_string());
                    }
                }
                Sink::Safetensors(
                    SafetensorsWriter::new(path.create()?, metadata, entries).map_err(|e| Error::io(path, e))?,
                )
            }
        };
        Ok(CodeWriter { path: path.clone(), layout, sink, written: 0 })
    }

    /// Appends a batch, which must hold exactly the layout's levels (and labels).
    pub fn write(&mut self, batch: &CodeBatch) -> Result<()> {
        let l = &self.layout;
        let fits = self.written + batch.n <= l.n
            && batch.bottom.len() == batch.n * l.bottom.len()
            && batch.top.as_ref().map(Vec::len) == l.top.map(|t| batch.n * t.len())
            && (!l.labels || batch.labels.as_ref().map(Vec::len) == Some(batch.n));
        if !fits {
            return Err(Error::config(format!("{}: a batch of codes does not fit the file's layout", self.path)));
        }
        let path = &self.path;
        match &mut self.sink {
            Sink::Npy(w) => {
                let values: Vec<i64> = batch.bottom.iter().map(|&c| c as i64).collect();
                w.write_rows(&values).map_err(|e| Error::io(path, e))?;
            }
            Sink::Safetensors(w) => {
                let levels = [batch.top.as_deref().unwrap_or_default(), &batch.bottom];
                let labels = batch.labels.as_deref().filter(|_| l.labels);
                for (i, values) in levels.into_iter().chain(labels).enumerate() {
                    let bytes: Vec<u8> = values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
                    w.append(i, &bytes).map_err(|e| Error::io(path, e))?;
                }
            }
        }
        self.written += batch.n;
        Ok(())
    }

    /// Completes the file; every image of the layout must have been written.
    pub fn finish(self) -> Result<()> {
        if self.written != self.layout.n {
            return Err(Error::config(format!(
                "{}: {} of {} images' codes were written",
                self.path, self.written, self.layout.n
            )));
        }
        let path = self.path;
        match self.sink {
            Sink::Npy(w) => w.finish().map_err(|e| Error::io(&path, e))?.finish(),
            Sink::Safetensors(w) => w.finish().map_err(|e| Error::io(&path, e))?.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize, two: bool, labels: bool) -> CodeLayout {
        CodeLayout {
            n,
            top: two.then_some(Level { height: 2, width: 2, n_embed: Some(7) }),
            bottom: Level { height: 4, width: 4, n_embed: Some(9) },
            labels,
        }
    }

    fn batch(n: usize, start: u32, two: bool, labels: bool) -> CodeBatch {
        CodeBatch {
            n,
            top: two.then(|| (0..n as u32 * 4).map(|i| (start + i) % 7).collect()),
            bottom: (0..n as u32 * 16).map(|i| (start + i) % 9).collect(),
            labels: labels.then(|| (0..n as u32).map(|i| (start + i) % 10).collect()),
        }
    }

    fn round_trip(two: bool, labels: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        let out = OutputPath::File(path.clone());
        let mut w = CodeWriter::create(&out, layout(5, two, labels)).unwrap();
        w.write(&batch(3, 0, two, labels)).unwrap();
        w.write(&batch(2, 100, two, labels)).unwrap();
        w.finish().unwrap();
        let mut r = CodeReader::open(&InputPath::File(path)).unwrap();
        let mut want = layout(5, two, labels && two);
        if !two {
            want.bottom.n_embed = None;
        }
        assert_eq!(r.layout(), &want);
        let first = r.read(2).unwrap().unwrap();
        let rest = r.read(10).unwrap().unwrap();
        assert!(r.read(1).unwrap().is_none());
        let whole = |a: Option<Vec<u32>>, b: Option<Vec<u32>>| a.zip(b).map(|(a, b)| [a, b].concat());
        let mut expected = batch(3, 0, two, labels && two);
        let tail = batch(2, 100, two, labels && two);
        expected.bottom.extend(&tail.bottom);
        expected.top = whole(expected.top, tail.top);
        expected.labels = whole(expected.labels, tail.labels);
        assert_eq!(first.bottom, expected.bottom[..32]);
        assert_eq!([first.bottom, rest.bottom].concat(), expected.bottom);
        assert_eq!(whole(first.top, rest.top), expected.top);
        assert_eq!(whole(first.labels, rest.labels), expected.labels);
    }

    #[test]
    fn one_level_round_trips_as_npy() {
        round_trip(false, false);
    }

    #[test]
    fn two_levels_round_trip_as_safetensors_with_labels() {
        round_trip(true, true);
        round_trip(true, false);
    }

    /// A reader restricted to some images reads those alone, in both forms.
    #[test]
    fn a_shard_of_a_code_file_reads_its_images_alone() {
        for two in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("codes");
            let all = batch(5, 0, two, two);
            let mut w = CodeWriter::create(&OutputPath::File(path.clone()), layout(5, two, two)).unwrap();
            w.write(&all).unwrap();
            w.finish().unwrap();
            let mut r = CodeReader::open(&InputPath::File(path)).unwrap();
            r.only(1..4).unwrap();
            assert_eq!((r.layout().n, r.position()), (3, 1));
            let got = r.read_all().unwrap();
            assert_eq!((got.n, &got.bottom[..]), (3, &all.bottom[16..64]));
            if two {
                assert_eq!(got.top.unwrap(), all.top.as_ref().unwrap()[4..16]);
                assert_eq!(got.labels.unwrap(), all.labels.as_ref().unwrap()[1..4]);
            }
        }
    }

    /// A file another program wrote: plain tensors of other integer dtypes, no metadata.
    #[test]
    fn foreign_integer_codes_are_accepted() {
        let d = candle_core::Device::Cpu;
        let mut m = crate::io::safetensors::TensorMap::new();
        m.insert("top", candle_core::Tensor::new(&[[[1u8, 2], [3, 4]]], &d).unwrap());
        m.insert("bottom", candle_core::Tensor::new(&[[[5i32, 6, 7], [8, 9, 10]]], &d).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        m.write(&OutputPath::File(path.clone())).unwrap();
        let r = CodeReader::open(&InputPath::File(path)).unwrap();
        let l = r.layout().clone();
        assert_eq!(l.top, Some(Level { height: 2, width: 2, n_embed: None }));
        assert_eq!(l.bottom, Level { height: 2, width: 3, n_embed: None });
        let all = r.read_all().unwrap();
        assert_eq!(all.top.unwrap(), [1, 2, 3, 4]);
        assert_eq!(all.bottom, [5, 6, 7, 8, 9, 10]);
        let spec = |h, w, n| LevelSpec { height: h, width: w, n_embed: n };
        l.check("c", Some(spec(2, 2, 512)), spec(2, 3, 512)).unwrap();
        let err = l.check("c", Some(spec(2, 2, 512)), spec(4, 4, 512)).unwrap_err().to_string();
        assert!(err.contains("bottom codes are 2x3, the model expects 4x4"), "{err}");
        let err = l.check("c", None, spec(2, 3, 512)).unwrap_err().to_string();
        assert!(err.contains("two levels"), "{err}");
    }

    #[test]
    fn codes_outside_the_codebook_name_the_image() {
        let b = CodeBatch { n: 2, top: None, bottom: vec![0, 1, 2, 3, 4, 99], labels: None };
        let err = b.check_range("f", 10, None, 50).unwrap_err().to_string();
        assert_eq!(err, "f: bottom code 99 of image 11 is outside the codebook (expected 0..49)");
        b.check_range("f", 0, None, 100).unwrap();
    }
}
