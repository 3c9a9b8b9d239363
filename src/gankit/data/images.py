"""Image folders (recursive, with or without class subfolders) and zips of images, decoded once
into one uint8 tensor."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from gankit.errors import GankitError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Refuse images whose header claims more pixels than this (decompression bombs).
Image.MAX_IMAGE_PIXELS = 16384 * 16384


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def list_folder_images(root: Path) -> list[Path]:
    """Image files below root in sorted order; symlinked folders are not followed (no loops)."""
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        subfolders.sort()
        found += [Path(folder) / f for f in sorted(files) if is_image_name(f)]
    return found


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Resizes the shorter side to size (Lanczos) and crops the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Converts any PIL mode (palette, RGBA, CMYK, 16-bit, ...) to L or RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        image = Image.fromarray((arr * 255.0 / peak).round().clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L" if channels == 1 else "RGB")


def decode_image(data_or_path, name: str, size: int, channels: int) -> np.ndarray:
    """Decodes one image to a uint8 array [C, size, size]; any decoding failure names the file."""
    try:
        with Image.open(data_or_path) as image:
            image.load()
            image = to_mode(image, channels)
            image = center_crop_resize(image, size)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise GankitError(f"cannot read image {name}: {err}") from None
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack(items: Iterator[tuple[str, Callable[[], object]]], count: int, size: int, channels: int,
           what: str) -> torch.Tensor:
    out = np.empty((count, channels, size, size), dtype=np.uint8)
    for i, (name, opener) in enumerate(tqdm(items, total=count, desc=f"decoding {what}", unit="img",
                                            leave=False, disable=count < 500)):
        out[i] = decode_image(opener(), name, size, channels)
    return torch.from_numpy(out)


def load_folder(path: str, size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    root = Path(path)
    if not root.is_dir():
        raise GankitError(f"data.path {path} is not a folder")
    files = list_folder_images(root)[:limit]
    if not files:
        raise GankitError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found below {path}")
    return _stack(((str(f), lambda f=f: f) for f in files), len(files), size, channels, path)


def load_zip(path: str, size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise GankitError(f"cannot open zip {path}: {err}") from None
    with archive:
        names = sorted(n for n in archive.namelist() if is_image_name(n) and not n.endswith("/"))[:limit]
        if not names:
            raise GankitError(f"no images found in zip {path}")

        def read(name: str):
            try:
                return io.BytesIO(archive.read(name))
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise GankitError(f"cannot read image {path}:{name}: {err}") from None

        return _stack(((f"{path}:{n}", lambda n=n: read(n)) for n in names), len(names), size, channels, path)
