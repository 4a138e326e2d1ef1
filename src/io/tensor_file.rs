//! Opening a tensor file whose format is recognised from its first bytes, not its name:
//! `.npy` starts with `\x93NUMPY`; `.safetensors` with a little-endian u64 header length
//! followed by `{`.

use std::io::{Cursor, Read};

use candle_core::{Device, Tensor};

use super::npy::{Array, Elements, NpyReader};
use super::path::InputPath;
use super::safetensors::TensorMap;
use crate::error::{Error, Result};

/// An opened tensor file: `.npy` streams by rows; `.safetensors` is read whole.
pub enum TensorFile {
    Npy(NpyReader<Box<dyn Read>>),
    Safetensors(TensorMap),
}

/// Opens `input` and recognises its format.
pub fn read_tensor_file(input: &InputPath, device: &Device) -> Result<TensorFile> {
    let (mut reader, len) = input.open()?;
    let mut head = Vec::with_capacity(9);
    (&mut reader).take(9).read_to_end(&mut head).map_err(|e| Error::io(input, e))?;
    if head.is_empty() {
        return Err(Error::bad_input(input, "empty input (expected an .npy or .safetensors file)"));
    }
    let name = input.to_string();
    if head.starts_with(b"\x93NUMPY") {
        let chained: Box<dyn Read> = Box::new(Cursor::new(head).chain(reader));
        return Ok(TensorFile::Npy(NpyReader::new(chained, len, &name)?));
    }
    if head.len() == 9 && head[8] == b'{' {
        let mut bytes = head;
        reader.read_to_end(&mut bytes).map_err(|e| Error::io(input, e))?;
        return Ok(TensorFile::Safetensors(TensorMap::decode(&bytes, &name, device)?));
    }
    let looks_like_text = head.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    Err(Error::bad_input(
        input,
        format!(
            "not a tensor file{}: expected .npy (starting with \\x93NUMPY) or .safetensors (an 8-byte header length, then JSON)",
            if looks_like_text { " (it looks like text)" } else { "" }
        ),
    ))
}

impl Array {
    /// Converts to a tensor on `device`, widening u16 to u32 (candle has no u16).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let shape = self.shape.as_slice();
        let t = match &self.data {
            Elements::U8(v) => Tensor::from_slice(v, shape, device)?,
            Elements::U16(v) => {
                let w: Vec<u32> = v.iter().map(|&x| x as u32).collect();
                Tensor::from_vec(w, shape, device)?
            }
            Elements::I32(v) => Tensor::from_slice(v, shape, device)?,
            Elements::I64(v) => Tensor::from_slice(v, shape, device)?,
            Elements::F32(v) => Tensor::from_slice(v, shape, device)?,
            Elements::F64(v) => Tensor::from_slice(v, shape, device)?,
        };
        Ok(t)
    }
}
