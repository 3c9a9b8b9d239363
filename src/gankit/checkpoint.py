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
from collections.abc import Callable
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


def checkpoint_step(path: Path) -> int:
    """The step in a checkpoint's file name (step_NNNNNN.pt)."""
    return int(CHECKPOINT_PATTERN.match(Path(path).name).group(1))


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


def prune_checkpoints(run_dir: Path, keep: int, stage_of_step: Callable[[int], int] | None = None) -> None:
    """Deletes all but the newest `keep` checkpoints; given stage_of_step (a checkpoint's step -> the
    Progressive GAN stage of its weights), the newest checkpoint of every stage is kept too."""
    found = list_checkpoints(run_dir)
    kept = set(found[-keep:])
    if stage_of_step is not None:
        newest_of_stage = {stage_of_step(checkpoint_step(p)): p for p in found}  # oldest first: the last wins
        kept.update(newest_of_stage.values())
    for old in found:
        if old not in kept:
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

def export_generator(run_dir: Path, generator: nn.Module, model_cfg: dict, data_cfg: dict, step: int,
                     dtype: torch.dtype | None = None) -> None:
    """Writes generator.safetensors + generator.json into run_dir (spectral norm folded into the weights).
    dtype torch.float16 or torch.bfloat16: the floating tensors stored in half precision (the json records
    "weights_dtype"); loading casts them back to float32."""
    from gankit.models.spectral_norm import plain_state_dict

    run_dir = Path(run_dir)
    weights = _stored_as({k: v.detach().cpu().contiguous() for k, v in plain_state_dict(generator).items()}, dtype)
    meta = {"format": GENERATOR_FORMAT, "version": GENERATOR_VERSION, "step": step,
            "model": model_cfg, "data": data_cfg}
    if dtype is not None:
        meta["weights_dtype"] = _HALF_DTYPES[dtype]
    _write_export(run_dir, weights, meta)


def _write_export(folder: Path, weights: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save

    # Serialized in memory, then written by Python: a failed write raises an OSError that names its cause.
    atomic_write(folder / "generator.safetensors", lambda tmp: Path(tmp).write_bytes(save(weights)))
    atomic_write(folder / "generator.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))


# Half-precision dtypes an export may store its floating tensors in (read back as float32).
_HALF_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _stored_as(weights: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The float32 tensors of weights cast to dtype (None: unchanged); integer buffers stay as they are."""
    if dtype is None:
        return weights
    if dtype not in _HALF_DTYPES:
        raise ValueError(f"an export stores float32, float16 or bfloat16 weights, not {dtype}")
    return {k: v.to(dtype) if v.dtype == torch.float32 else v for k, v in weights.items()}


def write_half_export(src_dir: Path, dest_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Writes into dest_dir a copy of the export in src_dir (a run or export folder) with its float32 tensors
    in float16 (or bfloat16): the json is kept, with "weights_dtype" added. Returns dest_dir."""
    from safetensors.torch import load_file

    json_path, weights_path = resolve_generator_files(src_dir)
    meta = json.loads(json_path.read_text())
    weights = _stored_as(load_file(str(weights_path)), dtype)
    meta["weights_dtype"] = _HALF_DTYPES[dtype]
    dest_dir = Path(dest_dir)
    _write_export(dest_dir, weights, meta)
    return dest_dir


def is_checkpoint_file(source: str | Path) -> bool:
    """Whether a generator source names a training checkpoint (`RUN/checkpoints/step_N.pt`)."""
    return Path(source).suffix == ".pt"


def run_folder_of(source: str | Path) -> Path | None:
    """The run folder a generator source belongs to (the folder itself, or a checkpoint's run); None for an export."""
    from gankit.zoo import is_zoo_name

    if is_zoo_name(source):  # an entry is an export: no run, no metrics.jsonl
        return None
    source = Path(source)
    if is_checkpoint_file(source) and source.parent.name == "checkpoints":
        source = source.parent.parent
    return source if source.is_dir() and (source / "config.yaml").is_file() else None


def resolve_generator_files(source: str | Path) -> tuple[Path, Path]:
    """(json, safetensors) of a run folder, an export folder, either file of an export, or a zoo entry
    (`zoo:NAME`: its files checksummed first, downloaded first for an entry that lives elsewhere)."""
    from gankit.zoo import resolve_source

    source = Path(resolve_source(source))
    if source.is_dir():
        base = source / "generator"
    elif source.suffix in (".json", ".safetensors"):
        base = source.with_suffix("")
    else:
        raise GankitError(f"{source} is neither a run folder nor an exported generator (.safetensors/.json) nor "
                          "a checkpoint (RUN/checkpoints/step_N.pt)")
    json_path, weights_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for p in (json_path, weights_path):
        if not p.is_file():
            raise GankitError(f"{p} not found: train the run first or export it with `gankit export`")
    return json_path, weights_path


# The names safetensors gives the dtypes of a generator's tensors; checkpoints are compared in the same terms.
_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}


def _expected_tensors(model_cfg, data_cfg, parametrized: bool) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype name) of the generator a config describes (see build_generator for
    `parametrized`), built on the meta device: a description with huge sizes allocates nothing."""
    from gankit.models import build_generator

    with torch.device("meta"):
        generator = build_generator(model_cfg, data_cfg, parametrized)
    return {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in generator.state_dict().items()}


def _check_tensors(stored: dict, expected: dict, source: str, description: str) -> None:
    """Refuses stored tensors (name -> (shape, dtype name)) that differ from what `description` builds."""
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise GankitError(f"{source} does not match {description}: missing tensors {missing[:5]}, "
                          f"unexpected tensors {extra[:5]}")
    for key, (shape, dtype) in expected.items():
        if stored[key] != (shape, dtype):
            raise GankitError(f"{source}: tensor {key} is {stored[key][0]} {stored[key][1]}, {description} needs "
                              f"{shape} {dtype}")


def as_float32_header(stored: dict, expected: dict) -> dict:
    """Stored (shape, dtype name) with F16/BF16 read as F32 where F32 is expected: a half-precision export
    is loaded as float32. Any other dtype difference is left for _check_tensors to refuse."""
    return {k: (shape, "F32") if dtype in ("F16", "BF16") and expected.get(k, (None, None))[1] == "F32"
            else (shape, dtype) for k, (shape, dtype) in stored.items()}


def _check_progress(generator: nn.Module, source: Path) -> None:
    """A Progressive GAN generator's stored stage and alpha must be usable (they come from the file)."""
    if hasattr(generator, "set_progress"):
        try:
            generator.set_progress(*generator.progress())  # the setter checks the range
        except ValueError as err:
            raise GankitError(f"{source}: the generator's stored progress is invalid: {err}") from None


def load_generator(source: str | Path, device: str | torch.device = "cpu"):
    """Builds the EMA generator of a run folder, an export or a checkpoint file. Returns (generator in
    eval mode, meta) where meta holds the validated `model` and `data` config sections and the `step`.
    A zoo name (`zoo:NAME`) is its entry's export, verified against the zoo's index first."""
    from gankit.zoo import resolve_source

    source = resolve_source(source)
    if is_checkpoint_file(source):
        return load_checkpoint_generator(source, device)
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
    # Compare the description with the file's tensor headers before allocating anything.
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            stored = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise GankitError(f"{weights_path} is not a readable safetensors file: {err}") from None
    # An export holds the plain network: spectral norm, if trained with it, is folded into the weights.
    expected = _expected_tensors(model_cfg, data_cfg, False)
    _check_tensors(as_float32_header(stored, expected), expected, str(weights_path), json_path.name)
    generator = build_generator(model_cfg, data_cfg, parametrized=False)
    weights = {k: v.float() if v.dtype in _HALF_DTYPES else v for k, v in load_file(str(weights_path)).items()}
    load_state_into(generator, weights, "generator", weights_path)
    _check_progress(generator, weights_path)
    generator.to(device).eval()
    return generator, {"model": model_cfg, "data": data_cfg, "step": int(meta.get("step", 0))}


def load_checkpoint_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                              state: dict | None = None):
    """The EMA generator (ema=False: the raw G) of a training checkpoint, at the Progressive GAN stage and
    alpha it was saved at (buffers of its state dict); returns (generator in eval mode, meta) as load_generator.
    state: the checkpoint as load_training_state(path) already read it (not read again)."""
    from gankit.config import validate
    from gankit.models import build_generator

    path = Path(path)
    state = load_training_state(path) if state is None else state
    config = validate(state.get("config"), str(path))
    # A run trained with train.ema null has no EMA generator: its G is the one it samples, as its export.
    key, what = ("G_ema", "EMA generator") if ema and state.get("G_ema") is not None else ("G", "generator")
    weights = state.get(key)
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise GankitError(f"{path}: the {what} weights are not a mapping of names to tensors (a damaged checkpoint?)")
    step = state.get("step")
    if type(step) is not int or step < 0:
        raise GankitError(f"{path} holds no valid step count (a damaged checkpoint?)")
    stored = {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in weights.items()}
    # The config's sizes are checked against the stored tensors before the generator is built for real.
    # G_ema is the plain network (training/ema.py); G keeps its spectral-norm parametrization, if any.
    parametrized = key == "G"
    _check_tensors(stored, _expected_tensors(config.model, config.data, parametrized), f"{path} ({what})",
                   "its config")
    generator = build_generator(config.model, config.data, parametrized)
    load_state_into(generator, weights, what, path)
    _check_progress(generator, path)
    generator.to(device).eval()
    return generator, {"model": config.model, "data": config.data, "step": step}
