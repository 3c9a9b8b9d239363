"""DCGAN (Radford et al. 2015), sized from the resolution: 4x4 features doubled to the output size."""

from __future__ import annotations

import math

import torch
from torch import nn


def _num_doublings(resolution: int) -> int:
    return int(math.log2(resolution)) - 2  # from 4x4 to resolution


def _upsample(cin: int, cout: int, mode: str, bias: bool = False) -> list[nn.Module]:
    """One x2 upsampling convolution. Transposed convolutions are the paper's; the other two avoid
    the checkerboard artifacts that overlapping transposed kernels can leave."""
    if mode == "transposed":
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)]
    if mode == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]
    if mode == "pixelshuffle":
        return [nn.Conv2d(cin, cout * 4, 3, 1, 1, bias=bias), nn.PixelShuffle(2)]
    raise ValueError(f"unknown upsampling {mode!r}")


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's initialization: convolutions N(0, 0.02); normalization scales N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int, width: int,
                 upsample: str = "transposed"):
        super().__init__()
        self.z_dim = z_dim
        doublings = _num_doublings(resolution)
        feats = [width * 2 ** (doublings - 1 - i) for i in range(doublings)]  # e.g. 256, 128, 64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, feats[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(feats[0]),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip(feats[:-1], feats[1:]):
            layers += _upsample(cin, cout, upsample) + [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        # No batch norm follows the output layer, so it has a bias; tanh maps to [-1, 1].
        layers += _upsample(feats[-1], channels, upsample, bias=True) + [nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        # Layer norm over (C, H, W): per sample, so the gradient penalty stays per sample.
        return [nn.GroupNorm(1, channels)]
    return []


class DCGANDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int, norm: str = "batch"):
        super().__init__()
        doublings = _num_doublings(resolution)
        feats = [width * 2**i for i in range(doublings)]  # e.g. 64, 128, 256
        # The input layer has no normalization, as in the paper.
        layers: list[nn.Module] = [nn.Conv2d(channels, feats[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(feats[:-1], feats[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none")]
            layers += _norm(norm, cout) + [nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(feats[-1], 1, 4, 1, 0))  # 4x4 -> one logit
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One raw score (logit) per image."""
        return self.net(x).flatten()
