"""Any checkpoint is a generator: sample, interpolate and eval take `RUN/checkpoints/step_N.pt` (its EMA
generator at the stage it was saved at, `--no-ema` for the raw one), hostile .pt files are refused
cleanly, and a Progressive GAN run keeps the last checkpoint of every scale."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion_mnist
from gankit.checkpoint import (checkpoint_path, export_generator, list_checkpoints, load_checkpoint_generator,
                               load_generator, load_training_state, prune_checkpoints, run_folder_of)
from gankit.config import validate
from gankit.models import build_generator
from gankit.viz.grid import to_uint8

# 4 -> 8 -> 16 px in 2 + 3 + 3 steps, 2 of fade-in; only the newest checkpoint is asked for (keep 1).
TINY_PGAN = ["data.resolution=16", "data.max_images=64", "model.depths=[8,8,8]", "model.z_dim=8",
             "train.max_iter_at_scale=[2,3,3]", "train.fade_iters=2", "train.batch_size=8", "train.log_every=1",
             "train.sample_every=100", "train.checkpoint_every=100", "train.keep_checkpoints=1", "train.grid_size=4"]
Z_DIM = 8
MARKER = "gankit-test-pickle-ran"
pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def pgan_run(tmp_path_factory):
    from gankit.cli import main

    run = tmp_path_factory.mktemp("runs") / "pgan"
    args = ["train", "pgan-fashion-mnist", "--out", str(run)]
    for item in TINY_PGAN:
        args += ["--set", item]
    assert main(args) == 0
    return run


def seeded_images(generator, num: int, seed: int) -> np.ndarray:
    """What `gankit sample --seed` renders: latents drawn on the CPU from the seed, as uint8 [N, H, W]."""
    z = torch.randn(num, Z_DIM, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return to_uint8(generator(z))[:, 0].numpy()


def sampled_images(run_cli, source, folder, *extra) -> np.ndarray:
    code, _, err = run_cli("sample", source, "--num", 6, "--seed", 3, "--out-dir", folder, *extra)
    assert code == 0, err
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())])


def stage_generator(state: dict, weights: str, stage: int, alpha: float):
    """The generator of a checkpoint's state rebuilt by hand, rendering `stage` at the full resolution."""
    config = validate(state["config"])
    generator = build_generator(config.model, config.data)
    generator.load_state_dict(state[weights])
    generator.set_progress(stage, alpha)
    return generator.eval()


def test_the_last_checkpoint_of_every_scale_survives_pruning(pgan_run):
    # keep_checkpoints=1, checkpoint_every=100: 2 and 5 are the ends of the 4 and 8 px scales, 8 the final one.
    assert [p.name for p in list_checkpoints(pgan_run)] == ["step_000002.pt", "step_000005.pt", "step_000008.pt"]
    stages = [load_training_state(p)["G_ema"]["current_stage"].item() for p in list_checkpoints(pgan_run)]
    assert stages == [0, 1, 2]


def test_pruning_keeps_the_newest_of_each_stage(tmp_path):
    for step in range(1, 11):
        checkpoint_path(tmp_path, step).parent.mkdir(exist_ok=True)
        checkpoint_path(tmp_path, step).write_bytes(b"")
    prune_checkpoints(tmp_path, 2, stage_of_step=lambda step: (step - 1) // 4)  # stages of steps 1-4, 5-8, 9-
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000004.pt", "step_000008.pt", "step_000009.pt",
                                                            "step_000010.pt"]
    prune_checkpoints(tmp_path, 1)  # without stages: the newest only
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000010.pt"]


def test_sample_from_an_earlier_stage_checkpoint(pgan_run, run_cli, tmp_path):
    checkpoint = pgan_run / "checkpoints" / "step_000002.pt"
    images = sampled_images(run_cli, checkpoint, tmp_path / "ckpt")
    state = load_training_state(checkpoint)
    assert images.shape == (6, 16, 16)
    assert np.array_equal(images, seeded_images(stage_generator(state, "G_ema", 0, 1.0), 6, 3))
    # Rendered at 4 px and upsampled to 16: constant 4x4 blocks; the run's final 16 px generator differs.
    assert (images.reshape(6, 4, 4, 4, 4).std(axis=(2, 4)) == 0).all() and images.std() > 0
    assert not np.array_equal(images, sampled_images(run_cli, pgan_run, tmp_path / "run"))


def test_sample_mid_fade_in_keeps_the_saved_alpha(run_cli, tmp_path):
    # Stopped inside the 8 px fade-in: the last update (index 3) was step 1 of 2 of the fade-in, alpha 0.5.
    from gankit.cli import main

    run = tmp_path / "run"
    args = ["train", "pgan-fashion-mnist", "--out", str(run), "--set", "train.steps=4"]
    for item in TINY_PGAN:
        args += ["--set", item]
    assert main(args) == 0
    checkpoint = run / "checkpoints" / "step_000004.pt"
    state = load_training_state(checkpoint)
    assert (state["G_ema"]["current_stage"].item(), state["G_ema"]["current_alpha"].item()) == (1, 0.5)
    images = sampled_images(run_cli, checkpoint, tmp_path / "imgs")
    assert np.array_equal(images, seeded_images(stage_generator(state, "G_ema", 1, 0.5), 6, 3))
    assert not np.array_equal(images, seeded_images(stage_generator(state, "G_ema", 1, 1.0), 6, 3))


def test_no_ema_on_a_checkpoint_uses_the_raw_generator(pgan_run, run_cli, tmp_path):
    checkpoint = pgan_run / "checkpoints" / "step_000005.pt"
    state = load_training_state(checkpoint)
    raw = sampled_images(run_cli, checkpoint, tmp_path / "raw", "--no-ema")
    assert np.array_equal(raw, seeded_images(stage_generator(state, "G", 1, 1.0), 6, 3))
    assert not np.array_equal(raw, seeded_images(stage_generator(state, "G_ema", 1, 1.0), 6, 3))


def test_interpolate_accepts_a_checkpoint(pgan_run, tmp_path):
    from gankit.cli import main

    checkpoint = pgan_run / "checkpoints" / "step_000005.pt"
    generator, meta = load_checkpoint_generator(checkpoint)
    export_generator(tmp_path / "export", generator, meta["model"].model_dump(mode="json"),
                     meta["data"].model_dump(mode="json"), meta["step"])
    outputs = {}
    for name, source in (("checkpoint", checkpoint), ("export", tmp_path / "export"), ("run", pgan_run)):
        outputs[name] = tmp_path / f"{name}.png"
        assert main(["interpolate", str(source), "--mode", "lerp", "--steps", "4", "--pairs", "2",
                     "--out", str(outputs[name])]) == 0
    pictures = {name: np.asarray(Image.open(path)) for name, path in outputs.items()}
    assert np.array_equal(pictures["checkpoint"], pictures["export"])  # the checkpoint's 8 px EMA generator
    assert not np.array_equal(pictures["checkpoint"], pictures["run"])


def test_eval_of_a_checkpoint_appends_to_its_run(pgan_run, run_cli, tmp_path):
    checkpoint = pgan_run / "checkpoints" / "step_000005.pt"
    generator, meta = load_checkpoint_generator(checkpoint)
    export_generator(tmp_path / "export", generator, meta["model"].model_dump(mode="json"),
                     meta["data"].model_dump(mode="json"), meta["step"])
    results = {}
    for name, source in (("checkpoint", checkpoint), ("export", tmp_path / "export")):
        code, _, err = run_cli("eval", source, "--metrics", "ms_ssim", "--num-samples", 16,
                               "--out", tmp_path / f"{name}.json")
        assert code == 0, err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["checkpoint"]["ms_ssim"] == results["export"]["ms_ssim"]
    assert run_folder_of(checkpoint) == pgan_run and run_folder_of(tmp_path / "export") is None
    records = [json.loads(line) for line in (pgan_run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["origin"], r["ms_ssim"]) for r in records] == [(5, "eval", results["checkpoint"]["ms_ssim"])]


def test_eval_no_ema_scores_the_raw_generator_and_leaves_the_run_curves_alone(pgan_run, run_cli, tmp_path):
    checkpoint = pgan_run / "checkpoints" / "step_000005.pt"
    raw, meta = load_checkpoint_generator(checkpoint, ema=False)
    export_generator(tmp_path / "raw-export", raw, meta["model"].model_dump(mode="json"),
                     meta["data"].model_dump(mode="json"), meta["step"])
    metrics_file = pgan_run / "metrics.jsonl"
    before = metrics_file.read_text() if metrics_file.exists() else ""
    results = {}
    for name, source, extra in (("no-ema", checkpoint, ["--no-ema"]), ("raw-export", tmp_path / "raw-export", []),
                                ("ema", checkpoint, [])):
        code, _, err = run_cli("eval", source, "--metrics", "ms_ssim", "--num-samples", 16, *extra,
                               "--out", tmp_path / f"{name}.json")
        assert code == 0, err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())["ms_ssim"]
    assert results["no-ema"] == results["raw-export"] != results["ema"]
    after = metrics_file.read_text()
    assert after.startswith(before) and len(after.splitlines()) == len(before.splitlines()) + 1  # the EMA eval only
    code, _, err = run_cli("eval", "--fake", tmp_path, "--no-ema", "--metrics", "fd_fmnist")
    assert code == 2 and "--no-ema applies to a run folder or a checkpoint file" in err


def test_a_checkpoint_gives_the_same_generator_as_the_export_written_with_it(pgan_run):
    # The final checkpoint and the run's export were written together, from the same EMA weights.
    from_checkpoint, meta = load_generator(list_checkpoints(pgan_run)[-1])
    from_export, export_meta = load_generator(pgan_run)
    assert meta["step"] == export_meta["step"] == 8
    assert np.array_equal(seeded_images(from_checkpoint, 4, 0), seeded_images(from_export, 4, 0))


class RunsCodeWhenUnpickled:
    def __init__(self, marker_path):
        self.marker_path = marker_path

    def __reduce__(self):
        return (open, (self.marker_path, "w"))


def damage_checkpoint(state: dict, damage: str, tmp_path) -> None:
    if damage == "huge sizes":
        state["config"]["model"]["depths"] = [100_000] * 3  # ~10^11 parameters if built
    elif damage == "wrong shape":
        state["G_ema"]["to_rgb.0.weight"] = torch.zeros(2, 2)
    elif damage == "stage out of range":
        state["G_ema"]["current_stage"] = torch.tensor(7)
    elif damage == "alpha not a number":
        state["G_ema"]["current_alpha"] = torch.tensor(float("nan"))
    elif damage == "weights not tensors":
        state["G_ema"] = {"to_rgb.0.weight": "a string"}
    elif damage == "invalid config":
        state["config"]["model"]["arch"] = "evil"
    elif damage == "step not a number":
        state["step"] = "many"
    elif damage == "code in the pickle":
        state["payload"] = RunsCodeWhenUnpickled(str(tmp_path / MARKER))


HOSTILE = {"huge sizes": "its config needs (100000,)", "wrong shape": "to_rgb.0.weight",
           "stage out of range": "stored progress is invalid", "alpha not a number": "stored progress is invalid",
           "weights not tensors": "not a mapping of names to tensors", "invalid config": "model.arch",
           "step not a number": "no valid step count", "code in the pickle": "cannot be loaded safely",
           "random bytes": "cannot be loaded safely", "not a training state": "not a gankit training checkpoint"}


@pytest.mark.parametrize("damage", list(HOSTILE))
def test_hostile_or_damaged_checkpoints_are_refused_cleanly(pgan_run, run_cli, tmp_path, damage):
    hostile = tmp_path / "step_000005.pt"
    if damage == "random bytes":
        hostile.write_bytes(os.urandom(4096))
    elif damage == "not a training state":
        torch.save({"weights": torch.zeros(3)}, hostile)
    else:
        state = torch.load(pgan_run / "checkpoints" / "step_000005.pt", weights_only=True)
        damage_checkpoint(state, damage, tmp_path)
        torch.save(state, hostile)
    for command in (["sample", hostile, "--out", tmp_path / "x.png"], ["sample", hostile, "--no-ema", "--out", tmp_path / "z.png"],
                    ["interpolate", hostile, "--out", tmp_path / "y.png"]):
        if damage in ("wrong shape", "stage out of range", "alpha not a number", "weights not tensors") and \
                "--no-ema" in command:
            continue  # the damage is in G_ema; the raw G of the same file is intact
        code, _, err = run_cli(*command)
        assert code == 2 and HOSTILE[damage] in err and str(hostile) in err and "Traceback" not in err
    assert not any((tmp_path / name).exists() for name in ("x.png", "y.png", "z.png"))
    assert not (tmp_path / MARKER).exists()
