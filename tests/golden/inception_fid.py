"""Golden values for tests/cli/inception_fid.rs: pytorch-fid's own `InceptionV3([3])` (pytorch-fid
0.3.0, torchvision 0.29.2, torch 2.15 CPU), the FID Inception-v3 up to pool3, with every tensor of
its state dict filled from the counter-based generator the Rust test computes bit for bit (`fill`
below and there, as in tests/golden/ddpm_diffusers.py): no fixture file is needed, and a swapped,
transposed or misnamed tensor changes the features.

pytorch-fid builds the network in `fid_inception_v3()`, which downloads the
pt_inception-2015-12-05 weights; here that function is replaced by its own body without the
download (torchvision's Inception3 with pytorch-fid's FIDInceptionA/C/E_1/E_2 blocks), and the
filled state dict is loaded strictly instead. The BatchNorm running statistics are filled too, so
the Rust side's folding of BatchNorm into the convolutions is tested. The network runs as
pytorch-fid runs it: `resize_input=True, normalize_input=True` (bilinear resize to 299x299 with
align_corners=False, then 2x - 1), in eval mode.

Three batches, each of images in [0, 1]: two 3x64x48 colour images (upsampled), one 1x28x28 grey
image (repeated to 3 channels, as pytorch-fid's loader converts grey images to RGB), and one
3x331x307 colour image (downsampled, without antialiasing). Also printed: a digest of the sorted
state-dict names and shapes, so the Rust network's names are checked against pytorch-fid's own.

Run: python3 tests/golden/inception_fid.py [FILE]  (pip install torch torchvision pytorch-fid numpy
safetensors). It prints the constants pasted into the test; with FILE it also saves the state dict
there (95 MB) as `safetensors.torch.save_file(model.state_dict())` writes it.
"""
import sys

import numpy as np
import torch
import pytorch_fid.inception as fid
from seeded import digest, unit

# Batches: name of the generator stream, shape [N, C, H, W].
INPUTS = [("x_rgb", (2, 3, 64, 48)), ("x_grey", (1, 1, 28, 28)), ("x_large", (1, 3, 331, 307))]
# Indices into each batch's features [N, 2048], flattened.
AT = [5 + 171 * i for i in range(24)]


def fill(name, shape):
    """Uniform in [-1, 1) times: sqrt(6 / fan in) for conv weights (He's uniform, which keeps
    the activations' scale through the ReLUs), 1 + 0.2 u for the BatchNorm scales, 1 + 0.5 u for
    the running variances, 0.1 u for the BatchNorm biases and running means."""
    u = unit(name, int(np.prod(shape)))
    if name.endswith("conv.weight"):
        v = u * np.sqrt(6.0 / np.prod(shape[1:]))
    elif name.endswith("bn.weight"):
        v = 1.0 + 0.2 * u
    elif name.endswith("bn.running_var"):
        v = 1.0 + 0.5 * u
    elif name.endswith("bn.bias") or name.endswith("bn.running_mean"):
        v = 0.1 * u
    else:
        raise ValueError(f"no fill for {name}")
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def image(name, shape):
    """Values in [0, 1): (u + 1) / 2."""
    u = unit(name, int(np.prod(shape)))
    return torch.from_numpy(((u + 1.0) / 2.0).astype(np.float32).reshape(shape))


def fid_inception_v3_without_download():
    """pytorch_fid.inception.fid_inception_v3() up to, not including, loading its weights."""
    inception = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inception.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = fid.FIDInceptionE_1(1280)
    inception.Mixed_7c = fid.FIDInceptionE_2(2048)
    return inception


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    torch.set_grad_enabled(False)
    fid.fid_inception_v3 = fid_inception_v3_without_download
    model = fid.InceptionV3([3]).eval()
    state = {
        k: v if k.endswith("num_batches_tracked") else fill(k, tuple(v.shape)) for k, v in model.state_dict().items()
    }
    model.load_state_dict(state, strict=True)
    if out:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, out)
    n = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"// {len(state)} tensors, {n} float values")
    print(f"pub const NAMES: u64 = {digest(state)};")
    for name, shape in INPUTS:
        x = image(name, shape)
        if shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        features = model(x)[0].double().flatten(1)
        assert features.shape == (shape[0], 2048), features.shape
        flat = features.flatten()
        key = name.upper()
        at = ", ".join(f"({i}, {flat[i].item():.8e})" for i in AT if i < flat.numel())
        print(f"pub const {key}_AT: &[(usize, f64)] = &[{at}];")
        print(f"pub const {key}_SQ_SUM: f64 = {flat.square().sum().item():.10e};")
        print(f"pub const {key}_SUM: f64 = {flat.sum().item():.10e};")


if __name__ == "__main__":
    main()
