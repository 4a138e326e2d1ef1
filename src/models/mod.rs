//! The reference networks (specified in docs/models.md), their presets, and the
//! configuration stored as JSON in each checkpoint's metadata.

pub mod ddpm;
pub mod pixelcnn;
pub mod quantize;
pub mod vae;
pub mod vib;
pub mod vqvae2;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A network's full configuration; the JSON form is what checkpoints store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model")]
pub enum ModelConfig {
    #[serde(rename = "vae-mlp")]
    Vae(vae::VaeConfig),
    #[serde(rename = "vib-mlp")]
    Vib(vib::VibConfig),
    #[serde(rename = "vqvae2-mnist")]
    VqVae2(vqvae2::VqVae2Config),
    #[serde(rename = "pixelcnn-prior")]
    PixelCnn(pixelcnn::PixelCnnConfig),
    #[serde(rename = "ddpm-unet-mnist")]
    Ddpm(ddpm::DdpmConfig),
}

/// The presets every tool offers, by name.
pub const PRESETS: &[&str] = &["vae-mlp", "vib-mlp", "vqvae2-mnist", "pixelcnn-prior", "ddpm-unet-mnist"];

impl ModelConfig {
    /// The named preset's configuration.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vae-mlp" => Ok(ModelConfig::Vae(vae::VaeConfig::default())),
            "vib-mlp" => Ok(ModelConfig::Vib(vib::VibConfig::default())),
            "vqvae2-mnist" => Ok(ModelConfig::VqVae2(vqvae2::VqVae2Config::default())),
            "ddpm-unet-mnist" => Ok(ModelConfig::Ddpm(ddpm::DdpmConfig::default())),
            "pixelcnn-prior" => Ok(ModelConfig::PixelCnn(pixelcnn::PixelCnnConfig::default())),
            _ => Err(Error::config(format!("unknown preset '{name}' (expected one of: {})", PRESETS.join(", ")))),
        }
    }

    /// The model's name, as in MODELS.md.
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Vae(_) => "vae-mlp",
            ModelConfig::Vib(_) => "vib-mlp",
            ModelConfig::VqVae2(_) => "vqvae2-mnist",
            ModelConfig::Ddpm(_) => "ddpm-unet-mnist",
            ModelConfig::PixelCnn(_) => "pixelcnn-prior",
        }
    }

    /// The preset's Adam learning rate and batch size.
    pub fn train_defaults(&self) -> (f64, usize) {
        match self {
            ModelConfig::Vae(_) => (1e-3, 128),
            ModelConfig::Vib(_) => (1e-4, 100),
            ModelConfig::VqVae2(_) => (3e-4, 128),
            ModelConfig::Ddpm(_) => (2e-4, 128),
            ModelConfig::PixelCnn(_) => (3e-4, 128),
        }
    }

    /// The image size the network takes; an error for a prior, which takes codes.
    pub fn geometry(&self) -> Result<crate::data::Geometry> {
        match self {
            ModelConfig::Vae(c) => c.geometry(),
            ModelConfig::Vib(c) => c.geometry(),
            ModelConfig::VqVae2(c) => Ok(c.geometry()),
            ModelConfig::Ddpm(c) => Ok(c.geometry()),
            ModelConfig::PixelCnn(c) => {
                Err(Error::config(format!("pixelcnn-prior models {}x{} code maps, not images", c.height, c.width)))
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("configs serialise")
    }

    pub fn from_json(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }
}
