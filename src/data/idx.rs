//! IDX files, the format of the original MNIST distribution (yann.lecun.com/exdb/mnist):
//! a big-endian magic number `0x0000TTDD` (TT the element type, DD the number of
//! dimensions), DD big-endian u32 sizes, then the elements in row-major order.
//!
//! Only the two kinds MNIST uses are read: u8 images `0x00000803` [N, H, W] and u8 labels
//! `0x00000801` [N]. Gzipped files (`train-images-idx3-ubyte.gz`) are recognised by the gzip
//! magic bytes, not the name, and decompressed on the fly.
//!
//! As with `.npy`, the header's claims are checked before they are acted on: the sizes may
//! not overflow, a plain file must hold exactly the bytes the header implies, and a
//! compressed or piped input is read without reserving the claimed size up front, so a false
//! header cannot make us allocate more than the input really holds.

use std::io::{Cursor, Read};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};
use crate::io::InputPath;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Element type code of unsigned bytes, the only one MNIST uses.
const TYPE_U8: u8 = 0x08;
const EXPECTED: &str = "expected an IDX file: u8 images 0x00000803 or u8 labels 0x00000801, optionally gzipped";

/// What an IDX file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// u8 [N, H, W]
    Images,
    /// u8 [N]
    Labels,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        }
    }

    /// The number of dimensions, the last byte of the magic number.
    fn dims(self) -> usize {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }
}

/// The contents of an IDX file: u8 elements, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub kind: Kind,
    /// [N, H, W] for images, [N] for labels.
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Idx {
    /// Reads `input` (a file, or stdin for `-`), which must hold `want`.
    pub fn read(input: &InputPath, want: Kind) -> Result<Self> {
        let (reader, len) = input.open()?;
        let idx = Self::decode(reader, len, &input.to_string())?;
        if idx.kind != want {
            return Err(Error::bad_input(
                input,
                format!("holds IDX {}, expected IDX {} (magic 0x0000080{})", idx.kind.name(), want.name(), want.dims()),
            ));
        }
        Ok(idx)
    }

    /// Decodes an IDX stream, gunzipping it first when it starts with the gzip magic.
    /// `len`, the input's size when known, is checked against the header of a plain file;
    /// `source` names the input in errors.
    pub fn decode(mut reader: impl Read, len: Option<u64>, source: &str) -> Result<Self> {
        let mut head = Vec::with_capacity(2);
        (&mut reader).take(2).read_to_end(&mut head).map_err(|e| Error::io(source, e))?;
        if head.is_empty() {
            return Err(Error::bad_input(source, format!("empty file ({EXPECTED})")));
        }
        let rest = Cursor::new(head.clone()).chain(reader);
        if head == GZIP_MAGIC {
            // The decompressed size is unknown until the stream ends.
            return decode_plain(MultiGzDecoder::new(rest), None, source, " (after gunzip)");
        }
        decode_plain(rest, len, source, "")
    }
}

/// Decodes an uncompressed IDX stream. `note` is appended to size messages of decompressed
/// data, whose sizes are not the file's.
fn decode_plain(mut r: impl Read, len: Option<u64>, source: &str, note: &str) -> Result<Idx> {
    let io = |e: std::io::Error| {
        use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        if matches!(e.kind(), InvalidData | InvalidInput | UnexpectedEof) {
            // How flate2 reports corrupt or cut-off compressed data.
            Error::bad_input(source, format!("corrupt or truncated gzip data ({e})"))
        } else {
            Error::io(source, e)
        }
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic).map_err(io)?;
    if got < 4 {
        return Err(Error::bad_input(source, format!("too short{note}: {got} bytes, {EXPECTED}")));
    }
    let kind = match magic {
        [0, 0, TYPE_U8, 3] => Kind::Images,
        [0, 0, TYPE_U8, 1] => Kind::Labels,
        [0, 0, t @ (0x08 | 0x09 | 0x0b | 0x0c | 0x0d | 0x0e), d] => {
            let ty = match t {
                0x08 => "u8",
                0x09 => "i8",
                0x0b => "i16",
                0x0c => "i32",
                0x0d => "f32",
                _ => "f64",
            };
            return Err(Error::bad_input(
                source,
                format!(
                    "IDX {ty} array of {d} dimensions (magic 0x{:08x}) is not supported; {EXPECTED}",
                    u32::from_be_bytes(magic)
                ),
            ));
        }
        _ => {
            let looks_like = if magic == *b"\x89PNG" || magic[..3] == [0xff, 0xd8, 0xff] {
                " (it looks like a PNG or JPEG image; img-pack takes a folder of those)"
            } else if magic.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
                " (it looks like text)"
            } else {
                ""
            };
            return Err(Error::bad_input(
                source,
                format!(
                    "not an IDX file{looks_like}{note}: starts with 0x{:08x}, {EXPECTED}",
                    u32::from_be_bytes(magic)
                ),
            ));
        }
    };
    let ndim = kind.dims();
    let mut dims = [0u8; 12];
    let dims = &mut dims[..4 * ndim];
    if read_up_to(&mut r, dims).map_err(io)? < dims.len() {
        return Err(Error::bad_input(
            source,
            format!("truncated header{note}: IDX {} need {ndim} sizes of 4 bytes after the magic", kind.name()),
        ));
    }
    let shape: Vec<usize> =
        dims.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    if kind == Kind::Images && (shape[1] == 0 || shape[2] == 0) {
        return Err(Error::bad_input(
            source,
            format!("IDX images of size {}x{} (expected at least 1x1)", shape[1], shape[2]),
        ));
    }
    // At most 3 sizes below 2^32 each: the product fits in u128, never overflows.
    let data_bytes = shape.iter().map(|&d| d as u128).product::<u128>();
    let header_bytes = 4 + 4 * ndim as u64;
    let describe = |have: u64| {
        let what = if (have as u128) < data_bytes { "truncated" } else { "has trailing bytes" };
        format!(
            "{what}{note}: header says IDX {} {shape:?} ({data_bytes} bytes of data), the file holds {have}",
            kind.name()
        )
    };
    if let Some(len) = len {
        let have = len.saturating_sub(header_bytes);
        if have as u128 != data_bytes {
            return Err(Error::bad_input(source, describe(have)));
        }
    }
    let Ok(want) = u64::try_from(data_bytes) else {
        return Err(Error::bad_input(
            source,
            format!("absurd header{note}: IDX {} {shape:?} would be {data_bytes} bytes", kind.name()),
        ));
    };
    // Read one byte more than the header promises, to notice trailing data; reserve only
    // what a checked file length vouches for.
    let mut data = Vec::with_capacity(if len.is_some() { want as usize } else { 0 });
    r.take(want.saturating_add(1)).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 != want {
        return Err(Error::bad_input(source, describe(data.len() as u64)));
    }
    Ok(Idx { kind, shape, data })
}

/// Fills as much of `buf` as the input holds; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = magic.to_be_bytes().to_vec();
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<Idx> {
        Idx::decode(bytes, Some(bytes.len() as u64), "t.idx")
    }

    #[test]
    fn reads_images_and_labels_plain_and_gzipped() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).collect();
        let images = idx(0x803, &[2, 3, 4], &pixels);
        let want = Idx { kind: Kind::Images, shape: vec![2, 3, 4], data: pixels };
        assert_eq!(decode(&images).unwrap(), want);
        let gz = gzip(&images);
        assert_eq!(Idx::decode(&gz[..], Some(gz.len() as u64), "t.gz").unwrap(), want);
        let labels = idx(0x801, &[3], &[7, 0, 9]);
        let got = decode(&gzip(&labels)).unwrap();
        assert_eq!((got.kind, got.shape, got.data), (Kind::Labels, vec![3], vec![7, 0, 9]));
    }

    #[test]
    fn rejects_bad_headers_with_one_line_naming_the_file() {
        let err = |bytes: &[u8]| decode(bytes).unwrap_err().to_string();
        let cases: [(Vec<u8>, &str); 9] = [
            (vec![], "empty file"),
            (b"hello world\n".to_vec(), "looks like text"),
            (b"\x89PNG\r\n\x1a\n".to_vec(), "looks like a PNG"),
            (vec![0, 0, 8], "too short"),
            (idx(0xd03, &[1, 1, 1], &[0; 4]), "IDX f32 array of 3 dimensions"),
            (idx(0x803, &[2], &[]), "truncated header"),
            (idx(0x803, &[2, 28, 28], &[0; 100]), "truncated: header says IDX images [2, 28, 28] (1568 bytes"),
            (idx(0x801, &[2], &[1, 2, 3]), "has trailing bytes"),
            (idx(0x803, &[1, 0, 5], &[]), "size 0x5"),
        ];
        for (bytes, want) in cases {
            let e = err(&bytes);
            assert!(e.starts_with("t.idx: ") && e.contains(want) && !e.contains('\n'), "{e}");
        }
        // An absurd size in a compressed stream fails on the data actually there.
        let huge = gzip(&idx(0x803, &[1 << 20, 1 << 20, 1 << 20], &[1, 2, 3]));
        let e = Idx::decode(&huge[..], None, "t.gz").unwrap_err().to_string();
        assert!(e.contains("truncated (after gunzip)") && e.contains("holds 3"), "{e}");
        let absurd = gzip(&idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]));
        let e = Idx::decode(&absurd[..], None, "t.gz").unwrap_err().to_string();
        assert!(e.contains("absurd header (after gunzip)"), "{e}");
        let mut corrupt = gzip(&idx(0x801, &[50], &[5; 50]));
        corrupt.truncate(corrupt.len() / 2);
        let e = Idx::decode(&corrupt[..], None, "t.gz").unwrap_err().to_string();
        assert!(e.starts_with("t.gz: corrupt or truncated gzip data"), "{e}");
    }
}
