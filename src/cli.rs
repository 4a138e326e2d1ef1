//! What every tool shares: the flag groups (written once, so names and help match across
//! tools), device selection, and `main`'s error handling and exit codes.
//!
//! Exit codes: 0 on success (also when a downstream pipe closes), 1 on an error (one line on
//! stderr: `tool: what went wrong`), 2 on a usage error (clap's), 130 when interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use candle_core::Device;
use clap::Args;

use crate::checkpoint::{ModelSource, PlainConfig};
use crate::data::{DataSpec, PixelRange, Shard, Split};
use crate::error::Error;
use crate::io::{InputPath, OutputPath};
use crate::models::{Family, ModelConfig, Preset};
use crate::tools::train::ImageTraining;
use crate::tools::ImageSource;
use crate::train::{LrSchedule, Recipe, TrainOptions};

/// Runs a tool's body and turns its result into an exit code.
pub fn run(tool: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    configure_threads();
    handle_signals();
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::Interrupted)) => ExitCode::from(130),
        Err(e) => {
            eprintln!("{tool}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes signals end a tool without leaving a temporary file behind.
///
/// SIGINT, SIGTERM and SIGHUP: a training run saves and stops at its next step
/// ([`crate::train::save_on_interrupt`]); any other tool removes the temporary files of its
/// outputs and exits with status 130. SIGXFSZ (a write past `ulimit -f`) is ignored, so the
/// write fails with EFBIG and the tool reports it and removes the file, instead of being
/// killed with its temporary file left behind.
pub fn handle_signals() {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code in the handler.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // Fails only when a handler is already set (a second call); the first one stays.
    let _ = ctrlc::set_handler(|| {
        if !crate::train::interrupt() {
            crate::io::remove_temporaries();
            std::process::exit(130);
        }
    });
}

/// Keeps candle's second thread pool out of the way unless the user sized it.
///
/// Matrix products (candle's and ours) and the fused ops run on rayon's pool, one thread per
/// core. candle also keeps a pool for elementwise ops whose idle workers spin before parking;
/// on a small machine they take the cores the matrix products need (measured here on 2 cores:
/// a training step ran 10-75 % slower with it). With `CANDLE_NUM_THREADS=1` it has no workers
/// and elementwise ops run on the calling thread. Call before any tensor op.
///
/// Also keeps freed memory in the allocator: mimalloc returns it to the OS 10 ms after a free
/// by default, so each training step's multi-megabyte buffers came back as fresh pages the
/// kernel had to fault in and zero (11 % of a vib-mlp step; vae-mlp ran 20 % faster without;
/// 15 % of a ddpm-unet-mnist step went to zeroing pages). mimalloc reads its environment when
/// it starts, before `main`, so the option is also set through its API.
pub fn configure_threads() {
    for (var, value) in [("CANDLE_NUM_THREADS", "1"), ("MIMALLOC_PURGE_DELAY", "-1")] {
        if std::env::var_os(var).is_none() {
            // Safe here: called first thing in main, before any thread exists.
            std::env::set_var(var, value);
            if var == "MIMALLOC_PURGE_DELAY" {
                // SAFETY: mi_option_set only stores the value; the option id is that of the
                // mimalloc (v3) that libmimalloc-sys links.
                unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
            }
        }
    }
}

/// `mi_option_purge_delay` in the `mi_option_t` of mimalloc v3 as libmimalloc-sys 0.1.49
/// bundles it (`c_src/mimalloc/v3/include/mimalloc.h`). The crate names only some options as
/// constants, and not this one.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<Error>().is_some_and(Error::is_broken_pipe)
    })
}

/// `--device cpu|cuda|cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device '{s}' (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl DeviceSpec {
    pub fn device(&self) -> Result<Device, Error> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => crate::cuda::open(*n),
        }
    }
}

/// `--device`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Where to run: cpu, cuda or cuda:N (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

/// `--seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Seed of every random draw; a CPU run with the same seed repeats exactly.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

/// `--shard K/N`, for the tools whose output rows follow their input rows or row indices.
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Do only rows K of N (0-based; contiguous blocks split as numpy's array_split), reading
    /// only those of the input: `tensor-cat` of the N outputs in order is the whole run's.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
}

impl ShardArgs {
    /// The shard asked for; the whole job without the flag.
    pub fn shard(&self) -> Shard {
        self.shard.unwrap_or_default()
    }
}

/// `-o, --output`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Where to write; `-` is stdout. Files appear only when complete.
    #[arg(short, long, default_value = "-", value_name = "FILE")]
    pub output: OutputPath,
}

/// `--model` and `--preset` for tools that run a trained network.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The trained network (.safetensors checkpoint).
    #[arg(long, value_name = "CHECKPOINT")]
    pub model: InputPath,
    /// Which network a checkpoint without config metadata (a plain PyTorch state dict) holds.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<Preset>,
}

/// `--unet-config`, for the tools that train or run a diffusion U-Net.
#[derive(Debug, Args)]
pub struct UnetConfigArgs {
    /// A diffusers UNet2DModel config.json (e.g. google/ddpm-cifar10-32's): the U-Net it describes, instead of --preset.
    #[arg(long, value_name = "config.json", conflicts_with = "preset")]
    pub unet_config: Option<InputPath>,
}

impl UnetConfigArgs {
    /// The U-Net the file describes, if one was given.
    pub fn plain(&self) -> Result<Option<PlainConfig>, Error> {
        let Some(path) = &self.unet_config else { return Ok(None) };
        let config = ModelConfig::Ddpm(crate::models::ddpm_compat::read_diffusers_config(path)?);
        Ok(Some(PlainConfig { config, flag: format!("--unet-config {path}") }))
    }
}

/// A `--preset` parser that takes the presets of `families` only, so that `--help` lists
/// the networks the tool can train or run.
pub fn presets_of(families: &'static [Family]) -> impl clap::builder::TypedValueParser<Value = Preset> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use clap::ValueEnum;
    let names: Vec<&'static str> =
        Preset::value_variants().iter().filter(|p| families.contains(&p.family())).map(|p| p.name()).collect();
    PossibleValuesParser::new(names).map(|name| Preset::from_name(&name).expect("clap admits only preset names"))
}

impl ModelArgs {
    /// Where the tool's network comes from.
    pub fn source(&self) -> ModelSource {
        ModelSource { path: self.model.clone(), plain: self.preset.map(PlainConfig::from) }
    }

    /// Where the tool's network comes from, a plain state dict's network given by `unet`
    /// (`--unet-config`) or `--preset`.
    pub fn source_with(&self, unet: &UnetConfigArgs) -> Result<ModelSource, Error> {
        let plain = unet.plain()?.or_else(|| self.preset.map(PlainConfig::from));
        Ok(ModelSource { path: self.model.clone(), plain })
    }
}

/// Images to train or evaluate on.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A bundled set (`mnist`: 1x28x28 digits; `emoji`: 3x64x64 colour emoji in 9 categories),
    /// or an image array (.npy: u8 [N,H,W] / [N,C,H,W], or float).
    #[arg(long, default_value = "mnist", value_name = "mnist|emoji|FILE")]
    pub data: DataSpec,
    /// Which part of a bundled set: train, test or all (mnist 9,000 / 1,000; emoji 3,411 / 370).
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<Split>,
    /// Serve the bundled emoji at NxN: 32, 16 or 8 (area-averaged from 64) [default: 64].
    #[arg(long, value_name = "N")]
    pub size: Option<usize>,
    /// Class labels for an array file (.npy of integers [N]).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<InputPath>,
    /// Range of float pixels: 01 for [0,1], 11 for [-1,1] (u8 is always 0..255).
    #[arg(long, default_value = "01", value_name = "01|11")]
    pub range: PixelRange,
}

/// The training loop's settings (defaults come from the preset).
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Passes over the training data.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub epochs: usize,
    /// Examples per step [default: the preset's].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Adam learning rate [default: the preset's].
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Raise the learning rate linearly from 0 over the first STEPS steps (Ho et al.: 5000).
    #[arg(long, default_value_t = 0, value_name = "STEPS")]
    pub lr_warmup: u64,
    /// The learning rate after the warm-up: constant, or cosine (down to 0 at the last step).
    #[arg(long, default_value = "constant", value_name = "constant|cosine")]
    pub lr_schedule: LrSchedule,
    /// Scale the gradients down to this global L2 norm when larger (Ho et al.: 1.0).
    #[arg(long, value_name = "NORM")]
    pub grad_clip: Option<f64>,
    /// Decoupled weight decay (AdamW): each step multiplies the weights by 1 - lr x this.
    #[arg(long, default_value_t = 0.0, value_name = "WD")]
    pub weight_decay: f64,
    /// Append one JSON object of metrics per epoch to this file (default: stderr).
    #[arg(long, value_name = "FILE.jsonl")]
    pub metrics: Option<PathBuf>,
    /// Continue the run saved at --output (its training state file) from where it stopped.
    #[arg(long)]
    pub resume: bool,
}

/// Augmentation of the training images.
#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// Flip each training image left-right at random (p = 1/2), as Ho et al. on CIFAR-10.
    #[arg(long)]
    pub flip: bool,
}

/// Held-out images of the training commands on images.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Held-out images evaluated after each epoch (default with --data mnist: the test split).
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<InputPath>,
    /// Labels of --eval-data.
    #[arg(long, value_name = "FILE", requires = "eval_data")]
    pub eval_labels: Option<InputPath>,
}

/// Images given to a tool that maps them to something: INPUT, or `--data mnist`.
#[derive(Debug, Args)]
pub struct ImageInputArgs {
    /// Images (.npy: u8 [N,H,W] or [N,C,H,W], or float); `-` is stdin.
    #[arg(default_value = "-", value_name = "INPUT")]
    pub input: InputPath,
    /// Read a bundled set (`mnist`, `emoji`) or another array file instead of INPUT.
    #[arg(long, value_name = "mnist|emoji|FILE")]
    pub data: Option<DataSpec>,
    /// With a bundled --data (mnist, emoji): train, test (default) or all.
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<Split>,
    /// Serve the bundled emoji at NxN: 32, 16 or 8 (area-averaged from 64) [default: 64].
    #[arg(long, value_name = "N")]
    pub size: Option<usize>,
    /// Range of float pixels: 01 for [0,1], 11 for [-1,1] (u8 is always 0..255).
    #[arg(long, default_value = "01", value_name = "01|11")]
    pub range: PixelRange,
}

impl ImageInputArgs {
    pub fn source(&self) -> Result<ImageSource, Error> {
        let spec = self.data.clone().unwrap_or_else(|| DataSpec::File(self.input.clone()));
        Ok(ImageSource { spec: spec.sized(self.size)?, split: self.split, range: self.range })
    }
}

/// A number in [0, 1], for flags such as `--eta`.
pub fn unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number in [0, 1]")),
    }
}

/// Gaussian scale: a number, or `learned`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SigmaArg(pub Option<f64>);

impl FromStr for SigmaArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "learned" {
            return Ok(SigmaArg(None));
        }
        s.parse().map(|v| SigmaArg(Some(v))).map_err(|_| format!("'{s}' is not a number or 'learned'"))
    }
}

/// Flags that change a preset's network.
#[derive(Debug, Args)]
pub struct ModelOverrides {
    /// vae-mlp: bernoulli or gaussian likelihood [preset: bernoulli].
    #[arg(long, value_name = "KIND")]
    pub likelihood: Option<crate::models::vae::Likelihood>,
    /// vae-mlp with --likelihood gaussian: a fixed sigma, or `learned` [default]; vae-conv:
    /// the fixed sigma of the discretized Gaussian its evaluation reports [preset: 0.1].
    #[arg(long, value_name = "SIGMA|learned")]
    pub sigma: Option<SigmaArg>,
    /// Weight of the KL term (beta-VAE; VIB's beta) [preset: 1 for vae-mlp, 1e-3 for vib-mlp].
    #[arg(long, value_name = "BETA")]
    pub beta: Option<f64>,
    /// vae-conv: weight of the KL term in its loss, MSE + W * KL [preset: 0.00025].
    #[arg(long, value_name = "W")]
    pub kld_weight: Option<f64>,
    /// Size of z [preset: 20 for vae-mlp, 128 for vae-conv, 256 for vib-mlp].
    #[arg(long, value_name = "N")]
    pub latent: Option<usize>,
    /// Width of the hidden layers [preset: 400 for vae-mlp, 1024 for vib-mlp].
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
    /// vae-mlp: none (grey pixels as targets) or dynamic (fresh binary pixels each epoch).
    #[arg(long, value_name = "none|dynamic")]
    pub binarize: Option<crate::models::vae::Binarize>,
    /// vqvae2-mnist: 2 (top and bottom codes) or 1 (plain VQ-VAE) [preset: 2].
    #[arg(long, value_name = "1|2")]
    pub levels: Option<usize>,
    /// vqvae2-mnist: restart a code unused for N codebook updates; 0 never [preset: 100].
    #[arg(long, value_name = "N")]
    pub restart_dead: Option<u32>,
}

impl ModelOverrides {
    /// The preset with these flags applied; a flag the network does not have is an error, and
    /// so is a network too large for the machine.
    pub fn apply(&self, config: ModelConfig) -> Result<ModelConfig, Error> {
        let config = self.override_fields(config)?;
        config.check_fresh(&given(&[("--latent", self.latent), ("--hidden", self.hidden)]))?;
        Ok(config)
    }

    fn override_fields(&self, config: ModelConfig) -> Result<ModelConfig, Error> {
        let only_vae = [
            ("--likelihood", self.likelihood.is_some()),
            ("--sigma", self.sigma.is_some()),
            ("--binarize", self.binarize.is_some()),
        ];
        let only_vq = [("--levels", self.levels.is_some()), ("--restart-dead", self.restart_dead.is_some())];
        let mlp_only =
            [("--beta", self.beta.is_some()), ("--latent", self.latent.is_some()), ("--hidden", self.hidden.is_some())];
        let only_conv = [("--kld-weight", self.kld_weight.is_some())];
        let reject = |flags: &[(&str, bool)], network: &str| match flags.iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(Error::config(format!("{flag} does not apply to {network}"))),
            None => Ok(()),
        };
        Ok(match config {
            ModelConfig::Vae(mut c) => {
                reject(&only_vq, "vae-mlp")?;
                reject(&only_conv, "vae-mlp")?;
                c.likelihood = self.likelihood.unwrap_or(c.likelihood);
                c.sigma = self.sigma.map(|s| s.0).unwrap_or(c.sigma);
                c.beta = self.beta.unwrap_or(c.beta);
                c.latent = self.latent.unwrap_or(c.latent);
                c.hidden = self.hidden.unwrap_or(c.hidden);
                c.binarize = self.binarize.unwrap_or(c.binarize);
                c.validate()?;
                ModelConfig::Vae(c)
            }
            ModelConfig::VaeConv(mut c) => {
                reject(&only_vq, "vae-conv")?;
                let not_conv = [
                    ("--likelihood", self.likelihood.is_some()),
                    ("--binarize", self.binarize.is_some()),
                    ("--beta", self.beta.is_some()),
                    ("--hidden", self.hidden.is_some()),
                ];
                reject(&not_conv, "vae-conv (its KL weight is --kld-weight)")?;
                c.sigma = match self.sigma {
                    Some(SigmaArg(None)) => {
                        return Err(Error::config("--sigma learned does not apply to vae-conv, whose sigma is fixed"))
                    }
                    Some(SigmaArg(Some(s))) => s,
                    None => c.sigma,
                };
                c.kld_weight = self.kld_weight.unwrap_or(c.kld_weight);
                c.latent = self.latent.unwrap_or(c.latent);
                c.validate()?;
                ModelConfig::VaeConv(c)
            }
            ModelConfig::Vib(mut c) => {
                reject(&only_vae, "vib-mlp")?;
                reject(&only_vq, "vib-mlp")?;
                reject(&only_conv, "vib-mlp")?;
                c.beta = self.beta.unwrap_or(c.beta);
                c.latent = self.latent.unwrap_or(c.latent);
                c.hidden = self.hidden.unwrap_or(c.hidden);
                c.validate()?;
                ModelConfig::Vib(c)
            }
            ModelConfig::ClfConv(c) => {
                reject(&only_vae, "clf-conv")?;
                reject(&only_vq, "clf-conv")?;
                reject(&mlp_only, "clf-conv")?;
                reject(&only_conv, "clf-conv")?;
                ModelConfig::ClfConv(c)
            }
            ModelConfig::Ddpm(_) => {
                return Err(Error::config("ddpm-unet is trained with ddpm-train"));
            }
            ModelConfig::VqVae2(mut c) => {
                reject(&only_vae, "vqvae2")?;
                reject(&mlp_only, "vqvae2")?;
                reject(&only_conv, "vqvae2")?;
                c.levels = self.levels.unwrap_or(c.levels);
                if let Some(n) = self.restart_dead {
                    c.restart_after = (n > 0).then_some(n);
                }
                ModelConfig::VqVae2(c)
            }
            ModelConfig::PixelCnn(c) => {
                reject(&only_vae, "pixelcnn-prior")?;
                reject(&only_vq, "pixelcnn-prior")?;
                reject(&mlp_only, "pixelcnn-prior")?;
                reject(&only_conv, "pixelcnn-prior")?;
                ModelConfig::PixelCnn(c)
            }
        })
    }
}

/// Flags that change a diffusion U-Net preset's network and diffusion.
#[derive(Debug, Args)]
pub struct DdpmOverrides {
    /// Noise schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal) [preset: linear].
    #[arg(long, value_name = "linear|cosine")]
    pub schedule: Option<crate::diffusion::ScheduleKind>,
    /// Channels of the U-Net's first block; the others scale with it [preset: 32, ddpm-cifar10 128].
    #[arg(long, value_name = "N")]
    pub base_channels: Option<usize>,
    /// Channel multiplier of each block, comma-separated, one per block [preset: 1,2,2].
    #[arg(long, value_name = "M,M,...", value_delimiter = ',', hide = true)]
    pub channel_mult: Option<Vec<usize>>,
    /// ResnetBlock2Ds per block on the way down (layers_per_block) [preset: 2].
    #[arg(long, value_name = "N", hide = true)]
    pub res_blocks: Option<usize>,
    /// Dropout in the ResBlocks during training [preset: 0.1].
    #[arg(long, value_name = "P")]
    pub dropout: Option<f64>,
    /// Decay of the weight average the model file holds [preset: 0.9999].
    #[arg(long, value_name = "D")]
    pub ema_decay: Option<f64>,
    /// T, the number of diffusion steps [preset: 1000].
    #[arg(long, value_name = "T", hide = true)]
    pub timesteps: Option<usize>,
    /// A class-conditional model: the probability a training label is dropped to the null
    /// class (Ho & Salimans: 0.1).
    #[arg(long, value_name = "P")]
    pub p_uncond: Option<f64>,
}

impl DdpmOverrides {
    /// The preset with these flags applied and checked.
    pub fn apply(&self, config: ModelConfig) -> Result<ModelConfig, Error> {
        let ModelConfig::Ddpm(mut c) = config else {
            return Err(Error::config(format!("{} has no diffusion settings", config.family())));
        };
        c.schedule = self.schedule.unwrap_or(c.schedule);
        c.p_uncond = self.p_uncond.unwrap_or(c.p_uncond);
        let base = c.block_out_channels.first().copied().unwrap_or(1).max(1);
        if self.base_channels.is_some() || self.channel_mult.is_some() {
            // Each block's channels as a multiple of the first's, as the flags give them.
            let mult = match &self.channel_mult {
                Some(m) if m.len() != c.block_out_channels.len() => {
                    return Err(Error::config(format!(
                        "--channel-mult: give one multiplier per block of the U-Net ({}), not {}",
                        c.block_out_channels.len(),
                        m.len()
                    )))
                }
                Some(m) => m.clone(),
                None if c.block_out_channels.iter().any(|ch| ch % base != 0) => {
                    return Err(Error::config(format!(
                        "--base-channels: the blocks' channels {:?} are not multiples of the first",
                        c.block_out_channels
                    )))
                }
                None => c.block_out_channels.iter().map(|ch| ch / base).collect(),
            };
            let base = self.base_channels.unwrap_or(base);
            c.block_out_channels = mult.iter().map(|m| m.saturating_mul(base)).collect();
        }
        c.layers_per_block = self.res_blocks.unwrap_or(c.layers_per_block);
        c.dropout = self.dropout.unwrap_or(c.dropout);
        c.ema_decay = self.ema_decay.unwrap_or(c.ema_decay);
        c.timesteps = self.timesteps.unwrap_or(c.timesteps);
        c.validate()?;
        let config = ModelConfig::Ddpm(c);
        let mult = self.channel_mult.as_ref().and_then(|m| m.iter().max().copied());
        let sizes =
            [("--base-channels", self.base_channels), ("--res-blocks", self.res_blocks), ("--channel-mult", mult)];
        config.check_fresh(&given(&sizes))?;
        Ok(config)
    }
}

/// The size flags that were given (`--hidden 400`; a list's largest value), for messages
/// about the network they size; `the preset` when none was.
fn given(flags: &[(&str, Option<usize>)]) -> String {
    let set: Vec<String> = flags.iter().filter_map(|(f, v)| v.map(|v| format!("{f} {v}"))).collect();
    if set.is_empty() {
        "the preset".into()
    } else {
        set.join(" ")
    }
}

impl DataArgs {
    /// The request of a training command on these images.
    pub fn training(
        &self,
        config: ModelConfig,
        eval: &EvalArgs,
        augment: &AugmentArgs,
        mut train: TrainOptions,
    ) -> Result<ImageTraining, Error> {
        train.recipe.flip = augment.flip;
        Ok(ImageTraining {
            config,
            data: self.data.clone().sized(self.size)?,
            split: self.split,
            labels: self.labels.clone(),
            range: self.range,
            eval: eval.eval_data.clone().map(|path| (path, eval.eval_labels.clone())),
            class_conditional: false,
            train,
        })
    }
}

impl TrainArgs {
    /// The loop's options, with the preset's defaults for what was not given.
    pub fn options(
        &self,
        family: Family,
        seed: u64,
        output: &OutputPath,
        device: Device,
    ) -> Result<TrainOptions, Error> {
        let (lr, batch_size) = family.train_defaults();
        let lr = self.lr.unwrap_or(lr);
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::config(format!("--lr {lr} must be a positive number")));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(format!("--weight-decay {} must be 0 or more", self.weight_decay)));
        }
        let recipe =
            Recipe { lr_warmup: self.lr_warmup, lr_schedule: self.lr_schedule, grad_clip: self.grad_clip, flip: false };
        recipe.validate()?;
        Ok(TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(batch_size),
            seed,
            adam: crate::nn::AdamConfig { weight_decay: self.weight_decay, ..crate::nn::AdamConfig::with_lr(lr) },
            recipe,
            output: output.file("a trained model")?.to_path_buf(),
            metrics: self.metrics.clone(),
            resume: self.resume,
            device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_interval_takes_zero_to_one() {
        assert_eq!(unit_interval("0"), Ok(0.0));
        assert_eq!(unit_interval("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "NaN", "x"] {
            assert!(unit_interval(bad).unwrap_err().contains("not a number in [0, 1]"), "{bad}");
        }
    }

    #[test]
    fn a_network_too_large_for_the_machine_is_refused_naming_the_flags() {
        let overrides = ModelOverrides {
            likelihood: None,
            sigma: None,
            beta: None,
            kld_weight: None,
            latent: Some(20),
            hidden: Some(1_000_000_000),
            binarize: None,
            levels: None,
            restart_dead: None,
        };
        let e = overrides.apply(Preset::VaeMlp.config()).unwrap_err().to_string();
        assert!(e.starts_with("--latent 20 --hidden 1000000000: the network's parameters would need 3.1 TB"), "{e}");
        let fits = ModelOverrides { hidden: Some(32), ..overrides };
        assert!(fits.apply(Preset::VaeMlp.config()).is_ok());
    }
}
