"""SWD: equal to the NumPy oracle, the pyramid against hand computations, known answers, the real-image
cache (size, hits, rebuilds), progress bars, bad input."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import numpy_reference
from gankit.errors import GankitError
from gankit.files import StorageError
from gankit.metrics import swd


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


def read_header(path):
    """(header dict, header bytes including the 8-byte length) of a safetensors file."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(length)), 8 + length


def counting_loader(images):
    """A zero-argument loader of `images` and the list that counts its calls."""
    calls = []

    def load():
        calls.append(1)
        return images

    return load, calls


@pytest.mark.parametrize("working_memory", [swd.DEFAULT_WORKING_MEMORY, 2**20])
def test_reference_cache_round_trip(tmp_path, working_memory):
    from safetensors import safe_open

    real = textured_images(8, 3, 32, seed=11)
    fake = textured_images(8, 3, 32, seed=12)
    path = tmp_path / "cache" / "swd_real.safetensors"
    load_real, calls = counting_loader(real)
    options = {"key": "demo:32px:8", "working_memory": working_memory, "scratch_dir": tmp_path}

    built = swd.real_descriptor_cache(load_real, path, **options)
    cached = swd.real_descriptor_cache(load_real, path, **options)
    assert len(calls) == 1  # the second call read the file without loading the data
    with safe_open(str(path), framework="pt") as f:  # a standard safetensors file of the images
        assert list(f.keys()) == ["images"]
        assert torch.equal(f.get_tensor("images"), real)
    # A hit recomputes the descriptors from the stored images: bit-identical to the first time.
    in_memory = swd.SWDReference.build(real).descriptors
    for level in range(2):
        assert torch.equal(torch.cat(list(cached.descriptors.chunks(level))), in_memory.tensors[level])
    expected = swd.sliced_wasserstein(real, fake)
    assert swd.sliced_wasserstein(built, fake, working_memory=working_memory, scratch_dir=tmp_path) == expected
    assert swd.sliced_wasserstein(cached, fake, working_memory=working_memory, scratch_dir=tmp_path) == expected

    swd.real_descriptor_cache(load_real, path, **{**options, "key": "other-data:32px:8"})
    swd.real_descriptor_cache(load_real, path, **{**options, "key": "other-data:32px:8"}, seed=3)
    assert len(calls) == 3  # a new key or seed rebuilds the cache
    assert sorted(p.name for p in path.parent.iterdir()) == ["swd_real.safetensors"]  # no temporary left


def test_cache_file_holds_the_images_not_the_descriptors(tmp_path):
    count, channels, size = 16, 3, 64
    real = textured_images(count, channels, size, seed=13)
    path = tmp_path / "swd_real.safetensors"
    swd.real_descriptor_cache(real, path, key="demo:64px:16")
    header, header_bytes = read_header(path)
    assert header["__metadata__"]["format"] == swd.CACHE_FORMAT
    assert path.stat().st_size == header_bytes + count * channels * size * size  # one byte per pixel
    assert header_bytes < 1024
    # The previous layout stored float32 descriptors: 128 per image and level, 49 x C values each.
    levels = len(swd.level_resolutions(size))
    old_layout_bytes = count * 128 * levels * channels * 49 * 4
    # 18x smaller here (3 levels of 64 px images); 6.1x at the paper's scale (4 levels of 128 px, one
    # byte per pixel against 128 x 49 x 4 levels x 4 bytes per 16,384 pixels): 0.75 GiB against 4.6 GiB.
    assert old_layout_bytes / path.stat().st_size > 18


def write_old_layout_cache(path, real, key):
    """A cache file as the previous version wrote it: float32 descriptors and statistics per level."""
    from safetensors.torch import save_file

    descriptors = swd.SWDReference.build(real).descriptors
    tensors = {}
    for resolution, level_tensor, stats in zip(descriptors.resolutions, descriptors.tensors, descriptors.stats):
        tensors[f"descriptors_{resolution}"] = level_tensor
        tensors[f"mean_{resolution}"] = torch.from_numpy(stats.mean)
        tensors[f"std_{resolution}"] = torch.from_numpy(stats.std)
    metadata = {"format": "gankit-swd-descriptors-v1", "image_shape": json.dumps(list(real.shape)), "key": key,
                "seed": "0", "descriptors_per_image": "128", "directions": "128", "repeats": "4",
                "min_resolution": "16"}
    save_file(tensors, str(path), metadata=metadata)


def truncate(path):
    os.truncate(path, path.stat().st_size - 100)


def flip_an_image_byte(path):
    _, header_bytes = read_header(path)
    with open(path, "r+b") as f:
        f.seek(header_bytes + 1234)
        value = f.read(1)[0]
        f.seek(header_bytes + 1234)
        f.write(bytes([value ^ 0x40]))


def overwrite_with_noise(path):
    path.write_bytes(os.urandom(5000))


@pytest.mark.parametrize("damage", ["old layout", truncate, flip_an_image_byte, overwrite_with_noise])
def test_stale_or_damaged_cache_is_rebuilt(tmp_path, damage):
    real = textured_images(8, 3, 32, seed=14)
    fake = textured_images(8, 3, 32, seed=15)
    path = tmp_path / "swd_real.safetensors"
    load_real, calls = counting_loader(real)
    if damage == "old layout":
        write_old_layout_cache(path, real, key="demo")
    else:
        swd.real_descriptor_cache(load_real, path, key="demo")
        damage(path)
        calls.clear()
    with pytest.raises(GankitError, match="delete it"):
        swd.SWDReference.load(path, key="demo")
    reference = swd.real_descriptor_cache(load_real, path, key="demo")
    assert len(calls) == 1  # rebuilt from the real images
    assert read_header(path)[0]["__metadata__"]["format"] == swd.CACHE_FORMAT
    assert swd.sliced_wasserstein(reference, fake) == swd.sliced_wasserstein(real, fake)
    swd.real_descriptor_cache(load_real, path, key="demo")
    assert len(calls) == 1  # and the rebuilt file is a hit


def test_a_failed_cache_write_leaves_the_previous_cache(tmp_path, monkeypatch):
    real = textured_images(8, 3, 32, seed=16)
    path = tmp_path / "swd_real.safetensors"
    swd.real_descriptor_cache(real, path, key="first")
    good = path.read_bytes()

    def write_half_then_fail(target, images, metadata):
        Path(target).write_bytes(good[: len(good) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(swd, "_write_image_cache", write_half_then_fail)
    with pytest.raises(StorageError, match="No space left on device"):
        swd.real_descriptor_cache(real, path, key="second")
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["swd_real.safetensors"]


def test_a_full_scratch_disk_is_one_clear_error(tmp_path, monkeypatch):
    real = textured_images(8, 3, 32, seed=17)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(swd.os, "pwrite", disk_full)
    # 8 images x 128 descriptors x 147 floats x 2 levels = 1.1 MiB, more than half of 1 MiB: a file.
    with pytest.raises(StorageError, match=r"No space left on device.*needs 1 MiB there") as raised:
        swd.SWDReference.build(real, working_memory=2**20, scratch_dir=tmp_path)
    assert raised.value.exit_code == 74
    assert list(tmp_path.iterdir()) == []


class RecordingBar:
    """Stands in for gankit.metrics.progress.progress_bar: records what a bar was told."""

    def __init__(self, total, desc, unit, enabled):
        self.total, self.desc, self.enabled, self.count, self.postfixes = total, desc, enabled, 0, []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def update(self, count):
        self.count += count

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)


def test_progress_bars_count_images_and_directions(monkeypatch):
    real = textured_images(8, 1, 32, seed=18)
    fake = textured_images(8, 1, 32, seed=19)
    bars = []
    monkeypatch.setattr(swd, "progress_bar", lambda *args: bars.append(RecordingBar(*args)) or bars[-1])
    swd.sliced_wasserstein(real, fake, progress=True, working_memory=2**20)  # 4 direction slices per level
    assert [(bar.desc, bar.total, bar.count) for bar in bars] == [
        ("SWD descriptors, real", 8, 8),
        ("SWD descriptors, generated", 8, 8),
        ("SWD projections and sorts", 2 * 4 * 128, 2 * 4 * 128),  # levels x repeats x directions
    ]
    assert bars[-1].postfixes == ["32 px", "16 px"]
    assert {bar.enabled for bar in bars} == {True}


def test_progress_bars_go_to_stderr_only_when_asked_or_on_a_terminal(capsys):
    real = textured_images(8, 1, 32, seed=18)
    fake = textured_images(8, 1, 32, seed=19)
    expected = swd.sliced_wasserstein(real, fake)  # stderr is captured, not a terminal: no bars
    assert capsys.readouterr().err == ""
    assert swd.sliced_wasserstein(real, fake, progress=True) == expected
    shown = capsys.readouterr().err
    assert "SWD descriptors, real: " in shown and "SWD projections and sorts: " in shown


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
