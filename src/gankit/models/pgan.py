"""Progressive GAN (Karras et al. 2018): generator and discriminator grown from 4x4 to the data resolution.

Every scale is built up front; the current stage (0 is 4x4, s is 4 * 2**s pixels) and the fade-in
weight `alpha` are forward arguments, so layers of later scales simply stay unused until their
stage. The optimizers can then hold every parameter from the first step, and nothing is rebuilt when
the networks grow (see docs/pgan.md).

Convention: `alpha` is the weight of the NEW scale's path. It rises 0 -> 1 during a fade-in; alpha = 0
is exactly the previous stage's network, alpha = 1 the new one (pytorch_GAN_zoo uses the opposite).
Alpha is ignored at stage 0, which has no older path.

Each network also keeps a stage and alpha in buffers (`set_progress`), saved in its state_dict. A
call without them (`G(z)`, `D(x)`) uses the stored ones, and `G(z)` then returns images at the full
data resolution (nearest-neighbour upsampled from the stage's own), so sampling and evaluation use an
exported generator at any stage without knowing about PGAN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.layers import (EqualizedConv2d, EqualizedLinear, downsample2x, minibatch_stddev,
                                  pixel_norm, upsample2x)

LEAK = 0.2
STDDEV_GROUP = 4


def num_scales(resolution: int) -> int:
    """Scales from 4x4 to resolution: 4 -> 1, 8 -> 2, ..., 1024 -> 9."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution {resolution} is not a power of two >= 4")
    return int(math.log2(resolution)) - 1


def stage_resolution(stage: int) -> int:
    return 4 * 2**stage


def default_depths(resolution: int) -> list[int]:
    """The paper's channel depth per scale: 512 up to 32x32, then halved at each doubling (16 at 1024)."""
    return [min(512, 512 * 32 // stage_resolution(s)) for s in range(num_scales(resolution))]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


class _Progress(nn.Module):
    """Holds the stage and alpha in buffers (saved with the weights) and checks requested values."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.num_scales = num_scales(resolution)
        # A fresh network is fully grown; training sets its progress before the first step.
        self.register_buffer("current_stage", torch.tensor(self.num_scales - 1, dtype=torch.long))
        # float32 like the weights (the export format's dtypes); training passes alpha as an argument.
        self.register_buffer("current_alpha", torch.tensor(1.0))

    @torch.no_grad()
    def set_progress(self, stage: int, alpha: float) -> None:
        """Stores the stage and alpha used by calls that do not pass them."""
        self._check(stage, alpha)
        self.current_stage.fill_(int(stage))
        self.current_alpha.fill_(float(alpha))

    def progress(self) -> tuple[int, float]:
        return int(self.current_stage), float(self.current_alpha)

    def _check(self, stage: int, alpha: float) -> None:
        if not 0 <= stage < self.num_scales:
            raise ValueError(f"stage {stage} is outside 0..{self.num_scales - 1} (4x4..{self.resolution}x"
                             f"{self.resolution})")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha {alpha} is outside [0, 1]")

    def _resolve(self, stage: int | None, alpha: float | None) -> tuple[int, float]:
        stored_stage, stored_alpha = self.progress()
        stage = stored_stage if stage is None else int(stage)
        alpha = stored_alpha if alpha is None else float(alpha)
        self._check(stage, alpha)
        return stage, alpha


class _GeneratorBlock(nn.Module):
    """Nearest x2, then two 3x3 convolutions, each followed by leaky ReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(_lrelu(self.conv0(upsample2x(x))))
        return pixel_norm(_lrelu(self.conv1(x)))


class PGANGenerator(_Progress):
    def __init__(self, z_dim: int, resolution: int, channels: int, depths: list[int] | None = None):
        super().__init__(resolution)
        depths = list(depths) if depths is not None else default_depths(resolution)
        if len(depths) != self.num_scales:
            raise ValueError(f"{len(depths)} depths given for {self.num_scales} scales")
        self.z_dim = z_dim
        self.depths = depths
        # 4x4: dense to 4x4xC (NVIDIA's gain sqrt(2)/4, bias per channel after the reshape), then 3x3.
        self.latent_dense = EqualizedLinear(z_dim, 16 * depths[0], gain=math.sqrt(2) / 4, bias=False)
        self.latent_bias = nn.Parameter(torch.zeros(depths[0]))
        self.base_conv = EqualizedConv2d(depths[0], depths[0], 3)
        # blocks[s - 1] grows scale s - 1 to scale s.
        self.blocks = nn.ModuleList(_GeneratorBlock(depths[s - 1], depths[s]) for s in range(1, self.num_scales))
        # Linear toRGB (gain 1) and no output activation, as with the paper's WGAN-GP loss.
        self.to_rgb = nn.ModuleList(EqualizedConv2d(d, channels, 1, gain=1.0) for d in depths)

    def _base(self, z: torch.Tensor) -> torch.Tensor:
        x = self.latent_dense(pixel_norm(z.flatten(1)))
        x = x.view(z.shape[0], self.depths[0], 4, 4) + self.latent_bias.view(1, -1, 1, 1)
        x = pixel_norm(_lrelu(x))
        return pixel_norm(_lrelu(self.base_conv(x)))

    def forward(self, z: torch.Tensor, stage: int | None = None, alpha: float | None = None) -> torch.Tensor:
        """Images at the stage's resolution when stage is given; without it, the stored progress is
        used and the images are upsampled to the full resolution."""
        full_size = stage is None
        stage, alpha = self._resolve(stage, alpha)
        x = self._base(z)
        for block in self.blocks[: max(stage - 1, 0)]:
            x = block(x)
        if stage == 0:
            images = self.to_rgb[0](x)
        else:
            images = self.to_rgb[stage](self.blocks[stage - 1](x))
            if alpha < 1.0:
                old = upsample2x(self.to_rgb[stage - 1](x))
                images = alpha * images + (1.0 - alpha) * old
        if full_size and stage_resolution(stage) < self.resolution:
            images = F.interpolate(images, scale_factor=self.resolution // stage_resolution(stage), mode="nearest")
        return images


class _DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions with leaky ReLU, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample2x(_lrelu(self.conv1(_lrelu(self.conv0(x)))))


class PGANDiscriminator(_Progress):
    def __init__(self, resolution: int, channels: int, depths: list[int] | None = None):
        super().__init__(resolution)
        depths = list(depths) if depths is not None else default_depths(resolution)
        if len(depths) != self.num_scales:
            raise ValueError(f"{len(depths)} depths given for {self.num_scales} scales")
        self.depths = depths
        self.from_rgb = nn.ModuleList(EqualizedConv2d(channels, d, 1) for d in depths)
        # blocks[s - 1] takes scale s down to scale s - 1.
        self.blocks = nn.ModuleList(_DiscriminatorBlock(depths[s], depths[s - 1]) for s in range(1, self.num_scales))
        # Last block: minibatch stddev (one extra channel), 3x3 conv, dense 4x4xC -> C, dense -> 1.
        self.final_conv = EqualizedConv2d(depths[0] + 1, depths[0], 3)
        self.final_dense = EqualizedLinear(16 * depths[0], depths[0])
        self.out = EqualizedLinear(depths[0], 1, gain=1.0)

    @property
    def feature_dim(self) -> int:
        """Size of the penultimate features returned with `with_features=True` (used by GDPP)."""
        return self.depths[0]

    def forward(self, x: torch.Tensor, stage: int | None = None, alpha: float | None = None,
                with_features: bool = False):
        """One raw score per image; x must be at the stage's resolution. With `with_features`, returns
        (scores, penultimate features [N, C])."""
        stage, alpha = self._resolve(stage, alpha)
        size = stage_resolution(stage)
        if x.shape[-2:] != (size, size):
            raise ValueError(f"the discriminator at stage {stage} takes {size}x{size} images, got "
                             f"{tuple(x.shape[-2:])}: downsample real images with real_for_stage")
        h = _lrelu(self.from_rgb[stage](x))
        if stage > 0:
            h = self.blocks[stage - 1](h)
            if alpha < 1.0:
                # The first transition (8x8) blends too: the old path is the 4x4 fromRGB on pooled input.
                old = _lrelu(self.from_rgb[stage - 1](downsample2x(x)))
                h = alpha * h + (1.0 - alpha) * old
            for s in range(stage - 1, 0, -1):
                h = self.blocks[s - 1](h)
        h = _lrelu(self.final_conv(minibatch_stddev(h, STDDEV_GROUP)))
        features = _lrelu(self.final_dense(h.flatten(1)))
        scores = self.out(features).squeeze(1)
        return (scores, features) if with_features else scores


# ---- real images at the current stage ------------------------------------------------------------

def downsample_to(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Average-pools square images to `resolution` (a power-of-two fraction of theirs)."""
    factor = x.shape[-1] // resolution
    if factor * resolution != x.shape[-1]:
        raise ValueError(f"cannot pool {x.shape[-1]}x{x.shape[-1]} images to {resolution}x{resolution}")
    return F.avg_pool2d(x, factor) if factor > 1 else x


def fade_real(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blends real images as G's output is blended: alpha * x + (1 - alpha) * upsample(avgpool(x))."""
    if alpha >= 1.0:
        return x
    return alpha * x + (1.0 - alpha) * upsample2x(downsample2x(x))


def real_for_stage(x: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """Full-resolution real images as the discriminator sees them at (stage, alpha)."""
    x = downsample_to(x, stage_resolution(stage))
    return fade_real(x, alpha) if stage > 0 else x
