"""Does bf16 autocast cost sample quality? The same preset trained in fp32 and in bf16 for the same
number of steps (same seed, same data order), each generator scored with `fd_fmnist` (10,000 samples
against the Fashion-MNIST test set), printed as the bf16/fp32 ratio.

A precision may be a preset's default only where the ratio stays within 1.10 (issue: "a bf16 run
reaches an fd_fmnist within 10% of the fp32 run's at equal steps"). Several seeds show how much of a
difference is seed noise rather than precision.

    python benchmarks/bf16_quality.py                          # dcgan-fashion-mnist, its 2000 steps, seed 0
    python benchmarks/bf16_quality.py --seeds 0,1 --parallel    # both precisions at once, one thread each
    python benchmarks/bf16_quality.py --reuse runs/bf16-check   # score runs trained earlier into that folder

Runs go to OUT/<precision>-seed<seed>/ (default OUT: runs/bf16-check); an existing finished run is
scored again rather than retrained (training continues an unfinished one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gankit_runs import gankit_command, score

PRECISIONS = ("fp32", "bf16")


def train_all(jobs: list[tuple[str, int, Path]], preset: str, steps: int | None, parallel: bool) -> dict:
    """Trains each (precision, seed, folder); returns wall seconds per folder."""
    env = dict(os.environ)
    if parallel:  # two cores: one thread per run beats two runs fighting over two threads each
        env["OMP_NUM_THREADS"] = "1"
    started, seconds, running = {}, {}, []
    for precision, seed, folder in jobs:
        command = gankit_command("train", preset, "--out", str(folder), "--set", f"train.precision={precision}",
                                 "--set", f"seed={seed}")
        if steps:
            command += ["--set", f"train.steps={steps}"]
        log = open(folder.parent / f"{folder.name}.train.log", "w")
        started[folder] = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        running.append((folder, process, log))
        if not parallel:
            process.wait()
            seconds[folder] = time.perf_counter() - started[folder]
    for folder, process, log in running:
        code = process.wait()
        seconds.setdefault(folder, time.perf_counter() - started[folder])  # parallel: until the last ends
        log.close()
        if code != 0:
            sys.exit(f"training {folder} failed with exit code {code}; see {folder.parent / (folder.name + '.train.log')}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="dcgan-fashion-mnist")
    parser.add_argument("--steps", type=int, help="default: the preset's train.steps")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--out", default="runs/bf16-check")
    parser.add_argument("--parallel", action="store_true", help="train all runs at once, one thread each")
    parser.add_argument("--reuse", action="store_true", help="only score the runs already in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(p, s, out / f"{p}-seed{s}") for s in seeds for p in PRECISIONS]
    if not args.reuse:
        for folder, secs in train_all(jobs, args.preset, args.steps, args.parallel).items():
            print(f"trained {folder} in {secs / 60:.1f} min", flush=True)
    results = {}
    for precision, seed, folder in jobs:
        value = score(folder)
        results[(precision, seed)] = value["fd_fmnist"]
        print(f"{precision} seed {seed}: fd_fmnist {value['fd_fmnist']:.2f}  class_kl {value['class_kl']:.4f}",
              flush=True)
    ratios = [results[("bf16", s)] / results[("fp32", s)] for s in seeds]
    for s, r in zip(seeds, ratios):
        print(f"seed {s}: bf16/fp32 fd_fmnist ratio {r:.3f}")
    if len(seeds) > 1:
        fp32 = [results[("fp32", s)] for s in seeds]
        print(f"fp32 across seeds: {min(fp32):.2f}..{max(fp32):.2f} (seed spread {max(fp32) / min(fp32):.3f}x)")
    verdict = statistics.median(ratios)
    print(f"median ratio {verdict:.3f}: bf16 {'holds' if verdict <= 1.10 else 'does NOT hold'} the 10% bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
