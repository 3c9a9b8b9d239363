"""Choosing what `gankit train` does with its run folder: start fresh, resume, or refuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from gankit import config as cfg
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.errors import GankitError
from gankit.training.lock import LOCK_NAME


@dataclass
class RunPlan:
    config: cfg.Config
    run_dir: Path
    checkpoint: Path | None  # the state to resume from, None for a fresh start


def run_dir_for(config_arg: str, out: str | None, overrides: list[str]) -> Path:
    """The run folder `gankit train` will use (validating the config first, so a bad one creates nothing)."""
    given_path = Path(config_arg)
    if given_path.is_dir() and (given_path / "config.yaml").is_file():
        return given_path
    requested = cfg.load(config_arg, overrides)
    return Path(out) if out else Path("runs") / requested.name


def plan_run(config_arg: str, out: str | None, overrides: list[str], resume: str) -> RunPlan:
    """Resolves the config and the checkpoint to start from.

    CONFIG may be a YAML file, a preset name, or an existing run folder (which is then resumed).
    On resume the run's saved config.yaml is the base and `--set` may change the schedule; a
    config or override that would change the model, the loss or the data is refused."""
    given_path = Path(config_arg)
    if given_path.is_dir() and (given_path / "config.yaml").is_file():
        if out and Path(out).resolve() != given_path.resolve():
            raise GankitError(f"{config_arg} is a run folder; --out {out} would be a different one")
        run_dir, requested = given_path, None
    else:
        requested = cfg.load(config_arg, overrides)
        run_dir = Path(out) if out else Path("runs") / requested.name

    if resume not in ("auto", "never"):
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise GankitError(f"--resume {resume}: no such checkpoint file")
    else:
        found = list_checkpoints(run_dir)
        checkpoint = found[-1] if found else None
        if resume == "never" and run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise GankitError(
                f"run folder {run_dir} is not empty and --resume never was given: choose another --out "
                "or drop --resume never to continue it"
            )

    saved_config_file = run_dir / "config.yaml"
    if checkpoint is None:
        if requested is None:
            raise GankitError(f"run folder {run_dir} has no checkpoint to resume from")
        # A folder whose run never logged a step (it stopped at start-up, e.g. on a wrong data.path)
        # holds nothing trained: the corrected config simply replaces its config.yaml.
        if saved_config_file.is_file() and (run_dir / "stats.jsonl").is_file():
            _refuse_model_changes(_read_saved(saved_config_file), requested, run_dir)
        return RunPlan(requested, run_dir, None)

    if saved_config_file.is_file():
        base = _read_saved(saved_config_file)
    elif requested is not None:  # an explicit --resume PATH into a new run folder
        base = requested
    else:
        raise GankitError(f"{run_dir} has checkpoints but no config.yaml; cannot tell what it trained")
    # The checkpoint's own config is the authority on what the weights are.
    trained = cfg.validate(load_training_state(checkpoint)["config"], str(checkpoint))
    for candidate in (base, requested):
        if candidate is not None:
            _refuse_model_changes(trained, candidate, checkpoint)
    if base is requested:
        return RunPlan(requested, run_dir, checkpoint)
    resumed = cfg.validate(cfg.apply_overrides(base.model_dump(mode="json"), overrides),
                           f"{saved_config_file} + --set")
    _refuse_model_changes(trained, resumed, checkpoint)
    return RunPlan(resumed, run_dir, checkpoint)


def _read_saved(path: Path) -> cfg.Config:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise GankitError(f"cannot read {path}: {err}") from None
    return cfg.validate(raw, str(path))


def _refuse_model_changes(saved: cfg.Config, requested: cfg.Config, source: Path) -> None:
    changed = cfg.changed_frozen_keys(saved, requested)
    if changed:
        raise GankitError(
            f"{source} was trained with a different {', '.join(changed)}; resuming may only change the "
            "schedule (train.*, eval.*). Use a new --out for a different model, loss, augmentation or data."
        )
