"""Straightforward NumPy versions of SWD and MS-SSIM: test oracles and the benchmark's reference.

They follow the Progressive GAN paper's code step by step (whole arrays in memory, direct 5x5
mirror-padded convolutions accumulated in float64 like scipy.ndimage.convolve, FFT 'valid' filtering
like scipy.signal.fftconvolve, sorting along the descriptor axis) and make the same choices as
gankit.metrics.swd and gankit.metrics.ms_ssim where that code leaves freedom (see their docstrings).
SWD takes its random draws from the same helper as the torch code, so both see identical numbers.
Memory grows with the input: at 16k images x 128 px, SWD holds ~10 GB of descriptors.
"""

from __future__ import annotations

import numpy as np

from gankit.metrics.swd import SCALE, SWDProtocol, draw_randomness, level_resolutions

BINOMIAL_5X5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0
MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])

# ---------------------------------------------------------------------------------------------------
# SWD


def convolve_mirror(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size 2-D convolution of float32 [N, C, H, W] with mirror padding, float64 sums, float32 out."""
    radius = kernel.shape[0] // 2
    padded = np.pad(images, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="reflect")
    height, width = images.shape[2:]
    total = np.zeros(images.shape, dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            total += kernel[dy, dx] * padded[:, :, dy : dy + height, dx : dx + width]
    return total.astype(np.float32)


def pyramid_down(images: np.ndarray) -> np.ndarray:
    """Binomial blur, then every other row and column."""
    return convolve_mirror(images, BINOMIAL_5X5)[:, :, ::2, ::2]


def pyramid_up(images: np.ndarray) -> np.ndarray:
    """Zero insertion, then the binomial blur times 4."""
    count, channels, height, width = images.shape
    zero_inserted = np.zeros((count, channels, 2 * height, 2 * width), dtype=images.dtype)
    zero_inserted[:, :, ::2, ::2] = images
    return convolve_mirror(zero_inserted, 4.0 * BINOMIAL_5X5)


def laplacian_pyramid(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
    """Levels from full resolution down; the last is the Gaussian residual."""
    pyramid = [images.astype(np.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyramid_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyramid_up(pyramid[-1])
    return pyramid


def neighbourhoods(level: np.ndarray, y: np.ndarray, x: np.ndarray, per_image: int) -> np.ndarray:
    """[len(y), C, 7, 7] windows centred on (y, x); window j comes from image j // per_image."""
    count = len(y)
    image = (np.arange(count) // per_image)[:, None, None, None]
    channel = np.arange(level.shape[1])[None, :, None, None]
    offsets = np.arange(-3, 4)
    rows = y.astype(np.int64)[:, None, None, None] + offsets[None, None, :, None]
    cols = x.astype(np.int64)[:, None, None, None] + offsets[None, None, None, :]
    return level[image, channel, rows, cols]


def normalize_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """Per-channel standardization by the set's own mean and std, flattened to [n, C*49].

    The statistics are accumulated in float64 and applied in float32. The paper's code calls
    np.mean / np.std on the float32 array; over these strided axes NumPy then sums sequentially in
    float32, which drifts (2e-3 relative in the SWD of 4,096 images here): an accident, not protocol.
    """
    axes = (0, 2, 3)
    mean = np.mean(descriptors, axis=axes, keepdims=True, dtype=np.float64)
    std = np.std(descriptors, axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)  # gankit's choice for constant channels
    descriptors = descriptors - mean.astype(np.float32)
    descriptors /= std.astype(np.float32)
    return descriptors.reshape(len(descriptors), -1)


def sliced_wasserstein_distance(a: np.ndarray, b: np.ndarray, directions: np.ndarray, repeats: int) -> float:
    """Mean over repeats of the mean |sorted(a @ dirs) - sorted(b @ dirs)|."""
    results = []
    for block in np.split(directions, repeats, axis=1):
        projected_a = np.sort(a @ block, axis=0)
        projected_b = np.sort(b @ block, axis=0)
        results.append(np.mean(np.abs(projected_a - projected_b)))
    return float(np.mean(results))


def sliced_wasserstein(real: np.ndarray, fake: np.ndarray, **protocol_options) -> dict[str, float]:
    """SWD x 1e3 per level and "avg" between uint8 arrays [N, C, H, W] of one shape."""
    protocol = SWDProtocol(**protocol_options)
    real, fake = np.asarray(real), np.asarray(fake)
    assert real.shape == fake.shape and real.dtype == fake.dtype == np.uint8
    count, channels, height, _ = real.shape
    resolutions = level_resolutions(height, protocol.min_resolution)
    draws = draw_randomness(protocol, count, resolutions, channels)
    descriptors = []
    for images in (real, fake):
        pyramid = laplacian_pyramid(images, len(resolutions))
        descriptors.append(
            [
                normalize_descriptors(neighbourhoods(level, y, x, protocol.descriptors_per_image))
                for level, (y, x) in zip(pyramid, draws.positions)
            ]
        )
        del pyramid
    distances = {
        str(resolution): SCALE * sliced_wasserstein_distance(a, b, directions, protocol.repeats)
        for resolution, a, b, directions in zip(resolutions, *descriptors, draws.directions)
    }
    distances["avg"] = float(np.mean(list(distances.values())))
    return distances


# ---------------------------------------------------------------------------------------------------
# MS-SSIM (images channels-last [N, H, W, C], as the paper's code transposes them)


def fspecial_gauss(size: int, sigma: float) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma), half-pixel offsets for even sizes."""
    radius = size // 2
    start, stop = -radius, radius + 1
    offset = 0.0
    if size % 2 == 0:
        offset, stop = 0.5, stop - 1
    x, y = np.mgrid[offset + start : stop, offset + start : stop]
    window = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
    return window / window.sum()


def fft_convolve_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """'valid' 2-D convolution over axes 1, 2 of [N, H, W, C] through the FFT, in float64."""
    height, width = images.shape[1:3]
    size = window.shape[0]
    shape = (height + size - 1, width + size - 1)
    spectrum = np.fft.rfft2(images.astype(np.float64), s=shape, axes=(1, 2))
    spectrum *= np.fft.rfft2(window, s=shape)[None, :, :, None]
    full = np.fft.irfft2(spectrum, s=shape, axes=(1, 2))
    return full[:, size - 1 : height, size - 1 : width, :]


def ssim_and_cs(img1, img2, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
    """Per-image mean SSIM and contrast-structure of two float32 batches [N, H, W, C]."""
    img1, img2 = img1.astype(np.float32), img2.astype(np.float32)
    height, width = img1.shape[1:3]
    size = min(filter_size, height, width)
    window = fspecial_gauss(size, size * filter_sigma / filter_size)
    mu1, mu2 = fft_convolve_valid(img1, window), fft_convolve_valid(img2, window)
    sigma11 = fft_convolve_valid(img1 * img1, window) - mu1 * mu1
    sigma22 = fft_convolve_valid(img2 * img2, window) - mu2 * mu2
    sigma12 = fft_convolve_valid(img1 * img2, window) - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    ssim = np.mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2), axis=(1, 2, 3))
    return ssim, np.mean(v1 / v2, axis=(1, 2, 3))


def box_downsample(images: np.ndarray) -> np.ndarray:
    """2x2 block average of [N, H, W, C]; an odd side repeats its last row/column first."""
    pad_rows, pad_cols = images.shape[1] % 2, images.shape[2] % 2
    images = np.pad(images, ((0, 0), (0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    top_left, bottom_left = images[:, 0::2, 0::2], images[:, 1::2, 0::2]
    top_right, bottom_right = images[:, 0::2, 1::2], images[:, 1::2, 1::2]
    return (top_left + bottom_left + top_right + bottom_right) * 0.25


def ms_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pair MS-SSIM of uint8 batches [N, C, H, W] (float64 [N])."""
    im1 = np.asarray(a).transpose(0, 2, 3, 1).astype(np.float32)
    im2 = np.asarray(b).transpose(0, 2, 3, 1).astype(np.float32)
    ssims, css = [], []
    for _ in MS_SSIM_WEIGHTS:
        ssim, cs = ssim_and_cs(im1, im2)
        ssims.append(ssim)
        css.append(cs)
        im1, im2 = box_downsample(im1), box_downsample(im2)
    ssims = np.clip(np.asarray(ssims), 0.0, np.inf)
    css = np.clip(np.asarray(css), 0.0, np.inf)
    weights = MS_SSIM_WEIGHTS
    return np.prod(css[:-1] ** weights[:-1, None], axis=0) * ssims[-1] ** weights[-1]


def ms_ssim_pairs(images: np.ndarray, num_pairs: int, batch_pairs: int = 64) -> float:
    """Mean MS-SSIM over pairs (2i, 2i+1), fed in minibatches as the paper's metric API does."""
    images = np.asarray(images)[: 2 * num_pairs]
    total = 0.0
    for start in range(0, len(images), 2 * batch_pairs):
        batch = images[start : start + 2 * batch_pairs]
        total += float(np.sum(ms_ssim(batch[0::2], batch[1::2])))
    return total / num_pairs
