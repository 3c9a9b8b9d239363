"""IDX digit files (MNIST, Fashion-MNIST) to a packed dataset, fitted exactly as the IDX training sources;
with their labels when the matching label file sits beside the images file."""

from __future__ import annotations

from pathlib import Path

import torch

from gankit.data.idx import CLASS_NAMES, _find_file, check_idx_labels, read_idx
from gankit.data.images import Decoded
from gankit.data.transforms import fit_digits
from gankit.errors import GankitError

IMAGES_PART, LABELS_PART = "-images-idx3-ubyte", "-labels-idx1-ubyte"


def labels_file_beside(images_file: Path) -> Path | None:
    """The label file of an IDX images file: train-images-idx3-ubyte[.gz] -> train-labels-idx1-ubyte[.gz]
    in the same folder (compressed or not, whichever exists)."""
    name = images_file.name
    if IMAGES_PART not in name:
        return None
    stem = name.removesuffix(".gz").replace(IMAGES_PART, LABELS_PART)
    for candidate in (images_file.parent / stem, images_file.parent / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_class_names(images_file: Path) -> list[str]:
    """Fashion-MNIST and MNIST share file names and label range; only the path tells them apart, so a
    path that mentions "fashion" gets Fashion-MNIST's names and any other the digits (data.class_names
    renames them at training time)."""
    return CLASS_NAMES["fashion-mnist" if "fashion" in str(images_file.resolve()).lower() else "mnist"]


def idx_results(src: Path, size: int, channels: int):
    """IDX digits (a file, or a folder holding train-images-idx3-ubyte[.gz]) fitted like the IDX sources:
    (decoded results, count, class names or None when no label file sits beside the images)."""
    images_file = _find_file(src, "train-images-idx3-ubyte") if src.is_dir() else src
    if images_file is None or not images_file.is_file():
        raise GankitError(f"SRC {src} is neither an IDX images file nor a folder holding train-images-idx3-ubyte[.gz]")
    array = read_idx(images_file)
    if array.ndim != 3 or array.dtype.itemsize != 1:
        raise GankitError(f"{images_file} does not hold uint8 images [N, H, W] (shape {array.shape}, {array.dtype})")
    labels_file = labels_file_beside(images_file)
    labels, class_names = [None] * len(array), None
    if labels_file is not None:
        labels = check_idx_labels(read_idx(labels_file), labels_file, images_file, len(array)).tolist()
        class_names = idx_class_names(images_file)
    images = fit_digits(torch.from_numpy(array.astype("uint8")).unsqueeze(1), size, channels).numpy()
    results = (Decoded(f"{images_file}[{i}]", image, label=label) for i, (image, label) in enumerate(zip(images, labels)))
    return results, len(images), class_names
