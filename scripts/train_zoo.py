"""Trains one entry of gankit's zoo from scratch and installs it into src/gankit/zoo/ (docs/zoo.md).

    python scripts/train_zoo.py dcgan-fashion-mnist          # train, evaluate, store, update index.json
    python scripts/train_zoo.py wgangp-25gaussians --runs /tmp/zoo-runs
    python scripts/train_zoo.py dcgan-fashion-mnist --skip-train   # store an entry already trained in --runs

Each entry's recipe is a preset and phases of `gankit train` (a phase resumes the run with new `--set`
values: a lower learning rate at the end, say). After training, the run's exported EMA generator is
evaluated, written in fp16 when that keeps its scores (measured: both are evaluated with the same seed),
checksummed into src/gankit/zoo/index.json, and given a model card (recipe, steps, images seen, wall time,
machine, metrics) in its generator.json; its grid goes to docs/images/zoo/NAME.png. Reproducible from a
fresh clone after the README's set-up; the figures depend on the machine only through the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "src" / "gankit" / "zoo"
GRIDS = ROOT / "docs" / "images" / "zoo"
GANKIT = [sys.executable, "-m", "gankit"]


@dataclass
class Recipe:
    preset: str
    summary: str
    phases: list[list[str]]  # --set values of each `gankit train` call; the first starts the run
    metrics: str  # what the card reports (gankit eval --metrics)
    # How much worse fp16 weights may score than fp32 and still be shipped in fp16 (see fp16_keeps)
    fp16_tolerance: float = 0.02
    set_common: list[str] = field(default_factory=list)


RECIPES = {
    "dcgan-fashion-mnist": Recipe(
        preset="dcgan-fashion-mnist",
        summary="the demo's class-conditional DCGAN (widths 32, projection D) on Fashion-MNIST 32x32, trained "
                "30,000 steps",
        # The demo's recipe as shipped (its learning-rate decay starts at 30% of the run), 30,000 steps.
        phases=[["train.steps=30000"]],
        metrics="fd_fmnist,swd,class_accuracy",
        set_common=["train.checkpoint_every=2000", "train.sample_every=2000", "train.keep_checkpoints=20"],
    ),
    "pgan-fashion-mnist": Recipe(
        preset="pgan-fashion-mnist",
        summary="Progressive GAN (4 -> 32, depths 128/128/64/32, WGAN-GP) on Fashion-MNIST 32x32, the preset as "
                "shipped (12,000 steps)",
        phases=[[]],
        metrics="fd_fmnist,swd",
        set_common=["train.checkpoint_every=1000", "train.sample_every=1000"],
    ),
    "sngan-proj-fashion-mnist": Recipe(
        preset="sngan-proj-fashion-mnist",
        summary="class-conditional SNGAN with a projection discriminator on Fashion-MNIST 32x32, the preset as "
                "shipped (7,000 steps)",
        phases=[[]],
        metrics="fd_fmnist,swd,class_accuracy",
    ),
    "wgangp-25gaussians": Recipe(
        preset="wgangp-25gaussians",
        summary="WGAN-GP (MLP 256x3, 5 critic steps) on the 25-Gaussian grid, 12,000 steps",
        # The preset at half its widths and batch: a quarter of its cost per step, sized to a 2-core CPU
        # (the preset's widths 512 take over an hour there). 6,000 steps covered the 25 modes with only 22%
        # of the samples within 3 std of one; the second phase continues to the preset's 12,000.
        phases=[["model.g_channels=256", "model.d_channels=256", "train.batch_size=128", "train.steps=6000"],
                ["train.steps=12000"]],
        metrics="modes",
        fp16_tolerance=0.005,
    ),
}


def run(command: list[str]) -> str:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(command)}")
    return result.stdout


def train(recipe: Recipe, run_dir: Path) -> list[dict]:
    """Runs the phases; returns each one's command line and wall time."""
    phases = []
    for i, settings in enumerate(recipe.phases):
        source = recipe.preset if i == 0 else str(run_dir)
        sets = [a for s in [*recipe.set_common, *settings] for a in ("--set", s)] if i == 0 else \
            [a for s in settings for a in ("--set", s)]
        command = [*GANKIT, "train", source, *(["--out", str(run_dir)] if i == 0 else []), *sets]
        start = time.perf_counter()
        run(command)
        line = " ".join(["gankit", *command[3:]]).replace(str(run_dir), f"runs/zoo/{run_dir.name}")
        phases.append({"command": line, "seconds": round(time.perf_counter() - start, 1)})
    return phases


def evaluate(source: Path, metrics: str) -> dict:
    out = run([*GANKIT, "eval", str(source), "--metrics", metrics, "--json"])
    return json.loads(out)


def fp16_keeps(fp32: dict, fp16: dict, tolerance: float) -> bool:
    """Whether fp16 weights keep the scores: fd_fmnist at most `tolerance` (relative) worse; on the toys the
    same modes covered and the high-quality fraction at most `tolerance` (absolute) lower."""
    if "fd_fmnist" in fp32:
        return fp16["fd_fmnist"] <= fp32["fd_fmnist"] * (1 + tolerance)
    a, b = fp32["modes"], fp16["modes"]
    return b["covered"] == a["covered"] and b["high_quality"] >= a["high_quality"] - tolerance


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} CPUs, no GPU"


def half_copy(src: Path, dest: Path) -> None:
    """The export in src/ with its floating tensors in fp16, into dest/."""
    from gankit.checkpoint import write_half_export

    write_half_export(src, dest)


def store(name: str, recipe: Recipe, run_dir: Path, phases: list[dict]) -> dict:
    import torch

    fp32 = evaluate(run_dir, recipe.metrics)
    staging = run_dir / "zoo-fp16"
    if staging.exists():
        shutil.rmtree(staging)
    half_copy(run_dir, staging)
    fp16 = evaluate(staging / "generator.json", recipe.metrics)
    keep_half = fp16_keeps(fp32, fp16, recipe.fp16_tolerance)
    print(f"{name}: fp32 {fp32}, fp16 {fp16}: shipping {'fp16' if keep_half else 'fp32'}")
    chosen, chosen_metrics = (staging, fp16) if keep_half else (run_dir, fp32)

    entry_dir = ZOO / name
    if entry_dir.exists():
        shutil.rmtree(entry_dir)
    entry_dir.mkdir(parents=True)
    shutil.copyfile(chosen / "generator.safetensors", entry_dir / "generator.safetensors")
    meta = json.loads((chosen / "generator.json").read_text())
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    meta["card"] = {
        "name": name, "summary": recipe.summary, "preset": recipe.preset,
        "recipe": [p["command"] for p in phases],
        "steps": stats[-1]["step"], "images_seen": stats[-1]["images_seen"],
        "wall_time_s": round(sum(p["seconds"] for p in phases), 1),
        "machine": machine(), "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        "torch": torch.__version__,
        "weights_dtype": "float16" if keep_half else "float32",
        "metrics": {k: v for k, v in chosen_metrics.items() if k != "samples"},
        "metrics_fp32": {k: v for k, v in fp32.items() if k != "samples"},
        "trained": time.strftime("%Y-%m-%d"),
        "command": f"python scripts/train_zoo.py {name}",
    }
    (entry_dir / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")

    index_path = ZOO / "index.json"
    index = json.loads(index_path.read_text())
    from gankit.zoo import index_entry

    index["entries"][name] = index_entry(entry_dir, recipe.summary)
    index["entries"] = dict(sorted(index["entries"].items()))
    index_path.write_text(json.dumps(index, indent=2) + "\n")

    GRIDS.mkdir(parents=True, exist_ok=True)
    grid = GRIDS / f"{name}.png"
    conditional = meta["model"].get("conditioning", "none") != "none"  # then a row of 10 per class
    run([*GANKIT, "sample", f"zoo:{name}", "--num",
         ("100" if conditional else "64") if "fd_fmnist" in recipe.metrics else "2500",
         "--out", str(grid)])
    return meta["card"]


def card_markdown(name: str, card: dict) -> str:
    """The entry's section of docs/zoo.md, from its card."""
    metrics = card["metrics"]
    if "fd_fmnist" in metrics:
        swd = metrics.get("swd", {})
        scores = (f"fd_fmnist {metrics['fd_fmnist']:.2f} (10,000 samples against the test set), class_kl "
                  f"{metrics['class_kl']:.4f}; SWD x1e3 {', '.join(f'{k}: {v:.2f}' for k, v in swd.items())}")
        if "class_accuracy" in metrics:
            scores += (f"; class_accuracy {metrics['class_accuracy']:.3f} (the real test images: "
                       f"{metrics['class_accuracy_real']:.3f})")
    else:
        modes = metrics["modes"]
        scores = (f"{modes['covered']}/{modes['total']} modes covered, {modes['high_quality']:.1%} of 2,500 samples "
                  f"within 3 std of a mode, KL to uniform {modes['kl']:.3f}")
    minutes = card["wall_time_s"] / 60
    recipe = "\n".join(card["recipe"])
    return f"""### `zoo:{name}`

{card['summary'][0].upper() + card['summary'][1:]}. {card['steps']:,} steps, {card['images_seen']:,} images seen,
{minutes:.0f} min of training on {card['machine']} ({card['threads']} thread(s); trained {card['trained']}),
weights in {card['weights_dtype']}. Scores: {scores}.

```bash
python scripts/train_zoo.py {name}     # which runs:
{recipe}
```

![zoo:{name}](images/zoo/{name}.png)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--runs", default="runs/zoo", help="where the training runs go (default runs/zoo)")
    parser.add_argument("--skip-train", action="store_true", help="store the run already in --runs/NAME")
    args = parser.parse_args()
    recipe = RECIPES[args.name]
    run_dir = Path(args.runs).resolve() / args.name
    if args.skip_train:
        timing = run_dir / "zoo-phases.json"
        phases = json.loads(timing.read_text()) if timing.is_file() else []
    else:
        if run_dir.exists():
            sys.exit(f"{run_dir} exists: remove it, or pass --skip-train to store it")
        phases = train(recipe, run_dir)
        (run_dir / "zoo-phases.json").write_text(json.dumps(phases, indent=2))
    card = store(args.name, recipe, run_dir, phases)
    print(json.dumps(card, indent=2))
    print(card_markdown(args.name, card))


if __name__ == "__main__":
    main()
