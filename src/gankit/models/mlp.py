"""The fully connected GAN of Goodfellow et al. (2014), for 2-D toy data and flattened images."""

from __future__ import annotations

import math

import torch
from torch import nn

from gankit.models.conditioning import DiscriminatorHead, LabelEmbedding, cycling_labels, require_labels


class MLPGenerator(nn.Module):
    """num_classes > 0: class-conditional, a label embedding concatenated to z (Mirza & Osindero 2014)."""

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], width: int, hidden_layers: int,
                 image_output: bool, num_classes: int = 0, label_embed_dim: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        fan_in = z_dim + (label_embed_dim if num_classes else 0)
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True)]
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(out_shape)))
        # Images live in [-1, 1]; toy points are unbounded, so their output stays linear.
        if image_output:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.label_embed = LabelEmbedding(num_classes, label_embed_dim) if num_classes else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """labels: class indices [N] or class weights [N, K] (None: classes in turn; unconditional: ignored)."""
        if self.label_embed is not None:
            if labels is None:
                labels = cycling_labels(z.shape[0], self.num_classes, z.device)
            z = torch.cat([z, self.label_embed(labels, z.dtype)], dim=1)
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """num_classes > 0: class-conditional by `conditioning`: concat joins the label embedding to the input,
    projection and acgan act on the last hidden layer's features."""

    def __init__(self, in_shape: tuple[int, ...], width: int, hidden_layers: int, num_classes: int = 0,
                 conditioning: str = "none", label_embed_dim: int = 32):
        super().__init__()
        concat = num_classes > 0 and conditioning == "concat"
        layers: list[nn.Module] = []
        fan_in = math.prod(in_shape) + (label_embed_dim if concat else 0)
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), nn.LeakyReLU(0.2, inplace=True)]
            fan_in = width
        score = nn.Linear(fan_in, 1)
        self.head = None
        if num_classes:
            classifier = nn.Linear(fan_in, num_classes) if conditioning == "acgan" else None
            self.net = nn.Sequential(*layers)
            self.head = DiscriminatorHead(conditioning, num_classes, fan_in, score, classifier)
        else:
            self.net = nn.Sequential(*layers, score)
        self.label_embed = LabelEmbedding(num_classes, label_embed_dim) if concat else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One raw score (logit) per sample; AC-GAN: [N, 1 + K], the score then the class logits."""
        x = x.flatten(1)
        if self.head is None:
            return self.net(x).squeeze(1)
        labels = require_labels(labels, "discriminator")
        if self.label_embed is not None:
            x = torch.cat([x, self.label_embed(labels, x.dtype)], dim=1)
        return self.head(self.net(x), labels)
