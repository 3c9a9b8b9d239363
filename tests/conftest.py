"""Shared helpers: tiny training configs that run in seconds on 2 CPU cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests use tiny models, where a second thread gains little, and some run a training subprocess beside
# pytest: with both using 2 OpenMP threads on 2 cores, their spinning barriers make each step many times
# slower. One thread per process keeps the suite's time stable (child processes inherit the variable).
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

torch.set_num_threads(1)

TINY_IMAGE_SETTINGS = [
    "data.resolution=16", "data.max_images=256", "model.g_channels=8", "model.d_channels=8",
    "model.z_dim=16", "train.batch_size=16", "train.log_every=2", "train.sample_every=4",
    "train.checkpoint_every=4", "train.grid_size=16",
    # The demo preset's class conditioning and learning-rate decay off: these tests are about other things
    # (the decay depends on train.steps, which the resume tests change); conditional tests turn it back on.
    "model.conditioning=none", "train.lr_schedule=constant",
    # The textbook learning rate, whatever the demo preset is tuned to: at the demo's 1e-3 these tiny
    # networks saturate within 4 steps and sample the same image for every latent.
    "train.g_lr=2e-4", "train.d_lr=2e-4",
]


def tiny_train_args(out: Path, preset: str = "dcgan-fashion-mnist", steps: int = 4, extra=()) -> list[str]:
    """argv for `gankit train` with a tiny model on 256 Fashion-MNIST images at 16x16."""
    args = ["train", preset, "--out", str(out), "--set", f"train.steps={steps}"]
    for item in [*TINY_IMAGE_SETTINGS, *extra]:
        args += ["--set", item]
    return args


def tiny_image_gan():
    """A seeded pair for gradient checks through augmentation: G maps 6 latents of 4 to 3x8x8 images, D
    scores them; returns (G, D, z)."""
    from torch import nn

    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(4, 3 * 8 * 8), nn.Tanh(), nn.Unflatten(1, (3, 8, 8)))
    D = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))
    return G, D, torch.randn(6, 4)


def generator_gradient(G, run_loss) -> torch.Tensor:
    """G's gradient, flattened, from the loss run_loss() builds."""
    G.zero_grad()
    run_loss().backward()
    return torch.cat([p.grad.flatten() for p in G.parameters()])


def resume_without_state(run: Path, run_cli, key: str) -> str:
    """Deletes `key` from the run's last checkpoint (as a checkpoint written before that feature existed
    would lack it), resumes the run to step 6, checks it succeeded from step 4; returns its stdout."""
    from gankit.checkpoint import list_checkpoints, load_training_state

    path = list_checkpoints(run)[-1]
    state = load_training_state(path)
    del state[key]
    torch.save(state, path)
    code, out, err = run_cli("train", run, "--set", "train.steps=6")
    assert code == 0, err
    assert "at step 4" in out
    return out


@pytest.fixture
def run_cli(capsys):
    """Runs gankit's CLI in-process; returns (exit code, stdout, stderr)."""
    from gankit.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir() and "CI" not in os.environ,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are collected everywhere and skipped where torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(no_gpu)
