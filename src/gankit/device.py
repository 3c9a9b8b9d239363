"""Device selection shared by training, sampling and evaluation."""

from __future__ import annotations

import torch

from gankit.errors import GankitError


def resolve_device(name: str) -> torch.device:
    """auto takes CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GankitError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)
