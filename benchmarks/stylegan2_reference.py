"""The plain StyleGAN2 training loop that benchmarks/train_speed.py measures gankit against.

Written the straightforward way, from the paper: every modulated convolution scales its weights per
sample and runs as a grouped convolution (the paper's equations 1-3 as written), fp32, R1 on every
discriminator step and the path-length penalty on every generator step (no lazy regularization), style
mixing, and the tutorials' data path (PIL images and torchvision transforms per sample, a DataLoader with
2 workers). The networks are gankit's (same layers, same widths), so the two loops do the same arithmetic
per step apart from the regularizers' frequency and the form of the modulated convolution.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gankit import config as gcfg
from gankit.models import build_discriminator, build_generator
from gankit.models.fir import blur
from gankit.models.stylegan2 import ModulatedConv, _lrelu


def grouped_modulated_forward(self: ModulatedConv, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                              share=(0, 1)) -> torch.Tensor:
    """The modulated convolution with per-sample weights w'' = s * w / sqrt(sum (s * w)^2 + eps), one group per sample."""
    n, c, h, wd = x.shape
    styles = self.affine(w) * self.style_gain
    weight = self.weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    if self.demodulate:
        weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4], keepdim=True) + 1e-8)
    out_channels, k = weight.shape[1], weight.shape[-1]
    if self.up:
        # transposed grouped convolution: weights [N * I, O, k, k]
        x = F.conv_transpose2d(x.reshape(1, n * c, h, wd), weight.transpose(1, 2).reshape(n * c, out_channels, k, k),
                               stride=2, groups=n)
        x = blur(x.reshape(n, out_channels, x.shape[2], x.shape[3]), self.resample_filter * 4, pad=(5 - k) // 2)
    else:
        x = F.conv2d(x.reshape(1, n * c, h, wd), weight.reshape(n * out_channels, c, k, k), padding=self.padding,
                     groups=n).reshape(n, out_channels, h, wd)
    if self.noise_strength is not None and noise_mode != "none":
        x = x + torch.randn(n, 1, x.shape[2], x.shape[3]) * self.noise_strength
    x = x + self.bias[None, :, None, None]
    return _lrelu(x) if self.activation else x


def run_stylegan2_reference(dataset, preset: str, overrides: list[str], steps: int, warmup: int = 3) -> float:
    """Images/s of the plain loop (CPU, fp32) on the preset's networks and hyper-parameters."""
    config = gcfg.load(preset, overrides)
    torch.manual_seed(0)
    G = build_generator(config.model, config.data)
    D = build_discriminator(config.model, config.data, "none")
    for module in G.modules():
        if isinstance(module, ModulatedConv):
            module.forward = grouped_modulated_forward.__get__(module)
    batch, t = config.train.batch_size, config.train
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                        persistent_workers=True)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.g_lr, betas=t.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.d_lr, betas=t.betas)
    gamma, pl_weight = config.loss.r1_gamma, config.loss.pl_weight
    pl_mean = torch.zeros([])
    data = iter(loader)
    start, seen = None, 0
    for step in range(steps + warmup):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        try:
            real = next(data)[0]
        except StopIteration:
            data = iter(loader)
            real = next(data)[0]
        # D: logistic loss and R1 on every step.
        fake = G(torch.randn(batch, config.model.z_dim))
        real.requires_grad_(True)
        real_out = D(real)
        (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)
        d_loss = F.softplus(D(fake.detach())).mean() + F.softplus(-real_out).mean() + \
            gamma / 2 * grad.square().sum([1, 2, 3]).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        # G: non-saturating loss and the path-length penalty on every step.
        g_loss = F.softplus(-D(fake)).mean()
        if pl_weight > 0:
            images, ws = G(torch.randn(batch // 2, config.model.z_dim), return_ws=True)
            noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
            (pl_grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
            lengths = pl_grad.square().sum(2).mean(1).sqrt()
            pl_mean = pl_mean + 0.01 * (lengths.mean().detach() - pl_mean)
            g_loss = g_loss + pl_weight * (lengths - pl_mean).square().mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        g_loss.item()
        seen += batch
    elapsed = time.perf_counter() - start
    del loader
    return seen / elapsed
