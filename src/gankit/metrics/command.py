"""`gankit eval`: metrics of a generator (or of files of samples) against a real set.

The result is one JSON object (--json prints it, --out writes it): the asked metrics under the keys
of docs/metrics.md, then `num_samples` (the most generated samples any metric used) and `samples`
(per metric, the generated and real counts used). Without --json the command prints it as a table.
With --truncation PSI (StyleGAN2) the metrics see truncated samples and the object says `"truncation": PSI`;
a truncated result (PSI below 1) is kept out of the run's metrics.jsonl, whose curves are the generator's
untruncated samples (as --no-ema's raw-G results are).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gankit.errors import GankitError
from gankit.metrics.registry import EvalContext, Metric, group_function, parse_metric_names
from gankit.metrics.sources import NAMED_SOURCES_TEXT, Samples, load_dataset, parse_dataset_name


def check_sample_minimum(metrics: list[Metric], num_samples: int | None, option: str = "--num-samples") -> None:
    """Fails before any work when an explicit sample count is below a metric's minimum."""
    if num_samples is None:
        return
    if num_samples < 1:
        raise GankitError(f"{option} must be at least 1, got {num_samples}")
    for metric in metrics:
        if num_samples < metric.min_samples:
            raise GankitError(f"{metric.name} needs at least {metric.min_samples} samples {metric.min_note}, {option} "
                              f"gives {num_samples}: pass {option} {metric.min_samples} or more")


def check_kinds(metrics: list[Metric], kind: str, origin: str) -> None:
    """Image metrics on images, toy metrics on 2-D points."""
    from gankit.metrics.registry import METRICS

    for metric in metrics:
        if metric.needs != kind:
            fitting = [name for name, m in METRICS.items() if m.needs == kind]
            raise GankitError(f"{metric.name} needs {metric.needs}, but {origin} gives {kind}; the metrics for "
                              f"{kind} are: {', '.join(fitting)}")


def check_classes(metrics: list[Metric], class_names: list[str] | None, origin: str, files: bool = False) -> None:
    """Refuses, before any work, a metric that scores samples against their asked classes (class_accuracy,
    intra_fd_fmnist) on samples without classes or with other classes than the metric's dataset.

    class_names: the generator's classes (None: unconditional); files: the samples are files (no labels)."""
    from gankit.data.idx import CLASS_NAMES

    for metric in metrics:
        if metric.classes is None:
            continue
        if files:
            raise GankitError(f"{metric.name} scores each sample against the class it was asked for, and {origin} "
                              "holds files without classes: evaluate the class-conditional generator itself "
                              f"(gankit eval RUN --metrics {metric.name})")
        if class_names is None:
            raise GankitError(f"{metric.name} needs a class-conditional generator, and {origin} is unconditional "
                              f"(model.conditioning none): train with model.conditioning projection, acgan or concat")
        expected = CLASS_NAMES[metric.classes]
        if list(class_names) != expected:
            raise GankitError(f"{metric.name} scores samples with the {metric.classes} classifier, so it needs a "
                              f"generator of {metric.classes}'s {len(expected)} classes in their order "
                              f"({', '.join(expected)}); {origin} has {len(class_names)}: {', '.join(class_names)}")


def wanted_counts(metrics: list[Metric], num_samples: int | None) -> dict[str, int]:
    """Generated samples per metric: --num-samples for all, else each metric's protocol default."""
    return {m.name: num_samples or m.default_samples for m in metrics}


def _count(samples: Samples, wanted: int, explicit: bool, metric: Metric, side: str) -> int:
    available = len(samples.data)
    if explicit and available < wanted:
        raise GankitError(f"{metric.name}: --num-samples {wanted} asks for more than the {available} {side} samples "
                          f"of {samples.origin}: pass --num-samples {available} or fewer")
    used = min(wanted, available)
    if used < metric.min_samples:
        raise GankitError(f"{metric.name} needs at least {metric.min_samples} {side} samples, {samples.origin} has "
                          f"{available}: give a source with more samples")
    return used


def evaluate(metrics: list[Metric], fake: Samples, reals: dict[str, Samples], context: EvalContext,
             num_samples: int | None, strict: bool = True) -> dict:
    """Computes the metrics; reals maps a split ('train', 'test') to the real samples for the metrics
    that use that split (absent when none is needed; metrics with a fixed reference read it here).
    Returns the JSON object described above.

    strict: an explicit num_samples larger than a source is an error (else the source's size is used)."""
    wanted = wanted_counts(metrics, num_samples)
    explicit = strict and num_samples is not None
    groups: dict[str, list[Metric]] = {}
    for metric in metrics:
        groups.setdefault(metric.group, []).append(metric)

    values: dict = {}
    used: dict[str, dict] = {}
    for group, members in groups.items():
        group_wanted = max(wanted[m.name] for m in members)
        n_fake = max(_count(fake, group_wanted, explicit, m, "generated") for m in members)
        real = None
        if any(m.real == "fixed" for m in members):  # the whole reference, with its labels: never cut
            real = fixed_reference(members[0].reference, fake, context)
            _check_same_kind(fake, real)
        elif any(m.real != "none" for m in members):
            real = reals.get(members[0].real_split)
            if real is None and any(m.real == "required" for m in members):
                raise GankitError(f"{members[0].name} compares with real samples: pass --real")
            if real is not None:
                _check_same_kind(fake, real)
                n_real = max(_count(real, group_wanted, explicit, m, "real") for m in members)
                if any(m.equal_sizes for m in members):
                    n_fake = n_real = min(n_fake, n_real)
                real = real.first(n_real)
        started = time.perf_counter()
        names = [m.name for m in members]
        values.update(group_function(group)(names, fake.first(n_fake), real, context))
        if context.verbose:
            print(f"{', '.join(names)}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for m in members:
            used[m.name] = {"fake": n_fake, "real": len(real.data) if real is not None and m.real != "none" else 0}

    result = {key: values[key] for key in _output_order(metrics, values)}
    result["num_samples"] = max(u["fake"] for u in used.values())
    result["samples"] = used
    return result


def fixed_reference(spec: str, fake: Samples, context: EvalContext) -> Samples:
    """A fixed metric's reference (a dataset split with its labels, fitted to the generated images), read
    once per process and shape."""
    from gankit.metrics.sources import load_labelled_reference

    memo = ("reference", spec, tuple(fake.data.shape[1:]))
    if memo not in context.cache:
        context.cache[memo] = load_labelled_reference(spec, fake)
    return context.cache[memo]


def reference_origin(spec: str) -> str:
    """Where a fixed reference comes from, as load_labelled_reference's samples say it."""
    name, split = parse_dataset_name(spec)
    return f"the {split} images of {name}"


def _output_order(metrics: list[Metric], values: dict) -> list[str]:
    # Each metric's keys in the order asked (its name first, then companions such as ms_ssim_real).
    order = [key for metric in metrics for key in metric.output_keys if key in values]
    return order + [key for key in values if key not in order]


def _check_same_kind(fake: Samples, real: Samples) -> None:
    if fake.kind != real.kind or (fake.kind == "images" and fake.data.shape[1:] != real.data.shape[1:]):
        raise GankitError(
            f"the generated samples ({fake.origin}) are {fake.shape_text()} but the real ones ({real.origin}) "
            f"are {real.shape_text()}: pass --real with {fake.shape_text()} (resize a folder with `gankit prepare "
            "folder SRC DEST --size S`), or leave --real out to use the run's training data"
        )


def real_sets(metrics: list[Metric], spec: str | None, source, num_samples: int | None, seed: int,
              fake: Samples | None = None) -> dict:
    """Loads the real samples the metrics need, once per split, as many as the largest metric wants.

    spec is --real: files, a toy source, or a dataset name (fitted to the shape of fake, the generated
    samples). Without it: the source's training data, else each metric's fixed reference (fd_fmnist:
    the Fashion-MNIST test set); a metric with neither is refused here, before any work."""
    from gankit.metrics.sources import load_real

    wanted = wanted_counts(metrics, num_samples)
    training_data = source.training_data() if spec is None else None
    per_split: dict[str, int] = {}
    references: dict[str, str] = {}  # split -> the fixed reference of the metrics that use it
    for metric in metrics:
        if metric.real in ("none", "fixed"):  # fixed: evaluate reads the reference itself
            continue
        if spec is None and training_data is None:
            if metric.reference is not None:
                references[metric.real_split] = metric.reference
            elif metric.real == "optional":
                continue  # e.g. ms_ssim of a folder of images: the real set's own score is left out
            else:
                raise GankitError(f"{metric.name} compares with real samples, and {source.describe()} has no "
                                  f"training data: pass --real with the real images (a folder or .zip, or "
                                  f"{NAMED_SOURCES_TEXT})")
        per_split[metric.real_split] = max(per_split.get(metric.real_split, 0), wanted[metric.name])

    if not per_split:
        return {}
    named = parse_dataset_name(spec) if spec is not None else None
    if named is not None:
        name, given_split = named
        if given_split is not None:  # one split serves every metric
            real = load_dataset(name, given_split, fake, max(per_split.values()), seed)
            return dict.fromkeys(per_split, real)
        return {split: load_dataset(name, split, fake, n, seed) for split, n in per_split.items()}
    if spec is not None:  # one given set serves every split
        real = load_real(spec, None, max(per_split.values()), "train", seed)
        return dict.fromkeys(per_split, real)
    if references:
        return {split: load_dataset(*parse_dataset_name(references[split]), fake, n, seed)
                for split, n in per_split.items()}
    return {split: load_real(None, training_data, n, split, seed) for split, n in per_split.items()}


def format_value(value) -> str:
    """A value as the table shows it: integers whole, floats to 5 significant digits, None as none."""
    if value is None:
        return "none"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1e5:  # where the g format would switch to an exponent
        return f"{value:.0f}"
    return f"{value:.5g}"


def table_rows(result: dict, metrics: list[Metric]) -> list[tuple[str, str, str, str]]:
    """(name, value, generated, real) for each value of the result; nested values get dotted names
    (swd.16, is.mean), companions (class_kl, ms_ssim_real) the counts of their metric; real is '-'
    for a metric that uses no real samples."""
    metric_of = {key: metric.name for metric in metrics for key in metric.output_keys}
    rows = []
    for key, value in result.items():
        if key in ("num_samples", "samples", "truncation"):
            continue
        counts = result["samples"][metric_of.get(key, key)]
        real = str(counts["real"]) if counts["real"] else "-"
        for name, leaf in _leaves(key, value):
            rows.append((name, format_value(leaf), str(counts["fake"]), real))
    return rows


def _leaves(name: str, value) -> list[tuple[str, object]]:
    """(dotted name, value) of each leaf of a nested value (modes.per_class.3)."""
    if not isinstance(value, dict):
        return [(name, value)]
    return [leaf for part, inner in value.items() for leaf in _leaves(f"{name}.{part}", inner)]


def format_table(result: dict, metrics: list[Metric], generated_from: str, real_from: list[str]) -> str:
    """The result as people read it: where the samples come from, then one aligned row per value."""
    rows = [("metric", "value", "generated", "real"), *table_rows(result, metrics)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"generated: {generated_from}", f"real:      {'; '.join(real_from) or 'none'}", ""]
    for name, value, fake, real in rows:
        lines.append(f"{name:<{widths[0]}}  {value:>{widths[1]}}  {fake:>{widths[2]}}  {real:>{widths[3]}}")
    return "\n".join(lines)


def real_origins(metrics: list[Metric], reals: dict[str, Samples]) -> list[str]:
    """Where each metric's real samples came from, one entry per set (naming its metrics when several)."""
    users: dict[str, list[str]] = {}
    for metric in metrics:
        if metric.real == "fixed":
            users.setdefault(reference_origin(metric.reference), []).append(metric.name)
        elif metric.real != "none" and metric.real_split in reals:
            users.setdefault(reals[metric.real_split].origin, []).append(metric.name)
    if len(users) == 1:
        return list(users)
    return [f"{origin} ({', '.join(names)})" for origin, names in users.items()]


def append_metrics_line(run_dir: Path, step: int, result: dict, origin: str) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **result, "origin": origin, "time": time.time()}) + "\n")


def eval_command(args) -> int:
    """Runs `gankit eval`: prints the table (or the JSON object with --json), writes the JSON to --out, and
    appends it to a run's metrics.jsonl."""
    from gankit.config import TOY_SOURCES
    from gankit.device import resolve_device
    from gankit.metrics.sources import FileSource, open_fake
    from gankit.sampling import check_truncation, with_truncation

    metrics = parse_metric_names(args.metrics)
    check_sample_minimum(metrics, args.num_samples)
    psi = getattr(args, "truncation", None)
    check_truncation(psi)
    if psi is not None and args.fake:
        raise GankitError("--truncation applies to a StyleGAN2 generator, not to --fake files")
    device = resolve_device(args.device)
    source = open_fake(args.source, args.fake, device, getattr(args, "no_ema", False))
    if psi is not None:
        source.generator = with_truncation(source.generator, psi)
    check_kinds(metrics, source.kind, source.describe())
    check_classes(metrics, getattr(source, "class_names", None), source.describe(),
                  files=isinstance(source, FileSource))

    counts = wanted_counts(metrics, args.num_samples)
    fake = source.draw(max(counts.values()), args.seed)
    if psi is not None:
        fake.origin += f", truncation psi {psi:g}"
    if fake.kind == "points" and fake.toy_source is None and args.real in TOY_SOURCES:
        fake.toy_source = args.real  # points from a .npy file: --real names the mixture they imitate
    reals = real_sets(metrics, args.real, source, args.num_samples, args.seed, fake)
    context = EvalContext(device=device, seed=args.seed, inception_weights=args.inception_weights,
                          vgg16_weights=getattr(args, "vgg16_weights", None), verbose=sys.stderr.isatty(),
                          progress=None)
    result = evaluate(metrics, fake, reals, context, args.num_samples)
    if psi is not None:
        result["truncation"] = psi

    text = json.dumps(result, indent=2)
    if args.out:
        from gankit.files import atomic_write

        atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(text + "\n"))
    # The run's metrics.jsonl tracks the generator it samples with (EMA): raw-G values would mix into its curves.
    # Truncated samples likewise: a score at psi 0.7 is not a point on the generator's curve.
    if source.run_dir is not None and not getattr(source, "no_ema", False) and (psi is None or psi == 1):
        append_metrics_line(source.run_dir, source.step, {k: v for k, v in result.items() if k != "truncation"},
                            "eval")
    print(text if args.json else format_table(result, metrics, fake.origin, real_origins(metrics, reals)))
    return 0
