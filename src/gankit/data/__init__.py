"""Training data: each source hands out uint8 image tensors (or float 2-D points for the toys), and
class labels where it has them (docs/datasets.md, "Class labels"); normalization to [-1, 1] happens on
the device, in the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gankit.config import UNLABELLED_SOURCES, DataConfig
from gankit.data.batches import ImageBatches, ToyBatches
from gankit.errors import GankitError

IDX_SOURCES = ("fashion-mnist", "mnist")
FIX_LAYOUT = "put each class's images in its own subfolder of data.path (torchvision's ImageFolder layout)"


@dataclass
class LabeledImages:
    """The images of a source and, where it has them, their class labels and the class names."""

    images: torch.Tensor  # uint8 [N, C, R, R]
    labels: torch.Tensor | None  # int64 [N], class indices into class_names; None: no labels
    class_names: list[str] | None  # index order


def resolve_class_names(data: DataConfig, found: list[str]) -> list[str]:
    """The class names a run uses: data.class_names when given (renaming the source's classes, one for
    one), else the names the source holds."""
    if data.class_names is None:
        return list(found)
    if len(data.class_names) != len(found):
        raise GankitError(f"data.class_names gives {len(data.class_names)} name(s) but the data has {len(found)} "
                          f"classes ({', '.join(found)}): give one name per class, in that order, or leave "
                          "data.class_names null to use the source's names")
    return list(data.class_names)


def _no_labels(data: DataConfig, why: str) -> GankitError:
    return GankitError(f"a conditional model needs class labels, and data.source {data.source}"
                       f"{f' at {data.path}' if data.path else ''} has none: {why}")


def _check_labels_possible(data: DataConfig) -> None:
    """What the config alone shows: labels thrown away, or a source that never has any."""
    if data.labels == "none":
        raise GankitError("a conditional model needs class labels, and data.labels is none: set data.labels auto")
    if data.source in UNLABELLED_SOURCES:
        raise _no_labels(data, "use an unconditional model (model.conditioning none)")


def _check_enough_classes(data: DataConfig, names: list[str]) -> None:
    # One class is a valid layout (a folder holding a single subfolder) but a pointless conditional model,
    # and nearly always a data.path one level too high.
    if len(names) < 2:
        hint = (f" (if {names[0]!r} holds the class subfolders, point data.path at it)"
                if data.source in ("folder", "zip") else "")
        raise GankitError(f"data.path {data.path} holds a single class, {names[0]!r}: a conditional model needs at "
                          f"least two; {FIX_LAYOUT}{hint}, or use an unconditional model (model.conditioning none)")


def _load(data: DataConfig, split: str, want_labels: bool, require_labels: bool) -> LabeledImages:
    """Reads a source; labels are read only when wanted and data.labels is auto. When required (for a
    conditional model), a source without labels or with one class is refused before any image is decoded."""
    if data.is_toy:
        raise ValueError(f"{data.source} is drawn, not loaded: use build_batches")
    if require_labels:
        _check_labels_possible(data)
    want_labels = (want_labels or require_labels) and data.labels == "auto"

    def labelled(images: torch.Tensor, labels, names) -> LabeledImages:
        if not want_labels or labels is None:
            return LabeledImages(images, None, None)
        return LabeledImages(images, torch.as_tensor(labels, dtype=torch.int64)[: len(images)],
                             resolve_class_names(data, names))

    if data.source in IDX_SOURCES:
        from gankit.data.idx import CLASS_NAMES, load_idx_images
        from gankit.data.transforms import fit_digits

        images, labels = load_idx_images(data.source, data.path, split, check_labels=want_labels)
        if data.max_images:
            images = images[: data.max_images]
        return labelled(fit_digits(images, data.resolution, data.channels), labels, CLASS_NAMES[data.source])
    if data.source == "packed":
        from gankit.data.packed import load_packed, read_packed_labels

        labels = names = None
        if want_labels:
            labels, names = read_packed_labels(data.path)
            if labels is None and require_labels:
                raise _no_labels(data, "it was prepared from a source without class labels. Re-run `gankit prepare` "
                                       "on a labelled source (`prepare folder` on a folder or zip with one subfolder "
                                       "per class, `prepare idx` with the labels file beside the images file)")
            if names is not None:
                if require_labels:
                    _check_enough_classes(data, names)
                resolve_class_names(data, names)  # a count mismatch is refused before the images are read
        images = load_packed(data.path, data.resolution, data.channels, data.max_images)
        return labelled(images, labels, names)
    if data.source == "lmdb":
        from gankit.data.lmdb_source import load_lmdb

        return LabeledImages(load_lmdb(data.path, data.resolution, data.channels, data.max_images), None, None)
    from gankit.data import images as image_files

    if data.source == "folder":
        files, classes = image_files.list_folder(data.path)
    else:
        files, classes = image_files.list_zip(data.path)
    if require_labels and not classes.labelled:
        raise _no_labels(data, f"{classes.why_unlabelled}. {FIX_LAYOUT[0].upper()}{FIX_LAYOUT[1:]}, or use an "
                               "unconditional model (model.conditioning none)")
    if require_labels:
        _check_enough_classes(data, classes.names)
    if want_labels and classes.labelled:
        resolve_class_names(data, classes.names)  # a count mismatch is refused before decoding
    files = files[: data.max_images]
    if data.source == "folder":
        images = image_files.decode_folder_files(files, data.resolution, data.channels, data.path)
    else:
        images = image_files.decode_zip_entries(data.path, files, data.resolution, data.channels)
    return labelled(images, classes.labels, classes.names)


def load_images(data: DataConfig, split: str = "train") -> torch.Tensor:
    """All images of an image source as one uint8 tensor [N, C, R, R] (labels are not read)."""
    return _load(data, split, want_labels=False, require_labels=False).images


def load_dataset(data: DataConfig, split: str = "train", *, require_labels: bool = False) -> LabeledImages:
    """The images of an image source with their labels and class names (both None when the source has
    none or data.labels is none), cut to data.max_images; class names as resolve_class_names gives them.
    require_labels (a conditional model) refuses, before any image is decoded, a source without labels
    or with a single class."""
    return _load(data, split, want_labels=True, require_labels=require_labels)


def build_batches(data: DataConfig, batch_size: int, seed: int, with_labels: bool = False):
    """The resumable batch stream of a config's data source; with_labels, one carrying class labels
    (next_labeled), refused when the source has none or fewer than two classes."""
    if data.is_toy:
        if with_labels:
            _check_labels_possible(data)
        stream = ToyBatches(data.source, batch_size, seed, with_labels=with_labels)
        if with_labels:
            stream.class_names = resolve_class_names(data, stream.class_names)
        return stream
    if not with_labels:
        return ImageBatches(load_images(data), batch_size, seed)
    dataset = load_dataset(data, require_labels=True)
    return ImageBatches(dataset.images, batch_size, seed, dataset.labels, dataset.class_names)
