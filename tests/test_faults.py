"""Failing writes (disk full, file too large) and diverging training (NaN/Inf in a loss or a weight):
the previous checkpoint survives, no partial file is left, nothing is saved from a broken state, and
the message names the file or the step and the cause."""

import errno
import io
import json
import os
import shutil

import pytest
import torch
from PIL import Image

from child_process import Zygote
from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.files import TEMPORARY_PATTERN

pytestmark = needs_fashion_mnist
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def reliability(record_property, point, fault, trials, outcome):
    record_property("reliability", json.dumps({"point": point, "fault": fault, "trials": trials, "outcome": outcome}))


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory):
    """A run with one checkpoint, at step 4 (the tiny settings checkpoint and sample every 4 steps)."""
    from gankit.cli import main

    run = tmp_path_factory.mktemp("base") / "run"
    assert main(tiny_train_args(run, steps=4)) == 0
    return run


@pytest.fixture
def run(four_step_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(four_step_run, copy)
    return copy


def snapshot(run):
    """What must survive a failed save: the checkpoints and the export, byte for byte."""
    files = [*list_checkpoints(run), run / "generator.safetensors", run / "generator.json"]
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in files}


def temporaries(run):
    return [p for p in run.rglob("*") if TEMPORARY_PATTERN.match(p.name)]


def assert_one_clear_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_disk_full_during_checkpoint_write(run, run_cli, monkeypatch, record_property):
    before = snapshot(run)
    real_save = torch.save

    def save_half_then_fail(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise ENOSPC

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    code, _, err = run_cli("train", run, "--set", "train.steps=8")
    assert code == 74
    assert_one_clear_line(err, "could not write", str(run / "checkpoints" / "step_000008.pt"),
                          "No space left on device (ENOSPC)", "newest complete checkpoint is",
                          str(run / "checkpoints" / "step_000004.pt"))
    assert snapshot(run) == before and temporaries(run) == []
    # Once there is space again, the same command continues from the surviving checkpoint.
    monkeypatch.setattr(torch, "save", real_save)
    code, out, _ = run_cli("train", run, "--set", "train.steps=8")
    assert code == 0 and "at step 4" in out and load_training_state(list_checkpoints(run)[-1])["step"] == 8
    reliability(record_property, 2, "disk full (ENOSPC) in the middle of a checkpoint write (torch.save)", 1,
                "exit 74, one line naming the file, the cause and the surviving checkpoint; previous checkpoint and "
                "export byte-identical; no partial file; the same command then resumed")


def test_disk_full_during_sample_save(run, run_cli, monkeypatch, record_property):
    before = snapshot(run)
    real_save = Image.Image.save

    def save_half_then_fail(image, fp, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(image, buffer, *args, **kwargs)
        with open(fp, "wb") as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise ENOSPC

    monkeypatch.setattr(Image.Image, "save", save_half_then_fail)
    code, _, err = run_cli("train", run, "--set", "train.steps=8")
    assert code == 74
    assert_one_clear_line(err, str(run / "samples" / "step_000008.png"), "No space left on device (ENOSPC)",
                          str(run / "checkpoints" / "step_000004.pt"))
    assert snapshot(run) == before and temporaries(run) == []
    assert not (run / "samples" / "step_000008.png").exists()
    reliability(record_property, 2, "disk full (ENOSPC) in the middle of a sample grid save (PIL)", 1,
                "exit 74, one line naming the grid file and the cause; checkpoint and export byte-identical; "
                "no partial file")


def test_real_failing_write_file_size_limit(run, tmp_path, record_property):
    """A real failing write(2), no mocks: a child whose file size limit (RLIMIT_FSIZE) is below a checkpoint's
    size gets EFBIG from the kernel, as a full disk gives ENOSPC. torch.save alone would report it as
    "RuntimeError: unexpected pos"."""
    before = snapshot(run)
    limit = 100_000
    assert max(len(v) for k, v in before.items() if k.endswith(".pt")) > limit > len(before["generator.safetensors"])
    code, text = Zygote.shared().run(["train", run, "--set", "train.steps=8"], tmp_path / "child.txt",
                                     file_size_limit=limit)
    assert code == 74, text
    error = [line for line in text.splitlines() if "error:" in line]
    assert len(error) == 1 and "Traceback" not in text, text
    assert str(run / "checkpoints" / "step_000008.pt") in error[0] and "File too large (EFBIG)" in error[0]
    assert snapshot(run) == before and temporaries(run) == []
    reliability(record_property, 2, "a real failing write: file size limit (RLIMIT_FSIZE) below the checkpoint "
                                    "size, the kernel refuses the write with EFBIG", 1,
                "exit 74, one line naming the checkpoint file and 'File too large (EFBIG)'; previous checkpoint "
                "intact; no partial file")


NAN_SCHEDULE = ["train.keep_checkpoints=10", "train.sample_every=100"]


def test_nan_in_a_loss_stops_before_anything_is_saved(tmp_path, run_cli, monkeypatch, record_property):
    import gankit.losses

    run = tmp_path / "run"
    real_loss = gankit.losses.discriminator_loss
    calls = {"n": 0}

    def nan_at_step_5(cfg, D, real, fake, *args, **kwargs):
        calls["n"] += 1
        return real_loss(cfg, D, real * float("nan") if calls["n"] == 5 else real, fake, *args, **kwargs)

    monkeypatch.setattr(gankit.losses, "discriminator_loss", nan_at_step_5)
    code, _, err = run_cli(*tiny_train_args(run, steps=12, extra=[*NAN_SCHEDULE, "train.checkpoint_every=2",
                                                                   "train.log_every=4"]))
    assert code == 2
    # Checkpoint steps 2, 4, 6: the one at step 6 would hold the broken state and is not written.
    assert_one_clear_line(err, "diverged by step 6", "d_loss=nan", "steps 5-6",
                          f"last good checkpoint is {run / 'checkpoints' / 'step_000004.pt'}")
    assert [p.name for p in list_checkpoints(run)] == ["step_000002.pt", "step_000004.pt"]
    good = load_training_state(list_checkpoints(run)[-1])
    assert all(torch.isfinite(t).all() for part in ("G", "D", "G_ema") for t in good[part].values()
               if t.is_floating_point())
    assert json.loads((run / "generator.json").read_text())["step"] == 4
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [4]
    reliability(record_property, 3, "NaN in the discriminator's loss at step 5 (checkpoints every 2 steps, "
                                    "logs every 4)", 1,
                "stopped at step 6 before its checkpoint, exit 2, message names the step range and d_loss=nan; "
                "checkpoints 2 and 4 intact and finite, export still step 4")


def test_inf_in_a_weight_is_caught_at_the_next_log(tmp_path, run_cli, monkeypatch, record_property):
    """Losses stay finite (the EMA generator takes no part in them): only the weight check can see it."""
    import gankit.training.loop

    run = tmp_path / "run"
    real_update = gankit.training.loop.update_ema
    calls = {"n": 0}

    def inf_at_step_5(ema, model, decay):
        real_update(ema, model, decay)
        calls["n"] += 1
        if calls["n"] == 5:
            next(ema.parameters()).data[0].fill_(float("inf"))

    monkeypatch.setattr(gankit.training.loop, "update_ema", inf_at_step_5)
    code, _, err = run_cli(*tiny_train_args(run, steps=12, extra=[*NAN_SCHEDULE, "train.checkpoint_every=4",
                                                                   "train.log_every=3"]))
    assert code == 2
    assert_one_clear_line(err, "diverged by step 6", "1 weight tensors hold NaN or Inf (G_ema.")
    assert "d_loss" not in err  # the losses were finite
    assert [p.name for p in list_checkpoints(run)] == ["step_000004.pt"]
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [3]  # the log at step 6 saw the Inf and wrote nothing
    reliability(record_property, 3, "Inf written into an EMA generator weight at step 5, losses finite "
                                    "(logs every 3 steps, checkpoints every 4)", 1,
                "stopped at the step-6 log, exit 2, message names the step and the weight tensor; checkpoint 4 intact")


def test_divergence_from_a_huge_learning_rate(run, run_cli, record_property):
    """No mocks: resuming with learning rates of 1e30 blows the weights up within a step or two."""
    before = snapshot(run)
    code, _, err = run_cli("train", run, "--set", "train.steps=12", "--set", "train.g_lr=1e30",
                           "--set", "train.d_lr=1e30")
    assert code == 2
    assert_one_clear_line(err, "diverged by step", "Lower the learning rates",
                          f"last good checkpoint is {run / 'checkpoints' / 'step_000004.pt'}")
    step = int(err.split("diverged by step ")[1].split(":")[0])
    assert 5 <= step <= 6  # the tiny settings log every 2 steps: caught within one log interval
    assert snapshot(run) == before and temporaries(run) == []
    reliability(record_property, 3, "learning rates of 1e30 set on resume (real divergence, no mocks)", 1,
                f"stopped at step {step} (logs every 2 steps), exit 2; the step-4 checkpoint and the export "
                "byte-identical")
