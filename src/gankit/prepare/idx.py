"""IDX digit files (MNIST, Fashion-MNIST) to a packed dataset, fitted exactly as the IDX training sources."""

from __future__ import annotations

from pathlib import Path

import torch

from gankit.data.idx import _find_file, read_idx
from gankit.data.images import Decoded
from gankit.data.transforms import fit_digits
from gankit.errors import GankitError


def idx_results(src: Path, size: int, channels: int):
    """IDX digits (a file, or a folder holding train-images-idx3-ubyte[.gz]) fitted like the IDX sources."""
    images_file = _find_file(src, "train-images-idx3-ubyte") if src.is_dir() else src
    if images_file is None or not images_file.is_file():
        raise GankitError(f"SRC {src} is neither an IDX images file nor a folder holding train-images-idx3-ubyte[.gz]")
    array = read_idx(images_file)
    if array.ndim != 3 or array.dtype.itemsize != 1:
        raise GankitError(f"{images_file} does not hold uint8 images [N, H, W] (shape {array.shape}, {array.dtype})")
    images = fit_digits(torch.from_numpy(array.astype("uint8")).unsqueeze(1), size, channels).numpy()
    return (Decoded(f"{images_file}[{i}]", image) for i, image in enumerate(images)), len(images)
