//! The one training loop every model family uses: seeded shuffling and noise, Adam,
//! held-out evaluation and a JSON line of metrics per epoch, atomic checkpoints every epoch,
//! exact `--resume`, a NaN guard that keeps the last good checkpoint, and Ctrl-C that saves
//! before exiting.
//!
//! Determinism: the example order of epoch `e` comes from the stream (seed, Shuffle, e) and
//! every random draw of step `s` from (seed, Step, s), so a run resumed at any step draws
//! exactly what the uninterrupted run would have, and a CPU run repeats bit for bit.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};

use crate::checkpoint::{save_model, state_path, STEP_KEY};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::io::{InputPath, OutputPath};
use crate::models::ModelConfig;
use crate::nn::{Adam, AdamConfig, ParamSet};
use crate::rng::{Rng, Stream};

/// Named scalar metrics, in insertion order.
pub type Metrics = Vec<(String, f64)>;

/// What one training step returns.
pub struct StepOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Per-example means over the batch, averaged over the epoch (weighted by batch size).
    pub metrics: Metrics,
}

/// A model family's part of training.
pub trait Task {
    fn config(&self) -> ModelConfig;
    fn params(&self) -> &ParamSet;
    /// The loss on one batch; `rng` is this step's own stream.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput>;
    /// Runs after each optimizer step (running averages and the like).
    fn after_step(&mut self) -> Result<()> {
        Ok(())
    }
    /// Metrics on held-out data, computed with fixed noise.
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics>;
    /// What the model file holds: by default the parameters.
    fn model_tensors(&self) -> Result<TensorMap> {
        self.params().to_tensor_map()
    }
    /// Task state beyond parameters and optimizer (saved as `extra.*`).
    fn extra_state(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(BTreeMap::new())
    }
    fn load_extra_state(&mut self, _state: &BTreeMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// Means of per-example values, accumulated over batches.
#[derive(Default)]
pub(crate) struct Means {
    sums: Metrics,
    count: usize,
}

impl Means {
    /// Adds a batch of `n` examples whose per-example values sum to `totals`.
    pub fn add<'a>(&mut self, n: usize, totals: impl IntoIterator<Item = (&'a str, f64)>) {
        for (name, v) in totals {
            match self.sums.iter_mut().find(|(k, _)| k == name) {
                Some((_, s)) => *s += v,
                None => self.sums.push((name.to_string(), v)),
            }
        }
        self.count += n;
    }

    pub fn finish(self) -> Metrics {
        let n = self.count.max(1) as f64;
        self.sums.into_iter().map(|(k, v)| (k, v / n)).collect()
    }
}

/// Settings of a run.
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub adam: AdamConfig,
    /// The model file; the state file sits beside it.
    pub output: PathBuf,
    /// JSON lines go here, else to stderr.
    pub metrics: Option<PathBuf>,
    pub resume: bool,
    pub device: Device,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C (and SIGTERM) ask the training loop to save and stop at the next step.
pub fn install_interrupt_handler() {
    // A second installation (e.g. in tests) fails harmlessly; the first handler stays.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Trains `task` on `data` and returns the last epoch's metrics.
pub fn train(
    task: &mut dyn Task,
    data: &dyn Dataset,
    eval: Option<&dyn Dataset>,
    opts: &TrainOptions,
) -> Result<Map<String, Value>> {
    if data.is_empty() {
        return Err(Error::bad_input(data.name(), "holds no examples, nothing to train on"));
    }
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(Error::config("--batch-size and --epochs must be at least 1"));
    }
    let n = data.len();
    let steps_per_epoch = n.div_ceil(opts.batch_size) as u64;
    let mut adam = Adam::new(task.params(), opts.adam)?;
    let run_info = RunInfo::new(task, data, opts);
    let state_file = state_path(&opts.output);
    let mut step = 0u64;
    if opts.resume {
        step = resume(task, &mut adam, &run_info, &state_file, &opts.device)?;
    }
    let mut metrics_out = MetricsSink::open(opts.metrics.as_ref(), opts.resume)?;
    let progress = std::io::stderr().is_terminal();
    let mut last: Map<String, Value> = Map::new();
    let total_steps = steps_per_epoch * opts.epochs as u64;
    if step >= total_steps {
        eprintln!("{}: already trained for {} epochs", opts.output.display(), opts.epochs);
    }
    while step < total_steps {
        let epoch = step / steps_per_epoch;
        let perm = Rng::new(opts.seed, Stream::Shuffle, epoch).permutation(n);
        let mut means = Means::default();
        let (mut seen, start) = (0usize, Instant::now());
        for b in (step % steps_per_epoch) as usize..steps_per_epoch as usize {
            let rows = &perm[b * opts.batch_size..((b + 1) * opts.batch_size).min(n)];
            let batch = data.batch(rows, &opts.device)?;
            let mut rng = Rng::new(opts.seed, Stream::Step, step);
            let out = task.train_step(&batch, &mut rng)?;
            let loss = out.loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(diverged(loss, epoch, step, &opts.output));
            }
            adam.step(task.params(), &out.loss.backward()?)?;
            task.after_step()?;
            step += 1;
            seen += rows.len();
            let weight = rows.len() as f64;
            means.add(rows.len(), out.metrics.iter().map(|(k, v)| (k.as_str(), v * weight)));
            if progress {
                show_progress(epoch, opts.epochs, b + 1, steps_per_epoch, loss, seen, start);
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                save(task, &adam, &run_info, step, &opts.output)?;
                if progress {
                    eprintln!();
                }
                eprintln!("interrupted at step {step}: saved {}; continue with --resume", opts.output.display());
                return Err(Error::Interrupted);
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if progress {
            eprint!("\r\x1b[2K");
        }
        let mut line = Map::new();
        line.insert("epoch".into(), json!(epoch + 1));
        line.insert("step".into(), json!(step));
        for (k, v) in means.finish() {
            line.insert(format!("train_{k}"), json!(v));
        }
        line.insert("images_per_s".into(), json!((seen as f64 / seconds).round()));
        line.insert("epoch_seconds".into(), json!((seconds * 1000.0).round() / 1000.0));
        if let Some(eval) = eval {
            let prefix = eval.metric_prefix();
            for (k, v) in task.evaluate(eval)? {
                line.insert(format!("{prefix}_{k}"), json!(v));
            }
        }
        save(task, &adam, &run_info, step, &opts.output)?;
        metrics_out.write(&line)?;
        last = line;
    }
    Ok(last)
}

fn diverged(loss: f64, epoch: u64, step: u64, output: &std::path::Path) -> Error {
    let kept = if output.exists() {
        format!("the last good checkpoint is kept in {}", output.display())
    } else {
        "no checkpoint had been written yet".to_string()
    };
    Error::Diverged(format!(
        "training diverged: loss is {loss} at epoch {}, step {step}; {kept} (try a lower --lr)",
        epoch + 1
    ))
}

fn show_progress(epoch: u64, epochs: usize, b: usize, per_epoch: u64, loss: f64, seen: usize, start: Instant) {
    let rate = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let width = 30;
    let filled = (b * width) / per_epoch as usize;
    eprint!(
        "\r\x1b[2Kepoch {}/{epochs} [{}{}] {b}/{per_epoch} loss {loss:.4} {rate:.0} img/s",
        epoch + 1,
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
}

/// What must match for `--resume` to continue the same run.
struct RunInfo {
    config: String,
    data: String,
    batch_size: usize,
    seed: u64,
    adam: String,
}

impl RunInfo {
    fn new(task: &dyn Task, data: &dyn Dataset, opts: &TrainOptions) -> Self {
        RunInfo {
            config: task.config().to_json(),
            data: format!("{} ({} images)", data.name(), data.len()),
            batch_size: opts.batch_size,
            seed: opts.seed,
            adam: serde_json::to_string(&opts.adam).expect("adam config serialises"),
        }
    }

    fn metadata(&self, step: u64) -> Vec<(&'static str, String)> {
        vec![
            (STEP_KEY, step.to_string()),
            ("genimg.data", self.data.clone()),
            ("genimg.batch_size", self.batch_size.to_string()),
            ("genimg.seed", self.seed.to_string()),
            ("genimg.adam", self.adam.clone()),
        ]
    }
}

fn save(task: &dyn Task, adam: &Adam, info: &RunInfo, step: u64, output: &std::path::Path) -> Result<()> {
    let config = task.config();
    let meta = info.metadata(step);
    let mut state = TensorMap::new();
    // Every tensor, buffers (running statistics such as codebooks) included.
    for (k, v) in task.params().to_tensor_map()?.tensors {
        state.insert(format!("param.{k}"), v);
    }
    for (k, v) in adam.state_tensors(task.params())? {
        state.insert(k, v);
    }
    for (k, v) in task.extra_state()? {
        state.insert(format!("extra.{k}"), v);
    }
    save_model(&OutputPath::File(state_path(output)), &config, state, &meta)?;
    save_model(&OutputPath::File(output.to_path_buf()), &config, task.model_tensors()?, &meta)
}

/// Restores parameters, optimizer and task state; returns the step to continue from.
fn resume(
    task: &mut dyn Task,
    adam: &mut Adam,
    info: &RunInfo,
    path: &std::path::Path,
    device: &Device,
) -> Result<u64> {
    let input = InputPath::File(path.to_path_buf());
    if !path.exists() {
        return Err(Error::bad_input(
            &input,
            "no training state to resume from (it is written beside the model file by a run with the same -o)",
        ));
    }
    let map = TensorMap::read(&input, device)?;
    let meta = |k: &str| map.metadata.get(k).cloned().unwrap_or_default();
    let checks = [
        ("model config", meta(crate::checkpoint::CONFIG_KEY), info.config.clone()),
        ("data", meta("genimg.data"), info.data.clone()),
        ("--batch-size", meta("genimg.batch_size"), info.batch_size.to_string()),
        ("--seed", meta("genimg.seed"), info.seed.to_string()),
    ];
    for (what, saved, now) in checks {
        if saved != now {
            return Err(Error::bad_input(
                &input,
                format!("was trained with {what} {saved}, this run has {now}; resume with the same settings"),
            ));
        }
    }
    let step: u64 = meta(STEP_KEY).parse().map_err(|_| Error::bad_input(&input, "has no step in its metadata"))?;
    let strip = |prefix: &str| -> BTreeMap<String, Tensor> {
        map.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
    };
    task.params().assign(&strip("param."))?;
    adam.load_state(&map.tensors)?;
    adam.set_step(step);
    task.load_extra_state(&strip("extra."))?;
    Ok(step)
}

/// Where metric lines go. A file is opened at the first line, so a run that fails before
/// finishing an epoch leaves no empty file behind.
enum MetricsSink {
    File { path: PathBuf, append: bool, file: Option<File> },
    Stderr,
}

impl MetricsSink {
    fn open(path: Option<&PathBuf>, append: bool) -> Result<Self> {
        Ok(match path {
            None => MetricsSink::Stderr,
            Some(p) => MetricsSink::File { path: p.clone(), append, file: None },
        })
    }

    fn write(&mut self, line: &Map<String, Value>) -> Result<()> {
        let text = format!("{}\n", Value::Object(line.clone()));
        match self {
            MetricsSink::File { path, append, file } => {
                let mut f = match file.take() {
                    Some(f) => f,
                    None => OpenOptions::new()
                        .create(true)
                        .write(true)
                        .append(*append)
                        .truncate(!*append)
                        .open(&*path)
                        .map_err(|e| Error::io(path.display(), e))?,
                };
                let written = f.write_all(text.as_bytes()).map_err(|e| Error::io(path.display(), e));
                *file = Some(f);
                written
            }
            MetricsSink::Stderr => {
                eprint!("{text}");
                Ok(())
            }
        }
    }
}
