"""Sampling and export: read the checkpoint files, never the training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gankit.checkpoint import (export_generator, is_checkpoint_file, list_checkpoints, load_checkpoint_generator,
                               load_generator)
from gankit.device import resolve_device
from gankit.errors import GankitError
from gankit.viz.grid import grid_image, save_grid, save_scatter, to_uint8

MAX_SAMPLES = 1_000_000


def load_raw_generator(source: Path, device: torch.device):
    """The non-EMA generator of a checkpoint file, or of a run folder's newest checkpoint, with the same
    meta as load_generator."""
    if not is_checkpoint_file(source):
        found = list_checkpoints(source)
        if not found:
            raise GankitError(f"--no-ema needs a run folder with checkpoints; {source} has none")
        source = found[-1]
    return load_checkpoint_generator(source, device, ema=False)


def load_for_sampling(source: str, no_ema: bool, device: torch.device):
    """The generator of a run folder, an export or a checkpoint file: its EMA weights, or with no_ema the raw G."""
    if no_ema:
        if not (Path(source).is_dir() or is_checkpoint_file(source)):
            raise GankitError("--no-ema needs a run folder or a checkpoint file (an exported generator holds the "
                              "EMA weights only)")
        return load_raw_generator(Path(source), device)
    return load_generator(source, device)


@torch.no_grad()
def generate(generator: torch.nn.Module, z_dim: int, num: int, seed: int, device: torch.device,
             batch_size: int = 256) -> torch.Tensor:
    """num samples (float, CPU) from latents drawn with `seed`; the same seed gives the same samples
    whatever the batch size or device, since all latents are drawn on the CPU first."""
    z = torch.randn(num, z_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([generator(chunk.to(device)).float().cpu() for chunk in z.split(batch_size)])


def sample_command(source: str, num: int, seed: int, out: str | None, out_dir: str | None,
                   no_ema: bool, device_name: str) -> str:
    if not 1 <= num <= MAX_SAMPLES:
        raise GankitError(f"--num must be between 1 and {MAX_SAMPLES}")
    if out and out_dir:
        raise GankitError("give either --out or --out-dir, not both")
    device = resolve_device(device_name)
    generator, meta = load_for_sampling(source, no_ema, device)
    samples = generate(generator, meta["model"].z_dim, num, seed, device)

    if meta["data"].is_toy:
        if out_dir:
            raise GankitError("--out-dir is for images; toy runs take --out points.npy or --out plot.png")
        target = Path(out or "samples.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".npy":
            np.save(target, samples.numpy())
        elif target.suffix == ".png":
            save_scatter(samples, target, meta["data"].source, f"{num} samples, seed {seed}")
        else:
            raise GankitError(f"--out {target}: toy runs write .npy points or a .png scatter plot")
        return str(target)

    images = to_uint8(samples)
    if out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            grid_image(image[None], nrow=1, padding=0).save(folder / f"{i:06d}.png")
        return str(folder)
    target = Path(out or "samples.png")
    if target.suffix.lower() != ".png":
        raise GankitError(f"--out {target}: a grid is written as .png")
    return str(save_grid(images, target))


def export_command(run: str, out: str | None) -> str:
    """Writes the EMA generator of a run's newest checkpoint as generator.safetensors + .json."""
    found = list_checkpoints(Path(run))
    if not found:
        raise GankitError(f"{run} has no checkpoints to export")
    generator, meta = load_checkpoint_generator(found[-1])
    out_dir = Path(out or run)
    export_generator(out_dir, generator, meta["model"].model_dump(mode="json"), meta["data"].model_dump(mode="json"),
                     meta["step"])
    return str(out_dir / "generator.safetensors")
