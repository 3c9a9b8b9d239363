"""Training data: each source hands out uint8 image tensors (or float 2-D points for the toys);
normalization to [-1, 1] happens on the device, in the training loop."""

from __future__ import annotations

import torch

from gankit.config import DataConfig
from gankit.data.batches import ImageBatches, ToyBatches


def load_images(data: DataConfig, split: str = "train") -> torch.Tensor:
    """All images of an image source as one uint8 tensor [N, C, R, R]."""
    if data.source in ("fashion-mnist", "mnist"):
        from gankit.data.idx import load_idx_images
        from gankit.data.transforms import fit_digits

        images, _ = load_idx_images(data.source, data.path, split)
        if data.max_images:
            images = images[: data.max_images]
        return fit_digits(images, data.resolution, data.channels)
    if data.source == "packed":
        from gankit.data.packed import load_packed

        return load_packed(data.path, data.resolution, data.channels, data.max_images)
    if data.source == "lmdb":
        from gankit.data.lmdb_source import load_lmdb

        return load_lmdb(data.path, data.resolution, data.channels, data.max_images)
    from gankit.data import images as image_files

    loader = image_files.load_folder if data.source == "folder" else image_files.load_zip
    return loader(data.path, data.resolution, data.channels, data.max_images)


def build_batches(data: DataConfig, batch_size: int, seed: int):
    """The resumable batch stream of a config's data source."""
    if data.is_toy:
        return ToyBatches(data.source, batch_size, seed)
    return ImageBatches(load_images(data), batch_size, seed)
