"""The file formats: full training state (resume) and the exported generator (sampling, evaluation).

Training state: `checkpoints/step_NNNNNN.pt`, a torch.save of tensors and plain Python values only,
loaded with weights_only=True so that loading never runs code from the file.
Exported generator: `generator.safetensors` (weights) + `generator.json` (the model and data config
sections it was built from). Every write goes to a temporary file that is renamed into place, so a
half-written file never replaces a good one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gankit.errors import GankitError
from gankit.files import TEMPORARY_PATTERN, atomic_write

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{6,})\.pt$")
GENERATOR_FORMAT = "gankit-generator"
GENERATOR_VERSION = 1


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Deletes the temporary files of training's writes that a killed process left in run_dir.

    Call it only while holding the run's lock: a live run's temporary files look the same."""
    run_dir = Path(run_dir)
    training_outputs = {"config.yaml", "stats.jsonl", "generator.safetensors", "generator.json", "metrics_best.json"}
    removed = []
    for folder, any_target in ((run_dir, False), (run_dir / "checkpoints", True), (run_dir / "samples", True)):
        if not folder.is_dir():
            continue
        for file in folder.iterdir():
            match = TEMPORARY_PATTERN.match(file.name)
            if match and (any_target or match["target"] in training_outputs) and file.is_file():
                file.unlink(missing_ok=True)
                removed.append(file)
    return removed


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are never listed)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: _torch_save(state, tmp))


class _ErrorKeepingWriter:
    """A file for torch.save that keeps the OSError of a failed write."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(obj: Any, tmp: str) -> None:
    # Given a file name, torch.save reports a full disk as "RuntimeError: ... unexpected pos": writing
    # through a Python file keeps the OSError (ENOSPC, EFBIG, EDQUOT) for atomic_write's message.
    with open(tmp, "wb") as f:
        writer = _ErrorKeepingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GankitError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # unpickling refused or a damaged file: never fall back to a full unpickler
        raise GankitError(
            f"checkpoint {path} cannot be loaded safely ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
            "it is damaged or holds more than tensors and plain values"
        ) from None
    if not isinstance(state, dict) or state.get("format") != "gankit-training-state":
        raise GankitError(f"{path} is not a gankit training checkpoint")
    return state


def load_state_into(module: nn.Module, state: dict, what: str, source: Path) -> None:
    """load_state_dict with a message that says the checkpoint belongs to another architecture."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise GankitError(
            f"{source}: the {what} weights do not fit this model (a checkpoint of another architecture "
            f"or size?): {detail}"
        ) from None


# ---- exported generator -------------------------------------------------------------------------

def export_generator(run_dir: Path, generator: nn.Module, model_cfg: dict, data_cfg: dict, step: int) -> None:
    """Writes generator.safetensors + generator.json into run_dir."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    weights = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    meta = {"format": GENERATOR_FORMAT, "version": GENERATOR_VERSION, "step": step,
            "model": model_cfg, "data": data_cfg}
    # Serialized in memory, then written by Python: a failed write raises an OSError that names its cause.
    atomic_write(run_dir / "generator.safetensors", lambda tmp: Path(tmp).write_bytes(save(weights)))
    atomic_write(run_dir / "generator.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))


def resolve_generator_files(source: str | Path) -> tuple[Path, Path]:
    """(json, safetensors) of a run folder, an export folder, or either file of an export."""
    source = Path(source)
    if source.is_dir():
        base = source / "generator"
    elif source.suffix in (".json", ".safetensors"):
        base = source.with_suffix("")
    else:
        raise GankitError(f"{source} is neither a run folder nor an exported generator (.safetensors/.json)")
    json_path, weights_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for p in (json_path, weights_path):
        if not p.is_file():
            raise GankitError(f"{p} not found: train the run first or export it with `gankit export`")
    return json_path, weights_path


def load_generator(source: str | Path, device: str | torch.device = "cpu"):
    """Builds the exported generator of a run or export folder. Returns (generator in eval mode, meta)
    where meta holds the validated `model` and `data` config sections and the `step`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from gankit.config import Config, DataConfig, ModelConfig
    from gankit.models import build_generator

    json_path, weights_path = resolve_generator_files(source)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GankitError(f"{json_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != GENERATOR_FORMAT:
        raise GankitError(f"{json_path} is not a gankit generator description")
    if meta.get("version") != GENERATOR_VERSION:
        raise GankitError(f"{json_path} has version {meta.get('version')!r}; this gankit reads {GENERATOR_VERSION}")
    from pydantic import ValidationError

    try:
        model_cfg = ModelConfig.model_validate(meta.get("model"))
        data_cfg = DataConfig.model_validate(meta.get("data"))
        Config(model=model_cfg, data=data_cfg)  # the cross-section checks (resolution per architecture, ...)
    except ValidationError as err:
        first = err.errors()[0]
        raise GankitError(f"{json_path} describes an invalid generator: {'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from None
    # Compare the description with the file's tensor headers before allocating anything, so that a
    # description with huge sizes cannot exhaust memory.
    with torch.device("meta"):
        expected = {k: (tuple(v.shape), v.dtype) for k, v in build_generator(model_cfg, data_cfg).state_dict().items()}
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            stored = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise GankitError(f"{weights_path} is not a readable safetensors file: {err}") from None
    dtype_names = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise GankitError(f"{weights_path} does not match {json_path.name}: missing tensors {missing[:5]}, "
                          f"unexpected tensors {extra[:5]}")
    for key, (shape, dtype) in expected.items():
        if stored[key] != (shape, dtype_names.get(dtype, str(dtype))):
            raise GankitError(
                f"{weights_path}: tensor {key} is {stored[key][0]} {stored[key][1]}, the description in "
                f"{json_path.name} needs {shape} {dtype_names.get(dtype, dtype)}"
            )
    generator = build_generator(model_cfg, data_cfg)
    weights = load_file(str(weights_path))
    load_state_into(generator, weights, "generator", weights_path)
    generator.to(device).eval()
    return generator, {"model": model_cfg, "data": data_cfg, "step": int(meta.get("step", 0))}
