//! Checkpoints. A training run keeps two files:
//!
//! - the model file (`-o model.safetensors`): exactly the PyTorch state dict of the network
//!   (so `load_state_dict` takes it, strictly) with the configuration as JSON in the
//!   safetensors metadata, so the file alone rebuilds the network;
//! - the training state beside it (`model.state.safetensors`): raw weights, Adam's moments,
//!   the step and the run's settings, everything `--resume` needs to continue exactly.
//!
//! Both are written atomically (temporary file, then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::io::{read_tensor_file, InputPath, OutputPath, TensorFile};
use crate::models::ModelConfig;

/// Metadata key of the model configuration JSON.
pub const CONFIG_KEY: &str = "genimg.config";
/// Metadata key of the optimizer step at which the file was written.
pub const STEP_KEY: &str = "genimg.step";

/// A loaded model file.
pub struct Checkpoint {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
    /// The file's name, for messages.
    pub origin: String,
}

impl Checkpoint {
    /// Reads a model file. A file without configuration metadata (a plain PyTorch state
    /// dict) loads when `preset` names its network; when both are present they must agree.
    pub fn load(path: &InputPath, preset: Option<&str>, device: &Device) -> Result<Self> {
        let map = match read_tensor_file(path, device)? {
            TensorFile::Safetensors(m) => m,
            TensorFile::Npy(_) => {
                return Err(Error::bad_input(
                    path,
                    "is an .npy array, not a checkpoint (expected a .safetensors model file)",
                ))
            }
        };
        let config = match (map.metadata.get(CONFIG_KEY), preset) {
            (Some(json), preset) => {
                let config = ModelConfig::from_json(json)
                    .map_err(|e| Error::bad_input(path, format!("unreadable model config in metadata: {e}")))?;
                if let Some(p) = preset {
                    if ModelConfig::preset(p)?.name() != config.name() {
                        return Err(Error::bad_input(path, format!("is a {} checkpoint, but --preset {p} was given", config.name())));
                    }
                }
                config
            }
            (None, Some(p)) => ModelConfig::preset(p)?,
            (None, None) => {
                return Err(Error::bad_input(path, format!(
                    "has no model config in its metadata (a plain PyTorch state dict?): pass --preset NAME to say which network it holds ({} tensors)",
                    map.tensors.len()
                )))
            }
        };
        Ok(Checkpoint { config, tensors: map.tensors, metadata: map.metadata, origin: path.to_string() })
    }

    /// An error unless the checkpoint holds a network of kind `want`.
    pub fn expect(&self, want: &[&str]) -> Result<()> {
        if want.contains(&self.config.name()) {
            Ok(())
        } else {
            Err(Error::bad_input(
                &self.origin,
                format!("is a {} checkpoint, expected {}", self.config.name(), want.join(" or ")),
            ))
        }
    }
}

/// Writes a model file: `tensors` plus the config and `extra` metadata.
pub fn save_model(out: &OutputPath, config: &ModelConfig, tensors: TensorMap, extra: &[(&str, String)]) -> Result<()> {
    let mut map = tensors;
    map.metadata.insert(CONFIG_KEY.into(), config.to_json());
    map.metadata.insert("genimg.version".into(), env!("CARGO_PKG_VERSION").into());
    for (k, v) in extra {
        map.metadata.insert((*k).into(), v.clone());
    }
    map.write(out)
}

/// The training-state file kept beside a model file: `x.safetensors` -> `x.state.safetensors`.
pub fn state_path(model: &Path) -> PathBuf {
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    model.with_file_name(format!("{stem}.state.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_sits_beside_the_model() {
        assert_eq!(state_path(Path::new("runs/vae.safetensors")), PathBuf::from("runs/vae.state.safetensors"));
        assert_eq!(state_path(Path::new("m.bin")), PathBuf::from("m.bin.state.safetensors"));
    }
}
