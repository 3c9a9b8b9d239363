"""Exponential moving average of the generator's weights.

With spectral normalization on G, G computes with W / sigma(W), not with its raw weights W: averaging W
(and u, v) and normalizing afterwards is not the average of what G computed with. So the EMA copy is
the plain network (no parametrization), and what it averages is G's normalized weights."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from gankit.models.spectral_norm import is_spectrally_normalized, plain_state_dict


def make_ema(generator: nn.Module, build_plain: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A frozen copy in eval mode; with spectral norm, build_plain()'s plain network with G's normalized weights."""
    if not is_spectrally_normalized(generator):
        ema = copy.deepcopy(generator)
    else:
        # Not a deep copy with the parametrizations removed: a copy shares G's parametrized class, and
        # removing them from it would strip G too. Built on the meta device, the plain network allocates
        # nothing and draws nothing from the run's random stream; `assign` takes the copies' device and layout.
        with torch.device("meta"):
            ema = build_plain()
        ema.load_state_dict({k: v.detach().clone() for k, v in plain_state_dict(generator).items()}, assign=True)
    ema.eval().requires_grad_(False)
    return ema


def ema_decay(decay: float, step: int) -> float:
    """The decay used at generator step `step` (0-based): ramped up as min(decay, (1 + step) / (10 + step)),
    so that early in training the average follows the generator instead of its random initialization
    (with a fixed 0.999, 300 steps in, 74% of the EMA weights would still be the initial ones)."""
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_decay_from_half_life(half_life_kimg: float, batch_size: int, images_seen: int,
                              rampup: float | None = None) -> float:
    """StyleGAN2's EMA: the decay per step of batch_size images that halves a weight's share every
    half_life_kimg thousand images, 0.5 ** (batch_size / half-life); with `rampup`, the half-life is at most
    rampup * images_seen (NVIDIA's ema_rampup), so early on the average follows the generator closely."""
    half_life = half_life_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * generator for parameters (normalized weights where G has spectral
    norm); buffers (batch norm running statistics) are copied, since averaging statistics of different
    weights means nothing."""
    source = plain_state_dict(generator)
    names = [name for name, _ in ema.named_parameters()]
    torch._foreach_lerp_([p for _, p in ema.named_parameters()], [source[n].detach() for n in names], 1.0 - decay)
    for name, ema_buffer in ema.named_buffers():
        if name in source:  # non-persistent buffers (StyleGAN2's resampling filter) are constants
            ema_buffer.copy_(source[name])
