use candle_core::{Device, Tensor};
use rand::Rng as _;

use super::sample::draw;
use super::*;
use crate::nn::ParamSet;
use crate::rng::{Rng, RowStreams, Stream};

fn config(height: usize, width: usize, layers: usize, classes: bool, top: bool) -> PixelCnnConfig {
    PixelCnnConfig {
        n_embed: 6,
        height,
        width,
        channels: 4,
        layers,
        n_classes: classes.then_some(3),
        top: top.then_some(TopCondition { n_embed: 5, height: height / 2, width: width / 2 }),
    }
}

fn build(cfg: &PixelCnnConfig, seed: u64) -> (PixelCnn, ParamSet) {
    let mut p = Params::init(seed, &Device::Cpu);
    let model = PixelCnn::new(cfg.clone(), &mut p).unwrap();
    (model, p.finish().unwrap())
}

fn ids(r: &mut Rng, dims: &[usize], limit: usize) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<u32> = (0..n).map(|_| r.inner().random_range(0..limit as u32)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Random codes, labels and top codes for `n` maps of `cfg`.
fn inputs(cfg: &PixelCnnConfig, n: usize, seed: u64) -> (Tensor, Option<Tensor>, Option<Tensor>) {
    let mut r = Rng::new(seed, Stream::Eval, 0);
    let codes = ids(&mut r, &[n, cfg.height, cfg.width], cfg.n_embed);
    let labels = cfg.n_classes.map(|k| ids(&mut r, &[n], k));
    let top = cfg.top.as_ref().map(|t| ids(&mut r, &[n, t.height, t.width], t.n_embed));
    (codes, labels, top)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn names_and_shapes_are_as_documented() {
    let cfg = PixelCnnConfig {
        n_classes: Some(10),
        top: Some(TopCondition { n_embed: 512, height: 4, width: 4 }),
        ..PixelCnnConfig::pixelcnn_prior()
    };
    let (_, set) = build(&cfg, 0);
    let map = set.to_tensor_map().unwrap();
    let shape = |n: &str| map.get(n).unwrap_or_else(|| panic!("missing {n}")).dims().to_vec();
    let expect: &[(&str, &[usize])] = &[
        ("embed.weight", &[512, 64]),
        ("layers.0.v_conv.weight", &[128, 64, 2, 3]),
        ("layers.0.v_conv.bias", &[128]),
        ("layers.11.h_conv.weight", &[128, 64, 1, 2]),
        ("layers.5.v_to_h.weight", &[128, 128, 1, 1]),
        ("layers.5.h_out.weight", &[64, 64, 1, 1]),
        ("layers.5.h_out.bias", &[64]),
        ("layers.3.class_embed.weight", &[10, 128]),
        ("layers.3.top_proj.weight", &[128, 64, 1, 1]),
        ("top_embed.weight", &[512, 64]),
        ("top_upsample.weight", &[64, 64, 4, 4]),
        ("top_upsample.bias", &[64]),
        ("head.1.weight", &[64, 64, 1, 1]),
        ("head.3.weight", &[512, 64, 1, 1]),
        ("head.3.bias", &[512]),
    ];
    for (name, want) in expect {
        assert_eq!(shape(name), *want, "{name}");
    }
    // Per layer 5 convolutions of weight and bias and a class embedding; embed, top_embed,
    // top_upsample (2) and the head (4).
    assert_eq!(map.tensors.len(), 12 * 11 + 2 + 2 + 4, "{:?}", map.names());
    let plain = build(&PixelCnnConfig::pixelcnn_prior(), 0).1.to_tensor_map().unwrap();
    assert_eq!(plain.tensors.len(), 12 * 8 + 1 + 4);
}

/// The library's two paths through the whole network, for every conditioning: the same
/// logits, and the same gradient of the loss in every parameter.
#[test]
fn composed_path_matches_the_fused_one_in_logits_and_every_gradient() {
    for (classes, top) in [(false, false), (true, false), (false, true), (true, true)] {
        let cfg = config(4, 6, 3, classes, top);
        let (model, set) = build(&cfg, 1);
        let (codes, labels, top) = inputs(&cfg, 3, 2);
        let run = |ops: OpPath| {
            let logits = model.logits_rows_by(ops, &codes, labels.as_ref(), top.as_ref()).unwrap();
            let loss = mean_cross_entropy(&logits, &codes.flatten_all().unwrap()).unwrap();
            (logits, loss.backward().unwrap())
        };
        let ((fused, g1), (composed, g2)) = (run(OpPath::Fused), run(OpPath::Composed));
        assert_eq!(fused.dims(), [3 * 4 * 6, 6]);
        let err = (&fused - &composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err < 1e-5, "classes {classes}, top {top:?}: logits differ by {err}");
        for (name, var) in set.trainable() {
            let (a, b) = (flat(g1.get(var.as_tensor()).unwrap()), flat(g2.get(var.as_tensor()).unwrap()));
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let err = a.iter().zip(&b).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err < 1e-4, "classes {classes}, top {top:?}, {name}: relative error {err}");
        }
    }
}

/// Each layer's unfold and tap-major product (the composed path) is the PyTorch convolution
/// of the stored weights (mask A applied in the first layer) on zero-padded NCHW maps:
/// candle's conv2d, read from the parameters by name.
#[test]
fn unfolded_products_are_the_padded_convolutions_of_the_stored_weights() {
    let cfg = config(4, 6, 2, false, false);
    let (model, set) = build(&cfg, 15);
    let (n, c, (h, w)) = (2, cfg.channels, (cfg.height, cfg.width));
    let x = Rng::new(16, Stream::Eval, 0).normal(&[n * h * w, c], &Device::Cpu).unwrap();
    // (n h w, c) <-> (n, c, h, w)
    let nchw = |t: &Tensor| t.reshape((n, h, w, ())).unwrap().permute((0, 3, 1, 2)).unwrap();
    let v_mask = Tensor::new(&[[1f32, 1.0, 1.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let h_mask = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
    for (i, layer) in model.layers.iter().enumerate() {
        let (v_conv, h_conv) = layer.convs().unwrap();
        let convs = [
            (&v_conv, ops::V_TAPS, "v_conv", &v_mask, (1, 1, 1)),
            (&h_conv, ops::H_TAPS, "h_conv", &h_mask, (0, 1, 0)),
        ];
        for (product, taps, name, mask, (top, left, right)) in convs {
            let get = |part: &str| set.get(&format!("layers.{i}.{name}.{part}")).unwrap().as_tensor().clone();
            let weight = if i == 0 { get("weight").broadcast_mul(mask).unwrap() } else { get("weight") };
            let padded = nchw(&x).pad_with_zeros(2, top, 0).unwrap().pad_with_zeros(3, left, right).unwrap();
            let want = padded.conv2d(&weight, 0, 1, 1, 1).unwrap();
            let want = want.broadcast_add(&get("bias").reshape((1, (), 1, 1)).unwrap()).unwrap();
            let got = nchw(&product.forward(&ops::causal_unfold(&x, taps, (h, w)).unwrap()).unwrap());
            let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 1e-5, "layer {i} {name}: differs by {err}");
        }
    }
}

/// For every position q of a random map, changes the code at q and checks that the logits
/// at every position p change exactly when p comes after q in raster order. 16 channels
/// keep the weakest dependencies well above rounding.
fn check_causality(cfg: &PixelCnnConfig) {
    let cfg = &PixelCnnConfig { channels: 16, ..cfg.clone() };
    let (model, _) = build(cfg, 3);
    let (base, labels, top) = inputs(cfg, 1, 4);
    let (h, w, e) = (cfg.height, cfg.width, cfg.n_embed as u32);
    let hw = h * w;
    let base = base.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let mut batch = base.clone();
    for q in 0..hw {
        let mut changed = base.clone();
        changed[q] = (changed[q] + 1) % e;
        batch.extend(changed);
    }
    let n = hw + 1;
    let codes = Tensor::from_vec(batch, (n, h, w), &Device::Cpu).unwrap();
    let repeat = |t: Option<Tensor>| t.map(|t| t.repeat(n).unwrap());
    let (labels, top) = (repeat(labels), repeat(top));
    let logits = model.forward(&codes, labels.as_ref(), top.as_ref()).unwrap();
    // (n, e, h, w) -> (n, h w, e)
    let logits = logits.flatten_from(2).unwrap().transpose(1, 2).unwrap().to_vec3::<f32>().unwrap();
    for (q, changed) in logits[1..].iter().enumerate() {
        for (p, (after, before)) in changed.iter().zip(&logits[0]).enumerate() {
            let diff = after.iter().zip(before).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // No arithmetic at p reads q, so its logits are bitwise the same; dependencies
            // through many gated layers are weak (down to about 1e-5 here) but far above
            // rounding.
            if p <= q {
                assert_eq!(diff, 0.0, "{cfg:?}: logits at {p} depend on the code at {q}");
            } else {
                assert!(diff > 1e-6, "{cfg:?}: logits at {p} do not depend on the code at {q} ({diff})");
            }
        }
    }
}

#[test]
fn logits_depend_on_every_earlier_code_and_no_later_one() {
    // Enough layers that the receptive field covers every earlier position.
    check_causality(&config(5, 5, 4, false, false));
    check_causality(&config(4, 4, 3, true, true));
    check_causality(&config(4, 6, 5, false, true));
}

#[test]
fn conditioning_changes_the_logits() {
    let cfg = config(4, 4, 2, true, true);
    let (model, _) = build(&cfg, 5);
    let (codes, labels, top) = inputs(&cfg, 2, 6);
    let (labels, top) = (labels.unwrap(), top.unwrap());
    let run = |y: &Tensor, t: &Tensor| flat(&model.forward(&codes, Some(y), Some(t)).unwrap());
    let base = run(&labels, &top);
    let next = |t: &Tensor, k: u32| {
        let v: Vec<u32> = t.flatten_all().unwrap().to_vec1::<u32>().unwrap().iter().map(|v| (v + 1) % k).collect();
        Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
    };
    let (other_labels, other_top) = (next(&labels, 3), next(&top, 5));
    for other in [run(&other_labels, &top), run(&labels, &other_top)] {
        assert!(other.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-4));
    }
}

#[test]
fn masked_taps_get_no_gradient_and_every_other_parameter_does() {
    let cfg = config(4, 4, 2, true, true);
    let (model, set) = build(&cfg, 7);
    let (codes, labels, top) = inputs(&cfg, 4, 8);
    let grads = model.loss(&codes, labels.as_ref(), top.as_ref()).unwrap().backward().unwrap();
    let grad = |name: &str| grads.get(set.get(name).unwrap().as_tensor()).unwrap_or_else(|| panic!("{name}")).clone();
    let nonzero = |t: &Tensor| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0;
    // v_conv [2C, C, 2, 3]: row 1 of the kernel (the current row) is masked.
    let gv = grad("layers.0.v_conv.weight");
    assert!(!nonzero(&gv.narrow(2, 1, 1).unwrap()));
    for j in 0..3 {
        assert!(nonzero(&gv.narrow(2, 0, 1).unwrap().narrow(3, j, 1).unwrap()), "v tap (0, {j})");
    }
    // h_conv [2C, C, 1, 2]: column 1 (the current column) is masked.
    let gh = grad("layers.0.h_conv.weight");
    assert!(!nonzero(&gh.narrow(3, 1, 1).unwrap()));
    assert!(nonzero(&gh.narrow(3, 0, 1).unwrap()));
    for (name, _) in set.trainable() {
        if name != "layers.0.v_conv.weight" && name != "layers.0.h_conv.weight" {
            assert!(nonzero(&grad(name)), "{name} has no gradient");
        }
    }
    // Later layers are unmasked: every tap learns.
    let gv1 = grad("layers.1.v_conv.weight");
    assert!((0..2).all(|i| nonzero(&gv1.narrow(2, i, 1).unwrap())));
}

#[test]
fn plain_and_cached_samplers_draw_the_same_codes() {
    for (classes, top) in [(false, false), (true, false), (false, true), (true, true)] {
        let cfg = config(4, 6, 3, classes, top);
        let (model, _) = build(&cfg, 9);
        let (_, labels, top) = inputs(&cfg, 5, 10);
        let settings = [(1.0, None, None), (0.7, Some(3), None), (1.5, Some(1), None), (2.0, Some(6), Some(0.6))];
        for (temperature, top_k, top_p) in settings.into_iter().chain([(1.0, None, Some(0.5)), (0.8, None, Some(0.9))])
        {
            let draw = |method, seed| {
                let opts = SampleOptions { temperature, top_k, top_p, method };
                let mut rngs = RowStreams::new(seed, Stream::Sample, 0..5);
                sample(&model, 5, labels.as_ref(), top.as_ref(), &opts, &mut rngs).unwrap()
            };
            let (plain, cached) = (draw(SampleMethod::Plain, 1), draw(SampleMethod::Cached, 1));
            assert_eq!(cached.dims(), [5, 4, 6]);
            let (plain, cached) = (plain.to_vec3::<u32>().unwrap(), cached.to_vec3::<u32>().unwrap());
            assert_eq!(plain, cached, "classes {classes}, top {top:?}, t {temperature}, k {top_k:?}, p {top_p:?}");
            if top_k != Some(1) {
                assert_ne!(cached, draw(SampleMethod::Cached, 2).to_vec3::<u32>().unwrap(), "another seed");
            }
        }
    }
}

fn bad_streams(model: &PixelCnn) -> String {
    let mut two = RowStreams::new(0, Stream::Sample, 0..2);
    sample(model, 1, None, None, &SampleOptions::default(), &mut two).unwrap_err().to_string()
}

/// A sample's codes are those it gets in any batch: rows 2..4 of a batch of 5, drawn alone
/// with their own streams, get the codes they got in the batch, with either sampler.
#[test]
fn a_sample_does_not_depend_on_the_samples_drawn_with_it() {
    let cfg = config(4, 4, 2, true, true);
    let (model, _) = build(&cfg, 13);
    let (_, labels, top) = inputs(&cfg, 5, 14);
    let part = |t: &Option<Tensor>| t.as_ref().map(|t| t.narrow(0, 2, 2).unwrap());
    for method in [SampleMethod::Plain, SampleMethod::Cached] {
        let opts = SampleOptions { method, ..SampleOptions::default() };
        let mut all = RowStreams::new(3, Stream::Sample, 0..5);
        let whole = sample(&model, 5, labels.as_ref(), top.as_ref(), &opts, &mut all).unwrap();
        let mut some = RowStreams::new(3, Stream::Sample, 2..4);
        let alone = sample(&model, 2, part(&labels).as_ref(), part(&top).as_ref(), &opts, &mut some).unwrap();
        assert_eq!(alone.to_vec3::<u32>().unwrap(), whole.narrow(0, 2, 2).unwrap().to_vec3::<u32>().unwrap());
    }
}

/// With top-k 1 each code is the most likely one given those before it, by the forward pass
/// on either path (the cached sampler runs its own host kernels on any device).
#[test]
fn greedy_samples_are_the_argmax_of_the_forward_pass() {
    let cfg = config(4, 4, 2, true, true);
    let (model, _) = build(&cfg, 11);
    let (_, labels, top) = inputs(&cfg, 3, 12);
    let opts = SampleOptions { top_k: Some(1), ..SampleOptions::default() };
    let codes =
        sample(&model, 3, labels.as_ref(), top.as_ref(), &opts, &mut RowStreams::new(0, Stream::Sample, 0..3)).unwrap();
    for ops in [OpPath::Fused, OpPath::Composed] {
        let logits = model.logits_rows_by(ops, &codes, labels.as_ref(), top.as_ref()).unwrap();
        let argmax = logits.argmax(1).unwrap().reshape(codes.dims()).unwrap();
        assert_eq!(argmax.to_vec3::<u32>().unwrap(), codes.to_vec3::<u32>().unwrap(), "{ops:?}");
    }
}

#[test]
fn draws_invert_the_cdf_of_the_tempered_top_k_softmax() {
    let l = [0f32, 2f32.ln(), 0.0];
    let at = |temperature, top_k, top_p, u| {
        let opts = SampleOptions { temperature, top_k, top_p, ..SampleOptions::default() };
        draw(&l, &opts, u)
    };
    // p = [0.25, 0.5, 0.25]
    assert_eq!([0.2, 0.3, 0.74, 0.76].map(|u| at(1.0, None, None, u)), [0, 1, 1, 2]);
    assert_eq!([0.0, 0.99].map(|u| at(1.0, Some(1), None, u)), [1, 1]);
    // Top 2 of a tie keeps the lower code: p = [1/3, 2/3, 0].
    assert_eq!([0.3, 0.34, 0.99].map(|u| at(1.0, Some(2), None, u)), [0, 1, 1]);
    // A high temperature flattens, a low one sharpens.
    assert_eq!([0.3, 0.5, 0.7].map(|u| at(1e6, None, None, u)), [0, 1, 2]);
    assert_eq!([0.01, 0.99].map(|u| at(1e-3, None, None, u)), [1, 1]);
}

/// Nucleus sampling keeps the fewest most likely codes whose mass reaches p, renormalised.
#[test]
fn top_p_keeps_the_smallest_nucleus_that_reaches_p() {
    // p = [0.1, 0.2, 0.3, 0.4]
    let l = [0.1f32, 0.2, 0.3, 0.4].map(f32::ln);
    let at = |top_k, top_p, temperature, u| {
        let opts = SampleOptions { temperature, top_k, top_p: Some(top_p), ..SampleOptions::default() };
        draw(&l, &opts, u)
    };
    // 0.4 alone reaches 0.35; 0.41 needs 0.4 + 0.3, renormalised to [3/7, 4/7] in code order.
    assert_eq!([0.0, 0.99].map(|u| at(None, 0.35, 1.0, u)), [3, 3]);
    assert_eq!([0.42, 0.43, 0.99].map(|u| at(None, 0.41, 1.0, u)), [2, 3, 3]);
    // 0.85 keeps codes 1, 2, 3 (mass 0.9): [2/9, 3/9, 4/9].
    assert_eq!([0.2, 0.23, 0.55, 0.56].map(|u| at(None, 0.85, 1.0, u)), [1, 2, 2, 3]);
    // p = 1 is no truncation: code 0 is drawable again.
    assert_eq!(at(None, 1.0, 1.0, 0.05), 0);
    // After top-k 2 the mass is [3/7, 4/7]: p 0.5 keeps code 3 alone, 0.6 both.
    assert_eq!(at(Some(2), 0.5, 1.0, 0.0), 3);
    assert_eq!(at(Some(2), 0.6, 1.0, 0.0), 2);
    // After the temperature: at T = 1e-3 code 3 holds all the mass, so any p keeps it alone.
    assert_eq!(at(None, 0.999, 1e-3, 0.0), 3);
}

#[test]
fn bad_inputs_and_settings_are_errors_that_say_what_is_wrong() {
    let cfg = config(4, 4, 1, true, true);
    let (model, _) = build(&cfg, 0);
    let (codes, labels, top) = inputs(&cfg, 2, 0);
    let d = &Device::Cpu;
    let err = |codes: &Tensor, labels: Option<&Tensor>, top: Option<&Tensor>| {
        model.forward(codes, labels, top).expect_err("an error").to_string()
    };
    let (y, t) = (labels.as_ref(), top.as_ref());
    let cases: Vec<(String, &str)> = vec![
        (err(&codes.to_dtype(candle_core::DType::I64).unwrap(), y, t), "codes must be u32"),
        (err(&codes.narrow(2, 0, 3).unwrap(), y, t), "codes have shape [2, 4, 3], expected [N, H, W] = [2, 4, 4]"),
        (err(&Tensor::full(6u32, (2, 4, 4), d).unwrap(), y, t), "codes hold 6, out of range for 6 (0..=5)"),
        (err(&codes, None, t), "conditioned on 3 classes; labels are needed"),
        (err(&codes, Some(&Tensor::new(&[0u32, 3], d).unwrap()), t), "labels hold 3"),
        (err(&codes, Some(&Tensor::new(&[0u32], d).unwrap()), t), "labels have shape [1], expected [N] = [2]"),
        (err(&codes, y, None), "conditioned on top codes"),
        (err(&codes, y, Some(&codes)), "top codes have shape [2, 4, 4], expected [N, h, w] = [2, 2, 2]"),
    ];
    for (got, want) in &cases {
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
    let (plain, _) = build(&config(4, 4, 1, false, false), 0);
    let (c2, _, _) = inputs(&plain.config, 2, 0);
    assert!(plain.forward(&c2, y, None).unwrap_err().to_string().contains("takes no labels"));
    assert!(plain.forward(&c2, None, t).unwrap_err().to_string().contains("takes no top codes"));
    let bad = |opts: SampleOptions| {
        sample(&plain, 1, None, None, &opts, &mut RowStreams::new(0, Stream::Sample, 0..1)).unwrap_err().to_string()
    };
    assert!(
        bad(SampleOptions { temperature: 0.0, ..SampleOptions::default() }).contains("temperature 0 must be positive")
    );
    assert!(bad(SampleOptions { top_k: Some(0), ..SampleOptions::default() }).contains("top-k must be at least 1"));
    for p in [0.0, 1.5, f64::NAN] {
        assert!(bad(SampleOptions { top_p: Some(p), ..SampleOptions::default() }).contains("must be in (0, 1]"), "{p}");
    }
    let mut none = RowStreams::new(0, Stream::Sample, 0..0);
    assert_eq!(sample(&plain, 0, None, None, &SampleOptions::default(), &mut none).unwrap().dims(), [0, 4, 4]);
    assert!(bad_streams(&plain).contains("2 random streams for 1 samples"));
    let mismatched =
        PixelCnnConfig { top: Some(TopCondition { n_embed: 4, height: 3, width: 2 }), ..config(4, 4, 1, false, false) };
    let msg = PixelCnn::new(mismatched, &mut Params::init(0, d)).err().expect("an error").to_string();
    assert!(msg.contains("top codes of 3x2 upsample to 6x4, not the 4x4 map"), "{msg}");
}

#[test]
fn the_preset_round_trips_through_json() {
    let preset = crate::models::Preset::PixelcnnPrior.config();
    assert_eq!(preset.family().train_defaults(), (3e-4, 128));
    let json = preset.to_json();
    assert!(json.contains("\"model\":\"pixelcnn-prior\""), "{json}");
    assert_eq!(crate::models::ModelConfig::from_json(&json).unwrap(), preset);
    assert!(preset.geometry().unwrap_err().to_string().contains("8x8 code maps, not images"));
    // The loss of an untrained model is about ln(n_embed) nats per code.
    let cfg = config(4, 4, 2, false, false);
    let (model, _) = build(&cfg, 0);
    let (codes, _, _) = inputs(&cfg, 8, 1);
    let loss = model.loss(&codes, None, None).unwrap().to_scalar::<f32>().unwrap();
    assert!((loss - 6f32.ln()).abs() < 1.0, "{loss}");
}

/// The weight matrices are views of the parameters, so in-place Adam updates reach the
/// network: after a few steps it lowers the loss and computes what a network loaded from the
/// updated parameters computes.
#[test]
fn adam_updates_reach_the_network() {
    let cfg = config(4, 4, 2, true, true);
    let (model, set) = build(&cfg, 13);
    let (codes, labels, top) = inputs(&cfg, 8, 14);
    let mut adam = crate::nn::Adam::new(&set, crate::nn::AdamConfig::with_lr(1e-2)).unwrap();
    let loss = || model.loss(&codes, labels.as_ref(), top.as_ref()).unwrap();
    let first = loss().to_scalar::<f32>().unwrap();
    for _ in 0..10 {
        adam.step(&set, &loss().backward().unwrap()).unwrap();
    }
    let last = loss().to_scalar::<f32>().unwrap();
    assert!(last < first - 0.05, "{first} -> {last}");
    let mut p = Params::load(set.to_tensor_map().unwrap().tensors, "trained", &Device::Cpu);
    let loaded = PixelCnn::new(cfg.clone(), &mut p).unwrap();
    p.finish().unwrap();
    let logits = |m: &PixelCnn| flat(&m.forward(&codes, labels.as_ref(), top.as_ref()).unwrap());
    assert_eq!(logits(&model), logits(&loaded));
}

/// The fused path (one op per gated layer) gives the same bits on 1 and 2 threads: logits
/// and the gradient of every parameter. The layers cut 5 maps into blocks of 2, 2 and 1, which
/// run on separate threads on 2 threads and in turn, their products split, on 1.
#[test]
fn the_fused_path_does_not_depend_on_the_thread_count() {
    for (classes, top) in [(false, false), (true, true)] {
        let cfg = PixelCnnConfig { channels: 8, ..config(6, 6, 3, classes, top) };
        let (model, set) = build(&cfg, 17);
        let (codes, labels, top) = inputs(&cfg, 5, 18);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let logits = model.logits_rows_by(OpPath::Fused, &codes, labels.as_ref(), top.as_ref()).unwrap();
                let loss = mean_cross_entropy(&logits, &codes.flatten_all().unwrap()).unwrap();
                let grads = loss.backward().unwrap();
                let g: Vec<(String, Vec<f32>)> = set
                    .trainable()
                    .map(|(name, var)| (name.to_string(), flat(grads.get(var.as_tensor()).unwrap())))
                    .collect();
                (flat(&logits), g)
            })
        };
        let (one, two) = (on(1), on(2));
        assert!(one.0 == two.0, "classes {classes}: logits differ between 1 and 2 threads");
        for ((name, a), (_, b)) in one.1.iter().zip(&two.1) {
            assert!(a == b, "classes {classes}: {name}'s gradient differs between 1 and 2 threads");
        }
    }
}

/// The layer op against the composed layer, in the first layer (mask A, no residual) and a
/// later one, with classes and with and without the top codes, for 3 maps of 4x6 (a block
/// each). Compares the output and the gradients of both stacks, of the top codes' features
/// and of every parameter of the layer, top_proj's among them.
#[test]
fn the_layer_op_matches_the_composed_layer() {
    // The first layer reads the taps mask A leaves: a prefix of each kernel's.
    assert_eq!(V_MASKED, (vconv::TAPS..ops::V_TAPS.len()).collect::<Vec<_>>());
    assert_eq!(H_MASKED, (layer::H_UNMASKED..ops::H_TAPS.len()).collect::<Vec<_>>());
    let cfg = config(4, 6, 2, true, true);
    let (model, set) = build(&cfg, 19);
    let (n, c, size) = (3, cfg.channels, (cfg.height, cfg.width));
    let (rows, d) = (n * size.0 * size.1, &Device::Cpu);
    let mut r = Rng::new(20, Stream::Eval, 0);
    let var = |r: &mut Rng, cols| candle_core::Var::from_tensor(&r.normal(&[rows, cols], d).unwrap()).unwrap();
    let labels = ids(&mut r, &[n], 3);
    let label_vec = labels.to_vec1::<u32>().unwrap();
    for (i, layer) in model.layers.iter().enumerate() {
        for with_top in [true, false] {
            let (v, h, f) = (var(&mut r, c), var(&mut r, c), var(&mut r, c));
            let probe = r.normal(&[rows, 2 * c], d).unwrap();
            let class = layer.class_embed.as_ref().unwrap().forward(&labels).unwrap().unsqueeze(1).unwrap();
            let proj = layer.top_proj.as_ref().unwrap();
            let top = proj.forward(f.as_tensor()).unwrap().reshape((n, (), 2 * c)).unwrap();
            let conds: Vec<&Tensor> = if with_top { vec![&top, &class] } else { vec![&class] };
            let (v_out, h_out) = layer.forward(&v, &h, size, &conds).unwrap();
            let composed = Tensor::cat(&[&v_out, &h_out], 1).unwrap();
            let state = Tensor::cat(&[v.as_tensor(), h.as_tensor()], 1).unwrap();
            let fused = layer.forward_fused(&state, size, with_top.then_some(f.as_tensor()), Some(&label_vec)).unwrap();
            let err = (&fused - &composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 1e-5, "layer {i}, top {with_top}: outputs differ by {err}");
            let grads = |out: &Tensor| (out * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (g1, g2) = (grads(&fused), grads(&composed));
            let prefix = format!("layers.{i}.");
            let mut checked: Vec<(String, &Tensor)> = vec![("v".into(), v.as_tensor()), ("h".into(), h.as_tensor())];
            if with_top {
                checked.push(("top features".into(), f.as_tensor()));
            }
            checked.extend(
                set.trainable()
                    .filter(|(name, _)| name.starts_with(&prefix) && (with_top || !name.contains("top_proj")))
                    .map(|(n, v)| (n.to_string(), v.as_tensor())),
            );
            assert_eq!(checked.len(), 2 + 9 + 3 * usize::from(with_top));
            for (name, t) in checked {
                let (a, b) = (flat(g1.get(t).unwrap()), flat(g2.get(t).unwrap()));
                let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let err = a.iter().zip(&b).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(err < 1e-5, "layer {i}, top {with_top}, {name}: relative error {err}");
            }
        }
    }
}

/// The CUDA path's single ops (their reference loops, run on the CPU) against the composed
/// candle ops: the unfold of both stacks' taps and the gate, values and input gradients.
#[test]
fn kernel_ops_match_the_composed_ops() {
    use super::kernels::{Gate, Unfold};
    use candle_core::Var;
    let d = Device::Cpu;
    let (h, w, c) = (3, 4, 5);
    let close = |a: &Tensor, b: &Tensor, tol: f32, what: &str| {
        assert_eq!(a.dims(), b.dims(), "{what}");
        let err = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err <= tol, "{what}: differs by {err}");
    };
    // A weighted sum, so every output entry gets its own gradient.
    let loss = |y: &Tensor, seed: u64| {
        let r = Rng::new(seed, Stream::Eval, 0).normal(y.dims(), &d).unwrap();
        (y * r).unwrap().sum_all().unwrap()
    };
    let x = Var::from_tensor(&Rng::new(1, Stream::Eval, 0).normal(&[2 * h * w, c], &d).unwrap()).unwrap();
    for taps in [ops::V_TAPS, ops::H_TAPS] {
        let kernel = x.apply_op1(Unfold { taps, height: h, width: w }).unwrap();
        let composed = ops::causal_unfold(&x, taps, (h, w)).unwrap();
        close(&kernel, &composed, 0.0, "unfold");
        let gk = loss(&kernel, 2).backward().unwrap().get(&x).unwrap().clone();
        let gc = loss(&composed, 2).backward().unwrap().get(&x).unwrap().clone();
        close(&gk, &gc, 1e-5, "unfold's gradient");
    }
    let a = Var::from_tensor(&(Rng::new(3, Stream::Eval, 0).normal(&[2, h * w, 2 * c], &d).unwrap() * 2.0).unwrap())
        .unwrap();
    let kernel = a.apply_op1(Gate).unwrap();
    let composed = ops::gate(&a, &[]).unwrap();
    close(&kernel, &composed, 1e-6, "gate");
    let gk = loss(&kernel, 4).backward().unwrap().get(&a).unwrap().clone();
    let gc = loss(&composed, 4).backward().unwrap().get(&a).unwrap().clone();
    close(&gk, &gc, 1e-5, "gate's gradient");
}
