"""DCGAN (Radford et al. 2015), sized from the resolution: 4x4 features doubled to the output size."""

from __future__ import annotations

import math

import torch
from torch import nn

from gankit.models.conditioning import (ConditionalBatchNorm2d, ConditionalSequential, DiscriminatorHead,
                                        LabelEmbedding, cycling_labels, require_labels)
from gankit.models.dense_conv import DenseConv2d, DenseConvTranspose2d


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
    """The paper's initialization: convolutions N(0, 0.02); normalization scales N(1, 0.02), shifts 0.
    Nothing to draw on the meta device (where the export checks build a network for its shapes): there
    normal_ takes a detour through torch._refs, whose first use imports torch._dynamo (1.5 s)."""
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """num_classes > 0: class-conditional. conditioning concat joins a label embedding to z; projection and
    acgan use class-conditional batch norm (the projection discriminator paper's generator)."""

    def __init__(self, z_dim: int, resolution: int, channels: int, width: int,
                 upsample: str = "transposed", num_classes: int = 0, conditioning: str = "none",
                 label_embed_dim: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = num_classes
        concat = num_classes > 0 and conditioning == "concat"
        conditional_norm = num_classes > 0 and not concat

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm2d(c, num_classes) if conditional_norm else nn.BatchNorm2d(c)

        doublings = _num_doublings(resolution)
        feats = [width * 2 ** (doublings - 1 - i) for i in range(doublings)]  # e.g. 256, 128, 64
        in_dim = z_dim + (label_embed_dim if concat else 0)
        layers: list[nn.Module] = [
            DenseConvTranspose2d(in_dim, feats[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            norm(feats[0]),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip(feats[:-1], feats[1:]):
            layers += _upsample(cin, cout, upsample) + [norm(cout), nn.ReLU(inplace=True)]
        # No batch norm follows the output layer, so it has a bias; tanh maps to [-1, 1].
        layers += _upsample(feats[-1], channels, upsample, bias=True) + [nn.Tanh()]
        self.net = ConditionalSequential(*layers)
        init_dcgan_weights(self)
        # After the DCGAN initialization, which would draw the embedding from N(0, 0.02): N(0, 1) like z.
        self.label_embed = LabelEmbedding(num_classes, label_embed_dim) if concat else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """labels: class indices [N] or class weights [N, K] (None: classes in turn; unconditional: ignored)."""
        if self.num_classes and labels is None:
            labels = cycling_labels(z.shape[0], self.num_classes, z.device)
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(labels, z.dtype)], dim=1)
        return self.net(z.view(z.shape[0], -1, 1, 1), labels)


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        # Layer norm over (C, H, W): per sample, so the gradient penalty stays per sample.
        return [nn.GroupNorm(1, channels)]
    return []


class DCGANDiscriminator(nn.Module):
    """num_classes > 0: class-conditional by `conditioning` (see models/conditioning.py): projection and
    acgan act on the 4x4 features; concat joins the label embedding to the input image as constant planes."""

    def __init__(self, resolution: int, channels: int, width: int, norm: str = "batch", num_classes: int = 0,
                 conditioning: str = "none", label_embed_dim: int = 32):
        super().__init__()
        doublings = _num_doublings(resolution)
        feats = [width * 2**i for i in range(doublings)]  # e.g. 64, 128, 256
        concat = num_classes > 0 and conditioning == "concat"
        in_channels = channels + (label_embed_dim if concat else 0)
        # The input layer has no normalization, as in the paper.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, feats[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(feats[:-1], feats[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none")]
            layers += _norm(norm, cout) + [nn.LeakyReLU(0.2, inplace=True)]
        score = DenseConv2d(feats[-1], 1, 4, 1, 0)  # 4x4 -> one logit
        self.head = None
        if num_classes:
            classifier = DenseConv2d(feats[-1], num_classes, 4, 1, 0) if conditioning == "acgan" else None
            self.net = nn.Sequential(*layers)
            self.head = DiscriminatorHead(conditioning, num_classes, feats[-1] * 16, score, classifier)
        else:
            self.net = nn.Sequential(*layers, score)
        init_dcgan_weights(self)
        self.label_embed = LabelEmbedding(num_classes, label_embed_dim) if concat else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One raw score (logit) per image; AC-GAN: [N, 1 + K], the score then the class logits."""
        if self.head is None:
            return self.net(x).flatten()
        labels = require_labels(labels, "discriminator")
        if self.label_embed is not None:
            n, _, h, w = x.shape
            planes = self.label_embed(labels, x.dtype)[:, :, None, None].expand(n, -1, h, w)
            x = torch.cat([x, planes], dim=1)
        return self.head(self.net(x), labels)
