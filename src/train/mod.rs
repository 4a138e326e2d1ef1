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
use crate::nn::adam::{clip_factor, grad_norm};
use crate::nn::{Adam, AdamConfig, ParamSet};
use crate::rng::{Rng, Stream};

pub mod recipe;
pub use recipe::{LrSchedule, Recipe};

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
    /// Warm-up, schedule, clipping and flips.
    pub recipe: Recipe,
    /// The model file; the state file sits beside it.
    pub output: PathBuf,
    /// JSON lines go here, else to stderr.
    pub metrics: Option<PathBuf>,
    pub resume: bool,
    pub device: Device,
}

/// Whether Ctrl-C asks the training loop to save and stop, rather than ending the process.
static SAVE_ON_INTERRUPT: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C while [`SAVE_ON_INTERRUPT`]; the loop saves and stops at its next step.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on, Ctrl-C (and SIGTERM) asks the training loop to save and stop at the next step
/// (see [`crate::cli::handle_signals`]).
pub fn save_on_interrupt() {
    SAVE_ON_INTERRUPT.store(true, Ordering::SeqCst);
}

/// For the signal handler: asks a training run to save and stop, and returns whether one
/// will; `false` when the process should end now.
pub fn interrupt() -> bool {
    let saves = SAVE_ON_INTERRUPT.load(Ordering::SeqCst);
    if saves {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    saves
}

/// Trains `task` on `data` and returns the last epoch's metrics; none when `--resume` finds
/// the run already complete (then nothing is written).
pub fn train(
    task: &mut dyn Task,
    data: &dyn Dataset,
    eval: Option<&dyn Dataset>,
    opts: &TrainOptions,
) -> Result<Option<Map<String, Value>>> {
    if data.is_empty() {
        return Err(Error::bad_input(data.name(), "holds no examples, nothing to train on"));
    }
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(Error::config("--batch-size and --epochs must be at least 1"));
    }
    opts.recipe.validate()?;
    let n = data.len();
    let steps_per_epoch = n.div_ceil(opts.batch_size) as u64;
    let mut adam = Adam::new(task.params(), opts.adam)?;
    let run_info = RunInfo::new(task, data, opts);
    let state_file = state_path(&opts.output);
    let mut step = 0u64;
    if opts.resume {
        step = resume(task, &mut adam, &run_info, &state_file, &opts.device)?;
    }
    let mut writer = Writer::new(MetricsSink::open(opts.metrics.as_ref(), opts.resume)?);
    let progress = std::io::stderr().is_terminal();
    let mut last = None;
    let total_steps = steps_per_epoch * opts.epochs as u64;
    let mut lr = opts.adam.lr;
    while step < total_steps {
        let epoch = step / steps_per_epoch;
        let perm = Rng::new(opts.seed, Stream::Shuffle, epoch).permutation(n);
        let mut means = Means::default();
        let (mut seen, start) = (0usize, Instant::now());
        for b in (step % steps_per_epoch) as usize..steps_per_epoch as usize {
            let rows = &perm[b * opts.batch_size..((b + 1) * opts.batch_size).min(n)];
            let batch = opts.recipe.augment(data.batch(rows, &opts.device)?, opts.seed, step)?;
            let mut rng = Rng::new(opts.seed, Stream::Step, step);
            let out = task.train_step(&batch, &mut rng)?;
            let loss = out.loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                // The last good checkpoint may still be on its way to disk.
                writer.finish()?;
                return Err(diverged(loss, epoch, step, &opts.output));
            }
            let grads = out.loss.backward()?;
            let mut metrics = out.metrics;
            let grad_scale = match opts.recipe.grad_clip {
                Some(max) => {
                    let norm = grad_norm(task.params(), &grads)?;
                    metrics.push(("grad_norm".into(), norm));
                    clip_factor(norm, max)
                }
                None => 1.0,
            };
            lr = opts.adam.lr * opts.recipe.lr_factor(step, total_steps);
            adam.step_with(task.params(), &grads, lr, grad_scale)?;
            task.after_step()?;
            step += 1;
            seen += rows.len();
            let weight = rows.len() as f64;
            means.add(rows.len(), metrics.iter().map(|(k, v)| (k.as_str(), v * weight)));
            if progress {
                show_progress(epoch, opts.epochs, b + 1, steps_per_epoch, loss, seen, start);
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                writer.finish()?;
                Snapshot::take(task, &adam, &run_info, step)?.write(&opts.output)?;
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
        if opts.recipe.lr_warmup > 0 || opts.recipe.lr_schedule != LrSchedule::Constant {
            line.insert("lr".into(), json!(lr));
        }
        line.insert("images_per_s".into(), json!((seen as f64 / seconds).round()));
        line.insert("epoch_seconds".into(), json!((seconds * 1000.0).round() / 1000.0));
        if let Some(eval) = eval {
            let prefix = eval.metric_prefix();
            for (k, v) in task.evaluate(eval)? {
                line.insert(format!("{prefix}_{k}"), json!(v));
            }
        }
        let snapshot = Snapshot::take(task, &adam, &run_info, step)?;
        writer.start(snapshot, opts.output.clone(), line.clone())?;
        last = Some(line);
    }
    writer.finish()?;
    Ok(last)
}

/// Writes each epoch's checkpoint and then its metrics line on a thread of its own, so that
/// the next epoch trains while the files are serialised and synced (for vib-mlp's 38 MB the
/// six syncs of a 3-epoch run took 57 ms in all; it is the checkpoints of hundreds of MB, a
/// large U-Net and its Adam moments, that would hold training up). It costs one copy of the
/// model and its optimizer state in memory while a write runs. One write at a time, in epoch
/// order: a new one first waits for the last, so the files never run ahead of the metrics
/// or of each other, and an error of the write surfaces at the next epoch's end at the latest.
struct Writer {
    /// The metrics file while no write is under way; the write holds it otherwise.
    idle: Option<MetricsSink>,
    writing: Option<std::thread::JoinHandle<Result<MetricsSink>>>,
}

impl Writer {
    fn new(sink: MetricsSink) -> Self {
        Writer { idle: Some(sink), writing: None }
    }

    /// Waits for the write under way, if any.
    fn finish(&mut self) -> Result<()> {
        if let Some(handle) = self.writing.take() {
            let sink = handle.join().map_err(|_| Error::config("the checkpoint writer panicked"))??;
            self.idle = Some(sink);
        }
        Ok(())
    }

    /// Writes `snapshot` to `output` and then `line` to the metrics, in the background.
    fn start(&mut self, snapshot: Snapshot, output: PathBuf, line: Map<String, Value>) -> Result<()> {
        self.finish()?;
        let mut sink = self.idle.take().ok_or_else(|| Error::config("an earlier checkpoint write failed"))?;
        // A line for the terminal goes now, before the next epoch's progress bar.
        let line = match sink {
            MetricsSink::Stderr => sink.write(&line).map(|_| None)?,
            MetricsSink::File { .. } => Some(line),
        };
        self.writing = Some(std::thread::spawn(move || {
            snapshot.write(&output)?;
            if let Some(line) = line {
                sink.write(&line)?;
            }
            Ok(sink)
        }));
        Ok(())
    }
}

/// An early return leaves no write half done (and no temporary file behind).
impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
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
    /// [`RunInfo::recipe`] of the run's recipe.
    recipe: String,
}

impl RunInfo {
    /// `recipe` as the training state records it, with the run's length (`total_steps`) when
    /// its schedule depends on it.
    fn recipe(recipe: &Recipe, total_steps: u64) -> String {
        let json = serde_json::to_string(recipe).expect("the recipe serialises");
        match recipe.lr_schedule {
            LrSchedule::Constant => json,
            LrSchedule::Cosine => format!("{json} over {total_steps} steps"),
        }
    }

    fn new(task: &dyn Task, data: &dyn Dataset, opts: &TrainOptions) -> Self {
        let total_steps = data.len().div_ceil(opts.batch_size.max(1)) as u64 * opts.epochs as u64;
        RunInfo {
            recipe: Self::recipe(&opts.recipe, total_steps),
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
            ("genimg.recipe", self.recipe.clone()),
        ]
    }
}

/// Copies of what a checkpoint holds at one step: the model file's tensors and the training
/// state's, with the metadata of both.
struct Snapshot {
    config: ModelConfig,
    meta: Vec<(&'static str, String)>,
    model: TensorMap,
    state: TensorMap,
}

impl Snapshot {
    fn take(task: &dyn Task, adam: &Adam, info: &RunInfo, step: u64) -> Result<Self> {
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
        Ok(Snapshot { config: task.config(), meta: info.metadata(step), model: task.model_tensors()?, state })
    }

    /// Writes the model file, then the training state beside it, each atomically.
    ///
    /// The order keeps the pair consistent across a crash between the two writes: the state is
    /// then an epoch behind the model, so `--resume` repeats that epoch (which, being seeded,
    /// draws exactly what it drew before) and rewrites both. The other order would leave a
    /// state ahead of its model, and a resume that sees nothing left to train would never
    /// rewrite the stale model.
    fn write(self, output: &std::path::Path) -> Result<()> {
        save_model(&OutputPath::File(output.to_path_buf()), &self.config, self.model, &self.meta)?;
        #[cfg(test)]
        tests::crash_point(output)?;
        save_model(&OutputPath::File(state_path(output)), &self.config, self.state, &self.meta)
    }
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
    crate::checkpoint::ensure_finite(&map.tensors, &input.to_string())?;
    let meta = |k: &str| map.metadata.get(k).cloned().unwrap_or_default();
    // A state written by an earlier release describes its network as that release did: the
    // configuration is compared as read today, as a model file's is.
    let saved_config = meta(crate::checkpoint::CONFIG_KEY);
    let saved_config = ModelConfig::from_json(&saved_config).map(|c| c.to_json()).unwrap_or(saved_config);
    let checks = [
        ("model config", saved_config, info.config.clone()),
        ("data", meta("genimg.data"), info.data.clone()),
        ("--batch-size", meta("genimg.batch_size"), info.batch_size.to_string()),
        ("--seed", meta("genimg.seed"), info.seed.to_string()),
        // States written before the recipe existed trained with the default one.
        (
            "the recipe (--lr-warmup, --lr-schedule, --grad-clip, --flip; a cosine schedule also --epochs)",
            map.metadata.get("genimg.recipe").cloned().unwrap_or_else(|| RunInfo::recipe(&Recipe::default(), 0)),
            info.recipe.clone(),
        ),
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
    // The per-parameter tensors under today's names (an earlier release's layout renamed as
    // a model file's is; current names pass unchanged).
    let config = task.config();
    task.params().assign(&config.upgrade_tensors(strip("param."))?)?;
    let mut moments = BTreeMap::new();
    for prefix in ["exp_avg.", "exp_avg_sq."] {
        for (k, v) in config.upgrade_tensors(strip(prefix))? {
            moments.insert(format!("{prefix}{k}"), v);
        }
    }
    adam.load_state(&moments)?;
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

#[cfg(test)]
mod tests {
    //! The loop on a one-parameter linear regression y = 3x (plus a little noise from each
    //! step's stream), so that every run is fast and can be compared bit for bit.

    use super::*;

    use crate::checkpoint::CONFIG_KEY;
    use crate::nn::params::{Init, Params};

    /// Model files whose next checkpoint stops between its two files, as a crash would (by
    /// path: checkpoints are written on a thread of their own, and tests run side by side).
    static CRASH_BETWEEN_FILES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

    fn crash_next_save(output: PathBuf) {
        CRASH_BETWEEN_FILES.lock().unwrap().push(output);
    }

    /// Called by [`Snapshot::write`] between the model file and the state file.
    pub(super) fn crash_point(output: &std::path::Path) -> Result<()> {
        let mut armed = CRASH_BETWEEN_FILES.lock().unwrap();
        if let Some(i) = armed.iter().position(|p| p == output) {
            armed.remove(i);
            return Err(Error::config("simulated crash between the model file and the state file"));
        }
        Ok(())
    }

    /// Ten (x, y) rows with y = 3x, as x [N, 2] of (x, y) pairs.
    struct Rows {
        name: String,
        pairs: Vec<f32>,
    }

    fn rows(name: &str) -> Rows {
        Rows { name: name.into(), pairs: (0..10).flat_map(|i| [i as f32 / 10.0, 3.0 * i as f32 / 10.0]).collect() }
    }

    impl Dataset for Rows {
        fn name(&self) -> &str {
            &self.name
        }
        fn len(&self) -> usize {
            self.pairs.len() / 2
        }
        fn batch(&self, rows: &[usize], device: &Device) -> Result<Batch> {
            let x: Vec<f32> = rows.iter().flat_map(|&r| [self.pairs[2 * r], self.pairs[2 * r + 1]]).collect();
            Ok(Batch { x: Tensor::from_vec(x, (rows.len(), 2), device)?, y: None, cond: None })
        }
        fn labels(&self) -> Option<&[u32]> {
            None
        }
    }

    /// Fits w in y = w x by mean squared error.
    struct Line {
        params: ParamSet,
        w: Tensor,
        /// The loss of this training step (counted from 0 in this process) is NaN.
        nan_at: Option<u64>,
        steps: u64,
    }

    fn line() -> Line {
        let mut p = Params::init(0, &Device::Cpu);
        let w = p.tensor("w", &[1], Init::Const(0.0)).unwrap();
        Line { params: p.finish().unwrap(), w, nan_at: None, steps: 0 }
    }

    fn mse(w: &Tensor, batch: &Batch, noise: Option<&mut Rng>) -> Result<Tensor> {
        let (x, mut y) = (batch.x.narrow(1, 0, 1)?, batch.x.narrow(1, 1, 1)?);
        if let Some(rng) = noise {
            let noise = (rng.normal(y.dims(), y.device())? * 0.01)?;
            y = (y + noise)?;
        }
        Ok(x.broadcast_mul(w)?.sub(&y)?.sqr()?.mean_all()?)
    }

    impl Task for Line {
        /// Any configuration: the loop only stores it and compares it on resume.
        fn config(&self) -> ModelConfig {
            crate::models::Preset::VaeMlp.config()
        }
        fn params(&self) -> &ParamSet {
            &self.params
        }
        fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
            let mut loss = mse(&self.w, batch, Some(rng))?;
            if self.nan_at == Some(self.steps) {
                loss = (loss * f64::NAN)?;
            }
            self.steps += 1;
            let value = loss.to_scalar::<f32>()? as f64;
            Ok(StepOutput { loss, metrics: vec![("mse".into(), value)] })
        }
        fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
            let all: Vec<usize> = (0..data.len()).collect();
            let loss = mse(&self.w, &data.batch(&all, &Device::Cpu)?, None)?;
            Ok(vec![("mse".into(), loss.to_scalar::<f32>()? as f64)])
        }
    }

    /// Batches of 4 of the 10 rows: 3 steps an epoch, the last of 2 rows.
    fn options(dir: &std::path::Path, epochs: usize, resume: bool) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size: 4,
            seed: 7,
            adam: AdamConfig::with_lr(0.1),
            recipe: Recipe::default(),
            output: dir.join("line.safetensors"),
            metrics: Some(dir.join("metrics.jsonl")),
            resume,
            device: Device::Cpu,
        }
    }

    fn read(path: PathBuf) -> TensorMap {
        TensorMap::read(&InputPath::File(path), &Device::Cpu).unwrap()
    }

    fn values(map: &TensorMap, name: &str) -> Vec<f32> {
        map.get(name).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn metric_lines(dir: &std::path::Path) -> Vec<Map<String, Value>> {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn metrics_are_one_json_object_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (data, eval) = (rows("train"), rows("held-out"));
        let last =
            train(&mut line(), &data, Some(&eval), &options(dir.path(), 3, false)).unwrap().expect("three epochs ran");
        let lines = metric_lines(dir.path());
        assert_eq!(lines.len(), 3);
        for (e, l) in lines.iter().enumerate() {
            let keys: Vec<&str> = l.keys().map(String::as_str).collect();
            let mut want = ["epoch", "step", "train_mse", "images_per_s", "epoch_seconds", "eval_mse"];
            want.sort();
            assert_eq!(keys, want, "{l:?}");
            assert_eq!((l["epoch"].as_u64(), l["step"].as_u64()), (Some(e as u64 + 1), Some(3 * (e as u64 + 1))));
        }
        assert!(lines[2]["eval_mse"].as_f64() < lines[0]["eval_mse"].as_f64(), "{lines:?}");
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(text.lines().last(), Some(Value::Object(last).to_string().as_str()));
    }

    /// The model file holds the parameters and the configuration; the state beside it the
    /// parameters again, Adam's moments and the step; nothing else is left in the directory.
    #[test]
    fn each_epoch_writes_the_model_and_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = line();
        train(&mut task, &rows("train"), None, &options(dir.path(), 2, false)).unwrap();
        let model = read(dir.path().join("line.safetensors"));
        assert_eq!(model.names(), ["w"]);
        assert_eq!(values(&model, "w"), task.w.to_vec1::<f32>().unwrap());
        assert_eq!(model.metadata[CONFIG_KEY], task.config().to_json());
        assert_eq!((model.metadata[STEP_KEY].as_str(), model.metadata["genimg.seed"].as_str()), ("6", "7"));
        let state = read(dir.path().join("line.state.safetensors"));
        assert_eq!(state.names(), ["exp_avg.w", "exp_avg_sq.w", "param.w"]);
        assert_eq!(state.metadata["genimg.data"], "train (10 images)");
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        files.sort();
        assert_eq!(files, ["line.safetensors", "line.state.safetensors", "metrics.jsonl"]);
    }

    /// Two epochs, then `--resume` to four, ends exactly where four epochs in one run end,
    /// and the metric file continues with the same lines (but for the timings).
    #[test]
    fn resume_after_k_epochs_equals_an_uninterrupted_run() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (data, eval) = (rows("train"), rows("held-out"));
        train(&mut line(), &data, Some(&eval), &options(a.path(), 4, false)).unwrap();
        train(&mut line(), &data, Some(&eval), &options(b.path(), 2, false)).unwrap();
        let mut resumed = line();
        train(&mut resumed, &data, Some(&eval), &options(b.path(), 4, true)).unwrap();
        assert_eq!(resumed.steps, 6, "the resumed run made only the missing steps");
        for file in ["line.safetensors", "line.state.safetensors"] {
            let (x, y) = (read(a.path().join(file)), read(b.path().join(file)));
            assert_eq!(x.names(), y.names());
            for name in x.names() {
                assert_eq!(values(&x, name), values(&y, name), "{file}: {name}");
            }
            assert_eq!(x.metadata[STEP_KEY], "12");
        }
        let untimed = |dir: &std::path::Path| -> Vec<Map<String, Value>> {
            let mut lines = metric_lines(dir);
            for l in &mut lines {
                l.remove("images_per_s");
                l.remove("epoch_seconds");
            }
            lines
        };
        assert_eq!(untimed(a.path()), untimed(b.path()));
        let again = train(&mut line(), &data, Some(&eval), &options(b.path(), 4, true)).unwrap();
        assert!(again.is_none(), "a finished run trains no further");
        assert_eq!(metric_lines(b.path()).len(), 4);
    }

    /// A crash after an epoch's model file but before its state leaves the state an epoch
    /// behind; `--resume` repeats that epoch and ends where an uninterrupted run ends, with
    /// the model file the state's.
    #[test]
    fn a_crash_between_the_two_files_is_repaired_by_resume() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let data = rows("train");
        train(&mut line(), &data, None, &options(a.path(), 2, false)).unwrap();
        train(&mut line(), &data, None, &options(b.path(), 1, false)).unwrap();
        crash_next_save(b.path().join("line.safetensors"));
        assert!(train(&mut line(), &data, None, &options(b.path(), 2, true)).is_err());
        let step = |dir: &std::path::Path, file: &str| read(dir.join(file)).metadata[STEP_KEY].clone();
        assert_eq!(
            (step(b.path(), "line.safetensors"), step(b.path(), "line.state.safetensors")),
            ("6".into(), "3".into())
        );
        let mut resumed = line();
        train(&mut resumed, &data, None, &options(b.path(), 2, true)).unwrap();
        assert_eq!(resumed.steps, 3, "the second epoch ran again");
        let (model, state) = (read(b.path().join("line.safetensors")), read(b.path().join("line.state.safetensors")));
        assert_eq!(values(&model, "w"), values(&state, "param.w"));
        assert_eq!(values(&model, "w"), values(&read(a.path().join("line.safetensors")), "w"));
        assert_eq!((model.metadata[STEP_KEY].as_str(), state.metadata[STEP_KEY].as_str()), ("6", "6"));
    }

    #[test]
    fn resume_refuses_other_settings_and_a_missing_state() {
        let dir = tempfile::tempdir().unwrap();
        let data = rows("train");
        let missing = train(&mut line(), &data, None, &options(dir.path(), 1, true)).unwrap_err().to_string();
        assert!(missing.contains("no training state to resume from"), "{missing}");
        train(&mut line(), &data, None, &options(dir.path(), 1, false)).unwrap();
        let mut other = options(dir.path(), 2, true);
        other.seed = 8;
        let e = train(&mut line(), &data, None, &other).unwrap_err().to_string();
        assert!(e.contains("was trained with --seed 7, this run has 8"), "{e}");
        let e = train(&mut line(), &rows("other"), None, &options(dir.path(), 2, true)).unwrap_err().to_string();
        assert!(e.contains("was trained with data train (10 images), this run has other (10 images)"), "{e}");
    }

    /// A NaN loss in epoch 2 stops the run and keeps epoch 1's checkpoint.
    #[test]
    fn a_non_finite_loss_stops_and_keeps_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = Line { nan_at: Some(4), ..line() };
        let e = train(&mut task, &rows("train"), None, &options(dir.path(), 3, false)).unwrap_err();
        assert!(matches!(e, Error::Diverged(_)), "{e}");
        assert!(e.to_string().starts_with("training diverged: loss is NaN at epoch 2, step 4;"), "{e}");
        assert_eq!(read(dir.path().join("line.safetensors")).metadata[STEP_KEY], "3");
        assert_eq!(metric_lines(dir.path()).len(), 1);
    }

    #[test]
    fn nothing_to_train_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Rows { name: "empty".into(), pairs: vec![] };
        let e = train(&mut line(), &empty, None, &options(dir.path(), 1, false)).unwrap_err().to_string();
        assert_eq!(e, "empty: holds no examples, nothing to train on");
        let mut zero = options(dir.path(), 1, false);
        zero.batch_size = 0;
        assert!(train(&mut line(), &rows("train"), None, &zero).is_err());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no file is written");
    }
}
