//! Opening a tensor file whose format is recognised from its first bytes, not its name:
//! `.npy` starts with `\x93NUMPY`; `.safetensors` with a little-endian u64 header length
//! followed by `{`.

use std::io::{self, Cursor, Read};

use candle_core::Device;

use super::npy::NpyReader;
use super::path::{Input, InputPath, Skip};
use super::safetensors::TensorMap;
use crate::error::{Error, Result};

/// The two tensor file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Npy,
    Safetensors,
}

/// An opened input whose first bytes have been read to recognise its format; the whole
/// stream, those bytes included, is still there to read (and to [`Skip`] through).
pub struct Peeked {
    head: Cursor<Vec<u8>>,
    rest: Input,
    /// The input's length when it is a regular file.
    pub len: Option<u64>,
}

/// Bytes that tell the formats apart: the 6 of the `.npy` magic, or a safetensors header
/// length (8) and the `{` that opens its JSON.
const HEAD_LEN: u64 = 9;

impl Peeked {
    /// Opens `input` and reads its first bytes.
    pub fn open(input: &InputPath) -> Result<Self> {
        let (mut rest, len) = input.open()?;
        let mut head = Vec::with_capacity(HEAD_LEN as usize);
        (&mut rest).take(HEAD_LEN).read_to_end(&mut head).map_err(|e| Error::io(input, e))?;
        Ok(Peeked { head: Cursor::new(head), rest, len })
    }

    pub fn is_empty(&self) -> bool {
        self.head.get_ref().is_empty()
    }

    /// The format the first bytes announce, if any.
    pub fn format(&self) -> Option<Format> {
        let head = self.head.get_ref();
        if head.starts_with(b"\x93NUMPY") {
            Some(Format::Npy)
        } else if head.len() == HEAD_LEN as usize && head[8] == b'{' {
            Some(Format::Safetensors)
        } else {
            None
        }
    }

    /// Whether the first bytes are printable text (for a hint in error messages).
    pub fn looks_like_text(&self) -> bool {
        self.head.get_ref().iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    }

    /// Bytes of the head not read yet.
    fn head_left(&self) -> u64 {
        self.head.get_ref().len() as u64 - self.head.position()
    }
}

impl Read for Peeked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_left() > 0 {
            return self.head.read(buf);
        }
        self.rest.read(buf)
    }
}

impl Skip for Peeked {
    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        let in_head = bytes.min(self.head_left());
        self.head.set_position(self.head.position() + in_head);
        self.rest.skip(bytes - in_head)
    }
}

/// An opened tensor file: `.npy` streams by rows; `.safetensors` is read whole.
pub enum TensorFile {
    Npy(NpyReader<Peeked>),
    Safetensors(TensorMap),
}

/// Opens `input` and recognises its format.
pub fn read_tensor_file(input: &InputPath, device: &Device) -> Result<TensorFile> {
    let peeked = Peeked::open(input)?;
    if peeked.is_empty() {
        return Err(Error::bad_input(input, "empty input (expected an .npy or .safetensors file)"));
    }
    let name = input.to_string();
    match peeked.format() {
        Some(Format::Npy) => {
            let len = peeked.len;
            Ok(TensorFile::Npy(NpyReader::new(peeked, len, &name)?))
        }
        Some(Format::Safetensors) => {
            let mut bytes = Vec::new();
            let mut peeked = peeked;
            peeked.read_to_end(&mut bytes).map_err(|e| Error::io(input, e))?;
            Ok(TensorFile::Safetensors(TensorMap::decode(&bytes, &name, device)?))
        }
        None => Err(Error::bad_input(
            input,
            format!(
                "not a tensor file{}: expected .npy (starting with \\x93NUMPY) or .safetensors (an 8-byte header length, then JSON)",
                if peeked.looks_like_text() { " (it looks like text)" } else { "" }
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(bytes: &[u8]) -> Peeked {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        Peeked::open(&InputPath::File(path)).unwrap()
    }

    #[test]
    fn the_first_bytes_tell_the_format_and_the_stream_stays_whole() {
        let npy = crate::io::npy::to_bytes(&[2], &[1u8, 2]);
        let mut p = peek(&npy);
        assert_eq!((p.format(), p.len), (Some(Format::Npy), Some(npy.len() as u64)));
        let mut all = Vec::new();
        p.read_to_end(&mut all).unwrap();
        assert_eq!(all, npy);
        // Skipping runs through the head into the rest.
        let mut p = peek(&npy);
        let mut first = [0u8; 3];
        p.read_exact(&mut first).unwrap();
        p.skip(10).unwrap();
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).unwrap();
        assert_eq!((&first[..], &rest[..]), (&npy[..3], &npy[13..]));
        assert_eq!(peek(b"\x02\0\0\0\0\0\0\0{}").format(), Some(Format::Safetensors));
        let text = peek(b"0 0 255\n1 2 3\n");
        assert_eq!((text.format(), text.looks_like_text()), (None, true));
        assert!(peek(b"\x93NUM").format().is_none() && peek(b"").is_empty());
    }
}
