"""Sampling and export: read the checkpoint files, never the training loop.

Class-conditional generators (docs/conditional.md): `--class` picks classes by name or index. Grids put
one class per row, and every column is one latent across the rows' classes (as training's sample grids);
files (`--out-dir`, `--out points.npy`) give every sample its own latent and write its class beside it.

StyleGAN2 generators (docs/stylegan2.md): `--truncation PSI` moves every w towards the average w the
training tracked (w = w_avg + psi (w - w_avg)); `map_latents` and `synthesize` are the two halves of G for
the pictures made in W (interpolation, style mixing).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from gankit.checkpoint import (export_generator, is_checkpoint_file, list_checkpoints, load_checkpoint_generator,
                               load_generator)
from gankit.device import resolve_device
from gankit.errors import GankitError
from gankit.files import atomic_write
from gankit.viz.grid import grid_image, save_grid, save_scatter, to_uint8

MAX_SAMPLES = 1_000_000
LABELS_FILE = "labels.csv"  # --out-dir of a conditional generator: file,class_index,class_name per image
MAX_LISTED_CLASSES = 50  # an error message names at most this many classes


def load_raw_generator(source: Path, device: torch.device):
    """The non-EMA generator of a checkpoint file, or of a run folder's newest checkpoint, with the same
    meta as load_generator."""
    if not is_checkpoint_file(source):
        found = list_checkpoints(source)
        if not found:
            raise GankitError(f"--no-ema needs a run folder with checkpoints; {source} has none")
        source = found[-1]
    return load_checkpoint_generator(source, device, ema=False)


def load_for_sampling(source: str, no_ema: bool, device: torch.device):
    """The generator of a run folder, an export, a checkpoint file or a zoo entry (`zoo:NAME`): its EMA
    weights, or with no_ema the raw G."""
    from gankit.zoo import is_zoo_name

    if no_ema:
        if is_zoo_name(source):
            raise GankitError(f"--no-ema: {source} is a zoo entry, an exported generator that holds the EMA weights "
                              "only; leave --no-ema out")
        if not (Path(source).is_dir() or is_checkpoint_file(source)):
            raise GankitError("--no-ema needs a run folder or a checkpoint file (an exported generator holds the "
                              "EMA weights only)")
        return load_raw_generator(Path(source), device)
    return load_generator(source, device)


# ---- classes -------------------------------------------------------------------------------------

def class_names_of(generator: torch.nn.Module, meta: dict) -> list[str] | None:
    """The class names of a conditional generator, index order; None for an unconditional one."""
    count = getattr(generator, "num_classes", 0) or 0
    if not count:
        return None
    names = meta["data"].class_names
    return list(names) if names and len(names) == count else [str(i) for i in range(count)]


def describe_classes(names: list[str]) -> str:
    """'0 T-shirt/top, 1 Trouser, ...' (the names alone where they are the indices), at most MAX_LISTED_CLASSES."""
    plain = all(name == str(i) for i, name in enumerate(names))
    listed = [name if plain else f"{i} {name}" for i, name in enumerate(names[:MAX_LISTED_CLASSES])]
    more = f", ... ({len(names)} in all)" if len(names) > MAX_LISTED_CLASSES else ""
    return ", ".join(listed) + more


def not_conditional(source: str, option: str) -> GankitError:
    return GankitError(f"{option}: {source} is not class-conditional (its model was trained without labels, "
                       "model.conditioning none)")


def resolve_class(spec: str, names: list[str], source: str, option: str = "--class") -> int:
    """A class index from a name or an index: an exact name first, then a name differing only in case (when
    one class has it), then a number in range."""
    if spec in names:
        return names.index(spec)
    folded = [i for i, name in enumerate(names) if name.casefold() == spec.casefold()]
    if len(folded) == 1:
        return folded[0]
    if spec.strip().isdigit() and int(spec) < len(names):
        return int(spec)
    what = (f"class index {spec} is out of range (0 to {len(names) - 1})" if spec.strip().isdigit()
            else f"{source} has no class {spec!r}")
    raise GankitError(f"{option} {spec}: {what}; its classes: {describe_classes(names)}")


def resolve_classes(specs: list[str], names: list[str] | None, source: str, option: str = "--class") -> list[int]:
    """Class indices for the --class values, in the order given; refuses any on an unconditional generator."""
    if specs and names is None:
        raise not_conditional(source, option)
    return [resolve_class(spec, names, source, option) for spec in specs]


# ---- StyleGAN2: truncation, the two halves of G ---------------------------------------------------

def is_stylegan2(generator: torch.nn.Module) -> bool:
    """A generator with a mapping network, an average w and a synthesis network (gankit.models.stylegan2)."""
    return all(hasattr(generator, name) for name in ("mapping", "synthesize", "w_avg", "num_ws"))


def require_stylegan2(generator: torch.nn.Module, option: str) -> None:
    if not is_stylegan2(generator):
        arch = type(generator).__module__.rsplit(".", 1)[-1]  # gankit.models.<arch>
        raise GankitError(f"{option} applies to StyleGAN2 generators (model.arch stylegan2); this one is {arch}")


def check_truncation(psi: float | None) -> None:
    """Refuses a --truncation outside [0, 1] (NaN included), before anything is loaded."""
    if psi is not None and not 0.0 <= psi <= 1.0:
        raise GankitError(f"--truncation {psi:g}: give a value from 0 to 1 (1: no truncation; 0: every sample is "
                          "the image of the average w)")


class TruncatedGenerator(torch.nn.Module):
    """G(z) with truncation psi: what sampling, rendering and the metrics call, unchanged otherwise."""

    def __init__(self, generator: torch.nn.Module, psi: float):
        super().__init__()
        self.generator, self.psi = generator, float(psi)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels, truncation_psi=self.psi)


def with_truncation(generator: torch.nn.Module, psi: float | None) -> torch.nn.Module:
    """The generator itself without --truncation; a StyleGAN2 generator truncated at psi; else a user error."""
    if psi is None:
        return generator
    check_truncation(psi)
    require_stylegan2(generator, "--truncation")
    return TruncatedGenerator(generator, psi)


@torch.no_grad()
def map_latents(generator: torch.nn.Module, z: torch.Tensor, device: torch.device, psi: float | None = None,
                batch_size: int = 256, label: int | None = None) -> torch.Tensor:
    """A StyleGAN2 generator's styles ws [N, num_ws, w_dim] (float, CPU) for CPU latents [N, z_dim], truncated
    at psi (None: not truncated). A conditional generator maps every latent with class `label`, or without
    one the classes in turn (0, 1, ..., K-1, 0, ...), as it renders without labels."""
    psi = 1.0 if psi is None else float(psi)
    num_classes = getattr(generator, "num_classes", 0)
    if not num_classes:
        labels = [None] * len(z.split(batch_size))
    else:
        labels = torch.arange(len(z)) % num_classes if label is None else torch.full((len(z),), label)
        labels = labels.split(batch_size)
    return torch.cat([generator.mapping(chunk.to(device), psi, labels=None if y is None else y.to(device)).float().cpu()
                      for chunk, y in zip(z.split(batch_size), labels)])


@torch.no_grad()
def synthesize(generator: torch.nn.Module, ws: torch.Tensor, device: torch.device,
               batch_size: int = 256) -> torch.Tensor:
    """Images (float, CPU) of a StyleGAN2 generator from CPU styles: ws [N, num_ws, w_dim], or one w per
    image [N, w_dim] given to every layer (as the mapping network does)."""
    if ws.ndim == 2:
        ws = ws[:, None].expand(-1, generator.num_ws, -1)
    return torch.cat([generator.synthesize(chunk.to(device).float()).float().cpu() for chunk in ws.split(batch_size)])


# ---- generating ----------------------------------------------------------------------------------

def draw_latents(num: int, z_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latents [num, z_dim], drawn on the CPU from seed (device-independent)."""
    return torch.randn(num, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def render(generator: torch.nn.Module, z: torch.Tensor, device: torch.device, labels: torch.Tensor | None = None,
           batch_size: int = 256) -> torch.Tensor:
    """Generator outputs (float, CPU) for CPU latents [N, D] and optional labels (indices [N] or weights [N, K])."""
    if labels is None:
        return torch.cat([generator(chunk.to(device)).float().cpu() for chunk in z.split(batch_size)])
    if len(labels) != len(z):
        raise ValueError(f"{len(labels)} labels for {len(z)} latents")
    return torch.cat([generator(chunk.to(device), chunk_labels.to(device)).float().cpu()
                      for chunk, chunk_labels in zip(z.split(batch_size), labels.split(batch_size))])


def balanced_labels(num: int, num_classes: int) -> torch.Tensor:
    """Classes 0..K-1 in turn over all num samples (not per batch: the same whatever the batch size)."""
    from gankit.models.conditioning import cycling_labels

    return cycling_labels(num, num_classes, "cpu")


def generate(generator: torch.nn.Module, z_dim: int, num: int, seed: int, device: torch.device,
             batch_size: int = 256, labels: torch.Tensor | None = None) -> torch.Tensor:
    """num samples (float, CPU) from latents drawn with `seed`; the same seed gives the same samples
    whatever the batch size or device, since all latents (and labels) are on the CPU first. labels: the
    class of each sample for a conditional generator (None: G's own default, classes in turn per batch)."""
    return render(generator, draw_latents(num, z_dim, seed), device, labels, batch_size)


def file_labels(chosen: list[int], num: int, num_classes: int | None) -> torch.Tensor | None:
    """The classes of samples written to files: num of each chosen class, class after class; without
    --class, classes in turn; None for an unconditional generator."""
    if chosen:
        return torch.tensor(chosen).repeat_interleave(num)
    return balanced_labels(num, num_classes) if num_classes else None


def grid_layout(chosen: list[int], num: int, num_classes: int | None, z_dim: int, seed: int):
    """(latents, labels or None, columns) of a sample grid. Unconditional, or one --class: num latents in a
    near-square grid. Several --class: a row per class, num columns; conditional without --class: a row per
    class, max(1, num // K) columns (gankit.models.conditioning.grid_labels). In rows by class, column j is
    the same latent in every row."""
    from gankit.models.conditioning import grid_labels

    if not num_classes:
        return draw_latents(num, z_dim, seed), None, None
    if len(chosen) == 1:
        return draw_latents(num, z_dim, seed), torch.full((num,), chosen[0]), None
    if chosen:
        labels, columns = torch.tensor(chosen).repeat_interleave(num), num
    else:
        labels, columns = grid_labels(num_classes, num)
    rows = len(labels) // columns
    return draw_latents(columns, z_dim, seed).repeat(rows, 1), labels, columns


def write_labels_csv(path: Path, files: list[str], labels: torch.Tensor, names: list[str]) -> Path:
    """file,class_index,class_name per sample (csv quoting: class names may hold commas)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "class_index", "class_name"])
    for file, label in zip(files, labels.tolist()):
        writer.writerow([file, label, names[label]])
    atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue(), encoding="utf-8"))
    return path


def labels_npy_path(points_path: Path) -> Path:
    """points.npy -> points.labels.npy: the class of each toy point, int64 [N]."""
    return points_path.with_name(points_path.stem + ".labels.npy")


def sample_command(source: str, num: int, seed: int, out: str | None, out_dir: str | None,
                   no_ema: bool, device_name: str, classes: list[str] | None = None,
                   truncation: float | None = None) -> str:
    """`gankit sample`: writes a grid, a folder of images or toy points; returns the path(s) written, one a line.
    truncation: psi for a StyleGAN2 generator (None: none)."""
    check_truncation(truncation)
    if not 1 <= num <= MAX_SAMPLES:
        raise GankitError(f"--num must be between 1 and {MAX_SAMPLES}")
    if out and out_dir:
        raise GankitError("give either --out or --out-dir, not both")
    classes = classes or []
    if num * max(1, len(classes)) > MAX_SAMPLES:
        raise GankitError(f"--num {num} of each of {len(classes)} classes is more than {MAX_SAMPLES} samples")
    device = resolve_device(device_name)
    generator, meta = load_for_sampling(source, no_ema, device)
    names = class_names_of(generator, meta)
    chosen = resolve_classes(classes, names, source)
    generator = with_truncation(generator, truncation)
    num_classes = len(names) if names else None
    z_dim = meta["model"].z_dim

    if meta["data"].is_toy:
        if out_dir:
            raise GankitError("--out-dir is for images; toy runs take --out points.npy or --out plot.png")
        target = Path(out or "samples.png")
        if target.suffix not in (".npy", ".png"):
            raise GankitError(f"--out {target}: toy runs write .npy points or a .png scatter plot")
        labels = file_labels(chosen, num, num_classes)
        points = generate(generator, z_dim, len(labels) if labels is not None else num, seed, device, labels=labels)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".png":
            what = f" of {', '.join(names[c] for c in chosen)}" if chosen else ""
            title = f"{len(points)} samples{what}, seed {seed}"
            return str(save_scatter(points, target, meta["data"].source, title, labels, names))
        np.save(target, points.numpy())
        if labels is None:
            return str(target)
        np.save(labels_npy_path(target), labels.numpy())
        return f"{target}\n{labels_npy_path(target)}"

    if out_dir:
        labels = file_labels(chosen, num, num_classes)
        images = to_uint8(generate(generator, z_dim, len(labels) if labels is not None else num, seed, device,
                                   labels=labels))
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        files = [f"{i:06d}.png" for i in range(len(images))]
        for file, image in zip(files, images):
            grid_image(image[None], nrow=1, padding=0).save(folder / file)
        if labels is not None:
            write_labels_csv(folder / LABELS_FILE, files, labels, names)
        return str(folder)
    target = Path(out or "samples.png")
    if target.suffix.lower() != ".png":
        raise GankitError(f"--out {target}: a grid is written as .png")
    z, labels, columns = grid_layout(chosen, num, num_classes, z_dim, seed)
    return str(save_grid(to_uint8(render(generator, z, device, labels)), target, columns))


def export_command(run: str, out: str | None) -> str:
    """Writes the EMA generator of a run's newest checkpoint as generator.safetensors + .json (the data
    section, class names included, travels in the json)."""
    found = list_checkpoints(Path(run))
    if not found:
        raise GankitError(f"{run} has no checkpoints to export")
    generator, meta = load_checkpoint_generator(found[-1])
    out_dir = Path(out or run)
    export_generator(out_dir, generator, meta["model"].model_dump(mode="json"), meta["data"].model_dump(mode="json"),
                     meta["step"])
    return str(out_dir / "generator.safetensors")
