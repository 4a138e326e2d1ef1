//! `img-fid`: FID, KID and precision / recall / density / coverage between two sets of feature
//! vectors (the metrics are in [`crate::metrics`]), and the statistics files that stand in
//! for a set (`--save-stats`, as pytorch-fid's `.npz` of mu and sigma).
//!
//! A set is read from a features `.npy` (f32 or f64 [N, D], streamed in batches of rows for
//! the mean and covariance) or from a statistics `.safetensors` file, told apart by their
//! first bytes. A statistics file holds `mu` (f64 [D]), `sigma` (f64 [D, D]) and, unless
//! written with `--no-features`, the features themselves (`features`, f32 [N, D]), which KID
//! and PRDC need; its metadata holds `format` ([`STATS_FORMAT`]) and `n` (the rows).
//!
//! With a feature model ([`ImgFid::features`]: a classifier or pytorch-fid's Inception, as
//! `img-classify --features` takes them) a `.npy` is a set of images instead, and its features
//! are computed first, batch by batch, into a temporary file.

use std::collections::BTreeMap;
use std::io::Write;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::checkpoint::ModelSource;
use crate::data::{DataSpec, PixelRange, Shard};
use crate::error::{Error, Result};
use crate::io::npy::{self, Elements};
use crate::io::safetensors::TensorMap;
use crate::io::{check_io, InputPath, OutputPath, TensorFile};
use crate::metrics::{self, Features, Moments, Stats};

/// The `format` metadata of a statistics file.
pub const STATS_FORMAT: &str = "genimg-feature-stats";

/// Feature values read per batch (the rows of about 4 MiB of f32).
const BATCH_VALUES: usize = 1 << 20;

/// What `img-fid` computes.
pub struct ImgFid {
    /// The generated set; with `save_stats`, the set whose statistics are written.
    pub samples: InputPath,
    /// The real set; `None` with `save_stats`.
    pub reference: Option<InputPath>,
    /// KID's random subsets.
    pub kid_subsets: usize,
    /// Rows of each set in a KID subset; min(1000, N_A, N_B) when `None`.
    pub kid_subset_size: Option<usize>,
    /// Nearest neighbours of the PRDC radii.
    pub k: usize,
    /// Seed of KID's subsets.
    pub seed: u64,
    /// Write the input's statistics file here instead of comparing two sets.
    pub save_stats: Option<OutputPath>,
    /// Keep the features in the statistics file (for KID and PRDC against it).
    pub stats_features: bool,
    /// Where the JSON object goes.
    pub output: OutputPath,
    /// Read `.npy` inputs as images and compute their features with this model.
    pub features: Option<FeatureModel>,
}

/// The network that turns images into features (`--features MODEL`).
pub struct FeatureModel {
    pub model: ModelSource,
    pub batch_size: usize,
    pub device: Device,
}

/// A set of features as `img-fid` reads it: its statistics, and the features unless it came
/// from a statistics file without them.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub stats: Stats,
    pub features: Option<Features>,
}

/// Compares SAMPLES with REFERENCE and writes one JSON object (see `img-fid --help`), or with
/// `save_stats` writes the statistics file of the one input.
pub fn img_fid(r: &ImgFid) -> Result<()> {
    let samples = &r.samples;
    let model = r.features.as_ref().map(|f| &f.model.path);
    let reference = match (&r.save_stats, &r.reference) {
        (Some(stats), None) => {
            check_io(&[("SAMPLES", Some(samples)), ("--features", model)], &[("--save-stats", Some(stats))])?;
            return write_stats(&read_set(samples, r)?, r.stats_features, stats);
        }
        (None, Some(reference)) => reference,
        (Some(_), Some(_)) => {
            return Err(Error::config("--save-stats writes the statistics of one set: give SAMPLES only"))
        }
        (None, None) => return Err(Error::config("give SAMPLES and REFERENCE (or SAMPLES with --save-stats)")),
    };
    let inputs = [("SAMPLES", Some(samples)), ("REFERENCE", Some(reference)), ("--features", model)];
    check_io(&inputs, &[("-o", Some(&r.output))])?;
    let a = read_set(samples, r)?;
    let b = read_set(reference, r)?;
    if a.stats.dim() != b.stats.dim() {
        return Err(Error::bad_input(
            reference,
            format!(
                "features of {} dimensions, SAMPLES ({samples}) has {}; both sets need features of the same model",
                b.stats.dim(),
                a.stats.dim()
            ),
        ));
    }
    let report = compare(&a, &b, r)?;
    let mut out = r.output.create()?;
    writeln!(out, "{report}").map_err(|e| Error::io(&r.output, e))?;
    out.finish()
}

/// The JSON object of the metrics of `a` (the samples) against `b` (the reference); KID and
/// PRDC are null when either set came without its features.
fn compare(a: &FeatureSet, b: &FeatureSet, r: &ImgFid) -> Result<Value> {
    let fid = metrics::frechet_distance(&a.stats, &b.stats)?;
    let mut report = json!({
        "fid": fid,
        "kid_mean": null, "kid_std": null, "kid_subsets": null, "kid_subset_size": null,
        "precision": null, "recall": null, "density": null, "coverage": null, "k": null,
        "n_a": a.stats.n, "n_b": b.stats.n, "dim": a.stats.dim(),
    });
    if let (Some(fa), Some(fb)) = (&a.features, &b.features) {
        let kid = metrics::kid(fa, fb, r.kid_subsets, r.kid_subset_size, r.seed)?;
        let prdc = metrics::prdc(fb, fa, r.k)?;
        let more = json!({
            "kid_mean": kid.mean, "kid_std": kid.std, "kid_subsets": kid.subsets,
            "kid_subset_size": kid.subset_size,
            "precision": prdc.precision, "recall": prdc.recall, "density": prdc.density,
            "coverage": prdc.coverage, "k": r.k,
        });
        for (key, value) in more.as_object().expect("an object") {
            report[key] = value.clone();
        }
    }
    Ok(report)
}

/// A set as the request reads it: with a feature model, a `.npy` of images goes through it.
fn read_set(input: &InputPath, r: &ImgFid) -> Result<FeatureSet> {
    let Some(net) = &r.features else { return read_feature_set(input) };
    if let TensorFile::Safetensors(map) = crate::io::read_tensor_file(input, &Device::Cpu)? {
        return read_stats(&map, input);
    }
    // Stdin was read by the check above; a pipe cannot be read twice.
    if matches!(input, InputPath::Stdin) {
        return Err(Error::bad_input(input, "with --features the images must be a file"));
    }
    let dir = tempfile::tempdir().map_err(|e| Error::io("a temporary folder", e))?;
    let path = dir.path().join("features.npy");
    crate::tools::classify::img_classify(&crate::tools::classify::ImgClassify {
        model: net.model.clone(),
        images: crate::tools::ImageSource {
            spec: DataSpec::File(input.clone()),
            split: None,
            range: PixelRange::ZeroOne,
        },
        output_kind: crate::tools::classify::ClassifyOutput::Features,
        batch_size: net.batch_size,
        shard: Shard::default(),
        seed: r.seed,
        output: OutputPath::File(path.clone()),
        device: net.device.clone(),
    })?;
    read_feature_set(&InputPath::File(path))
}

/// Reads a features `.npy` or a statistics file.
pub fn read_feature_set(input: &InputPath) -> Result<FeatureSet> {
    match crate::io::read_tensor_file(input, &Device::Cpu)? {
        TensorFile::Npy(reader) => read_features(reader, input),
        TensorFile::Safetensors(map) => read_stats(&map, input),
    }
}

/// Streams a features array [N, D] (f32 or f64): the statistics in f64, and the features.
fn read_features<R: std::io::Read>(mut reader: npy::NpyReader<R>, input: &InputPath) -> Result<FeatureSet> {
    let header = reader.header().clone();
    let &[_, dim] = header.shape.as_slice() else {
        return Err(Error::bad_input(input, format!("shape {:?}: expected features [N, D]", header.shape)));
    };
    if !matches!(header.dtype, npy::DType::F32 | npy::DType::F64) || dim == 0 {
        return Err(Error::bad_input(
            input,
            format!("{} {:?}: expected features f32 or f64 [N, D]", header.dtype.name(), header.shape),
        ));
    }
    // The covariance's accumulators and FID's products: a few D x D f64 matrices.
    crate::memory::ensure_fits(
        format!("features of {dim} dimensions (their covariance)"),
        crate::memory::bytes_of(&[8, dim, dim], 8),
    )
    .map_err(|e| Error::bad_input(input, e))?;
    let mut moments = Moments::new(dim);
    let mut features = Vec::new();
    while let Some(batch) = reader.read_rows((BATCH_VALUES / dim).max(1))? {
        let values: Vec<f64> = match batch.data {
            Elements::F32(v) => v.into_iter().map(f64::from).collect(),
            Elements::F64(v) => v,
            other => return Err(Error::bad_input(input, format!("{} rows in an f32/f64 file", other.dtype().name()))),
        };
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            let row = moments.count() + at / dim;
            return Err(Error::bad_input(input, format!("row {row} holds {}: expected finite features", values[at])));
        }
        moments.add_rows(&values);
        features.extend(values.iter().map(|&v| v as f32));
    }
    let stats = finish(moments, input)?;
    Ok(FeatureSet { stats, features: Some(Features::new(features, dim)?) })
}

fn finish(moments: Moments, input: &InputPath) -> Result<Stats> {
    if moments.count() < 2 {
        return Err(Error::bad_input(
            input,
            format!("{} feature rows: the covariance needs at least 2", moments.count()),
        ));
    }
    moments.finish()
}

/// A statistics file written by `--save-stats`.
fn read_stats(map: &TensorMap, input: &InputPath) -> Result<FeatureSet> {
    let expected =
        "expected a statistics file of img-fid --save-stats (mu f64 [D], sigma f64 [D, D], features f32 [N, D])";
    let check = |name: &str, t: &'_ Tensor, dtype: DType, shape_ok: bool| -> Result<()> {
        if t.dtype() == dtype && shape_ok {
            return Ok(());
        }
        Err(Error::bad_input(input, format!("tensor '{name}' is {:?} {:?}: {expected}", t.dtype(), t.dims())))
    };
    let (Some(mu), Some(sigma)) = (map.get("mu"), map.get("sigma")) else {
        return Err(Error::bad_input(input, format!("holds tensors {:?}: {expected}", map.names())));
    };
    check("mu", mu, DType::F64, mu.dims().len() == 1 && mu.dims()[0] > 0)?;
    let d = mu.dims()[0];
    check("sigma", sigma, DType::F64, sigma.dims() == [d, d])?;
    let features = map.get("features");
    if let Some(f) = features {
        check("features", f, DType::F32, f.dims().len() == 2 && f.dims()[1] == d)?;
    }
    let n = match (map.metadata.get("n").map(|n| n.parse::<usize>()), features) {
        (Some(Ok(n)), _) => n,
        (None, Some(f)) => f.dims()[0],
        _ => return Err(Error::bad_input(input, format!("no row count ('n' in the metadata): {expected}"))),
    };
    if let Some(f) = features.filter(|f| f.dims()[0] != n) {
        return Err(Error::bad_input(input, format!("metadata n = {n}, but the features have {} rows", f.dims()[0])));
    }
    let mu: Vec<f64> = mu.to_vec1()?;
    let sigma: Vec<f64> = sigma.flatten_all()?.to_vec1()?;
    if n < 2 || mu.iter().chain(&sigma).any(|v| !v.is_finite()) {
        return Err(Error::bad_input(input, format!("n = {n} rows or non-finite statistics: {expected}")));
    }
    let features = match features {
        Some(f) => Some(Features::new(f.flatten_all()?.to_vec1()?, d)?),
        None => None,
    };
    Ok(FeatureSet { stats: Stats { n, mu, sigma }, features })
}

/// Writes the statistics file of `set`, with its features when `with_features` (and it has
/// them).
fn write_stats(set: &FeatureSet, with_features: bool, out: &OutputPath) -> Result<()> {
    let d = set.stats.dim();
    let mut map = TensorMap::new();
    map.insert("mu", Tensor::from_vec(set.stats.mu.clone(), d, &Device::Cpu)?);
    map.insert("sigma", Tensor::from_vec(set.stats.sigma.clone(), (d, d), &Device::Cpu)?);
    if let Some(f) = set.features.as_ref().filter(|_| with_features) {
        map.insert("features", Tensor::from_vec(f.data().to_vec(), (f.rows(), d), &Device::Cpu)?);
    }
    map.metadata = BTreeMap::from([("format".into(), STATS_FORMAT.into()), ("n".into(), set.stats.n.to_string())]);
    map.write(out)
}
