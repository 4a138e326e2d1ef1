//! `.safetensors` files: several named tensors plus a string metadata map (where checkpoints
//! keep their configuration as JSON).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use super::path::{InputPath, OutputPath};
use crate::error::{Error, Result};

/// The contents of a `.safetensors` file.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses file contents; `source` names the file in errors.
    pub fn decode(bytes: &[u8], source: &str, device: &Device) -> Result<Self> {
        use candle_core::safetensors::Load;
        let invalid = |e: safetensors::SafeTensorError| {
            Error::bad_input(
                source,
                format!("not a valid .safetensors file ({e}); expected an 8-byte header length, a JSON header and the tensor data"),
            )
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(invalid)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(invalid)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let t = view.load(device).map_err(|e| Error::bad_input(source, format!("tensor '{name}': {e}")))?;
            tensors.insert(name, t);
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(TensorMap { tensors, metadata })
    }

    pub fn read(input: &InputPath, device: &Device) -> Result<Self> {
        let bytes = input.read_all()?;
        if bytes.is_empty() {
            return Err(Error::bad_input(input, "empty file (expected a .safetensors file)"));
        }
        Self::decode(&bytes, &input.to_string(), device)
    }

    /// Serialises to bytes (tensors are moved to the CPU first).
    ///
    /// Written here rather than by `safetensors::serialize`, which takes the metadata as a
    /// `HashMap` and so writes it in a different order in every process: the same map must
    /// always give the same bytes, or a seeded run would not repeat bit for bit. The layout
    /// is the format's: a u64 header length, a JSON header (metadata, then each tensor's
    /// dtype, shape and data offsets) padded with spaces to 8 bytes, then the data, tensors
    /// ordered by element size (largest first) and name so that each one is aligned.
    pub fn encode(&self) -> Result<Vec<u8>> {
        use safetensors::View;
        let mut cpu: Vec<(&String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        cpu.sort_by(|(ka, a), (kb, b)| b.dtype().size_in_bytes().cmp(&a.dtype().size_in_bytes()).then(ka.cmp(kb)));
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::json!(self.metadata));
        }
        let mut offset = 0;
        for (name, t) in &cpu {
            let len = t.data_len();
            header.insert(
                (*name).clone(),
                serde_json::json!({"dtype": View::dtype(t), "shape": t.dims(), "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let mut header =
            serde_json::to_vec(&header).map_err(|e| Error::config(format!("cannot serialise tensors: {e}")))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, t) in &cpu {
            out.extend_from_slice(&View::data(t));
        }
        Ok(out)
    }

    /// Writes atomically.
    pub fn write(&self, out: &OutputPath) -> Result<()> {
        out.write_all(&self.encode()?)
    }

    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(tensors: &[(&str, Vec<f32>)], metadata: &[(&str, &str)]) -> TensorMap {
        let mut m = TensorMap::new();
        for (name, v) in tensors {
            m.insert(*name, Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap());
        }
        for (k, v) in metadata {
            m.metadata.insert(k.to_string(), v.to_string());
        }
        m
    }

    /// Metadata keys are written sorted, so equal maps give equal bytes (a `HashMap`'s
    /// order differs between maps and processes), and the file reads back.
    #[test]
    fn mixed_dtypes_round_trip_aligned() {
        let d = Device::Cpu;
        let mut m = TensorMap::new();
        m.insert("a_bytes", Tensor::new(&[1u8, 2, 3], &d).unwrap());
        m.insert("b_floats", Tensor::new(&[1.5f32, -2.0], &d).unwrap());
        m.insert("c_longs", Tensor::new(&[-7i64], &d).unwrap());
        let bytes = m.encode().unwrap();
        let back = TensorMap::decode(&bytes, "t", &d).unwrap();
        assert_eq!(back.get("a_bytes").unwrap().to_vec1::<u8>().unwrap(), [1, 2, 3]);
        assert_eq!(back.get("b_floats").unwrap().to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert_eq!(back.get("c_longs").unwrap().to_vec1::<i64>().unwrap(), [-7]);
        // The widest elements come first, so every tensor starts at a multiple of its size.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let offset = |n: &str| {
            st.tensor(n).unwrap().data().as_ptr() as usize - st.tensor("c_longs").unwrap().data().as_ptr() as usize
        };
        assert_eq!((offset("c_longs"), offset("b_floats"), offset("a_bytes")), (0, 8, 16));
    }

    #[test]
    fn encodes_metadata_sorted_and_reads_back() {
        let meta: Vec<(String, String)> = (0..12).map(|i| (format!("k{:02}", 11 - i), format!("v\"{i}"))).collect();
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for tensors in [vec![("b", vec![1.0, 2.0]), ("a", vec![3.0])], vec![]] {
            let m = map(&tensors, &meta);
            let bytes = m.encode().unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            assert_eq!(n % 8, 0);
            let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
            let sorted = serde_json::to_string(&m.metadata).unwrap();
            assert!(header.starts_with(&format!("{{\"__metadata__\":{sorted}")), "{header}");
            let back = TensorMap::decode(&bytes, "t", &Device::Cpu).unwrap();
            assert_eq!(back.metadata, m.metadata);
            assert_eq!(back.names(), m.names());
            for (name, t) in &m.tensors {
                assert_eq!(back.get(name).unwrap().to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
            }
        }
        let plain = map(&[("x", vec![1.0])], &[]);
        assert!(TensorMap::decode(&plain.encode().unwrap(), "t", &Device::Cpu).unwrap().metadata.is_empty());
    }
}
