"""Mixed precision: auto resolution, fp16 with gradient scalers (PyTorch's AMP recipe for the penalty)."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_args
from gankit import losses
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.device import native_bf16, resolve_precision
from gankit.training.precision import Precision


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("fp16", cpu) == "fp16"


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (False, False, "fp32")])
def test_auto_precision_counts_avx512_bf16_without_amx(monkeypatch, avx512_bf16, amx, expected):
    # Zen 4/5 EPYCs have AVX-512 BF16 and no AMX: bf16 autocast is native there and auto must pick it.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_native_bf16_agrees_with_the_cpu_flags():
    """torch's private CPU probes are looked up by name; if one were renamed, auto would silently fall
    back to fp32 on every CPU. The kernel's flags are the independent answer."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_scaled_penalty_equals_the_unscaled_one():
    """Scaling the scores by s before autograd.grad and dividing the gradient by s leaves the penalty
    and its gradients unchanged (up to rounding): forgetting either half would change them by s."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 1))
    real, fake = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    eps = losses.penalty_epsilon(8, real)
    plain = losses.gradient_penalty(D, real, fake, eps)
    (plain_grad,) = torch.autograd.grad(plain, D[0].weight)
    scaled = losses.gradient_penalty(D, real, fake, eps, loss_scale=torch.tensor(65536.0))
    (scaled_grad,) = torch.autograd.grad(scaled, D[0].weight)
    assert plain.item() > 0.01
    torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scaled_grad, plain_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("which", ["r1", "r2"])
def test_fp16_r1_r2_equal_the_fp32_penalty_up_to_rounding(which):
    """The same recipe for R1/R2: scaled under fp16 autocast, the penalty and its gradient match fp32's
    (an unscaled fp16 gradient of this size would be off by the scale, or underflow)."""
    from gankit.config import LossConfig

    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 1))
    real, fake = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    cfg = LossConfig(kind="nsgan", **{f"{which}_gamma": 10.0})
    plain_loss, plain = losses.discriminator_loss(cfg, D, real, fake)
    (plain_grad,) = torch.autograd.grad(plain_loss, D[0].weight)
    # 1024, not the scaler's initial 65536: that one overflows fp16 (max 65504) and the scaler would skip the step.
    with torch.autocast("cpu", dtype=torch.float16):
        scaled_loss, scaled = losses.discriminator_loss(cfg, D, real, fake, loss_scale=torch.tensor(1024.0))
    (scaled_grad,) = torch.autograd.grad(scaled_loss, D[0].weight)
    assert plain[which].item() > 0.01
    torch.testing.assert_close(scaled[which], plain[which], rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(scaled_grad, plain_grad, rtol=2e-2, atol=1e-3)
    # Scaled without autocast, it equals the plain penalty to float32 rounding.
    exact = losses.discriminator_loss(cfg, D, real, fake, loss_scale=torch.tensor(65536.0))[1][which]
    torch.testing.assert_close(exact, plain[which], rtol=1e-5, atol=1e-6)


def test_disabled_scalers_pass_everything_through():
    precision = Precision("bf16", torch.device("cpu"))
    assert precision.penalty_scale() is None and precision.state_dict() is None
    stats = {"d_loss": torch.tensor(float("inf"))}
    assert precision.finite_stats(stats) is stats  # outside fp16 an inf still reads as divergence


def test_fp16_wgan_gp_trains_saves_its_scalers_and_resumes_exactly(tmp_path, run_cli):
    fp16 = ["train.precision=fp16", "train.n_critic=2", "train.d_grad_clip=10.0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, out, err = run_cli(*tiny_train_args(straight, "wgangp-fashion-mnist", steps=8, extra=fp16))
    assert code == 0, err
    assert "emulated" in out  # fp16 on a CPU says it is slow
    state = load_training_state(list_checkpoints(straight)[-1])
    scale = state["scalers"]["d"]["scale"]
    # The scaler ran: it starts at 2**16 and only halves on overflow or stays; never a disabled {}.
    assert 0 < scale <= 65536.0 and state["scalers"]["g"]["scale"] > 0
    records = [json.loads(line) for line in (straight / "stats.jsonl").read_text().splitlines()]
    assert all(r["gp"] >= 0 and r["d_loss"] == r["d_loss"] for r in records)
    assert any(r["gp"] > 0 for r in records)

    assert run_cli(*tiny_train_args(split, "wgangp-fashion-mnist", steps=4, extra=fp16))[0] == 0
    assert run_cli("train", split, "--set", "train.steps=8")[0] == 0
    resumed = load_training_state(list_checkpoints(split)[-1])
    assert resumed["scalers"] == state["scalers"]
    for key in ("G", "D"):
        for name, tensor in state[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name}"


@pytest.mark.parametrize("value", ["fp8", "half"])
def test_unknown_precision_is_refused(tmp_path, run_cli, value):
    code, _, err = run_cli(*tiny_train_args(tmp_path / "r", steps=1, extra=[f"train.precision={value}"]))
    assert code == 2 and "train.precision" in err
