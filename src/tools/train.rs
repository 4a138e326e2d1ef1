//! `vae-train` and `ddpm-train` (and the loop `prior-fit` shares): a fresh network trained by
//! the shared loop, evaluated after each epoch, saved atomically, resumable.

use crate::data::{DataSpec, Dataset, ImageSet, PixelRange, Split};
use crate::error::Result;
use crate::io::{check_io, InputPath, OutputPath};
use crate::models::clf_conv::ClfConvConfig;
use crate::models::ddpm::DdpmConfig;
use crate::models::vib::VibConfig;
use crate::models::ModelConfig;
use crate::train::TrainOptions;

/// What a training command on images trains, on what.
pub struct ImageTraining {
    pub config: ModelConfig,
    pub data: DataSpec,
    /// Which part of the bundled set (train by default).
    pub split: Option<Split>,
    pub labels: Option<InputPath>,
    pub range: PixelRange,
    /// Held-out images and their labels; by default, with the bundled set's train split, its
    /// test split.
    pub eval: Option<(InputPath, Option<InputPath>)>,
    /// A U-Net trained on labelled images is class-conditional (one embedding per class and
    /// a null class).
    pub class_conditional: bool,
    pub train: TrainOptions,
}

impl ImageTraining {
    /// The network fitted to the training images ([`ModelConfig::fitted_to`]), the images
    /// and, when there are any, the held-out ones, both in the network's geometry.
    fn load_data(&self) -> Result<(ModelConfig, ImageSet, Option<ImageSet>)> {
        let train = ImageSet::load(&self.data, self.split, self.labels.as_ref(), self.range, None)?;
        let config = self.config.clone().fitted_to(train.geometry()).map_err(|e| self.data.blame(e))?;
        let geometry = config.geometry()?;
        let train = train.fitted(geometry)?;
        let eval = match (&self.eval, &self.data) {
            (Some((path, labels)), _) => {
                let spec = DataSpec::File(path.clone());
                Some(ImageSet::load(&spec, None, labels.as_ref(), self.range, Some(geometry))?)
            }
            (None, DataSpec::Bundled(set)) if self.split.unwrap_or(Split::Train) == Split::Train => {
                Some(ImageSet::bundled(*set, Split::Test, geometry)?)
            }
            (None, _) => None,
        };
        let config = match config {
            // A classifier has one output per class of its data (10 for digits, 9 for emoji).
            ModelConfig::Vib(c) => {
                train.require_labels("training vib-mlp")?;
                let config = ModelConfig::Vib(VibConfig { classes: classes_of(&train, eval.as_ref()).max(2), ..c });
                config.check_fresh("the training labels")?;
                config
            }
            ModelConfig::ClfConv(c) => {
                train.require_labels("training clf-conv")?;
                let config =
                    ModelConfig::ClfConv(ClfConvConfig { classes: classes_of(&train, eval.as_ref()).max(2), ..c });
                config.check_fresh("the training labels")?;
                config
            }
            ModelConfig::Ddpm(c) if self.class_conditional && train.labels.is_some() => {
                let classes = classes_of(&train, eval.as_ref());
                let config = ModelConfig::Ddpm(DdpmConfig { num_class_embeds: Some(classes + 1), ..c });
                config.check_fresh("the training labels")?;
                config
            }
            other => other,
        };
        Ok((config, train, eval))
    }
}

/// The classes of labelled training (and held-out) images: the largest label plus one.
fn classes_of(train: &ImageSet, eval: Option<&ImageSet>) -> usize {
    let eval_labels = eval.and_then(|e| e.labels.as_deref()).unwrap_or_default();
    train.labels.iter().flatten().chain(eval_labels).max().map_or(0, |&l| l as usize + 1)
}

/// The body of `vae-train` and `ddpm-train`: loads the data, then [`train_command`].
pub fn train_on_images(tool: &str, r: &ImageTraining) -> Result<()> {
    let (eval, eval_labels) = crate::tools::held_out_files(&r.eval);
    let inputs = [
        ("--data", r.data.file()),
        ("--labels", r.labels.as_ref()),
        ("--eval-data", eval),
        ("--eval-labels", eval_labels),
    ];
    check_training_io(&inputs, &r.train)?;
    let (config, train, eval) = r.load_data()?;
    let eval = eval.as_ref().map(|e| e as &dyn Dataset);
    train_command(tool, config, &train, eval, &r.train)
}

/// The body of every training command: a fresh network of `config` (weights drawn from
/// `opts.seed`) trained by the shared loop on `train`, evaluated on `eval` after each epoch,
/// saving on Ctrl-C; the written model is reported on stderr as `tool: wrote FILE (metrics)`.
pub fn train_command(
    tool: &str,
    config: ModelConfig,
    train: &dyn Dataset,
    eval: Option<&dyn Dataset>,
    opts: &TrainOptions,
) -> Result<()> {
    let mut task = crate::tasks::build(config, crate::nn::Params::init(opts.seed, &opts.device))?;
    crate::train::save_on_interrupt();
    let last = crate::train::train(task.as_mut(), train, eval, opts)?;
    match last {
        Some(last) => eprintln!("{tool}: wrote {} ({})", opts.output.display(), serde_json::Value::Object(last)),
        None => {
            eprintln!("{tool}: {}: already trained to epoch {}; nothing written", opts.output.display(), opts.epochs)
        }
    }
    Ok(())
}

/// [`check_io`] for a training command: the files it writes are the model (`-o`), its
/// state beside it and `--metrics`; the model and state must be regular files (a run
/// rewrites them each epoch and `--resume` reads the state back).
pub fn check_training_io(inputs: &[(&str, Option<&InputPath>)], opts: &TrainOptions) -> Result<()> {
    let model = OutputPath::File(opts.output.clone());
    let state = OutputPath::File(crate::checkpoint::state_path(&opts.output));
    model.check_regular("the model (-o)")?;
    state.check_regular("the training state")?;
    let metrics = opts.metrics.clone().map(OutputPath::File);
    check_io(inputs, &[("-o", Some(&model)), ("the training state", Some(&state)), ("--metrics", metrics.as_ref())])
}
