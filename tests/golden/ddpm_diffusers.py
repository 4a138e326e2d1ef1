"""Golden values for tests/cli/ddpm_diffusers.rs: diffusers' own UNet2DModel (diffusers 0.42.1,
torch 2.15 CPU) of google/ddpm-cifar10-32's config.json, and of two small configs that between
them cover both block kinds, attention_head_dim set and unset, downsample_padding 0 and 1,
flip_sin_to_cos true and false, freq_shift 0 and 1, a mid-block scale other than 1, GroupNorm eps
1e-5 and 1e-6, non-square images and one-channel ones.

Every tensor of the state dict is filled from a counter-based generator that the Rust test
computes bit for bit (`fill` below and there, as in tests/golden/vqvae2_rosinality.py): no
fixture file is needed, and a swapped or transposed tensor changes the outputs. The state dict is
what `safetensors.torch.save_file(model.state_dict())` writes (no metadata). Also printed: a
digest of the sorted state-dict names and shapes, so the Rust network's names are checked against
diffusers' own, and eps for a fixed x_t and t.

Run: python3 tests/golden/ddpm_diffusers.py [DIR]  (pip install torch diffusers safetensors numpy)
It prints the constants pasted into the test; with DIR it also saves DIR/NAME.safetensors.
"""
import json
import sys

import numpy as np
import torch
from diffusers import UNet2DModel
from seeded import digest, unit

# The configs, as the Rust test has them (same JSON text).
CONFIGS = {
    "cifar10": """{"_class_name": "UNet2DModel", "_diffusers_version": "0.1.0.dev0", "act_fn": "silu",
 "attention_head_dim": null, "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
 "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
 "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
 "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}""",
    "heads": """{"block_out_channels": [16, 32], "layers_per_block": 1, "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
 "up_block_types": ["UpBlock2D", "AttnUpBlock2D"], "norm_num_groups": 4, "attention_head_dim": 8,
 "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "mid_block_scale_factor": 1.4142135623730951,
 "in_channels": 1, "out_channels": 1, "sample_size": [16, 8], "dropout": 0.0}""",
    "padded": """{"block_out_channels": [8, 16, 16], "layers_per_block": 2,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
 "norm_num_groups": 4, "norm_eps": 1e-06, "attention_head_dim": null, "downsample_padding": 0, "flip_sin_to_cos": false,
 "freq_shift": 1, "in_channels": 3, "out_channels": 3, "sample_size": 16}""",
}
STEPS = [10, 600]
AT = [0, 1, 77, 200, 255]


def fill(name, shape):
    """Uniform in [-1, 1) times: 0.05 for biases, around 1 (1 + 0.2 u) for the GroupNorm scales
    (the other 1-d weights), sqrt(3 / fan in) for conv and linear weights (unit variance)."""
    n = int(np.prod(shape))
    u = unit(name, n)
    if name.endswith("bias"):
        v = u * 0.05
    elif len(shape) == 1:
        v = 1.0 + 0.2 * u
    else:
        v = u * np.sqrt(3.0 / np.prod(shape[1:]))
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    torch.set_grad_enabled(False)
    for key, text in CONFIGS.items():
        config = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
        model = UNet2DModel(**config).eval()
        state = {k: fill(k, tuple(v.shape)) for k, v in model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        if out:
            from safetensors.torch import save_file

            save_file(state, f"{out}/{key}.safetensors")
        c = config["in_channels"]
        size = config["sample_size"]
        h, w = (size, size) if isinstance(size, int) else size
        x = fill("x_t", (len(STEPS), c, h, w))
        eps = model(x, torch.tensor(STEPS)).sample.double().flatten()
        n = sum(v.numel() for v in state.values())
        print(f"// {key}: {len(state)} tensors, {n} values")
        print(f"pub const {key.upper()}_NAMES: u64 = {digest(state)};")
        at = ", ".join(f"({i}, {eps[i].item():.8e})" for i in AT)
        print(f"pub const {key.upper()}_AT: [(usize, f64); {len(AT)}] = [{at}];")
        print(f"pub const {key.upper()}_ABS_SUM: f64 = {eps.abs().sum().item():.10e};")
        print(f"pub const {key.upper()}_SUM: f64 = {eps.sum().item():.10e};")


if __name__ == "__main__":
    main()
