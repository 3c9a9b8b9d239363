"""The packed dataset written by `gankit prepare`: a folder holding

  images.u8      a 64-byte header, then every image as uint8 in [N, C, H, W] order (memory-mappable)
  labels.npy     class labels, int64 [N] (only for labelled sources; the class names are in the manifest)
  manifest.json  count, resolution, channels, source, checksums (written last: no manifest, not complete)
  prepare.log    the files that were skipped or converted, and why
  preview.png    the first 64 images

Small datasets load into memory as one uint8 tensor (checksum verified on the way); larger ones are
memory-mapped, so batches are read from the page cache without decoding anything."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from gankit.errors import GankitError

FORMAT = "gankit-packed-u8"
VERSION = 1
IMAGES_FILE = "images.u8"
MANIFEST_FILE = "manifest.json"
# Version 1 datasets may hold labels: written before labels existed, they simply have no "labels" entry,
# and older readers ignore the entry and the file.
LABELS_FILE = "labels.npy"
LOG_FILE = "prepare.log"
PREVIEW_FILE = "preview.png"
MAGIC = b"GKPACKU8"
# magic, version, header bytes, count, channels, height, width; zero padding up to HEADER_BYTES.
HEADER = struct.Struct("<8sIIQIII")
HEADER_BYTES = 64
CHUNK_BYTES = 64 << 20
# GANKIT_PACKED_STREAM=1 always memory-maps, =0 always loads into memory; unset: decided by size.
STREAM_ENV = "GANKIT_PACKED_STREAM"


def pack_header(count: int, channels: int, resolution: int) -> bytes:
    header = HEADER.pack(MAGIC, VERSION, HEADER_BYTES, count, channels, resolution, resolution)
    return header.ljust(HEADER_BYTES, b"\0")


class PackedWriter:
    """Streams uint8 images [C, R, R] into an images.u8 file, hashing them as they go."""

    def __init__(self, path: Path, channels: int, resolution: int):
        self.path = Path(path)
        self.shape = (channels, resolution, resolution)
        self.count = 0
        self._hash = hashlib.sha256()
        self._file = open(self.path, "wb")
        self._file.write(pack_header(0, channels, resolution))  # the count is patched in by close()

    def add(self, image: np.ndarray) -> None:
        if image.shape != self.shape or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image of shape {self.shape}, got {image.dtype} {image.shape}")
        data = np.ascontiguousarray(image).tobytes()
        self._file.write(data)
        self._hash.update(data)
        self.count += 1

    def close(self) -> str:
        """Finishes the file (header count, flushed to disk); returns the checksum of the image bytes."""
        self._file.seek(0)
        self._file.write(pack_header(self.count, *self.shape[:2]))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return "sha256:" + self._hash.hexdigest()

    def abort(self) -> None:
        self._file.close()


def write_labels(path: Path, labels: np.ndarray) -> str:
    """Writes int64 labels [N] as a .npy file (no pickled objects), flushed to disk; returns its checksum."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(labels, dtype="<i8"), allow_pickle=False)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dataset_folder(path: str | Path) -> Path:
    """The packed dataset folder for data.path, which may also name its images.u8 or manifest.json."""
    path = Path(path)
    if path.name in (IMAGES_FILE, MANIFEST_FILE) and path.is_file():
        return path.parent
    return path


def read_manifest(path: str | Path) -> dict:
    """The checked manifest of a packed dataset; a clear error when the folder is not a complete one."""
    folder = dataset_folder(path)
    manifest_file = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise GankitError(f"packed dataset {folder} does not exist: create it with `gankit prepare KIND SRC {folder}`")
    if not manifest_file.is_file():
        raise GankitError(
            f"{folder} is not a complete packed dataset (no {MANIFEST_FILE}; an interrupted `gankit prepare` "
            f"leaves none): run `gankit prepare KIND SRC {folder}` again into an empty or new folder"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GankitError(f"{manifest_file} is unreadable ({err}): prepare the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GankitError(f"{manifest_file} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise GankitError(f"{manifest_file} has format version {manifest.get('version')!r}; this gankit reads "
                          f"version {VERSION}: prepare the dataset again")
    for key in ("count", "resolution", "channels"):
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > 2**40:
            raise GankitError(f"{manifest_file}: {key} is {value!r}, not a positive integer")
    if manifest["channels"] not in (1, 3):
        raise GankitError(f"{manifest_file}: channels is {manifest['channels']}, not 1 or 3")
    return manifest


def _check_images_file(folder: Path, manifest: dict) -> Path:
    images_file = folder / IMAGES_FILE
    count, channels, res = manifest["count"], manifest["channels"], manifest["resolution"]
    expected = HEADER_BYTES + count * channels * res * res
    try:
        with open(images_file, "rb") as f:
            header = f.read(HEADER_BYTES)
        size = images_file.stat().st_size
    except OSError as err:
        raise GankitError(f"cannot read {images_file}: {err}") from None
    if len(header) < HEADER.size or header[:8] != MAGIC:
        raise GankitError(f"{images_file} is not a packed image file (bad magic number)")
    fields = HEADER.unpack(header[: HEADER.size])[1:]
    if fields != (VERSION, HEADER_BYTES, count, channels, res, res):
        raise GankitError(f"{images_file} header {fields[2:]} does not match {MANIFEST_FILE} "
                          f"({count}, {channels}, {res}, {res}): prepare the dataset again")
    if size != expected:
        raise GankitError(f"{images_file} is {size} bytes, expected {expected} for {count} images of "
                          f"{channels}x{res}x{res}: it is truncated or corrupt; prepare the dataset again")
    return images_file


def check_matches(path: str | Path, manifest: dict, resolution: int, channels: int) -> None:
    """Refuses a packed dataset whose images are not the size and channels the config trains on."""
    res, ch = manifest["resolution"], manifest["channels"]
    if (res, ch) != (resolution, channels):
        raise GankitError(
            f"data.path {path} holds {res}x{res} images with {ch} channel(s) (its {MANIFEST_FILE}), but the "
            f"config has data.resolution {resolution} and data.channels {channels}: set "
            f"data.resolution={res} data.channels={ch}, or prepare the dataset again with "
            f"--size {resolution} --channels {channels}"
        )


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def should_stream(nbytes: int) -> bool:
    """Memory-map instead of loading when the images would take over half of the free memory."""
    forced = os.environ.get(STREAM_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return nbytes > _available_memory() // 2


def open_packed(path: str | Path) -> tuple[dict, np.ndarray]:
    """(manifest, a copy-on-write memory map of all images [N, C, R, R]) after checking the files agree."""
    folder = dataset_folder(path)
    manifest = read_manifest(folder)
    images_file = _check_images_file(folder, manifest)
    shape = (manifest["count"], manifest["channels"], manifest["resolution"], manifest["resolution"])
    # mode "c": writable for torch (no read-only warning) while the file itself is never modified.
    return manifest, np.memmap(images_file, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=shape)


def _read_verified(images_file: Path, manifest: dict, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype=np.uint8)
    flat = memoryview(out.reshape(-1))
    digest = hashlib.sha256()
    with open(images_file, "rb") as f:
        f.seek(HEADER_BYTES)
        for start in range(0, len(flat), CHUNK_BYTES):
            chunk = flat[start : start + CHUNK_BYTES]
            if f.readinto(chunk) != len(chunk):
                raise GankitError(f"{images_file} ended early: prepare the dataset again")
            digest.update(chunk)
    if manifest.get("checksum") != "sha256:" + digest.hexdigest():
        raise GankitError(f"{images_file} does not match the checksum in its {MANIFEST_FILE} (the file changed "
                          "or is corrupt): prepare the dataset again")
    return out


def _check_class_names(manifest_file: Path, names) -> list[str]:
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        raise GankitError(f"{manifest_file}: class_names is {names!r}, not a list of distinct non-empty names: "
                          "prepare the dataset again")
    return names


def read_packed_labels(path: str | Path) -> tuple[np.ndarray | None, list[str] | None]:
    """(int64 labels [N], class names) of a packed dataset, or (None, None) when it was prepared without
    labels. The labels file is checked against its checksum, the image count and the number of classes."""
    folder = dataset_folder(path)
    manifest = read_manifest(folder)
    entry = manifest.get("labels")
    if entry is None:
        return None, None
    manifest_file, labels_file = folder / MANIFEST_FILE, folder / LABELS_FILE
    if not isinstance(entry, dict) or not isinstance(entry.get("checksum"), str):
        raise GankitError(f"{manifest_file}: labels is {entry!r}, not an entry with a checksum: prepare the dataset again")
    names = _check_class_names(manifest_file, manifest.get("class_names"))
    try:
        data = labels_file.read_bytes()
    except OSError as err:
        raise GankitError(f"cannot read {labels_file} ({err}), which {manifest_file} lists: prepare the dataset again") from None
    if entry["checksum"] != "sha256:" + hashlib.sha256(data).hexdigest():
        raise GankitError(f"{labels_file} does not match the checksum in its {MANIFEST_FILE} (the file changed or is "
                          "corrupt): prepare the dataset again")
    try:
        # allow_pickle=False: loading a dataset never runs code from it.
        labels = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise GankitError(f"{labels_file} is not a labels array ({err}): prepare the dataset again") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise GankitError(f"{labels_file} holds {labels.dtype} of shape {labels.shape}, not one integer label per "
                          "image: prepare the dataset again")
    if len(labels) != manifest["count"]:
        raise GankitError(f"{labels_file} holds {len(labels)} labels for the {manifest['count']} images of "
                          f"{folder / IMAGES_FILE}: prepare the dataset again")
    outside = (labels < 0) | (labels >= len(names))
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise GankitError(f"{labels_file} holds label {labels[first]} at index {first}, outside the {len(names)} "
                          f"classes of its {MANIFEST_FILE} (0..{len(names) - 1}): prepare the dataset again")
    return labels.astype(np.int64), names


def load_packed(path: str | Path, resolution: int, channels: int, limit: int | None = None,
                stream: bool | None = None) -> torch.Tensor:
    """The images of a packed dataset as a uint8 tensor [N, C, R, R]: in memory (checksum verified when
    all are read) or memory-mapped (stream=True, or automatically when large)."""
    manifest, mapped = open_packed(path)
    check_matches(path, manifest, resolution, channels)
    if limit:
        mapped = mapped[:limit]
    if stream is None:
        stream = should_stream(mapped.nbytes)
    if stream:
        return torch.from_numpy(mapped)
    if len(mapped) == manifest["count"]:
        images = _read_verified(dataset_folder(path) / IMAGES_FILE, manifest, mapped.shape)
    else:
        images = np.array(mapped)  # a subset: the checksum covers all images, so it is not checked
    return torch.from_numpy(images)


def verify_packed(path: str | Path) -> dict:
    """Reads every byte of a packed dataset and checks it against the manifest; returns the manifest."""
    manifest, mapped = open_packed(path)
    _read_verified(dataset_folder(path) / IMAGES_FILE, manifest, mapped.shape)
    return manifest
