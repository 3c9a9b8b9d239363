"""The toy mode-coverage metric on point sets whose answers are known by construction."""

import math

import pytest
import torch

from gankit.data.toy import mixture_modes, sample_toy
from gankit.errors import GankitError
from gankit.metrics.modes import mode_coverage, modes_metric
from gankit.metrics.sources import Samples

CENTRES, STD = mixture_modes("toy-8gaussians")


def around(centre: torch.Tensor, n: int, radius_in_std: float, seed: int = 0) -> torch.Tensor:
    """n points at exactly radius_in_std standard deviations from centre, at random angles."""
    angles = torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    return centre + radius_in_std * STD * torch.stack([angles.cos(), angles.sin()], 1)


def test_all_samples_on_one_mode():
    result = mode_coverage(around(CENTRES[3], 500, 1.0), CENTRES, STD)
    assert result == {"covered": 1, "total": 8, "high_quality": 1.0, "kl": pytest.approx(math.log(8))}


def test_samples_spread_evenly_over_all_modes():
    points = torch.cat([around(c, 50, 2.0, seed=i) for i, c in enumerate(CENTRES)])
    result = mode_coverage(points, CENTRES, STD)
    assert result["covered"] == 8 and result["high_quality"] == 1.0
    assert result["kl"] == pytest.approx(0.0, abs=1e-12)


def test_far_away_points_are_neither_high_quality_nor_covering():
    points = torch.full((100, 2), 10.0)
    assert mode_coverage(points, CENTRES, STD) == {"covered": 0, "total": 8, "high_quality": 0.0, "kl": None}


def test_three_standard_deviations_is_the_threshold():
    inside = around(CENTRES[0], 30, 2.95)
    outside = around(CENTRES[1], 10, 3.05)
    result = mode_coverage(torch.cat([inside, outside]), CENTRES, STD)
    # Only mode 0 is covered; the 10 points near mode 1 are too far to count for anything.
    assert result["covered"] == 1 and result["high_quality"] == pytest.approx(30 / 40)
    assert result["kl"] == pytest.approx(math.log(8))


def test_kl_is_over_the_high_quality_samples():
    points = torch.cat([around(CENTRES[0], 40, 1), around(CENTRES[1], 20, 1), around(CENTRES[2], 20, 1),
                        torch.full((20, 2), -9.0)])  # low-quality points do not enter the histogram
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    expected = float((p * (p * 8).log()).sum())
    result = mode_coverage(points, CENTRES, STD)
    assert result["covered"] == 3 and result["high_quality"] == pytest.approx(0.8)
    assert result["kl"] == pytest.approx(expected)


def test_samples_of_the_true_mixture():
    centres, std = mixture_modes("toy-25gaussians")
    points = sample_toy("toy-25gaussians", 2500, torch.Generator().manual_seed(0))
    result = modes_metric(["modes"], Samples(points, "test", "toy-25gaussians"), None, None)["modes"]
    assert result["covered"] == 25 and result["total"] == 25
    # A 2-D Gaussian lies within 3 std with probability 1 - exp(-9/2); the binomial std at N=2500 is 0.002.
    assert result["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert result["kl"] < 0.02


def test_modes_refuses_the_swiss_roll():
    points = sample_toy("toy-swissroll", 10, torch.Generator().manual_seed(0))
    with pytest.raises(GankitError, match="toy-8gaussians and toy-25gaussians"):
        modes_metric(["modes"], Samples(points, "test", "toy-swissroll"), None, None)
