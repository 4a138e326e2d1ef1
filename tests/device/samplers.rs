//! The samplers on the CPU and on the device under test, from the same seed: the PixelCNN's
//! plain and cached samplers, greedy and at temperature 1, and the U-Net's DDIM and
//! ancestral chains.

use candle_core::{Device, Tensor};
use genimg::diffusion::{ddim, ddpm, DdimOptions, DdpmOptions, Schedule, Variance};
use genimg::models::ddpm::UNet;
use genimg::models::pixelcnn::{sample, PixelCnn, PixelCnnConfig, SampleMethod, SampleOptions};
use genimg::nn::Params;
use genimg::rng::{Rng, RowStreams, Stream};
use rand::Rng as _;

use crate::cases::{self, integers, CLASSES};
use crate::harness::{assert_same_codes, assert_within, device_under_test, host, max_abs, to};
use crate::training::SEED;

/// Samples per run.
const N: usize = 2;
/// Greedy sampling takes the largest logit; the reference's largest must lead the second by
/// this much (relative to max(1, the largest)): twice the forward tolerance, so that the codes
/// can differ only where the logits break it. Checked on the CPU per map; maps with a nearer
/// tie are not compared (at seed 7 the bottom prior's map 1 has one of 8.8e-6; map 0's least
/// gap is 6.3e-4; rounding moves logits by about 1e-6).
const GREEDY_GAP: f64 = 2e-4;
/// The probabilities of a code under teacher forcing: max |cpu - device| <= PROBABILITY.
const PROBABILITY: f64 = 1e-4;
/// How far the sampler's own logits may move a CDF boundary from the teacher-forced ones'
/// (the cached sampler computes them in another order).
const CDF_SLACK: f64 = 1e-5;
/// A diffusion chain's final images: max |cpu - device| <= DIFFUSION.
const DIFFUSION: f64 = 1e-3;

/// A PixelCNN prior on the CPU and on the device, and its conditioning on both.
struct Prior {
    models: [PixelCnn; 2],
    labels: [Option<Tensor>; 2],
    top: [Option<Tensor>; 2],
}

impl Prior {
    fn new(config: PixelCnnConfig, device: &Device) -> Self {
        let build = |d: &Device| PixelCnn::new(config.clone(), &mut Params::init(SEED, d)).unwrap();
        let labels = config.n_classes.map(|_| integers(&[N], CLASSES, 21));
        let top = config.top.as_ref().map(|t| integers(&[N, t.height, t.width], t.n_embed, 22));
        let moved = |t: &Option<Tensor>| t.as_ref().map(|t| to(t, device));
        let (labels_d, top_d) = (moved(&labels), moved(&top));
        Prior { models: [build(&Device::Cpu), build(device)], labels: [labels, labels_d], top: [top, top_d] }
    }

    /// Codes drawn on side `i` (0: the CPU).
    fn sample(&self, i: usize, opts: &SampleOptions) -> Tensor {
        let mut rngs = RowStreams::new(SEED, Stream::Sample, 0..N);
        sample(&self.models[i], N, self.labels[i].as_ref(), self.top[i].as_ref(), opts, &mut rngs).expect("sampling")
    }

    /// Logits [N, E, H, W] on side `i` of each code of `codes` (the CPU's) given those before it.
    fn teacher_forced(&self, i: usize, codes: &Tensor) -> Vec<f64> {
        let device = self.models[i].device().clone();
        host(&self.models[i].forward(&to(codes, &device), self.labels[i].as_ref(), self.top[i].as_ref()).unwrap())
    }
}

/// The logits of code map `b` at raster position `p`, from [N, E, H, W] values.
fn at(logits: &[f64], e: usize, hw: usize, b: usize, p: usize) -> Vec<f64> {
    (0..e).map(|k| logits[(b * e + k) * hw + p]).collect()
}

fn greedy(what: &str, config: PixelCnnConfig, method: SampleMethod) {
    let Some(device) = device_under_test() else { return };
    let (e, hw) = (config.n_embed, config.height * config.width);
    let prior = Prior::new(config, &device);
    let opts = SampleOptions { top_k: Some(1), method, ..SampleOptions::default() };
    let reference = prior.sample(0, &opts);
    let logits = prior.teacher_forced(0, &reference);
    // Maps with a near-tie anywhere are left out: the two sides may break it either way.
    let clear: Vec<usize> = (0..N)
        .filter(|&b| {
            (0..hw).all(|p| {
                let mut l = at(&logits, e, hw, b, p);
                l.sort_by(|x, y| y.total_cmp(x));
                (l[0] - l[1]) / l[0].abs().max(1.0) > GREEDY_GAP
            })
        })
        .collect();
    assert!(!clear.is_empty(), "{what}: every map has a near-tie of its two best codes at seed {SEED}; pick another");
    let tested = prior.sample(1, &opts);
    for b in clear {
        let map = |t: &Tensor| t.narrow(0, b, 1).unwrap();
        assert_same_codes(&format!("{what}, greedy, map {b}"), &map(&reference), &map(&tested));
    }
}

/// At temperature 1 the two sides draw the same codes until rounding moves a boundary of the
/// CDF across a map's uniform number; after that the maps diverge (autoregression). So for
/// each map: at its first differing position the teacher-forced probabilities must agree to
/// PROBABILITY, and the map's uniform there must lie between a boundary of the CPU's CDF and
/// the same boundary of the device's (within CDF_SLACK).
fn ordinary(what: &str, config: PixelCnnConfig, method: SampleMethod) {
    let Some(device) = device_under_test() else { return };
    let (e, hw) = (config.n_embed, config.height * config.width);
    let prior = Prior::new(config, &device);
    let opts = SampleOptions { method, ..SampleOptions::default() };
    let (reference, tested) = (prior.sample(0, &opts), prior.sample(1, &opts));
    let (r, d) = (host(&reference), host(&tested));
    let mut diverged = None;
    for b in 0..N {
        let Some(p) = (0..hw).find(|&p| r[b * hw + p] != d[b * hw + p]) else { continue };
        diverged.get_or_insert((b, p));
        let mut rng = Rng::new(SEED, Stream::Sample, b as u64);
        let u: f64 = (0..=p).map(|_| rng.inner().random::<f64>()).last().expect("one draw per position");
        let cdf = |logits: &[f64]| {
            let probs = softmax(&at(logits, e, hw, b, p));
            let cumulative: Vec<f64> = probs.iter().scan(0.0, |s, x| Some(*s + x).inspect(|v| *s = *v)).collect();
            (probs, cumulative)
        };
        let (p_r, c_r) = cdf(&prior.teacher_forced(0, &reference));
        let (p_d, c_d) = cdf(&prior.teacher_forced(1, &reference));
        let gap = p_r.iter().zip(&p_d).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(gap <= PROBABILITY, "{what}: map {b} at {p}: teacher-forced probabilities differ by {gap:.3e}");
        let crossed = c_r.iter().zip(&c_d).any(|(a, b)| a.min(*b) - CDF_SLACK <= u && u <= a.max(*b) + CDF_SLACK);
        assert!(
            crossed,
            "{what}: map {b} diverges at {p} (cpu code {}, device {}) though its uniform {u} is clear of every boundary of the CDF",
            r[b * hw + p],
            d[b * hw + p]
        );
    }
    if let Some((b, p)) = diverged {
        eprintln!("{what}: at temperature 1 map {b} diverged at position {p} of {hw}, at a boundary of the CDF");
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

#[test]
fn pixelcnn_greedy_plain() {
    greedy("prior (top) plain sampler", cases::prior_top(), SampleMethod::Plain);
    greedy("prior (bottom) plain sampler", cases::prior_bottom(), SampleMethod::Plain);
}

#[test]
fn pixelcnn_greedy_cached() {
    greedy("prior (top) cached sampler", cases::prior_top(), SampleMethod::Cached);
    greedy("prior (bottom) cached sampler", cases::prior_bottom(), SampleMethod::Cached);
}

#[test]
fn pixelcnn_temperature_1_plain() {
    ordinary("prior (top) plain sampler", cases::prior_top(), SampleMethod::Plain);
    ordinary("prior (bottom) plain sampler", cases::prior_bottom(), SampleMethod::Plain);
}

#[test]
fn pixelcnn_temperature_1_cached() {
    ordinary("prior (top) cached sampler", cases::prior_top(), SampleMethod::Cached);
    ordinary("prior (bottom) cached sampler", cases::prior_bottom(), SampleMethod::Cached);
}

/// The U-Net's chain `run` (given the network, the schedule, x_T and the noise streams) on
/// both sides, from the same x_T and noise streams; the final images compared.
fn diffusion(what: &str, run: impl Fn(&UNet, &Schedule, Tensor, &mut RowStreams) -> genimg::Result<Tensor>) {
    let Some(device) = device_under_test() else { return };
    let config = cases::ddpm_mnist();
    let schedule = Schedule::new(config.schedule, config.timesteps);
    let g = config.image;
    let side = |d: &Device| {
        let unet = UNet::new(config.clone(), &mut Params::init(SEED, d)).unwrap();
        let mut noise = RowStreams::new(SEED, Stream::Sample, 0..N);
        let x_t = noise.normal(&[N, g.channels, g.height, g.width], d).unwrap();
        run(&unet, &schedule, x_t, &mut noise).expect("sampling")
    };
    let (reference, tested) = (side(&Device::Cpu), side(&device));
    assert!(max_abs(&host(&reference)) > 0.0, "{what}: the chain ends at zero");
    assert_within(&format!("{what}: final images"), &reference, &tested, DIFFUSION);
}

fn eps_of(unet: &UNet) -> impl Fn(&Tensor, usize) -> genimg::Result<Tensor> + '_ {
    move |x: &Tensor, t: usize| unet.forward(x, &vec![t; x.dim(0)?], None, None)
}

#[test]
fn ddim_10_steps() {
    diffusion("DDIM, 10 steps from t = 999", |unet, schedule, x_t, noise| {
        let opts = DdimOptions { from_t: 999, steps: 10, eta: 0.0, clip: true };
        ddim(&eps_of(unet), schedule, x_t, opts, noise, &mut |_, _| {})
    });
}

#[test]
fn ddpm_ancestral_10_steps() {
    diffusion("DDPM ancestral, t = 9 to 0", |unet, schedule, x_t, noise| {
        let opts = DdpmOptions { from_t: 9, variance: Variance::Beta, clip: true };
        ddpm(&eps_of(unet), schedule, x_t, opts, noise, &mut |_, _| {})
    });
}
