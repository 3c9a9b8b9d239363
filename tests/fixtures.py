"""Tiny stand-ins for the tutorials' datasets, written in seconds: CelebA's aligned crops, an LSUN LMDB,
an anime-face folder and MNIST's IDX files. The images are smooth colour fields with a face-like blob,
so a wrong crop or an empty file shows up as wrong pixels, not as a crash."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_SIZE = (178, 218)  # img_align_celeba: width, height


def blob_image(seed: int, width: int, height: int) -> np.ndarray:
    """An RGB uint8 image: a smooth background with an elliptical blob near the centre."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    background = [100 + 80 * np.sin(x / rng.uniform(6, 14) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(6, 14))
                  for _ in range(3)]
    image = np.stack(background, -1)
    cx, cy = width / 2 + rng.uniform(-4, 4), height * 0.55 + rng.uniform(-4, 4)
    inside = ((x - cx) / (0.3 * width)) ** 2 + ((y - cy) / (0.35 * height)) ** 2 < 1
    image[inside] = rng.uniform(150, 240, 3)
    return image.clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_celeba(root: Path, count: int) -> Path:
    """root/img_align_celeba/000001.jpg ...: 178x218 JPEGs like CelebA's aligned release; returns root."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i + 1:06d}.jpg").write_bytes(encode(blob_image(i, *CELEBA_SIZE), "JPEG", quality=90))
    return root


def make_lsun_lmdb(path: Path, count: int) -> Path:
    """An LSUN-style LMDB folder (data.mdb; 40-hex-digit keys; WebP and JPEG values of assorted shapes)."""
    import lmdb

    shapes = [(96, 72), (72, 96), (80, 80), (120, 90)]
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(count):
            width, height = shapes[i % len(shapes)]
            array = blob_image(200 + i, width, height)
            value = encode(array, "WEBP", quality=90) if i % 2 == 0 else encode(array, "JPEG", quality=90)
            txn.put(f"{i:040x}".encode(), value)
    env.close()
    return path


def make_image_folder(root: Path, count: int, size: int = 40) -> Path:
    """A flat folder of PNG and JPEG faces of size x size (anime-face datasets are folders like this)."""
    root.mkdir(parents=True)
    for i in range(count):
        array = blob_image(400 + i, size, size)
        suffix, fmt = (".png", "PNG") if i % 2 == 0 else (".jpg", "JPEG")
        (root / f"{i:05d}{suffix}").write_bytes(encode(array, fmt))
    return root


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 ndim, big-endian sizes, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist_idx(folder: Path, count: int) -> Path:
    """Gzipped MNIST-named IDX files (train and t10k) of 28x28 strokes; returns the folder."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(7)
    for prefix, n in (("train", count), ("t10k", max(count // 4, 1))):
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):  # one thick bar per image, a crude digit "1" at a random slant
            column = rng.randint(8, 20)
            for row in range(4, 24):
                shift = (row - 14) * rng.uniform(-0.3, 0.3)
                images[i, row, int(column + shift) : int(column + shift) + 3] = 255
        labels = rng.randint(0, 10, n).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return folder


MAKERS = {"celeba": make_celeba, "lsun": make_lsun_lmdb, "folder": make_image_folder, "mnist": make_mnist_idx}


def main(argv: list[str]) -> Path:
    """`python tests/fixtures.py KIND DEST COUNT`: writes a fake dataset to try the walkthroughs on."""
    if len(argv) != 3 or argv[0] not in MAKERS:
        raise SystemExit(f"usage: python tests/fixtures.py {{{','.join(MAKERS)}}} DEST COUNT")
    kind, dest, count = argv[0], Path(argv[1]), int(argv[2])
    written = MAKERS[kind](dest, count)
    print(f"wrote {count} fake {kind} images to {written}")
    return written


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
