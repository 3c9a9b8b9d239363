"""Which StyleGAN2 recipe gives the best samples per CPU-minute? Candidates of the `stylegan2-fashion-mnist`
preset trained for the same wall time each (stopped by SIGTERM, which saves the run), with the same seed,
each scored with `fd_fmnist` (10,000 samples of the EMA generator against the test set) and printed beside
its ratio to the config-F candidate of the same run (NVIDIA's 32x32 "auto" recipe: unconditional, R1 gamma
0.01, path length, style mixing, fp32), the preset before 2026-12-02.

Each candidate adds one change to an earlier one, in the order the search of docs/stylegan2.md ("The CPU
recipe") took; `shipped` is the preset as it is now.

    python benchmarks/stylegan2_recipe.py --jobs 2                   # every candidate, 8 minutes each
    python benchmarks/stylegan2_recipe.py --jobs 2 --only config-f,shipped --seconds 240
    python benchmarks/stylegan2_recipe.py --reuse                    # only score the runs already in --out

Runs go to OUT/<candidate>/ (default OUT: runs/stylegan2-recipe). With --jobs 2 the runs go two at a time on
one thread each, so that every candidate shares the machine the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gankit_runs import STYLEGAN2_CONFIG_F, comma_choices, gankit_command, last_stats, score, train_runs

CONFIG_F = [*STYLEGAN2_CONFIG_F, "train.precision=fp32"]
BF16 = ["train.precision=bf16", "train.channels_last=true"]
NO_PL_NO_MIXING = ["loss.pl_weight=0", "model.style_mixing=0"]  # NVIDIA's cifar config leaves both out
LABELS = ["model.conditioning=projection", "train.grid_size=100"]
LABELLED = [*CONFIG_F, *BF16, *NO_PL_NO_MIXING, *LABELS]  # the candidate "labels"; the later ones build on it
DOUBLE_LR = ["train.g_lr=4e-3", "train.d_lr=4.7e-3"]

# name: the overrides of the preset (later ones win)
CANDIDATES = {
    "config-f": CONFIG_F,
    "bf16": [*CONFIG_F, *BF16],
    "no-pl": [*CONFIG_F, *BF16, *NO_PL_NO_MIXING],
    "labels": LABELLED,
    "labels-decay": [*LABELLED, "train.lr_schedule=linear"],  # steps: below
    "gamma-0.1": [*LABELLED, "loss.r1_gamma=0.1"],
    "gamma-0.1-wide": [*LABELLED, "loss.r1_gamma=0.1", "model.channel_base=1024"],
    "gamma-1": [*LABELLED, "loss.r1_gamma=1.0"],
    "gamma-1-lr2": [*LABELLED, "loss.r1_gamma=1.0", *DOUBLE_LR],
    "gamma-5": [*LABELLED, "loss.r1_gamma=5.0"],
    "gamma-5-lr2": [*LABELLED, "loss.r1_gamma=5.0", *DOUBLE_LR],
    "shipped": [],  # = labels with loss.r1_gamma=20 (precision auto: bf16 on this CPU)
}
# The linear decay needs the run's length in steps: the number a candidate reaches in --seconds here.
DECAY_STEPS_PER_SECOND = 2850 / 480


def train_command(folder: Path, overrides: list[str], seconds: float, name: str) -> list[str]:
    steps = int(DECAY_STEPS_PER_SECOND * seconds) if name == "labels-decay" else 10 ** 7
    overrides = [*overrides, f"train.steps={steps}", "train.checkpoint_every=1000000"]
    return gankit_command("train", "stylegan2-fashion-mnist", "--out", str(folder),
                          *[a for o in overrides for a in ("--set", o)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidates")
    parser.add_argument("--seconds", type=float, default=480, help="wall time of each training run")
    parser.add_argument("--out", default="runs/stylegan2-recipe")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each when > 1)")
    parser.add_argument("--reuse", action="store_true", help="only score the runs already in --out")
    args = parser.parse_args(argv)
    names = comma_choices(parser, args.only, CANDIDATES, "candidate")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folders = {name: out / name for name in names}
    if not args.reuse:
        for folder in folders.values():
            if folder.exists():
                sys.exit(f"{folder} exists: remove it, or pass --reuse to score it")
        train_runs({folders[name]: train_command(folders[name], CANDIDATES[name], args.seconds, name)
                    for name in names}, args.jobs, stop_after=args.seconds)
    fd = {name: score(folder)["fd_fmnist"] for name, folder in folders.items()}
    print(f"\nstylegan2-fashion-mnist candidates, {args.seconds:.0f} s of training each, fd_fmnist (10,000 samples "
          "against the test set; lower is better)")
    print("| candidate | steps | img/s (last interval) | fd_fmnist | ratio to config-f |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, folder in folders.items():
        record = last_stats(folder)
        ratio = f"{fd[name] / fd['config-f']:.2f}" if "config-f" in fd else "-"
        print(f"| {name} | {record.get('step', 0):,} | {record.get('img_per_s', 0):.0f} | {fd[name]:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
