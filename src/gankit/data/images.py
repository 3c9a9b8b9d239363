"""Image folders (recursive, with or without class subfolders) and zips of images, decoded once
into one uint8 tensor; their class labels (torchvision's ImageFolder layout); and the decoding shared
with `gankit prepare`."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import warnings
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
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
    label: int | None = None  # the class index of the image, carried over from its Record


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
    label: int | None = None  # the class index, for sources with class subfolders


def _decode_record(record: Record, size: int, channels: int, geometry: Geometry) -> Decoded:
    if record.problem is not None:
        return Decoded(record.name, None, record.problem, label=record.label)
    result = try_decode(record.payload, record.name, size, channels, geometry)
    result.label = record.label
    return result


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


@dataclass
class ImageClasses:
    """The classes of a folder's or zip's images, from their first-level subfolders: one label per image
    (in listing order) and the sorted class names; or, when the layout has no classes, why not."""

    labels: np.ndarray | None  # int64 [N]
    names: list[str] | None
    why_unlabelled: str | None = None

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def classes_from_paths(relative_paths: list[tuple[str, ...]], where: str) -> ImageClasses:
    """Classes as torchvision's ImageFolder finds them: each first-level subfolder of the root is a class
    (sorted names, so the indices equal ImageFolder's class_to_idx), and images nested deeper belong to
    their first-level folder. An image directly in the root means the layout has no classes."""
    if not relative_paths:
        return ImageClasses(None, None, f"{where} holds no images")
    loose = [parts for parts in relative_paths if len(parts) < 2]
    if loose:
        return ImageClasses(None, None, f"{len(loose)} of the {len(relative_paths)} images of {where} are not in a "
                                        f"class subfolder (e.g. {'/'.join(loose[0])})")
    names = sorted({parts[0] for parts in relative_paths})
    index = {name: i for i, name in enumerate(names)}
    return ImageClasses(np.array([index[parts[0]] for parts in relative_paths], dtype=np.int64), names)


def folder_classes(root: Path, files: list[Path]) -> ImageClasses:
    return classes_from_paths([f.relative_to(root).parts for f in files], str(root))


def zip_classes(path: str | Path, names: list[str]) -> ImageClasses:
    return classes_from_paths([PurePosixPath(n).parts for n in names], f"zip {path}")


def list_folder(path: str | Path) -> tuple[list[Path], ImageClasses]:
    """The images below a folder (sorted, as data.source folder decodes them) and their classes."""
    root = Path(path)
    if not root.is_dir():
        raise GankitError(f"data.path {path} is not a folder")
    files = list_folder_images(root)
    if not files:
        raise GankitError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found below {path}")
    return files, folder_classes(root, files)


def zip_image_names(archive: zipfile.ZipFile) -> list[str]:
    """The image entries of a zip in sorted order (folders and other files left out)."""
    return sorted(n for n in archive.namelist() if is_image_name(n) and not n.endswith("/"))


def _open_zip(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise GankitError(f"cannot open zip {path}: {err}") from None


def list_zip(path: str | Path) -> tuple[list[str], ImageClasses]:
    """The image entries of a zip (sorted, as data.source zip decodes them) and their classes."""
    with _open_zip(path) as archive:
        names = zip_image_names(archive)
    if not names:
        raise GankitError(f"no images found in zip {path}")
    return names, zip_classes(path, names)


def decode_folder_files(files: list[Path], size: int, channels: int, what: str) -> torch.Tensor:
    return _stack(((str(f), lambda f=f: f) for f in files), len(files), size, channels, what)


def decode_zip_entries(path: str | Path, names: list[str], size: int, channels: int) -> torch.Tensor:
    with _open_zip(path) as archive:

        def read(name: str):
            try:
                return io.BytesIO(archive.read(name))
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise GankitError(f"cannot read image {path}:{name}: {err}") from None

        return _stack(((f"{path}:{n}", lambda n=n: read(n)) for n in names), len(names), size, channels, str(path))


def load_folder(path: str, size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    files, _ = list_folder(path)
    return decode_folder_files(files[:limit], size, channels, path)


def load_zip(path: str, size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    names, _ = list_zip(path)
    return decode_zip_entries(path, names[:limit], size, channels)
