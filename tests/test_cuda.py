"""The CUDA-only paths: cudnn.benchmark, `precision: auto` and fp16 scalers on CUDA, each rank's CUDA RNG on
resume, nccl and torch.compile. Marked `cuda`: collected everywhere, skipped without a GPU (conftest.py);
`bash scripts/gpu_check.sh` runs them on a GPU machine.

The runs read fake Fashion-MNIST IDX files (tests/fixtures.py), so a GPU machine needs no dataset. The
exact-resume tests use the MLP or cuDNN's deterministic algorithms: with cudnn.benchmark on, cuDNN may pick
convolution algorithms that accumulate with atomics, whose rounding differs between calls."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_args
from fixtures import make_mnist_idx
from gankit.checkpoint import checkpoint_path, load_training_state
from gankit.device import resolve_precision
from gankit.training.distributed import Replica
from test_distributed import copy_until, torchrun_command, worker_env
from test_training import assert_same_tensors, final_state

pytestmark = pytest.mark.cuda

NCCL_TIMEOUT_S = 240  # a hung nccl run fails the test instead of blocking the GPU check
# Two GPUs against one: the global batch is reduced in another order (8 + 8 against 16), so the weights
# agree to rounding, not bit for bit; a run whose ranks drew different latents differs by ~1e-2.
NCCL_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fake_fmnist(tmp_path_factory) -> Path:
    """256 training images in Fashion-MNIST's IDX format, for data.path."""
    return make_mnist_idx(tmp_path_factory.mktemp("idx") / "fashion-mnist", 256)


def cuda_args(out: Path, data: Path, preset: str = "dcgan-fashion-mnist", steps: int = 4, extra=()) -> list[str]:
    return [*tiny_train_args(out, preset, steps, [f"data.path={data}", *extra]), "--device", "cuda"]


def largest_difference(a: dict, b: dict) -> float:
    return max((a[n].float() - b[n].float()).abs().max().item() for n in a)


def test_training_on_cuda_turns_on_cudnn_benchmark(monkeypatch, tmp_path, run_cli, fake_fmnist):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    code, out, err = run_cli(*cuda_args(tmp_path / "run", fake_fmnist, steps=2))
    assert code == 0, err
    assert "on cuda" in out
    assert torch.backends.cudnn.benchmark is True


def test_auto_precision_on_cuda_is_bf16_exactly_where_native(monkeypatch, tmp_path, run_cli, fake_fmnist):
    cuda = torch.device("cuda")
    native = torch.cuda.get_device_capability(cuda) >= (8, 0)  # Ampere and later compute bf16 in hardware
    expected = "bf16" if native else "fp32"
    assert resolve_precision("auto", cuda) == expected
    code, out, err = run_cli(*cuda_args(tmp_path / "auto", fake_fmnist, steps=2, extra=["train.precision=auto"]))
    assert code == 0, err
    assert f"train.precision auto: {expected} on cuda" in out
    # A GPU where torch only emulates bf16 (before Ampere) must get fp32, not the slow emulated bf16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", cuda) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", cuda) == "bf16"


def test_fp16_on_cuda_keeps_a_scaler_per_network_and_resumes_exactly(monkeypatch, tmp_path, run_cli, fake_fmnist):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    fp16 = ["train.precision=fp16", "train.n_critic=2", "train.d_grad_clip=10.0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, out, err = run_cli(*cuda_args(straight, fake_fmnist, "wgangp-fashion-mnist", steps=8, extra=fp16))
    assert code == 0, err
    assert "emulated" not in out  # the CPU's warning; on CUDA fp16 is native
    state = final_state(straight)
    assert set(state["scalers"]) == {"g", "d"}
    for scaler in state["scalers"].values():
        # Scales start at 2**16 and only halve (overflow) or double (after a run of good steps).
        assert 0 < scaler["scale"] <= 2.0**16 and math.log2(scaler["scale"]).is_integer()
    assert state["G"]["net.0.weight"].dtype == torch.float32  # fp32 master weights under fp16 autocast

    assert run_cli(*cuda_args(split, fake_fmnist, "wgangp-fashion-mnist", steps=4, extra=fp16))[0] == 0
    code, out, err = run_cli("train", split, "--device", "cuda", "--set", "train.steps=8")
    assert code == 0 and "at step 4" in out, err
    resumed = final_state(split)
    assert resumed["scalers"] == state["scalers"]
    for key in ("G", "D", "opt_g", "opt_d"):
        assert_same_tensors(state[key], resumed[key], key)


@pytest.mark.parametrize("preset, extra", [
    # No cuDNN at all; every device draw: latents, flips, the penalty's weights, two critic updates.
    ("wgangp-fashion-mnist", ["model.arch=mlp", "data.hflip=true", "train.n_critic=2"]),
    # The preset as shipped (convolutions, batch norm, channels_last, precision auto).
    ("dcgan-fashion-mnist", []),
], ids=["mlp-every-draw", "dcgan-preset"])
def test_resume_on_cuda_is_bit_identical(monkeypatch, tmp_path, run_cli, fake_fmnist, preset, extra):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(*cuda_args(straight, fake_fmnist, preset, steps=8, extra=extra))[0] == 0
    assert run_cli(*cuda_args(split, fake_fmnist, preset, steps=4, extra=extra))[0] == 0
    code, out, err = run_cli("train", split, "--device", "cuda", "--set", "train.steps=8")
    assert code == 0 and "at step 4" in out, err
    a, b = final_state(straight), final_state(split)
    assert a["step"] == b["step"] == 8
    assert len(a["rng"]["cuda"]) == torch.cuda.device_count()  # the CUDA generators were saved
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng"):
        assert_same_tensors(a[key], b[key], key)


def test_each_rank_continues_the_checkpointed_cuda_generator():
    """A rank's GPU (here the last one) takes over the generator state rank 0 saved from cuda:0."""
    rank0_gpu, rank1_gpu = torch.device("cuda", 0), torch.device("cuda", torch.cuda.device_count() - 1)
    torch.cuda.manual_seed_all(123)
    torch.randn(10, device=rank0_gpu)
    saved = {"torch": torch.get_rng_state(), "cuda": [torch.cuda.get_rng_state(rank0_gpu)]}
    expected = torch.randn(1000, device=rank0_gpu)
    Replica(rank=1, world_size=2, device=rank1_gpu).restore_device_rng(saved, rank1_gpu)
    torch.testing.assert_close(torch.randn(1000, device=rank1_gpu).cpu(), expected.cpu(), rtol=0, atol=0)
    # A single process leaves it alone: the loop restores every device's generator itself.
    Replica().restore_device_rng(saved, rank1_gpu)
    assert not torch.equal(torch.randn(1000, device=rank1_gpu).cpu(), expected.cpu())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs one GPU per rank: 2 GPUs or more")
def test_two_gpus_under_nccl_follow_one_gpu_and_resume(tmp_path, run_cli, fake_fmnist):
    # The MLP (no batch norm) with every global draw, as tests/test_distributed.py does on gloo.
    settings = ["model.arch=mlp", "data.hflip=true", "train.n_critic=2", "train.checkpoint_every=3",
                "train.log_every=3", "train.sample_every=3", "train.g_lr=0.001", "train.d_lr=0.001"]
    one_gpu, two_gpus = tmp_path / "one", tmp_path / "two"
    assert run_cli(*cuda_args(one_gpu, fake_fmnist, "wgangp-fashion-mnist", steps=6, extra=settings))[0] == 0

    def torchrun(gankit_args: list[str]) -> subprocess.CompletedProcess:
        command = torchrun_command(["--standalone", "--nproc_per_node", "2"], [*gankit_args, "--device", "cuda"])
        result = subprocess.run(command, cwd=tmp_path, env=worker_env(), capture_output=True, text=True,
                                timeout=NCCL_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    torchrun(tiny_train_args(two_gpus, "wgangp-fashion-mnist", 6, [f"data.path={fake_fmnist}", *settings]))
    assert "(2 processes under torchrun)" in (two_gpus / "log.txt").read_text()
    reference = load_training_state(checkpoint_path(one_gpu, 6))
    straight = load_training_state(checkpoint_path(two_gpus, 6))
    assert straight["images_seen"] == reference["images_seen"] == 6 * 2 * 16
    # Resumed with 2 ranks from step 3: rank 1's GPU must continue cuda:0's generator.
    resumed_run = copy_until(two_gpus, tmp_path / "resumed", 3)
    result = torchrun(["train", resumed_run, "--set", "train.steps=6"])
    assert "at step 3" in result.stdout
    resumed = load_training_state(checkpoint_path(resumed_run, 6))
    moved = largest_difference(reference["G"], load_training_state(checkpoint_path(one_gpu, 3))["G"])
    assert moved > 10 * NCCL_TOLERANCE  # not vacuous: training moved the weights far more than that
    for state in (straight, resumed):
        for key in ("G", "D", "G_ema"):
            assert largest_difference(state[key], reference[key]) < NCCL_TOLERANCE, key
        assert state["data"] == reference["data"]


def test_compile_on_cuda_runs_compiled_graphs_and_matches_eager(tmp_path, run_cli, fake_fmnist):
    from torch._dynamo.utils import counters

    settings = ["train.precision=fp32"]
    assert run_cli(*cuda_args(tmp_path / "eager", fake_fmnist, steps=2, extra=settings))[0] == 0
    counters.clear()
    code, _, err = run_cli(*cuda_args(tmp_path / "compiled", fake_fmnist, steps=2, extra=[*settings, "train.compile=true"]))
    assert code == 0, err
    assert counters["stats"]["unique_graphs"] >= 2  # at least G and D went through dynamo
    eager, compiled = final_state(tmp_path / "eager"), final_state(tmp_path / "compiled")
    # Other kernels round differently; Adam's first steps move each weight by about lr (2e-4) whatever the
    # gradient's size, so a gradient of the other sign differs by at most 2 lr per step.
    for key in ("G", "D"):
        assert largest_difference(compiled[key], eager[key]) < 4 * 2e-4 + 1e-4, key
