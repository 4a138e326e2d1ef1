"""Golden values of the vae-conv family (src/models/vae_conv.rs, test `matches_pytorch_vanilla_vae`).

The module structure of AntixK/PyTorch-VAE's VanillaVAE (models/vanilla_vae.py), copied
with one change: `decode` views the bottleneck as [-1, hidden_dims[-1], H/2^L, W/2^L]
instead of the fixed [-1, 512, 2, 2], so the reduced config (hidden_dims [8, 16] on
3x8x8, latent 4) runs. Random init with a fixed seed, BatchNorm weights and running
statistics randomised too, then one training-mode forward and backward of the reference's
loss on a fixed input and noise, and an evaluation-mode pass after it.

Writes tests/fixtures/vae_conv_tiny.safetensors (the state dict before the step, as
`safetensors.torch.save_file(model.state_dict())` writes it) and
tests/fixtures/vae_conv_tiny_expected.safetensors (inputs, outputs, the buffers after the
step, the gradients). Run from the repository root: python3 tests/golden/vae_conv.py
"""

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F


class VanillaVAE(nn.Module):
    def __init__(self, in_channels, latent_dim, hidden_dims):
        super().__init__()
        self.latent_dim = latent_dim
        self.last = hidden_dims[-1]
        modules = []
        for h_dim in hidden_dims:
            modules.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels=h_dim, kernel_size=3, stride=2, padding=1),
                    nn.BatchNorm2d(h_dim),
                    nn.LeakyReLU(),
                )
            )
            in_channels = h_dim
        self.encoder = nn.Sequential(*modules)
        self.fc_mu = nn.Linear(hidden_dims[-1] * 4, latent_dim)
        self.fc_var = nn.Linear(hidden_dims[-1] * 4, latent_dim)
        modules = []
        self.decoder_input = nn.Linear(latent_dim, hidden_dims[-1] * 4)
        hidden_dims = list(reversed(hidden_dims))
        for i in range(len(hidden_dims) - 1):
            modules.append(
                nn.Sequential(
                    nn.ConvTranspose2d(
                        hidden_dims[i], hidden_dims[i + 1], kernel_size=3, stride=2, padding=1, output_padding=1
                    ),
                    nn.BatchNorm2d(hidden_dims[i + 1]),
                    nn.LeakyReLU(),
                )
            )
        self.decoder = nn.Sequential(*modules)
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(hidden_dims[-1], hidden_dims[-1], kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(hidden_dims[-1]),
            nn.LeakyReLU(),
            nn.Conv2d(hidden_dims[-1], out_channels=3, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def encode(self, input):
        result = torch.flatten(self.encoder(input), start_dim=1)
        return [self.fc_mu(result), self.fc_var(result)]

    def decode(self, z):
        result = self.decoder_input(z).view(-1, self.last, 2, 2)
        return self.final_layer(self.decoder(result))

    def loss_function(self, recons, input, mu, log_var, M_N):
        recons_loss = F.mse_loss(recons, input)
        kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
        return recons_loss + M_N * kld_loss, recons_loss, kld_loss


torch.manual_seed(0)
model = VanillaVAE(3, 4, [8, 16])
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(3)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "tests/fixtures/vae_conv_tiny.safetensors")

x = torch.rand(4, 3, 8, 8) * 2 - 1
eps = torch.randn(4, 4)
model.train()
mu, log_var = model.encode(x)
z = eps * torch.exp(0.5 * log_var) + mu
recons = model.decode(z)
loss, mse, kld = model.loss_function(recons, x, mu, log_var, M_N=0.00025)
loss.backward()

expected = {"x": x, "eps": eps, "mu": mu, "logvar": log_var, "recons": recons}
expected.update({"loss": loss.reshape(1), "mse": mse.reshape(1), "kld": kld.reshape(1)})
for name, buf in model.named_buffers():
    expected[f"after.{name}"] = buf
for name, p in model.named_parameters():
    expected[f"grad.{name}"] = p.grad

model.eval()
with torch.no_grad():
    mu_e, log_var_e = model.encode(x)
    expected.update({"eval.mu": mu_e, "eval.logvar": log_var_e, "eval.recons": model.decode(mu_e)})
save_file({k: v.detach().contiguous() for k, v in expected.items()}, "tests/fixtures/vae_conv_tiny_expected.safetensors")
print(f"loss {loss.item():.6f} mse {mse.item():.6f} kld {kld.item():.6f}")
