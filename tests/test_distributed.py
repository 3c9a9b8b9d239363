"""Data-parallel training under torchrun on CPU (gloo, 2 processes): equivalence with one process,
resume across world sizes, two "nodes" on this machine, and a rank that dies."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from child_process import EXIT_HOOK_VARIABLE, with_fault_injection
from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import checkpoint_path, list_checkpoints, load_training_state
from gankit.cli import main as gankit_main
from gankit.config import load
from gankit.errors import GankitError
from gankit.models.layers import minibatch_stddev
from gankit.training.distributed import Replica

# No batch norm (mlp), the gradient penalty (wgan-gp), flips and two critic updates per step, so every
# global draw (data order, flips, latents, penalty weights) is exercised. Checkpoints at steps 3 and 6.
# Spectral norm on both networks: each rank's power iterations must keep u, v equal to one process's.
EQUIVALENCE_SETTINGS = ["model.arch=mlp", "data.hflip=true", "train.n_critic=2", "train.checkpoint_every=3",
                        "model.d_spectral_norm=true", "model.g_spectral_norm=true",
                        # R1/R2 (autograd.grad through DDP, lazily) and LeCam, whose EMAs use the global means.
                        # The drift term gives D's last bias a real gradient: WGAN-GP gives it none, nor LeCam
                        # at its first update (EMAs = the batch's means), and Adam's first step would turn
                        # the rounding noise left there into steps of size lr.
                        "loss.r1_gamma=1.0", "loss.r2_gamma=1.0", "loss.reg_every=2", "loss.lecam=0.1",
                        "loss.drift=0.001",
                        # Class-conditional (projection D, label embedding in G): the reals' labels are split
                        # with their images, the fakes' drawn for the global batch like the latents.
                        "model.conditioning=projection",
                        "train.log_every=3", "train.sample_every=3", "train.g_lr=0.001", "train.d_lr=0.001"]
STEPS = 6
# Progressive GAN: scales of 2, 3 and 3 steps, 2 of them fading in; 4 images per rank at every scale, so
# each rank's minibatch-stddev groups are groups of the global batch. (Over longer runs Adam with beta1 = 0
# amplifies float rounding: 16 steps already differ by ~1e-4 between 1 and 2 threads in ONE process.)
PGAN_SETTINGS = ["data.resolution=16", "data.max_images=128", "model.depths=[8,8,8]", "model.z_dim=8",
                 "train.max_iter_at_scale=[2,3,3]", "train.fade_iters=2", "train.batch_size_at_scale=[8,8,8]",
                 "train.log_every=4", "train.sample_every=100", "train.checkpoint_every=3", "train.grid_size=4",
                 "train.keep_checkpoints=10"]  # all of them: the test resumes from step 3's
PGAN_STEPS = 8
TOLERANCE = 1e-5
DDP_TIMEOUT_S = 240  # a run that hangs fails the test instead of blocking the suite


def equivalence_args(out: Path, steps: int = STEPS) -> list[str]:
    return tiny_train_args(out, "wgangp-fashion-mnist", steps=steps, extra=EQUIVALENCE_SETTINGS)


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != EXIT_HOOK_VARIABLE}
    env.update(OMP_NUM_THREADS="1", **extra)
    return with_fault_injection(env) if EXIT_HOOK_VARIABLE in extra else env


def torchrun_command(launcher_args: list[str], gankit_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher_args, "-m", "gankit",
            *[str(a) for a in gankit_args]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_nodes(gankit_args: list[str], cwd: Path, **env: str) -> list[subprocess.CompletedProcess]:
    """Two torchrun launchers (--nnodes 2, one process each) meeting at a loopback rendezvous."""
    port = free_port()
    launchers = []
    for node_rank in (0, 1):
        launcher = ["--nnodes", "2", "--node_rank", str(node_rank), "--nproc_per_node", "1",
                    "--rdzv_endpoint", f"127.0.0.1:{port}"]
        launchers.append(subprocess.Popen(torchrun_command(launcher, gankit_args), cwd=cwd, env=worker_env(**env),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in launchers:
            out, err = proc.communicate(timeout=DDP_TIMEOUT_S)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in launchers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def assert_states_close(a: dict, b: dict) -> None:
    """Weights, EMA weights and optimizer moments agree to TOLERANCE; data position and RNG exactly."""
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], atol=TOLERANCE, rtol=0, msg=f"{key}.{name}")
    for key in ("opt_g", "opt_d"):
        for index, moments in a[key]["state"].items():
            for name, value in moments.items():
                torch.testing.assert_close(value, b[key]["state"][index][name], atol=TOLERANCE, rtol=0,
                                           msg=f"{key}.state.{index}.{name}")
    assert a["step"] == b["step"] and a["images_seen"] == b["images_seen"]
    assert a["data"] == b["data"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert (a["lecam"] is None) == (b["lecam"] is None)
    if a["lecam"] is not None:  # LeCam's EMAs of D's means, from the global batch on every rank
        torch.testing.assert_close(a["lecam"]["ema"], b["lecam"]["ema"], atol=TOLERANCE, rtol=0, msg="lecam")


def largest_change(a: dict, b: dict) -> float:
    return max((a["G"][n] - b["G"][n]).abs().max().item() for n in a["G"])


def copy_until(run: Path, dest: Path, step: int) -> Path:
    """A copy of a run folder holding only its checkpoints up to `step` (as if stopped there)."""
    shutil.copytree(run, dest)
    for path in list_checkpoints(dest):
        if int(path.stem.split("_")[1]) > step:
            path.unlink()
    return dest


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, global batch 16."""
    run = tmp_path_factory.mktemp("one_process") / "run"
    assert gankit_main(equivalence_args(run)) == 0
    return run


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """torchrun --nproc_per_node 2: two processes of 8 images each, global batch 16."""
    folder = tmp_path_factory.mktemp("ddp")
    run = folder / "run"
    result = subprocess.run(torchrun_command(["--standalone", "--nproc_per_node", "2"], equivalence_args(run)),
                            cwd=folder, env=worker_env(), capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


# ---- without processes -------------------------------------------------------------------------------

def test_each_rank_keeps_the_minibatch_stddev_groups_of_the_global_batch():
    features = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    global_result = minibatch_stddev(features)
    for rank in (0, 1):
        replica = Replica(rank=rank, world_size=2)
        local = replica.local_part(features)
        assert local.shape[0] == 8
        torch.testing.assert_close(minibatch_stddev(local), replica.local_part(global_result))


def test_batch_must_divide_among_the_processes():
    config = load("dcgan-fashion-mnist", ["train.batch_size=30"])
    Replica(rank=0, world_size=2).check_config(config, torch.device("cpu"))  # 15 each: fine
    with pytest.raises(GankitError, match=r"train.batch_size 30 .* 4 processes: use a multiple of 4"):
        Replica(rank=0, world_size=4).check_config(config, torch.device("cpu"))
    pgan = load("pgan-fashion-mnist", ["train.batch_size_at_scale=[16,16,16,6]"])
    with pytest.raises(GankitError, match=r"train.batch_size_at_scale \[16, 16, 16, 6\]"):
        Replica(rank=0, world_size=4).check_config(pgan, torch.device("cpu"))


def test_sync_batchnorm_is_refused_on_cpu():
    config = load("dcgan-fashion-mnist", ["train.sync_batchnorm=true"])
    with pytest.raises(GankitError, match="SyncBatchNorm does not run on the CPU"):
        Replica(rank=0, world_size=2).check_config(config, torch.device("cpu"))


# ---- torchrun ---------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_two_processes_follow_one_process_with_the_global_batch(reference, two_process_run):
    run, result = two_process_run
    ddp = load_training_state(checkpoint_path(run, STEPS))
    one = load_training_state(checkpoint_path(reference, STEPS))
    assert ddp["images_seen"] == STEPS * 2 * 16  # n_critic batches of the global 16 per step
    assert_states_close(ddp, one)
    # Not vacuous: training moved the weights by far more than the tolerance.
    assert largest_change(one, load_training_state(checkpoint_path(reference, 3))) > 100 * TOLERANCE
    # Rank 0 alone wrote the run folder; the logged losses are the global batch's (averaged over ranks).
    assert result.stdout.count("done: 6 steps") == 1
    assert "(2 processes under torchrun)" in (run / "log.txt").read_text()
    ddp_stats = (run / "stats.jsonl").read_text().splitlines()
    one_stats = (reference / "stats.jsonl").read_text().splitlines()
    assert len(ddp_stats) == len(one_stats) == 2
    for line_ddp, line_one in zip(ddp_stats, one_stats):
        a, b = json.loads(line_ddp), json.loads(line_one)
        for key in ("d_loss", "g_loss", "gp", "d_real", "d_fake", "r1", "r2", "lecam"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


@needs_fashion_mnist
def test_one_process_resumes_a_two_process_checkpoint(reference, two_process_run, tmp_path):
    run = copy_until(two_process_run[0], tmp_path / "run", 3)
    assert gankit_main(["train", str(run), "--set", f"train.steps={STEPS}"]) == 0
    assert_states_close(load_training_state(checkpoint_path(run, STEPS)),
                        load_training_state(checkpoint_path(reference, STEPS)))


@pytest.fixture(scope="module")
def pgan_reference(tmp_path_factory) -> Path:
    """Progressive GAN, one process: 4 -> 8 -> 16 px in 8 steps with 2-step fade-ins, checkpoints at 3 and 6
    (and at the scales' ends, 2 and 5)."""
    run = tmp_path_factory.mktemp("pgan_one_process") / "run"
    assert gankit_main(["train", "pgan-fashion-mnist", "--out", str(run), "--set", f"train.steps={PGAN_STEPS}",
                        *[a for s in PGAN_SETTINGS for a in ("--set", s)]]) == 0
    return run


@needs_fashion_mnist
def test_two_nodes_resume_a_one_process_progressive_gan(pgan_reference, tmp_path):
    """Two launchers on this machine continue a one-process PGAN checkpoint taken mid-fade-in at 8 px
    through the end of that fade-in, the growth to 16 px and its fade-in: the networks are re-wrapped at
    each change of the layers in use, and the result is the one-process run's."""
    run = copy_until(pgan_reference, tmp_path / "run", 3)
    node0, node1 = run_two_nodes(["train", run, "--set", f"train.steps={PGAN_STEPS}"], cwd=tmp_path)
    assert node0.returncode == 0 and node1.returncode == 0, node0.stderr[-2000:] + node1.stderr[-2000:]
    assert "resumed" in node0.stdout and "at step 3" in node0.stdout
    assert "resumed" not in node1.stdout  # the rank on the second node logs nothing
    ddp = load_training_state(checkpoint_path(run, PGAN_STEPS))
    one = load_training_state(checkpoint_path(pgan_reference, PGAN_STEPS))
    assert ddp["G"]["current_stage"].item() == 2
    assert_states_close(ddp, one)
    assert largest_change(one, load_training_state(checkpoint_path(pgan_reference, 3))) > 100 * TOLERANCE


@needs_fashion_mnist
def test_a_dead_rank_stops_the_other_with_a_clear_error(tmp_path):
    # Two nodes, so that no launcher tears the surviving rank down: it must notice by itself.
    run = tmp_path / "run"
    args = tiny_train_args(run, "wgangp-fashion-mnist", steps=8, extra=["model.arch=mlp", "train.checkpoint_every=2"])
    started = time.monotonic()
    node0, node1 = run_two_nodes(args, cwd=tmp_path, **{EXIT_HOOK_VARIABLE: "1:3"})
    elapsed = time.monotonic() - started
    assert "test hook: rank 1 exits at step 3" in node1.stderr and node1.returncode != 0
    assert node0.returncode != 0
    assert "gankit train: error: rank 0 lost contact with the other processes" in node0.stderr
    assert "run the same torchrun command again to resume" in node0.stderr
    # The collective timeout is 600 s: ending well before it means the failure was detected, not waited out.
    assert elapsed < 150
    # Nothing was saved after the last complete checkpoint.
    assert [p.name for p in list_checkpoints(run)] == ["step_000002.pt"]
