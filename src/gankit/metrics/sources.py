"""Where evaluated samples come from: a run's generator, files of images or points, or a toy mixture.

Images reach the metrics as uint8 [N, C, H, W]: generated images are quantized with to_uint8,
exactly as `gankit sample` saves them, so evaluating a folder written by `gankit sample --out-dir`
and evaluating the generator itself give the same inputs. Toy samples are float points [N, 2].

Fake sources: a run folder or an exported generator (its EMA weights), a folder or zip of images,
a .npy file of points, or the name of a toy source. Real sources: the same files, a toy source, a
dataset by name (`fashion-mnist`, `mnist`, optionally `:train` or `:test`: its images fitted to the
generated ones' size and channels), or by default the run's training data (its config.yaml, read with
gankit.data.load_images).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gankit.config import TOY_SOURCES, DataConfig
from gankit.errors import GankitError
from gankit.metrics.progress import progress_bar

# The batch size of gankit.sampling.generate: the same batches give bit-identical images.
GENERATE_BATCH = 256
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
IDX_SOURCES = ("fashion-mnist", "mnist")  # sources that have a test split
SPLITS = ("train", "test")
NAMED_SOURCES_TEXT = "a dataset name (fashion-mnist, mnist, optionally :train or :test)"


@dataclass
class Samples:
    data: torch.Tensor  # uint8 [N, C, H, W] images or float32 [N, 2] points
    origin: str  # where they come from, for messages
    toy_source: str | None = None  # points: the mixture they come from (or imitate)
    key: str | None = None  # fixed real sets: an identity for per-process caches; None when generated
    # int64 [N], indices into class_names: the class each sample was asked for (a conditional generator's
    # samples) or is of (a labelled real set); None: no labels (files, unconditional generators)
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None

    @property
    def kind(self) -> str:
        return "points" if self.data.ndim == 2 else "images"

    def shape_text(self) -> str:
        if self.kind == "points":
            return f"{self.data.shape[1]}-D points"
        c, h, w = self.data.shape[1:]
        return f"{c}-channel {h}x{w} images"

    def first(self, n: int) -> "Samples":
        return replace(self, data=self.data[:n], labels=None if self.labels is None else self.labels[:n])


def content_digest(data: torch.Tensor) -> str:
    """A short hex digest of a tensor's shape and bytes: cache files are named by what they hold."""
    import hashlib

    digest = hashlib.sha1(f"{tuple(data.shape)}:{data.dtype}".encode())
    digest.update(data.contiguous().numpy().data)
    return digest.hexdigest()[:20]


def kind_of_file_source(spec: str) -> str:
    return "points" if spec in TOY_SOURCES or spec.endswith(".npy") else "images"


class GeneratorSource:
    """Samples of the generator of a run, a checkpoint file, an export or a zoo entry (the EMA weights, as
    `gankit sample`)."""

    def __init__(self, path: str, device: torch.device, no_ema: bool = False):
        from gankit.checkpoint import run_folder_of
        from gankit.sampling import class_names_of, load_for_sampling

        self.path = Path(path)
        self.generator, meta = load_for_sampling(path, no_ema, device)
        self.no_ema = no_ema
        self.device = device
        self.data_config: DataConfig = meta["data"]
        self.z_dim = meta["model"].z_dim
        self.step = meta["step"]
        # A checkpoint's run gets the metrics line too; an export or a zoo entry has no run.
        self.run_dir: Path | None = run_folder_of(path)
        self.kind = "points" if self.data_config.is_toy else "images"
        self.toy_source = self.data_config.source if self.data_config.is_toy else None
        # A conditional generator's classes (None: unconditional, pgan included).
        self.class_names = class_names_of(self.generator, {"data": self.data_config})
        self.num_classes = len(self.class_names or [])

    def describe(self) -> str:
        which = "raw (non-EMA) generator" if self.no_ema else "generator"
        return f"the {which} of {self.path} (step {self.step})"

    def draw(self, num: int, seed: int) -> Samples:
        """num samples from the latents of seed; a conditional generator's are class-balanced (balanced_labels)."""
        labels = balanced_labels(num, self.num_classes)
        # A bar when stderr is a terminal: `gankit eval` draws up to 50,000 samples here.
        data = draw_from_generator(self.generator, self.z_dim, num, seed, self.device, self.kind, progress=None,
                                   labels=labels)
        return Samples(data, self.describe(), self.toy_source, labels=labels, class_names=self.class_names)

    def training_data(self) -> DataConfig:
        """The run's data section: its config.yaml when it is a run folder, else the export's copy (a zoo
        entry's included)."""
        if self.run_dir is not None:
            import yaml

            from gankit.config import validate

            config_file = self.run_dir / "config.yaml"
            try:
                raw = yaml.safe_load(config_file.read_text())
            except (OSError, yaml.YAMLError) as err:
                raise GankitError(f"cannot read {config_file}: {err}") from None
            return validate(raw, str(config_file)).data
        return self.data_config


def balanced_labels(num: int, num_classes: int) -> torch.Tensor | None:
    """The classes asked of a conditional generator for num samples: 0, 1, ..., K-1, 0, 1, ... over the
    whole draw (int64 [num], CPU), so every class gets num // K or one more, and so does every prefix
    (Samples.first); None for an unconditional generator (num_classes 0). They depend on nothing but
    num: the latents, drawn from the seed, are independent of them, and stay the unconditional draw's."""
    if not num_classes:
        return None
    from gankit.models.conditioning import cycling_labels

    return cycling_labels(num, num_classes, "cpu")


@torch.no_grad()
def draw_from_generator(generator, z_dim: int, num: int, seed: int, device, kind: str,
                        progress: bool | None = False, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Like gankit.sampling.generate (same latents, same batches), but images are quantized batch by
    batch so that 50,000 images never exist as floats at once. progress: see progress_bar's enabled.
    labels: the class of each sample (int64 [num]) for a conditional generator; None calls G(z) alone."""
    from gankit.viz.grid import to_uint8

    z = torch.randn(num, z_dim, generator=torch.Generator().manual_seed(seed))
    if labels is not None and len(labels) != num:
        raise ValueError(f"{len(labels)} labels for {num} samples")
    label_chunks = labels.split(GENERATE_BATCH) if labels is not None else None
    chunks = []
    with progress_bar(num, "generating", "pt" if kind == "points" else "img", progress) as bar:
        for i, chunk in enumerate(z.split(GENERATE_BATCH)):
            if label_chunks is None:
                out = generator(chunk.to(device))
            else:
                out = generator(chunk.to(device), label_chunks[i].to(device))
            out = out.float().cpu()
            chunks.append(out if kind == "points" else to_uint8(out))
            bar.update(len(chunk))
    return torch.cat(chunks)


class FileSource:
    """Fixed samples: a folder or zip of images, a .npy file of points, or a toy source's name."""

    def __init__(self, spec: str):
        self.spec = spec
        self.kind = kind_of_file_source(spec)
        self.toy_source = spec if spec in TOY_SOURCES else None
        self.run_dir = None
        self.step = None
        if spec not in TOY_SOURCES and not Path(spec).exists():
            raise GankitError(f"{spec}: no such file or folder (expected a folder or .zip of images, a .npy "
                              f"file of points, or one of {', '.join(TOY_SOURCES)})")

    def describe(self) -> str:
        return self.spec

    def training_data(self) -> None:
        return None

    def draw(self, num: int, seed: int) -> Samples:
        """The first num samples in file order (a toy source: num fresh points drawn with seed)."""
        return load_samples(self.spec, num, seed, shuffle=False)


def open_fake(source: str | None, fake: str | None, device: torch.device, no_ema: bool = False):
    if source and fake:
        raise GankitError("give either RUN|FILE or --fake SOURCE, not both")
    if not source and not fake:
        raise GankitError("nothing to evaluate: give a run folder or an exported generator, or --fake with a "
                          "folder or zip of generated images")
    if no_ema and not source:
        raise GankitError("--no-ema applies to a run folder or a checkpoint file, not to --fake files")
    return GeneratorSource(source, device, no_ema) if source else FileSource(fake)


def load_samples(spec: str, num: int, seed: int, shuffle: bool) -> Samples:
    """Up to num samples of a file source or a toy source.

    shuffle=True takes a random subset (seeded): real sets are often stored class by class, and the
    first N of such a folder would miss classes. shuffle=False keeps file order (generated sets)."""
    if spec in TOY_SOURCES:
        from gankit.data.toy import sample_toy

        points = sample_toy(spec, num, torch.Generator().manual_seed(seed))
        return Samples(points, f"{num} points of {spec}", spec, key=f"{spec}:{num}:{seed}")
    path = Path(spec)
    if spec.endswith(".npy"):
        try:
            points = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise GankitError(f"cannot read points from {spec}: {err}") from None
        if points.ndim != 2 or points.shape[1] != 2:
            raise GankitError(f"{spec} holds an array of shape {points.shape}; points are [N, 2]")
        points = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        if shuffle:
            points = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))]
        return Samples(points[:num], spec, key=f"{path.resolve()}:{num}:{seed}:{shuffle}")
    images = load_image_set(spec, num, seed if shuffle else None)
    return Samples(images, spec, key=f"{path.resolve()}:{num}:{seed}:{shuffle}")


def load_real(spec: str | None, training_data: DataConfig | None, num: int, split: str, seed: int) -> Samples:
    """Up to num real samples: from spec, or by default from the training data of the run evaluated
    (a random subset, seeded; `split` test where the source has one, for metrics that ask for it)."""
    if spec is not None:
        if spec not in TOY_SOURCES and not Path(spec).exists():
            raise GankitError(unknown_real_message(spec))
        return load_samples(spec, num, seed, shuffle=True)
    if training_data is None:
        raise GankitError("the generated samples come from files, with no training data to compare with: pass "
                          f"--real with the real images (a folder or .zip, or {NAMED_SOURCES_TEXT})")
    if training_data.is_toy:
        return load_samples(training_data.source, num, seed, shuffle=True)
    from gankit.data import load_images

    used_split = split if training_data.source in IDX_SOURCES else "train"
    if used_split == "test":
        # data.max_images limits what training saw; the held-out reference stays the whole test set.
        training_data = training_data.model_copy(update={"max_images": None})
    images = load_images(training_data, used_split)
    if len(images) > num:
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num]]
    origin = f"the {used_split} images of {training_data.source}" + (
        f" ({training_data.path})" if training_data.path else "")
    key = f"{training_data.model_dump_json()}:{used_split}:{num}:{seed}"
    return Samples(images, origin, key=key)


def unknown_real_message(spec: str) -> str:
    """The message for a --real that is neither a file nor a name, with the closest name if any."""
    import difflib

    names = [*IDX_SOURCES, *TOY_SOURCES]
    close = difflib.get_close_matches(spec.partition(":")[0], names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"--real {spec}: no such file or folder{hint}; expected a folder or .zip of images, a .npy file of "
            f"points, one of {', '.join(TOY_SOURCES)}, or {NAMED_SOURCES_TEXT}")


def parse_dataset_name(spec: str) -> tuple[str, str | None] | None:
    """(dataset, split or None) when spec names a dataset ('fashion-mnist', 'mnist:test'), else None.

    A name wins over a file of the same name, as toy names do (write ./mnist for such a folder)."""
    name, colon, split = spec.partition(":")
    if name not in IDX_SOURCES:
        return None
    if colon and split not in SPLITS:
        raise GankitError(f"--real {spec}: {name} has no split {split!r}; use {name}:train or {name}:test "
                          f"(or {name} alone: each metric's usual split)")
    return name, split or None


def load_dataset(name: str, split: str, like: Samples, num: int, seed: int) -> Samples:
    """Up to num images of a split of a named dataset (a random subset, seeded), fitted like training
    data to the size and channels of the generated samples `like`: the same images a run trained on
    that dataset at that size compares with."""
    from gankit.data.idx import load_idx_images
    from gankit.data.transforms import fit_digits

    if like.kind != "images":
        raise GankitError(f"--real {name} holds images, but {like.origin} gives {like.shape_text()}")
    channels, height, width = like.data.shape[1:]
    if height != width or channels not in (1, 3):
        raise GankitError(f"{name}'s 28x28 images can be fitted to square 1- or 3-channel images, but "
                          f"{like.origin} gives {like.shape_text()}: pass --real with images of that shape")
    from gankit.data.idx import CLASS_NAMES

    images, labels = load_idx_images(name, None, split)
    if len(images) > num:
        # The subset load_real takes from a run's training data, so both give the same real set.
        picked = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num]
        images, labels = images[picked], labels[picked]
    return Samples(fit_digits(images, height, channels), f"the {split} images of {name}",
                   key=f"{name}:{split}:{channels}x{height}:{num}:{seed}", labels=labels,
                   class_names=list(CLASS_NAMES[name]))


def load_labelled_reference(spec: str, like: Samples) -> Samples:
    """The whole split `spec` names ('fashion-mnist:test') with its labels, in file order, fitted to the
    size and channels of the generated samples `like`: the fixed reference of the class-conditional metrics."""
    name, split = parse_dataset_name(spec)
    return load_dataset(name, split, like, num=1 << 62, seed=0)  # more than any split: all of it, unshuffled


# ---- image files at their stored size ----------------------------------------------------------

def load_image_set(spec: str, num: int, seed: int | None) -> torch.Tensor:
    """Up to num images of a folder or zip as uint8 [N, C, H, W], at their stored size (no resizing:
    a size that differs from the other side's is an error, not something to hide). The first image
    sets the size and the channel count (grayscale modes: 1, else 3); seed None keeps file order,
    else a random subset is taken."""
    path = Path(spec)
    if path.is_dir():
        from gankit.data.images import list_folder_images

        names = [str(p) for p in list_folder_images(path)]
        return _decode_set(names, lambda name: name, spec, num, seed)
    if path.suffix.lower() == ".zip":
        from gankit.data.images import is_image_name

        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as err:
            raise GankitError(f"cannot open zip {spec}: {err}") from None
        with archive:
            names = sorted(n for n in archive.namelist() if is_image_name(n) and not n.endswith("/"))

            def read(name: str):
                try:
                    return io.BytesIO(archive.read(name))
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise GankitError(f"cannot read image {spec}:{name}: {err}") from None

            return _decode_set(names, read, spec, num, seed)
    raise GankitError(f"{spec} is neither a folder nor a .zip of images")


def _decode_set(names: list[str], opener, spec: str, num: int, seed: int | None) -> torch.Tensor:
    if not names:
        raise GankitError(f"no images found in {spec}")
    if seed is not None and len(names) > num:
        picked = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))[:num]
        names = [names[i] for i in picked.tolist()]
    names = names[:num]
    with progress_bar(len(names), f"reading {Path(spec).name}", "img") as bar:  # shown when stderr is a terminal
        first = _decode_one(opener(names[0]), names[0], None)
        out = np.empty((len(names), *first.shape), dtype=np.uint8)
        out[0] = first
        bar.update(1)
        for i, name in enumerate(names[1:], start=1):
            out[i] = _decode_one(opener(name), name, (first.shape, names[0]))
            bar.update(1)
    return torch.from_numpy(out)


def _decode_one(source, name: str, expected) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from gankit.data.images import to_mode

    try:
        with Image.open(source) as image:
            image.load()
            if expected is None:
                channels = 1 if image.mode in GRAY_MODES else 3
            else:
                (channels, height, width), first_name = expected
                if image.size != (width, height):
                    raise GankitError(
                        f"{name} is {image.size[0]}x{image.size[1]} but {first_name} is {width}x{height}: the "
                        "images of one set must share a size (resize them with `gankit prepare folder`)"
                    )
            array = np.asarray(to_mode(image, channels), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise GankitError(f"cannot read image {name}: {err}") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
