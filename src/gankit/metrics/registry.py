"""The metric registry: what each metric needs, how many samples its protocol takes, which way is
better, and the function that computes it (imported only when the metric is asked for).

Metrics that share their expensive part are computed by one call per group (the Inception
features serve fid, kid and is; the Fashion-MNIST classifier serves fd_fmnist and kid_fmnist, and
class_accuracy and intra_fd_fmnist). Every group function has the signature
`compute(names, fake, real, context) -> dict` where fake and real are `gankit.metrics.sources.Samples`
(real is None for metrics that do not use it) and the returned dict holds the JSON entries of the
asked names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from gankit.errors import GankitError

LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Metric:
    name: str
    needs: Literal["images", "points"]
    default_samples: int  # generated samples (images, or points) per evaluation in the metric's protocol
    min_samples: int  # below this the metric is undefined or its protocol cannot run
    # Does it compare with the real set? fixed: always with its `reference`, whole and with its labels
    # (whatever --real says), loaded by `evaluate`.
    real: Literal["required", "optional", "none", "fixed"]
    group: str  # metrics of one group are computed by one call
    best: tuple[tuple[str, str], ...]  # (dotted JSON key, lower|higher) values tracked during training
    summary: str
    real_split: str = "train"  # split of the run's data used as the default real set
    keys: tuple[str, ...] = ()  # the JSON keys it writes, when more than its name
    equal_sizes: bool = False  # compares sets of equal size (the smaller side sets the count)
    reference: str | None = None  # a fixed real set (a --real name) for samples that come with none
    # The dataset whose classes the generated samples must have been asked for, in its order (the
    # metric scores each sample against its class): a conditional generator's samples only.
    classes: str | None = None
    min_note: str = "per side"  # what min_samples counts, for the message refusing fewer

    @property
    def output_keys(self) -> tuple[str, ...]:
        return self.keys or (self.name,)


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("swd", "images", 16384, 2, "required", "swd", (("swd.avg", LOWER),),
           "sliced Wasserstein distance of Laplacian-pyramid patches (Progressive GAN), x1e3", equal_sizes=True),
    Metric("ms_ssim", "images", 20000, 2, "optional", "ms_ssim", (("ms_ssim_gap", LOWER),),
           "mean MS-SSIM of consecutive pairs of generated images (10,000 pairs), and of the real set",
           keys=("ms_ssim", "ms_ssim_real", "ms_ssim_gap")),
    Metric("fid", "images", 50000, 2, "required", "inception", (("fid", LOWER),),
           "Frechet Inception distance (TF Inception pool3 features)"),
    Metric("kid", "images", 50000, 1000, "required", "inception", (("kid", LOWER),),
           "kernel Inception distance (100 subsets of 1000, cubic kernel)"),
    Metric("is", "images", 50000, 10, "none", "inception", (("is.mean", HIGHER),),
           "Inception score (10 splits, logits without the output bias)"),
    Metric("pr", "images", 50000, 4, "required", "vgg16", (("pr.precision", HIGHER), ("pr.recall", HIGHER)),
           "improved precision and recall (VGG16 fc2 features, k=3)"),
    # 129: the classifier's 128-d features need N > 128 for a full-rank covariance.
    Metric("fd_fmnist", "images", 10000, 129, "required", "fmnist", (("fd_fmnist", LOWER), ("class_kl", LOWER)),
           "Frechet distance of the packaged Fashion-MNIST classifier's features, plus its class-histogram KL",
           real_split="test", keys=("fd_fmnist", "class_kl"), reference="fashion-mnist:test"),
    Metric("kid_fmnist", "images", 10000, 129, "required", "fmnist", (("kid_fmnist", LOWER),),
           "KID of the packaged Fashion-MNIST classifier's features", real_split="test",
           reference="fashion-mnist:test"),
    Metric("modes", "points", 2500, 1, "none", "modes",
           (("modes.covered", HIGHER), ("modes.high_quality", HIGHER), ("modes.class_match", HIGHER)),
           "modes covered and high-quality fraction on the toy Gaussian mixtures (VEEGAN/PacGAN); per class for "
           "a conditional generator"),
    # 10: a sample per class.
    Metric("class_accuracy", "images", 10000, 10, "fixed", "fmnist_classes", (("class_accuracy", HIGHER),),
           "the Fashion-MNIST classifier's accuracy on conditional samples, each against the class it was asked for",
           real_split="test", keys=("class_accuracy", "class_accuracy_per_class", "class_accuracy_real"),
           reference="fashion-mnist:test", classes="fashion-mnist", min_note="(one per class)"),
    # 1290: 129 per class of the 10, for full-rank 128-d covariances.
    Metric("intra_fd_fmnist", "images", 10000, 1290, "fixed", "fmnist_classes", (("intra_fd_fmnist", LOWER),),
           "fd_fmnist of each class's conditional samples against that class's test images, averaged over classes",
           real_split="test", keys=("intra_fd_fmnist", "intra_fd_fmnist_per_class"), reference="fashion-mnist:test",
           classes="fashion-mnist", min_note="(129 per class of the 10, for full-rank 128-d covariances)"),
]}

# group -> "module:function", imported lazily so that asking for modes never imports torch-fidelity.
GROUP_FUNCTIONS = {
    "swd": "gankit.metrics.registry:compute_swd",
    "ms_ssim": "gankit.metrics.registry:compute_ms_ssim",
    "inception": "gankit.metrics.inception:inception_metrics",
    "vgg16": "gankit.metrics.inception:inception_metrics",
    "fmnist": "gankit.metrics.registry:compute_fmnist",
    "modes": "gankit.metrics.modes:modes_metric",
    "fmnist_classes": "gankit.metrics.classes:class_metrics",
}


def parse_metric_names(names: str | list[str]) -> list[Metric]:
    """Metrics named in a comma-separated string or a list, in the order given, without repeats."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = [n for n in names if n]
    if not names:
        raise GankitError(f"no metric given: choose from {', '.join(METRICS)}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise GankitError(f"unknown metric {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    return [METRICS[n] for n in dict.fromkeys(names)]


def group_function(group: str) -> Callable[..., dict]:
    module_name, function_name = GROUP_FUNCTIONS[group].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise GankitError(f"the {group} metrics are not available in this installation: {err}") from None
    return getattr(module, function_name)


@dataclass
class EvalContext:
    """What the metric functions may need besides the samples."""

    device: Any  # torch.device
    seed: int = 0
    inception_weights: str | None = None  # local TF-Inception weights file (offline machines)
    vgg16_weights: str | None = None  # local torchvision VGG16 weights file (offline machines)
    cache: dict = field(default_factory=dict)  # per-process results on fixed real sets (e.g. real MS-SSIM)
    verbose: bool = False
    progress: bool | None = False  # progress bars: True, False, or None for "when stderr is a terminal"


def lookup(result: dict, dotted: str):
    """result['a']['b'] for 'a.b'; None when absent."""
    node: Any = result
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ---- adapters to the metric modules that take plain uint8 tensors ----------------------------------

def compute_swd(names, fake, real, context: EvalContext) -> dict:
    from gankit.metrics import swd

    reference = real.data
    if real.key is not None:
        # A fixed real set: its SWD reference (descriptors and channel statistics) is built once per
        # process and reused by every later evaluation of the run. No file: the images are already
        # decoded here, and a file cache under 1 GiB can only hold the images, not the 4.6 GiB of
        # descriptors at the paper's scale, so a hit would redo the very work it was meant to save
        # (docs/benchmarks.md, SWD memory; swd.real_descriptor_cache remains for callers whose real
        # images are costly to produce).
        memo = ("swd", real.key, len(real.data), context.seed)
        if memo not in context.cache:
            context.cache[memo] = swd.SWDReference.build(real.data, seed=context.seed, progress=context.progress)
        reference = context.cache[memo]
    return {"swd": swd.sliced_wasserstein(reference, fake.data, seed=context.seed, progress=context.progress)}


def compute_ms_ssim(names, fake, real, context: EvalContext) -> dict:
    from gankit.metrics.ms_ssim import ms_ssim_pairs

    fake_score = float(ms_ssim_pairs(fake.data, num_pairs=len(fake.data) // 2, progress=context.progress))
    out: dict[str, Any] = {"ms_ssim": fake_score}
    if real is not None:
        # The real set's own score is fixed: compute it once per process (periodic evaluation).
        key = ("ms_ssim_real", real.key, len(real.data))
        if real.key is None or key not in context.cache:
            context.cache[key] = float(ms_ssim_pairs(real.data, num_pairs=len(real.data) // 2,
                                                     progress=context.progress, desc="MS-SSIM pairs (real)"))
        out["ms_ssim_real"] = context.cache[key]
        out["ms_ssim_gap"] = abs(fake_score - out["ms_ssim_real"])
    return out


def compute_fmnist(names, fake, real, context: EvalContext) -> dict:
    from gankit.metrics.fmnist import fmnist_metrics

    values = fmnist_metrics(real.data, fake.data, context.device, progress=context.progress)
    out: dict[str, Any] = {}
    if "fd_fmnist" in names:
        out["fd_fmnist"] = float(values["fd_fmnist"])
        out["class_kl"] = float(values["class_kl"])
    if "kid_fmnist" in names:
        out["kid_fmnist"] = float(values["kid_fmnist"])
    return out
