"""Learning-rate decay over a run: a factor on train.g_lr and train.d_lr (and on pgan's per-scale rates),
a pure function of the step, so a resumed run continues the curve exactly where its checkpoint left it."""

from __future__ import annotations

import torch

from gankit.config import TrainConfig


def lr_factor(train: TrainConfig, step: int, total_steps: int) -> float:
    """The factor on the base learning rates for the update made at `step` (0-based) of `total_steps`.

    constant: 1. linear: 1 up to lr_decay_start * total_steps, then a straight line that would reach
    lr_final at total_steps (the last update uses one step's worth above it, never exactly lr_final)."""
    if train.lr_schedule == "constant":
        return 1.0
    start = int(round(train.lr_decay_start * total_steps))
    if step < start:
        return 1.0
    progress = (step - start) / max(total_steps - start, 1)
    return 1.0 - (1.0 - train.lr_final) * min(progress, 1.0)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
