"""Data-parallel throughput on this machine: 2 processes with 1 thread each (torchrun, gloo) against
1 process with 2 threads, training the dcgan-fashion-mnist preset (global batch 64 in both).

Each configuration runs the real `gankit train` in a fresh run folder; its images/s is the median of
the stats.jsonl intervals after the first (start-up and warm-up excluded). The two are alternated
(one process, two processes, one process, ...) so that a change in the machine's load hits both, and
the ratio of their medians is printed.

    python benchmarks/ddp_speed.py                       # 120 steps, 2 rounds
    python benchmarks/ddp_speed.py --steps 60 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PRESET = "dcgan-fashion-mnist"
# The preset as measured in docs/benchmarks.md: unconditional, constant learning rate.
PRESET_SETTINGS = ["model.conditioning=none", "train.lr_schedule=constant"]


def run_once(folder: Path, processes: int, steps: int, log_every: int) -> float:
    """Median images/s over the log intervals after the first, for one training run."""
    run = folder / f"run_{processes}p_{len(list(folder.iterdir()))}"
    gankit_args = ["train", PRESET, "--out", str(run), "--set", f"train.steps={steps}",
                   "--set", f"train.log_every={log_every}", "--set", f"train.sample_every={steps}",
                   "--set", f"train.checkpoint_every={steps}", *[a for s in PRESET_SETTINGS for a in ("--set", s)]]
    threads = 2 // processes
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if processes == 1:
        command = [sys.executable, "-m", "gankit", *gankit_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "gankit", *gankit_args]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    return statistics.median(r["img_per_s"] for r in records[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    results: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for processes in (1, 2):
                speed = run_once(Path(tmp), processes, args.steps, args.log_every)
                results[processes].append(speed)
                print(f"round {round_index + 1}: {processes} process(es) x {2 // processes} thread(s): "
                      f"{speed:.1f} img/s", flush=True)
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(f"{PRESET}, global batch 64, {args.steps} steps, median of {args.rounds} round(s):")
    print(f"  1 process  x 2 threads: {one:.1f} img/s")
    print(f"  2 processes x 1 thread: {two:.1f} img/s")
    print(f"  ratio (2 processes / 1 process): {two / one:.2f}")


if __name__ == "__main__":
    main()
