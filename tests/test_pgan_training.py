"""Progressive GAN inside the training loop: growth, per-scale grids, exact resume mid-fade-in."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion_mnist
from gankit.checkpoint import list_checkpoints, load_generator, load_training_state
from test_training import assert_same_tensors

pytestmark = needs_fashion_mnist

# 4 -> 8 -> 16 px: scales of 4, 6 and 6 steps, 4 steps of fade-in, batch 8 then 4 at 16 px.
TINY_PGAN = ["data.resolution=16", "data.max_images=128", "model.depths=[8,8,8]", "model.z_dim=8",
             "train.max_iter_at_scale=[4,6,6]", "train.fade_iters=4", "train.batch_size_at_scale=[8,8,4]",
             "train.lr_at_scale=[0.001,0.002,0.003]", "train.log_every=1", "train.sample_every=100",
             "train.checkpoint_every=100", "train.grid_size=4"]


def pgan_args(out, steps, extra=()):
    args = ["train", "pgan-fashion-mnist", "--out", str(out), "--set", f"train.steps={steps}"]
    for item in [*TINY_PGAN, *extra]:
        args += ["--set", item]
    return args


def test_growth_follows_the_schedule(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*pgan_args(run, 16))[0] == 0
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    # images_seen follows the per-scale batch sizes: 10 steps of 8, then 6 of 4.
    assert [s["images_seen"] for s in stats][9:11] == [80, 84] and stats[-1]["images_seen"] == 104
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "scale_0004px.png", "scale_0008px.png", "step_000016.png"]
    # The 4 px grid is made of 4x4 blocks of one colour (4 px upsampled to 16).
    grid = np.asarray(Image.open(run / "samples" / "scale_0004px.png")).astype(int)
    tile = grid[2:18, 2:18]
    assert (tile.reshape(4, 4, 4, 4).std(axis=(1, 3)) == 0).all() and tile.std() > 0
    state = load_training_state(list_checkpoints(run)[-1])
    assert state["G"]["current_stage"].item() == 2 and state["G"]["current_alpha"].item() == 1.0
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.003)
    # The generator at 16 px was trained: its newest blocks moved away from their initial values.
    fresh = tmp_path / "fresh"
    assert run_cli(*pgan_args(fresh, 1))[0] == 0
    first = load_training_state(list_checkpoints(fresh)[-1])
    assert not torch.equal(state["G"]["to_rgb.2.weight"], first["G"]["to_rgb.2.weight"])


@pytest.mark.parametrize("stop_at", [6, 12])  # mid-fade-in at 8 px, then mid-fade-in at 16 px
def test_resume_mid_fade_in_is_bit_identical(tmp_path, run_cli, stop_at):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(*pgan_args(straight, 16))[0] == 0
    assert run_cli(*pgan_args(split, stop_at))[0] == 0
    state = load_training_state(list_checkpoints(split)[-1])
    assert 0 < state["G"]["current_alpha"].item() < 1  # stopped inside a fade-in
    assert run_cli("train", split, "--set", "train.steps=16")[0] == 0
    a = load_training_state(list_checkpoints(straight)[-1])
    b = load_training_state(list_checkpoints(split)[-1])
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng"):
        assert_same_tensors(a[key], b[key], key)


def test_sampling_a_run_stopped_at_an_early_stage(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*pgan_args(run, 5))[0] == 0  # inside the 8 px fade-in
    generator, meta = load_generator(run)
    assert generator.progress()[0] == 1
    images = generator(torch.randn(3, 8))
    assert images.shape == (3, 1, 16, 16)
    # Upsampled from 8 px: every 2x2 block is constant.
    assert (images.reshape(3, 8, 2, 8, 2).std(dim=(2, 4)) < 1e-6).all()
    code, _, _ = run_cli("sample", run, "--num", 4, "--out", tmp_path / "grid.png")
    assert code == 0 and (tmp_path / "grid.png").is_file()


# ---- the run's length: train.steps or the schedule's sum ------------------------------------------

# 4 -> 8 px at depth 4: a few steps per scale take a second.
TINY_8PX = ["data.resolution=8", "data.max_images=64", "model.depths=[4,4]", "model.z_dim=4", "train.fade_iters=2",
            "train.batch_size=4", "train.log_every=1", "train.sample_every=100", "train.checkpoint_every=100",
            "train.grid_size=4"]


def train_8px(run_cli, config, out, extra=()):
    args = ["train", config, "--out", out]
    for item in [*TINY_8PX, *extra]:
        args += ["--set", item]
    code, out_text, err = run_cli(*args)
    assert code == 0, err
    return out_text


def logged_steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]


def length_lines(run) -> list[str]:
    return [line for line in (run / "log.txt").read_text().splitlines() if "differs from the sum" in line]


def saved_config(run) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_a_config_with_only_the_schedule_lasts_its_sum(tmp_path, run_cli):
    config = tmp_path / "schedule-only.yaml"
    config.write_text("name: schedule-only\n"
                      "data: {source: fashion-mnist, resolution: 8, channels: 1}\n"
                      "model: {arch: pgan, depths: [4, 4]}\n"
                      "loss: {kind: wgan-gp, drift: 0.001}\n"
                      "train: {max_iter_at_scale: [3, 4], fade_iters: 2}\n")
    run = tmp_path / "run"
    train_8px(run_cli, config, run)
    assert logged_steps(run)[-1] == 7 and length_lines(run) == []
    # Saved without a length, so that a resume with another schedule gets that schedule's sum.
    assert saved_config(run)["train"]["steps"] is None
    # Checkpoints at the end of the 4 px scale and of the run.
    assert [p.name for p in list_checkpoints(run)] == ["step_000003.pt", "step_000007.pt"]
    # The report plans the schedule's length too.
    assert run_cli("report", run)[0] == 0
    page = (run / "report.html").read_text()
    assert "<th>step</th><td>7 of 7</td>" in page and "<th>status</th><td>finished</td>" in page


def test_the_preset_overridden_by_the_schedule_alone(tmp_path, run_cli):
    run = tmp_path / "run"
    train_8px(run_cli, "pgan-fashion-mnist", run, ["train.max_iter_at_scale=[2,3]"])
    assert logged_steps(run)[-1] == 5 and length_lines(run) == []


@pytest.mark.parametrize("steps, stage, alpha, where", [
    (9, 1, 1.0, "the steps after 7 stay at the last scale (8x8)"),
    (5, 1, 0.5, "the run stops early, at the 8x8 scale"),  # step index 4: step 1 of the 8 px fade-in
])
def test_an_explicit_train_steps_wins_over_the_schedule_with_one_line(tmp_path, run_cli, steps, stage, alpha, where):
    run = tmp_path / "run"
    out = train_8px(run_cli, "pgan-fashion-mnist", run, ["train.max_iter_at_scale=[3,4]", f"train.steps={steps}"])
    note = (f"train.steps {steps} differs from the sum of train.max_iter_at_scale (7): train.steps wins and {where} "
            "(leave train.steps out, or --set train.steps=null, to follow the schedule)")
    assert length_lines(run) == [note] and out.count("differs from the sum") == 1
    assert logged_steps(run)[-1] == steps
    state = load_training_state(list_checkpoints(run)[-1])
    assert (state["G"]["current_stage"].item(), state["G"]["current_alpha"].item()) == (stage, alpha)


def test_resume_with_a_new_schedule_lasts_the_new_sum(tmp_path, run_cli):
    run = tmp_path / "run"
    train_8px(run_cli, "pgan-fashion-mnist", run, ["train.max_iter_at_scale=[3,4]"])
    assert logged_steps(run)[-1] == 7
    code, out, err = run_cli("train", run, "--set", "train.max_iter_at_scale=[3,6]")
    assert code == 0, err
    assert "resumed" in out and "at step 7" in out and "differs" not in out
    assert logged_steps(run)[-1] == 9 and saved_config(run)["train"]["steps"] is None
    assert [p.name for p in list_checkpoints(run)][-1] == "step_000009.pt"
