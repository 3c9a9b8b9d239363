"""Image folders (recursive, with or without class subfolders) and zips of images, decoded once
into one uint8 tensor; and the decoding shared with `gankit prepare`."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import warnings
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gankit.errors import GankitError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Images whose header claims more pixels than this are refused before any pixel is decoded
# (decompression bombs). PIL itself only warns between this and twice this.
MAX_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The mode a decoded image should have for each channel count; any other mode is a conversion.
TARGET_MODE = {1: "L", 3: "RGB"}

Geometry = Callable[[Image.Image, int], Image.Image]


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def walk_files(root: Path) -> Iterator[Path]:
    """Every file below root in sorted order. Symlinked folders are followed, but each real folder
    is visited once, so symlink loops end."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError:
            subfolders.clear()
            continue
        if (info.st_dev, info.st_ino) in seen:
            subfolders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders.sort()
        for name in sorted(files):
            yield Path(folder) / name


def list_folder_images(root: Path) -> list[Path]:
    """Image files (by extension) below root in sorted order; see walk_files for symlinks."""
    return [f for f in walk_files(Path(root)) if is_image_name(f.name)]


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
    return image.convert(TARGET_MODE[channels])


@dataclass
class Decoded:
    """One decoding attempt: the pixels, or why there are none."""

    name: str
    image: np.ndarray | None  # uint8 [C, size, size]
    problem: str | None = None  # why the file was skipped
    converted_from: str | None = None  # the file's PIL mode when it needed more than an RGB -> L conversion


def _upright(image: Image.Image) -> Image.Image:
    # Photos from cameras store their rotation in EXIF; a broken EXIF block must not cost the image.
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def try_decode(source: Union[str, Path, bytes, io.BytesIO], name: str, size: int, channels: int,
               geometry: Geometry = center_crop_resize) -> Decoded:
    """Decodes one image to uint8 [C, size, size], never raising for a bad file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            return Decoded(name, None, "empty file")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_PIXELS and twice that; the size check below refuses those too.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    return Decoded(name, None, f"{width}x{height} pixels is over the limit of {MAX_PIXELS} "
                                               "(a decompression bomb?)")
                image.load()
                original_mode = image.mode
                image = geometry(to_mode(_upright(image), channels), size)
    # PIL's decoders raise many types for corrupt data (OSError, SyntaxError, struct.error, zlib.error,
    # ValueError, IndexError, DecompressionBombError, ...): any of them means this file is unusable.
    except Exception as err:
        return Decoded(name, None, str(err) or type(err).__name__)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    # RGB to L is what channels=1 asks for; anything else (L to RGB, RGBA, CMYK, P, 16-bit) is worth a log line.
    converted = original_mode if original_mode not in ("RGB", TARGET_MODE[channels]) else None
    return Decoded(name, np.ascontiguousarray(arr), None, converted)


def decode_image(data_or_path, name: str, size: int, channels: int,
                 geometry: Geometry = center_crop_resize) -> np.ndarray:
    """Decodes one image to a uint8 array [C, size, size]; any decoding failure names the file."""
    result = try_decode(data_or_path, name, size, channels, geometry)
    if result.image is None:
        raise GankitError(f"cannot read image {name}: {result.problem}")
    return result.image


@dataclass
class Record:
    """One image to decode: a file path or its encoded bytes; problem is set when reading it failed."""

    name: str
    payload: Union[str, bytes, None]
    problem: str | None = None


def _decode_record(record: Record, size: int, channels: int, geometry: Geometry) -> Decoded:
    if record.problem is not None:
        return Decoded(record.name, None, record.problem)
    return try_decode(record.payload, record.name, size, channels, geometry)


def default_workers(count: int | None) -> int:
    """Decoding processes: one for small jobs (a pool costs more than it saves), else up to 4."""
    if count is not None and count < 2000:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cpus)


def _pool_context():
    # forkserver: children start from a clean process (no inherited threads or locks) that imported
    # this module once, instead of each paying the torch import as under spawn.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def decode_records(records: Iterable[Record], size: int, channels: int, geometry: Geometry = center_crop_resize,
                   workers: int = 1) -> Iterator[Decoded]:
    """Decodes records in their order, in `workers` processes; bad ones come back with a problem."""
    decode = partial(_decode_record, size=size, channels=channels, geometry=geometry)
    if workers <= 1:
        yield from map(decode, records)
        return
    with _pool_context().Pool(workers) as pool:
        # Feed the pool in blocks: Pool.imap would otherwise read the whole source (an LMDB of
        # millions of images) into its queue ahead of the consumer.
        iterator = iter(records)
        while block := list(itertools.islice(iterator, 256 * workers)):
            yield from pool.imap(decode, block, chunksize=16)


def _stack(items: Iterator[tuple[str, Callable[[], object]]], count: int, size: int, channels: int,
           what: str) -> torch.Tensor:
    out = np.empty((count, channels, size, size), dtype=np.uint8)
    for i, (name, opener) in enumerate(tqdm(items, total=count, desc=f"decoding {what}", unit="img",
                                            leave=False, disable=count < 500)):
        result = try_decode(opener(), name, size, channels)
        if result.image is None:
            raise GankitError(
                f"cannot read image {name}: {result.problem}. Remove it, or run `gankit prepare folder "
                f"SRC DEST` once: it skips unreadable files, lists them in DEST/prepare.log and packs the "
                "rest for data.source: packed"
            )
        out[i] = result.image
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
