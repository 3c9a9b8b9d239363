"""class_accuracy and intra_fd_fmnist: the class-conditional metrics, in the feature space of the shipped
Fashion-MNIST classifier (gankit.metrics.fmnist).

Both score a conditional generator's samples against the class each was asked for (Samples.labels,
class-balanced: sources.balanced_labels), so they need a generator of Fashion-MNIST's ten classes in
Fashion-MNIST's order. Their reference is fixed: the whole Fashion-MNIST test set with its labels (1,000
images per class), fitted to the generated images' size and channels as fd_fmnist's real set is.

- class_accuracy: the fraction of samples whose argmax class is the asked one; per class too, and
  class_accuracy_real, the classifier's own accuracy on the reference (91.9 % at 32 px), the ceiling a
  generator of the real distribution would reach.
- intra_fd_fmnist: fd_fmnist of each class's samples against that class's test images, averaged over
  the classes (the intra-FID of Miyato & Koyama 2018, in this classifier's features); per class too.
"""

from __future__ import annotations

import torch

from gankit.errors import GankitError
from gankit.metrics import stats
from gankit.metrics.fmnist import FEATURE_DIM, fmnist_features

# Each class's 128-d covariance must be full-rank, as fd_fmnist's (MIN_SAMPLES there).
MIN_PER_CLASS = FEATURE_DIM + 1


def _reference_features(real, context) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of the fixed labelled reference, once per process (periodic evaluation)."""
    memo = ("fmnist_classes", real.key, str(context.device))
    if real.key is None or memo not in context.cache:
        context.cache[memo] = fmnist_features(real.data, context.device, progress=context.progress,
                                              desc="classifier features (real)")
    return context.cache[memo]


def _per_class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [torch.nonzero(labels == k).flatten() for k in range(num_classes)]


def class_metrics(names, fake, real, context) -> dict:
    """The registry's entry point: fake and real both carry labels into the same class_names."""
    if fake.labels is None or real is None or real.labels is None:
        raise GankitError(f"{', '.join(names)} need samples with the classes they were asked for (a class-conditional "
                          "generator's) and a labelled reference")
    if fake.class_names != real.class_names:
        raise GankitError(f"{fake.origin} has classes {', '.join(fake.class_names or [])}, but the reference "
                          f"{real.origin} has {', '.join(real.class_names or [])}")
    class_names = real.class_names
    fake_by_class = _per_class_indices(fake.labels, len(class_names))
    real_by_class = _per_class_indices(real.labels, len(class_names))
    if "intra_fd_fmnist" in names:
        fewest = min(range(len(class_names)), key=lambda k: len(fake_by_class[k]))
        if len(fake_by_class[fewest]) < MIN_PER_CLASS:
            raise GankitError(
                f"intra_fd_fmnist needs at least {MIN_PER_CLASS} generated images per class for a full-rank "
                f"{FEATURE_DIM}-d covariance, and class {class_names[fewest]} has {len(fake_by_class[fewest])}: pass "
                f"--num-samples {MIN_PER_CLASS * len(class_names)} or more (10000 is the usual protocol)")

    real_features, real_logits = _reference_features(real, context)
    fake_features, fake_logits = fmnist_features(fake.data, context.device, progress=context.progress,
                                                 desc="classifier features (generated)")
    out: dict = {}
    if "class_accuracy" in names:
        correct = fake_logits.argmax(1) == fake.labels
        out["class_accuracy"] = float(correct.double().mean())
        out["class_accuracy_per_class"] = {
            name: float(correct[where].double().mean()) if len(where) else None
            for name, where in zip(class_names, fake_by_class)}
        out["class_accuracy_real"] = float((real_logits.argmax(1) == real.labels).double().mean())
    if "intra_fd_fmnist" in names:
        per_class = {name: stats.frechet_distance(real_features[real_where], fake_features[fake_where])
                     for name, real_where, fake_where in zip(class_names, real_by_class, fake_by_class)}
        out["intra_fd_fmnist"] = float(sum(per_class.values()) / len(per_class))
        out["intra_fd_fmnist_per_class"] = per_class
    return out
