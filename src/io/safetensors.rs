//! `.safetensors` files: several named tensors plus a string metadata map (where checkpoints
//! keep their configuration as JSON).

use std::collections::{BTreeMap, HashMap};

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
            let t = view.load(device).map_err(|e| {
                Error::bad_input(source, format!("tensor '{name}': {e}"))
            })?;
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
    pub fn encode(&self) -> Result<Vec<u8>> {
        let cpu: Vec<(&String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let metadata: Option<HashMap<String, String>> = (!self.metadata.is_empty())
            .then(|| self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        safetensors::serialize(cpu, metadata)
            .map_err(|e| Error::config(format!("cannot serialise tensors: {e}")))
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
