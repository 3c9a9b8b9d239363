"""DiffAugment (Zhao et al. 2020): differentiable augmentation of every image the discriminator sees.

Each op is a pure function of the images and explicit per-sample parameters (tested against hand-made
expectations), plus a draw of those parameters. Draws come from torch's default generator on the
images' device, so the checkpoint's saved RNG state makes resume exact. Images are in [-1, 1], NCHW;
every op is batched (no loop over samples) and differentiable, so G's gradient flows through it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from gankit.ada import AdaptiveAugment

TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the side
CUTOUT_RATIO = 1 / 2  # side of the cut-out square, as a fraction of the image's side


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[N] parameters shaped [N, 1, 1, 1] in the images' dtype, to broadcast over NCHW."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Adds shift[i] to every pixel of image i."""
    return x + _per_sample(shift, x)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scales each pixel's distance from its mean over channels by factor[i] (identity for one channel)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scales each image's distance from its mean over channels and pixels by factor[i]."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def translate(x: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Moves image i down[i] rows and right[i] columns (integers, negative: up/left), shifting zeros in."""
    n, c, h, w = x.shape
    # out[i, :, r, q] = x[i, :, r - down[i], q - right[i]], zero where that falls outside: two gathers with
    # clamped indices and a mask (no padding sized from the draws, which would synchronize with a GPU).
    rows = torch.arange(h, device=x.device) - down.view(-1, 1)  # [N, H] source rows
    cols = torch.arange(w, device=x.device) - right.view(-1, 1)  # [N, W] source columns
    moved = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(n, c, h, w))
    moved = moved.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(n, c, h, w))
    inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    return moved * inside.to(x.dtype)


def cut_out(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zeroes, in image i, the size[0] x size[1] box whose top-left corner is (top[i], left[i]) (the part
    of it inside the image: a corner may lie outside)."""
    n, _, h, w = x.shape
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top.view(-1, 1)) & (rows < top.view(-1, 1) + size[0])  # [N, H]
    in_cols = (cols >= left.view(-1, 1)) & (cols < left.view(-1, 1) + size[1])  # [N, W]
    keep = ~(in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w))
    return x * keep.to(x.dtype)


def shift_limits(height: int, width: int) -> tuple[int, int]:
    """The largest translation along each axis: 1/8 of the side, rounded half up (4 pixels at 32)."""
    return int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)


def cutout_size(height: int, width: int) -> tuple[int, int]:
    """The cut-out box: half of each side, rounded half up."""
    return int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)


def draw_parameters(op: str, count: int, height: int, width: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One op's random parameters for count images, from the default generator of `device`."""
    if op == "color":
        # brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)
        uniform = torch.rand(3, count, device=device)
        return {"shift": uniform[0] - 0.5, "saturation": uniform[1] * 2, "contrast": uniform[2] + 0.5}
    if op == "translation":
        limit_h, limit_w = shift_limits(height, width)
        return {"down": torch.randint(-limit_h, limit_h + 1, (count,), device=device),
                "right": torch.randint(-limit_w, limit_w + 1, (count,), device=device)}
    if op == "cutout":
        # The box's centre is any pixel, so it may reach past a border by up to half its side (as in the
        # authors' code); for an even side the centre may also sit just past the last row or column.
        size_h, size_w = cutout_size(height, width)
        return {"top": torch.randint(0, height + 1 - size_h % 2, (count,), device=device) - size_h // 2,
                "left": torch.randint(0, width + 1 - size_w % 2, (count,), device=device) - size_w // 2}
    raise ValueError(f"unknown augmentation op {op!r}")


def apply_op(op: str, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """One op with given parameters (from draw_parameters, or chosen by hand in tests)."""
    if op == "color":
        x = adjust_brightness(x, params["shift"])
        x = adjust_saturation(x, params["saturation"])
        return adjust_contrast(x, params["contrast"])
    if op == "translation":
        return translate(x, params["down"], params["right"])
    if op == "cutout":
        return cut_out(x, params["top"], params["left"], cutout_size(x.shape[2], x.shape[3]))
    raise ValueError(f"unknown augmentation op {op!r}")


class DiffAugment:
    """The ops, in the given order, with fresh draws at each call.

    Under DDP each rank holds a share of the batch and the same generator state as every other rank;
    drawing for the global batch (`world_size` times this share) and keeping this rank's part
    (`share`, as for the latents) gives every sample its own parameters, the same as in one process."""

    def __init__(self, ops: Sequence[str], share: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 world_size: int = 1):
        self.ops = list(ops)
        self.share = share or (lambda values: values)
        self.world_size = world_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        # The gathers return NCHW; D keeps getting the layout train.channels_last gave it.
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        for op in self.ops:
            drawn = draw_parameters(op, n * self.world_size, h, w, x.device)
            x = apply_op(op, x, {k: self.share(v) for k, v in drawn.items()})
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def no_augment(x: torch.Tensor) -> torch.Tensor:
    """augment.policy none: the images unchanged."""
    return x


def build_augment(augment_cfg, share: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  world_size: int = 1, average: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable the losses apply to every image D sees, from the config's augment section. ADA
    (gankit.ada) also takes `average` (a tensor's mean over the DDP ranks) and the device its p lives on."""
    if augment_cfg.policy == "diffaugment":
        return DiffAugment(augment_cfg.ops, share, world_size)
    if augment_cfg.policy == "ada":
        return AdaptiveAugment(augment_cfg.ada_ops, augment_cfg.p, augment_cfg.target, augment_cfg.speed_images,
                               augment_cfg.interval, share, world_size, average, device)
    return no_augment
