"""MS-SSIM as the Progressive GAN paper's code computes it (its metrics/ms_ssim.py, a port of the
TensorFlow compression model's msssim.py), used there as a diversity score of generated images.

Protocol, checked against that code:
- uint8 images as floats, dynamic range 255, K1 0.01, K2 0.03.
- Gaussian window of size 11 and sigma 1.5 with 'valid' filtering; when an image side is under 11 the
  window shrinks to min(11, H, W) and sigma to size * 1.5 / 11 (MATLAB fspecial sampling, half-pixel
  offsets for even sizes). That is why it works at 32x32 and 64x64, where libraries refuse.
- 5 scales weighted [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]; between scales the 2x2 box average of
  pixels (2i, 2i+1) in both directions.
- Per image pair, ssim and cs are means over pixels and channels; both are clipped at 0; the score is
  prod(cs_1..4 ^ w_1..4) * ssim_5 ^ w_5. ms_ssim_pairs averages it over pairs (2i, 2i+1).

Choice where that code does not run: an odd side at a downsampling step makes its box filter's
slices differ in length (NumPy raises, or broadcasts a 1-row slice when the side is 3). There we
follow the TF original it ports, which replicates the last row/column (convolve mode='reflect',
then every other pixel). Even sides (32, 64, 128, ...) are unaffected.

Arithmetic as the paper's code: pixel products in float32, filtering in float64 (there fftconvolve,
here the separable window applied as two small matrix products, much faster on CPU than a depthwise
convolution).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from gankit.errors import GankitError
from gankit.metrics.progress import progress_bar

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MAX_VALUE = 255.0
PIXELS_PER_CHUNK = 2**21  # values per image batch of a chunk: ~80 MB of float64 maps, any size


def gaussian_window_1d(size: int, sigma: float) -> torch.Tensor:
    """Normalized 1-D factor of MATLAB's fspecial('gaussian') window (float64)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


@functools.lru_cache(maxsize=None)
def _valid_filter_matrix(length: int, size: int) -> torch.Tensor:
    """[length, length - size + 1] banded matrix M with (x @ M)[j] = sum_i window[i] x[i + j] for the
    window of this size (sigma scaled by size / 11)."""
    window = gaussian_window_1d(size, size * FILTER_SIGMA / FILTER_SIZE)
    matrix = torch.zeros(length, length - size + 1, dtype=torch.float64)
    for column in range(length - size + 1):
        matrix[column : column + size, column] = window
    return matrix


def _filter_valid(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of [..., H, W] as two large matrix products; returns [..., W', H']
    (transposed, which is harmless because callers only average over pixels)."""
    *leading, height, width = maps.shape
    filtered = (maps.reshape(-1, width) @ cols).view(*leading, height, cols.shape[1])
    filtered = filtered.transpose(-1, -2).reshape(-1, height) @ rows
    return filtered.view(*leading, cols.shape[1], rows.shape[1])


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure term at one scale; x, y float32 [B, C, H, W]."""
    height, width = x.shape[-2:]
    size = min(FILTER_SIZE, height, width)  # one square window, shrunk to the smaller side
    rows, cols = _valid_filter_matrix(height, size), _valid_filter_matrix(width, size)
    # As the paper's code: images and their products in float32 (mul computes in the inputs' dtype,
    # then writes float64), the filtering and everything after it in float64.
    maps = torch.empty((5, *x.shape), dtype=torch.float64)
    maps[0].copy_(x)
    maps[1].copy_(y)
    torch.mul(x, x, out=maps[2])
    torch.mul(y, y, out=maps[3])
    torch.mul(x, y, out=maps[4])
    mu_x, mu_y, xx, yy, xy = _filter_valid(maps, rows, cols).unbind(0)
    c1, c2 = (K1 * MAX_VALUE) ** 2, (K2 * MAX_VALUE) ** 2
    # In place where a buffer is no longer needed; the formulas are the paper's:
    # v1 = 2 cov + c2, v2 = var_x + var_y + c2, ssim = (2 mu_x mu_y + c1) v1 / ((mu_x^2 + mu_y^2 + c1) v2).
    mu_xy = mu_x * mu_y
    mu_squares = mu_x.square().add_(mu_y.square())
    v1 = xy.sub_(mu_xy).mul_(2.0).add_(c2)
    v2 = xx.add_(yy).sub_(mu_squares).add_(c2)
    cs_map = v1.div_(v2)
    ssim_map = mu_xy.mul_(2.0).add_(c1).mul_(cs_map).div_(mu_squares.add_(c1))
    return ssim_map.mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def box_downsample(images: torch.Tensor) -> torch.Tensor:
    """Average of 2x2 blocks (2i, 2i+1); an odd side first repeats its last row/column (TF original)."""
    pad_bottom, pad_right = images.shape[-2] % 2, images.shape[-1] % 2
    if pad_bottom or pad_right:
        images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
    return (
        images[..., 0::2, 0::2] + images[..., 1::2, 0::2] + images[..., 0::2, 1::2] + images[..., 1::2, 1::2]
    ) * 0.25


def _check_uint8(images, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise GankitError(
            f"MS-SSIM needs uint8 images [N, C, H, W]; {name} is {tensor.dtype} {tuple(tensor.shape)}"
        )
    return tensor.cpu()


def ms_ssim(a, b, progress: bool | None = False, desc: str = "MS-SSIM pairs") -> torch.Tensor:
    """MS-SSIM of each pair (a[i], b[i]) of uint8 images [N, C, H, W]: float64 tensor [N]."""
    a, b = _check_uint8(a, "the first batch"), _check_uint8(b, "the second batch")
    if a.shape != b.shape:
        raise GankitError(f"MS-SSIM compares images of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    with progress_bar(len(a), desc, "pair", progress) as bar:
        return _ms_ssim_chunks(a, b, bar)


def _ms_ssim_chunks(a: torch.Tensor, b: torch.Tensor, bar) -> torch.Tensor:
    """ms_ssim's scores, a chunk of pairs at a time (bounded memory); bar advances by each chunk."""
    scores = []
    pairs_per_chunk = max(1, PIXELS_PER_CHUNK // a[0].numel()) if len(a) else 1
    for start in range(0, len(a), pairs_per_chunk):
        x = a[start : start + pairs_per_chunk].float()  # exact: downsampled values keep <= 16 bits
        y = b[start : start + pairs_per_chunk].float()
        ssims, css = [], []
        for scale in range(len(WEIGHTS)):
            ssim, cs = _ssim_and_cs(x, y)
            ssims.append(ssim)
            css.append(cs)
            if scale < len(WEIGHTS) - 1:  # the paper's code also downsamples after the last scale, unused
                x, y = box_downsample(x), box_downsample(y)
        # Clipped at 0 as the paper's code does (negative bases would give NaN powers).
        score = torch.ones_like(ssims[0])
        for cs, weight in zip(css[:-1], WEIGHTS[:-1]):
            score = score * cs.clamp(min=0) ** weight
        scores.append(score * ssims[-1].clamp(min=0) ** WEIGHTS[-1])
        bar.update(len(x))
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


def ms_ssim_pairs(images, num_pairs: int | None = 10000, progress: bool | None = False,
                  desc: str = "MS-SSIM pairs") -> float:
    """Mean MS-SSIM over the pairs (images[2i], images[2i+1]) for i < num_pairs (None: all pairs)."""
    images = _check_uint8(images, "the image set")
    available = len(images) // 2
    if num_pairs is None:
        num_pairs = available
    if num_pairs < 1 or num_pairs > available:
        raise GankitError(
            f"MS-SSIM over {num_pairs} pairs needs {2 * max(num_pairs, 1)} images, got {len(images)}; "
            "generate more samples or ask for fewer pairs"
        )
    return float(ms_ssim(images[0 : 2 * num_pairs : 2], images[1 : 2 * num_pairs : 2], progress, desc).mean())
