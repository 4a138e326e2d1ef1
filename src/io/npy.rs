//! The NumPy `.npy` format (versions 1.0 to 3.0): little-endian, C order, dtypes u8, u16, i32,
//! i64, f32 and f64. Arrays are read and written by rows (slices along the first axis) so a
//! tool can stream more images than fit in memory.
//!
//! Every claim in a header is checked before it is acted on: the element count may not
//! overflow, a file must hold exactly the bytes its header implies, and no allocation is
//! larger than a batch of rows actually read.

use std::io::{self, Read, Write};

use super::path::Skip;
use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The most bytes one row may have; a larger row is taken for a corrupt header.
const MAX_ROW_BYTES: u64 = 1 << 30;
/// Headers are short dict literals; a longer one is not a header numpy would write.
const MAX_HEADER_LEN: usize = 1 << 20;

/// Element types the tools read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U8,
    U16,
    I32,
    I64,
    F32,
    F64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// The numpy `descr` string.
    pub fn descr(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::U16 => "<u2",
            DType::I32 => "<i4",
            DType::I64 => "<i8",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    fn from_descr(descr: &str) -> std::result::Result<Self, String> {
        let unsupported = || {
            format!("unsupported dtype '{descr}' (expected one of u1, <u2, <i4, <i8, <f4, <f8: little-endian u8, u16, i32, i64, f32, f64)")
        };
        let (order, code) = match descr.chars().next() {
            Some(c @ ('<' | '|' | '=' | '>')) => (c, &descr[1..]),
            _ => ('=', descr),
        };
        let dtype = match code {
            "u1" | "B" => DType::U8,
            "u2" => DType::U16,
            "i4" => DType::I32,
            "i8" => DType::I64,
            "f4" => DType::F32,
            "f8" => DType::F64,
            _ => return Err(unsupported()),
        };
        if order == '>' && dtype != DType::U8 {
            return Err(format!("big-endian dtype '{descr}' is not supported (expected little-endian, e.g. '<f4')"));
        }
        Ok(dtype)
    }
}

/// The parsed header of an `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Header {
    /// Elements in one row (the product of all but the first dimension).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Rows along the first axis (1 for a 0-d array).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Bytes of data the header implies, or `None` when that overflows.
    fn data_bytes(&self) -> Option<u64> {
        self.shape.iter().try_fold(self.dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
    }

    fn encode(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!("({})", self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", self.dtype.descr(), shape);
        // Version 1.0 stores the header length in a u16; 2.0 in a u32.
        let (version, len_bytes) = if dict.len() + 12 < 65_536 { (1u8, 2) } else { (2u8, 4) };
        let unpadded = MAGIC.len() + 2 + len_bytes + dict.len() + 1;
        dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        dict.push('\n');
        let mut out = Vec::with_capacity(unpadded + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out
    }
}

/// Reads and parses the magic string and header dict, leaving `r` at the first data byte.
/// Returns the header and the number of bytes consumed.
fn read_header(r: &mut impl Read) -> std::result::Result<(Header, u64), String> {
    let mut prefix = [0u8; 8];
    read_fully(r, &mut prefix).map_err(|e| e.to_string())?.then_some(()).ok_or_else(|| {
        "too short to be an .npy file (expected the magic string \\x93NUMPY and a header)".to_string()
    })?;
    if &prefix[..6] != MAGIC {
        return Err("not an .npy file (expected it to start with the magic string \\x93NUMPY)".into());
    }
    let (len, consumed) = match prefix[6] {
        1 => {
            let mut b = [0u8; 2];
            read_fully(r, &mut b).map_err(|e| e.to_string())?.then_some(()).ok_or("truncated .npy header")?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            read_fully(r, &mut b).map_err(|e| e.to_string())?.then_some(()).ok_or("truncated .npy header")?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}.{} (expected 1.0, 2.0 or 3.0)", prefix[7])),
    };
    if len > MAX_HEADER_LEN {
        return Err(format!("absurd .npy header length {len} bytes (expected under {MAX_HEADER_LEN})"));
    }
    let mut text = vec![0u8; len];
    if !read_fully(r, &mut text).map_err(|e| e.to_string())? {
        return Err(format!("truncated .npy header (expected {len} header bytes)"));
    }
    let text = std::str::from_utf8(&text).map_err(|_| "the .npy header is not text".to_string())?;
    let header = parse_dict(text)?;
    Ok((header, (consumed + len) as u64))
}

/// Like `read_exact`, but returns `Ok(false)` on a clean or partial end of input.
fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Parses the header's Python dict literal, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_dict(text: &str) -> std::result::Result<Header, String> {
    let bad = |what: &str| format!("malformed .npy header ({what}): {:?}", text.trim_end());
    let mut toks = Tokens::new(text.trim());
    toks.expect('{').map_err(|_| bad("expected '{'"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if toks.eat('}') {
            break;
        }
        let key = toks.string().ok_or_else(|| bad("expected a quoted key"))?;
        toks.expect(':').map_err(|_| bad("expected ':'"))?;
        match key.as_str() {
            "descr" => {
                descr = Some(
                    toks.string().ok_or_else(|| bad("descr is not a string; structured dtypes are not supported"))?,
                )
            }
            "fortran_order" => fortran = Some(toks.boolean().ok_or_else(|| bad("fortran_order is not True or False"))?),
            "shape" => shape = Some(toks.tuple().ok_or_else(|| bad("shape is not a tuple of integers"))?),
            other => return Err(bad(&format!("unexpected key '{other}'"))),
        }
        if !toks.eat(',') {
            toks.expect('}').map_err(|_| bad("expected ',' or '}'"))?;
            break;
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(bad("needs descr, fortran_order and shape"));
    };
    if fortran {
        return Err("array is in Fortran order (expected C order; save with np.ascontiguousarray)".into());
    }
    if shape.len() > 32 {
        return Err(format!("absurd shape with {} dimensions", shape.len()));
    }
    Ok(Header { dtype: DType::from_descr(&descr)?, shape })
}

struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { rest: s }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if let Some(r) = self.rest.strip_prefix(c) {
            self.rest = r;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), ()> {
        self.eat(c).then_some(()).ok_or(())
    }

    fn string(&mut self) -> Option<String> {
        self.skip_ws();
        let quote = self.rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let body = &self.rest[1..];
        let end = body.find(quote)?;
        self.rest = &body[end + 1..];
        Some(body[..end].to_string())
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_ws();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(r) = self.rest.strip_prefix(word) {
                self.rest = r;
                return Some(value);
            }
        }
        None
    }

    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat('(') {
            return None;
        }
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Some(dims);
            }
            self.skip_ws();
            let end = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len());
            if end == 0 {
                return None;
            }
            dims.push(self.rest[..end].parse().ok()?);
            self.rest = &self.rest[end..];
            self.eat('L'); // Python 2 long literal, written by old numpy.
            if !self.eat(',') {
                return self.eat(')').then_some(dims);
            }
        }
    }
}

/// A flat buffer of elements of one dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    U8(Vec<u8>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Elements {
    pub fn dtype(&self) -> DType {
        match self {
            Elements::U8(_) => DType::U8,
            Elements::U16(_) => DType::U16,
            Elements::I32(_) => DType::I32,
            Elements::I64(_) => DType::I64,
            Elements::F32(_) => DType::F32,
            Elements::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Elements::U8(v) => v.len(),
            Elements::U16(v) => v.len(),
            Elements::I32(v) => v.len(),
            Elements::I64(v) => v.len(),
            Elements::F32(v) => v.len(),
            Elements::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `.npy` stores them: little-endian bytes.
    pub fn into_le_bytes(self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Elements::U8(v) => return v,
            Elements::U16(v) => u16::extend_le(&v, &mut out),
            Elements::I32(v) => i32::extend_le(&v, &mut out),
            Elements::I64(v) => i64::extend_le(&v, &mut out),
            Elements::F32(v) => f32::extend_le(&v, &mut out),
            Elements::F64(v) => f64::extend_le(&v, &mut out),
        }
        out
    }

    /// Elements of `dtype` from their little-endian bytes (a whole number of elements).
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Self {
        macro_rules! conv {
            ($t:ty) => {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of element size")))
                    .collect()
            };
        }
        match dtype {
            DType::U8 => Elements::U8(bytes.to_vec()),
            DType::U16 => Elements::U16(conv!(u16)),
            DType::I32 => Elements::I32(conv!(i32)),
            DType::I64 => Elements::I64(conv!(i64)),
            DType::F32 => Elements::F32(conv!(f32)),
            DType::F64 => Elements::F64(conv!(f64)),
        }
    }
}

/// An element type that can be written to `.npy`.
pub trait Element: Copy + 'static {
    const DTYPE: DType;
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn extend_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    };
}
element!(u8, DType::U8);
element!(u16, DType::U16);
element!(i32, DType::I32);
element!(i64, DType::I64);
element!(f32, DType::F32);
element!(f64, DType::F64);

/// A whole array in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Elements,
}

/// Streams an `.npy` array by rows.
pub struct NpyReader<R> {
    name: String,
    header: Header,
    inner: R,
    rows_left: usize,
    /// Bytes before the first row: the magic string and the header.
    data_offset: u64,
}

impl<R: Read> NpyReader<R> {
    /// Reads the header. `len`, the input's total size when known, is checked against the
    /// size the header implies. `name` is the input's name for messages.
    pub fn new(mut inner: R, len: Option<u64>, name: &str) -> Result<Self> {
        let (header, consumed) = read_header(&mut inner).map_err(|p| Error::bad_input(name, p))?;
        let Some(data_bytes) = header.data_bytes() else {
            return Err(Error::bad_input(name, format!("absurd shape {:?}: its size overflows", header.shape)));
        };
        let row_bytes = header.row_len() as u64 * header.dtype.size() as u64;
        if row_bytes > MAX_ROW_BYTES {
            return Err(Error::bad_input(
                name,
                format!(
                    "absurd shape {:?}: one row would be {row_bytes} bytes (at most {MAX_ROW_BYTES} expected)",
                    header.shape
                ),
            ));
        }
        if let Some(len) = len {
            let have = len.saturating_sub(consumed);
            if have != data_bytes {
                let what = if have < data_bytes { "truncated" } else { "has trailing bytes" };
                return Err(Error::bad_input(
                    name,
                    format!(
                        "{what}: header says {} {:?} ({data_bytes} bytes of data), the file holds {have}",
                        header.dtype.name(),
                        header.shape
                    ),
                ));
            }
        }
        Ok(NpyReader { name: name.to_string(), rows_left: header.rows(), header, inner, data_offset: consumed })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Where the first row starts in the input: the bytes of the magic string and header.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Reads up to `max_rows` rows; `None` once all rows have been read.
    pub fn read_rows(&mut self, max_rows: usize) -> Result<Option<Array>> {
        if self.rows_left == 0 {
            return Ok(None);
        }
        let rows = max_rows.max(1).min(self.rows_left);
        let bytes = self.read_data(rows)?;
        let mut shape = self.header.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Ok(Some(Array { shape, data: Elements::from_le_bytes(self.header.dtype, &bytes) }))
    }

    /// Reads every remaining row into one array.
    pub fn read_all(mut self) -> Result<Array> {
        let rows = self.rows_left;
        let bytes = self.read_data(rows)?;
        let mut shape = self.header.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Ok(Array { shape, data: Elements::from_le_bytes(self.header.dtype, &bytes) })
    }

    /// Reads every remaining row as the file stores it: little-endian bytes, row-major.
    pub fn read_all_bytes(mut self) -> Result<Vec<u8>> {
        self.read_data(self.rows_left)
    }

    /// Reads the bytes of `rows` rows. The buffer grows in steps of at most 64 MiB as data
    /// arrives, so a false header on a pipe cannot make us allocate what it claims.
    fn read_data(&mut self, rows: usize) -> Result<Vec<u8>> {
        const STEP: usize = 64 << 20;
        let total = rows * self.header.row_len() * self.header.dtype.size();
        let mut bytes = Vec::new();
        while bytes.len() < total {
            let start = bytes.len();
            bytes.resize(start + STEP.min(total - start), 0);
            let complete = read_fully(&mut self.inner, &mut bytes[start..]).map_err(|e| Error::io(&self.name, e))?;
            if !complete {
                return Err(self.truncated());
            }
        }
        self.rows_left -= rows;
        Ok(bytes)
    }

    fn truncated(&self) -> Error {
        Error::bad_input(
            &self.name,
            format!("truncated: header says {} {:?}, the data ends early", self.header.dtype.name(), self.header.shape),
        )
    }
}

impl<R: Read + Skip> NpyReader<R> {
    /// Passes over the next `rows` rows (at most those left) without reading them into
    /// memory, where a shard's rows start: a file seeks past them.
    pub fn skip_rows(&mut self, rows: usize) -> Result<()> {
        let rows = rows.min(self.rows_left);
        let bytes = rows as u64 * self.header.row_len() as u64 * self.header.dtype.size() as u64;
        self.inner.skip(bytes).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.truncated(),
            _ => Error::io(&self.name, e),
        })?;
        self.rows_left -= rows;
        Ok(())
    }
}

/// Writes an `.npy` array row by row; the shape, and so the row count, is fixed up front.
pub struct NpyWriter<W: Write> {
    inner: W,
    dtype: DType,
    row_len: usize,
    rows_expected: usize,
    rows_written: usize,
    buf: Vec<u8>,
}

impl<W: Write> NpyWriter<W> {
    pub fn new(mut inner: W, dtype: DType, shape: &[usize]) -> io::Result<Self> {
        let header = Header { dtype, shape: shape.to_vec() };
        inner.write_all(&header.encode())?;
        Ok(NpyWriter {
            inner,
            dtype,
            row_len: header.row_len(),
            rows_expected: header.rows(),
            rows_written: 0,
            buf: Vec::new(),
        })
    }

    /// Appends whole rows.
    pub fn write_rows<T: Element>(&mut self, values: &[T]) -> io::Result<()> {
        if T::DTYPE != self.dtype {
            return Err(io::Error::other(format!(
                "npy writer: wrote {} to a {} array",
                T::DTYPE.name(),
                self.dtype.name()
            )));
        }
        let rows = values.len().checked_div(self.row_len).unwrap_or(0);
        if values.len() != rows * self.row_len || self.rows_written + rows > self.rows_expected {
            return Err(io::Error::other(format!(
                "npy writer: {} values do not fit the remaining {} rows of {}",
                values.len(),
                self.rows_expected - self.rows_written,
                self.row_len
            )));
        }
        self.buf.clear();
        T::extend_le(values, &mut self.buf);
        self.inner.write_all(&self.buf)?;
        self.rows_written += rows;
        Ok(())
    }

    /// Appends whole rows as read from another array, of the writer's dtype.
    pub fn write_elements(&mut self, values: &Elements) -> io::Result<()> {
        match values {
            Elements::U8(v) => self.write_rows(v),
            Elements::U16(v) => self.write_rows(v),
            Elements::I32(v) => self.write_rows(v),
            Elements::I64(v) => self.write_rows(v),
            Elements::F32(v) => self.write_rows(v),
            Elements::F64(v) => self.write_rows(v),
        }
    }

    /// Checks that every row promised by the header was written and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        if self.rows_written != self.rows_expected && self.row_len != 0 {
            return Err(io::Error::other(format!(
                "npy writer: header promised {} rows, {} were written",
                self.rows_expected, self.rows_written
            )));
        }
        Ok(self.inner)
    }
}

/// Encodes a whole array as `.npy` bytes.
pub fn to_bytes<T: Element>(shape: &[usize], values: &[T]) -> Vec<u8> {
    let mut header = Header { dtype: T::DTYPE, shape: shape.to_vec() }.encode();
    T::extend_le(values, &mut header);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Array> {
        NpyReader::new(bytes, Some(bytes.len() as u64), "t.npy")?.read_all()
    }

    #[test]
    fn round_trip_every_dtype_and_rank() {
        let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let bytes = to_bytes(&[2, 3, 4], &a);
        assert_eq!(bytes.len() % 16, 0);
        assert_eq!(read(&bytes).unwrap(), Array { shape: vec![2, 3, 4], data: Elements::F32(a) });
        let b: Vec<u8> = (0..10).collect();
        assert_eq!(read(&to_bytes(&[10], &b)).unwrap().data, Elements::U8(b));
        let c: Vec<i64> = vec![-3, 7];
        assert_eq!(read(&to_bytes(&[1, 2], &c)).unwrap().data, Elements::I64(c));
        let d: Vec<u16> = vec![65535, 1];
        assert_eq!(read(&to_bytes(&[2], &d)).unwrap().data, Elements::U16(d));
        let e: Vec<i32> = vec![-1; 6];
        assert_eq!(read(&to_bytes(&[2, 3], &e)).unwrap().data, Elements::I32(e));
        let f: Vec<f64> = vec![1e300];
        assert_eq!(read(&to_bytes(&[], &f)).unwrap(), Array { shape: vec![], data: Elements::F64(f) });
        assert_eq!(read(&to_bytes::<f32>(&[0, 5], &[])).unwrap().shape, vec![0, 5]);
    }

    #[test]
    fn agrees_with_ndarray_npy() {
        use ndarray_npy::{ReadNpyExt, WriteNpyExt};
        let x = ndarray::Array3::<f32>::from_shape_fn((3, 2, 5), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        let mut theirs = Vec::new();
        x.write_npy(&mut theirs).unwrap();
        let ours = read(&theirs).unwrap();
        assert_eq!(ours.shape, vec![3, 2, 5]);
        assert_eq!(ours.data, Elements::F32(x.iter().copied().collect()));
        let mine = to_bytes(&[3, 2, 5], x.as_slice().unwrap());
        let back = ndarray::Array3::<f32>::read_npy(&mine[..]).unwrap();
        assert_eq!(back, x);
    }

    #[test]
    fn streams_by_rows() {
        let v: Vec<u8> = (0..50).collect();
        let bytes = to_bytes(&[5, 2, 5], &v);
        let mut r = NpyReader::new(&bytes[..], None, "s").unwrap();
        let a = r.read_rows(2).unwrap().unwrap();
        assert_eq!(a.shape, vec![2, 2, 5]);
        let b = r.read_rows(2).unwrap().unwrap();
        let c = r.read_rows(2).unwrap().unwrap();
        assert_eq!(c.shape, vec![1, 2, 5]);
        assert!(r.read_rows(2).unwrap().is_none());
        let mut all = Vec::new();
        for x in [a, b, c] {
            let Elements::U8(x) = x.data else { panic!() };
            all.extend(x);
        }
        assert_eq!(all, v);
        // Skipped rows are passed over; a stream that ends inside them is truncated.
        let mut r = NpyReader::new(&bytes[..], None, "s").unwrap();
        r.skip_rows(3).unwrap();
        assert_eq!(r.read_rows(5).unwrap().unwrap().data, Elements::U8(v[30..].to_vec()));
        let short = &bytes[..bytes.len() - 25];
        let mut r = NpyReader::new(short, None, "s").unwrap();
        assert!(r.skip_rows(5).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn writer_checks_row_count() {
        let mut w = NpyWriter::new(Vec::new(), DType::F32, &[2, 3]).unwrap();
        w.write_rows(&[0f32; 3]).unwrap();
        assert!(w.write_rows(&[0f32; 2]).is_err());
        assert!(w.write_rows(&[0u8; 3]).is_err());
        assert!(w.finish().is_err());
        let mut w = NpyWriter::new(Vec::new(), DType::F32, &[2, 3]).unwrap();
        w.write_rows(&[1f32; 6]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(read(&bytes).unwrap().data, Elements::F32(vec![1.0; 6]));
    }

    fn err(bytes: &[u8]) -> String {
        read(bytes).unwrap_err().to_string()
    }

    fn with_header(dict: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        assert!(err(b"").contains("too short"));
        assert!(err(b"hello, this is text\n").contains("not an .npy file"));
        let mut ok = to_bytes(&[4, 4], &[1f32; 16]);
        ok.truncate(ok.len() - 3);
        assert!(err(&ok).contains("truncated"), "{}", err(&ok));
        assert!(err(&with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }")).contains("Fortran"));
        assert!(err(&with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }"))
            .contains("unsupported dtype"));
        assert!(err(&with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }")).contains("big-endian"));
        let huge = err(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999), }",
        ));
        assert!(huge.contains("absurd"), "{huge}");
        let claims = err(&with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 784), }"));
        assert!(claims.contains("truncated") && claims.contains("holds 0"), "{claims}");
        assert!(err(&with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"))
            .contains("structured"));
        assert!(err(&with_header("garbage")).contains("malformed"));
        // On a pipe the size is unknown: the claim is caught when the data runs out.
        let bytes = with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 784), }");
        let mut r = NpyReader::new(&bytes[..], None, "<stdin>").unwrap();
        assert!(r.read_rows(128).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn accepts_python2_longs_and_double_quotes() {
        let mut b = with_header("{\"descr\": \"|u1\", \"fortran_order\": False, \"shape\": (2L, 1L)}");
        b.extend_from_slice(&[7, 9]);
        assert_eq!(read(&b).unwrap(), Array { shape: vec![2, 1], data: Elements::U8(vec![7, 9]) });
    }
}
