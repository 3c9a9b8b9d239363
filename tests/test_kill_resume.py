"""kill -9 at random moments of a training run, some during checkpoint writes: rerunning the same
`gankit train` command always resumes from a complete checkpoint and ends bit-identical to a run
that was never interrupted."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from child_process import KILL_HOOK_VARIABLE, Zygote, with_fault_injection
from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.files import TEMPORARY_PATTERN
from test_training import assert_same_tensors

pytestmark = needs_fashion_mnist

STEPS = 64  # 16 checkpoint intervals: more than ten kills advance the run by (see kill_plan)
SCHEDULE = ["train.checkpoint_every=4", "train.sample_every=4", "train.log_every=2", "train.keep_checkpoints=2"]
RESUMED = re.compile(r"^resumed \S+ from (\S+) at step (\d+)$", re.M)


def leftover_temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if TEMPORARY_PATTERN.match(p.name)]


def stats_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]


def wait_for_training(child, timeout=120.0) -> float:
    """Seconds from the child's start until it printed its first line (it starts training then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"^(training|resumed) ", child.text(), re.M):
            return time.monotonic() - child.started
        time.sleep(0.005)
    raise AssertionError(f"the child did not start training: {child.text()}")


def kill_plan(rng: random.Random, kills: int) -> list[tuple[str, object]]:
    """Half the kills at chosen writes (tests/fault_injection), half at random delays, shuffled.

    A hooked kill happens within the first six atomic writes of the child (config.yaml, stats.jsonl,
    then sample, checkpoint, exported weights and description per interval), so it advances the run
    by at most one checkpoint. The other kills come at a random moment of the child's set-up (a fraction
    of its expected length) or of its first one and a half checkpoint intervals of training."""
    hooked = ["step_*.pt:1", "step_*.pt:2", f"step_*.pt:{rng.randint(1, 2)}", "config.yaml:1",
              f"*:{rng.randint(1, 6)}"]
    hooked += [f"*:{rng.randint(1, 6)}" for _ in range(max(0, kills // 2 - len(hooked)))]
    plan = [("write", spec) for spec in hooked[: kills // 2]]
    delays = kills - len(plan)
    plan += [("during set-up", rng.random()) for _ in range(delays // 4)]
    plan += [("during training", rng.uniform(0.0, 1.5)) for _ in range(delays - delays // 4)]
    rng.shuffle(plan)
    return plan


def killed_training(zygote: Zygote, run: Path, argv: list[str], plan, setup_seconds: float,
                    interval_seconds: float, logs: Path):
    """Runs argv under the kill plan, then once more to the end; returns one record per child."""
    records = []
    for index, (kind, value) in enumerate([*plan, ("none", None)]):
        newest, partial_files = list_checkpoints(run), leftover_temporaries(run)
        env = {KILL_HOOK_VARIABLE: value} if kind == "write" else {}
        child = zygote.start(argv, logs / f"child_{index:02d}.txt", env=env)
        if kind == "during set-up":
            time.sleep(value * setup_seconds)
            code = zygote.kill(child)
        elif kind == "during training":
            wait_for_training(child)
            time.sleep(value * interval_seconds)
            code = zygote.kill(child)
        else:
            code = zygote.wait(child)
        text = child.text()
        resumed = RESUMED.search(text)
        records.append({"kind": kind, "value": value, "code": code, "text": text,
                        "expected_resume": newest[-1] if newest else None,
                        "resumed_from": Path(resumed.group(1)) if resumed else None,
                        "started_fresh": re.search(r"^training ", text, re.M) is not None,
                        "partial_files_at_start": len(partial_files),
                        "killed_during": re.search(r"SIGKILL during the write of (\S+)", text)})
    return records


def check_killed_run(reference: Path, run: Path, records: list[dict], kills: int) -> dict:
    killed = [r for r in records if r["code"] == -signal.SIGKILL]
    assert len(killed) >= kills, [(r["kind"], r["value"], r["code"]) for r in records]
    for r in records:
        # Killed, or finished: never refused, never crashed (a partial file would end in exit 2 or 1).
        assert r["code"] in (0, -signal.SIGKILL), r["text"]
        assert "Traceback" not in r["text"] and "error:" not in r["text"], r["text"]
        # A child that got as far as loading resumed from the newest complete checkpoint there was
        # (or started fresh when there was none).
        if r["resumed_from"] is not None or r["started_fresh"]:
            assert r["resumed_from"] == r["expected_resume"], (r["resumed_from"], r["expected_resume"])
    resumes = [r for r in records if r["resumed_from"] is not None]
    assert records[-1]["code"] == 0 and len(resumes) >= kills // 2
    during_checkpoint = [r for r in killed if r["killed_during"] and r["killed_during"].group(1).endswith(".pt")]
    assert len(during_checkpoint) >= 2
    # Each kill during a write left a half-written temporary file that the next start found (and did not load).
    partial_files = sum(r["partial_files_at_start"] for r in records)
    assert partial_files >= sum(1 for r in killed if r["killed_during"])

    a = load_training_state(list_checkpoints(reference)[-1])
    b = load_training_state(list_checkpoints(run)[-1])
    assert a["step"] == b["step"] == STEPS
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng"):
        assert_same_tensors(a[key], b[key], key)
    for name in ("generator.safetensors", f"samples/step_{STEPS:06d}.png"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    assert stats_steps(run) == stats_steps(reference) == list(range(2, STEPS + 1, 2))
    assert leftover_temporaries(run) == []
    return {"kills": len(killed), "during_checkpoint": len(during_checkpoint), "resumes": len(resumes),
            "partial_files": partial_files,
            "during_other_writes": sum(1 for r in killed if r["killed_during"]) - len(during_checkpoint),
            "in_set_up": sum(1 for r in killed if r["kind"] == "during set-up"),
            "in_training": sum(1 for r in killed if r["kind"] == "during training")}


def test_fault_injection_kills_during_the_chosen_write(tmp_path):
    """tests/fault_injection: the 2nd write matching *.bin is cut to half and killed before its rename;
    the writes before it land, and without the variable every write lands."""
    script = ("from pathlib import Path\n"
              "from gankit.files import atomic_write\n"
              "for name in ['a.bin', 'other.txt', 'b.bin', 'c.bin']:\n"
              "    atomic_write(Path(name), lambda tmp: Path(tmp).write_bytes(bytes(1000)))\n")
    env = with_fault_injection({**os.environ})
    env.pop(KILL_HOOK_VARIABLE, None)
    for folder, hook in ((tmp_path / "hooked", "*.bin:2"), (tmp_path / "plain", None)):
        folder.mkdir()
        child = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True,
                               env={**env, KILL_HOOK_VARIABLE: hook} if hook else env, timeout=120)
        finished = sorted(p.name for p in folder.iterdir() if not TEMPORARY_PATTERN.match(p.name))
        partial = [(TEMPORARY_PATTERN.match(p.name)["target"], p.stat().st_size) for p in leftover_temporaries(folder)]
        if hook:
            assert child.returncode == -signal.SIGKILL, child.stderr
            assert child.stderr == "test hook: SIGKILL during the write of b.bin\n"
            assert finished == ["a.bin", "other.txt"] and partial == [("b.bin", 500)]
        else:
            assert child.returncode == 0, child.stderr
            assert finished == ["a.bin", "b.bin", "c.bin", "other.txt"] and partial == []


def test_kill_9_at_random_moments_resumes_bit_identically(tmp_path, record_property):
    zygote = Zygote.shared()
    reference, run = tmp_path / "reference", tmp_path / "killed"
    child = zygote.start(tiny_train_args(reference, steps=STEPS, extra=SCHEDULE), tmp_path / "reference.txt")
    setup_seconds = wait_for_training(child)
    assert zygote.wait(child) == 0, child.text()
    interval_seconds = (time.monotonic() - child.started - setup_seconds) / (STEPS / 4)

    plan = kill_plan(random.Random(1234), kills=10)
    records = killed_training(zygote, run, tiny_train_args(run, steps=STEPS, extra=SCHEDULE), plan,
                              setup_seconds, interval_seconds, tmp_path)
    counts = check_killed_run(reference, run, records, kills=10)
    record_property("reliability", json.dumps({
        "point": 1, "fault": f"kill -9 at random moments of `gankit train` (16x16 model, {STEPS} steps), "
                             "then the same command again",
        "trials": counts["kills"],
        "outcome": f"{counts['during_checkpoint']} kills during a checkpoint write, {counts['during_other_writes']} "
                   f"during other writes, {counts['in_set_up']} at a random moment of the set-up and "
                   f"{counts['in_training']} of training; {counts['resumes']} restarts "
                   "resumed, each from the newest complete checkpoint, none failed; "
                   f"{counts['partial_files']} half-written files found at restarts, none loaded, all removed; "
                   "final weights, optimizer, RNG state, export and sample grid "
                   "bit-identical to an uninterrupted run"}))


@pytest.mark.slow
def test_kill_9_of_real_processes_many_times(tmp_path, record_property):
    """The same with real `python -m gankit` processes (full start-up each time) and 30 kills."""
    steps, kills = 120, 30
    env = with_fault_injection({**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})

    def launch(run, hook=None):
        argv = [sys.executable, "-m", "gankit", *tiny_train_args(run, steps=steps, extra=SCHEDULE)]
        return subprocess.Popen(argv, env={**env, KILL_HOOK_VARIABLE: hook} if hook else env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference, run = tmp_path / "reference", tmp_path / "killed"
    proc = launch(reference)
    proc.stdout.readline()  # training starts
    started = time.monotonic()
    assert proc.wait(timeout=600) == 0
    interval_seconds = (time.monotonic() - started) / (steps / 4)
    rng = random.Random(99)
    killed = during_writes = 0
    for index in range(kills + 1):
        hook = f"*:{rng.randint(1, 6)}" if index < kills and index % 2 else None
        newest = list_checkpoints(run)
        proc = launch(run, hook)
        first_line = proc.stdout.readline()
        if index < kills and not hook:
            time.sleep(rng.uniform(0, 1.5) * interval_seconds)
            proc.kill()
        out, err = proc.communicate(timeout=600)
        out = first_line + out
        assert proc.returncode in (0, -signal.SIGKILL), err
        resumed = RESUMED.search(out)
        if resumed or re.search(r"^training ", out, re.M):  # it got as far as loading (a hook may kill earlier)
            assert (Path(resumed.group(1)) if resumed else None) == (newest[-1] if newest else None)
        killed += proc.returncode == -signal.SIGKILL
        during_writes += "SIGKILL during the write" in err
    assert proc.returncode == 0
    a, b = (load_training_state(list_checkpoints(r)[-1]) for r in (reference, run))
    assert a["step"] == b["step"] == steps
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng"):
        assert_same_tensors(a[key], b[key], key)
    assert leftover_temporaries(run) == []
    assert killed >= 20
    record_property("reliability", json.dumps({
        "point": 1, "fault": "kill -9 of real `python -m gankit train` processes (120 steps), then the same "
                             "command again", "trials": killed,
        "outcome": f"{during_writes} kills during writes, the rest at random delays; always resumed from the newest "
                   "complete checkpoint; final state bit-identical to an uninterrupted run"}))
