"""Progressive GAN building blocks: equalized-learning-rate layers, pixel norm, minibatch stddev.

Equalized learning rate (Karras et al. 2018): weights are stored N(0, 1) and multiplied at run time
by the He constant gain / sqrt(fan_in), the bias being added after, as in NVIDIA's code. Adam's
step is then the same size for every layer whatever its fan-in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HE_GAIN = math.sqrt(2.0)  # the He constant's gain for (leaky) ReLU layers


class EqualizedConv2d(nn.Module):
    """Stride-1 'same' convolution with weights N(0, 1) scaled by gain / sqrt(cin * k * k) at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = HE_GAIN):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd for 'same' padding")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Fully connected layer with weights N(0, 1) scaled by gain / sqrt(in_features) at run time."""

    def __init__(self, in_features: int, out_features: int, gain: float = HE_GAIN, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Divides each pixel's feature vector by its root mean square over channels (dim 1)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def stddev_group_size(batch: int, group_size: int = 4) -> int:
    """The group size used for a batch: the largest divisor of `batch` not above `group_size`.

    NVIDIA's layer needs the batch divisible by the group size; a batch of 6 is then split into groups
    of 3, and a prime batch above 4 (5, 7, ...) into groups of 1, whose feature is sqrt(1e-8)."""
    size = min(group_size, batch)
    while batch % size:
        size -= 1
    return size


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, eps: float = 1e-8) -> torch.Tensor:
    """Appends one channel: the standard deviation over each group of samples, per feature and pixel,
    averaged to one value per group (Karras et al. 2018).

    As in NVIDIA's code the batch is reshaped to [group, M, C, H, W], so sample i belongs to group
    i mod M (M = N / group); the variance is the population one (divided by the group size)."""
    n, c, h, w = x.shape
    size = stddev_group_size(n, group_size)
    # at least float32 (bf16's few mantissa bits would swamp the variance); float64 stays float64
    y = (x if x.dtype == torch.float64 else x.float()).reshape(size, n // size, c, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.pow(2).mean(dim=0) + eps)  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # [M]
    y = y.repeat(size).view(n, 1, 1, 1).expand(n, 1, h, w)  # sample i gets its group's value y[i mod M]
    return torch.cat([x, y], dim=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling."""
    return F.avg_pool2d(x, 2)
