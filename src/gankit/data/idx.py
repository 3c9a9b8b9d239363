"""Fashion-MNIST and MNIST from their IDX files (plain or gzipped)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from gankit.errors import GankitError

# Where Debian's dataset packages put the files; tried before any download.
SYSTEM_DIRS = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}
TORCHVISION_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The classes of each IDX source, in label order.
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}
NUM_CLASSES = 10


def cache_dir() -> Path:
    return Path(os.environ.get("GANKIT_CACHE", Path.home() / ".cache" / "gankit"))


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (optionally .gz) into an array of its stored dtype and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise GankitError(f"cannot read IDX file {path}: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise GankitError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise GankitError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "raw" / stem, folder / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(kind: str, dest: Path) -> Path:
    """Downloads with torchvision (needs internet); returns the folder holding the raw files."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASS[kind])
    cls(str(dest), train=True, download=True)
    cls(str(dest), train=False, download=True)
    return dest / TORCHVISION_CLASS[kind] / "raw"


def locate(kind: str, path: str | None, split: str = "train", download: bool = True) -> tuple[Path, Path]:
    """Returns the (images, labels) IDX files of a split, downloading them only as a last resort."""
    stem = SPLIT_PREFIX[split]
    names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
    folders = [Path(path)] if path else [Path(p) for p in SYSTEM_DIRS[kind]] + [
        cache_dir() / kind / TORCHVISION_CLASS[kind] / "raw"
    ]
    for folder in folders:
        found = [_find_file(folder, n) for n in names]
        if all(found):
            return found[0], found[1]
    if path:
        raise GankitError(f"data.path {path} holds no {kind} {split} IDX files ({names[0]}[.gz], {names[1]}[.gz])")
    if download:
        try:
            folder = _download(kind, cache_dir() / kind)
        except Exception as err:  # any network or server failure: say how to get the files instead
            hint = " (Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if kind == "fashion-mnist" else ""
            raise GankitError(
                f"{kind} not found in {', '.join(str(f) for f in folders)} and the download failed ({err}). "
                f"Put the IDX files in one of those folders{hint} or set data.path."
            ) from None
        found = [_find_file(folder, n) for n in names]
        if all(found):
            return found[0], found[1]
    raise GankitError(f"{kind} {split} IDX files not found in {', '.join(str(f) for f in folders)}; set data.path")


def check_idx_labels(labels: np.ndarray, labels_file: Path, images_file: Path, image_count: int) -> np.ndarray:
    """The labels of an IDX pair as int64 [N], after checking they are one per image and in 0..9."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise GankitError(f"{labels_file} is not an IDX label file (it holds {labels.dtype} of shape {labels.shape}, "
                          "not one integer per image)")
    if len(labels) != image_count:
        raise GankitError(f"{labels_file} holds {len(labels)} labels but {images_file} holds {image_count} images: "
                          "the two files must come from the same split of the same dataset")
    labels = labels.astype(np.int64)
    outside = (labels < 0) | (labels >= NUM_CLASSES)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise GankitError(f"{labels_file} holds labels outside 0..{NUM_CLASSES - 1} (label {labels[first]} at index "
                          f"{first}): it is not a MNIST or Fashion-MNIST label file")
    return labels


def load_idx_images(kind: str, path: str | None, split: str = "train",
                    check_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (uint8 images [N, 1, 28, 28], int64 labels [N]) of a split; check_labels also refuses
    labels outside 0..9 (unconditional runs never look at them)."""
    images_file, labels_file = locate(kind, path, split)
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3:
        raise GankitError(f"{images_file} does not hold images [N, H, W] (its shape is {images.shape})")
    if check_labels:
        labels = check_idx_labels(labels, labels_file, images_file, len(images))
    elif labels.ndim != 1 or len(labels) != len(images):
        raise GankitError(f"{labels_file} holds {len(labels)} labels but {images_file} holds {len(images)} images: "
                          "the two files must come from the same split of the same dataset")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
