"""Sliced Wasserstein distance (SWD) between two image sets, as the Progressive GAN paper's code computes it.

Protocol, checked against NVlabs progressive_growing_of_gans, metrics/sliced_wasserstein.py:
- A Laplacian pyramid of every image, as float32 on the 0..255 scale: 5x5 binomial kernel
  [1 4 6 4 1] x [1 4 6 4 1] / 256 with mirror padding (reflection about the edge pixel, scipy's
  mode="mirror"); down = blur, then every other pixel; up = zero insertion, then blur with 4x the
  kernel. Levels at H, H/2, ... while >= 16 px; each level is g_l - up(g_(l+1)), the last one the
  Gaussian residual g_(L-1).
- Per image and level, 128 random 7x7 neighbourhoods (all channels), centres uniform in [3, size - 3).
- Each set's descriptors normalized per channel by that set's own mean and std (population std, over
  all neighbourhoods and their 49 pixels).
- 4 repeats of 128 Gaussian directions, each normalized to unit length; both sets projected, each
  direction's projections sorted, mean absolute difference; mean over repeats; x 1e3; reported per
  level (named by its resolution) and averaged over levels.

Choices where the paper's code leaves freedom or does not run (the NumPy oracle makes the same ones):
- Random draws come from numpy.random.RandomState(seed) in `draw_randomness`: directions first,
  then the positions, level by level (x before y, as NVIDIA draws them). The paper's code draws new
  positions for every set from the global generator; here both sets use the same positions, so a set
  against itself scores exactly 0 and the real side can be cached. Two independent sets get the same
  expected value either way.
- Any channel count (the paper's code asserts RGB): descriptors have 49 x C components.
- Both sets must hold the same number of square images whose side is divisible by 2^(levels - 1)
  (the paper's code asserts equal counts and fails in the pyramid otherwise).
- A channel whose descriptors all have one value (std 0, e.g. constant images) is divided by 1, not 0
  (the paper's code returns NaN there).
- The channel means and stds are accumulated in float64. The paper's code takes them with np.mean /
  np.std of float32 arrays over strided axes, which NumPy sums sequentially in float32: that drifts
  with the set size (2e-3 relative in the SWD of 4,096 images at 64 px) and is not part of the protocol.
  Everything else (pyramid, centring, projections) is float32 as there.

Memory: the descriptors take 16k x 128 x 147 float32 = 1.2 GB per level and set at 16k images; the
paper's code holds all of them at once (10 to 15 GB with the sorts). Here one pass over the images
computes every level's descriptors and channel statistics; small sets keep the descriptors in memory,
large ones write them to a temporary safetensors file. The distance then takes the directions in
slices that fit `working_memory` and streams the descriptors through each slice: projections of both
sets for the slice, sorted in place. Peak memory is the working memory plus small chunks, whatever
the number of images. The real set's cache file (`real_descriptor_cache`) holds its uint8 images, a
sixth of the descriptors' bytes, from which a cache hit recomputes the descriptors exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gankit.errors import GankitError
from gankit.files import StorageError, atomic_write, describe_os_error
from gankit.metrics.progress import progress_bar

NEIGHBOURHOOD = 7  # descriptor side in pixels
RADIUS = NEIGHBOURHOOD // 2
SCALE = 1e3  # the paper reports SWD x 10^3
DEFAULT_WORKING_MEMORY = 384 * 2**20  # bytes for projections (and in-memory descriptors) of both sets
DESCRIPTOR_FORMAT = "gankit-swd-descriptors-v1"  # temporary descriptor files (and the old cache files)
CHUNK_BYTES = 8 << 20  # descriptor rows read or written at a time
CACHE_FORMAT = "gankit-swd-real-images-v2"  # the real set's cache file: its uint8 images
CACHE_CHUNK_BYTES = 64 << 20  # image bytes hashed or written at a time


@dataclass(frozen=True)
class SWDProtocol:
    """The knobs of the paper's protocol; the defaults are the paper's."""

    seed: int = 0
    descriptors_per_image: int = 128
    directions: int = 128  # per repeat
    repeats: int = 4
    min_resolution: int = 16


@dataclass(frozen=True)
class SWDDraws:
    """Every random number SWD uses, shared by the torch code and the NumPy oracle."""

    directions: list[np.ndarray]  # per level: float32 [descriptor_size, repeats * directions], unit columns
    positions: list[tuple[np.ndarray, np.ndarray]]  # per level: (y, x) int16 [num_images * per_image]


# ---------------------------------------------------------------------------------------------------
# Inputs, levels and random draws.


def as_uint8_images(images, name: str) -> torch.Tensor:
    """The input as a CPU uint8 tensor [N, C, H, W]; a GankitError names what is wrong otherwise."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise GankitError(
            f"{name} images must be uint8 [N, C, H, W], got {tensor.dtype} {tuple(tensor.shape)}; "
            "quantize float images with gankit.viz.grid.to_uint8 first"
        )
    return tensor.cpu()


def level_resolutions(size: int, min_resolution: int = 16) -> list[int]:
    """Pyramid level sizes as in the paper's code: size, size // 2, ... while >= min_resolution."""
    resolutions = []
    while size >= min_resolution:
        resolutions.append(size)
        size //= 2
    return resolutions


def check_swd_shape(shape: tuple[int, ...], min_resolution: int, name: str) -> list[int]:
    """Level sizes for images of this [N, C, H, W] shape, or a GankitError saying why SWD cannot run."""
    count, _, height, width = shape
    if height != width:
        raise GankitError(f"SWD needs square images; the {name} images are {height}x{width}")
    if height < min_resolution:
        raise GankitError(
            f"SWD needs images of at least {min_resolution}x{min_resolution} px; the {name} images "
            f"are {height}x{width}"
        )
    if count < 2:
        raise GankitError(f"SWD needs at least 2 {name} images, got {count}")
    resolutions = level_resolutions(height, min_resolution)
    if height % 2 ** (len(resolutions) - 1):
        raise GankitError(
            f"SWD builds a {len(resolutions)}-level Laplacian pyramid, so the image side must be "
            f"divisible by {2 ** (len(resolutions) - 1)}; the {name} images are {height}x{width}: "
            "resize them (e.g. to a power of two)"
        )
    return resolutions


def draw_randomness(
    protocol: SWDProtocol, num_images: int, resolutions: list[int], channels: int
) -> SWDDraws:
    """The directions and neighbourhood positions for a set of num_images, from RandomState(seed)."""
    rng = np.random.RandomState(protocol.seed)
    descriptor_size = channels * NEIGHBOURHOOD * NEIGHBOURHOOD
    directions = []
    for _ in resolutions:
        per_repeat = []
        for _ in range(protocol.repeats):
            dirs = rng.randn(descriptor_size, protocol.directions)
            dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
            per_repeat.append(dirs.astype(np.float32))
        directions.append(np.concatenate(per_repeat, axis=1))
    positions = []
    count = num_images * protocol.descriptors_per_image
    for size in resolutions:
        x = rng.randint(RADIUS, size - RADIUS, size=count).astype(np.int16)
        y = rng.randint(RADIUS, size - RADIUS, size=count).astype(np.int16)
        positions.append((y, x))
    return SWDDraws(directions=directions, positions=positions)


# ---------------------------------------------------------------------------------------------------
# Laplacian pyramid. The 5x5 kernel is separable and mirror padding acts per axis, so each step is
# M_rows^T @ image @ M_cols with 1-D operator matrices built from the literal 1-D definition; on CPU
# two matrix products beat a depthwise convolution several times over (and are exact at level 0).

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _mirror(index: int, size: int) -> int:
    """scipy's mode='mirror' (d c b | a b c d | c b a): reflection about the edge pixel."""
    if index < 0:
        return -index
    return 2 * (size - 1) - index if index >= size else index


@functools.lru_cache(maxsize=None)
def _down_matrix(size: int) -> torch.Tensor:
    """[size, ceil(size / 2)]: blur with [1 4 6 4 1] / 16 under mirror padding, keep even pixels."""
    matrix = torch.zeros(size, (size + 1) // 2)
    for out in range(matrix.shape[1]):
        for tap, weight in enumerate(_BINOMIAL):
            matrix[_mirror(2 * out + tap - 2, size), out] += weight / 16
    return matrix


@functools.lru_cache(maxsize=None)
def _up_matrix(size: int) -> torch.Tensor:
    """[size, 2 size]: zero insertion, then [1 4 6 4 1] / 8 (4x the kernel in 2-D) under mirror padding."""
    matrix = torch.zeros(size, 2 * size)
    for out in range(2 * size):
        for tap, weight in enumerate(_BINOMIAL):
            source = _mirror(out + tap - 2, 2 * size)
            if source % 2 == 0:  # odd positions of the zero-inserted signal hold zeros
                matrix[source // 2, out] += weight / 8
    return matrix


def _separable(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows^T @ image @ cols for every image of [..., H, W], as two large matrix products."""
    filtered = images @ cols
    return (filtered.transpose(-1, -2) @ rows).transpose(-1, -2)


def pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel (mirror padding), then keep every other row and column."""
    height, width = images.shape[-2:]
    return _separable(images, _down_matrix(height), _down_matrix(width))


def pyramid_up(images: torch.Tensor) -> torch.Tensor:
    """Double the size: zero insertion, then the 5x5 binomial blur times 4, mirror padding."""
    height, width = images.shape[-2:]
    return _separable(images, _up_matrix(height), _up_matrix(width))


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Levels g_l - up(g_(l+1)) for l < num_levels - 1, then the residual g_(num_levels-1)."""
    gaussians = [images.float()]
    for _ in range(1, num_levels):
        gaussians.append(pyramid_down(gaussians[-1]))
    levels = [g - pyramid_up(g_next) for g, g_next in zip(gaussians[:-1], gaussians[1:])]
    return levels + [gaussians[-1]]


def reconstruct_from_pyramid(levels: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of laplacian_pyramid (up to float rounding)."""
    image = levels[-1]
    for level in reversed(levels[:-1]):
        image = pyramid_up(image) + level
    return image


# ---------------------------------------------------------------------------------------------------
# Descriptors of one image set: computed in one pass, held in memory or in a safetensors file.


def _images_per_chunk(shape: tuple[int, ...], protocol: SWDProtocol) -> int:
    """Images per chunk so that one float image chunk is ~16 MB and its descriptors ~8 MB per level."""
    _, channels, height, width = shape
    descriptor_values = protocol.descriptors_per_image * channels * NEIGHBOURHOOD**2
    return max(1, min((4 << 20) // (channels * height * width), (2 << 20) // descriptor_values))


def _gather(level_images: torch.Tensor, y: np.ndarray, x: np.ndarray, per_image: int) -> torch.Tensor:
    """Raw 7x7 neighbourhoods [len(y), C * 49] around (y, x); descriptor j belongs to image j // per_image."""
    count, channels, height, width = level_images.shape
    level_images = level_images.contiguous()
    # A view with one [C, 7, 7] window per (image, top, left): one indexing op copies whole windows.
    windows = level_images.as_strided(
        (count, height - 2 * RADIUS, width - 2 * RADIUS, channels, NEIGHBOURHOOD, NEIGHBOURHOOD),
        (channels * height * width, width, 1, height * width, width, 1),
    )
    image = torch.arange(count).repeat_interleave(per_image)
    top, left = torch.from_numpy(y).long() - RADIUS, torch.from_numpy(x).long() - RADIUS
    return windows[image, top, left].reshape(len(image), -1)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of one set's descriptors at one level (population std)."""

    mean: np.ndarray  # float64 [C]
    std: np.ndarray  # float64 [C]

    def per_component(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 [C * 49] vectors to normalize flattened descriptors with, as the paper's float32 code."""
        # A constant channel (std 0) would divide by zero (NaN in the paper's code); 1 keeps it finite.
        std = np.where(self.std > 0, self.std, 1.0)
        repeat = NEIGHBOURHOOD * NEIGHBOURHOOD
        mean = torch.from_numpy(self.mean.astype(np.float32)).repeat_interleave(repeat)
        return mean, torch.from_numpy(std.astype(np.float32)).repeat_interleave(repeat)


class DescriptorSet:
    """Raw descriptors [n, C * 49] of one image set at every pyramid level, with channel statistics.

    Either `tensors` (one per level, in memory) or `path` (a safetensors file, read chunk by chunk
    with plain reads, so its pages never count as this process's memory).
    """

    def __init__(self, image_shape, resolutions, stats, *, tensors=None, path=None, offsets=None):
        self.image_shape = tuple(image_shape)
        self.resolutions = list(resolutions)
        self.stats = stats
        self.tensors, self.path, self.offsets = tensors, path, offsets
        channels = self.image_shape[1]
        self.descriptor_size = channels * NEIGHBOURHOOD**2

    @property
    def num_descriptors(self) -> int:
        return self.offsets["count"] if self.tensors is None else len(self.tensors[0])

    def chunks(self, level: int) -> Iterator[torch.Tensor]:
        """Consecutive row blocks of the level's raw descriptors (a reused buffer when read from file)."""
        rows = max(1, CHUNK_BYTES // (4 * self.descriptor_size))
        if self.tensors is not None:
            yield from self.tensors[level].split(rows)
            return
        buffer = torch.empty(rows, self.descriptor_size)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offsets[self.resolutions[level]])
            for start in range(0, self.num_descriptors, rows):
                block = buffer[: min(rows, self.num_descriptors - start)]
                _read_exactly(f, block, self.path)
                yield block

    @classmethod
    def compute(cls, source, draws, protocol, resolutions, *, path=None, progress_desc="SWD descriptors",
                progress=None) -> DescriptorSet:
        """One pass over the images; descriptors go to memory (path None) or to the file `path`."""
        count, channels = source.shape[:2]
        num_levels, per_image = len(resolutions), protocol.descriptors_per_image
        num_descriptors = count * per_image
        descriptor_size = channels * NEIGHBOURHOOD**2
        sums, squares = np.zeros((num_levels, channels)), np.zeros((num_levels, channels))
        if path is None:
            tensors = [torch.empty(num_descriptors, descriptor_size) for _ in resolutions]

            def store(level, first, block):
                tensors[level][first : first + len(block)].copy_(block)

        else:
            tensors = None
            layout = _file_layout(resolutions, num_descriptors, descriptor_size, channels)
            file_metadata = {"format": DESCRIPTOR_FORMAT, "image_shape": json.dumps(list(source.shape))}
            header = dict(layout.tensors, __metadata__=file_metadata)
            data_start = _start_safetensors_file(path, header, layout.total_bytes)
            fd = os.open(path, os.O_WRONLY)

            def store(level, first, block):
                offset = data_start + layout.offsets[resolutions[level]] + first * descriptor_size * 4
                _pwrite_all(fd, block, offset)

        try:
            step = _images_per_chunk(source.shape, protocol)
            with progress_bar(count, progress_desc, "img", progress) as bar:
                for start in range(0, count, step):
                    images = source.read(start, min(count, start + step))
                    first, last = start * per_image, (start + len(images)) * per_image
                    for level, level_images in enumerate(laplacian_pyramid(images, num_levels)):
                        y, x = (coordinate[first:last] for coordinate in draws.positions[level])
                        block = _gather(level_images, y, x, per_image)
                        values = block.view(len(block), channels, -1)
                        sums[level] += values.sum(dim=(0, 2), dtype=torch.float64).numpy()
                        squares[level] += values.double().square_().sum(dim=(0, 2)).numpy()
                        store(level, first, block)
                    bar.update(len(images))
            values_per_channel = num_descriptors * NEIGHBOURHOOD**2
            means = sums / values_per_channel
            stds = np.sqrt(np.maximum(squares / values_per_channel - means**2, 0.0))
            stats = [ChannelStats(mean=means[level], std=stds[level]) for level in range(num_levels)]
            if path is not None:
                for resolution, level_stats in zip(resolutions, stats):
                    for name, value in (("mean", level_stats.mean), ("std", level_stats.std)):
                        offset = data_start + layout.offsets[f"{name}_{resolution}"]
                        os.pwrite(fd, value.astype("<f8").tobytes(), offset)
        finally:
            if path is not None:
                os.close(fd)
        if path is None:
            return cls(source.shape, resolutions, stats, tensors=tensors)
        return cls.open(path)

    @classmethod
    def open(cls, path) -> DescriptorSet:
        """A file-backed set from a file written by `compute`; GankitError if it is not one."""
        path = Path(path)
        try:
            header, data_start = _read_safetensors_header(path)
            metadata = header["__metadata__"]
            if metadata.get("format") != DESCRIPTOR_FORMAT:
                raise ValueError("not an SWD descriptor file")
            image_shape = tuple(json.loads(metadata["image_shape"]))
            names = [name for name in header if name.startswith("descriptors_")]
            resolutions = sorted((int(name.split("_")[1]) for name in names), reverse=True)
            offsets = {"count": header[f"descriptors_{resolutions[0]}"]["shape"][0]}
            stats = []
            with open(path, "rb") as f:
                for resolution in resolutions:
                    offsets[resolution] = data_start + header[f"descriptors_{resolution}"]["data_offsets"][0]
                    values = {}
                    for name in ("mean", "std"):
                        begin, end = header[f"{name}_{resolution}"]["data_offsets"]
                        f.seek(data_start + begin)
                        values[name] = np.frombuffer(f.read(end - begin), dtype="<f8").copy()
                    stats.append(ChannelStats(**values))
            last_end = max(entry["data_offsets"][1] for entry in header.values() if "data_offsets" in entry)
            if os.path.getsize(path) != data_start + last_end:
                raise ValueError("truncated file")
        except (OSError, ValueError, KeyError, IndexError, json.JSONDecodeError) as error:
            raise GankitError(
                f"{path} is not a complete gankit SWD descriptor file ({error}); delete it to rebuild it"
            ) from error
        return cls(image_shape, resolutions, stats, path=path, offsets=offsets)


@dataclass(frozen=True)
class _Layout:
    tensors: dict
    offsets: dict
    total_bytes: int


def _file_layout(resolutions, num_descriptors, descriptor_size, channels) -> _Layout:
    """safetensors entries: descriptors_RES float32 [n, D] per level, then mean_RES / std_RES float64 [C]."""
    tensors, offsets, position = {}, {}, 0
    entries = [(f"descriptors_{r}", "F32", [num_descriptors, descriptor_size], 4) for r in resolutions]
    entries += [(f"{name}_{r}", "F64", [channels], 8) for r in resolutions for name in ("mean", "std")]
    for name, dtype, shape, item_bytes in entries:
        size = int(np.prod(shape)) * item_bytes
        tensors[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + size]}
        offsets[name] = position
        position += size
    offsets.update({r: offsets[f"descriptors_{r}"] for r in resolutions})
    return _Layout(tensors=tensors, offsets=offsets, total_bytes=position)


def _start_safetensors_file(path, header: dict, data_bytes: int) -> int:
    """Writes the header and sizes the file; returns where the data section starts."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        f.truncate(8 + len(encoded) + data_bytes)
    return 8 + len(encoded)


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header dict, byte offset of the data section)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= os.path.getsize(path):
            raise ValueError("no safetensors header")
        return json.loads(f.read(length)), 8 + length


def _pwrite_all(fd: int, block: torch.Tensor, offset: int) -> None:
    data = memoryview(block.contiguous().numpy()).cast("B")
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _read_exactly(f, block: torch.Tensor, path) -> None:
    view = memoryview(block.numpy()).cast("B")
    while view:
        got = f.readinto(view)
        if not got:
            raise GankitError(f"SWD file {path} is truncated; delete it to rebuild it")
        view = view[got:]


class _TensorImages:
    """Images held in memory, handed out chunk by chunk."""

    def __init__(self, images: torch.Tensor):
        self.images, self.shape = images, tuple(images.shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.images[start:stop]


def _describe(source, protocol, draws, resolutions, working_memory, scratch_dir, *, progress_desc, progress):
    """Descriptors of the images of `source`: in memory if they fit half the working memory, else in
    a temporary file in scratch_dir that is deleted with the returned object."""
    descriptor_bytes = source.shape[1] * NEIGHBOURHOOD**2 * 4
    total = source.shape[0] * protocol.descriptors_per_image * descriptor_bytes * len(resolutions)
    options = {"progress_desc": progress_desc, "progress": progress}
    if total <= working_memory // 2:
        return DescriptorSet.compute(source, draws, protocol, resolutions, **options)
    path = None
    try:
        fd, path = tempfile.mkstemp(prefix="gankit-swd-", suffix=".safetensors", dir=scratch_dir)
        os.close(fd)
        descriptors = DescriptorSet.compute(source, draws, protocol, resolutions, path=path, **options)
    except BaseException as error:
        if path is not None:
            Path(path).unlink(missing_ok=True)
        if isinstance(error, OSError):
            needed = f"{total / 2**30:.1f} GiB" if total >= 2**30 else f"{total / 2**20:.0f} MiB"
            raise StorageError(
                f"{describe_os_error(error, path or scratch_dir or tempfile.gettempdir())}; SWD's descriptor "
                f"file for these images needs {needed} there (another folder: scratch_dir)"
            ) from None
        raise
    # missing_ok: the caller may have removed scratch_dir (a TemporaryDirectory) before the set is freed.
    weakref.finalize(descriptors, Path(path).unlink, missing_ok=True)
    return descriptors


# ---------------------------------------------------------------------------------------------------
# The real side, reusable across evaluations and cacheable in a file.
#
# The cache file holds the real images as uint8, not their descriptors: 128 windows of 49 pixels at
# each of 4 levels, as float32, take 6x the images' bytes (4.6 GiB against 0.75 GiB for the paper's
# 16,384 RGB images of 128 px), and the descriptors are a deterministic function of the images and the
# seed. A cache hit recomputes them in one pass over the file (the pyramids and gathering: about a tenth
# of an evaluation's CPU time at that scale), bit-identical to the first time, without the real source.


class SWDReference:
    """The real side of SWD: protocol, random draws and the real images' descriptors and statistics.

    Build it once (`SWDReference.build(real_images, seed=...)`, or `real_descriptor_cache` for a file
    that outlives the process) and pass it as `real` to `sliced_wasserstein` for every evaluation.
    """

    def __init__(self, protocol: SWDProtocol, descriptors: DescriptorSet, draws: SWDDraws | None = None):
        self.protocol = protocol
        self.descriptors = descriptors
        self.image_shape = descriptors.image_shape
        self.resolutions = descriptors.resolutions
        self._draws = draws

    @property
    def draws(self) -> SWDDraws:
        """The random directions and positions (recomputed from the seed, never stored)."""
        if self._draws is None:
            count, channels = self.image_shape[:2]
            self._draws = draw_randomness(self.protocol, count, self.resolutions, channels)
        return self._draws

    @classmethod
    def build(
        cls,
        real,
        *,
        working_memory: int = DEFAULT_WORKING_MEMORY,
        scratch_dir=None,
        progress: bool | None = None,
        **protocol_options,
    ) -> SWDReference:
        """Reference for uint8 real images [N, C, H, W] (descriptors in memory or a temporary file)."""
        images = as_uint8_images(real, "real")
        protocol = SWDProtocol(**protocol_options)
        resolutions = check_swd_shape(tuple(images.shape), protocol.min_resolution, "real")
        draws = draw_randomness(protocol, images.shape[0], resolutions, images.shape[1])
        descriptors = _describe(
            _TensorImages(images), protocol, draws, resolutions, working_memory, scratch_dir,
            progress_desc="SWD descriptors, real", progress=progress,
        )
        return cls(protocol, descriptors, draws)

    @classmethod
    def load(
        cls,
        path,
        key: str | None = None,
        *,
        protocol: SWDProtocol | None = None,
        working_memory: int = DEFAULT_WORKING_MEMORY,
        scratch_dir=None,
        progress: bool | None = None,
    ) -> SWDReference:
        """The reference from a file written by `real_descriptor_cache` (one pass over its images);
        GankitError if the file is foreign, damaged, or for another key or protocol."""
        path = Path(path)
        metadata, data_start, image_shape = _read_image_cache_header(path)
        if key is not None and metadata.get("key") != key:
            raise GankitError(f"SWD cache {path} was built for {metadata.get('key')!r}, not {key!r}")
        try:
            stored = SWDProtocol(**{name: int(metadata[name]) for name in SWDProtocol.__dataclass_fields__})
        except (KeyError, ValueError) as error:
            raise GankitError(f"SWD cache {path} does not name its protocol ({error}); delete it") from error
        if protocol is not None and stored != protocol:
            raise GankitError(f"SWD cache {path} was built with {stored}, not {protocol}")
        resolutions = check_swd_shape(image_shape, stored.min_resolution, "cached real")
        draws = draw_randomness(stored, image_shape[0], resolutions, image_shape[1])
        with _CachedImages(path, data_start, image_shape) as source:
            descriptors = _describe(
                source, stored, draws, resolutions, working_memory, scratch_dir,
                progress_desc="SWD descriptors, real (cached)", progress=progress,
            )
        if source.hexdigest() != metadata.get("images_blake2b"):
            raise GankitError(f"SWD cache {path} is damaged (its images fail their checksum); delete it")
        return cls(stored, descriptors, draws)


def _image_chunks(images: torch.Tensor) -> Iterator[memoryview]:
    """The bytes of uint8 images [N, ...] in order, a few whole images at a time."""
    per_image = max(1, images[0].numel())
    for chunk in images.split(max(1, CACHE_CHUNK_BYTES // per_image)):
        yield memoryview(chunk.contiguous().numpy()).cast("B")


def _images_digest(images: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for chunk in _image_chunks(images):
        digest.update(chunk)
    return digest.hexdigest()


def _write_image_cache(path, images: torch.Tensor, metadata: dict[str, str]) -> None:
    """A safetensors file with one uint8 tensor, `images` [N, C, H, W], and `metadata` in its header."""
    entry = {"dtype": "U8", "shape": list(images.shape), "data_offsets": [0, images.numel()]}
    data_start = _start_safetensors_file(path, {"images": entry, "__metadata__": metadata}, images.numel())
    with open(path, "r+b") as f:
        f.seek(data_start)
        f.writelines(_image_chunks(images))


def _read_image_cache_header(path: Path) -> tuple[dict, int, tuple[int, ...]]:
    """(metadata, data start, image shape) of a cache file; GankitError if it is not a complete one."""
    try:
        header, data_start = _read_safetensors_header(path)
        metadata = header["__metadata__"]
        if metadata.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, not {CACHE_FORMAT!r}")
        entry = header["images"]
        image_shape = tuple(int(side) for side in entry["shape"])
        if entry["dtype"] != "U8" or len(image_shape) != 4 or entry["data_offsets"] != [0, math.prod(image_shape)]:
            raise ValueError("no uint8 [N, C, H, W] images")
        if os.path.getsize(path) != data_start + math.prod(image_shape):
            raise ValueError("truncated file")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise GankitError(f"{path} is not a complete gankit SWD cache ({error}); delete it to rebuild it") from error
    return metadata, data_start, image_shape


class _CachedImages:
    """The images of a cache file, read in order chunk by chunk and hashed on the way."""

    def __init__(self, path: Path, data_start: int, image_shape: tuple[int, ...]):
        self.path, self.shape = path, image_shape
        try:
            self._file = open(path, "rb", buffering=0)
            self._file.seek(data_start)
        except OSError as error:
            raise GankitError(f"could not read SWD cache {path} ({error}); delete it to rebuild it") from error
        self._digest = hashlib.blake2b(digest_size=16)
        self._next = 0

    def __enter__(self) -> _CachedImages:
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def read(self, start: int, stop: int) -> torch.Tensor:
        if start != self._next:
            raise ValueError(f"cached images are read in order: asked for {start}, next is {self._next}")
        block = torch.empty((stop - start, *self.shape[1:]), dtype=torch.uint8)
        try:
            _read_exactly(self._file, block, self.path)
        except OSError as error:  # a read error, not the scratch file's write error _describe reports
            raise GankitError(f"could not read SWD cache {self.path} ({error}); delete it to rebuild it") from error
        self._digest.update(memoryview(block.numpy()).cast("B"))
        self._next = stop
        return block

    def hexdigest(self) -> str:
        """The digest of the images read, or "" if some were not."""
        return self._digest.hexdigest() if self._next == self.shape[0] else ""


def real_descriptor_cache(
    real: torch.Tensor | Callable[[], torch.Tensor],
    cache_path,
    *,
    key: str = "",
    working_memory: int = DEFAULT_WORKING_MEMORY,
    scratch_dir=None,
    progress: bool | None = None,
    **protocol_options,
) -> SWDReference:
    """The SWD reference from cache_path if it was built for this key and protocol, else built and
    cached there.

    `real` may be a zero-argument function returning the uint8 images, so that a cache hit never
    loads the data. `key` names the real data (dataset identity, resolution, count); the caller
    chooses it, and the seed and protocol are checked as well. The file holds the real images as
    uint8 (N x C x H x W bytes: 0.75 GiB for 16k RGB images of 128 px) and their checksum; a hit
    recomputes the descriptors from them, identical to the first time.
    """
    cache_path = Path(cache_path)
    protocol = SWDProtocol(**protocol_options)
    describe_options = {"working_memory": working_memory, "scratch_dir": scratch_dir, "progress": progress}
    if cache_path.is_file():
        try:
            return SWDReference.load(cache_path, key=key, protocol=protocol, **describe_options)
        except StorageError:
            raise  # no room for the descriptor file: rebuilding would fail the same way
        except GankitError:
            pass  # another key or protocol, the older descriptor layout, truncated or damaged: rebuilt
    images = as_uint8_images(real() if callable(real) else real, "real")
    check_swd_shape(tuple(images.shape), protocol.min_resolution, "real")  # before anything is written
    metadata = {
        "format": CACHE_FORMAT,
        "key": key,
        "images_blake2b": _images_digest(images),
        **{name: str(value) for name, value in asdict(protocol).items()},
    }
    # Written beside the target and renamed, so a crash never leaves a half file under cache_path.
    atomic_write(cache_path, lambda temporary: _write_image_cache(temporary, images, metadata))
    return SWDReference.build(images, **describe_options, **asdict(protocol))


# ---------------------------------------------------------------------------------------------------
# The distance.


def _sort_rows_in_place(projections: torch.Tensor) -> None:
    """Sorts each row; NumPy's SIMD quicksort is ~20x faster than torch.sort on CPU and needs no indices."""
    rows = projections.numpy()
    workers = min(len(rows), max(1, torch.get_num_threads()))
    if workers == 1 or rows.shape[1] < 65536:  # short rows: threads cost more than they save
        rows.sort(axis=1)
        return
    with ThreadPoolExecutor(workers) as pool:  # ndarray.sort releases the GIL
        list(pool.map(np.ndarray.sort, rows))


def _sorted_projections(descriptors: DescriptorSet, level: int, directions: torch.Tensor) -> torch.Tensor:
    """[directions, n]: the level's descriptors, normalized as the paper does, projected and sorted."""
    mean, std = descriptors.stats[level].per_component()
    # ((d - mean) / std) @ W as (d - mean) @ (W / std): one pass less over the descriptors, and the
    # centring, where float32 could lose digits, stays as in the paper's code.
    scaled_directions = (directions / std[:, None]).T.contiguous()
    projections = torch.empty(len(scaled_directions), descriptors.num_descriptors)
    start = 0
    for block in descriptors.chunks(level):
        projections[:, start : start + len(block)] = scaled_directions @ (block - mean).T
        start += len(block)
    _sort_rows_in_place(projections)
    return projections


def _level_distance(
    real: DescriptorSet, fake: DescriptorSet, directions: np.ndarray, level: int, protocol, budget: int, bar
) -> float:
    """SWD x 1e3 at one level, with the directions in slices whose projections fit `budget` bytes;
    `bar` (a progress bar) advances by each slice's directions."""
    num_descriptors = real.num_descriptors
    all_directions = torch.from_numpy(directions)
    total_directions = all_directions.shape[1]
    per_slice = int(np.clip(budget // (2 * num_descriptors * 4), 1, total_directions))
    absolute_sums = torch.zeros(total_directions, dtype=torch.float64)
    for first in range(0, total_directions, per_slice):
        slice_directions = all_directions[:, first : first + per_slice]
        real_sorted = _sorted_projections(real, level, slice_directions)
        fake_sorted = _sorted_projections(fake, level, slice_directions)
        real_sorted.sub_(fake_sorted).abs_()
        del fake_sorted
        # NumPy converts to float64 in small buffers; torch's sum(dtype=float64) would copy the whole slice.
        row_sums = real_sorted.numpy().sum(axis=1, dtype=np.float64)
        absolute_sums[first : first + per_slice] = torch.from_numpy(row_sums)
        del real_sorted
        bar.update(slice_directions.shape[1])
    per_repeat = absolute_sums.view(protocol.repeats, protocol.directions).sum(dim=1)
    return float((per_repeat / (num_descriptors * protocol.directions)).mean()) * SCALE


def sliced_wasserstein(
    real,
    fake,
    *,
    seed: int = 0,
    descriptors_per_image: int = 128,
    directions: int = 128,
    repeats: int = 4,
    min_resolution: int = 16,
    working_memory: int = DEFAULT_WORKING_MEMORY,
    scratch_dir=None,
    progress: bool | None = None,
) -> dict[str, float]:
    """SWD x 1e3 per pyramid level ("64", "32", "16", ...) and "avg", between uint8 image sets.

    `real` is a uint8 tensor [N, C, H, W] or an `SWDReference` (whose protocol must then match the
    keyword options); `fake` is a uint8 tensor of the same shape. `working_memory` bounds the bytes
    of projections and in-memory descriptors; larger sets put their descriptors in a temporary file
    in `scratch_dir` (default: the system's temporary directory). `progress`: progress bars on
    stderr for the descriptors and the projections and sorts (None: when stderr is a terminal).
    """
    protocol = SWDProtocol(seed, descriptors_per_image, directions, repeats, min_resolution)
    if isinstance(real, SWDReference):
        if real.protocol != protocol:
            raise ValueError(f"SWD reference was built with {real.protocol}, not {protocol}")
        reference = real
    else:
        reference = SWDReference.build(
            real, working_memory=working_memory, scratch_dir=scratch_dir, progress=progress, **asdict(protocol)
        )
    fake_images = as_uint8_images(fake, "generated")
    if tuple(fake_images.shape[1:]) != reference.image_shape[1:]:
        raise GankitError(
            f"generated images are {tuple(fake_images.shape[1:])} (C, H, W) but the real images are "
            f"{reference.image_shape[1:]}; evaluate against real data of the same size and channel count"
        )
    if len(fake_images) != reference.image_shape[0]:
        raise GankitError(
            f"SWD compares sets of equal size: got {reference.image_shape[0]} real and {len(fake_images)} "
            "generated images; pass the same number of each (e.g. --num-samples)"
        )
    draws = reference.draws  # the same positions for both sets (see the module docstring)
    fake_descriptors = _describe(
        _TensorImages(fake_images), protocol, draws, reference.resolutions, working_memory, scratch_dir,
        progress_desc="SWD descriptors, generated", progress=progress,
    )
    held = sum(
        d.num_descriptors * d.descriptor_size * 4 * len(d.resolutions)
        for d in (reference.descriptors, fake_descriptors)
        if d.tensors is not None
    )
    budget = max(working_memory - held, working_memory // 4)
    total_directions = len(reference.resolutions) * protocol.repeats * protocol.directions
    distances = {}
    with progress_bar(total_directions, "SWD projections and sorts", "dir", progress) as bar:
        for level, resolution in enumerate(reference.resolutions):
            bar.set_postfix_str(f"{resolution} px", refresh=False)
            distances[str(resolution)] = _level_distance(
                reference.descriptors, fake_descriptors, draws.directions[level], level, protocol, budget, bar
            )
    distances["avg"] = float(np.mean(list(distances.values())))
    return distances
