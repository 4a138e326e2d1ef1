//! The model families, their named presets, and the one way a configuration and its
//! parameters become a network.
//!
//! A family (VAE MLP, convolutional VAE, VIB MLP, convolutional classifier, VQ-VAE-2, PixelCNN prior, diffusion U-Net) is one network
//! type with one configuration type; a preset is a named value of that configuration, as
//! candle-transformers' `StableDiffusionConfig::v1_5()` and `v2_1()` are presets of one
//! family. Checkpoints store the configuration as JSON tagged with the family's name
//! ([`ModelConfig`]), so a file alone rebuilds its network: [`Network::init_with`] builds it
//! over loaded parameters, as burn's `config.init_with(record)` does, and
//! [`crate::checkpoint::Checkpoint::into_network`] is the loader every inference tool uses.
//! The network specifications each family follows are in `docs/models.md`.

pub mod classifier;
pub mod clf_conv;
pub mod ddpm;
pub mod ddpm_compat;
pub mod inception;
pub mod latent;
pub mod pixelcnn;
pub mod quantize;
pub mod vae;
pub mod vae_conv;
pub mod vib;
pub mod vqvae2;

use std::collections::BTreeMap;
use std::fmt;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::nn::{ParamSet, Params};

/// A model family: one network type and its configuration type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    VaeMlp,
    VaeConv,
    VibMlp,
    ClfConv,
    VqVae2,
    PixelCnnPrior,
    DdpmUnet,
}

impl Family {
    /// The name checkpoints store (the `model` tag of the config JSON).
    pub fn name(self) -> &'static str {
        match self {
            Family::VaeMlp => "vae-mlp",
            Family::VaeConv => "vae-conv",
            Family::VibMlp => "vib-mlp",
            Family::ClfConv => "clf-conv",
            Family::VqVae2 => "vqvae2",
            Family::PixelCnnPrior => "pixelcnn-prior",
            Family::DdpmUnet => "ddpm-unet",
        }
    }

    /// Adam's learning rate and the batch size a family trains with unless told otherwise.
    pub fn train_defaults(self) -> (f64, usize) {
        match self {
            Family::VaeMlp => (1e-3, 128),
            // The reference's CelebA settings.
            Family::VaeConv => (5e-3, 64),
            Family::VibMlp => (1e-4, 100),
            Family::ClfConv => (1e-3, 128),
            Family::VqVae2 => (3e-4, 128),
            Family::DdpmUnet => (2e-4, 128),
            Family::PixelCnnPrior => (3e-4, 128),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The named presets every tool offers (`--preset NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The PyTorch VAE example, on 28x28 digits or any images it flattens (family vae-mlp).
    #[value(name = "vae-mlp")]
    VaeMlp,
    /// PyTorch-VAE's VanillaVAE on 3x64x64 colour images (family vae-conv).
    #[value(name = "vae-conv")]
    VaeConv,
    /// Deep VIB's MLP classifier, on 28x28 digits or any labelled images (family vib-mlp).
    #[value(name = "vib-mlp")]
    VibMlp,
    /// A LeNet-style convolutional classifier of any labelled images, to score samples (family clf-conv).
    #[value(name = "clf-conv")]
    ClfConv,
    /// VQ-VAE-2: rosinality/vq-vae-2-pytorch's `VQVAE()` defaults, colour, any multiple of 8 px (family vqvae2).
    #[value(name = "vqvae2")]
    Vqvae2,
    /// The same VQ-VAE-2 on 1x32x32 digits (family vqvae2).
    #[value(name = "vqvae2-mnist")]
    Vqvae2Mnist,
    /// The Gated PixelCNN prior over codes (family pixelcnn-prior).
    #[value(name = "pixelcnn-prior")]
    PixelcnnPrior,
    /// The small noise-prediction U-Net, 1x32x32 digits or the data's geometry (family ddpm-unet).
    #[value(name = "ddpm-unet-mnist")]
    DdpmUnetMnist,
    /// diffusers' UNet2DModel of google/ddpm-cifar10-32, 3x32x32 or the data's geometry (family ddpm-unet).
    #[value(name = "ddpm-cifar10")]
    DdpmCifar10,
}

impl Preset {
    /// The preset's configuration.
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::VaeMlp => ModelConfig::Vae(vae::VaeConfig::vae_mlp()),
            Preset::VaeConv => ModelConfig::VaeConv(vae_conv::VaeConvConfig::vae_conv()),
            Preset::VibMlp => ModelConfig::Vib(vib::VibConfig::vib_mlp()),
            Preset::ClfConv => ModelConfig::ClfConv(clf_conv::ClfConvConfig::clf_conv()),
            Preset::Vqvae2 => ModelConfig::VqVae2(vqvae2::VqVae2Config::vqvae2()),
            Preset::Vqvae2Mnist => ModelConfig::VqVae2(vqvae2::VqVae2Config::vqvae2_mnist()),
            Preset::PixelcnnPrior => ModelConfig::PixelCnn(pixelcnn::PixelCnnConfig::pixelcnn_prior()),
            Preset::DdpmUnetMnist => ModelConfig::Ddpm(ddpm::DdpmConfig::ddpm_unet_mnist()),
            Preset::DdpmCifar10 => ModelConfig::Ddpm(ddpm::DdpmConfig::ddpm_cifar10()),
        }
    }

    pub fn family(self) -> Family {
        self.config().family()
    }

    /// The name `--preset` takes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::VaeMlp => "vae-mlp",
            Preset::VaeConv => "vae-conv",
            Preset::VibMlp => "vib-mlp",
            Preset::ClfConv => "clf-conv",
            Preset::Vqvae2 => "vqvae2",
            Preset::Vqvae2Mnist => "vqvae2-mnist",
            Preset::PixelcnnPrior => "pixelcnn-prior",
            Preset::DdpmUnetMnist => "ddpm-unet-mnist",
            Preset::DdpmCifar10 => "ddpm-cifar10",
        }
    }

    /// The preset called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        use clap::ValueEnum;
        Self::from_str(name, false).map_err(|_| {
            let names: Vec<_> = Self::value_variants().iter().map(|p| p.name()).collect();
            Error::config(format!("unknown preset '{name}' (expected one of: {})", names.join(", ")))
        })
    }

    /// An error unless the preset is of one of `families` (the ones a tool trains or runs).
    pub fn expect(self, tool: &str, families: &[Family]) -> Result<Self> {
        if families.contains(&self.family()) {
            return Ok(self);
        }
        let names: Vec<_> = families.iter().map(|f| f.name()).collect();
        Err(Error::config(format!(
            "{tool} takes a network of family {}; --preset {} is a {}",
            names.join(" or "),
            self.name(),
            self.family()
        )))
    }
}

/// A network's full configuration; the JSON form, tagged with the family's name, is what
/// checkpoints store. Files written before the families had their own names (tagged with
/// the MNIST preset names) still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model")]
pub enum ModelConfig {
    #[serde(rename = "vae-mlp")]
    Vae(vae::VaeConfig),
    #[serde(rename = "vae-conv")]
    VaeConv(vae_conv::VaeConvConfig),
    #[serde(rename = "vib-mlp")]
    Vib(vib::VibConfig),
    #[serde(rename = "clf-conv")]
    ClfConv(clf_conv::ClfConvConfig),
    #[serde(rename = "vqvae2", alias = "vqvae2-mnist")]
    VqVae2(vqvae2::VqVae2Config),
    #[serde(rename = "pixelcnn-prior")]
    PixelCnn(pixelcnn::PixelCnnConfig),
    #[serde(rename = "ddpm-unet", alias = "ddpm-unet-mnist")]
    Ddpm(ddpm::DdpmConfig),
}

impl ModelConfig {
    pub fn family(&self) -> Family {
        match self {
            ModelConfig::Vae(_) => Family::VaeMlp,
            ModelConfig::VaeConv(_) => Family::VaeConv,
            ModelConfig::Vib(_) => Family::VibMlp,
            ModelConfig::ClfConv(_) => Family::ClfConv,
            ModelConfig::VqVae2(_) => Family::VqVae2,
            ModelConfig::PixelCnn(_) => Family::PixelCnnPrior,
            ModelConfig::Ddpm(_) => Family::DdpmUnet,
        }
    }

    /// The image size the network takes; an error for a prior, which takes codes.
    pub fn geometry(&self) -> Result<Geometry> {
        match self {
            ModelConfig::Vae(c) => Ok(c.geometry()),
            ModelConfig::VaeConv(c) => Ok(c.geometry()),
            ModelConfig::Vib(c) => Ok(c.geometry()),
            ModelConfig::ClfConv(c) => Ok(c.geometry()),
            ModelConfig::VqVae2(c) => Ok(c.geometry()),
            ModelConfig::Ddpm(c) => Ok(c.geometry()),
            ModelConfig::PixelCnn(c) => {
                Err(Error::config(format!("pixelcnn-prior models {}x{} code maps, not images", c.height, c.width)))
            }
        }
    }

    /// The configuration for training on images of geometry `data`: the images' channels and
    /// size ([`Geometry::fitted_to`] the configuration's own: 28x28 digits stay 32x32 for a
    /// `-mnist` preset), checked against what the network can take. An error for a prior.
    pub fn fitted_to(self, data: Geometry) -> Result<Self> {
        let fitted = data.fitted_to(self.geometry()?);
        let config = match self {
            ModelConfig::Vae(c) => ModelConfig::Vae(vae::VaeConfig { image: fitted, ..c }),
            ModelConfig::Vib(c) => ModelConfig::Vib(vib::VibConfig { image: fitted, ..c }),
            // Global pooling takes any size: the classifier keeps the data's.
            ModelConfig::ClfConv(c) => ModelConfig::ClfConv(clf_conv::ClfConvConfig { image: data, ..c }),
            ModelConfig::VaeConv(c) => ModelConfig::VaeConv(c.with_geometry(fitted)?),
            ModelConfig::VqVae2(c) => ModelConfig::VqVae2(vqvae2::VqVae2Config { image: fitted, ..c }),
            ModelConfig::Ddpm(c) => ModelConfig::Ddpm(ddpm::DdpmConfig { image: fitted, ..c }),
            ModelConfig::PixelCnn(_) => unreachable!("geometry() refused a prior"),
        };
        config.validate()?;
        config.check_fresh("the training images")?;
        Ok(config)
    }

    /// An error naming the first field out of range, for the families whose fields have
    /// ranges beyond their parameters' shapes.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Vae(c) => c.validate(),
            ModelConfig::VaeConv(c) => c.validate(),
            ModelConfig::PixelCnn(c) => c.validate(),
            ModelConfig::Ddpm(c) => c.validate(),
            ModelConfig::Vib(c) => c.validate(),
            ModelConfig::ClfConv(c) => c.validate(),
            ModelConfig::VqVae2(c) => c.validate(),
        }
    }

    /// Each size the configuration implies beyond its parameters' shapes (which a
    /// checkpoint's tensors bound): one image's or code map's activations, the schedule.
    pub fn demands(&self) -> Vec<Demand> {
        match self {
            // Their image size is the first layer's width, a parameter shape.
            ModelConfig::Vae(_) | ModelConfig::Vib(_) => Vec::new(),
            ModelConfig::VaeConv(c) => c.demands(),
            ModelConfig::ClfConv(c) => c.demands(),
            ModelConfig::VqVae2(c) => c.demands(),
            ModelConfig::PixelCnn(c) => c.demands(),
            ModelConfig::Ddpm(c) => c.demands(),
        }
    }

    /// An error message naming the first field whose demand would not fit in the
    /// machine's memory; `field` writes a field's name and value (`config field x = 3`, `--x 3`).
    pub fn check_demands(&self, field: impl Fn(&Demand) -> String) -> std::result::Result<(), String> {
        self.demands().iter().try_for_each(|d| crate::memory::ensure_fits(format!("{}: {}", field(d), d.what), d.bytes))
    }

    /// Checks a fresh network's sizes before anything is allocated: its demands, and its
    /// parameters counted by a dry run ([`Params::plan`]). `flags` names what set them.
    pub fn check_fresh(&self, flags: &str) -> Result<()> {
        let in_flags = |d: &Demand| format!("--{} {}", d.field.replace('_', "-"), d.value);
        self.check_demands(in_flags).map_err(Error::config)?;
        let mut plan = Params::plan();
        let built = match self.clone() {
            ModelConfig::Vae(c) => vae::Vae::new(c, &mut plan).map(drop),
            ModelConfig::VaeConv(c) => vae_conv::VaeConv::new(c, &mut plan).map(drop),
            ModelConfig::Vib(c) => vib::Vib::new(c, &mut plan).map(drop),
            ModelConfig::ClfConv(c) => clf_conv::ClfConv::new(c, &mut plan).map(drop),
            ModelConfig::VqVae2(c) => vqvae2::VqVae2::new(c, &mut plan).map(drop),
            ModelConfig::PixelCnn(c) => pixelcnn::PixelCnn::new(c, &mut plan).map(drop),
            ModelConfig::Ddpm(c) => ddpm::UNet::new(c, &mut plan).map(drop),
        };
        built.map_err(|e| Error::config(format!("{flags}: {e}")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("configs serialise")
    }

    /// The configuration a checkpoint's JSON describes. Files written before image geometry
    /// was part of every configuration say it their own way: vae-mlp and vib-mlp by a square
    /// one-channel `input` size, vqvae2 by `in_channel` and a square `image_size`, ddpm-unet by
    /// `in_channels` and `image_size`; those are read as the `image` they mean. ddpm-unet
    /// files written before it followed diffusers are read by [`ddpm_compat::upgrade_config`].
    pub fn from_json(s: &str) -> std::result::Result<Self, String> {
        let mut value: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if let Some(fields) = value.as_object_mut() {
            upgrade_geometry(fields)?;
            if matches!(fields.get("model").and_then(|m| m.as_str()), Some("ddpm-unet" | "ddpm-unet-mnist")) {
                ddpm_compat::upgrade_config(fields)?;
            }
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// A state dict under the names this configuration's network asks for: older layouts
    /// of the same network renamed ([`ddpm_compat::upgrade_tensors`] for the U-Net).
    pub fn upgrade_tensors(&self, tensors: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        match self {
            ModelConfig::Ddpm(c) => Ok(ddpm_compat::upgrade_tensors(c, tensors)?),
            _ => Ok(tensors),
        }
    }
}

/// Replaces the image geometry fields of configurations written before `image` existed.
fn upgrade_geometry(fields: &mut serde_json::Map<String, serde_json::Value>) -> std::result::Result<(), String> {
    if fields.contains_key("image") {
        return Ok(());
    }
    let sized = fields.contains_key("image_size");
    let mut take = |name: &str| fields.remove(name).and_then(|v| v.as_u64()).map(|v| v as usize);
    let (channels, side) = if let Some(input) = take("input") {
        let side = input.isqrt();
        if side * side != input {
            return Err(format!("input size {input} is not a square one-channel image"));
        }
        (1, side)
    } else if sized {
        match (take("in_channel").or_else(|| take("in_channels")), take("image_size")) {
            (Some(c), Some(s)) => (c, s),
            _ => return Ok(()),
        }
    } else {
        return Ok(());
    };
    let image = Geometry { channels, height: side, width: side };
    fields.insert("image".into(), serde_json::to_value(image).expect("geometry serialises"));
    Ok(())
}

/// A size a configuration implies: the field that sets it, its value, what it sizes and the
/// bytes that takes (`None`: more than can be counted).
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub field: &'static str,
    pub value: usize,
    pub what: &'static str,
    pub bytes: Option<u128>,
}

/// A network of one family, built from its configuration over parameters: fresh ones drawn
/// from a seed ([`Params::init`]) for training, or a checkpoint's ([`Params::load`]).
pub trait Network: Sized {
    type Config;
    const FAMILY: Family;

    /// The family's configuration inside `config`, or `None` for another family's.
    fn config_of(config: ModelConfig) -> Option<Self::Config>;

    /// The network of `config`, taking each parameter from `params` by its PyTorch name.
    fn init_with(config: Self::Config, params: &mut Params) -> Result<Self>;

    /// An inference copy of a network being trained, over the current values of its
    /// parameters `trained` (shared, not copied), that records no backward graph: what
    /// held-out evaluation runs, so that it needs no more memory than inference does.
    fn frozen_copy(config: Self::Config, trained: &ParamSet) -> Result<Self> {
        Self::frozen(config, trained.detached(), "the weights in training", &trained.device())
    }

    /// The network of `config` for inference ([`Params::frozen`]) over `tensors`, which must
    /// hold every parameter and nothing else; `origin` names them in errors.
    fn frozen(config: Self::Config, tensors: BTreeMap<String, Tensor>, origin: &str, device: &Device) -> Result<Self> {
        let mut params = Params::frozen(tensors, origin, device);
        let network = Self::init_with(config, &mut params)?;
        params.finish()?;
        Ok(network)
    }
}

/// One [`Network`] impl per family: the variant holding its config and its constructor.
macro_rules! network {
    ($net:ty, $config:ty, $family:ident, $variant:ident) => {
        impl Network for $net {
            type Config = $config;
            const FAMILY: Family = Family::$family;

            fn config_of(config: ModelConfig) -> Option<$config> {
                match config {
                    ModelConfig::$variant(c) => Some(c),
                    _ => None,
                }
            }

            fn init_with(config: $config, params: &mut Params) -> Result<Self> {
                <$net>::new(config, params)
            }
        }
    };
}

network!(vae::Vae, vae::VaeConfig, VaeMlp, Vae);
network!(vae_conv::VaeConv, vae_conv::VaeConvConfig, VaeConv, VaeConv);
network!(vib::Vib, vib::VibConfig, VibMlp, Vib);
network!(clf_conv::ClfConv, clf_conv::ClfConvConfig, ClfConv, ClfConv);
network!(vqvae2::VqVae2, vqvae2::VqVae2Config, VqVae2, VqVae2);
network!(pixelcnn::PixelCnn, pixelcnn::PixelCnnConfig, PixelCnnPrior, PixelCnn);
network!(ddpm::UNet, ddpm::DdpmConfig, DdpmUnet, Ddpm);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_preset_round_trips_through_its_name_and_json() {
        for &p in Preset::value_variants() {
            assert_eq!(Preset::from_name(p.name()).unwrap(), p);
            assert_eq!(p.to_possible_value().unwrap().get_name(), p.name());
            let config = p.config();
            assert_eq!(ModelConfig::from_json(&config.to_json()).unwrap(), config);
            assert!(config.to_json().contains(&format!("\"model\":\"{}\"", p.family())));
        }
        assert!(Preset::from_name("vqvae3").unwrap_err().to_string().contains("vqvae2-mnist"));
    }

    #[test]
    fn configs_tagged_with_the_old_preset_names_still_load() {
        let mut json = Preset::Vqvae2Mnist.config().to_json();
        json = json.replace("\"vqvae2\"", "\"vqvae2-mnist\"");
        assert_eq!(ModelConfig::from_json(&json).unwrap(), Preset::Vqvae2Mnist.config());
        let json = Preset::DdpmUnetMnist.config().to_json().replace("\"ddpm-unet\"", "\"ddpm-unet-mnist\"");
        assert_eq!(ModelConfig::from_json(&json).unwrap().family(), Family::DdpmUnet);
    }

    #[test]
    fn configs_written_before_image_geometry_still_load() {
        use serde_json::json;
        let legacy = |preset: Preset, fields: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(&preset.config().to_json()).unwrap();
            let map = v.as_object_mut().unwrap();
            map.remove("image");
            map.extend(fields.as_object().unwrap().clone());
            ModelConfig::from_json(&v.to_string())
        };
        assert_eq!(legacy(Preset::VaeMlp, json!({"input": 784})).unwrap(), Preset::VaeMlp.config());
        assert_eq!(legacy(Preset::VibMlp, json!({"input": 784})).unwrap(), Preset::VibMlp.config());
        let vq = json!({"in_channel": 1, "image_size": 32});
        assert_eq!(legacy(Preset::Vqvae2Mnist, vq).unwrap(), Preset::Vqvae2Mnist.config());
        let unet = json!({"in_channels": 1, "image_size": 32});
        assert_eq!(legacy(Preset::DdpmUnetMnist, unet).unwrap(), Preset::DdpmUnetMnist.config());
        assert!(legacy(Preset::VaeMlp, json!({"input": 785})).unwrap_err().contains("not a square"));
    }

    #[test]
    fn training_fits_a_preset_to_the_geometry_of_its_data() {
        let g = |channels, height, width| Geometry { channels, height, width };
        let fit = |p: Preset, data| p.config().fitted_to(data).map(|c| c.geometry().unwrap());
        // Digits are padded to the 32x32 of the -mnist presets, and stay 28x28 for the MLPs.
        assert_eq!(fit(Preset::Vqvae2Mnist, Geometry::MNIST).unwrap(), g(1, 32, 32));
        assert_eq!(fit(Preset::DdpmUnetMnist, Geometry::MNIST).unwrap(), g(1, 32, 32));
        assert_eq!(fit(Preset::VaeMlp, Geometry::MNIST).unwrap(), Geometry::MNIST);
        // Other sizes are the data's, in colour too, when the strides take them.
        assert_eq!(fit(Preset::Vqvae2, g(3, 64, 64)).unwrap(), g(3, 64, 64));
        assert_eq!(fit(Preset::Vqvae2Mnist, g(3, 64, 96)).unwrap(), g(3, 64, 96));
        assert_eq!(fit(Preset::VibMlp, g(3, 64, 64)).unwrap(), g(3, 64, 64));
        assert_eq!(fit(Preset::ClfConv, g(3, 32, 32)).unwrap(), g(3, 32, 32));
        assert!(fit(Preset::ClfConv, g(1, 3, 3)).is_err());
        assert_eq!(fit(Preset::DdpmUnetMnist, g(3, 64, 64)).unwrap(), g(3, 64, 64));
        assert_eq!(fit(Preset::DdpmCifar10, Geometry::MNIST).unwrap(), g(1, 32, 32));
        assert_eq!(fit(Preset::DdpmCifar10, g(3, 64, 96)).unwrap(), g(3, 64, 96));
        assert!(fit(Preset::DdpmCifar10, g(3, 100, 100)).is_err());
        let e = fit(Preset::Vqvae2, g(3, 100, 100)).unwrap_err().to_string();
        assert!(e.contains("multiples of 8; these are 100x100"), "{e}");
        assert!(fit(Preset::DdpmUnetMnist, g(1, 30, 30)).is_ok_and(|g| g.height == 32));
        assert!(fit(Preset::DdpmUnetMnist, g(1, 42, 42)).is_err());
        assert!(fit(Preset::PixelcnnPrior, g(1, 8, 8)).is_err());
    }

    #[test]
    fn a_preset_of_another_family_is_refused_with_both_names() {
        let e = Preset::VaeMlp.expect("ddpm-train", &[Family::DdpmUnet]).unwrap_err().to_string();
        assert!(e.contains("ddpm-train") && e.contains("ddpm-unet") && e.contains("vae-mlp"), "{e}");
        assert_eq!(Preset::DdpmUnetMnist.expect("ddpm-train", &[Family::DdpmUnet]).unwrap(), Preset::DdpmUnetMnist);
    }
}
