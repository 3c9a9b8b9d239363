"""Learning-rate decay (train.lr_schedule): the factor's curve, the rates the optimizers really use, resume
mid-decay, and the refusals."""

import json
import shutil

import pytest
import torch

from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.config import TrainConfig
from gankit.training.lr_schedule import lr_factor


def test_constant_is_one_everywhere():
    train = TrainConfig()
    assert [lr_factor(train, s, 10) for s in range(10)] == [1.0] * 10


def test_linear_holds_then_falls_on_a_straight_line_to_lr_final():
    train = TrainConfig(lr_schedule="linear", lr_decay_start=0.5)
    factors = [lr_factor(train, s, 100) for s in range(100)]
    assert factors[:51] == [1.0] * 51  # up to the start step (50), the full rate
    assert factors[75] == pytest.approx(0.5) and factors[99] == pytest.approx(0.02)
    steps = [b - a for a, b in zip(factors[50:], factors[51:])]
    assert all(d == pytest.approx(-0.02) for d in steps)  # a straight line
    floor = TrainConfig(lr_schedule="linear", lr_decay_start=0.0, lr_final=0.1)
    assert lr_factor(floor, 0, 10) == 1.0 and lr_factor(floor, 5, 10) == pytest.approx(0.55)
    assert lr_factor(floor, 10, 10) == pytest.approx(0.1)  # a resume past the end stays at the floor
    assert lr_factor(floor, 20, 10) == pytest.approx(0.1)


@pytest.mark.parametrize("settings, message", [
    ({"lr_final": 0.1}, "train.lr_final: read by train.lr_schedule linear only"),
    ({"lr_decay_start": 0.2}, "train.lr_decay_start: read by train.lr_schedule linear only"),
    ({"lr_schedule": "linear", "lr_decay_start": 1.0}, "less than 1"),
    ({"lr_schedule": "linear", "lr_final": -0.5}, "greater than or equal to 0"),
    ({"lr_schedule": "cosine"}, "'constant' or 'linear'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


@needs_fashion_mnist
def test_training_uses_the_decayed_rates_and_logs_them(tmp_path, run_cli):
    run = tmp_path / "run"
    extra = ["train.lr_schedule=linear", "train.lr_decay_start=0.5", "train.lr_final=0.25", "train.log_every=1",
             "train.keep_checkpoints=10"]
    assert run_cli(*tiny_train_args(run, steps=8, extra=extra))[0] == 0
    logged = [json.loads(line)["lr_factor"] for line in (run / "stats.jsonl").read_text().splitlines()]
    # Steps 0-3 at the full rate, then 1 - 0.75 * (s - 4) / 4 for the updates at steps 4..7.
    assert logged == pytest.approx([1, 1, 1, 1, 1, 0.8125, 0.625, 0.4375])
    # The optimizers' param groups hold what the last update (step 7) used: 2e-4 (the tiny runs' rate) x 0.4375.
    state = load_training_state(list_checkpoints(run)[-1])
    for key in ("opt_g", "opt_d"):
        assert state[key]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.4375)


@needs_fashion_mnist
def test_resume_mid_decay_is_bit_identical(tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = ["train.lr_schedule=linear", "train.lr_decay_start=0.25", "train.keep_checkpoints=10"]
    assert run_cli(*tiny_train_args(straight, steps=8, extra=extra))[0] == 0
    # The same run stopped after its step-4 checkpoint (in the decay), then resumed to its end.
    shutil.copytree(straight, split)
    for path in list_checkpoints(split)[1:]:
        path.unlink()
    code, out, err = run_cli("train", split)
    assert code == 0 and "at step 4" in out, err
    a, b = (load_training_state(list_checkpoints(run)[-1]) for run in (straight, split))
    assert a["step"] == b["step"] == 8
    for key in ("G", "D", "G_ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert a["opt_g"]["param_groups"][0]["lr"] == b["opt_g"]["param_groups"][0]["lr"]
    # Without the decay the run ends elsewhere: the test would notice a schedule that did nothing.
    plain = tmp_path / "plain"
    assert run_cli(*tiny_train_args(plain, steps=8, extra=["train.keep_checkpoints=10"]))[0] == 0
    c = load_training_state(list_checkpoints(plain)[-1])
    assert not all(torch.equal(a["G"][n], c["G"][n]) for n in a["G"])


@needs_fashion_mnist
def test_pgan_decays_its_per_scale_rates(tmp_path, run_cli):
    from test_pgan_training import pgan_args

    run = tmp_path / "run"
    # 16 steps, the last 6 at 16 px with lr_at_scale 0.003; the decay starts at step 8 (0.5 of 16).
    assert run_cli(*pgan_args(run, 16, ["train.lr_schedule=linear", "train.lr_decay_start=0.5"]))[0] == 0
    state = load_training_state(list_checkpoints(run)[-1])
    # The last update (step 15) used 0.003 x (1 - 7/8).
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.003 / 8)
    logged = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert logged[7]["lr_factor"] == 1.0 and logged[8]["lr_factor"] == pytest.approx(1.0)  # steps 7 and 8
    assert logged[9]["lr_factor"] == pytest.approx(7 / 8)
