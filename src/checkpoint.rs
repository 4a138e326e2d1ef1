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

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::io::{read_tensor_file, InputPath, OutputPath, TensorFile};
use crate::models::{ModelConfig, Network, Preset};

/// Metadata key of the model configuration JSON.
pub const CONFIG_KEY: &str = "genimg.config";
/// Metadata key of the optimizer step at which the file was written.
pub const STEP_KEY: &str = "genimg.step";

/// The network a model file without configuration metadata (a plain PyTorch state dict)
/// holds: `--preset NAME`'s, or one read from a configuration file (`--unet-config FILE`).
#[derive(Debug, Clone)]
pub struct PlainConfig {
    pub config: ModelConfig,
    /// The flag that gave it, for messages (`--preset ddpm-cifar10`).
    pub flag: String,
}

impl From<Preset> for PlainConfig {
    fn from(p: Preset) -> Self {
        PlainConfig { config: p.config(), flag: format!("--preset {}", p.name()) }
    }
}

/// A loaded model file: the network's configuration and its parameters.
pub struct Checkpoint {
    pub config: ModelConfig,
    /// Whether the config is `--preset`'s, the file having none (a plain PyTorch state dict):
    /// then its image geometry is only the preset's default, and a convolutional network
    /// takes that of its input instead ([`Checkpoint::fit_preset_to`]).
    pub from_preset: bool,
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's name, for messages.
    pub origin: String,
}

impl Checkpoint {
    /// Reads a model file. A file without configuration metadata (a plain PyTorch state
    /// dict) loads when `plain` names its network; when both are present, `plain` must be
    /// of the file's family. Tensors in an older layout of the network are renamed
    /// ([`ModelConfig::upgrade_tensors`]).
    pub fn load(path: &InputPath, plain: Option<&PlainConfig>, device: &Device) -> Result<Self> {
        let map = match read_tensor_file(path, device)? {
            TensorFile::Safetensors(m) => m,
            TensorFile::Npy(_) => {
                return Err(Error::bad_input(
                    path,
                    "is an .npy array, not a checkpoint (expected a .safetensors model file)",
                ))
            }
        };
        let from_preset = !map.metadata.contains_key(CONFIG_KEY);
        let config = match (map.metadata.get(CONFIG_KEY), plain) {
            (Some(json), plain) => {
                let config = ModelConfig::from_json(json)
                    .map_err(|e| Error::bad_input(path, format!("unreadable model config in metadata: {e}")))?;
                if let Some(p) = plain.filter(|p| p.config.family() != config.family()) {
                    return Err(Error::bad_input(
                        path,
                        format!("is a {} checkpoint, but {} is a {}", config.family(), p.flag, p.config.family()),
                    ));
                }
                config
            }
            (None, Some(p)) => p.config.clone(),
            (None, None) => {
                return Err(Error::bad_input(path, format!(
                    "has no model config in its metadata (a plain PyTorch state dict?): pass --preset NAME to say which network it holds ({} tensors)",
                    map.tensors.len()
                )))
            }
        };
        config.validate().map_err(|e| Error::bad_input(path, format!("model config in metadata: {e}")))?;
        config
            .check_demands(|d| format!("config field {} = {}", d.field, d.value))
            .map_err(|e| Error::bad_input(path, e))?;
        ensure_finite(&map.tensors, &path.to_string())?;
        let tensors = config.upgrade_tensors(map.tensors)?;
        Ok(Checkpoint { config, from_preset, tensors, origin: path.to_string() })
    }

    /// With a config from `--preset`, the network fitted to inputs of geometry `input`
    /// ([`ModelConfig::fitted_to`]); a config from the file's metadata stays as trained.
    pub fn fit_preset_to(mut self, input: crate::data::Geometry) -> Result<Self> {
        if self.from_preset {
            self.config = self.config.fitted_to(input).map_err(|e| Error::bad_input(&self.origin, e.to_string()))?;
        }
        Ok(self)
    }

    /// The configuration, which must be of `N`'s family.
    pub fn config_of<N: Network>(&self) -> Result<N::Config> {
        N::config_of(self.config.clone()).ok_or_else(|| {
            Error::bad_input(&self.origin, format!("is a {} checkpoint, expected {}", self.config.family(), N::FAMILY))
        })
    }

    /// The network the file holds, which must be of `N`'s family; every tensor of the file
    /// must be one of the network's parameters and every parameter must be in the file. The
    /// network is for inference ([`crate::nn::Params::frozen`]).
    pub fn into_network<N: Network>(self, device: &Device) -> Result<N> {
        N::frozen(self.config_of::<N>()?, self.tensors, &self.origin, device)
    }
}

/// An error naming the first float tensor that holds a NaN or an infinity: a network built
/// from it would turn every input into NaN.
pub fn ensure_finite(tensors: &BTreeMap<String, Tensor>, origin: &str) -> Result<()> {
    for (name, t) in tensors.iter().filter(|(_, t)| t.dtype().is_float()) {
        let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            let kind = if v.is_nan() { "NaN" } else { "an infinity" };
            return Err(Error::bad_input(
                origin,
                format!("tensor {name} holds a non-finite value ({kind}); expected finite weights"),
            ));
        }
    }
    Ok(())
}

/// Where a tool's network comes from: `--model CHECKPOINT`, and `--preset NAME` (or
/// `--unet-config FILE`) for a file without configuration metadata.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub path: InputPath,
    pub plain: Option<PlainConfig>,
}

impl ModelSource {
    pub fn checkpoint(&self, device: &Device) -> Result<Checkpoint> {
        Checkpoint::load(&self.path, self.plain.as_ref(), device)
    }

    /// The network of family `N` the checkpoint holds.
    pub fn network<N: Network>(&self, device: &Device) -> Result<N> {
        self.checkpoint(device)?.into_network(device)
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
    fn non_finite_float_tensors_are_named_and_integer_ones_skipped() {
        let d = Device::Cpu;
        let mut tensors = BTreeMap::from([
            ("a".to_string(), Tensor::new(&[1f32, 2.0], &d).unwrap()),
            ("codes".to_string(), Tensor::new(&[7u32], &d).unwrap()),
        ]);
        assert!(ensure_finite(&tensors, "m.safetensors").is_ok());
        for (value, kind) in [(f32::NAN, "NaN"), (f32::NEG_INFINITY, "an infinity")] {
            tensors.insert("b.embed".into(), Tensor::new(&[0f32, value], &d).unwrap().to_dtype(DType::F16).unwrap());
            let e = ensure_finite(&tensors, "m.safetensors").unwrap_err().to_string();
            assert_eq!(
                e,
                format!("m.safetensors: tensor b.embed holds a non-finite value ({kind}); expected finite weights")
            );
        }
    }

    #[test]
    fn state_file_sits_beside_the_model() {
        assert_eq!(state_path(Path::new("runs/vae.safetensors")), PathBuf::from("runs/vae.state.safetensors"));
        assert_eq!(state_path(Path::new("m.bin")), PathBuf::from("m.bin.state.safetensors"));
    }
}
