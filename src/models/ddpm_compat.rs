//! The diffusion U-Net as others wrote it down, read into [`DdpmConfig`] and its names:
//!
//! - diffusers' `config.json` of a `UNet2DModel` ([`from_diffusers_config`]), keys missing
//!   from it taking `UNet2DModel.__init__`'s defaults as diffusers does;
//! - state dicts in older layouts ([`upgrade_tensors`]): the attention names of the
//!   published `google/ddpm-*` files (`query`, `key`, `value`, `proj_attn`, which diffusers
//!   renames when loading), and this project's own names from before the U-Net followed
//!   diffusers (`time_embed.0`, `down.{l}.res.{i}`, a fused `qkv` conv1x1, `norm_out`, ...);
//! - that older configuration's fields ([`upgrade_config`]: `base_channels`, `channel_mult`,
//!   `num_res_blocks`, `attn_resolutions`, `groups`).

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde_json::{Map, Value};

use super::ddpm::{DdpmConfig, DownBlockType, UpBlockType};
use crate::data::Geometry;
use crate::error::Error;
use crate::io::InputPath;

/// The keys of `UNet2DModel.__init__` (diffusers 0.42) this network follows; [`fixed`] lists
/// those it takes at one value only, and any other key, unless it starts with `_`
/// (`_class_name`, `_diffusers_version`), is refused.
const FOLLOWED: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
    "downsample_padding",
    "attention_head_dim",
    "mid_block_scale_factor",
    "dropout",
    // Only sizes a learned time embedding, which is refused.
    "num_train_timesteps",
];

/// Keys taken only at the one value that builds this network (null: not set).
fn fixed() -> [(&'static str, Value); 12] {
    [
        ("act_fn", "silu".into()),
        ("time_embedding_type", "positional".into()),
        ("center_input_sample", false.into()),
        ("time_embedding_dim", Value::Null),
        ("mid_block_type", "UNetMidBlock2D".into()),
        ("downsample_type", "conv".into()),
        ("upsample_type", "conv".into()),
        ("attn_norm_num_groups", Value::Null),
        ("resnet_time_scale_shift", "default".into()),
        ("add_attention", true.into()),
        ("class_embed_type", Value::Null),
        ("num_class_embeds", Value::Null),
    ]
}

/// The value diffusers reads `v` as: its `get_activation` builds the same `nn.SiLU` for
/// `act_fn` "swish" as for "silu" (several community configs say "swish").
fn synonym_of(key: &str, v: &Value) -> Value {
    match (key, v.as_str()) {
        ("act_fn", Some("swish")) => "silu".into(),
        _ => v.clone(),
    }
}

/// The configuration a diffusers `config.json` of a `UNet2DModel` describes, with the
/// project's diffusion settings (linear schedule, T = 1000, EMA 0.9999; dropout 0.1 where
/// the file does not say). An error names the first key whose value this network does not
/// build, with that value.
pub fn from_diffusers_config(json: &str) -> Result<DdpmConfig, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("not a JSON config: {e}"))?;
    let Value::Object(keys) = value else { return Err("not a JSON object".into()) };
    if let Some(class) = keys.get("_class_name").filter(|c| c.as_str() != Some("UNet2DModel")) {
        return Err(format!("_class_name = {class}: only UNet2DModel configs are supported"));
    }
    let fixed = fixed();
    for (key, v) in &keys {
        if key.starts_with('_') || FOLLOWED.contains(&key.as_str()) {
            continue;
        }
        match fixed.iter().find(|(k, _)| k == key) {
            Some((_, want)) if *want == synonym_of(key, v) => {}
            Some((_, want)) => return Err(format!("{key} = {v} is not supported (only {want})")),
            None => return Err(format!("{key} = {v}: unknown UNet2DModel key")),
        }
    }
    let get = |key: &str| keys.get(key).filter(|v| !v.is_null());
    let uint = |key: &str, default: usize| -> Result<usize, String> {
        get(key).map_or(Ok(default), |v| v.as_u64().map(|n| n as usize).ok_or(format!("{key} = {v} is not a count")))
    };
    let float = |key: &str, default: f64| -> Result<f64, String> {
        get(key).map_or(Ok(default), |v| v.as_f64().ok_or(format!("{key} = {v} is not a number")))
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        get(key).map_or(Ok(default), |v| v.as_bool().ok_or(format!("{key} = {v} is not true or false")))
    };
    let list = |key: &str, default: &[&str]| -> Result<Vec<String>, String> {
        let Some(v) = get(key) else { return Ok(default.iter().map(|s| s.to_string()).collect()) };
        let items = v.as_array().ok_or(format!("{key} = {v} is not a list"))?;
        items.iter().map(|s| s.as_str().map(str::to_string).ok_or(format!("{key}: {s} is not a block name"))).collect()
    };
    let (channels, out) = (uint("in_channels", 3)?, uint("out_channels", 3)?);
    if channels != out {
        return Err(format!(
            "out_channels = {out}: the U-Net predicts noise of its input's shape (in_channels {channels})"
        ));
    }
    let (height, width) = match get("sample_size") {
        None => (32, 32),
        Some(Value::Array(hw)) => match hw.as_slice() {
            [h, w] => (h.as_u64().unwrap_or(0) as usize, w.as_u64().unwrap_or(0) as usize),
            _ => return Err(format!("sample_size = {}: expected a size or [height, width]", Value::Array(hw.clone()))),
        },
        Some(v) => {
            let s = v.as_u64().ok_or(format!("sample_size = {v} is not a size"))? as usize;
            (s, s)
        }
    };
    let block_out_channels = match get("block_out_channels") {
        None => vec![224, 448, 672, 896],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|c| c.as_u64().map(|c| c as usize)).collect::<Option<Vec<_>>>())
            .ok_or(format!("block_out_channels = {v} is not a list of counts"))?,
    };
    let down = list("down_block_types", &["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"])?;
    let up = list("up_block_types", &["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"])?;
    let block = |key: &str, name: &str, plain: &str, attn: &str| match name {
        n if n == plain => Ok(false),
        n if n == attn => Ok(true),
        n => Err(format!("{key}: block type '{n}' is not supported (only {plain} and {attn})")),
    };
    let down_block_types = down
        .iter()
        .map(|n| block("down_block_types", n, "DownBlock2D", "AttnDownBlock2D"))
        .map(|b| b.map(|attn| if attn { DownBlockType::Attn } else { DownBlockType::Plain }))
        .collect::<Result<_, _>>()?;
    let up_block_types = up
        .iter()
        .map(|n| block("up_block_types", n, "UpBlock2D", "AttnUpBlock2D"))
        .map(|b| b.map(|attn| if attn { UpBlockType::Attn } else { UpBlockType::Plain }))
        .collect::<Result<_, _>>()?;
    let attention_head_dim = match keys.get("attention_head_dim") {
        None => Some(8),
        Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or(format!("attention_head_dim = {v} is not a count or null"))? as usize),
    };
    let defaults = DdpmConfig::ddpm_cifar10();
    let config = DdpmConfig {
        image: Geometry { channels, height, width },
        block_out_channels,
        layers_per_block: uint("layers_per_block", 2)?,
        down_block_types,
        up_block_types,
        norm_num_groups: uint("norm_num_groups", 32)?,
        norm_eps: float("norm_eps", 1e-5)?,
        flip_sin_to_cos: flag("flip_sin_to_cos", true)?,
        freq_shift: float("freq_shift", 0.0)?,
        downsample_padding: uint("downsample_padding", 1)?,
        attention_head_dim,
        mid_block_scale_factor: float("mid_block_scale_factor", 1.0)?,
        dropout: float("dropout", defaults.dropout)?,
        ..defaults
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The U-Net of the diffusers `config.json` at `path` (`--unet-config`); an error names the
/// file and the key at fault.
pub fn read_diffusers_config(path: &InputPath) -> crate::error::Result<DdpmConfig> {
    let bytes = path.read_all()?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::bad_input(path, "is not UTF-8 text (expected a config.json)"))?;
    from_diffusers_config(&text).map_err(|e| Error::bad_input(path, e))
}

/// Replaces the fields of a ddpm-unet configuration written before the U-Net followed
/// diffusers (`base_channels` and the rest) by the ones they mean; `image` must be there
/// already. A configuration without `base_channels` is left as it is.
pub fn upgrade_config(fields: &mut Map<String, Value>) -> Result<(), String> {
    let Some(base) = fields.remove("base_channels") else { return Ok(()) };
    let mut take = |key: &str| fields.remove(key).ok_or(format!("ddpm-unet config without {key}"));
    let base = base.as_u64().ok_or("base_channels is not a count")?;
    let mult: Vec<u64> = serde_json::from_value(take("channel_mult")?).map_err(|e| format!("channel_mult: {e}"))?;
    let attn: Vec<u64> =
        serde_json::from_value(take("attn_resolutions")?).map_err(|e| format!("attn_resolutions: {e}"))?;
    let layers = take("num_res_blocks")?;
    let groups = take("groups")?;
    let image: Geometry = serde_json::from_value(fields.get("image").cloned().ok_or("ddpm-unet config without image")?)
        .map_err(|e| format!("image: {e}"))?;
    // Level l ran at height >> l and had attention where that was an attention resolution.
    let with_attn: Vec<bool> = (0..mult.len()).map(|l| attn.contains(&((image.height >> l.min(63)) as u64))).collect();
    let down: Vec<&str> = with_attn.iter().map(|&a| if a { "AttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up: Vec<&str> = with_attn.iter().rev().map(|&a| if a { "AttnUpBlock2D" } else { "UpBlock2D" }).collect();
    let channels: Vec<u64> = mult.iter().map(|m| m.saturating_mul(base)).collect();
    let upgraded = serde_json::json!({
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": groups,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": false,
        "freq_shift": 1.0,
        "downsample_padding": 1,
        "attention_head_dim": null,
        "mid_block_scale_factor": 1.0,
    });
    fields.extend(upgraded.as_object().expect("an object").clone());
    Ok(())
}

/// The state dict under diffusers' current names, for `config`'s network: the older
/// published attention names renamed, and this project's names from before diffusers mapped
/// to diffusers' (the fused q, k, v conv1x1 [3c, c, 1, 1] split into three Linear [c, c]).
/// Names already current pass unchanged.
pub fn upgrade_tensors(
    config: &DdpmConfig,
    tensors: BTreeMap<String, Tensor>,
) -> candle_core::Result<BTreeMap<String, Tensor>> {
    let levels = config.block_out_channels.len();
    let mut out = BTreeMap::new();
    for (name, t) in tensors {
        let parts: Vec<&str> = name.split('.').collect();
        match old_module(&parts, levels) {
            Some((module, rest)) => upgrade_leaf(&module, rest, t, &mut out)?,
            None => {
                out.insert(renamed_attention(&name), t);
            }
        }
    }
    Ok(out)
}

/// diffusers' renaming of the attention tensors of its first releases.
fn renamed_attention(name: &str) -> String {
    let Some((module, leaf)) = name.rsplit_once('.') else { return name.to_string() };
    let Some((block, old)) = module.rsplit_once('.') else { return name.to_string() };
    let new = match old {
        "query" => "to_q",
        "key" => "to_k",
        "value" => "to_v",
        "proj_attn" => "to_out.0",
        _ => return name.to_string(),
    };
    if !block.contains(".attentions.") {
        return name.to_string();
    }
    format!("{block}.{new}.{leaf}")
}

/// The diffusers module an old project name's module maps to, and the rest of the old name
/// (the layer inside a block and `weight`/`bias`); `None` for any other name.
fn old_module<'a>(parts: &'a [&'a str], levels: usize) -> Option<(String, &'a [&'a str])> {
    let up = |l: &str| l.parse::<usize>().ok().filter(|&l| l < levels).map(|l| levels - 1 - l);
    Some(match parts {
        ["time_embed", "0", rest @ ..] => ("time_embedding.linear_1".into(), rest),
        ["time_embed", "2", rest @ ..] => ("time_embedding.linear_2".into(), rest),
        ["norm_out", rest @ ..] => ("conv_norm_out".into(), rest),
        ["down", l, "res", i, rest @ ..] => (format!("down_blocks.{l}.resnets.{i}"), rest),
        ["down", l, "attn", i, rest @ ..] => (format!("down_blocks.{l}.attentions.{i}"), rest),
        ["down", l, "downsample", rest @ ..] => (format!("down_blocks.{l}.downsamplers.0.conv"), rest),
        ["mid", "res", i, rest @ ..] => (format!("mid_block.resnets.{i}"), rest),
        ["mid", "attn", i, rest @ ..] => (format!("mid_block.attentions.{i}"), rest),
        ["up", l, "res", i, rest @ ..] => (format!("up_blocks.{}.resnets.{i}", up(l)?), rest),
        ["up", l, "attn", i, rest @ ..] => (format!("up_blocks.{}.attentions.{i}", up(l)?), rest),
        ["up", l, "upsample", rest @ ..] => (format!("up_blocks.{}.upsamplers.0.conv", up(l)?), rest),
        _ => return None,
    })
}

/// Puts one old tensor (`rest` of its name after `module`) under its diffusers name(s).
fn upgrade_leaf(module: &str, rest: &[&str], t: Tensor, out: &mut BTreeMap<String, Tensor>) -> candle_core::Result<()> {
    let leaf = rest.join(".");
    let layer = |new: &str, leaf: &str| format!("{module}.{new}.{}", leaf.rsplit('.').next().unwrap_or(leaf));
    match rest {
        ["temb", _] => out.insert(layer("time_emb_proj", &leaf), t),
        ["skip", _] => out.insert(layer("conv_shortcut", &leaf), t),
        ["norm", _] => out.insert(layer("group_norm", &leaf), t),
        ["proj", kind] => out.insert(layer("to_out.0", &leaf), as_linear(t, kind)?),
        ["qkv", kind] => {
            let c = t.dim(0)? / 3;
            for (i, new) in ["to_q", "to_k", "to_v"].iter().enumerate() {
                out.insert(layer(new, &leaf), as_linear(t.narrow(0, i * c, c)?, kind)?);
            }
            None
        }
        _ => out.insert(format!("{module}.{leaf}"), t),
    };
    Ok(())
}

/// A conv1x1 weight [out, in, 1, 1] as a Linear weight [out, in]; a bias as it is.
fn as_linear(t: Tensor, kind: &str) -> candle_core::Result<Tensor> {
    match (kind, t.dims()) {
        ("weight", &[o, i, 1, 1]) => t.reshape((o, i))?.contiguous(),
        _ => t.contiguous(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::Device;

    /// `google/ddpm-cifar10-32`'s config.json as published (diffusers 0.1.0's keys).
    const CIFAR10: &str = r#"{
      "_class_name": "UNet2DModel", "_diffusers_version": "0.1.0.dev0", "act_fn": "silu",
      "attention_head_dim": null, "block_out_channels": [128, 256, 256, 256],
      "center_input_sample": false,
      "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
      "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
      "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    }"#;

    #[test]
    fn the_cifar10_config_json_is_the_preset() {
        assert_eq!(from_diffusers_config(CIFAR10).unwrap(), DdpmConfig::ddpm_cifar10());
    }

    #[test]
    fn missing_keys_take_diffusers_defaults() {
        let c = from_diffusers_config(r#"{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "sample_size": [16, 24], "in_channels": 1, "out_channels": 1,
            "norm_num_groups": 8, "dropout": 0.0}"#)
        .unwrap();
        assert_eq!(c.attention_head_dim, Some(8));
        assert!(c.flip_sin_to_cos && c.freq_shift == 0.0 && c.downsample_padding == 1 && c.norm_eps == 1e-5);
        assert_eq!((c.image.height, c.image.width, c.dropout), (16, 24, 0.0));
    }

    #[test]
    fn unsupported_settings_are_named_with_their_value() {
        let with = |key: &str, value: &str| {
            let mut v: Value = serde_json::from_str(CIFAR10).unwrap();
            v[key] = serde_json::from_str(value).unwrap();
            from_diffusers_config(&v.to_string()).unwrap_err()
        };
        for (key, value, expect) in [
            ("act_fn", r#""gelu""#, r#"act_fn = "gelu" is not supported (only "silu")"#),
            ("time_embedding_type", r#""fourier""#, "time_embedding_type = \"fourier\""),
            ("class_embed_type", r#""timestep""#, "class_embed_type = \"timestep\""),
            ("num_class_embeds", "10", "num_class_embeds = 10"),
            ("resnet_time_scale_shift", r#""scale_shift""#, "resnet_time_scale_shift"),
            ("cross_attention_dim", "768", "cross_attention_dim = 768: unknown UNet2DModel key"),
            ("_class_name", r#""UNet2DConditionModel""#, "only UNet2DModel"),
            ("out_channels", "6", "out_channels = 6"),
            ("norm_num_groups", "48", "norm_num_groups 48"),
        ] {
            let e = with(key, value);
            assert!(e.contains(expect), "{key}: {e}");
        }
        let mut v: Value = serde_json::from_str(CIFAR10).unwrap();
        v["down_block_types"][2] = "SkipDownBlock2D".into();
        let e = from_diffusers_config(&v.to_string()).unwrap_err();
        assert_eq!(
            e,
            "down_block_types: block type 'SkipDownBlock2D' is not supported (only DownBlock2D and AttnDownBlock2D)"
        );
        // Harmless keys of later diffusers versions at their defaults, and "swish" for "silu",
        // are taken.
        let mut v: Value = serde_json::from_str(CIFAR10).unwrap();
        for (k, d) in [
            ("add_attention", Value::from(true)),
            ("num_class_embeds", Value::Null),
            ("downsample_type", "conv".into()),
            ("act_fn", "swish".into()),
        ] {
            v[k] = d;
        }
        assert_eq!(from_diffusers_config(&v.to_string()).unwrap(), DdpmConfig::ddpm_cifar10());
    }

    #[test]
    fn published_attention_names_are_renamed() {
        let d = Device::Cpu;
        let t = || Tensor::zeros(2, candle_core::DType::F32, &d).unwrap();
        let names = [
            "mid_block.attentions.0.query.weight",
            "down_blocks.1.attentions.1.key.bias",
            "up_blocks.2.attentions.0.value.weight",
            "up_blocks.2.attentions.2.proj_attn.bias",
            "up_blocks.2.attentions.2.group_norm.bias",
            "down_blocks.0.resnets.0.conv1.weight",
        ];
        let tensors = names.iter().map(|n| (n.to_string(), t())).collect();
        let up = upgrade_tensors(&DdpmConfig::ddpm_cifar10(), tensors).unwrap();
        let got: Vec<&str> = up.keys().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "down_blocks.0.resnets.0.conv1.weight",
                "down_blocks.1.attentions.1.to_k.bias",
                "mid_block.attentions.0.to_q.weight",
                "up_blocks.2.attentions.0.to_v.weight",
                "up_blocks.2.attentions.2.group_norm.bias",
                "up_blocks.2.attentions.2.to_out.0.bias",
            ]
        );
    }

    /// The names and shapes the project's U-Net had before it followed diffusers (the old
    /// `src/models/ddpm.rs` doc: `time_embed.{0,2}`, `down.{l}.res.{i}` with `temb` and
    /// `skip`, `down.{l}.attn.{i}` with `norm`, `qkv` conv1x1 c->3c (q, k, v) and `proj`
    /// conv1x1, `down.{l}.downsample`, `mid.{res,attn}`, `up.{l}` with the last level first,
    /// `up.{l}.upsample`, `norm_out`), built as the old constructor did.
    struct OldLayout {
        tensors: Vec<(String, Vec<usize>)>,
        temb: usize,
    }

    impl OldLayout {
        /// `name.weight` of `shape` and `name.bias` [shape[0]].
        fn pair(&mut self, name: &str, shape: Vec<usize>) {
            self.tensors.push((format!("{name}.bias"), vec![shape[0]]));
            self.tensors.push((format!("{name}.weight"), shape));
        }

        fn conv(&mut self, name: &str, cin: usize, cout: usize, k: usize) {
            self.pair(name, vec![cout, cin, k, k]);
        }

        fn res(&mut self, name: &str, cin: usize, cout: usize) {
            self.pair(&format!("{name}.norm1"), vec![cin]);
            self.conv(&format!("{name}.conv1"), cin, cout, 3);
            self.pair(&format!("{name}.temb"), vec![cout, self.temb]);
            self.pair(&format!("{name}.norm2"), vec![cout]);
            self.conv(&format!("{name}.conv2"), cout, cout, 3);
            if cin != cout {
                self.conv(&format!("{name}.skip"), cin, cout, 1);
            }
        }

        fn attn(&mut self, name: &str, c: usize) {
            self.pair(&format!("{name}.norm"), vec![c]);
            self.conv(&format!("{name}.qkv"), c, 3 * c, 1);
            self.conv(&format!("{name}.proj"), c, c, 1);
        }

        fn new(base: usize, mult: &[usize], blocks: usize, attn_levels: &[usize], channels: usize) -> Self {
            let mut o = OldLayout { tensors: Vec::new(), temb: 4 * base };
            o.pair("time_embed.0", vec![4 * base, base]);
            o.pair("time_embed.2", vec![4 * base, 4 * base]);
            o.conv("conv_in", channels, base, 3);
            let (mut skips, mut ch) = (vec![base], base);
            for (l, m) in mult.iter().enumerate() {
                for i in 0..blocks {
                    o.res(&format!("down.{l}.res.{i}"), ch, base * m);
                    ch = base * m;
                    if attn_levels.contains(&l) {
                        o.attn(&format!("down.{l}.attn.{i}"), ch);
                    }
                    skips.push(ch);
                }
                if l + 1 < mult.len() {
                    o.conv(&format!("down.{l}.downsample"), ch, ch, 3);
                    skips.push(ch);
                }
            }
            o.res("mid.res.0", ch, ch);
            o.attn("mid.attn.0", ch);
            o.res("mid.res.1", ch, ch);
            for (l, m) in mult.iter().enumerate().rev() {
                for i in 0..=blocks {
                    let skip = skips.pop().unwrap();
                    o.res(&format!("up.{l}.res.{i}"), ch + skip, base * m);
                    ch = base * m;
                    if attn_levels.contains(&l) {
                        o.attn(&format!("up.{l}.attn.{i}"), ch);
                    }
                }
                if l > 0 {
                    o.conv(&format!("up.{l}.upsample"), ch, ch, 3);
                }
            }
            o.pair("norm_out", vec![ch]);
            o.conv("conv_out", ch, channels, 3);
            o
        }
    }

    /// An old `ddpm-unet-mnist` checkpoint's config (tagged with the preset's name, geometry
    /// as `in_channels`/`image_size`) and tensors load as the current preset, every tensor
    /// used and each of q, k and v its third of the fused qkv.
    #[test]
    fn checkpoints_in_the_old_layout_load() {
        let old_json = r#"{"model":"ddpm-unet-mnist","in_channels":1,"image_size":32,"base_channels":32,
            "channel_mult":[1,2,2],"num_res_blocks":2,"attn_resolutions":[8],"groups":8,"dropout":0.1,
            "timesteps":1000,"schedule":"linear","ema_decay":0.9999}"#;
        let config = crate::models::ModelConfig::from_json(old_json).unwrap();
        assert_eq!(config, crate::models::Preset::DdpmUnetMnist.config());
        let crate::models::ModelConfig::Ddpm(cfg) = config else { unreachable!() };
        let d = Device::Cpu;
        let mut rng = crate::rng::Rng::new(3, crate::rng::Stream::Eval, 0);
        let tensors: BTreeMap<String, Tensor> = OldLayout::new(32, &[1, 2, 2], 2, &[2], 1)
            .tensors
            .into_iter()
            .map(|(n, s)| (n, rng.normal(&s, &d).unwrap()))
            .collect();
        let qkv = tensors["mid.attn.0.qkv.weight"].clone();
        let up = upgrade_tensors(&cfg, tensors).unwrap();
        let mut p = Params::load(up.clone(), "old.safetensors", &d);
        crate::models::ddpm::UNet::new(cfg, &mut p).unwrap();
        p.finish().unwrap();
        // k is the middle third of qkv.
        let k = qkv.narrow(0, 64, 64).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(up["mid_block.attentions.0.to_k.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap(), k);
        assert_eq!(up["up_blocks.0.attentions.2.to_out.0.weight"].dims(), [64, 64]);
    }
}
