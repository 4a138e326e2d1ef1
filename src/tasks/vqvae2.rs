//! Training and evaluation for `vqvae2-mnist` (and plain VQ-VAE with one level).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::data::codes::{CodeBatch, CodeLayout, CodeReader, CodeWriter, Level, LevelSpec};
use crate::data::grid::{grid_png, GridOptions};
use crate::data::pack::Images;
use crate::data::stream::ImageStream;
use crate::data::PixelRange;
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, NpyWriter};
use crate::io::OutputPath;
use crate::models::vqvae2::{Forward, VqVae2, VqVae2Config};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

const EVAL_BATCH: usize = 250;

pub struct VqTask {
    pub model: VqVae2,
    params: ParamSet,
    /// The last step's encoder outputs and codes, for the codebook update after it.
    pending: Option<(Forward, u64)>,
}

impl VqTask {
    pub fn new(config: VqVae2Config, mut params: Params) -> Result<Self> {
        let model = VqVae2::new(config, &mut params)?;
        Ok(VqTask { model, params: params.finish()?, pending: None })
    }
}

/// Images in [0,1] to the model's [-1,1].
fn to_model_range(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(2.0, -1.0)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Task for VqTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::VqVae2(self.model.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// MSE reconstruction (on the [-1,1] scale) + commitment weight * commitment terms.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let x = to_model_range(&batch.x)?;
        let out = self.model.forward(&x)?;
        let mse = (&out.reconstruction - &x)?.sqr()?.mean_all()?;
        let mut commitment = out.bottom.commitment.clone();
        let mut metrics =
            vec![("mse".to_string(), scalar(&mse)?), ("commitment_b".to_string(), scalar(&out.bottom.commitment)?)];
        if let Some(top) = &out.top {
            commitment = (commitment + &top.commitment)?;
            metrics.push(("commitment_t".to_string(), scalar(&top.commitment)?));
        }
        let loss = (mse + (commitment * self.model.config.commitment)?)?;
        // The codebook update after the optimizer step draws from this step's stream.
        let seed = rand::Rng::random::<u64>(rng.inner());
        self.pending = Some((out, seed));
        Ok(StepOutput { loss, metrics })
    }

    /// The EMA codebook updates (and restarts) with the step's encoder outputs.
    fn after_step(&mut self) -> Result<()> {
        let Some((out, seed)) = self.pending.take() else { return Ok(()) };
        let mut rng = Rng::new(seed, Stream::Step, 0);
        let (top_q, bottom_q) = self.model.quantizers_mut();
        if let (Some(q), Some(inputs), Some(top)) = (top_q, &out.top_inputs, &out.top) {
            q.update(inputs, &top.codes, &mut rng)?;
        }
        bottom_q.update(&out.bottom_inputs, &out.bottom.codes, &mut rng)
    }

    /// Test MSE, and per level the codes in use and the perplexity over the whole set.
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        evaluate(&VqVae2::frozen_copy(self.model.config.clone(), &self.params)?, data, &self.params.device())
    }

    fn extra_state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        let (top, bottom) = self.model.quantizers();
        for (name, q) in [("quantize_t", top), ("quantize_b", Some(bottom))] {
            if let Some(q) = q {
                out.insert(format!("{name}.idle"), Tensor::new(q.idle(), &Device::Cpu)?);
            }
        }
        Ok(out)
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let (top, bottom) = self.model.quantizers_mut();
        for (name, q) in [("quantize_t", top), ("quantize_b", Some(bottom))] {
            if let (Some(q), Some(t)) = (q, state.get(&format!("{name}.idle"))) {
                q.set_idle(t.to_dtype(DType::U32)?.to_vec1()?)?;
            }
        }
        Ok(())
    }
}

/// Reconstruction MSE on the [-1,1] scale; codes in use and perplexity per level.
pub fn evaluate(model: &VqVae2, data: &dyn Dataset, device: &Device) -> Result<Metrics> {
    let mut means = Means::default();
    let (mut top_codes, mut bottom_codes) = (Vec::new(), Vec::new());
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(EVAL_BATCH) {
        let x = to_model_range(&data.batch(chunk, device)?.x)?;
        let out = model.forward(&x)?;
        let mse = (&out.reconstruction - &x)?.sqr()?.mean_all()?;
        means.add(chunk.len(), [("mse", scalar(&mse)? * chunk.len() as f64)]);
        bottom_codes.push(out.bottom.codes.flatten_all()?);
        if let Some(t) = &out.top {
            top_codes.push(t.codes.flatten_all()?);
        }
    }
    let mut metrics = means.finish();
    let (top_q, bottom_q) = model.quantizers();
    for (level, q, codes) in [("t", top_q, top_codes), ("b", Some(bottom_q), bottom_codes)] {
        if let (Some(q), false) = (q, codes.is_empty()) {
            let (used, perplexity) = q.usage(&Tensor::cat(&codes, 0)?)?;
            metrics.push((format!("codes_used_{level}"), used as f64));
            metrics.push((format!("perplexity_{level}"), perplexity));
        }
    }
    Ok(metrics)
}

/// What each level of a model's codes looks like: top (two levels) and bottom.
pub fn code_specs(model: &VqVae2) -> (Option<LevelSpec>, LevelSpec) {
    let (top, bottom) = model.config.code_sizes();
    let spec = |(height, width)| LevelSpec { height, width, n_embed: model.config.n_embed };
    (top.map(spec), spec(bottom))
}

fn level(spec: LevelSpec) -> Level {
    Level { height: spec.height, width: spec.width, n_embed: Some(spec.n_embed) }
}

/// Encodes images batch by batch to codes: an `.npy` [N, H, W] for one level, else a
/// `.safetensors` file with `top`, `bottom` and, when the images have them, `labels`.
pub fn encode(model: &VqVae2, images: &mut ImageStream, out: &OutputPath, device: &Device) -> Result<()> {
    let (top, bottom) = code_specs(model);
    let layout =
        CodeLayout { n: images.len(), top: top.map(level), bottom: level(bottom), labels: images.has_labels() };
    let mut writer = CodeWriter::create(out, layout)?;
    let codes = |t: &Tensor| -> Result<Vec<u32>> { Ok(t.flatten_all()?.to_vec1::<u32>()?) };
    while let Some(batch) = images.next_batch(device)? {
        let x = to_model_range(&batch.x)?;
        let mut out =
            CodeBatch { n: x.dim(0)?, labels: batch.y.map(|y| y.to_vec1::<u32>()).transpose()?, ..Default::default() };
        for (start, len) in compute_chunks(out.n) {
            let encoded = model.encode(&x.narrow(0, start, len)?)?;
            if let Some(q) = encoded.top {
                out.top.get_or_insert_with(Vec::new).extend(codes(&q.codes)?);
            }
            out.bottom.extend(codes(&encoded.bottom.codes)?);
        }
        writer.write(&out)?;
    }
    writer.finish()
}

/// Images the network runs on at once, however many a batch of the file holds: a few
/// hundred keep every layer's buffers small enough to be reused from one chunk to the next,
/// where a batch of 1,000 in one piece spent a third of a run faulting in fresh pages.
const COMPUTE_CHUNK: usize = 250;

/// (start, length) of the chunks of `n` images.
fn compute_chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(COMPUTE_CHUNK).map(move |s| (s, COMPUTE_CHUNK.min(n - s)))
}

/// Where decoded images go.
pub enum DecodeOutput {
    /// `.npy` f32 [N, C, H, W] in the given range.
    Array(OutputPath, PixelRange),
    /// One PNG grid of all images, `cols` per row.
    Png(OutputPath, Option<usize>),
}

/// Decodes codes batch by batch to images. Codes that do not fit the model (a missing
/// level, another spatial size or codebook, a code outside it) are errors naming the file.
pub fn decode(
    model: &VqVae2,
    codes: &mut CodeReader,
    out: &DecodeOutput,
    batch_size: usize,
    device: &Device,
) -> Result<()> {
    let (top_spec, bottom_spec) = code_specs(model);
    let layout = codes.layout().clone();
    let source = codes.name().to_string();
    layout.check(&source, top_spec, bottom_spec)?;
    let g = model.config.geometry();
    let n = layout.n;
    enum Sink<'a> {
        Array(NpyWriter<crate::io::Output>, &'a OutputPath, PixelRange),
        Png(Vec<u8>, &'a OutputPath, Option<usize>),
    }
    let mut sink = match out {
        DecodeOutput::Array(path, range) => Sink::Array(
            NpyWriter::new(path.create()?, NpyDType::F32, &[n, g.channels, g.height, g.width])
                .map_err(|e| Error::io(path, e))?,
            path,
            *range,
        ),
        DecodeOutput::Png(path, cols) => Sink::Png(Vec::new(), path, *cols),
    };
    let map = |spec: LevelSpec, values: Vec<u32>, rows: usize| {
        Tensor::from_vec(values, (rows, spec.height, spec.width), device)
    };
    let mut done = codes.position();
    while let Some(batch) = codes.read(batch_size)? {
        batch.check_range(&source, done, top_spec.map(|s| s.n_embed), bottom_spec.n_embed)?;
        let rows = batch.n;
        let top = match (top_spec, batch.top) {
            (Some(spec), Some(values)) => Some(map(spec, values, rows)?),
            _ => None,
        };
        let bottom = map(bottom_spec, batch.bottom, rows)?;
        let mut unit = Vec::with_capacity(rows * g.pixels());
        for (start, len) in compute_chunks(rows) {
            let top = top.as_ref().map(|t| t.narrow(0, start, len)).transpose()?;
            let images = model.decode_codes(top.as_ref(), &bottom.narrow(0, start, len)?)?;
            unit.extend(to_unit_range(&images)?.flatten_all()?.to_vec1::<f32>()?);
        }
        match &mut sink {
            Sink::Array(writer, path, range) => {
                let values: Vec<f32> = unit.iter().map(|&v| range.from_unit(v)).collect();
                writer.write_rows(&values).map_err(|e| Error::io(path, e))?;
            }
            Sink::Png(pixels, ..) => pixels.extend(unit.iter().copied().map(crate::data::convert::unit_to_u8)),
        }
        done += rows;
    }
    match sink {
        Sink::Array(writer, path, _) => writer.finish().map_err(|e| Error::io(path, e))?.finish(),
        Sink::Png(_, _, _) if n == 0 => Err(Error::bad_input(&source, "holds no codes, so there is nothing to draw")),
        Sink::Png(pixels, path, cols) => {
            let images = Images { count: n, channels: g.channels, height: g.height, width: g.width, pixels };
            path.write_all(&grid_png(&images, &GridOptions { cols, pad: 2, scale: 1 }, &source)?)
        }
    }
}

/// The model's [-1, 1] images to [0, 1], clamped: the decoder's output is unbounded.
pub fn to_unit_range(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(0.5, 0.5)?.clamp(0f32, 1f32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, Geometry};
    use crate::io::InputPath;

    fn tiny(levels: usize) -> VqTask {
        let config = VqVae2Config {
            channel: 16,
            n_res_channel: 8,
            embed_dim: 8,
            n_embed: 32,
            levels,
            ..VqVae2Config::vqvae2_mnist()
        };
        VqTask::new(config, Params::init(1, &Device::Cpu)).unwrap()
    }

    /// vq-decode(vq-encode(x)) is the model's own reconstruction, in both code forms.
    #[test]
    fn decoding_the_codes_gives_the_reconstruction() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..7 * 28 * 28).map(|i| ((i * 37) % 256) as u8).collect();
        let images = dir.path().join("x.npy");
        std::fs::write(&images, crate::io::npy::to_bytes(&[7, 28, 28], &pixels)).unwrap();
        let d = Device::Cpu;
        for levels in [1, 2] {
            let model = tiny(levels).model;
            let g = Geometry { channels: 1, height: 32, width: 32 };
            let spec = DataSpec::File(InputPath::File(images.clone()));
            let mut stream = ImageStream::open(&spec, None, PixelRange::ZeroOne, Some(g), 3).unwrap();
            let codes = dir.path().join(format!("codes{levels}"));
            encode(&model, &mut stream, &OutputPath::File(codes.clone()), &d).unwrap();
            let mut reader = CodeReader::open(&InputPath::File(codes)).unwrap();
            let out = dir.path().join("r.npy");
            decode(
                &model,
                &mut reader,
                &DecodeOutput::Array(OutputPath::File(out.clone()), PixelRange::ZeroOne),
                2,
                &d,
            )
            .unwrap();
            let bytes = std::fs::read(&out).unwrap();
            let decoded = crate::io::npy::NpyReader::new(&bytes[..], None, "r").unwrap().read_all().unwrap();
            let mut all = ImageStream::open(&spec, None, PixelRange::ZeroOne, Some(g), 7).unwrap();
            let x = to_model_range(&all.next_batch(&d).unwrap().unwrap().x).unwrap();
            let want = to_unit_range(&model.forward(&x).unwrap().reconstruction).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let crate::io::npy::Elements::F32(got) = decoded.data else { panic!("f32 expected") };
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "levels {levels}: {worst}");
        }
    }

    /// A state dict with known values (every tensor filled with its position in name order
    /// plus a ramp) loads and saves back unchanged: names, shapes, values, buffers.
    #[test]
    fn a_state_dict_with_known_values_round_trips() {
        let fresh = tiny(2).params.to_tensor_map().unwrap();
        let mut known = std::collections::BTreeMap::new();
        for (i, (name, t)) in fresh.tensors.iter().enumerate() {
            let n = t.elem_count();
            let values: Vec<f32> = (0..n).map(|j| i as f32 + j as f32 / n as f32).collect();
            known.insert(name.clone(), Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap());
        }
        let config = tiny(2).model.config;
        let task = VqTask::new(config, Params::load(known.clone(), "known", &Device::Cpu)).unwrap();
        let back = task.params.to_tensor_map().unwrap();
        assert_eq!(back.names(), known.keys().map(String::as_str).collect::<Vec<_>>());
        for (name, t) in &known {
            let b = back.get(name).unwrap();
            assert_eq!(b.dims(), t.dims(), "{name}");
            assert_eq!(
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{name}"
            );
        }
    }
}
