"""The counter-based generator the golden scripts fill tensors and images with, the same as
the Rust tests compute (tests/cli/pytorch_vqvae2.rs: `splitmix`, `name_seed`, `unit`), so
no weight file is committed: each value comes from the tensor's name and its index."""

import numpy as np

MASK = (1 << 64) - 1


def splitmix(seed, n):
    """splitmix64 of seed + i * golden gamma, for i < n: uint64 values (numpy wraps)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def name_seed(name):
    """FNV-1a of the tensor's name."""
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def unit(name, n):
    """n values uniform in [-1, 1) from the top 53 bits, in f64."""
    return (splitmix(name_seed(name), n) >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0


def digest(state):
    """FNV-1a of 'name:d0,d1,...;' over the sorted names of a state dict."""
    text = "".join(f"{k}:{','.join(str(d) for d in state[k].shape)};" for k in sorted(state))
    return name_seed(text)
