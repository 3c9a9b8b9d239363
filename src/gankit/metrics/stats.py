"""Distances between two feature sets and a histogram's distance to uniform: pure NumPy functions.

Features come as arrays [N, D] (NumPy or CPU tensors); everything is computed in float64.
"""

from __future__ import annotations

import numpy as np

from gankit.errors import GankitError


def _as_features(features, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise GankitError(f"{name} features must be a 2-D array [N, D], got shape {array.shape}")
    return array


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (N - 1 denominator) of features [N, D]."""
    array = _as_features(features, "input")
    if len(array) < 2:
        raise GankitError(f"a covariance needs at least 2 samples, got {len(array)}")
    return array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], array.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; round-off negatives are clipped."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance_from_stats(mean1, cov1, mean2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) for two Gaussians."""
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    # S1 S2 is not symmetric, but it has the eigenvalues of the symmetric PSD matrix
    # sqrt(S1) S2 sqrt(S1), so Tr (S1 S2)^(1/2) is the sum of that matrix's root eigenvalues.
    # Two symmetric eigendecompositions are stable even for singular covariances (N < D),
    # where a general sqrtm returns complex round-off that has to be thrown away.
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    mean_term = float(np.sum((mean1 - mean2) ** 2))
    return float(mean_term + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def frechet_distance(features1, features2) -> float:
    """Fréchet distance between Gaussian fits of two feature sets [N1, D] and [N2, D]."""
    first, second = _as_features(features1, "first"), _as_features(features2, "second")
    if first.shape[1] != second.shape[1]:
        raise GankitError(f"feature sizes differ: {first.shape[1]} and {second.shape[1]}")
    return frechet_distance_from_stats(*gaussian_fit(first), *gaussian_fit(second))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The KID kernel k(x, y) = (x . y / d + 1)^3."""
    kernel = x @ y.T
    kernel /= x.shape[1]
    kernel += 1.0
    cube = kernel * kernel  # in place and by products: ** 3 goes through a slow pow()
    cube *= kernel
    return cube


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of two equal-size samples under the cubic polynomial kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(
    features1, features2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and std of the unbiased MMD^2 over random subsets (drawn without replacement).

    subset_size is reduced to the smaller set's size when fewer samples are given, so that
    every subset is a sample without replacement (the estimate stays unbiased, only noisier).
    """
    first, second = _as_features(features1, "first"), _as_features(features2, "second")
    if first.shape[1] != second.shape[1]:
        raise GankitError(f"feature sizes differ: {first.shape[1]} and {second.shape[1]}")
    size = min(subset_size, len(first), len(second))
    if size < 2:
        raise GankitError(f"KID needs at least 2 samples per side, got {len(first)} and {len(second)}")
    if num_subsets < 1:
        raise GankitError(f"KID needs at least one subset, got num_subsets={num_subsets}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(
                first[rng.choice(len(first), size, replace=False)],
                second[rng.choice(len(second), size, replace=False)],
            )
            for _ in range(num_subsets)
        ]
    )
    return float(values.mean()), float(values.std())


def kl_to_uniform(counts) -> float:
    """KL(p || uniform) in nats of a histogram (counts or probabilities); 0 log 0 counts as 0."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise GankitError("a histogram needs non-negative counts with a positive total")
    probabilities = counts / counts.sum()
    nonzero = probabilities[probabilities > 0]
    return float(np.sum(nonzero * np.log(nonzero * counts.size)))


__all__ = [
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_fit",
    "kernel_inception_distance",
    "kl_to_uniform",
    "mmd2_unbiased",
    "polynomial_kernel",
]
