//! Training, evaluation and sampling of `pixelcnn-prior` over the codes of a VQ model.

use candle_core::{DType, Tensor};

use crate::data::code_set::CodeSet;
use crate::data::codes::{CodeBatch, CodeLayout, CodeReader, CodeWriter, Level};
use crate::data::image_set::{expect_label_count, read_label_file};
use crate::data::{Batch, Dataset, Shard};
use crate::error::{Error, Result};
use crate::io::{InputPath, OutputPath};
use crate::models::pixelcnn::{sample, PixelCnn, PixelCnnConfig, SampleOptions, TopCondition};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, RowStreams, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

const EVAL_BATCH: usize = 500;

pub struct PriorTask {
    pub model: PixelCnn,
    params: ParamSet,
}

impl PriorTask {
    pub fn new(config: PixelCnnConfig, mut params: Params) -> Result<Self> {
        let model = PixelCnn::new(config, &mut params)?;
        Ok(PriorTask { model, params: params.finish()? })
    }
}

/// What a prior needs to know of its codes that the codes may not say themselves.
#[derive(Debug, Clone, Default)]
pub struct PriorShape {
    /// Codebook size of the modelled level (and of the top level), when the code file's
    /// metadata does not name it.
    pub n_embed: Option<usize>,
    /// Number of classes; by default the largest label plus one.
    pub classes: Option<usize>,
    pub channels: Option<usize>,
    pub layers: Option<usize>,
}

/// The configuration of a prior of `codes`: the preset's network over their map size,
/// codebook, classes (when labelled) and top codes (when the level is the bottom one).
pub fn prior_config(codes: &CodeSet, shape: &PriorShape) -> Result<PixelCnnConfig> {
    let codebook = |level: Level, which: &str| -> Result<usize> {
        if let (Some(named), Some(flag)) = (level.n_embed, shape.n_embed) {
            if named != flag {
                return Err(Error::bad_input(
                    &codes.name,
                    format!("names a {which} codebook of {named} codes, but --n-embed is {flag} (leave it out, or give {named})"),
                ));
            }
        }
        let n = level.n_embed.or(shape.n_embed).ok_or_else(|| {
            Error::bad_input(
                &codes.name,
                format!("does not name the {which} codebook size (codes from another program?): pass --n-embed K"),
            )
        })?;
        Ok(n)
    };
    let n_embed = codebook(codes.level, "modelled level's")?;
    codes.check_codebook(n_embed)?;
    let n_classes = match (&codes.labels, shape.classes) {
        (None, _) => None,
        (Some(labels), classes) => {
            let needed = labels.iter().max().map_or(1, |&l| l as usize + 1);
            let k = classes.unwrap_or(needed);
            if needed > k {
                return Err(Error::bad_input(&codes.name, format!("holds label {}, beyond --classes {k}", needed - 1)));
            }
            Some(k)
        }
    };
    let top = match &codes.top {
        Some((level, _)) => {
            Some(TopCondition { n_embed: codebook(*level, "top")?, height: level.height, width: level.width })
        }
        None => None,
    };
    let preset = PixelCnnConfig::pixelcnn_prior();
    Ok(PixelCnnConfig {
        n_embed,
        height: codes.level.height,
        width: codes.level.width,
        channels: shape.channels.unwrap_or(preset.channels),
        layers: shape.layers.unwrap_or(preset.layers),
        n_classes,
        top,
    })
}

/// Checks that held-out codes fit a prior configured for the training codes.
pub fn check_eval_codes(config: &PixelCnnConfig, eval: &CodeSet) -> Result<()> {
    let l = eval.level;
    let mismatch = |what: String| Err(Error::bad_input(&eval.name, what));
    if (l.height, l.width) != (config.height, config.width) {
        return mismatch(format!(
            "codes are {}x{}, the training codes {}x{}",
            l.height, l.width, config.height, config.width
        ));
    }
    eval.check_codebook(config.n_embed)?;
    if eval.top.is_some() != config.top.is_some() || eval.labels.is_some() != config.n_classes.is_some() {
        return mismatch("has other conditioning (labels or top codes) than the training codes".into());
    }
    Ok(())
}

fn conditioning<'a>(config: &PixelCnnConfig, batch: &'a Batch) -> Result<(Option<&'a Tensor>, Option<&'a Tensor>)> {
    let labels = if config.n_classes.is_some() {
        Some(batch.y.as_ref().ok_or_else(|| Error::config("this prior is class-conditional: its codes need labels"))?)
    } else {
        None
    };
    Ok((labels, if config.top.is_some() { batch.cond.as_ref() } else { None }))
}

/// Nats to bits.
const LOG2_E: f64 = std::f64::consts::LOG2_E;

impl Task for PriorTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::PixelCnn(self.model.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// Cross-entropy of the codes, nats per code; reported in bits per code.
    fn train_step(&mut self, batch: &Batch, _rng: &mut Rng) -> Result<StepOutput> {
        let (labels, top) = conditioning(&self.model.config, batch)?;
        let loss = self.model.loss(&batch.x, labels, top)?;
        let nats = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(StepOutput { loss, metrics: vec![("bits_per_code".into(), nats * LOG2_E)] })
    }

    /// The held-out negative log-likelihood in bits per code.
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        let model = PixelCnn::frozen_copy(self.model.config.clone(), &self.params)?;
        let mut means = Means::default();
        let rows: Vec<usize> = (0..data.len()).collect();
        for chunk in rows.chunks(EVAL_BATCH) {
            let batch = data.batch(chunk, &self.params.device())?;
            let (labels, top) = conditioning(&model.config, &batch)?;
            let nats = model.loss(&batch.x, labels, top)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            means.add(chunk.len(), [("bits_per_code", nats * LOG2_E * chunk.len() as f64)]);
        }
        Ok(means.finish())
    }
}

/// The class of each of `n` samples, given per batch so that sampling a huge N builds no
/// list of N labels.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleClasses {
    /// One class for all.
    One(u32),
    /// `classes` equal blocks of 0, 1, ... over `n` samples, in order (so a grid of
    /// n / classes columns shows one class per row).
    Blocks { n: usize, classes: usize },
    /// One class per sample, as given.
    Given(Vec<u32>),
}

impl SampleClasses {
    /// The classes of samples `start..start + rows`.
    pub fn rows(&self, start: usize, rows: usize) -> Vec<u32> {
        match self {
            SampleClasses::One(k) => vec![*k; rows],
            SampleClasses::Blocks { n, classes } => {
                (start..start + rows).map(|i| (i as u128 * *classes as u128 / (*n).max(1) as u128) as u32).collect()
            }
            SampleClasses::Given(labels) => labels[start..start + rows].to_vec(),
        }
    }

    /// Checks that every class is below `k`.
    pub fn check(&self, k: usize) -> Result<()> {
        match self {
            SampleClasses::One(c) => check_classes(&[*c], k),
            SampleClasses::Blocks { .. } => Ok(()),
            SampleClasses::Given(labels) => check_classes(labels, k),
        }
    }
}

/// Checks that every class of `labels` is below `k`.
fn check_classes(labels: &[u32], k: usize) -> Result<()> {
    match labels.iter().find(|&&l| l as usize >= k) {
        Some(bad) => {
            Err(Error::config(format!("class {bad} is out of range: the prior knows {k} classes (0..{})", k - 1)))
        }
        None => Ok(()),
    }
}

/// What to sample, as the user asked for it.
#[derive(Debug, Clone, Default)]
pub struct SampleRequest {
    /// Number of samples; by default one per code map of `top` or label of `labels`, else 64.
    pub n: Option<usize>,
    /// One class for every sample.
    pub class: Option<u32>,
    /// One class per sample (.npy integers [N]).
    pub labels: Option<InputPath>,
    /// Top codes to condition a bottom prior on, instead of sampling them.
    pub top: Option<InputPath>,
    /// The rows of the N samples to draw: sample i is the same in any shard.
    pub shard: Shard,
}

/// Top codes read from a file batch by batch: its top level, or its only level.
struct GivenTop {
    reader: CodeReader,
    n: usize,
    level: Level,
    /// Whether the codes are the file's top level (else its only one).
    of_two: bool,
    labels: bool,
}

impl GivenTop {
    fn open(path: &InputPath) -> Result<Self> {
        let reader = CodeReader::open(path)?;
        let layout = reader.layout().clone();
        let (level, of_two) = match layout.top {
            Some(level) => (level, true),
            None => (layout.bottom, false),
        };
        Ok(GivenTop { reader, n: layout.n, level, of_two, labels: layout.labels })
    }

    /// Checks the codes' map size against the top conditioning of a bottom prior.
    fn check(&self, prior: &PixelCnnConfig) -> Result<()> {
        let Some(t) = &prior.top else {
            return Err(Error::config("this prior is not conditioned on top codes, so --top does not apply"));
        };
        if (self.level.height, self.level.width) != (t.height, t.width) {
            return Err(Error::bad_input(
                self.reader.name(),
                format!(
                    "top codes are {}x{}, the prior is conditioned on {}x{}",
                    self.level.height, self.level.width, t.height, t.width
                ),
            ));
        }
        Ok(())
    }

    /// The next `rows` code maps, each code checked against the codebook of `n_embed`, and
    /// their labels when the file has them.
    fn read(&mut self, rows: usize, n_embed: usize) -> Result<(Vec<u32>, Option<Vec<u32>>)> {
        let first = self.reader.position();
        let name = self.reader.name().to_string();
        let batch =
            self.reader.read(rows)?.filter(|b| b.n == rows).ok_or_else(|| Error::bad_input(&name, "ended early"))?;
        let codes = if self.of_two { batch.top.unwrap_or_default() } else { batch.bottom };
        if let Some(i) = codes.iter().position(|&c| c as usize >= n_embed) {
            return Err(Error::bad_input(
                &name,
                format!(
                    "top code {} of image {} is outside the codebook of {n_embed}",
                    codes[i],
                    first + i / self.level.len().max(1)
                ),
            ));
        }
        Ok((codes, batch.labels))
    }
}

/// How samples are drawn.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    pub opts: SampleOptions,
    /// Samples drawn together; changes no sample.
    pub batch_size: usize,
    /// Sample i draws from the stream (seed, Sample, i): its top codes, then its bottom ones.
    pub seed: u64,
}

/// Samples from `prior` (and first from `top_prior` for the top codes, when given) as
/// `request` asks and writes the codes to `out` (see [`sample_to`]).
pub fn sample_codes(
    prior: &PixelCnn,
    top_prior: Option<&PixelCnn>,
    request: &SampleRequest,
    draw: &Draw,
    out: &OutputPath,
) -> Result<()> {
    let given = request.top.as_ref().map(GivenTop::open).transpose()?;
    if let Some(g) = &given {
        g.check(&prior.config)?;
    }
    let given_n = given.as_ref().map(|g| g.n);
    let requested = request.labels.as_ref().map(|p| read_label_file(p).map(|l| (p, l))).transpose()?;
    let n = match (request.n, given_n) {
        (Some(n), Some(g)) if n != g => {
            return Err(Error::config(format!("-n {n}, but the top codes hold {g} code maps")));
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => requested.as_ref().map_or(64, |(_, l)| l.len()),
    };
    let classes = [Some(prior), top_prior].into_iter().flatten().filter_map(|p| p.config.n_classes).max();
    let labels = match classes {
        None if request.class.is_some() || requested.is_some() => {
            return Err(Error::config("the prior is not class-conditional, so --class and --labels do not apply"));
        }
        None => None,
        Some(k) => {
            let checked = |l: SampleClasses| l.check(k).map(|()| Classes::Of(l));
            Some(match (request.class, requested, given.as_ref().is_some_and(|g| g.labels)) {
                (Some(c), _, _) => checked(SampleClasses::One(c))?,
                (None, Some((path, l)), _) => checked(SampleClasses::Given(expect_label_count(path, l, n)?))?,
                (None, None, true) => Classes::OfTop(k),
                (None, None, false) => checked(SampleClasses::Blocks { n, classes: k })?,
            })
        }
    };
    sample_to(prior, top(top_prior, given, request)?, labels, n, request.shard, draw, out)
}

/// Where the top codes come from: the top prior, or the file given, restricted to the rows
/// of the request's shard of its code maps.
fn top<'a>(
    top_prior: Option<&'a PixelCnn>,
    given: Option<GivenTop>,
    request: &SampleRequest,
) -> Result<Option<TopCodes<'a>>> {
    Ok(match (top_prior, given) {
        (Some(p), _) => Some(TopCodes::Prior(p)),
        (None, Some(mut g)) => {
            g.reader.only(request.shard.rows(g.n))?;
            Some(TopCodes::Given(Box::new(g)))
        }
        (None, None) => None,
    })
}

/// Where the top codes of a bottom-level sample come from.
enum TopCodes<'a> {
    /// Sampled first from this top prior.
    Prior(&'a PixelCnn),
    /// Read from a file (boxed: its reader is large beside a reference).
    Given(Box<GivenTop>),
}

/// Where the samples' classes come from.
enum Classes {
    Of(SampleClasses),
    /// The labels of the given top codes, read with them, of a prior of this many classes.
    OfTop(usize),
}

/// Draws the rows of `shard` of `n` samples in batches and writes them in the form
/// vq-decode reads: with a bottom prior, a `.safetensors` file of `top`, `bottom` (and
/// `labels` for class-conditional priors); with one prior alone, an `.npy` array of its
/// codes. Sample i draws from its own stream, so neither the batch size nor the shard
/// changes it.
fn sample_to(
    prior: &PixelCnn,
    mut top: Option<TopCodes>,
    labels: Option<Classes>,
    n: usize,
    shard: Shard,
    draw: &Draw,
    out: &OutputPath,
) -> Result<()> {
    let (opts, batch_size, seed) = (&draw.opts, draw.batch_size.max(1), draw.seed);
    let device = prior.device().clone();
    let c = &prior.config;
    let level = |c: &PixelCnnConfig| Level { height: c.height, width: c.width, n_embed: Some(c.n_embed) };
    let top_level = match (&top, &c.top) {
        (Some(TopCodes::Prior(p)), Some(t)) => {
            let pc = &p.config;
            if (pc.height, pc.width, pc.n_embed) != (t.height, t.width, t.n_embed) {
                return Err(Error::config(format!(
                    "the top prior models {}x{} codes of {}, the bottom prior is conditioned on {}x{} codes of {}",
                    pc.height, pc.width, pc.n_embed, t.height, t.width, t.n_embed
                )));
            }
            Some(level(pc))
        }
        (Some(TopCodes::Given(_)), Some(t)) => {
            Some(Level { height: t.height, width: t.width, n_embed: Some(t.n_embed) })
        }
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::config("this prior is conditioned on top codes: give a top prior or --top"))
        }
        (Some(_), None) => return Err(Error::config("this prior is not conditioned on top codes, so it takes none")),
    };
    let rows = shard.rows(n);
    let layout =
        CodeLayout { n: rows.len(), top: top_level, bottom: level(c), labels: labels.is_some() && top_level.is_some() };
    let mut writer = CodeWriter::create(out, layout)?;
    for start in rows.clone().step_by(batch_size) {
        let len = batch_size.min(rows.end - start);
        let mut rngs = RowStreams::new(seed, Stream::Sample, start..start + len);
        let given = match (&mut top, &c.top) {
            (Some(TopCodes::Given(g)), Some(t)) => Some(g.read(len, t.n_embed)?),
            _ => None,
        };
        let classes = match (&labels, &given) {
            (Some(Classes::Of(l)), _) => Some(l.rows(start, len)),
            (Some(Classes::OfTop(k)), Some((_, Some(l)))) => {
                check_classes(l, *k)?;
                Some(l.clone())
            }
            _ => None,
        };
        let y = classes.as_deref().map(|l| Tensor::new(l, &device)).transpose()?;
        let top_codes = match (&top, given, top_level) {
            (Some(TopCodes::Prior(p)), _, Some(_)) => {
                let y = p.config.n_classes.and(y.as_ref());
                Some(sample(p, len, y, None, opts, &mut rngs)?)
            }
            (_, Some((codes, _)), Some(t)) => Some(Tensor::from_vec(codes, (len, t.height, t.width), &device)?),
            _ => None,
        };
        let y_bottom = c.n_classes.and(y.as_ref());
        let bottom = sample(prior, len, y_bottom, top_codes.as_ref(), opts, &mut rngs)?;
        let flat = |t: &Tensor| -> Result<Vec<u32>> { Ok(t.flatten_all()?.to_vec1::<u32>()?) };
        writer.write(&CodeBatch {
            n: len,
            top: top_codes.as_ref().map(flat).transpose()?,
            bottom: flat(&bottom)?,
            labels: classes,
        })?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n_embed: Option<usize>, labels: Option<Vec<u32>>, top: bool) -> CodeSet {
        let level = Level { height: 4, width: 4, n_embed };
        let top = top.then(|| (Level { height: 2, width: 2, n_embed: Some(8) }, vec![1; 3 * 4]));
        CodeSet { name: "c.safetensors".into(), n: 3, level, codes: vec![5; 3 * 16], labels, top }
    }

    #[test]
    fn the_config_takes_map_codebook_classes_and_top_codes_from_the_codes() {
        let c = prior_config(&codes(Some(16), Some(vec![0, 2, 1]), true), &PriorShape::default()).unwrap();
        let preset = PixelCnnConfig::pixelcnn_prior();
        assert_eq!((c.n_embed, c.height, c.width, c.n_classes), (16, 4, 4, Some(3)));
        assert_eq!(c.top, Some(TopCondition { n_embed: 8, height: 2, width: 2 }));
        assert_eq!((c.channels, c.layers), (preset.channels, preset.layers));
        let shape = PriorShape { classes: Some(10), channels: Some(8), layers: Some(2), n_embed: None };
        let c = prior_config(&codes(Some(16), Some(vec![0, 2, 1]), false), &shape).unwrap();
        assert_eq!((c.n_classes, c.channels, c.layers, c.top), (Some(10), 8, 2, None));
        assert_eq!(prior_config(&codes(Some(16), None, false), &PriorShape::default()).unwrap().n_classes, None);
    }

    #[test]
    fn a_codebook_size_flag_must_agree_with_the_files() {
        let same = PriorShape { n_embed: Some(16), ..Default::default() };
        assert_eq!(prior_config(&codes(Some(16), None, false), &same).unwrap().n_embed, 16);
        let other = PriorShape { n_embed: Some(7), ..Default::default() };
        let e = prior_config(&codes(Some(16), None, false), &other).unwrap_err().to_string();
        assert!(e.contains("codebook of 16 codes, but --n-embed is 7"), "{e}");
    }

    #[test]
    fn a_codebook_size_the_file_does_not_name_comes_from_the_flag_and_must_hold_the_codes() {
        let e = prior_config(&codes(None, None, false), &PriorShape::default()).unwrap_err().to_string();
        assert!(e.contains("c.safetensors") && e.contains("--n-embed"), "{e}");
        let shape = PriorShape { n_embed: Some(6), ..Default::default() };
        assert_eq!(prior_config(&codes(None, None, false), &shape).unwrap().n_embed, 6);
        let small = PriorShape { n_embed: Some(5), ..Default::default() };
        assert!(prior_config(&codes(None, None, false), &small).is_err(), "code 5 does not fit a codebook of 5");
        let few = PriorShape { classes: Some(2), ..Default::default() };
        let e = prior_config(&codes(Some(16), Some(vec![0, 2, 1]), false), &few).unwrap_err().to_string();
        assert!(e.contains("label 2, beyond --classes 2"), "{e}");
    }

    #[test]
    fn held_out_codes_must_match_the_training_codes() {
        let config = prior_config(&codes(Some(16), Some(vec![0, 1, 1]), true), &PriorShape::default()).unwrap();
        assert!(check_eval_codes(&config, &codes(Some(16), Some(vec![1, 0, 0]), true)).is_ok());
        let e = check_eval_codes(&config, &codes(Some(16), None, true)).unwrap_err().to_string();
        assert!(e.contains("other conditioning"), "{e}");
        let mut other = codes(Some(16), Some(vec![0, 0, 0]), true);
        other.level.height = 8;
        assert!(check_eval_codes(&config, &other).unwrap_err().to_string().contains("codes are 8x4"));
    }

    #[test]
    fn default_classes_come_in_equal_blocks_in_order() {
        assert_eq!(SampleClasses::Blocks { n: 6, classes: 3 }.rows(0, 6), [0, 0, 1, 1, 2, 2]);
        assert_eq!(SampleClasses::Blocks { n: 4, classes: 10 }.rows(0, 4), [0, 2, 5, 7]);
        assert_eq!(SampleClasses::One(7).rows(5, 3), [7, 7, 7]);
        assert!(SampleClasses::Blocks { n: 0, classes: 10 }.rows(0, 0).is_empty());
    }

    /// A batch's classes are those of its rows in the whole run, however far in it starts.
    #[test]
    fn classes_come_per_batch_without_a_list_of_n() {
        let blocks = SampleClasses::Blocks { n: 6, classes: 3 };
        assert_eq!(blocks.rows(3, 3), [1, 2, 2]);
        let huge = SampleClasses::Blocks { n: 1 << 40, classes: 10 };
        assert_eq!(huge.rows((1 << 40) - 2, 2), [9, 9]);
        assert_eq!(SampleClasses::Given(vec![4, 5, 6]).rows(1, 2), [5, 6]);
        assert!(SampleClasses::One(10).check(10).is_err() && SampleClasses::One(9).check(10).is_ok());
        assert!(SampleClasses::Given(vec![1, 12]).check(10).unwrap_err().to_string().contains("class 12"));
    }
}
