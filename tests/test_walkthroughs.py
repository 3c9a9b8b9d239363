"""The command sequences of docs/walkthroughs/, run on tiny fixtures (tests/fixtures.py): one test per page.

Each test runs the page's commands in order through the CLI, with tiny overrides (16-32 px, 8 channels, a
few steps), and checks what each command is said to produce."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion_mnist
from fixtures import make_celeba, make_image_folder, make_lsun_lmdb, make_mnist_idx
from gankit.checkpoint import list_checkpoints, load_generator, load_training_state
from gankit.config import load as load_config
from gankit.data import load_images
from gankit.data.idx import load_idx_images
from gankit.data.packed import MANIFEST_FILE, PREVIEW_FILE
from gankit.sampling import generate
from gankit.viz.grid import to_uint8
from gankit.sampling import render
from gankit.viz.interpolate import interpolation_latents

PACKED_HEADER_BYTES = 64
TINY = ["model.g_channels=8", "model.d_channels=8", "model.z_dim=16", "train.batch_size=4", "train.log_every=1",
        "train.sample_every=3", "train.checkpoint_every=3", "train.grid_size=16"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def read_stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def grid_size(count: int, resolution: int, padding: int = 2) -> int:
    """Side of a square sample grid of `count` images, as gankit.viz.grid lays it out."""
    columns = math.ceil(math.sqrt(count))
    return columns * (resolution + padding) + padding


def grid_tiles(path: Path, resolution: int, columns: int) -> np.ndarray:
    """The images of a grid PNG as uint8 [N, H, W, C], in row order."""
    array = np.asarray(Image.open(path).convert("RGB"))
    step = resolution + 2
    rows = (array.shape[0] - 2) // step
    return np.stack([array[2 + r * step: 2 + r * step + resolution, 2 + c * step: 2 + c * step + resolution]
                     for r in range(rows) for c in range(columns)])


def assert_packed(dest: Path, count: int, resolution: int, channels: int = 3, crop: str | None = None) -> None:
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert (manifest["count"], manifest["resolution"], manifest["channels"]) == (count, resolution, channels)
    if crop:
        assert manifest["source"]["crop"] == crop
    assert (dest / "images.u8").stat().st_size == PACKED_HEADER_BYTES + count * channels * resolution**2
    assert Image.open(dest / PREVIEW_FILE).format == "PNG"  # the first images, to look at before training


def assert_trained(run: Path, steps: int, images_per_step: int) -> list[dict]:
    """The run made `steps` generator steps, each after `images_per_step` real images (n_critic x batch)."""
    stats = read_stats(run)
    assert [s["step"] for s in stats] == list(range(1, steps + 1))
    assert stats[-1]["images_seen"] == steps * images_per_step
    assert all(math.isfinite(s["d_loss"]) and math.isfinite(s["g_loss"]) for s in stats)
    assert list_checkpoints(run)[-1].name == f"step_{steps:06d}.pt"
    assert (run / "generator.safetensors").is_file() and (run / "generator.json").is_file()
    return stats


# ---- 1. DCGAN on CelebA (MMGeneration-style) -------------------------------------------------------

CELEBA_DCGAN = ["data.source=packed", "data.resolution=16", *TINY, "train.steps=3"]


def test_dcgan_celeba(tmp_path, run_cli):
    raw = make_celeba(tmp_path / "raw", count=12)
    code, out, err = run_cli("prepare", "celeba", raw / "img_align_celeba", tmp_path / "celeba-64", "--size", 16)
    assert code == 0, err
    assert_packed(tmp_path / "celeba-64", 12, 16, crop="pgan")  # MMGeneration's CelebA-Cropped box
    assert "--set data.source=packed" in out  # prepare prints the overrides to train on it

    run = tmp_path / "runs" / "dcgan-celeba"
    code, _, err = run_cli("train", "dcgan-celeba-64", "--out", run,
                           *sets(f"data.path={tmp_path / 'celeba-64'}", *CELEBA_DCGAN))
    assert code == 0, err
    assert_trained(run, steps=3, images_per_step=4)
    assert Image.open(run / "samples" / "step_000003.png").size == (grid_size(16, 16),) * 2

    code, out, err = run_cli("sample", run, "--num", 64, "--seed", 1, "--out", tmp_path / "celeba-samples.png")
    assert code == 0, err
    grid = Image.open(tmp_path / "celeba-samples.png")
    assert grid.mode == "RGB" and grid.size == (grid_size(64, 16),) * 2
    code, _, err = run_cli("sample", run, "--num", 8, "--out-dir", tmp_path / "faces")
    assert code == 0, err
    files = sorted((tmp_path / "faces").iterdir())
    assert len(files) == 8 and all(Image.open(f).size == (16, 16) for f in files)

    # SWD has a single pyramid level at 16 px (64, 32 and 16 at full size).
    code, _, err = run_cli("eval", run, "--metrics", "swd,ms_ssim", "--num-samples", 12,
                           "--out", tmp_path / "metrics.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["swd"]) == {"16", "avg"} and metrics["swd"]["avg"] == metrics["swd"]["16"] > 0
    assert math.isfinite(metrics["ms_ssim"]) and metrics["samples"]["ms_ssim"] == {"fake": 12, "real": 12}


def _torchrun_argv() -> list[str]:
    # `torchrun` is this module run as a script; --standalone picks a free port (parallel test runs).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gankit"]


def test_dcgan_celeba_under_torchrun(tmp_path, run_cli):
    raw = make_celeba(tmp_path / "raw", count=12)
    assert run_cli("prepare", "celeba", raw, tmp_path / "celeba-64", "--size", 16)[0] == 0
    run = tmp_path / "runs" / "dcgan-celeba-ddp"
    argv = [*_torchrun_argv(), "train", "dcgan-celeba-64", "--out", str(run),
            *sets(f"data.path={tmp_path / 'celeba-64'}", *CELEBA_DCGAN)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # train.batch_size is the global batch: two ranks of 2 images make 4 images per step.
    assert_trained(run, steps=3, images_per_step=4)
    state = load_training_state(list_checkpoints(run)[-1])
    assert state["step"] == 3 and state["images_seen"] == 12
    assert "module." not in "".join(state["G"])  # saved unwrapped: the checkpoint loads without DDP
    assert run_cli("sample", run, "--num", 4, "--out", tmp_path / "ddp.png")[0] == 0


# ---- 2. The Paddle tutorial's four objectives on Fashion-MNIST (and MNIST) -------------------------

# (preset, extra settings, discriminator steps per generator step, whether stats log the penalty)
OBJECTIVES = {
    "gan": ("dcgan-fashion-mnist", ["model.g_upsample=nearest", "loss.sigmoid_output=true", "train.n_critic=2",
                                    "model.conditioning=none", "train.lr_schedule=constant"], 2),
    "lsgan": ("lsgan-fashion-mnist", [], 1),
    "wgan": ("wgan-fashion-mnist", [], 5),
    "wgan-gp": ("wgangp-fashion-mnist", [], 5),
}
FMNIST_TINY = ["data.resolution=16", "data.max_images=64", *TINY, "train.steps=3"]


@needs_fashion_mnist
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_paddle_objectives(tmp_path, run_cli, objective):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    preset, extra, n_critic = OBJECTIVES[objective]
    run = tmp_path / "runs" / objective
    code, _, err = run_cli("train", preset, "--out", run, *sets(*FMNIST_TINY, *extra))
    assert code == 0, err
    stats = assert_trained(run, steps=3, images_per_step=n_critic * 4)
    config = load_config(str(run / "config.yaml"))
    assert config.train.n_critic == n_critic

    # TensorBoard holds the same curves as stats.jsonl, one point per logged step.
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = events.Tags()
    curves = ["train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"] + (["train/gp"] if objective == "wgan-gp"
                                                                                  else [])
    for tag in curves:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    last_d_loss = events.Scalars("train/d_loss")[-1].value
    assert last_d_loss == pytest.approx(stats[-1]["d_loss"], rel=1e-6)
    assert "samples" in tags["images"]

    state = load_training_state(list_checkpoints(run)[-1])
    if objective == "wgan":  # every critic weight clipped to [-clip, clip] after each update
        weights = [v for k, v in state["D"].items() if k.endswith("weight")]
        assert max(w.abs().max().item() for w in weights) <= config.loss.clip + 1e-9
    if objective == "gan":  # nearest-neighbour upsampling + convolution: no transposed convolution in G
        generator, meta = load_generator(run)
        assert meta["model"].g_upsample == "nearest"
        layers = [type(m) for m in generator.modules()]
        # 4 -> 8 -> 16 px by upsampling; the one transposed convolution left projects z to 4x4.
        transposed = [m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
        assert layers.count(torch.nn.Upsample) == 2 and len(transposed) == 1

    code, _, err = run_cli("sample", run, "--num", 16, "--out", tmp_path / f"{objective}.png")
    assert code == 0, err
    assert Image.open(tmp_path / f"{objective}.png").size == (grid_size(16, 16),) * 2


def test_paddle_on_mnist_files(tmp_path, run_cli):
    folder = make_mnist_idx(tmp_path / "mnist", count=40)
    run = tmp_path / "runs" / "mnist"
    code, _, err = run_cli("train", "dcgan-fashion-mnist", "--out", run,
                           *sets("data.source=mnist", f"data.path={folder}", *FMNIST_TINY))
    assert code == 0, err
    assert_trained(run, steps=3, images_per_step=4)
    # The run read the IDX files given: its data section loads exactly the 40 fixture digits.
    config = load_config(str(run / "config.yaml"))
    images = load_images(config.data)
    assert images.shape == (40, 1, 16, 16) and config.data.source == "mnist"
    code, _, err = run_cli("train", "dcgan-fashion-mnist", "--out", tmp_path / "nothing",
                           *sets("data.source=mnist", f"data.path={tmp_path}", *FMNIST_TINY))
    assert code == 2 and "holds no mnist train IDX files" in err


# ---- 3. DCGAN on LSUN bedrooms -----------------------------------------------------------------------

def test_dcgan_lsun_bedroom(tmp_path, run_cli):
    lmdb_dir = make_lsun_lmdb(tmp_path / "bedroom_train_lmdb", count=10)
    code, _, err = run_cli("prepare", "lsun", lmdb_dir, tmp_path / "bedroom-64", "--size", 16, "--limit", 8)
    assert code == 0, err
    assert_packed(tmp_path / "bedroom-64", 8, 16)

    run = tmp_path / "runs" / "bedroom"
    code, _, err = run_cli("train", "dcgan-lsun-bedroom-64", "--out", run,
                           *sets("data.source=packed", f"data.path={tmp_path / 'bedroom-64'}", "data.resolution=16",
                                 *TINY, "train.steps=3"))
    assert code == 0, err
    assert_trained(run, steps=3, images_per_step=4)

    # The same LMDB as a training source, decoded at every start instead of once: the same pixels.
    direct = load_images(load_config("dcgan-lsun-bedroom-64", ["data.source=lmdb", f"data.path={lmdb_dir}",
                                                               "data.resolution=16", "data.max_images=8"]).data)
    packed = load_images(load_config(str(run / "config.yaml")).data)
    assert torch.equal(direct, packed)

    code, _, err = run_cli("sample", run, "--num", 16, "--out", tmp_path / "bedrooms.png")
    assert code == 0, err
    assert Image.open(tmp_path / "bedrooms.png").size == (grid_size(16, 16),) * 2


# ---- 4. WGAN-GP on an anime-face folder ----------------------------------------------------------------

def test_wgangp_anime_folder(tmp_path, run_cli):
    faces = make_image_folder(tmp_path / "anime-faces", count=12, size=40)
    run = tmp_path / "runs" / "anime"
    code, _, err = run_cli("train", "wgangp-anime-64", "--out", run,
                           *sets(f"data.path={faces}", "data.resolution=16", *TINY, "train.steps=3"))
    assert code == 0, err
    stats = assert_trained(run, steps=3, images_per_step=5 * 4)  # 5 critic steps per generator step
    assert all(s["gp"] >= 0 and math.isfinite(s["gp"]) for s in stats)

    # From Python: the exported generator, and the same images `gankit sample` writes for that seed.
    generator, meta = load_generator(run / "generator.safetensors")
    assert meta["step"] == 3 and meta["model"].z_dim == 16 and meta["data"].resolution == 16
    images = to_uint8(generate(generator, meta["model"].z_dim, 16, seed=5, device="cpu"))
    assert images.shape == (16, 3, 16, 16)
    code, _, err = run_cli("sample", run / "generator.safetensors", "--num", 16, "--seed", 5,
                           "--out", tmp_path / "anime.png")
    assert code == 0, err
    assert np.array_equal(grid_tiles(tmp_path / "anime.png", 16, 4), images.permute(0, 2, 3, 1).numpy())

    # The 2-D interpolation grid: K x K images; the Python generator renders the same latents identically.
    code, out, err = run_cli("interpolate", run, "--mode", "grid", "--steps", 5, "--seed", 2,
                             "--out", tmp_path / "grid.png")
    assert code == 0, err
    assert Image.open(tmp_path / "grid.png").size == (5 * 18 + 2,) * 2
    latents = interpolation_latents("grid", meta["model"].z_dim, 5, 1, seed=2).reshape(25, -1)
    expected = to_uint8(render(generator, latents, torch.device("cpu"))).permute(0, 2, 3, 1).numpy()
    tiles = grid_tiles(tmp_path / "grid.png", 16, 5)
    assert np.array_equal(tiles, expected) and not np.array_equal(tiles[0], tiles[-1])


# ---- 5. Progressive GAN on CelebA 128 --------------------------------------------------------------------

# 32 px instead of 128: scales 4, 8, 16, 32 of 1, 2, 2, 2 steps, one fade-in step each, depth 8.
PGAN_TINY = ["data.resolution=32", "model.depths=[8,8,8,8]", "model.z_dim=16", "train.max_iter_at_scale=[1,2,2,2]",
             "train.fade_iters=1", "train.batch_size=4", "train.log_every=1", "train.sample_every=2",
             "train.checkpoint_every=2", "train.grid_size=16"]


def test_pgan_celeba(tmp_path, run_cli):
    raw = make_celeba(tmp_path / "raw", count=12)
    code, _, err = run_cli("prepare", "celeba", raw, tmp_path / "celeba-128", "--size", 32)
    assert code == 0, err
    assert_packed(tmp_path / "celeba-128", 12, 32, crop="pgan")

    # Interrupted after 4 steps (here by a shorter train.steps; Ctrl-C saves a checkpoint the same way) ...
    run = tmp_path / "runs" / "pgan"
    code, _, err = run_cli("train", "pgan-celeba-128", "--out", run,
                           *sets(f"data.path={tmp_path / 'celeba-128'}", *PGAN_TINY, "train.steps=4"))
    assert code == 0, err
    assert_trained(run, steps=4, images_per_step=4)
    # ... and continued from its newest checkpoint up to the planned 7 steps.
    code, out, err = run_cli("train", run, "--set", "train.steps=7")
    assert code == 0, err
    assert "resumed" in out and "at step 4" in out
    assert_trained(run, steps=7, images_per_step=4)
    state = load_training_state(list_checkpoints(run)[-1])
    assert state["G"]["current_stage"].item() == 3 and state["G"]["current_alpha"].item() == 1.0
    assert {p.name for p in (run / "samples").glob("scale_*.png")} == {
        "scale_0004px.png", "scale_0008px.png", "scale_0016px.png"}

    # SWD per pyramid level (32 and 16 px here; 128, 64, 32, 16 at full size) and MS-SSIM.
    code, out, err = run_cli("eval", run, "--metrics", "swd,ms_ssim", "--num-samples", 12,
                             "--out", tmp_path / "metrics.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["swd"]) == {"32", "16", "avg"}
    assert all(math.isfinite(v) and v > 0 for v in metrics["swd"].values())
    assert metrics["swd"]["avg"] == pytest.approx((metrics["swd"]["32"] + metrics["swd"]["16"]) / 2)
    assert all(math.isfinite(metrics[k]) for k in ("ms_ssim", "ms_ssim_real", "ms_ssim_gap"))
    assert metrics["ms_ssim_gap"] == pytest.approx(abs(metrics["ms_ssim"] - metrics["ms_ssim_real"]))
    assert metrics["samples"]["swd"] == {"fake": 12, "real": 12}
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["step"] == 7 and logged["swd"] == metrics["swd"]


def test_fixture_script_writes_each_kind(tmp_path):
    """tests/fixtures.py as a script: the pages use it to make a fake dataset to try the commands on."""
    import fixtures

    for kind, count in (("celeba", 3), ("lsun", 3), ("folder", 3), ("mnist", 8)):
        fixtures.main([kind, str(tmp_path / kind), str(count)])
    assert len(list((tmp_path / "celeba" / "img_align_celeba").glob("*.jpg"))) == 3
    assert (tmp_path / "lsun" / "data.mdb").is_file()
    assert len(list((tmp_path / "folder").iterdir())) == 3
    images, labels = load_idx_images("mnist", str(tmp_path / "mnist"))
    assert images.shape == (8, 1, 28, 28) and labels.shape == (8,) and images.max() == 255
    with pytest.raises(SystemExit):
        fixtures.main(["cifar", str(tmp_path / "x"), "3"])
