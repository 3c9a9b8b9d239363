import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import needs_fashion_mnist, resume_without_state, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_training_state

pytestmark = needs_fashion_mnist


def final_state(run: Path) -> dict:
    return load_training_state(list_checkpoints(run)[-1])


def assert_same_tensors(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tensors(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a} != {b}"


def test_training_writes_every_artifact(tmp_path, run_cli):
    run = tmp_path / "run"
    code, out, _ = run_cli(*tiny_train_args(run, steps=8, extra=["train.keep_checkpoints=1"]))
    assert code == 0
    assert f"final samples: {run / 'samples' / 'step_000008.png'}" in out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["steps"] == 8 and config["loss"]["gp_weight"] == 10.0  # defaults filled in
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6, 8]
    assert stats[-1]["images_seen"] == 8 * 16
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s"):
        assert isinstance(stats[-1][key], float)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000004.png", "step_000008.png"]
    assert [p.name for p in list_checkpoints(run)] == ["step_000008.pt"]  # keep_checkpoints=1
    assert (run / "generator.safetensors").is_file() and json.loads((run / "generator.json").read_text())["step"] == 8
    assert any((run / "tb").iterdir())
    assert "done: 8 steps" in (run / "log.txt").read_text()
    state = final_state(run)
    assert state["step"] == 8 and state["images_seen"] == 128
    # The EMA generator moved away from the raw one but stayed close to it.
    g, ema = state["G"], state["G_ema"]
    assert not torch.equal(g["net.0.weight"], ema["net.0.weight"])


@pytest.mark.parametrize("preset, extra", [
    ("dcgan-fashion-mnist", []),
    ("wgangp-fashion-mnist", ["train.n_critic=2"]),
    ("wgan-fashion-mnist", ["train.n_critic=2"]),
    # Spectral norm: its power-iteration vectors u, v are buffers of G and D, saved and restored.
    ("dcgan-fashion-mnist", ["model.d_spectral_norm=true", "model.g_spectral_norm=true"]),
    # Lazy R1 every 3rd D update (the counter must come from the saved step) and LeCam's EMAs.
    ("dcgan-fashion-mnist", ["loss.r1_gamma=1.0", "loss.reg_every=3", "loss.lecam=0.1", "train.n_critic=2"]),
    # DiffAugment draws from the default generator, whose state the checkpoint saves; R1 through it.
    ("dcgan-fashion-mnist", ["augment.policy=diffaugment", "loss.r1_gamma=1.0"]),
    # ADA: p and the r_t accumulators in the checkpoint (an interval of 3 steps: the checkpoint at step 4
    # falls inside one), with spectral norm and LeCam on.
    ("dcgan-fashion-mnist", ["augment.policy=ada", "augment.p=0.3", "augment.interval=3",
                             "augment.speed_images=1000", "model.d_spectral_norm=true", "loss.lecam=0.1"]),
    # Class-conditional: the reals' labels come with the data order, the fakes' from the saved RNG state.
    ("dcgan-fashion-mnist", ["model.conditioning=projection", "model.d_spectral_norm=true", "model.d_norm=none",
                             "loss.kind=hinge"]),
    ("dcgan-fashion-mnist", ["model.conditioning=acgan", "augment.policy=diffaugment", "train.n_critic=2"]),
])
def test_resume_is_bit_identical(tmp_path, run_cli, preset, extra):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(*tiny_train_args(straight, preset, steps=8, extra=extra))[0] == 0
    assert run_cli(*tiny_train_args(split, preset, steps=4, extra=extra))[0] == 0
    code, out, _ = run_cli("train", split, "--set", "train.steps=8")
    assert code == 0 and "resumed" in out and "at step 4" in out
    a, b = final_state(straight), final_state(split)
    assert a["step"] == b["step"] == 8
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng", "lecam", "augment"):
        assert_same_tensors(a[key], b[key], key)
    assert (a["lecam"] is not None) == ("loss.lecam=0.1" in extra)
    assert (a["augment"] is not None) == ("augment.policy=ada" in extra)
    # And the exported generators agree too.
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()


def test_lazy_r1_and_lecam_are_logged_on_the_updates_that_compute_them(tmp_path, run_cli):
    run = tmp_path / "run"
    settings = ["loss.r1_gamma=0.1", "loss.r2_gamma=0.1", "loss.reg_every=2", "loss.lecam=0.1", "train.log_every=1"]
    assert run_cli(*tiny_train_args(run, steps=4, extra=settings))[0] == 0
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    # D updates 0 and 2 (steps 1 and 3) are regularized; LeCam runs at every one.
    assert [("r1" in s, "r2" in s, "lecam" in s) for s in stats] == [(True, True, True), (False, False, True)] * 2
    assert all(s["r1"] > 0 and s["r2"] > 0 for s in stats[::2])
    # Logged every 2 steps, r1 is the mean over the one update that computed it, not half of it.
    again = tmp_path / "again"
    assert run_cli(*tiny_train_args(again, steps=4, extra=[*settings[:-1], "train.log_every=2"]))[0] == 0
    pairs = [json.loads(line) for line in (again / "stats.jsonl").read_text().splitlines()]
    assert [p["r1"] for p in pairs] == pytest.approx([s["r1"] for s in stats[::2]], rel=1e-6)


def test_a_checkpoint_without_lecam_state_resumes_afresh(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=4, extra=["loss.lecam=0.1"]))[0] == 0
    resume_without_state(run, run_cli, "lecam")  # as written before LeCam existed
    assert final_state(run)["lecam"]["ema"].shape == (2,)


def test_every_objective_trains(tmp_path, run_cli):
    for kind in ("gan", "nsgan", "lsgan", "wgan", "wgan-gp", "hinge"):
        run = tmp_path / kind
        code, _, err = run_cli(*tiny_train_args(run, steps=2, extra=[f"loss.kind={kind}", "loss.drift=0.001"]))
        assert code == 0, err
        stats = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
        assert ("gp" in stats) == (kind == "wgan-gp") and "drift" in stats
        if kind == "wgan":
            D = final_state(run)["D"]
            assert max(v.abs().max().item() for k, v in D.items() if "running" not in k and "num_batches" not in k) <= 0.01


def test_bf16_precision_runs_and_differs_from_fp32(tmp_path, run_cli):
    assert run_cli(*tiny_train_args(tmp_path / "fp32", steps=2, extra=["train.precision=fp32"]))[0] == 0
    assert run_cli(*tiny_train_args(tmp_path / "bf16", steps=2, extra=["train.precision=bf16"]))[0] == 0
    a, b = final_state(tmp_path / "fp32")["G"], final_state(tmp_path / "bf16")["G"]
    assert b["net.0.weight"].dtype == torch.float32  # autocast keeps fp32 master weights
    diff = (a["net.0.weight"] - b["net.0.weight"]).abs().max().item()
    assert 0 < diff < 1e-2


def test_toy_training_and_scatter(tmp_path, run_cli):
    run = tmp_path / "toy"
    code, out, _ = run_cli("train", "wgangp-25gaussians", "--out", run, "--set", "train.steps=3",
                           "--set", "train.log_every=1", "--set", "model.g_channels=16", "--set", "model.d_channels=16")
    assert code == 0 and (run / "samples" / "step_000003.png").is_file()


def test_resume_never_refuses_non_empty_run(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=2))[0] == 0
    before = sorted(p.name for p in run.rglob("*"))
    code, _, err = run_cli(*tiny_train_args(run, steps=4), "--resume", "never")
    assert code == 2 and "not empty" in err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_resume_refuses_model_change_and_loses_nothing(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=2))[0] == 0
    checkpoint = list_checkpoints(run)[-1]
    before = checkpoint.read_bytes()
    code, _, err = run_cli(*tiny_train_args(run, steps=4, extra=["model.g_channels=16"]))
    assert code == 2 and "model.g_channels" in err and "Traceback" not in err
    code, _, err = run_cli("train", run, "--set", "loss.kind=hinge")
    assert code == 2 and "loss.kind" in err
    assert checkpoint.read_bytes() == before and list_checkpoints(run) == [checkpoint]


def test_checkpoint_of_another_architecture_is_refused(tmp_path, run_cli):
    other = tmp_path / "other"
    assert run_cli(*tiny_train_args(other, steps=2, extra=["model.g_channels=16"]))[0] == 0
    run = tmp_path / "run"
    code, _, err = run_cli(*tiny_train_args(run, steps=4), "--resume", list_checkpoints(other)[-1])
    assert code == 2 and "different model.g_channels" in err


def test_checkpoint_whose_weights_do_not_match_its_config_is_refused(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=2))[0] == 0
    state = final_state(run)
    state["G"]["net.0.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    code, _, err = run_cli(*tiny_train_args(tmp_path / "new", steps=4), "--resume", bad)
    assert code == 2 and "do not fit this model" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "dcgan-fashion-mnist", "--set", "trian.steps=3"], "unknown key"),
    (["train", "dcgan-fashion-mnist", "--set", "data.resolution=40"], "power of two"),
    (["train", "dcgan-fashion-mnist", "--set", "data.path=/nonexistent/fmnist"], "holds no fashion-mnist"),
    (["train", "dcgan-fashion-mnist", "--set", "data.source=folder", "--set", "data.path=/nonexistent"], "not a folder"),
    (["train", "dcgan-fashion-mnist", "--set", "train.batch_size=512", "--set", "data.max_images=100"], "fewer than"),
])
def test_bad_input_exits_2_with_one_message(tmp_path, run_cli, argv, message):
    code, _, err = run_cli(*argv, "--out", tmp_path / "run")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 4


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    run = tmp_path / "run"
    args = tiny_train_args(run, steps=100000, extra=["train.checkpoint_every=100000", "train.sample_every=100000"])
    proc = subprocess.Popen([sys.executable, "-m", "gankit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "stats.jsonl").is_file():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal SIGTERM" in out
    state = final_state(run)
    assert state["step"] >= 2 and (run / "generator.safetensors").is_file()
    # It continues from there.
    proc = subprocess.run([sys.executable, "-m", "gankit", "train", str(run), "--set", f"train.steps={state['step'] + 2}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and final_state(run)["step"] == state["step"] + 2


def test_gradient_norm_clipping_limits_each_update(tmp_path, run_cli):
    # RMSprop's first step is lr * g / (sqrt(0.01 g^2) + eps): scale-free unless g is clipped far below
    # eps, so a tiny clip norm must shrink the first update of D's weights.
    runs = {}
    for name, extra in (("free", []), ("clipped", ["train.d_grad_clip=1e-9", "train.g_grad_clip=1e-9"])):
        run = tmp_path / name
        assert run_cli(*tiny_train_args(run, steps=1, extra=["train.optimizer=rmsprop", "train.ema=null", *extra]))[0] == 0
        runs[name] = final_state(run)
    fresh = tmp_path / "fresh"
    assert run_cli(*tiny_train_args(fresh, steps=1, extra=["train.optimizer=rmsprop", "train.ema=null",
                                                             "train.d_lr=1e-30", "train.g_lr=1e-30"]))[0] == 0
    start = final_state(fresh)
    moved = {name: (state["D"]["net.0.weight"] - start["D"]["net.0.weight"]).abs().max().item()
             for name, state in runs.items()}
    assert moved["clipped"] < 0.1 * moved["free"], moved


def test_a_run_that_failed_at_start_up_can_be_corrected_in_place(tmp_path, run_cli):
    """A wrong data.path stops training before any step; the same --out then accepts the fixed data
    settings instead of refusing them as a change of data."""
    run = tmp_path / "run"
    code, _, err = run_cli(*tiny_train_args(run, steps=2, extra=["data.source=folder",
                                                                 f"data.path={tmp_path / 'missing'}"]))
    assert code == 2 and "missing" in err and (run / "config.yaml").is_file()
    code, _, err = run_cli(*tiny_train_args(run, steps=2))
    assert code == 0, err
    assert list_checkpoints(run) and "fashion-mnist" in (run / "config.yaml").read_text()
    # Once a step was logged, changing the data is refused as before.
    code, _, err = run_cli(*tiny_train_args(tmp_path / "other", steps=2))
    assert code == 0
    (tmp_path / "other" / "checkpoints").rename(tmp_path / "moved")
    code, _, err = run_cli(*tiny_train_args(tmp_path / "other", steps=2, extra=["data.resolution=32"]))
    assert code == 2 and "data" in err


def test_cuda_rng_states_are_restored_for_the_gpus_this_machine_has(monkeypatch):
    # A checkpoint of a 4-GPU machine resumed on a 1-GPU one: only cuda:0's state has a device to go to.
    from gankit.training.loop import restore_cuda_rng

    restored = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append((int(state[0]), index)))
    restore_cuda_rng([torch.tensor([10 + i], dtype=torch.uint8) for i in range(4)])
    assert restored == [(10, 0)]
    restored.clear()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    restore_cuda_rng([torch.tensor([20 + i], dtype=torch.uint8) for i in range(2)])
    assert restored == [(20, 0), (21, 1)]
