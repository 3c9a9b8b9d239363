"""Latent interpolation: the path functions, the grid's latent layout, and `gankit interpolate` files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.checkpoint import export_generator, load_generator
from gankit.cli import main
from gankit.config import DataConfig, ModelConfig
from gankit.models import build_generator
from gankit.viz.grid import to_uint8
from gankit.viz.interpolate import (GIF_MIN_SIDE, interpolation_latents, latent_grid, lerp, loop_latents,
                                    seeded_latents, slerp)

Z_DIM = 8
RESOLUTION = 16


def export_tiny_generator(folder, source="fashion-mnist", arch="dcgan", resolution=RESOLUTION, channels=1):
    """A randomly initialised exported generator: enough to check which latents land where."""
    data = DataConfig(source=source, resolution=resolution, channels=channels)
    model = ModelConfig(arch=arch, z_dim=Z_DIM if arch == "dcgan" else 2, g_channels=8, d_channels=8)
    torch.manual_seed(0)
    generator = build_generator(model, data)
    export_generator(folder, generator, model.model_dump(mode="json"), data.model_dump(mode="json"), step=3)
    return folder


def angle_between(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.acos(max(-1.0, min(1.0, float(a.double() @ b.double() / (a.double().norm() * b.double().norm())))))


# ---- paths --------------------------------------------------------------------------------------

def test_slerp_endpoints_are_the_inputs():
    z = torch.randn(2, 3, 100, generator=torch.Generator().manual_seed(1))
    path = slerp(z[0], z[1], torch.tensor([0.0, 0.4, 1.0]))
    assert path.shape == (3, 3, 100)
    torch.testing.assert_close(path[:, 0], z[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(path[:, -1], z[1], rtol=0, atol=1e-6)


def test_slerp_midpoint_by_hand_is_on_the_great_circle():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    half = math.sqrt(0.5)
    torch.testing.assert_close(slerp(e1, e2, 0.5), torch.tensor([half, half, 0.0]))
    # A third of the way along a 90-degree arc is 30 degrees from e1; lerp would give (2/3, 1/3, 0).
    torch.testing.assert_close(slerp(e1, e2, 1 / 3), torch.tensor([math.sqrt(3) / 2, 0.5, 0.0]))
    torch.testing.assert_close(slerp(3 * e1, 3 * e2, 0.5), torch.tensor([3 * half, 3 * half, 0.0]))


def test_slerp_keeps_the_norm_and_moves_at_constant_angular_speed():
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(64, generator=g)
    z1 = torch.randn(64, generator=g)
    z1 = z1 * (z0.norm() / z1.norm())  # equal norms
    t = torch.linspace(0, 1, 9)
    path = slerp(z0, z1, t)
    torch.testing.assert_close(path.norm(dim=1), z0.norm().expand(9), rtol=1e-5, atol=0)
    total = angle_between(z0, z1)
    for ti, point in zip(t.tolist(), path):
        assert angle_between(z0, point) == pytest.approx(ti * total, abs=1e-5)
        assert angle_between(point, z1) == pytest.approx((1 - ti) * total, abs=1e-5)  # in the plane, not off it


def test_slerp_of_parallel_latents_falls_back_to_lerp():
    z0 = torch.tensor([1.0, 2.0, 3.0])
    path = slerp(z0, 2 * z0, torch.linspace(0, 1, 5))
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path, lerp(z0, 2 * z0, torch.linspace(0, 1, 5)))


def test_lerp_is_linear():
    g = torch.Generator().manual_seed(3)
    z0, z1 = torch.randn(2, 5, 16, generator=g)
    t = torch.linspace(0, 1, 7)
    path = lerp(z0, z1, t)
    assert path.shape == (5, 7, 16)
    torch.testing.assert_close(path[:, 0], z0)
    torch.testing.assert_close(path[:, -1], z1)
    torch.testing.assert_close(path[:, 3], (z0 + z1) / 2)
    steps = path[:, 1:] - path[:, :-1]
    torch.testing.assert_close(steps, ((z1 - z0) / 6).unsqueeze(1).expand_as(steps))


def test_latent_grid_corners_and_edges():
    g = torch.Generator().manual_seed(4)
    z0, z1 = torch.randn(2, 10, generator=g)
    k, half = 5, 5
    grid = latent_grid(z0, z1, k)
    assert grid.shape == (k, k, 10)
    torch.testing.assert_close(grid[0, 0], z0)
    torch.testing.assert_close(grid[-1, -1], z1)
    torch.testing.assert_close(grid[0, -1], torch.cat([z1[:half], z0[half:]]))  # top right: x done, y not
    torch.testing.assert_close(grid[-1, 0], torch.cat([z0[:half], z1[half:]]))
    # Top edge: the first half walks from z0 to z1, the second half stays at z0.
    torch.testing.assert_close(grid[0, :, :half], lerp(z0[:half], z1[:half], torch.linspace(0, 1, k)))
    torch.testing.assert_close(grid[0, :, half:], z0[half:].expand(k, half))
    # Left edge: the second half walks, the first half stays.
    torch.testing.assert_close(grid[:, 0, half:], lerp(z0[half:], z1[half:], torch.linspace(0, 1, k)))
    torch.testing.assert_close(grid[:, 0, :half], z0[:half].expand(k, half))
    # Along any row only x's half changes; along any column only y's half.
    assert torch.equal(grid[:, :, half:], grid[:, :1, half:].expand_as(grid[:, :, half:]))
    assert torch.equal(grid[:, :, :half], grid[:1, :, :half].expand_as(grid[:, :, :half]))


def test_latent_grid_with_odd_dimension_splits_at_floor_half():
    z0, z1 = torch.zeros(5), torch.ones(5)
    grid = latent_grid(z0, z1, 3)
    assert grid[0, -1].tolist() == [1, 1, 0, 0, 0]


def test_loop_latents_closes_on_itself():
    keys = seeded_latents((3, 6), seed=5)
    path = loop_latents(keys, frames_per_segment=4)
    assert path.shape == (12, 6)
    for i in range(3):
        torch.testing.assert_close(path[4 * i], keys[i])
    # The last frame is one step before the first key again, on the arc from keys[2] to keys[0].
    torch.testing.assert_close(path[-1], slerp(keys[2], keys[0], 0.75))


def test_interpolation_latents_come_from_the_seed():
    rows = interpolation_latents("slerp", 12, steps=6, pairs=3, seed=7)
    ends = seeded_latents((3, 2, 12), 7)
    assert rows.shape == (3, 6, 12)
    torch.testing.assert_close(rows[:, 0], ends[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(rows[:, -1], ends[:, 1], rtol=0, atol=1e-6)
    grid = interpolation_latents("grid", 12, steps=4, pairs=99, seed=7)
    corners = seeded_latents((2, 12), 7)
    torch.testing.assert_close(grid[0, 0], corners[0])
    torch.testing.assert_close(grid[-1, -1], corners[1])
    assert not torch.equal(interpolation_latents("lerp", 12, 6, 3, seed=8), interpolation_latents("lerp", 12, 6, 3, 7))


# ---- the command ---------------------------------------------------------------------------------

def cells(image: Image.Image, rows: int, columns: int, size: int, padding: int = 2) -> torch.Tensor:
    """Cut a saved grid back into its images [rows * columns, H, W] (grayscale)."""
    array = torch.from_numpy(np.array(image))
    out = []
    for r in range(rows):
        for c in range(columns):
            y, x = padding + r * (size + padding), padding + c * (size + padding)
            out.append(array[y:y + size, x:x + size])
    return torch.stack(out)


def expected_images(folder, latents: torch.Tensor) -> torch.Tensor:
    generator, _ = load_generator(folder)
    with torch.no_grad():
        return to_uint8(generator(latents))[:, 0]


@pytest.mark.parametrize("mode", ["lerp", "slerp"])
def test_rows_of_pairs(tmp_path, mode):
    export_tiny_generator(tmp_path)
    out = tmp_path / f"{mode}.png"
    assert main(["interpolate", str(tmp_path), "--mode", mode, "--steps", "5", "--pairs", "3", "--seed", "4",
                 "--out", str(out), "--device", "cpu"]) == 0
    image = Image.open(out)
    assert image.size == (5 * (RESOLUTION + 2) + 2, 3 * (RESOLUTION + 2) + 2)
    latents = interpolation_latents(mode, Z_DIM, 5, 3, seed=4).reshape(15, Z_DIM)
    got = cells(image, 3, 5, RESOLUTION).int()
    assert (got - expected_images(tmp_path, latents).int()).abs().max() <= 1  # batch-size rounding only


def test_grid_places_each_latent_in_its_cell(tmp_path):
    export_tiny_generator(tmp_path)
    out = tmp_path / "grid.png"
    assert main(["interpolate", str(tmp_path), "--mode", "grid", "--steps", "4", "--seed", "9",
                 "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (4 * (RESOLUTION + 2) + 2,) * 2
    got = cells(image, 4, 4, RESOLUTION).int()
    corners = seeded_latents((2, Z_DIM), 9)
    want = expected_images(tmp_path, latent_grid(corners[0], corners[1], 4).reshape(16, Z_DIM)).int()
    assert (got - want).abs().max() <= 1
    corner_images = expected_images(tmp_path, corners).int()
    assert (got[0] - corner_images[0]).abs().max() <= 1 and (got[15] - corner_images[1]).abs().max() <= 1


def test_gif_loops_through_the_keys(tmp_path):
    export_tiny_generator(tmp_path, resolution=32, channels=3)
    out = tmp_path / "loop.gif"
    assert main(["interpolate", str(tmp_path), "--steps", "3", "--pairs", "4", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 12
        assert gif.info.get("loop") == 0
        side = 32 * math.ceil(GIF_MIN_SIDE / 32)
        assert gif.size == (side, side)


def test_progressive_generator_at_an_early_stage(tmp_path):
    """A PGAN export mid-training (8x8 stage, fading in) samples at the data resolution like any other."""
    pytest.importorskip("gankit.models.pgan")
    data = DataConfig(source="fashion-mnist", resolution=32, channels=1)
    model = ModelConfig(arch="pgan", z_dim=Z_DIM, g_channels=8, d_channels=8)
    generator = build_generator(model, data)
    generator.set_progress(1, 0.5)
    export_generator(tmp_path, generator, model.model_dump(mode="json"), data.model_dump(mode="json"), step=3)
    out = tmp_path / "grid.png"
    assert main(["interpolate", str(tmp_path), "--mode", "grid", "--steps", "3", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (3 * (32 + 2) + 2,) * 2
    corners = seeded_latents((2, Z_DIM), 0)
    want = expected_images(tmp_path, latent_grid(corners[0], corners[1], 3).reshape(9, Z_DIM)).int()
    assert (cells(image, 3, 3, 32).int() - want).abs().max() <= 1


def test_toy_runs_are_refused(tmp_path, capsys):
    export_tiny_generator(tmp_path, source="toy-8gaussians", arch="mlp")
    assert main(["interpolate", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "2-D points" in err and "gankit sample" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.jpg"], ".png picture or a .gif"),
    (["--mode", "grid", "--out", "x.gif"], "still picture"),
    (["--steps", "1"], "--steps 1"),
    (["--pairs", "1", "--out", "x.gif"], "--pairs 2"),
])
def test_bad_options_are_user_errors(tmp_path, capsys, argv, message):
    export_tiny_generator(tmp_path)
    assert main(["interpolate", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_generator_is_a_user_error(tmp_path, capsys):
    assert main(["interpolate", str(tmp_path)]) == 2
    assert "generator.json not found" in capsys.readouterr().err
