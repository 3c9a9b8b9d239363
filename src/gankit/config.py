"""The typed config: schema, YAML loading, `--set` overrides and the built-in presets."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gankit.errors import GankitError

DataSource = Literal[
    "fashion-mnist", "mnist", "folder", "zip", "toy-8gaussians", "toy-25gaussians", "toy-swissroll"
]
TOY_SOURCES = ("toy-8gaussians", "toy-25gaussians", "toy-swissroll")


class _Section(BaseModel):
    # Unknown keys are errors (a misspelled penalty weight must not be silently ignored), and
    # values are not coerced across types ("10" is not a number).
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DataConfig(_Section):
    source: DataSource = "fashion-mnist"
    path: Optional[str] = None  # None: the source's default location (IDX sources only)
    resolution: int = Field(32, ge=2, le=1024)  # images are resized/padded to resolution x resolution
    channels: Literal[1, 3] = 1
    hflip: bool = False  # random horizontal flips (on the device, per sample)
    max_images: Optional[int] = Field(None, ge=1)  # use only the first N images (None: all)

    @property
    def is_toy(self) -> bool:
        return self.source in TOY_SOURCES


class ModelConfig(_Section):
    arch: Literal["mlp", "dcgan"] = "dcgan"
    z_dim: int = Field(100, ge=1, le=4096)
    g_channels: int = Field(64, ge=1, le=4096)  # dcgan: width at full resolution; mlp: hidden width
    d_channels: int = Field(64, ge=1, le=4096)
    hidden_layers: int = Field(3, ge=1, le=16)  # mlp only: hidden layers in G and in D
    g_upsample: Literal["transposed", "nearest", "pixelshuffle"] = "transposed"  # dcgan G upsampling
    d_norm: Literal["auto", "batch", "layer", "none"] = "auto"  # auto: layer for wgan-gp, else batch


class LossConfig(_Section):
    kind: Literal["gan", "nsgan", "lsgan", "wgan", "wgan-gp", "hinge"] = "nsgan"
    gp_weight: float = Field(10.0, ge=0.0)  # wgan-gp: weight of the gradient penalty
    clip: float = Field(0.01, gt=0.0)  # wgan: critic weights are clipped to [-clip, clip]
    drift: float = Field(0.0, ge=0.0)  # weight of drift * D(real)^2 (Progressive GAN uses 0.001)


class TrainConfig(_Section):
    steps: int = Field(5000, ge=1)  # generator updates
    batch_size: int = Field(64, ge=1)
    n_critic: int = Field(1, ge=1)  # discriminator updates before each generator update
    optimizer: Literal["adam", "rmsprop"] = "adam"
    g_lr: float = Field(2.0e-4, gt=0.0)
    d_lr: float = Field(2.0e-4, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.999)  # adam only
    ema: Optional[float] = Field(0.999, ge=0.0, lt=1.0)  # decay of the EMA generator; null disables
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = Field(50, ge=1)
    sample_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)  # the newest N checkpoints are kept
    grid_size: int = Field(64, ge=1, le=1024)  # images in the fixed-latent sample grid

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_from_list(cls, value: Any) -> Any:
        # YAML has no tuples: accept a two-element list.
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class EvalConfig(_Section):
    every: int = Field(0, ge=0)  # evaluate every N steps (0: never during training)
    metrics: list[str] = Field(default_factory=list)
    num_samples: int = Field(10000, ge=1)


class Config(_Section):
    name: str = "gankit-run"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.data.is_toy and self.model.arch != "mlp":
            raise ValueError(f"data.source {self.data.source} is 2-D points: set model.arch to mlp")
        if self.model.arch == "dcgan":
            res = self.data.resolution
            if res < 16 or res > 256 or res & (res - 1):
                raise ValueError(
                    f"data.resolution {res} is not supported by dcgan: use a power of two from 16 to 256"
                )
        if self.data.source in ("folder", "zip") and not self.data.path:
            raise ValueError(f"data.source {self.data.source} needs data.path (the folder or zip file)")
        return self


# Keys that define the model or the data: changing them on resume would not continue the same run.
FROZEN_ON_RESUME = ("seed", "data", "model", "loss")


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"][:-1])
            lines.append(f"  {key}: unknown key; allowed here: {', '.join(allowed)}")
        else:
            msg = item["msg"]
            if item["type"] == "literal_error":
                msg = msg.replace("Input should be", "must be one of")
            lines.append(f"  {key}: {msg} (got {item.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def validate(raw: dict, origin: str = "config") -> Config:
    """Validates a nested dict against the schema; errors name each bad key and what is allowed."""
    if not isinstance(raw, dict):
        raise GankitError(f"invalid config ({origin}): the top level must be a mapping of sections")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise GankitError(_format_validation_error(err, origin)) from None


def preset_names() -> list[str]:
    folder = resources.files("gankit") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The preset's first comment line."""
    text = (resources.files("gankit") / "presets" / f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def _read_yaml(path_or_preset: str) -> tuple[dict, str]:
    path = Path(path_or_preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise GankitError(f"config file {path} does not exist")
        text, origin = path.read_text(), str(path)
    elif path_or_preset in preset_names():
        text = (resources.files("gankit") / "presets" / f"{path_or_preset}.yaml").read_text()
        origin = f"preset {path_or_preset}"
    else:
        raise GankitError(
            f"{path_or_preset!r} is neither a YAML file nor a preset; presets: {', '.join(preset_names())}"
        )
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise GankitError(f"{origin} is not valid YAML: {err}") from None
    return raw, origin


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parses 'a.b=value' into (['a', 'b'], value) with the value read as a YAML scalar."""
    if "=" not in item:
        raise GankitError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=2000")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise GankitError(f"--set {item!r}: the key {key!r} is not a dotted config key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise GankitError(f"--set {item!r}: the value {text!r} is not a YAML scalar") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Returns a copy of raw with each 'a.b=value' set; unknown keys are caught by validation."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GankitError(f"--set {item!r}: {part} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load(path_or_preset: str, overrides: list[str] | None = None) -> Config:
    """Loads a YAML file or a preset, applies `--set` overrides and validates."""
    raw, origin = _read_yaml(path_or_preset)
    return validate(apply_overrides(raw, overrides or []), origin)


def to_yaml(config: Config) -> str:
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def changed_frozen_keys(old: Config, new: Config) -> list[str]:
    """Keys under FROZEN_ON_RESUME whose values differ between two configs."""
    changed = []
    old_d, new_d = old.model_dump(mode="json"), new.model_dump(mode="json")
    for section in FROZEN_ON_RESUME:
        a, b = old_d[section], new_d[section]
        if isinstance(a, dict):
            changed += [f"{section}.{k}" for k in a if a[k] != b[k]]
        elif a != b:
            changed.append(section)
    return changed
