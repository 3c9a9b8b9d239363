"""The typed config: schema, YAML loading, `--set` overrides and the built-in presets."""

from __future__ import annotations

import copy
import re
import reprlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gankit.errors import GankitError

DataSource = Literal[
    "fashion-mnist", "mnist", "folder", "zip", "packed", "lmdb", "toy-8gaussians", "toy-25gaussians",
    "toy-swissroll"
]
# What data.path names for each source that needs one.
PATH_SOURCES = {"folder": "the image folder", "zip": "the zip of images",
                "packed": "the folder written by `gankit prepare`", "lmdb": "the LMDB folder holding data.mdb"}
TOY_SOURCES = ("toy-8gaussians", "toy-25gaussians", "toy-swissroll")
# Sources that never have class labels (folders and zips have them when every image is in a class subfolder).
UNLABELLED_SOURCES = ("lmdb", "toy-swissroll")
# The names eval.metrics accepts. A plain list, so that validating a config never imports the metric
# code (which reads checkpoints, which read configs); each is defined in gankit.metrics.registry, and
# tests/test_imports.py checks that the two lists agree.
METRIC_NAMES = ("swd", "ms_ssim", "fid", "kid", "is", "pr", "fd_fmnist", "kid_fmnist", "modes", "class_accuracy",
                "intra_fd_fmnist")


def _changed(section: BaseModel, keys: tuple[str, ...]) -> list[str]:
    """The keys among `keys` whose value in `section` is not its class's default. Keys that only some settings
    read are refused by value this way: the resolved config.yaml holds every default, so it always loads."""
    defaults = type(section).model_construct()
    return [k for k in keys if getattr(section, k) != getattr(defaults, k)]


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
    # auto: the source's class labels where it has them (IDX label files, class subfolders, packed labels,
    # the toy mixtures' mode index); none: thrown away (a conditional model then refuses to start)
    labels: Literal["auto", "none"] = "auto"
    # the names of the classes, index order (conditional runs). null: read from the source when training
    # starts and written into the run's config.yaml; given: renames the source's classes (same count)
    class_names: Optional[list[str]] = None

    @property
    def is_toy(self) -> bool:
        return self.source in TOY_SOURCES

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    @field_validator("class_names")
    @classmethod
    def _class_names_distinct(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise ValueError("give at least one class name, or null to read them from the source")
            if len(set(value)) != len(value):
                raise ValueError("class names must be distinct")
            if any(not name or any(ord(c) < 32 for c in name) for name in value):
                raise ValueError("class names must be non-empty and hold no control characters")
        return value


STYLEGAN2_MODEL_KEYS = ("channel_base", "channel_max", "w_dim", "mapping_layers", "mapping_lr", "style_mixing",
                        "mbstd_group")
STYLEGAN2_LOSS_KEYS = ("pl_weight", "pl_every", "pl_batch_shrink", "pl_decay")


class ModelConfig(_Section):
    arch: Literal["mlp", "dcgan", "pgan", "stylegan2"] = "dcgan"
    z_dim: int = Field(100, ge=1, le=4096)
    g_channels: int = Field(64, ge=1, le=4096)  # dcgan: width at full resolution; mlp: hidden width
    d_channels: int = Field(64, ge=1, le=4096)
    hidden_layers: int = Field(3, ge=1, le=16)  # mlp only: hidden layers in G and in D
    g_upsample: Literal["transposed", "nearest", "pixelshuffle"] = "transposed"  # dcgan G upsampling
    d_norm: Literal["auto", "batch", "layer", "none"] = "auto"  # auto: layer for wgan-gp, else batch
    # pgan only: channels per scale from 4x4 to data.resolution (null: 512 up to 32x32, then halving)
    depths: Optional[list[int]] = None
    # dcgan and mlp: spectral normalization of every convolution and linear weight (docs/regularizers.md)
    d_spectral_norm: bool = False
    g_spectral_norm: bool = False
    # class-conditional models (docs/conditional.md): how D uses the label. projection: <embed(y), phi(x)>
    # added to D's score (Miyato & Koyama 2018); acgan: an auxiliary classifier head (Odena et al. 2017);
    # concat: a label embedding joined to D's input (Mirza & Osindero 2014). G: class-conditional batch norm
    # (dcgan with projection or acgan), else the label embedding concatenated to z. stylegan2: projection
    # only, StyleGAN2-ADA's form (the label embedded into G's mapping network and mapped for D's projection).
    conditioning: Literal["none", "projection", "acgan", "concat"] = "none"
    label_embed_dim: int = Field(32, ge=1, le=4096)  # concat (and mlp's G): size of the label embedding
    # stylegan2 only (docs/stylegan2.md): widths min(channel_base / resolution, channel_max) as in NVIDIA's
    # networks; the mapping network's depth, width (w_dim) and learning-rate multiplier; the probability of
    # style mixing regularization; the minibatch-stddev group size
    channel_base: int = Field(32768, ge=1, le=1 << 20)
    channel_max: int = Field(512, ge=1, le=4096)
    w_dim: int = Field(512, ge=1, le=4096)
    mapping_layers: int = Field(8, ge=1, le=16)
    mapping_lr: float = Field(0.01, gt=0.0, le=1.0)
    style_mixing: float = Field(0.9, ge=0.0, le=1.0)
    mbstd_group: int = Field(4, ge=1, le=64)

    @model_validator(mode="after")
    def _stylegan2_keys_need_stylegan2(self) -> "ModelConfig":
        if self.arch != "stylegan2":
            used = [f"model.{k}" for k in _changed(self, STYLEGAN2_MODEL_KEYS)]
            if used:
                raise ValueError(f"{', '.join(used)} only apply to model.arch stylegan2 (it is {self.arch})")
        return self

    @model_validator(mode="after")
    def _spectral_norm_needs_plain_layers(self) -> "ModelConfig":
        used = [f"model.{k}" for k in ("d_spectral_norm", "g_spectral_norm") if getattr(self, k)]
        if used and self.arch == "stylegan2":
            raise ValueError(f"{', '.join(used)} is not supported by model.arch stylegan2 (its equalized learning "
                             "rate and demodulation would cancel it): set it to false")
        if used and self.arch == "pgan":
            # Equalized lr scales each weight by a constant at run time, which W / sigma(W) would cancel.
            raise ValueError(f"{', '.join(used)} is not supported by model.arch pgan (its equalized-learning-rate "
                             "layers would cancel it; see docs/regularizers.md): use dcgan or mlp, or set it to false")
        return self

    @model_validator(mode="after")
    def _conditioning_supported_by_arch(self) -> "ModelConfig":
        if self.conditioning != "none" and self.arch == "pgan":
            raise ValueError(f"model.conditioning {self.conditioning} is not supported by model.arch pgan: use "
                             "dcgan, mlp or stylegan2, or set model.conditioning none")
        if self.conditioning not in ("none", "projection") and self.arch == "stylegan2":
            # StyleGAN2-ADA's conditioning: labels mapped into G's mapping network and projected in D
            raise ValueError(f"model.conditioning {self.conditioning} is not supported by model.arch stylegan2: use "
                             "projection (StyleGAN2-ADA's conditional form) or none")
        return self


class LossConfig(_Section):
    kind: Literal["gan", "nsgan", "lsgan", "wgan", "wgan-gp", "hinge"] = "nsgan"
    gp_weight: float = Field(10.0, ge=0.0)  # wgan-gp: weight of the gradient penalty
    clip: float = Field(0.01, gt=0.0)  # wgan: critic weights are clipped to [-clip, clip]
    drift: float = Field(0.0, ge=0.0)  # weight of drift * D(real)^2 (Progressive GAN uses 0.001)
    r1_gamma: float = Field(0.0, ge=0.0)  # R1: gamma/2 * E ||grad D(real)||^2 (0: off; see docs/regularizers.md)
    r2_gamma: float = Field(0.0, ge=0.0)  # R2: the same on (detached) fakes
    reg_every: int = Field(1, ge=1)  # lazy R1/R2: on every k-th discriminator update, weighted by k
    lecam: float = Field(0.0, ge=0.0)  # weight of the LeCam term (EMAs of D's outputs; 0: off)
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # gan/nsgan: D's real target is 1 - this (one-sided)
    sigmoid_output: bool = False  # gan/nsgan: sigmoid on D then BCE on probabilities, as the tutorials write it

    @model_validator(mode="after")
    def _bce_options_need_bce_losses(self) -> "LossConfig":
        if (self.label_smoothing or self.sigmoid_output) and self.kind not in ("gan", "nsgan"):
            raise ValueError(f"loss.label_smoothing and loss.sigmoid_output apply to gan and nsgan, not {self.kind}")
        return self
    # stylegan2 only: path-length regularization (Karras et al. 2020), weight * (|J_w^T y| - a)^2 with a the
    # running mean of path lengths (decay pl_decay), lazy: every pl_every generator steps, weighted by
    # pl_every, on batch_size // pl_batch_shrink extra samples (0: off; the paper's weight is 2)
    pl_weight: float = Field(0.0, ge=0.0)
    pl_every: int = Field(4, ge=1)
    pl_batch_shrink: int = Field(2, ge=1)
    pl_decay: float = Field(0.01, gt=0.0, le=1.0)
    gdpp: float = Field(0.0, ge=0.0)  # pgan only: weight of the GDPP diversity term in G's loss (0: off)
    # model.conditioning acgan: weight of the auxiliary classifier's cross-entropy, in D's loss (on reals and
    # fakes) and in G's (on fakes)
    class_weight: float = Field(1.0, ge=0.0)
    # acgan: D's class loss also on the fakes, with the classes G was asked for (the paper's form). Off by
    # default: D's classifier then learns the real classes alone; with it on, G and D's classifier agree on
    # cues the real classes do not have (measured in docs/conditional.md)
    class_loss_on_fakes: bool = False


DEFAULT_STEPS = 5000  # train.steps of every architecture but pgan, whose schedule sets the length


class TrainConfig(_Section):
    # Generator updates. null: 5000, or for pgan the sum of max_iter_at_scale, resolved when training
    # starts (kept null in the run's config.yaml, so a resume with a new schedule gets the new sum).
    steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    n_critic: int = Field(1, ge=1)  # discriminator updates before each generator update
    optimizer: Literal["adam", "rmsprop"] = "adam"
    g_lr: float = Field(2.0e-4, gt=0.0)
    d_lr: float = Field(2.0e-4, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.999)  # adam only
    # Learning-rate decay (training/lr_schedule.py): constant, or linear from lr_decay_start (a fraction of
    # the run's steps) down to lr_final times the base rates at the last step; applies to every arch
    lr_schedule: Literal["constant", "linear"] = "constant"
    lr_decay_start: float = Field(0.3, ge=0.0, lt=1.0)  # the best of 0.3 and 0.5 for the demo (docs/benchmarks.md)
    lr_final: float = Field(0.0, ge=0.0, le=1.0)
    ema: Optional[float] = Field(0.999, ge=0.0, lt=1.0)  # decay of the EMA generator; null disables
    # The EMA's half-life in thousands of images, StyleGAN2's form (decay 0.5 ** (batch / (ema_kimg * 1000))
    # per step); when set it replaces train.ema's decay, and train.ema must not be null. ema_rampup: the
    # half-life is at most ema_rampup times the images seen so far (NVIDIA's ramp-up; null: none)
    ema_kimg: Optional[float] = Field(None, gt=0.0)
    ema_rampup: Optional[float] = Field(None, gt=0.0)
    # auto: bf16 autocast where the hardware computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16
    # or AMX), else fp32; fp16: autocast with a gradient scaler per network (for GPUs without bf16);
    # see docs/benchmarks.md for the speed and quality measurements behind these
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    log_every: int = Field(50, ge=1)
    sample_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)  # the newest N checkpoints are kept
    grid_size: int = Field(64, ge=1, le=1024)  # images in the fixed-latent sample grid
    channels_last: bool = False  # convolutions in NHWC memory layout (see docs/benchmarks.md for when it pays)
    fused_optimizer: bool = False  # Adam's fused single-kernel update instead of the foreach one
    compile: bool = False  # torch.compile G and D (not with wgan-gp: no double backward through compiled code)
    g_grad_clip: Optional[float] = Field(None, gt=0.0)  # clip G's gradient norm to this (null: no clipping)
    d_grad_clip: Optional[float] = Field(None, gt=0.0)  # clip D's gradient norm to this (null: no clipping)
    # under torchrun on GPUs: batch norm statistics over the global batch (SyncBatchNorm); false: per rank
    sync_batchnorm: bool = False
    # pgan only, one entry per scale from 4x4 to data.resolution (see docs/pgan.md):
    max_iter_at_scale: Optional[list[int]] = None  # generator steps at each scale, fade-in included
    fade_iters: Optional[int] = Field(None, ge=0)  # fade-in steps at the start of each scale after 4x4
    batch_size_at_scale: Optional[list[int]] = None  # null: batch_size at every scale
    lr_at_scale: Optional[list[float]] = None  # learning rate of G and D per scale; null: g_lr, d_lr

    @model_validator(mode="after")
    def _decay_keys_need_a_decay(self) -> "TrainConfig":
        if self.lr_schedule == "constant":
            unused = _changed(self, ("lr_decay_start", "lr_final"))
            if unused:
                raise ValueError(f"{', '.join('train.' + k for k in unused)}: read by train.lr_schedule linear "
                                 "only (set train.lr_schedule=linear, or leave them out)")
        return self

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


AUGMENT_OPS = ("color", "translation", "cutout")  # DiffAugment's ops (Zhao et al. 2020), in their order
# ADA's ops (Karras et al. 2020), in the order its pipeline applies them whatever the list's order:
# pixel blitting, general geometry, colour, then cutout. The default is the paper's `bgc` set (all but cutout).
ADA_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
           "brightness", "contrast", "lumaflip", "hue", "saturation", "cutout")
ADA_DEFAULT_OPS = ADA_OPS[:-1]
AdaOp = Literal["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                "brightness", "contrast", "lumaflip", "hue", "saturation", "cutout"]
# The keys only policy ada reads: given another value than the default under another policy, they are refused.
ADA_KEYS = ("ada_ops", "p", "target", "speed_images", "interval")


def _once_each(value: list[str], allowed: tuple[str, ...]) -> list[str]:
    if not value:
        raise ValueError(f"give at least one op ({', '.join(allowed)}), or set augment.policy none")
    if len(set(value)) != len(value):
        raise ValueError("each op may appear once")
    return value


class AugmentConfig(_Section):
    # diffaugment: every image D sees, real and fake, augmented differentiably; ada: StyleGAN2-ADA's
    # pipeline, each op applied with probability p, p adapted to D's overfitting (docs/regularizers.md)
    policy: Literal["none", "diffaugment", "ada"] = "none"
    ops: list[Literal["color", "translation", "cutout"]] = Field(default_factory=lambda: list(AUGMENT_OPS))
    # policy ada only:
    ada_ops: list[AdaOp] = Field(default_factory=lambda: list(ADA_DEFAULT_OPS))
    p: float = Field(0.0, ge=0.0, le=1.0)  # initial probability of each op; the fixed one when target is null
    # target of r_t = E[sign(D(real))] over each interval; null: p stays fixed at augment.p
    target: Optional[float] = Field(0.6, gt=0.0, lt=1.0)
    speed_images: int = Field(500000, ge=1)  # real images over which p can move from 0 to 1
    interval: int = Field(4, ge=1)  # p is adjusted every this many generator steps

    @field_validator("ops")
    @classmethod
    def _ops_once_each(cls, value: list[str]) -> list[str]:
        return _once_each(value, AUGMENT_OPS)

    @field_validator("ada_ops")
    @classmethod
    def _ada_ops_once_each(cls, value: list[str]) -> list[str]:
        return _once_each(value, ADA_OPS)

    @model_validator(mode="after")
    def _keys_of_the_policy(self) -> "AugmentConfig":
        # A key the policy does not read must not be silently ignored (only a value other than the default).
        foreign = [] if self.policy == "ada" else _changed(self, ADA_KEYS)
        if self.policy == "ada" and self.ops != list(AUGMENT_OPS):
            foreign = ["ops"]
        if foreign:
            owner, hint = (("diffaugment", "ada's ops are augment.ada_ops") if foreign == ["ops"]
                           else ("ada", "set augment.policy ada, or leave them out"))
            raise ValueError(f"{', '.join('augment.' + k for k in foreign)}: read by augment.policy {owner} only, "
                             f"not by {self.policy} ({hint})")
        return self


class EvalConfig(_Section):
    every: int = Field(0, ge=0)  # evaluate every N steps (0: never during training)
    metrics: list[str] = Field(default_factory=list)  # names from METRIC_NAMES (docs/metrics.md)
    num_samples: int = Field(10000, ge=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}")
        return value


class Config(_Section):
    name: str = "gankit-run"  # the default run folder is runs/<name>
    seed: int = Field(0, ge=0)

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        # Without --out the run goes to runs/<name>: a name must not lead out of runs/ or be unusable as a path.
        if value in ("", ".", "..") or any(c in value for c in "/\\") or any(ord(c) < 32 for c in value):
            raise ValueError("name is the run's folder name under runs/: it cannot be empty, '.' or '..', or "
                             "hold '/', '\\' or control characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.data.is_toy and self.model.arch != "mlp":
            raise ValueError(f"data.source {self.data.source} is 2-D points: set model.arch to mlp")
        if self.model.arch == "dcgan":
            _check_resolution(self.data.resolution, "dcgan", 16, 256)
        self._check_pgan()
        self._check_stylegan2()
        self._check_ema()
        if self.augment.policy != "none" and (self.data.is_toy or self.model.arch == "pgan"):
            what = f"data.source {self.data.source} (2-D points)" if self.data.is_toy else "model.arch pgan"
            raise ValueError(f"augment.policy {self.augment.policy} augments images and does not support {what}: "
                             "set augment.policy none")
        if self.train.steps is None and self.model.arch != "pgan":
            self.train.steps = DEFAULT_STEPS
        if self.train.compile and self.loss.kind == "wgan-gp":
            raise ValueError("train.compile cannot be used with loss.kind wgan-gp (the gradient penalty needs a "
                             "double backward, which compiled graphs do not support); set train.compile=false")
        if self.train.compile and (self.loss.r1_gamma or self.loss.r2_gamma):
            raise ValueError("train.compile cannot be used with loss.r1_gamma or loss.r2_gamma (the penalties need "
                             "a double backward, which compiled graphs do not support); set train.compile=false")
        self._check_conditioning()
        if self.data.source in PATH_SOURCES and not self.data.path:
            raise ValueError(f"data.source {self.data.source} needs data.path ({PATH_SOURCES[self.data.source]})")
        return self

    def _check_ema(self) -> None:
        if self.train.ema_kimg is not None and self.train.ema is None:
            raise ValueError("train.ema_kimg sets the EMA generator's half-life, and train.ema null turns that "
                             "generator off: give train.ema a value (any; ema_kimg decides the decay) or drop ema_kimg")
        if self.train.ema_rampup is not None and self.train.ema_kimg is None:
            raise ValueError("train.ema_rampup applies with train.ema_kimg (the ramp-up of its half-life)")

    def _check_stylegan2(self) -> None:
        if self.model.arch != "stylegan2":
            used = [f"loss.{k}" for k in _changed(self.loss, STYLEGAN2_LOSS_KEYS)]
            if used:
                raise ValueError(f"{', '.join(used)} only apply to model.arch stylegan2 (it is {self.model.arch})")
            return
        _check_resolution(self.data.resolution, "stylegan2", 16, 1024)
        if self.train.compile and self.loss.pl_weight:
            raise ValueError("train.compile cannot be used with loss.pl_weight (path-length regularization needs a "
                             "double backward, which compiled graphs do not support); set train.compile=false")

    def _check_conditioning(self) -> None:
        conditioning, data = self.model.conditioning, self.data
        if conditioning == "none":
            if data.class_names is not None:
                raise ValueError("data.class_names applies to conditional runs: set model.conditioning, or leave "
                                 "data.class_names out")
        acgan_keys = [f"loss.{k}" for k, default in (("class_weight", 1.0), ("class_loss_on_fakes", False))
                      if getattr(self.loss, k) != default]
        if conditioning != "acgan" and acgan_keys:
            raise ValueError(f"{', '.join(acgan_keys)} applies to model.conditioning acgan only (it is {conditioning})")
        if conditioning == "none":
            return
        if data.labels == "none":
            raise ValueError(f"model.conditioning {conditioning} needs class labels, and data.labels is none: set "
                             "data.labels auto")
        if data.source in UNLABELLED_SOURCES:
            raise ValueError(f"model.conditioning {conditioning} needs class labels, and data.source {data.source} "
                             f"has none: use an unconditional model (model.conditioning none)")

    def _check_pgan(self) -> None:
        model, train = self.model, self.train
        pgan_keys = {"model.depths": model.depths, "train.max_iter_at_scale": train.max_iter_at_scale,
                     "train.fade_iters": train.fade_iters, "train.batch_size_at_scale": train.batch_size_at_scale,
                     "train.lr_at_scale": train.lr_at_scale}
        if model.arch != "pgan":
            used = [k for k, v in pgan_keys.items() if v is not None] + (["loss.gdpp"] if self.loss.gdpp else [])
            if used:
                raise ValueError(f"{', '.join(used)} only apply to model.arch pgan (it is {model.arch})")
            return
        res = self.data.resolution
        _check_resolution(res, "pgan", 8, 1024)
        scales = res.bit_length() - 2  # 4x4 .. res
        # A Config built from an export's model and data sections alone has no schedule to check.
        if "train" not in self.model_fields_set:
            pgan_keys = {"model.depths": model.depths}
        for key in ("train.max_iter_at_scale", "train.fade_iters"):
            if key in pgan_keys and pgan_keys[key] is None:
                raise ValueError(f"model.arch pgan needs {key} (see docs/pgan.md)")
        for key, values in pgan_keys.items():
            if isinstance(values, list):
                if len(values) != scales:
                    raise ValueError(f"{key} has {len(values)} entries; data.resolution {res} has {scales} "
                                     f"scales (4x4 to {res}x{res}): give one per scale")
                if not all(v > 0 for v in values):
                    raise ValueError(f"{key}: every entry must be positive")
        if "train" in self.model_fields_set and any(train.fade_iters > n for n in train.max_iter_at_scale[1:]):
            raise ValueError(f"train.fade_iters {train.fade_iters} is longer than a scale in "
                             f"train.max_iter_at_scale {train.max_iter_at_scale}")


def _check_resolution(res: int, arch: str, lowest: int, highest: int) -> None:
    if res < lowest or res > highest or res & (res - 1):
        raise ValueError(f"data.resolution {res} is not supported by {arch}: use a power of two from {lowest} to "
                         f"{highest}")


# Keys that define the model, the data or the objective (augmentation changes what D learns from):
# changing them on resume would not continue the same run.
FROZEN_ON_RESUME = ("seed", "data", "model", "loss", "augment")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 2e-4 (no dot) as a string; users write learning rates that way, so it is a float here."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str):
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:  # the parser recurses once per nesting level
        raise yaml.YAMLError("nested too deeply") from None


# Values quoted in error messages are cut short: a YAML file can hold a value of any size (aliases
# even make a few lines expand to billions of elements).
_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxlist, _short_repr.maxdict = 2, 4, 4
_short_repr.maxstring = _short_repr.maxother = 80


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
            lines.append(f"  {key}: {msg} (got {_short_repr.repr(item.get('input'))})")
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
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except OSError as err:
            raise GankitError(f"cannot read config file {path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise GankitError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    elif path_or_preset in preset_names():
        text = (resources.files("gankit") / "presets" / f"{path_or_preset}.yaml").read_text()
        origin = f"preset {path_or_preset}"
    else:
        raise GankitError(
            f"{path_or_preset!r} is neither a YAML file nor a preset; presets: {', '.join(preset_names())}"
        )
    try:
        raw = yaml_load(text) or {}
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
        value = yaml_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise GankitError(f"--set {_short_repr.repr(item)}: the value is not a YAML scalar") from None
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
    if new_d["data"]["class_names"] is None:  # null: the names read from the source, as the saved run resolved them
        new_d["data"]["class_names"] = old_d["data"]["class_names"]
    for section in FROZEN_ON_RESUME:
        a, b = old_d[section], new_d[section]
        if isinstance(a, dict):
            changed += [f"{section}.{k}" for k in a if a[k] != b[k]]
        elif a != b:
            changed.append(section)
    return changed
