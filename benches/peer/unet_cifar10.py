"""PyTorch peer of benches/unet.rs: diffusers' own UNet2DModel of google/ddpm-cifar10-32's config
(genimg's preset ddpm-cifar10), randomly initialised, on 3x32x32 inputs, CPU.

- train: images/s of training steps at batch 16 as genimg's loop takes them (x_t of random
  images at uniform t, the simple loss, backward, Adam 2e-4, dropout 0.1), four steps after one
  untimed, median of --repeats;
- forward: milliseconds of one forward pass at batch 16 under torch.inference_mode(), median of
  --repeats after one untimed.

Prints one JSON line per figure, as benches/unet.rs does. Needs torch and diffusers.
Run: python3 benches/peer/unet_cifar10.py [--threads 2] [--repeats 3]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32, norm_eps=1e-6,
    flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, mid_block_scale_factor=1, attention_head_dim=None,
)
BATCH = 16


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    model = UNet2DModel(dropout=0.1, **CIFAR10)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step():
        x0 = torch.rand(BATCH, 3, 32, 32) * 2 - 1
        t = torch.randint(0, 1000, (BATCH,))
        eps = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        loss = F.mse_loss(model((a.sqrt() * x0 + (1 - a).sqrt() * eps), t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(4):
            step()
        rates.append(4 * BATCH / (time.perf_counter() - start))
    rate = statistics.median(rates)
    print(json.dumps({"bench": "train", "model": "ddpm-cifar10", "peer": "diffusers", "batch_size": BATCH,
                      "images_per_s": round(rate, 2), "threads": args.threads}))

    model.eval()
    x = torch.randn(BATCH, 3, 32, 32)
    t = torch.arange(BATCH) * 60
    with torch.inference_mode():
        model(x, t)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - start)
    print(json.dumps({"bench": "forward", "model": "ddpm-cifar10", "peer": "diffusers", "batch_size": BATCH,
                      "ms": round(statistics.median(times) * 1e3), "threads": args.threads}))


if __name__ == "__main__":
    main()
