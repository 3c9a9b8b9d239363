"""Fitting uint8 images to the training resolution and channel count."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resizes a uint8 batch [N, C, H, W] to size x size (antialiased bilinear), in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def fit_digits(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """28x28 digit-like images to resolution: zero-padded to 32 (as the DCGAN/PGAN ports do), then
    resized when another size is asked; below 32 px they are resized directly."""
    if resolution >= 32:
        images = F.pad(images, (2, 2, 2, 2))
    images = resize_uint8(images, resolution)
    return match_channels(images, channels)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if images.shape[1] == 3 and channels == 1:
        # ITU-R 601 luma, as PIL's convert("L").
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
