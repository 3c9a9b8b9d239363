import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import load_generator

pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from gankit.cli import main

    run = tmp_path_factory.mktemp("runs") / "img"
    assert main(tiny_train_args(run, steps=4)) == 0
    return run


def test_sample_grid_is_seeded(image_run, run_cli, tmp_path):
    paths = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2)):
        code, out, _ = run_cli("sample", image_run, "--num", 9, "--seed", seed, "--out", path)
        assert code == 0 and str(path) in out
    a, b, c = (np.asarray(Image.open(p)) for p in paths)
    assert a.shape == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # 3x3 grid of 16 px with 2 px padding
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sample_out_dir_matches_generator(image_run, run_cli, tmp_path):
    code, _, _ = run_cli("sample", image_run, "--num", 5, "--seed", 7, "--out-dir", tmp_path / "imgs")
    files = sorted((tmp_path / "imgs").iterdir())
    assert code == 0 and len(files) == 5
    generator, meta = load_generator(image_run)
    z = torch.randn(5, meta["model"].z_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = (generator(z) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    saved = np.asarray(Image.open(files[3]))
    assert np.array_equal(saved, expected[3, 0].numpy())


def test_no_ema_uses_raw_generator(image_run, run_cli, tmp_path):
    run_cli("sample", image_run, "--num", 4, "--out", tmp_path / "ema.png")
    run_cli("sample", image_run, "--num", 4, "--out", tmp_path / "raw.png", "--no-ema")
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "ema.png")), np.asarray(Image.open(tmp_path / "raw.png")))


def test_export_writes_a_standalone_generator(image_run, run_cli, tmp_path):
    code, out, _ = run_cli("export", image_run, "--out", tmp_path / "export")
    assert code == 0
    meta = json.loads((tmp_path / "export" / "generator.json").read_text())
    assert meta["model"]["arch"] == "dcgan" and meta["data"]["resolution"] == 16 and meta["step"] == 4
    code, _, _ = run_cli("sample", tmp_path / "export" / "generator.safetensors", "--num", 4, "--out", tmp_path / "x.png")
    assert code == 0 and (tmp_path / "x.png").is_file()


def test_toy_sample_points_and_plot(tmp_path, run_cli):
    run = tmp_path / "toy"
    assert run_cli("train", "gan-8gaussians", "--out", run, "--set", "train.steps=2", "--set", "model.g_channels=8",
                   "--set", "model.d_channels=8")[0] == 0
    code, _, _ = run_cli("sample", run, "--num", 100, "--out", tmp_path / "points.npy")
    points = np.load(tmp_path / "points.npy")
    assert code == 0 and points.shape == (100, 2) and np.isfinite(points).all()
    assert run_cli("sample", run, "--num", 100, "--out", tmp_path / "plot.png")[0] == 0
    assert Image.open(tmp_path / "plot.png").size[0] > 100
    code, _, err = run_cli("sample", run, "--out-dir", tmp_path / "d")
    assert code == 2 and "toy" in err


def test_sample_errors(tmp_path, run_cli):
    code, _, err = run_cli("sample", tmp_path)
    assert code == 2 and "generator.json" in err
    code, _, err = run_cli("sample", tmp_path / "x.txt")
    assert code == 2 and "neither a run folder" in err


@pytest.mark.parametrize("count, channels, nrow, padding", [(7, 1, 3, 2), (16, 3, 4, 2), (5, 3, 8, 2), (1, 1, 1, 0),
                                                             (3, 1, 1, 0)])
def test_grids_are_laid_out_as_torchvisions_make_grid(count, channels, nrow, padding):
    """gankit.viz.grid.tile replaces torchvision's make_grid (whose import costs seconds): the same pixels."""
    from torchvision.utils import make_grid

    from gankit.viz.grid import tile

    images = torch.randint(1, 256, (count, channels, 5, 6), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(count))
    expected = make_grid(images, nrow=nrow, padding=padding, pad_value=0)
    assert torch.equal(tile(images, nrow, padding), expected[:channels])  # make_grid makes grey images RGB


def test_training_does_not_import_torchvision():
    """Start-up time: the training and sampling paths must not pull torchvision (and torch._dynamo with it)."""
    import subprocess
    import sys

    code = ("import sys, gankit.cli, gankit.training.loop, gankit.sampling; "
            "print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
