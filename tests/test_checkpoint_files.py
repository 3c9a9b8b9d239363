"""Hostile and damaged checkpoint files are refused with a message, and nothing in them runs."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints
from gankit.files import atomic_write

pytestmark = needs_fashion_mnist
MARKER = "gankit-test-pickle-ran"


class RunsCodeWhenUnpickled:
    def __init__(self, marker_path):
        self.marker_path = marker_path

    def __reduce__(self):
        return (open, (self.marker_path, "w"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from gankit.cli import main

    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(tiny_train_args(run, steps=2)) == 0
    return run


def test_pickle_that_runs_code_is_refused(trained_run, tmp_path, run_cli):
    marker = tmp_path / MARKER
    state = torch.load(list_checkpoints(trained_run)[-1], weights_only=True)
    state["payload"] = RunsCodeWhenUnpickled(str(marker))
    hostile = tmp_path / "hostile.pt"
    torch.save(state, hostile)
    code, _, err = run_cli(*tiny_train_args(tmp_path / "new", steps=4), "--resume", hostile)
    assert code == 2 and "cannot be loaded safely" in err
    assert not marker.exists()


def copy_export(run, dest):
    dest.mkdir()
    for name in ("generator.json", "generator.safetensors"):
        shutil.copy(run / name, dest / name)
    return dest


def test_generator_json_with_huge_sizes_is_refused_without_allocating(trained_run, tmp_path, run_cli):
    export = copy_export(trained_run, tmp_path / "export")
    meta = json.loads((export / "generator.json").read_text())
    meta["model"]["g_channels"], meta["data"]["resolution"] = 4096, 256  # ~10^11 parameters if built
    (export / "generator.json").write_text(json.dumps(meta))
    code, _, err = run_cli("sample", export, "--out", tmp_path / "x.png")
    assert code == 2 and "does not match generator.json" in err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("field, value", [("z_dim", -5), ("g_channels", 10**9), ("arch", "evil")])
def test_generator_json_with_invalid_values_is_refused(trained_run, tmp_path, run_cli, field, value):
    export = copy_export(trained_run, tmp_path / "export")
    meta = json.loads((export / "generator.json").read_text())
    meta["model"][field] = value
    (export / "generator.json").write_text(json.dumps(meta))
    code, _, err = run_cli("sample", export)
    assert code == 2 and "invalid generator" in err and field in err


@pytest.mark.parametrize("damage", ["shape", "dtype", "missing", "garbage"])
def test_safetensors_with_wrong_contents_is_refused(trained_run, tmp_path, run_cli, damage):
    export = copy_export(trained_run, tmp_path / "export")
    weights_file = export / "generator.safetensors"
    weights = load_file(weights_file)
    if damage == "shape":
        weights["net.0.weight"] = torch.zeros(2, 2)
    elif damage == "dtype":
        weights["net.0.weight"] = weights["net.0.weight"].double()
    elif damage == "missing":
        weights.pop("net.0.weight")
    if damage == "garbage":
        weights_file.write_bytes(os.urandom(256))
    else:
        save_file(weights, weights_file)
    code, _, err = run_cli("sample", export)
    assert code == 2 and str(weights_file) in err and "Traceback" not in err


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"good")

    def failing_write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, failing_write)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_partial_checkpoint_files_are_never_listed(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / ".step_000099.pt.abc.tmp").write_bytes(b"partial")
    assert [p.name for p in list_checkpoints(run)] == ["step_000002.pt"]
