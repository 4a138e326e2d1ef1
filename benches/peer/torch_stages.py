"""PyTorch peer of genimg's main-job stages, for benches/whole_process.sh.

Each subcommand runs the same network and the same loop as one genimg command, on the same
input files and on the same device (`--device cpu|cuda[:N]`, default cpu; on CUDA in f32, TF32
off, as genimg computes), and prints ONE JSON line on stdout:

    {"stage": ..., "import_seconds": ..., "seconds": ..., "images": ...}

`import_seconds` is the time from the process's start (read from /proc/self/stat) to torch
imported (for the training stages with torch._dynamo, which torch.optim imports on first use); `seconds` the time of the work after the inputs and the model are loaded (training
with its held-out evaluation and per-epoch checkpoint, encoding, decoding or sampling);
`images` the images (or code maps) processed. On CUDA the clock stops after a
torch.cuda.synchronize(), and the inputs and the model are on the device before it starts
(CUDA's start-up is outside `seconds`, inside genimg's whole-process time).

The networks are those of docs/models.md, with genimg's parameter names, so genimg's
checkpoints load into them with `load_state_dict(strict=True)` (vq-encode, vq-decode, ddim
do exactly that):

- vae-mlp: the pytorch/examples VAE (fc1, fc21, fc22, fc3, fc4). Loss as genimg computes
  it (and as the PyTorch example does): BCE with logits summed over pixels plus the KL,
  summed over the batch. Adam 1e-3, batch 128; held-out ELBO terms and the MSE of the mean
  reconstruction after each epoch (batch 500).
- vib-mlp: fc1, fc2, fc3, classifier; CE of one sampled z + 1e-3 KL, batch means; Adam 1e-4,
  batch 100; held-out error with the softmax averaged over 12 samples (batch 500).
- vqvae2-mnist: rosinality/vq-vae-2-pytorch's VQVAE and Quantize, on 28x28 digits zero-padded
  to 32x32 and mapped to [-1, 1] (background -1); MSE + 0.25 commitment, EMA codebooks
  (decay 0.99, eps 1e-5); Adam 3e-4, batch 128 (--batch-size); held-out MSE and code usage
  (batch 250). LEFT OUT: genimg's first-batch codebook initialisation and its restarts of
  codes unused for 100 updates (20 for vqvae2; the peer keeps rosinality's randn codebook);
  their cost is tiny.
- vqvae2: the same network and loop with rosinality's VQVAE() defaults on the image file's
  own geometry (C x H x W, H and W multiples of 8, e.g. 3x64x64 or 3x256x256), mapped to
  [-1, 1] without padding. The EMA
  update runs inside the forward pass, as rosinality's does (genimg: after the optimizer
  step, from the same forward pass's encoder outputs).
- vq-encode / vq-decode: a genimg vqvae2 checkpoint, images or codes in batches of 500 (the
  tools' --batch-size default), run through the network 250 at a time (genimg's compute
  chunk), under torch.inference_mode().
- prior-top / prior-bottom: the Gated PixelCNN of docs/models.md "pixelcnn-prior" (12
  layers, C = 64), class-conditional on the code file's labels, the bottom prior conditioned
  on the top codes (top_embed, top_upsample, top_proj); the vertical and horizontal causal
  convolutions are nn.Conv2d on F.pad-ed NCHW maps, mask A a buffer multiplied into the first
  layer's weights. Adam 3e-4, batch 128 (--batch-size), held-out bits per code after each
  epoch (batch 500). The map size is the code file's (e.g. 32x32 top, 64x64 bottom codes of
  256x256 images), the codebook sizes its metadata's (genimg.n_embed_top / _bottom, else 512);
  --no-labels ignores the file's labels (an unconditional prior).
- ddpm-train: the U-Net of docs/models.md "ddpm-unet-mnist" (src/models/ddpm.rs, diffusers'
  UNet2DModel layout and state-dict names), T = 1000
  linear betas, simple loss, dropout 0.1, Adam 2e-4, batch 128, EMA of the weights (0.9999
  warmed up as min(0.9999, (1 + n) / (10 + n))) after each step. Attention uses
  F.scaled_dot_product_attention (the same softmax(q k^T / sqrt(c)) v). The checkpoint
  written after each epoch is the average, as genimg's.
  With --labels the model is class-conditional as genimg's ddpm-train makes it on labelled
  data (class_embedding of classes + 1 rows added to the time embedding, the label dropped to
  the last, null, row with probability 0.1); ddim samples such a model's classes in equal
  blocks at guidance 0.
- ddpm-train --preset ddpm-cifar10: the same U-Net class at google/ddpm-cifar10-32's sizes
  (3x32x32; channels 128, 256, 256, 256; attention at 16x16 and in the middle; GroupNorm 32
  groups), --batch-size 16 as issue 13's figures. It differs from diffusers' UNet2DModel of
  that config only where the cost does not (downsample padding, GroupNorm eps, the order of
  sines and cosines), so its time is that network's.
- prior-sample: the plain sampler (the whole network per code, no cache) of two randomly
  initialised unconditioned priors, --top-size (32) then the bottom at twice the size on the
  top codes, -n maps at once: the work genimg's cached sampler does in prior-sample. Its time
  does not depend on the weights. On a CPU this takes minutes per sample (whole_process.sh
  runs it only on a GPU).
- ddim: a genimg ddpm checkpoint, N samples in batches of 64, DDIM with "trailing" steps
  (999, 979, ..., 19), eta 0, x_0 clipped to [-1, 1] and the noise direction recomputed from
  it, as src/diffusion/sampler.rs does; output an .npy in [0, 1] (genimg writes a PNG).

Random draws (init, shuffles, noise) are PyTorch's own, seeded with --seed: the peer repeats
genimg's work, not its numbers. Weight initialisation is PyTorch's default (genimg draws the
same distributions from its own generator). Checkpoints are written as .safetensors by the
small numpy writer below (no safetensors package needed); genimg also writes the Adam state
beside each training checkpoint, the peer writes only the model.

Only torch and numpy are needed.
"""

import os
import time


def _seconds_since_process_start():
    """Seconds since this process started (from /proc), or None where /proc is absent."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat; fields[0] is field 3
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


_T0 = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Measured again in main(), after what the stage's first use of torch imports lazily.
IMPORT_SECONDS = None


def _measure_import_seconds():
    global IMPORT_SECONDS
    since_start = _seconds_since_process_start()
    IMPORT_SECONDS = since_start if since_start is not None else time.perf_counter() - _T0


# ---------------------------------------------------------------------------------------
# .safetensors and .npy
# ---------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v).str: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path):
    """{name: numpy array} and the metadata of a .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        dtype = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
        start, end = info["data_offsets"]
        count = (end - start) // dtype.itemsize
        a = np.frombuffer(data, dtype=dtype, count=count, offset=base + start)
        tensors[name] = a.reshape(info["shape"]).astype(dtype.newbyteorder("="), copy=True)
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: numpy array or torch tensor} as .safetensors (names sorted), atomically."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(t).astype(np.dtype(t.dtype).newbyteorder("<"), copy=False)
        raw = a.tobytes()
        header[name] = {
            "dtype": _ST_NAMES[np.dtype(t.dtype).newbyteorder("<").str],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def load_images(path):
    """An image .npy ([N, H, W], [N, 1, H, W] or [N, H*W]; u8 or float in [0,1]) as f32
    [N, 1, H, W] in [0, 1]."""
    a = np.load(path)
    if a.dtype == np.uint8:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
    else:
        x = torch.from_numpy(a.astype(np.float32))
    if x.dim() == 2:
        side = int(round(math.sqrt(x.shape[1])))
        x = x.reshape(-1, side, side)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x


def pad_to(x, size):
    """Zero-pads [N, C, H, W] images, centred, to size x size (genimg pads before mapping to
    [-1, 1], so the padding is background)."""
    dh, dw = size - x.shape[2], size - x.shape[3]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def load_labels(path):
    return torch.from_numpy(np.load(path).astype(np.int64))


def batches(n, size, shuffle):
    """Row indices of each batch of an epoch."""
    order = torch.randperm(n, device=DEVICE) if shuffle else torch.arange(n, device=DEVICE)
    return [order[i : i + size] for i in range(0, n, size)]


DEVICE = torch.device("cpu")


def on_device(t):
    return t.to(DEVICE)


def elapsed(start):
    """Seconds since `start`, after the device's queued work has finished."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter() - start


def report(stage, seconds, images, **extra):
    line = {"stage": stage, "import_seconds": round(IMPORT_SECONDS, 3), "seconds": round(seconds, 3), "images": images}
    line.update(extra)
    print(json.dumps(line), flush=True)


def log(msg):
    print(f"torch_stages: {msg}", file=sys.stderr, flush=True)


def state_dict_from(path):
    tensors, _ = read_safetensors(path)
    return {k: on_device(torch.from_numpy(v)) for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------
# vae-mlp and vib-mlp
# ---------------------------------------------------------------------------------------


class VAE(nn.Module):
    """pytorch/examples vae/main.py: 784 -> 400 -> (20, 20); 20 -> 400 -> 784."""

    def __init__(self, input=784, hidden=400, latent=20):
        super().__init__()
        self.fc1 = nn.Linear(input, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, input)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode_logits(self, z):
        return self.fc4(F.relu(self.fc3(z)))

    def terms(self, x):
        """-log p(x|z) summed over pixels and the KL, per image, with one z sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        nll = F.binary_cross_entropy_with_logits(self.decode_logits(z), x, reduction="none").sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return nll, kl, mu


class VIB(nn.Module):
    """Deep VIB (Alemi et al. 2017): 784 -> 1024 -> 1024 -> 512 (mu 256, softplus(s - 5)); 256 -> 10."""

    def __init__(self, input=784, hidden=1024, latent=256, classes=10):
        super().__init__()
        self.latent = latent
        self.fc1 = nn.Linear(input, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 2 * latent)
        self.classifier = nn.Linear(latent, classes)

    def encode(self, x):
        s = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        mu, sigma = s[:, : self.latent], F.softplus(s[:, self.latent :] - 5.0)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1).sum(1) - sigma.log().sum(1)
        return mu, sigma, kl

    def sample_logits(self, mu, sigma):
        return self.classifier(mu + sigma * torch.randn_like(mu))


def train_mlp(args, stage):
    x = on_device(load_images(args.data).flatten(1))
    eval_x = on_device(load_images(args.eval_data).flatten(1)) if args.eval_data else None
    if stage == "vae-mlp":
        model, lr, batch = VAE(), 1e-3, 128
    else:
        model, lr, batch = VIB(), 1e-4, 100
        y = on_device(load_labels(args.labels))
        eval_y = on_device(load_labels(args.eval_labels)) if args.eval_data else None
    model.to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for rows in batches(len(x), batch, shuffle=True):
            xb = x[rows]
            if stage == "vae-mlp":
                nll, kl, _ = model.terms(xb)
                loss = nll.sum() + kl.sum()  # genimg's (and the PyTorch example's) sum over the batch
            else:
                mu, sigma, kl = model.encode(xb)
                ce = F.cross_entropy(model.sample_logits(mu, sigma), y[rows])
                loss = ce + 1e-3 * kl.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        metrics = {}
        if eval_x is not None:
            model.eval()
            with torch.no_grad():
                if stage == "vae-mlp":
                    sums = torch.zeros(4, dtype=torch.float64, device=DEVICE)
                    for rows in batches(len(eval_x), 500, shuffle=False):
                        xb = eval_x[rows]
                        nll, kl, mu = model.terms(xb)
                        mse = (torch.sigmoid(model.decode_logits(mu)) - xb).pow(2).mean(1)
                        sums += torch.stack([-(nll + kl).sum(), nll.sum(), kl.sum(), mse.sum()]).double()
                    metrics = dict(zip(["elbo", "recon_nll", "kl", "recon_mse"], (sums / len(eval_x)).tolist()))
                else:
                    wrong, ce_sum = 0, 0.0
                    for rows in batches(len(eval_x), 500, shuffle=False):
                        mu, sigma, kl = model.encode(eval_x[rows])
                        probs, ce = 0, 0
                        for _ in range(12):
                            logits = model.sample_logits(mu, sigma)
                            probs = probs + F.softmax(logits, 1)
                            ce = ce + F.cross_entropy(logits, eval_y[rows], reduction="none")
                        wrong += (probs.argmax(1) != eval_y[rows]).sum().item()
                        ce_sum += (ce / 12).sum().item()
                    metrics = {"error": wrong / len(eval_x), "ce": ce_sum / len(eval_x)}
        write_safetensors(args.output, model.state_dict())
        log(f"{stage} epoch {epoch + 1}: {json.dumps(metrics)}")
    report(stage, elapsed(start), args.epochs * len(x))


# ---------------------------------------------------------------------------------------
# vqvae2-mnist (rosinality/vq-vae-2-pytorch's layout)
# ---------------------------------------------------------------------------------------


class Quantize(nn.Module):
    def __init__(self, dim, n_embed, decay=0.99, eps=1e-5):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, decay, eps
        self.register_buffer("embed", torch.randn(dim, n_embed))
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", self.embed.clone())

    def forward(self, input):
        flatten = input.reshape(-1, self.dim)
        dist = flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        embed_ind = dist.argmin(1)
        quantize = self.embed_code(embed_ind.view(*input.shape[:-1]))
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(embed_ind, self.n_embed).type(flatten.dtype)
                self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(flatten.detach().t() @ onehot, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                cluster_size = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
                self.embed.copy_(self.embed_avg / cluster_size.unsqueeze(0))
        diff = (quantize.detach() - input).pow(2).mean()
        quantize = input + (quantize - input).detach()
        return quantize, diff, embed_ind.view(*input.shape[:-1])

    def embed_code(self, embed_id):
        return F.embedding(embed_id, self.embed.transpose(0, 1))


class ResBlock(nn.Module):
    def __init__(self, in_channel, channel):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(in_channel, channel, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel, in_channel, 1),
        )

    def forward(self, input):
        return self.conv(input) + input


class Encoder(nn.Module):
    def __init__(self, in_channel, channel, n_res_block, n_res_channel, stride):
        super().__init__()
        if stride == 4:
            blocks = [
                nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel // 2, channel, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel, channel, 3, padding=1),
            ]
        else:
            blocks = [
                nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel // 2, channel, 3, padding=1),
            ]
        blocks += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        blocks.append(nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, input):
        return self.blocks(input)


class Decoder(nn.Module):
    def __init__(self, in_channel, out_channel, channel, n_res_block, n_res_channel, stride):
        super().__init__()
        blocks = [nn.Conv2d(in_channel, channel, 3, padding=1)]
        blocks += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        blocks.append(nn.ReLU(inplace=True))
        if stride == 4:
            blocks += [
                nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(channel // 2, out_channel, 4, stride=2, padding=1),
            ]
        else:
            blocks.append(nn.ConvTranspose2d(channel, out_channel, 4, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, input):
        return self.blocks(input)


class VQVAE(nn.Module):
    def __init__(self, in_channel=1, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64, n_embed=512):
        super().__init__()
        self.enc_b = Encoder(in_channel, channel, n_res_block, n_res_channel, stride=4)
        self.enc_t = Encoder(channel, channel, n_res_block, n_res_channel, stride=2)
        self.quantize_conv_t = nn.Conv2d(channel, embed_dim, 1)
        self.quantize_t = Quantize(embed_dim, n_embed)
        self.dec_t = Decoder(embed_dim, embed_dim, channel, n_res_block, n_res_channel, stride=2)
        self.quantize_conv_b = nn.Conv2d(embed_dim + channel, embed_dim, 1)
        self.quantize_b = Quantize(embed_dim, n_embed)
        self.upsample_t = nn.ConvTranspose2d(embed_dim, embed_dim, 4, stride=2, padding=1)
        self.dec = Decoder(embed_dim + embed_dim, in_channel, channel, n_res_block, n_res_channel, stride=4)

    def forward(self, input):
        quant_t, quant_b, diff, _, _ = self.encode(input)
        return self.decode(quant_t, quant_b), diff

    def encode(self, input):
        enc_b = self.enc_b(input)
        enc_t = self.enc_t(enc_b)
        quant_t = self.quantize_conv_t(enc_t).permute(0, 2, 3, 1)
        quant_t, diff_t, id_t = self.quantize_t(quant_t)
        quant_t = quant_t.permute(0, 3, 1, 2)
        dec_t = self.dec_t(quant_t)
        enc_b = torch.cat([dec_t, enc_b], 1)
        quant_b = self.quantize_conv_b(enc_b).permute(0, 2, 3, 1)
        quant_b, diff_b, id_b = self.quantize_b(quant_b)
        quant_b = quant_b.permute(0, 3, 1, 2)
        return quant_t, quant_b, diff_t + diff_b, id_t, id_b

    def decode(self, quant_t, quant_b):
        return self.dec(torch.cat([self.upsample_t(quant_t), quant_b], 1))

    def decode_code(self, code_t, code_b):
        quant_t = self.quantize_t.embed_code(code_t).permute(0, 3, 1, 2)
        quant_b = self.quantize_b.embed_code(code_b).permute(0, 3, 1, 2)
        return self.decode(quant_t, quant_b)


def vq_images(path):
    """An image file as vqvae2-mnist sees it: padded to 32x32 with background, in [-1, 1]."""
    return pad_to(load_images(path), 32) * 2 - 1


def usage(codes, n_embed):
    counts = torch.bincount(codes.flatten(), minlength=n_embed).double()
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(torch.exp(-(p * p.log()).sum()))


def colour_images(path):
    """An image file as vqvae2 sees it: its own geometry, in [-1, 1]."""
    x = load_images(path)
    if x.shape[2] % 8 or x.shape[3] % 8:
        sys.exit(f"torch_stages: {path}: images are {x.shape[2]}x{x.shape[3]}, vqvae2 needs multiples of 8")
    return x * 2 - 1


def train_vqvae2(args, stage):
    images = vq_images if stage == "vqvae2-mnist" else colour_images
    x = on_device(images(args.data))
    eval_x = on_device(images(args.eval_data)) if args.eval_data else None
    model = VQVAE(in_channel=x.shape[1]).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for rows in batches(len(x), args.batch_size, shuffle=True):
            xb = x[rows]
            recon, diff = model(xb)
            loss = F.mse_loss(recon, xb) + 0.25 * diff
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        metrics = {}
        if eval_x is not None:
            model.eval()
            with torch.no_grad():
                mse, tops, bottoms = 0.0, [], []
                for rows in batches(len(eval_x), 250, shuffle=False):
                    xb = eval_x[rows]
                    quant_t, quant_b, _, id_t, id_b = model.encode(xb)
                    mse += F.mse_loss(model.decode(quant_t, quant_b), xb).item() * len(rows)
                    tops.append(id_t)
                    bottoms.append(id_b)
                metrics["mse"] = mse / len(eval_x)
                metrics["codes_used_t"], metrics["perplexity_t"] = usage(torch.cat(tops), 512)
                metrics["codes_used_b"], metrics["perplexity_b"] = usage(torch.cat(bottoms), 512)
        write_safetensors(args.output, model.state_dict())
        log(f"{stage} epoch {epoch + 1}: {json.dumps(metrics)}")
    report(stage, elapsed(start), args.epochs * len(x))


def load_vqvae2(path):
    model = VQVAE()
    model.load_state_dict(state_dict_from(path), strict=True)
    return model.to(DEVICE).eval()


def vq_encode(args):
    model = load_vqvae2(args.model)
    x = on_device(vq_images(args.data))
    labels = load_labels(args.labels) if args.labels else None
    start = time.perf_counter()
    tops, bottoms = [], []
    with torch.inference_mode():
        for rows in batches(len(x), 500, shuffle=False):  # the file's batches (--batch-size 500)
            for chunk in rows.split(250):  # genimg's compute chunk
                _, _, _, id_t, id_b = model.encode(x[chunk])
                tops.append(id_t)
                bottoms.append(id_b)
    top, bottom = torch.cat(tops).cpu(), torch.cat(bottoms).cpu()
    seconds = elapsed(start)
    if args.output:
        out = {"top": top.numpy().astype(np.int64), "bottom": bottom.numpy().astype(np.int64)}
        if labels is not None:
            out["labels"] = labels.numpy()
        write_safetensors(args.output, out)
    report("vq-encode", seconds, len(x))


def vq_decode(args):
    model = load_vqvae2(args.model)
    codes, _ = read_safetensors(args.codes)
    top = on_device(torch.from_numpy(codes["top"].astype(np.int64)))
    bottom = on_device(torch.from_numpy(codes["bottom"].astype(np.int64)))
    n = len(bottom)
    start = time.perf_counter()
    out = np.lib.format.open_memmap(args.output, mode="w+", dtype=np.float32, shape=(n, 1, 32, 32)) if args.output else None
    with torch.inference_mode():
        for rows in batches(n, 500, shuffle=False):
            for chunk in rows.split(250):
                images = (model.decode_code(top[chunk], bottom[chunk]) * 0.5 + 0.5).clamp(0, 1)
                if out is not None:
                    out[int(chunk[0]) : int(chunk[-1]) + 1] = images.cpu().numpy()
    if out is not None:
        out.flush()
        del out
    report("vq-decode", elapsed(start), n)


# ---------------------------------------------------------------------------------------
# pixelcnn-prior: the Gated PixelCNN of docs/models.md
# ---------------------------------------------------------------------------------------


def gate(a):
    f, g = a.chunk(2, 1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    def __init__(self, c, first, n_classes, top):
        super().__init__()
        self.first = first
        self.v_conv = nn.Conv2d(c, 2 * c, (2, 3))  # rows i-1..i: F.pad top 1, left 1, right 1
        self.h_conv = nn.Conv2d(c, 2 * c, (1, 2))  # columns j-1..j: F.pad left 1
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        if n_classes:
            self.class_embed = nn.Embedding(n_classes, 2 * c)
        if top:
            self.top_proj = nn.Conv2d(c, 2 * c, 1)
        if first:
            # Mask A: the current row of the vertical kernel, the current column of the
            # horizontal one. Not in the state dict (genimg stores the plain weights).
            v_mask = torch.ones(2 * c, c, 2, 3)
            v_mask[:, :, 1, :] = 0
            h_mask = torch.ones(2 * c, c, 1, 2)
            h_mask[:, :, :, 1] = 0
            self.register_buffer("v_mask", v_mask, persistent=False)
            self.register_buffer("h_mask", h_mask, persistent=False)

    def forward(self, v, h, labels, top_features):
        v_w, h_w = self.v_conv.weight, self.h_conv.weight
        if self.first:
            v_w, h_w = v_w * self.v_mask, h_w * self.h_mask
        v_pre = F.conv2d(F.pad(v, (1, 1, 1, 0)), v_w, self.v_conv.bias)
        h_pre = F.conv2d(F.pad(h, (1, 0, 0, 0)), h_w, self.h_conv.bias) + self.v_to_h(v_pre)
        cond = 0
        if top_features is not None:
            cond = cond + self.top_proj(top_features)
        if labels is not None:
            cond = cond + self.class_embed(labels)[:, :, None, None]
        v_out = gate(v_pre + cond)
        h_out = self.h_out(gate(h_pre + cond))
        if not self.first:
            h_out = h_out + h
        return v_out, h_out


class PixelCNN(nn.Module):
    def __init__(self, n_embed=512, channels=64, layers=12, n_classes=None, n_embed_top=None):
        super().__init__()
        c = channels
        self.embed = nn.Embedding(n_embed, c)
        self.layers = nn.ModuleList(GatedLayer(c, i == 0, n_classes, n_embed_top) for i in range(layers))
        if n_embed_top:
            self.top_embed = nn.Embedding(n_embed_top, c)
            self.top_upsample = nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, n_embed, 1))

    def forward(self, codes, labels=None, top=None):
        x = self.embed(codes).permute(0, 3, 1, 2)
        top_features = None
        if top is not None:
            top_features = self.top_upsample(self.top_embed(top).permute(0, 3, 1, 2))
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, labels, top_features)
        return self.head(h)  # logits [N, n_embed, H, W]


def train_prior(args, level):
    def load(path):
        t, _ = read_safetensors(path)
        codes = on_device(torch.from_numpy(t[level].astype(np.int64)))
        labels = None if args.no_labels or "labels" not in t else on_device(torch.from_numpy(t["labels"].astype(np.int64)))
        top = on_device(torch.from_numpy(t["top"].astype(np.int64))) if level == "bottom" else None
        return codes, labels, top

    codes, labels, top = load(args.data)
    eval_set = load(args.eval_data) if args.eval_data else None
    _, metadata = read_safetensors(args.data)
    n_embed = lambda lv: int(metadata.get(f"genimg.n_embed_{lv}", 512))  # noqa: E731
    n_classes = int(labels.max()) + 1 if labels is not None else None
    model = PixelCNN(
        n_embed=n_embed(level),
        channels=args.channels,
        layers=args.layers,
        n_classes=n_classes,
        n_embed_top=n_embed("top") if level == "bottom" else None,
    ).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    pick = lambda t, rows: None if t is None else t[rows]  # noqa: E731
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for rows in batches(len(codes), args.batch_size, shuffle=True):
            logits = model(codes[rows], pick(labels, rows), pick(top, rows))
            loss = F.cross_entropy(logits, codes[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        metrics = {}
        if eval_set is not None:
            model.eval()
            e_codes, e_labels, e_top = eval_set
            with torch.no_grad():
                nats = 0.0
                for rows in batches(len(e_codes), 500, shuffle=False):
                    logits = model(e_codes[rows], pick(e_labels, rows), pick(e_top, rows))
                    nats += F.cross_entropy(logits, e_codes[rows]).item() * len(rows)
            metrics["bits_per_code"] = nats / len(e_codes) / math.log(2)
        write_safetensors(args.output, model.state_dict())
        log(f"prior-{level} epoch {epoch + 1}: {json.dumps(metrics)}")
    report(f"prior-{level}", elapsed(start), args.epochs * len(codes))


@torch.inference_mode()
def sample_prior(args):
    def prior(n_embed_top=None):
        return PixelCNN(channels=args.channels, layers=args.layers, n_embed_top=n_embed_top).to(DEVICE).eval()

    def draw(model, size, top=None):
        codes = torch.zeros(args.n, size, size, dtype=torch.long, device=DEVICE)
        for i in range(size):
            for j in range(size):
                probs = F.softmax(model(codes, None, top)[:, :, i, j], 1)
                codes[:, i, j] = torch.multinomial(probs, 1)[:, 0]
        return codes

    top_model, bottom_model = prior(), prior(n_embed_top=512)
    start = time.perf_counter()
    top = draw(top_model, args.top_size)
    draw(bottom_model, 2 * args.top_size, top)
    report("prior-sample", elapsed(start), args.n)


# ---------------------------------------------------------------------------------------
# ddpm-unet-mnist (src/models/ddpm.rs) and ddpm-cifar10
# ---------------------------------------------------------------------------------------


class UResBlock(nn.Module):
    """diffusers' ResnetBlock2D, under its names."""

    def __init__(self, cin, cout, temb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)
        else:
            self.conv_shortcut = None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class UAttention(nn.Module):
    """diffusers' Attention of its DDPM blocks (one head), under its names: Linear q, k, v and
    out over the pixels as rows of channels."""

    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c)
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])

    def forward(self, x):
        b, c, h, w = x.shape
        rows = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # [b, hw, c]
        out = F.scaled_dot_product_attention(self.to_q(rows), self.to_k(rows), self.to_v(rows))
        return x + self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)


class UConv(nn.Module):
    """A resampler: `.conv` as in diffusers' Downsample2D / Upsample2D."""

    def __init__(self, c, stride):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=stride, padding=1)


class UBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()


class UTimeEmbedding(nn.Module):
    def __init__(self, base, temb_dim):
        super().__init__()
        self.linear_1 = nn.Linear(base, temb_dim)
        self.linear_2 = nn.Linear(temb_dim, temb_dim)

    def forward(self, e):
        return self.linear_2(F.silu(self.linear_1(e)))


class UNet(nn.Module):
    """ddpm-unet-mnist: diffusers' UNet2DModel layout and names (downsample_padding 1, GroupNorm
    eps 1e-5, sines then cosines with freq_shift 1, one attention head)."""

    def __init__(self, image_size=32, in_channels=1, base=32, mult=(1, 2, 2), num_res_blocks=2,
                 attn_resolutions=(8,), groups=8, dropout=0.1, num_class_embeds=None):
        super().__init__()
        self.base = base
        temb_dim = 4 * base
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.time_embedding = UTimeEmbedding(base, temb_dim)
        # Classes + 1 rows, the last the null class, added to the time embedding (genimg's
        # and diffusers' num_class_embeds with class_embed_type None).
        if num_class_embeds is not None:
            self.class_embedding = nn.Embedding(num_class_embeds, temb_dim)
        skips, ch, res = [base], base, image_size
        self.down_blocks = nn.ModuleList()
        for level, m in enumerate(mult):
            out, blk = base * m, UBlock()
            for _ in range(num_res_blocks):
                blk.resnets.append(UResBlock(ch, out, temb_dim, groups, dropout))
                ch = out
                if res in attn_resolutions:
                    blk.attentions.append(UAttention(ch, groups))
                skips.append(ch)
            if level + 1 < len(mult):
                blk.downsamplers = nn.ModuleList([UConv(ch, 2)])
                skips.append(ch)
                res //= 2
            self.down_blocks.append(blk)
        self.mid_block = UBlock()
        self.mid_block.resnets.append(UResBlock(ch, ch, temb_dim, groups, dropout))
        self.mid_block.attentions.append(UAttention(ch, groups))
        self.mid_block.resnets.append(UResBlock(ch, ch, temb_dim, groups, dropout))
        self.up_blocks = nn.ModuleList()  # the deepest first, as they run
        for level in reversed(range(len(mult))):
            out, blk = base * mult[level], UBlock()
            for _ in range(num_res_blocks + 1):
                blk.resnets.append(UResBlock(ch + skips.pop(), out, temb_dim, groups, dropout))
                ch = out
                if res in attn_resolutions:
                    blk.attentions.append(UAttention(ch, groups))
            if level > 0:
                blk.upsamplers = nn.ModuleList([UConv(ch, 1)])
                res *= 2
            self.up_blocks.append(blk)
        self.conv_norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)

    def timestep_embedding(self, t):
        half = self.base // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - 1))
        angles = t.double()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], 1).float()

    def forward(self, x, t, y=None):
        temb = self.time_embedding(self.timestep_embedding(t))
        if y is not None:
            temb = temb + self.class_embedding(y)
        temb = F.silu(temb)
        h = self.conv_in(x)
        skips = [h]
        for blk in self.down_blocks:
            for i, block in enumerate(blk.resnets):
                h = block(h, temb)
                if i < len(blk.attentions):
                    h = blk.attentions[i](h)
                skips.append(h)
            if hasattr(blk, "downsamplers"):
                h = blk.downsamplers[0].conv(h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h)
        h = self.mid_block.resnets[1](h, temb)
        for blk in self.up_blocks:
            for i, block in enumerate(blk.resnets):
                h = block(torch.cat([h, skips.pop()], 1), temb)
                if i < len(blk.attentions):
                    h = blk.attentions[i](h)
            if hasattr(blk, "upsamplers"):
                h = blk.upsamplers[0].conv(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def linear_abar(T=1000):
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def unet(preset, num_class_embeds=None):
    if preset == "ddpm-cifar10":
        return UNet(in_channels=3, base=128, mult=(1, 2, 2, 2), attn_resolutions=(16,), groups=32,
                    num_class_embeds=num_class_embeds)
    return UNet(num_class_embeds=num_class_embeds)


P_UNCOND = 0.1  # genimg's p_uncond: a training label dropped to the null class


def train_ddpm(args):
    # ddpm-unet-mnist: digits padded to 32x32; ddpm-cifar10: colour images as they are; in [-1, 1].
    x = on_device(colour_images(args.data) if args.preset == "ddpm-cifar10" else vq_images(args.data))
    # With --labels a class-conditional model, as genimg's ddpm-train makes on labelled data.
    y = on_device(load_labels(args.labels)) if args.labels else None
    classes = int(y.max()) + 1 if y is not None else None
    model = unet(args.preset, None if classes is None else classes + 1).to(DEVICE)
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    abar = on_device(linear_abar().float())
    updates = 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for rows in batches(len(x), args.batch_size, shuffle=True):
            x0 = x[rows]
            t = torch.randint(0, len(abar), (len(rows),), device=DEVICE)
            eps = torch.randn_like(x0)
            a = abar[t][:, None, None, None]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            if y is None:
                labels = None
            else:
                drop = torch.rand(len(rows), device=DEVICE) < P_UNCOND
                labels = torch.where(drop, torch.full_like(y[rows], classes), y[rows])
            loss = F.mse_loss(model(x_t, t, labels), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            d = min(0.9999, (1 + updates) / (10 + updates))
            with torch.no_grad():
                for e, p in zip(ema, model.parameters()):
                    e.mul_(d).add_(p, alpha=1 - d)
            updates += 1
        names = [name for name, _ in model.named_parameters()]
        write_safetensors(args.output, dict(zip(names, ema)))
        log(f"ddpm-train epoch {epoch + 1}: last loss {loss.item():.4f}")
    report("ddpm-train", elapsed(start), args.epochs * len(x))


def ddim(args):
    state = state_dict_from(args.model)
    embeds = state["class_embedding.weight"].shape[0] if "class_embedding.weight" in state else None
    model = UNet(num_class_embeds=embeds)
    model.load_state_dict(state, strict=True)
    model.to(DEVICE).eval()
    abar = linear_abar()
    span = len(abar)
    ts = [round(span * (args.steps - i) / args.steps) - 1 for i in range(args.steps)]
    ts = list(dict.fromkeys(ts))
    out = []
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, args.n, 64):  # ddpm-denoise's --batch-size 64
            x = torch.randn(min(64, args.n - first), 1, 32, 32, device=DEVICE)
            # A class-conditional model: classes in equal blocks, guidance 0 (one pass a step).
            y = None
            if embeds is not None:
                rows = torch.arange(first, first + len(x), device=DEVICE)
                y = rows * (embeds - 1) // args.n
            for i, t in enumerate(ts):
                a = float(abar[t])
                a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
                eps = model(x, torch.full((len(x),), t, dtype=torch.long, device=DEVICE), y)
                x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
                eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)  # eta 0: sigma 0
                x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
            out.append(((x + 1) * 0.5).clamp(0, 1))
    seconds = elapsed(start)
    if args.output:
        np.save(args.output, torch.cat(out).cpu().numpy())
    report("ddim", seconds, args.n)


# ---------------------------------------------------------------------------------------
# The driver's check: do the peer's codes equal genimg's?
# ---------------------------------------------------------------------------------------


def agree(args):
    a, _ = read_safetensors(args.genimg)
    b, _ = read_safetensors(args.peer)
    n = min(args.first, len(a["bottom"]), len(b["bottom"]))
    result = {"images": n}
    for level in ("top", "bottom"):
        x, y = a[level][:n].astype(np.int64), b[level][:n].astype(np.int64)
        result[level] = float((x == y).mean()) if n else None
    print(json.dumps(result))


TRAINING_STAGES = ("vae-mlp", "vib-mlp", "vqvae2-mnist", "vqvae2", "prior-top", "prior-bottom", "ddpm-train")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    sub = p.add_subparsers(dest="stage", required=True)

    def stage(name, *flags):
        s = sub.add_parser(name)
        for flag in flags:
            s.add_argument(flag, required=flag in ("--data", "--model", "--codes", "--genimg", "--peer"))
        return s

    for name in ("vae-mlp", "vib-mlp", "vqvae2-mnist", "vqvae2", "ddpm-train"):
        s = stage(name, "--data", "--labels", "--eval-data", "--eval-labels")
        s.add_argument("--epochs", type=int, default=1)
        if name.startswith("vqvae2") or name == "ddpm-train":
            s.add_argument("--batch-size", type=int, default=128)
        if name == "ddpm-train":
            s.add_argument("--preset", choices=("ddpm-unet-mnist", "ddpm-cifar10"), default="ddpm-unet-mnist")
        s.add_argument("-o", "--output", default=f"torch-{name}.safetensors")
    for name in ("prior-top", "prior-bottom"):
        s = stage(name, "--data", "--eval-data")
        s.add_argument("--epochs", type=int, default=1)
        s.add_argument("--channels", type=int, default=64)
        s.add_argument("--layers", type=int, default=12)
        s.add_argument("--batch-size", type=int, default=128)
        s.add_argument("--no-labels", action="store_true", help="ignore the code file's labels")
        s.add_argument("-o", "--output", default=f"torch-{name}.safetensors")
    stage("vq-encode", "--model", "--data", "--labels").add_argument("-o", "--output")
    stage("vq-decode", "--model", "--codes").add_argument("-o", "--output")
    s = stage("ddim", "--model")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("-o", "--output")
    s = stage("prior-sample")
    s.add_argument("-n", type=int, default=16)
    s.add_argument("--top-size", type=int, default=32)
    s.add_argument("--channels", type=int, default=64)
    s.add_argument("--layers", type=int, default=12)
    s = stage("agree", "--genimg", "--peer")
    s.add_argument("--first", type=int, default=100)
    args = p.parse_args()

    if args.stage in TRAINING_STAGES:
        # torch.optim imports torch._dynamo on an optimizer's first use (about 3 s here):
        # counted as part of torch's import, which the driver's ratio leaves out.
        importlib.import_module("torch._dynamo")
    _measure_import_seconds()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # f32, as genimg
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.init()
    if args.stage == "vib-mlp" and not args.labels:
        p.error("vib-mlp needs --labels")
    if args.stage == "vib-mlp" and args.eval_data and not args.eval_labels:
        p.error("vib-mlp needs --eval-labels with --eval-data")
    run = {
        "vae-mlp": lambda: train_mlp(args, "vae-mlp"),
        "vib-mlp": lambda: train_mlp(args, "vib-mlp"),
        "vqvae2-mnist": lambda: train_vqvae2(args, "vqvae2-mnist"),
        "vqvae2": lambda: train_vqvae2(args, "vqvae2"),
        "vq-encode": lambda: vq_encode(args),
        "vq-decode": lambda: vq_decode(args),
        "prior-top": lambda: train_prior(args, "top"),
        "prior-bottom": lambda: train_prior(args, "bottom"),
        "ddpm-train": lambda: train_ddpm(args),
        "ddim": lambda: ddim(args),
        "prior-sample": lambda: sample_prior(args),
        "agree": lambda: agree(args),
    }
    run[args.stage]()


if __name__ == "__main__":
    main()
