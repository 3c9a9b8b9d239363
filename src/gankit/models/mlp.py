"""The fully connected GAN of Goodfellow et al. (2014), for 2-D toy data and flattened images."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: tuple[int, ...], width: int, hidden_layers: int,
                 image_output: bool):
        super().__init__()
        self.z_dim = z_dim
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        fan_in = z_dim
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True)]
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(out_shape)))
        # Images live in [-1, 1]; toy points are unbounded, so their output stays linear.
        if image_output:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], width: int, hidden_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = math.prod(in_shape)
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), nn.LeakyReLU(0.2, inplace=True)]
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One raw score (logit) per sample."""
        return self.net(x.flatten(1)).squeeze(1)
