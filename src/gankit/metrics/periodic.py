"""Evaluation during training: every `eval.every` steps, `eval.metrics` on `eval.num_samples` samples of
the EMA generator, appended to RUN/metrics.jsonl, with the best value of each tracked quantity kept in
RUN/metrics_best.json (lower or higher is better as the registry says; MS-SSIM by its gap to the
real data's own MS-SSIM).

The latents are the same at every evaluation (drawn from seed + 2), and so are a conditional
generator's classes (sources.balanced_labels), so the curve shows the generator's change, not sampling
noise. Evaluation runs under a forked RNG: a run with evaluation trains bit-identically to one without.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from gankit.config import Config
from gankit.errors import GankitError
from gankit.metrics.command import (append_metrics_line, check_classes, check_kinds, check_sample_minimum, evaluate,
                                    real_sets)
from gankit.metrics.registry import EvalContext, lookup, parse_metric_names
from gankit.metrics.sources import Samples, balanced_labels, draw_from_generator

BEST_FILE = "metrics_best.json"


class _TrainingData:
    """What real_sets asks of a source: the training data of the run being trained."""

    def __init__(self, config: Config):
        self.config = config

    def training_data(self):
        return self.config.data


class PeriodicEvaluator:
    """Built before training starts (so a bad eval config fails first); called with the generator."""

    def __init__(self, config: Config, run_dir: Path, device: torch.device, writer=None):
        if not config.eval.metrics:
            raise GankitError(f"eval.every is {config.eval.every} but eval.metrics is empty: name the metrics, "
                              "e.g. --set 'eval.metrics=[fid]', or set eval.every=0")
        self.metrics = parse_metric_names(config.eval.metrics)
        self.kind = "points" if config.data.is_toy else "images"
        check_kinds(self.metrics, self.kind, f"data.source {config.data.source}")
        check_sample_minimum(self.metrics, config.eval.num_samples, option="eval.num_samples")
        # The trained generator's classes (the loop resolves data.class_names before building this).
        conditional = config.model.conditioning != "none"
        self.class_names = list(config.data.class_names) if conditional and config.data.class_names else None
        check_classes(self.metrics, self.class_names, "this run's generator")
        if config.data.source == "toy-swissroll" and any(m.name == "modes" for m in self.metrics):
            raise GankitError("eval.metrics: modes is defined for the Gaussian mixtures, not toy-swissroll")
        self.run_dir, self.device, self.writer = Path(run_dir), device, writer
        self.num_samples = config.eval.num_samples
        self.z_dim = config.model.z_dim
        self.latent_seed = config.seed + 2  # +1 is the sample grid's
        self.toy_source = config.data.source if config.data.is_toy else None
        self.context = EvalContext(device=device, seed=config.seed)
        self.reals = real_sets(self.metrics, None, _TrainingData(config), self.num_samples, config.seed)
        for metric in self.metrics:
            real = self.reals.get(metric.real_split) if metric.real not in ("none", "fixed") else None
            if real is not None and len(real.data) < metric.min_samples:
                raise GankitError(f"eval.metrics: {metric.name} needs at least {metric.min_samples} real samples; "
                                  f"{real.origin} has {len(real.data)}")
        self._fetch_weights()
        self._read_references(config)
        best_file = self.run_dir / BEST_FILE
        self.best: dict = json.loads(best_file.read_text()) if best_file.is_file() else {}

    def _fetch_weights(self) -> None:
        # Find (or download) the feature extractors' weights now rather than after hours of training.
        groups = {m.group for m in self.metrics}
        if groups & {"inception", "vgg16"}:
            from gankit.metrics.inception import resolve_weights

            for extractor in ("inception", "vgg16"):
                if extractor in groups:
                    resolve_weights(extractor, None)

    def _read_references(self, config: Config) -> None:
        # The fixed references (class_accuracy's labelled test set) now too, into the context's cache.
        fixed = [m for m in self.metrics if m.real == "fixed"]
        if fixed:
            from gankit.metrics.command import fixed_reference

            shape = (config.data.channels, config.data.resolution, config.data.resolution)
            like = Samples(torch.empty(0, *shape, dtype=torch.uint8), "this run's generator")
            for metric in fixed:
                fixed_reference(metric.reference, like, self.context)

    def __call__(self, generator: torch.nn.Module, step: int) -> str:
        """Evaluates, records and returns a one-line summary for the log."""
        numpy_state = np.random.get_state()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            was_training = generator.training
            generator.eval()
            labels = balanced_labels(self.num_samples, len(self.class_names or []))
            try:
                data = draw_from_generator(generator, self.z_dim, self.num_samples, self.latent_seed,
                                           self.device, self.kind, labels=labels)
            finally:
                generator.train(was_training)
            fake = Samples(data, f"the generator at step {step}", self.toy_source, labels=labels,
                           class_names=self.class_names)
            # A training set smaller than eval.num_samples is used whole (the counts are recorded).
            result = evaluate(self.metrics, fake, self.reals, self.context, self.num_samples, strict=False)
        np.random.set_state(numpy_state)

        append_metrics_line(self.run_dir, step, result, "training")
        improved = self._update_best(result, step)
        if self.writer is not None:
            for key, value in flatten(result).items():
                self.writer.add_scalar(f"eval/{key}", value, step)
        parts = []
        for metric in self.metrics:
            for key, _ in metric.best:
                value = lookup(result, key)
                if value is not None:
                    parts.append(f"{key} {value:.4g}" + (" (best)" if key in improved else ""))
        return f"eval at step {step}: " + ", ".join(parts)

    def _update_best(self, result: dict, step: int) -> set[str]:
        improved = update_best(self.best, self.metrics, result, step)
        if improved:
            from gankit.files import atomic_write

            text = json.dumps(self.best, indent=2)
            atomic_write(self.run_dir / BEST_FILE, lambda tmp: Path(tmp).write_text(text + "\n"))
        return improved


def update_best(best: dict, metrics, result: dict, step: int) -> set[str]:
    """Updates best ({key: {value, step, direction}}) in place with result; returns the keys improved.
    Ties keep the earlier step."""
    improved = set()
    for metric in metrics:
        for key, direction in metric.best:
            value = lookup(result, key)
            if value is None or not math.isfinite(value):
                continue
            old = best.get(key)
            if old is None or (value < old["value"] if direction == "lower" else value > old["value"]):
                best[key] = {"value": value, "step": step, "direction": direction}
                improved.add(key)
    return improved


def flatten(result: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics object as {'swd.64': v, ...}, without the sample counts."""
    out = {}
    for key, value in result.items():
        if key in ("samples", "num_samples"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out
