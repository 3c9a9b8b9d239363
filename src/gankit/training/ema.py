"""Exponential moving average of the generator's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


def ema_decay(decay: float, step: int) -> float:
    """The decay used at generator step `step` (0-based): ramped up as min(decay, (1 + step) / (10 + step)),
    so that early in training the average follows the generator instead of its random initialization
    (with a fixed 0.999, 300 steps in, 74% of the EMA weights would still be the initial ones)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * generator for parameters; buffers (batch norm running
    statistics) are copied, since averaging statistics of different weights means nothing."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in generator.parameters()], 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)
