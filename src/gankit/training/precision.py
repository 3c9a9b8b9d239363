"""Mixed precision for the training step: autocast, and for fp16 a gradient scaler per network.

bf16 keeps fp32's exponent range, so it needs no loss scaling. fp16 does: small gradients underflow.
fp16 follows PyTorch's AMP recipe, including its recipe for gradient penalties (WGAN-GP's, R1 and R2 in
losses.py): the critic's scores are multiplied by the scale before `autograd.grad`, and the input
gradients divided by it before the penalty is formed, so that the penalty's own backward pass is
scaled like the rest of the loss. A step whose gradients overflowed is skipped by the scaler, which
then lowers the scale.

With fp32 and bf16 the scalers are disabled GradScalers: they pass losses and steps through unchanged,
so those runs compute exactly what they computed without this module.
"""

from __future__ import annotations

import contextlib

import torch

from gankit.device import resolve_precision

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, name: str, device: torch.device):
        self.name = resolve_precision(name, device)
        self.device = device
        self.dtype = AUTOCAST_DTYPES.get(self.name)
        self.scaling = self.name == "fp16"
        self.g_scaler = torch.amp.GradScaler(device.type, enabled=self.scaling)
        self.d_scaler = torch.amp.GradScaler(device.type, enabled=self.scaling)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def penalty_scale(self) -> torch.Tensor | None:
        """The critic's current loss scale as a device tensor (no host sync), for the gradient penalty."""
        return self.d_scaler.scale(torch.ones((), device=self.device)) if self.scaling else None

    @staticmethod
    def update(scaler: torch.amp.GradScaler, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
               params, clip: float | None) -> None:
        """backward, optional gradient-norm clipping on the unscaled gradients, optimizer step."""
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()

    def finite_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """With fp16, an overflow the scaler handles (the step is skipped) must not read as divergence:
        non-finite values of that step count as 0 in the logged means. Other precisions: unchanged."""
        if not self.scaling:
            return stats
        return {k: torch.where(torch.isfinite(v), v, torch.zeros_like(v)) for k, v in stats.items()}

    def state_dict(self) -> dict | None:
        if not self.scaling:
            return None
        return {"g": self.g_scaler.state_dict(), "d": self.d_scaler.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        """A run that switches to fp16 on resume starts its scalers afresh."""
        if self.scaling and state:
            self.g_scaler.load_state_dict(state["g"])
            self.d_scaler.load_state_dict(state["d"])
