"""SWD: equal to the NumPy oracle, the pyramid against hand computations, known answers, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gankit.errors import GankitError
from gankit.metrics import numpy_reference, swd


def textured_images(count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images with structure at several scales (smoothed noise plus a little pixel noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, size // 4, size // 4, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noisy = 0.8 * smooth + 0.2 * torch.rand(count, channels, size, size, generator=generator)
    return (noisy * 255).round().clamp(0, 255).to(torch.uint8)


def box_blur(images: torch.Tensor, width: int) -> torch.Tensor:
    blurred = F.avg_pool2d(images.float(), width, stride=1, padding=width // 2, count_include_pad=False)
    return blurred.round().to(torch.uint8)


@pytest.mark.parametrize("count,channels,size", [(16, 3, 32), (8, 1, 64)])
def test_equals_numpy_oracle(count, channels, size):
    real = textured_images(count, channels, size, seed=1)
    fake = box_blur(textured_images(count, channels, size, seed=2), 3)
    ours = swd.sliced_wasserstein(real, fake, seed=7)
    oracle = numpy_reference.sliced_wasserstein(real.numpy(), fake.numpy(), seed=7)
    assert list(ours) == [str(size >> level) for level in range(len(ours) - 1)] + ["avg"]
    assert min(ours.values()) > 1.0  # a real distance, not a degenerate 0
    for name in ours:
        assert ours[name] == pytest.approx(oracle[name], rel=1e-4), name


def test_descriptor_files_and_direction_slices_give_the_same_value(tmp_path):
    real = textured_images(8, 3, 32, seed=3)
    fake = textured_images(8, 3, 32, seed=4)
    held = swd.sliced_wasserstein(real, fake)
    # 1 MiB cannot hold the descriptors (1.2 MB per set), so they go to temporary files and stream
    # through 4 slices of 128 directions.
    streamed = swd.sliced_wasserstein(real, fake, working_memory=2**20, scratch_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the temporary descriptor files are gone
    for name in held:
        assert streamed[name] == pytest.approx(held[name], rel=1e-6)


def test_a_set_against_itself_is_zero_and_blur_increases_the_distance():
    real = textured_images(16, 3, 32, seed=5)
    same_distribution = textured_images(16, 3, 32, seed=6)
    assert all(value == 0.0 for value in swd.sliced_wasserstein(real, real).values())
    baseline = swd.sliced_wasserstein(real, same_distribution)["32"]
    mild = swd.sliced_wasserstein(real, box_blur(same_distribution, 3))["32"]
    strong = swd.sliced_wasserstein(real, box_blur(same_distribution, 5))["32"]
    # baseline is the finite-sample distance between two draws of one distribution
    assert baseline < mild < strong
    assert mild > 1.4 * baseline


def test_pyramid_steps_match_hand_computed_impulse_responses():
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[0, 0, 0, 0] = 1.0
    down = swd.pyramid_down(impulse)[0, 0]
    # Mirror padding never folds a corner pixel onto itself, so only the direct taps reach it.
    expected_down = torch.zeros(4, 4)
    expected_down[:2, :2] = torch.tensor([[36.0, 6.0], [6.0, 1.0]]) / 256
    assert torch.equal(down, expected_down)

    small = torch.zeros(1, 1, 4, 4)
    small[0, 0, 0, 0] = 1.0
    up = swd.pyramid_up(small)[0, 0]
    per_axis = torch.tensor([6.0, 4.0, 1.0, 0, 0, 0, 0, 0]) / 8  # zero-inserted impulse at 0, blurred
    assert torch.equal(up, torch.outer(per_axis, per_axis))

    # At the far edge the zero-inserted signal z (z[6] = 1) mirrors z[8] onto z[6]: outputs 6 and 7
    # get a second tap (6 + 1 and 4 + 4).
    small = torch.zeros(1, 1, 4, 4)
    small[0, 0, 3, 3] = 1.0
    up = swd.pyramid_up(small)[0, 0]
    per_axis = torch.tensor([0, 0, 0, 0, 1.0, 4.0, 7.0, 8.0]) / 8
    assert torch.equal(up, torch.outer(per_axis, per_axis))


def test_pyramid_equals_direct_convolution_and_reconstructs_the_image():
    images = textured_images(4, 3, 64, seed=10)
    ours = swd.laplacian_pyramid(images, 3)
    direct = numpy_reference.laplacian_pyramid(images.numpy(), 3)
    assert [tuple(level.shape[-2:]) for level in ours] == [(64, 64), (32, 32), (16, 16)]
    for level, reference in zip(ours, direct):
        assert torch.allclose(level, torch.from_numpy(reference), atol=1e-4)
    assert torch.equal(ours[0], torch.from_numpy(direct[0]))  # level 0 is exact in float32
    assert torch.allclose(swd.reconstruct_from_pyramid(ours), images.float(), atol=1e-3)
    assert ours[0].abs().mean() > 1.0  # the band-pass level carries detail


def test_reference_cache_round_trip(tmp_path):
    from safetensors import safe_open

    real = textured_images(8, 3, 32, seed=11)
    fake = textured_images(8, 3, 32, seed=12)
    path = tmp_path / "swd_real.safetensors"
    calls = []

    def load_real():
        calls.append(1)
        return real

    built = swd.real_descriptor_cache(load_real, path, key="demo:32px:8")
    cached = swd.real_descriptor_cache(load_real, path, key="demo:32px:8")
    assert len(calls) == 1  # the second call read the file without loading the data
    in_memory = swd.SWDReference.build(real).descriptors
    assert in_memory.tensors is not None and built.descriptors.path is not None
    with safe_open(str(path), framework="pt") as f:  # a standard safetensors file
        assert torch.equal(f.get_tensor("descriptors_32"), in_memory.tensors[0])
        assert torch.equal(f.get_tensor("descriptors_16"), in_memory.tensors[1])
    expected = swd.sliced_wasserstein(real, fake)
    assert swd.sliced_wasserstein(built, fake) == expected
    assert swd.sliced_wasserstein(cached, fake) == expected

    swd.real_descriptor_cache(load_real, path, key="other-data:32px:8")
    swd.real_descriptor_cache(load_real, path, key="other-data:32px:8", seed=3)
    assert len(calls) == 3  # a new key or seed rebuilds the cache


@pytest.mark.parametrize(
    "real_shape,fake_shape,message",
    [
        ((4, 3, 8, 8), (4, 3, 8, 8), "at least 16x16"),
        ((4, 3, 32, 32), (4, 1, 32, 32), "same size and channel count"),
        ((4, 3, 32, 32), (4, 3, 64, 64), "same size and channel count"),
        ((4, 3, 32, 32), (3, 3, 32, 32), "equal size"),
        ((1, 3, 32, 32), (1, 3, 32, 32), "at least 2"),
        ((4, 3, 66, 66), (4, 3, 66, 66), "divisible by 4"),
        ((4, 3, 32, 16), (4, 3, 32, 16), "square"),
    ],
)
def test_bad_inputs_raise_clear_errors(real_shape, fake_shape, message):
    real = torch.zeros(real_shape, dtype=torch.uint8)
    fake = torch.zeros(fake_shape, dtype=torch.uint8)
    with pytest.raises(GankitError, match=message):
        swd.sliced_wasserstein(real, fake)


def test_float_images_are_refused():
    with pytest.raises(GankitError, match="uint8"):
        swd.sliced_wasserstein(torch.zeros(4, 3, 32, 32), torch.zeros(4, 3, 32, 32))
