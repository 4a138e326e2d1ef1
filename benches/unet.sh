#!/usr/bin/env bash
# The U-Net at the DDPM paper's scale, genimg against diffusers in one run: benches/unet.rs
# (preset ddpm-cifar10: training images/s at batch 16, forward ms at batch 16) and its peer
# benches/peer/unet_cifar10.py (diffusers' UNet2DModel of the same config, PyTorch CPU), then
# one JSON line per figure with both and the ratio (>1: genimg is faster):
#
#   {"bench": "train", "genimg_images_per_s", "torch_images_per_s", "ratio"}
#   {"bench": "forward", "genimg_ms", "torch_ms", "ratio"}
#
# Environment: CARGO (default cargo), PYTHON (python3, with torch and diffusers),
# BENCH_THREADS (PyTorch's threads, default the number of CPUs), BENCH_REPEATS (default 3).
# Without torch or diffusers the torch figures and ratios are null, and the script exits 0.
set -euo pipefail

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
THREADS=${BENCH_THREADS:-$(nproc)}
REPEATS=${BENCH_REPEATS:-3}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ours=$(BENCH_REPEATS=$REPEATS $CARGO bench --locked --bench unet 2>/dev/null | grep '^{')
theirs=""
if "$PYTHON" -c 'import torch, diffusers' 2>/dev/null; then
  theirs=$("$PYTHON" "$HERE/peer/unet_cifar10.py" --threads "$THREADS" --repeats "$REPEATS" 2>/dev/null | grep '^{')
else
  echo "unet.sh: $PYTHON has no torch or diffusers: torch figures are null" >&2
fi
OURS="$ours" THEIRS="$theirs" "$PYTHON" - <<'PY'
import json, os

def lines(text):
    return {d["bench"]: d for d in map(json.loads, filter(None, text.splitlines()))}

ours, theirs = lines(os.environ["OURS"]), lines(os.environ["THEIRS"])
for bench, key, faster in (("train", "images_per_s", max), ("forward", "ms", min)):
    g, t = ours[bench][key], theirs.get(bench, {}).get(key)
    ratio = None if t is None else round(g / t if faster is max else t / g, 2)
    print(json.dumps({"bench": bench, "model": "ddpm-cifar10", "batch_size": 16,
                      f"genimg_{key}": g, f"torch_{key}": t, "ratio": ratio}))
PY
