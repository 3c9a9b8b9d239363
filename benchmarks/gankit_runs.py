"""What the quality benchmarks share: gankit's command line in this interpreter, training runs a few at a
time, a run's last stats record and its fd_fmnist."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# StyleGAN2's config F regularizers, unconditional, on the `stylegan2-fashion-mnist` preset (whose CPU recipe
# leaves path length and style mixing out and is class-conditional): the preset until 2026-12-02.
STYLEGAN2_CONFIG_F = ["model.conditioning=none", "train.grid_size=64", "train.channels_last=false",
                      "loss.pl_weight=2.0", "model.style_mixing=0.9", "loss.r1_gamma=0.01"]


def gankit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gankit", *args]


def score(folder: Path) -> dict:
    """`gankit eval FOLDER --metrics fd_fmnist` (seed 0), kept beside the run as FOLDER.fd_fmnist.json."""
    out = folder.parent / f"{folder.name}.fd_fmnist.json"
    subprocess.run(gankit_command("eval", str(folder), "--metrics", "fd_fmnist", "--out", str(out), "--seed", "0"),
                   check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def comma_choices(parser: argparse.ArgumentParser, text: str, choices, what: str) -> list[str]:
    """The comma-separated names of `text`, each one of `choices`, or the parser's usage error naming the rest."""
    names = text.split(",")
    unknown = [n for n in names if n not in choices]
    if unknown:
        parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(choices)}")
    return names


def train_runs(commands: dict[Path, list[str]], jobs: int, stop_after: float | None = None) -> dict[Path, float]:
    """Runs the training commands, `jobs` at a time (one thread each when more than one), each logged to
    FOLDER.train.log beside its run folder; returns the wall seconds of each. With `stop_after`, each run gets
    one SIGTERM after that many seconds: gankit saves the run and exits with 128 + SIGTERM."""
    env = dict(os.environ)
    if jobs > 1:  # two cores: one thread per run beats two runs fighting over two threads each
        env["OMP_NUM_THREADS"] = "1"
    accepted = (0, 128 + signal.SIGTERM) if stop_after is not None else (0,)
    pending, running, seconds = list(commands.items()), [], {}
    while pending or running:
        while pending and len(running) < jobs:
            folder, command = pending.pop(0)
            log = open(folder.parent / f"{folder.name}.train.log", "w")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append({"folder": folder, "process": process, "log": log, "started": time.perf_counter(),
                            "signalled": False})
        time.sleep(0.5)
        for job in list(running):
            folder, process = job["folder"], job["process"]
            elapsed = time.perf_counter() - job["started"]
            if process.poll() is None:
                if stop_after is not None and elapsed > stop_after and not job["signalled"]:
                    process.send_signal(signal.SIGTERM)
                    job["signalled"] = True
                continue
            running.remove(job)
            job["log"].close()
            if process.returncode not in accepted:
                sys.exit(f"training {folder} failed with exit code {process.returncode}; see {job['log'].name}")
            seconds[folder] = elapsed
            print(f"trained {folder} in {elapsed / 60:.1f} min", flush=True)
    return seconds


def last_stats(folder: Path) -> dict:
    """The run's last stats.jsonl record ({} before the first)."""
    lines = (folder / "stats.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}
