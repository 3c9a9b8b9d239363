"""MS-SSIM: equal to the NumPy oracle, known answers, pairing, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import numpy_reference
from gankit.errors import GankitError
from gankit.metrics import ms_ssim


def image_pairs(count: int, channels: int, size: int, noise: float, seed: int):
    """Pairs of uint8 images: smooth images and the same images plus uniform noise of amplitude `noise`."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, max(1, size // 4), max(1, size // 4), generator=generator)
    base = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255
    noisy = base + noise * (torch.rand(base.shape, generator=generator) - 0.5)
    to_uint8 = lambda x: x.round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    return to_uint8(base), to_uint8(noisy)


@pytest.mark.parametrize(
    "channels,size",
    # 28 and 24 reach odd sides at coarse scales; 8 shrinks the window from the first scale.
    [(3, 32), (1, 32), (3, 64), (1, 28), (3, 24), (1, 8)],
)
def test_equals_numpy_oracle(channels, size):
    a, b = image_pairs(12, channels, size, noise=80.0, seed=size + channels)
    ours = ms_ssim.ms_ssim(a, b)
    oracle = torch.from_numpy(numpy_reference.ms_ssim(a.numpy(), b.numpy()))
    assert ours.shape == (12,)
    assert 0.05 < float(ours.mean()) < 0.99  # informative values, not clipped to 0 or saturated at 1
    assert torch.allclose(ours, oracle, rtol=1e-4, atol=0)


def test_identical_pairs_score_one_and_noise_lowers_the_score():
    a, _ = image_pairs(6, 3, 64, noise=0.0, seed=1)
    assert torch.allclose(ms_ssim.ms_ssim(a, a), torch.ones(6, dtype=torch.float64), atol=1e-12)
    scores = [float(ms_ssim.ms_ssim(*image_pairs(6, 3, 64, noise, seed=1)).mean()) for noise in (20, 80, 240)]
    assert scores[0] > scores[1] > scores[2]


@pytest.mark.parametrize("size", [32, 64])
def test_independent_uniform_noise_scores_near_zero(size):
    generator = torch.Generator().manual_seed(size)
    images = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8, generator=generator)
    assert ms_ssim.ms_ssim_pairs(images, num_pairs=32) < 0.1


def test_anticorrelated_pairs_are_clipped_to_zero_like_the_paper():
    a, _ = image_pairs(4, 3, 32, noise=0.0, seed=2)
    inverted = 255 - a
    assert torch.equal(ms_ssim.ms_ssim(a, inverted), torch.zeros(4, dtype=torch.float64))
    assert numpy_reference.ms_ssim(a.numpy(), inverted.numpy()).tolist() == [0.0] * 4


def test_pairs_are_consecutive_images_and_num_pairs_limits_them():
    a, b = image_pairs(4, 1, 32, noise=100.0, seed=3)
    identical_pairs = torch.stack([a, a], dim=1).flatten(0, 1)  # a0 a0 a1 a1 ...
    assert ms_ssim.ms_ssim_pairs(identical_pairs, num_pairs=4) == pytest.approx(1.0)
    mixed = torch.stack([a, b], dim=1).flatten(0, 1)  # a0 b0 a1 b1 ...
    expected = ms_ssim.ms_ssim(a, b)
    assert ms_ssim.ms_ssim_pairs(mixed, num_pairs=None) == pytest.approx(float(expected.mean()))
    assert ms_ssim.ms_ssim_pairs(mixed, num_pairs=2) == pytest.approx(float(expected[:2].mean()))
    assert numpy_reference.ms_ssim_pairs(mixed.numpy(), num_pairs=4, batch_pairs=3) == pytest.approx(
        float(expected.mean()), rel=1e-4
    )


def test_window_shrinks_with_sigma_for_small_images():
    window = ms_ssim.gaussian_window_1d(4, 4 * 1.5 / 11)
    two_d = numpy_reference.fspecial_gauss(4, 4 * 1.5 / 11)
    assert torch.allclose(torch.outer(window, window), torch.from_numpy(two_d), atol=1e-15)
    assert torch.allclose(window, window.flip(0))  # half-pixel offsets keep even windows symmetric


def test_bad_inputs_raise_clear_errors():
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(GankitError, match="needs 20 images, got 10"):
        ms_ssim.ms_ssim_pairs(images, num_pairs=10)
    with pytest.raises(GankitError, match="uint8"):
        ms_ssim.ms_ssim_pairs(images.float(), num_pairs=2)
    with pytest.raises(GankitError, match="one shape"):
        ms_ssim.ms_ssim(images, torch.zeros(10, 3, 64, 64, dtype=torch.uint8))
