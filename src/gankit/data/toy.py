"""2-D toy mixtures with the parameters of the WGAN-GP paper's toy script (Gulrajani et al. 2017).

- 8 Gaussians: centres on a circle of radius 2 at angles k*pi/4, std 0.02, all divided by 1.414.
- 25 Gaussians: centres at (2i, 2j) for i, j in -2..2, std 0.05, all divided by 2.828.
- Swiss roll: t = 1.5*pi*(1 + 2u), u ~ U[0, 1), points (t cos t, t sin t) plus N(0, 0.25^2) noise per
  coordinate (scikit-learn's make_swiss_roll with noise 0.25, its x and z axes), divided by 7.5.
"""

from __future__ import annotations

import math

import torch


def mixture_modes(source: str) -> tuple[torch.Tensor, float]:
    """The (centres [K, 2], std) of a Gaussian mixture source, in the scaled data space."""
    if source == "toy-8gaussians":
        angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        centres = torch.stack([angles.cos(), angles.sin()], 1) * 2.0
        return (centres / 1.414).float(), 0.02 / 1.414
    if source == "toy-25gaussians":
        grid = torch.arange(-2, 3, dtype=torch.float64) * 2.0
        centres = torch.cartesian_prod(grid, grid)
        return (centres / 2.828).float(), 0.05 / 2.828
    raise ValueError(f"{source} is not a Gaussian mixture")


def sample_toy_labeled(source: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n points [n, 2] float32 and, for the mixtures, the index of the mode each came from (int64 [n];
    None for the swiss roll), drawn with the given generator."""
    if source == "toy-swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        points = torch.stack([t * t.cos(), t * t.sin()], 1)
        points += 0.25 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (points / 7.5).float(), None
    centres, std = mixture_modes(source)
    which = torch.randint(len(centres), (n,), generator=generator)
    return centres[which] + std * torch.randn(n, 2, generator=generator), which


def sample_toy(source: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n points [n, 2] float32 drawn with the given generator (the same draws as sample_toy_labeled)."""
    return sample_toy_labeled(source, n, generator)[0]


def toy_class_names(source: str) -> list[str] | None:
    """The mixtures' classes are their modes, named by index ("0".."K-1"); the swiss roll has none."""
    if source == "toy-swissroll":
        return None
    return [str(k) for k in range(len(mixture_modes(source)[0]))]
