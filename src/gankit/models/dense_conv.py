"""Convolutions whose kernel covers the whole input, computed as the matrix products they are.

DCGAN's first layer (a 4x4 transposed convolution of the 1x1 latent) and its discriminator's last (a 4x4
convolution of the 4x4 features, no padding) are dense layers in convolution form. On CPUs oneDNN runs
these degenerate shapes several times slower than a matmul of the same size (benchmarks/demo_step.py
times both), and in the demo's small DCGAN they were about a tenth of the training step. The classes
below subclass nn.Conv2d and nn.ConvTranspose2d, so parameters, state dicts, checkpoints, initialization
and spectral norm are those of the plain layers; any other input shape falls back to the plain
convolution.

Both contract in the weight's own memory order: with channels_last weights (train.channels_last) the
reshapes are views and the result is channels_last too, with contiguous weights everything is NCHW.

Their products, and the label lookups of the conditional layers, are computed in float32 whatever the
autocast (`float32_matmul`): at these sizes (a batch of 32 against a few thousand features, or one-hot
labels against a table) bf16 matmuls are 1.5-3x slower than float32 on CPUs, forward and backward
(benchmarks/demo_step.py), and the first and last layers keep full precision as well.
"""

from __future__ import annotations

import torch
from torch import nn


def float32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in float32, autocast or not (the result is float32)."""
    with torch.autocast(a.device.type, enabled=False):
        return a.float() @ b.float()


def _dense_form(module: nn.Module) -> None:
    if module.stride != (1, 1) or module.padding != (0, 0) or module.dilation != (1, 1) or module.groups != 1:
        raise ValueError(f"{type(module).__name__} needs stride 1, padding 0, dilation 1 and groups 1")


def is_channels_last(t: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels_last and not also contiguous (as a 1-channel or 1x1 one can be)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class DenseConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d(cin, cout, k, 1, 0) of a 1x1 input: x [N, cin] @ weight [cin, cout*k*k]."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _dense_form(self)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (1, 1) or output_size is not None:
            return super().forward(x, output_size)
        n, (kh, kw) = x.shape[0], self.kernel_size
        weight = self.weight
        if is_channels_last(weight):  # memory order (cin, kh, kw, cout): a free view
            out = float32_matmul(x.flatten(1), weight.permute(0, 2, 3, 1).reshape(self.in_channels, -1))
            out = out.view(n, kh, kw, self.out_channels).permute(0, 3, 1, 2)
        else:
            out = float32_matmul(x.flatten(1), weight.reshape(self.in_channels, -1)).view(n, self.out_channels, kh, kw)
        if self.bias is not None:
            out = out + self.bias.float().view(1, -1, 1, 1)
        return out


class DenseConv2d(nn.Conv2d):
    """Conv2d(cin, cout, k, 1, 0) of a k x k input: x [N, cin*k*k] @ weight [cout, cin*k*k]^T, out [N, cout, 1, 1]."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _dense_form(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != tuple(self.kernel_size):
            return super().forward(x)
        n, weight = x.shape[0], self.weight
        if is_channels_last(x):  # contract in (kh, kw, cin) order: x's view is free, the weight's small
            flat_x = x.permute(0, 2, 3, 1).reshape(n, -1)
            flat_w = weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1)
        else:
            flat_x, flat_w = x.reshape(n, -1), weight.reshape(self.out_channels, -1)
        out = float32_matmul(flat_x, flat_w.t())
        if self.bias is not None:
            out = out + self.bias.float()
        return out.view(n, self.out_channels, 1, 1)
