"""Known answers for the feature-set distances in gankit.metrics.stats."""

import math

import numpy as np
import pytest

from gankit.errors import GankitError
from gankit.metrics import stats


def random_covariance(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(stats.frechet_distance(features, features)) < 1e-8


def test_frechet_distance_stays_finite_and_zero_for_singular_covariances():
    # Fewer samples than dimensions: both covariances are singular, the square root must stay real.
    features = np.random.default_rng(1).normal(size=(20, 64))
    # The ~44 zero eigenvalues come out as round-off (~1e-15) whose square roots add up to ~1e-6.
    total_variance = np.trace(np.cov(features, rowvar=False))
    assert abs(stats.frechet_distance(features, features)) < 1e-7 * total_variance


def test_frechet_distance_matches_the_closed_form_for_non_commuting_2d_covariances():
    # In 2-D, Tr sqrt(S1 S2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)): the eigenvalues of S1 S2
    # are real and positive, and (sqrt a + sqrt b)^2 = a + b + 2 sqrt(ab).
    mean1, mean2 = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    cov1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    cov2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    trace_sqrt = math.sqrt(np.trace(cov1 @ cov2) + 2 * math.sqrt(np.linalg.det(cov1) * np.linalg.det(cov2)))
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt
    assert stats.frechet_distance_from_stats(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_the_closed_form_for_scaled_covariances():
    # S2 = c S1 commutes with S1: Tr(S1 + c S1 - 2 sqrt(c) S1) = (1 - sqrt c)^2 Tr S1.
    rng = np.random.default_rng(2)
    cov = random_covariance(rng, 12)
    mean1, mean2 = rng.normal(size=12), rng.normal(size=12)
    expected = np.sum((mean1 - mean2) ** 2) + (1 - math.sqrt(4.0)) ** 2 * np.trace(cov)
    assert stats.frechet_distance_from_stats(mean1, cov, mean2, 4.0 * cov) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(3)
    dim = 4
    cov1, cov2 = np.diag([1.0, 2.0, 0.5, 1.5]), np.diag([2.0, 1.0, 0.5, 0.25])
    mean1, mean2 = np.zeros(dim), np.array([1.0, 0.0, -1.0, 0.5])
    first = rng.multivariate_normal(mean1, cov1, size=200_000)
    second = rng.multivariate_normal(mean2, cov2, size=200_000)
    # Diagonal covariances: the trace term is sum (sqrt a_i - sqrt b_i)^2.
    expected = np.sum((mean1 - mean2) ** 2) + np.sum((np.sqrt(np.diag(cov1)) - np.sqrt(np.diag(cov2))) ** 2)
    assert stats.frechet_distance(first, second) == pytest.approx(expected, abs=0.02)


def test_frechet_distance_refuses_mismatched_or_too_small_sets():
    with pytest.raises(GankitError, match="feature sizes differ"):
        stats.frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(GankitError, match="at least 2 samples"):
        stats.frechet_distance(np.zeros((1, 3)), np.zeros((10, 3)))


def test_mmd2_unbiased_matches_a_direct_double_sum():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(7, 3))

    def kernel(a, b):
        return (a @ b / 3 + 1) ** 3

    m = len(x)
    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    between = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    expected = within / (m * (m - 1)) - 2 * between / m**2
    assert stats.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_kid_is_near_zero_between_halves_of_one_set_and_positive_for_a_shifted_set():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(2000, 32))
    first, second = features[:1000], features[1000:]
    same, same_std = stats.kernel_inception_distance(first, second, num_subsets=20, subset_size=500)
    shifted, _ = stats.kernel_inception_distance(first, second + 0.5, num_subsets=20, subset_size=500)
    # Unbiased: the expectation is exactly 0 for one distribution; the subset mean is within noise
    # (subsets overlap, so the std of one subset's value bounds the mean's spread).
    assert abs(same) < 2 * same_std + 1e-3
    assert shifted > 50 * abs(same) and shifted > 0.05


def test_kid_reduces_the_subset_size_to_the_smaller_set():
    rng = np.random.default_rng(6)
    small, large = rng.normal(size=(30, 8)), rng.normal(size=(500, 8))
    value, _ = stats.kernel_inception_distance(small, large, num_subsets=5, subset_size=1000, seed=1)
    # With the whole small set in every subset, the same draws of the large set give the same value.
    draws = np.random.default_rng(1)
    expected = []
    for _ in range(5):
        small_part = small[draws.choice(30, 30, replace=False)]
        expected.append(stats.mmd2_unbiased(small_part, large[draws.choice(500, 30, replace=False)]))
    assert value == pytest.approx(np.mean(expected), rel=1e-12)
    with pytest.raises(GankitError, match="at least 2 samples per side"):
        stats.kernel_inception_distance(small[:1], large)


def test_kl_to_uniform_is_zero_for_uniform_and_log_k_for_one_hot():
    assert stats.kl_to_uniform(np.full(10, 37)) == pytest.approx(0.0, abs=1e-12)
    assert stats.kl_to_uniform(np.eye(10)[3] * 250) == pytest.approx(math.log(10), rel=1e-12)
    # Half the mass on each of two bins out of 10: log 5.
    assert stats.kl_to_uniform([5, 5, 0, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(math.log(5), rel=1e-12)
    with pytest.raises(GankitError):
        stats.kl_to_uniform(np.zeros(10))
