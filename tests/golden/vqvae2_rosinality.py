"""Golden values for tests/cli/pytorch_vqvae2.rs: rosinality/vq-vae-2-pytorch's VQVAE() with
its defaults (in_channel 3, channel 128, n_res_block 2, n_res_channel 32, embed_dim 64,
n_embed 512, decay 0.99), on two 3x64x64 images.

The modules below are that project's vqvae.py (https://github.com/rosinality/vq-vae-2-pytorch,
commit ef5f67c), with only the training-time EMA update left out (it does not run in eval
mode). Every parameter and buffer is filled from a counter-based generator that the Rust test
computes bit for bit (`fill` below, `fill` there): no fixture file is needed, and a swapped or
transposed tensor changes the outputs. The state dict is saved with safetensors.torch.save_file
(no metadata: a plain PyTorch state dict), which is what the Rust test writes too.

Run: python3 tests/golden/vqvae2_rosinality.py [state.safetensors]  (torch, numpy, safetensors)
It prints the constants pasted into the test.
"""
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from seeded import unit

SPREAD = 1.0


def fill(name, shape):
    """Uniform in [-scale, scale): sqrt(6 / fan in) for conv weights (He's scale), 0.01 for biases,
    SPREAD for the rest (the codebooks: about the spread of the encoder outputs, so that many
    codes are used)."""
    n = int(np.prod(shape))
    u = unit(name, n)
    if name.endswith("bias"):
        scale = 0.01
    elif len(shape) == 4:
        scale = np.sqrt(6.0 / np.prod(shape[1:]))
    else:
        scale = SPREAD
    return torch.from_numpy((u * scale).astype(np.float32).reshape(shape))


class Quantize(nn.Module):
    def __init__(self, dim, n_embed, decay=0.99, eps=1e-5):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, decay, eps
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())

    def forward(self, input):
        flatten = input.reshape(-1, self.dim)
        dist = flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        _, embed_ind = (-dist).max(1)
        embed_ind = embed_ind.view(*input.shape[:-1])
        quantize = self.embed_code(embed_ind)
        diff = (quantize.detach() - input).pow(2).mean()
        quantize = input + (quantize - input).detach()
        return quantize, diff, embed_ind

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
        elif stride == 2:
            blocks = [
                nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel // 2, channel, 3, padding=1),
            ]
        for i in range(n_res_block):
            blocks.append(ResBlock(channel, n_res_channel))
        blocks.append(nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, input):
        return self.blocks(input)


class Decoder(nn.Module):
    def __init__(self, in_channel, out_channel, channel, n_res_block, n_res_channel, stride):
        super().__init__()
        blocks = [nn.Conv2d(in_channel, channel, 3, padding=1)]
        for i in range(n_res_block):
            blocks.append(ResBlock(channel, n_res_channel))
        blocks.append(nn.ReLU(inplace=True))
        if stride == 4:
            blocks.extend([
                nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(channel // 2, out_channel, 4, stride=2, padding=1),
            ])
        elif stride == 2:
            blocks.append(nn.ConvTranspose2d(channel, out_channel, 4, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, input):
        return self.blocks(input)


class VQVAE(nn.Module):
    def __init__(self, in_channel=3, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64, n_embed=512,
                 decay=0.99):
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


def images():
    """Two 3x64x64 images in [0, 1], as the test writes them (f32 .npy): smooth waves of a
    frequency and phase per image and channel, so that the codes vary over the map."""
    n, c, y, x = np.meshgrid(np.arange(2), np.arange(3), np.arange(64), np.arange(64), indexing="ij")
    f = 0.05 + 0.03 * n + 0.02 * c
    return (0.5 + 0.5 * np.sin(f * x + 1.7 * f * y + c + 2.0 * n)).astype(np.float32)


def main():
    model = VQVAE().eval()
    state = {k: fill(k, tuple(v.shape)) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    if len(sys.argv) > 1:
        from safetensors.torch import save_file
        save_file(state, sys.argv[1])
    x = torch.from_numpy(images()) * 2 - 1
    with torch.no_grad():
        _, _, _, id_t, id_b = model.encode(x)
        out = model.decode_code(id_t, id_b)
    unit = ((out + 1) / 2).clamp(0, 1).flatten().double()
    print(f"// {len(state)} tensors, {sum(v.numel() for v in state.values())} values")
    print("const TOP: [u16; 128] = [" + ", ".join(map(str, id_t.flatten().tolist())) + "];")
    print("const BOTTOM: [u16; 512] = [" + ", ".join(map(str, id_b.flatten().tolist())) + "];")
    picks = [0, 1, 777, 4095, 4096, 12287, 12288, 20000, 24575]
    print("const DECODED_AT: [(usize, f64); 9] = [" + ", ".join(f"({i}, {unit[i].item():.7e})" for i in picks) + "];")
    print(f"const DECODED_SUM: f64 = {unit.sum().item():.9e};")


if __name__ == "__main__":
    main()
