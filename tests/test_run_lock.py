"""Two `gankit train` on one run folder: the second is refused while the first runs, and a lock left by a
killed run blocks nothing."""

import json
import os
import signal
import time

from child_process import Zygote
from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.training.lock import LOCK_NAME, RunLock


def test_second_train_is_refused_and_touches_nothing(tmp_path, run_cli):
    run = tmp_path / "run"
    with RunLock(run):  # another open file description: the lock conflicts even within one process
        code, _, err = run_cli(*tiny_train_args(run, steps=2))
    assert code == 2 and "Traceback" not in err
    assert f"run folder {run} is in use by another `gankit train` (pid {os.getpid()} on" in err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # no config, log or checkpoint written


def test_lock_file_alone_does_not_count_as_a_used_folder(tmp_path, run_cli, monkeypatch):
    """A folder holding only the lock file of a run that was refused or killed is still empty for
    --resume never."""
    run = tmp_path / "run"
    with RunLock(run):
        pass
    monkeypatch.setattr("gankit.training.loop.train", lambda *args: {"interrupted": None})
    code, _, err = run_cli(*tiny_train_args(run, steps=2), "--resume", "never")
    assert code == 0, err


@needs_fashion_mnist
def test_concurrent_run_is_refused_then_a_killed_runs_lock_is_reused(tmp_path, run_cli, record_property):
    zygote = Zygote.shared()
    run = tmp_path / "run"
    argv = tiny_train_args(run, steps=100_000, extra=["train.sample_every=100000", "train.checkpoint_every=2"])
    child = zygote.start(argv, tmp_path / "first.txt")
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        config_before = (run / "config.yaml").read_bytes()
        code, out, err = run_cli(*tiny_train_args(run, steps=8))
        assert code == 2 and "Traceback" not in err and out == ""
        assert f"is in use by another `gankit train` (pid {child.pid} on" in err
        assert (run / "config.yaml").read_bytes() == config_before
        assert child.text().count("training ") == 1 and "resumed" not in (run / "log.txt").read_text()
    finally:
        ended = zygote.kill(child)
    assert ended == -signal.SIGKILL  # it was still training, undisturbed
    newest = list_checkpoints(run)[-1]
    step = load_training_state(newest)["step"]

    # The killed run's lock file is still there; it must not block the next run.
    assert (run / LOCK_NAME).read_text().startswith(f"pid {child.pid} ")
    code, out, err = run_cli("train", run, "--set", f"train.steps={step + 2}")
    assert code == 0, err
    assert f"from {newest} at step {step}" in out and load_training_state(list_checkpoints(run)[-1])["step"] == step + 2
    record_property("reliability", json.dumps({
        "point": 7, "fault": "a second `gankit train` on a run folder while the first trains; then the first is "
                             "killed with SIGKILL and the command run again", "trials": 1,
        "outcome": "the second exits 2 naming the first one's pid and writes nothing; after the kill, the lock file "
                   "left behind does not block: the next run resumes (every restart of the kill -9 test also "
                   "reuses a killed run's lock)"}))
