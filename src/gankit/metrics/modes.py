"""Mode coverage on the toy Gaussian mixtures, with the definitions of VEEGAN (Srivastava et al.
2017) and PacGAN (Lin et al. 2018).

- A sample is of high quality when it lies within 3 standard deviations of its nearest mode
  (Euclidean distance <= 3 * std in the 2-D data space).
- A mode is covered when it is the nearest mode of at least one high-quality sample.
- kl: KL(p || uniform) in nats, where p is the histogram over modes of the high-quality samples
  (each assigned to its nearest mode). 0 when they are spread evenly, log(K) when all sit on one
  mode; None when no sample is of high quality (the histogram is empty).

For a class-conditional generator (cgan-25gaussians: class k is mode k of gankit.data.toy.mixture_modes),
whose samples carry the class each was asked for, also per_class: the fraction of class k's samples
within 3 std of mode k (None for a class without samples), and class_match, their mean over classes.
"""

from __future__ import annotations

import torch

from gankit.errors import GankitError
from gankit.metrics.stats import kl_to_uniform

HIGH_QUALITY_STDS = 3.0


def mode_coverage(points: torch.Tensor, centres: torch.Tensor, std: float) -> dict:
    """{covered, total, high_quality (fraction of samples), kl} of points [N, 2] against the modes."""
    points = torch.as_tensor(points, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    if points.ndim != 2 or points.shape[1] != centres.shape[1] or len(points) == 0:
        raise GankitError(f"mode coverage needs points [N, {centres.shape[1]}] with N >= 1, got "
                          f"{tuple(points.shape)}")
    distances = torch.cdist(points, centres)
    nearest_distance, nearest_mode = distances.min(dim=1)
    high_quality = nearest_distance <= HIGH_QUALITY_STDS * std
    counts = torch.bincount(nearest_mode[high_quality], minlength=len(centres))
    return {
        "covered": int((counts > 0).sum()),
        "total": len(centres),
        "high_quality": float(high_quality.double().mean()),
        "kl": kl_to_uniform(counts.numpy()) if counts.sum() > 0 else None,
    }


def class_coverage(points: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, std: float,
                   class_names: list[str]) -> dict:
    """{per_class: {name: fraction of class k's points within 3 std of mode k}, class_match: their mean}."""
    points = torch.as_tensor(points, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    if len(class_names) != len(centres):
        raise GankitError(f"per-class mode coverage needs a class per mode: the generator has {len(class_names)} "
                          f"classes and the mixture {len(centres)} modes")
    if len(labels) != len(points):
        raise GankitError(f"{len(labels)} labels for {len(points)} points")
    on_own_mode = (points - centres[labels]).norm(dim=1) <= HIGH_QUALITY_STDS * std
    per_class = {}
    for k, name in enumerate(class_names):
        mine = labels == k
        per_class[name] = float(on_own_mode[mine].double().mean()) if mine.any() else None
    fractions = [f for f in per_class.values() if f is not None]
    return {"per_class": per_class, "class_match": sum(fractions) / len(fractions)}


def modes_metric(names, fake, real, context) -> dict:
    """The registry's entry point: fake holds the generated points and the mixture they imitate (and
    the classes they were asked for, for a conditional generator)."""
    from gankit.data.toy import mixture_modes

    source = fake.toy_source
    if source not in ("toy-8gaussians", "toy-25gaussians"):
        raise GankitError(
            f"modes is defined for the Gaussian mixtures toy-8gaussians and toy-25gaussians, not for "
            f"{source or 'points of an unknown source'}"
            + ("" if source else ": pass --real toy-8gaussians or --real toy-25gaussians to name the mixture")
        )
    centres, std = mixture_modes(source)
    result = mode_coverage(fake.data, centres, std)
    if fake.labels is not None:
        class_names = fake.class_names or [str(k) for k in range(len(centres))]
        result.update(class_coverage(fake.data, fake.labels, centres, std, class_names))
    return {"modes": result}

