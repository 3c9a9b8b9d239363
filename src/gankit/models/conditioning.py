"""Class conditioning: how labels enter the generator and the discriminator (docs/conditional.md).

A label is given to a network as a class index (int64 [N]) or as class weights (float [N, K], a row per
sample summing to 1: a one-hot row is the class itself, a mix of two rows interpolates between two
classes through every label embedding, since each is linear in the weights). A conditional generator
called without labels draws no randomness: it renders classes 0, 1, ..., K-1, 0, 1, ... in turn, so that
every caller that knows nothing of classes (the sample grid, fd_fmnist, interpolation) gets a balanced set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.dense_conv import float32_matmul, is_channels_last


def class_weights(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N, K] weights from class indices [N] (one-hot) or from weights [N, K] (checked, cast)."""
    if labels.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if labels.dim() != 1:
            raise ValueError(f"class indices must be one-dimensional, not of shape {tuple(labels.shape)}")
        return F.one_hot(labels.long(), num_classes).to(dtype)
    if labels.dim() != 2 or labels.shape[1] != num_classes:
        raise ValueError(f"class weights must be of shape [N, {num_classes}], not {tuple(labels.shape)}")
    return labels.to(dtype)


def cycling_labels(count: int, num_classes: int, device: torch.device | str) -> torch.Tensor:
    """Classes 0..K-1 in turn: the labels of a conditional generator called without any."""
    return torch.arange(count, device=device) % num_classes


def draw_labels(count: int, num_classes: int, device: torch.device | str) -> torch.Tensor:
    """Uniformly drawn classes for fakes during training, from the default generator of `device` (whose
    state the checkpoint saves, so resume is exact)."""
    return torch.randint(num_classes, (count,), device=device)


def grid_labels(num_classes: int, grid_size: int) -> tuple[torch.Tensor, int]:
    """(labels, columns) of a sample grid with a row per class: max(1, grid_size // K) columns, row k all
    class k (labels 0,0,..,1,1,..)."""
    columns = max(1, grid_size // num_classes)
    return torch.arange(num_classes).repeat_interleave(columns), columns


class LabelEmbedding(nn.Module):
    """A learned vector per class, weights @ table for class weights (no spectral norm: a plain parameter)."""

    def __init__(self, num_classes: int, dim: int, init_std: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * init_std)

    def forward(self, labels: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        weight = self.weight if dtype is None else self.weight.to(dtype)
        return class_weights(labels, self.num_classes, weight.dtype) @ weight


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are chosen by the class (de Vries et al. 2017; the projection
    discriminator paper's generator): statistics over the whole batch, a (gamma, beta) row per class.
    Initialized as DCGAN initializes batch norm (gamma ~ N(1, 0.02), beta 0), the same for every class."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(channels, affine=False)
        # In place: the same numbers as 1 + 0.02 * randn, and on the meta device (the export checks build
        # there) no detour through torch._refs, whose first use imports torch._dynamo (1.5 s).
        gamma = torch.randn(1, channels).mul_(0.02).add_(1.0)
        self.gamma = nn.Parameter(gamma.repeat(num_classes, 1))
        self.beta = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = class_weights(labels, self.num_classes, self.gamma.dtype)
        gamma, beta = float32_matmul(weights, self.gamma), float32_matmul(weights, self.beta)  # [N, C]
        out = self.norm(x)
        return out * gamma.to(out.dtype)[:, :, None, None] + beta.to(out.dtype)[:, :, None, None]


class ConditionalSequential(nn.Sequential):
    """nn.Sequential that hands the labels to the layers that take them (ConditionalBatchNorm2d)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class DiscriminatorHead(nn.Module):
    """What D computes from its features phi(x) [N, F] (flattened) and the labels, per conditioning:
    none and concat: the score psi(phi); projection: psi(phi) + <embed(y), phi>, embed a bias-free linear
    map of the class weights (so spectral norm, when D has it, normalizes it as Miyato & Koyama do);
    acgan: [N, 1 + K], the score and the K class logits of an auxiliary classifier on the same features.

    `score` and `classifier` are the modules that map phi: D's own final layers (a 4x4 convolution for
    DCGAN, whose features are then [N, C, 4, 4]; a linear layer for the MLP)."""

    def __init__(self, conditioning: str, num_classes: int, features: int, score: nn.Module,
                 classifier: nn.Module | None = None):
        super().__init__()
        self.conditioning = conditioning
        self.num_classes = num_classes
        self.score = score
        if conditioning == "projection":
            self.embed = nn.Linear(num_classes, features, bias=False)
        if conditioning == "acgan":
            if classifier is None:
                raise ValueError("acgan needs a classifier module")
            self.classifier = classifier

    def forward(self, phi: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.score(phi).flatten(1)[:, 0]
        if self.conditioning == "projection":
            weights = class_weights(labels, self.num_classes)
            embedded = float32_matmul(weights, self.embed.weight.t()).view(phi.shape)  # = self.embed(weights)
            if phi.dim() == 4 and is_channels_last(phi):
                # In phi's memory order, so that phi's gradient is too: a channels_last phi met by an NCHW
                # gradient sends the backward of D's last activation down a path 10x slower on CPUs.
                embedded = embedded.contiguous(memory_format=torch.channels_last)
            out = out + (embedded * phi).flatten(1).sum(1)
        elif self.conditioning == "acgan":
            return torch.cat([out[:, None], self.classifier(phi).flatten(1)], dim=1)
        return out


def _has_class_logits(out: torch.Tensor) -> bool:
    # [N] or [N, 1] (a user's D ending in Linear(..., 1)) is a score alone; [N, 1 + K] is AC-GAN's output.
    return out.dim() == 2 and out.shape[1] > 1


def adversarial_scores(out: torch.Tensor) -> torch.Tensor:
    """D's real/fake scores from its output: the output itself, or column 0 of AC-GAN's [N, 1 + K]."""
    return out[:, 0] if _has_class_logits(out) else out


def class_logits(out: torch.Tensor) -> torch.Tensor | None:
    """AC-GAN's class logits [N, K] from D's output; None for a D without a classifier."""
    return out[:, 1:] if _has_class_logits(out) else None


def require_labels(labels: torch.Tensor | None, what: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"a class-conditional {what} needs labels")
    return labels
