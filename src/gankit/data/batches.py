"""Resumable batch streams: the position in the data order is part of the training state.

Both streams hand out `next()` (the batch alone) and `next_labeled()` (the batch and its class labels,
int64 [B] on the CPU, or None when the stream has no labels). The two draw the same images with the same
random state, so a labelled stream gives the batches an unlabelled one would, and runs that only call
next() resume exactly as before."""

from __future__ import annotations

import torch

from gankit.data.toy import sample_toy_labeled, toy_class_names
from gankit.errors import GankitError


class ImageBatches:
    """Shuffled, drop-last batches of an in-memory uint8 tensor. The order of epoch e is a
    permutation drawn from (seed, e) alone, so (epoch, position) is enough to resume exactly.
    labels (int64 [N], optional) are gathered with the same order as the images."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int, labels: torch.Tensor | None = None,
                 class_names: list[str] | None = None):
        if len(images) < batch_size:
            raise GankitError(
                f"the dataset has {len(images)} images, fewer than train.batch_size {batch_size}: "
                "lower the batch size or add images"
            )
        if labels is not None and (labels.shape != (len(images),) or labels.dtype != torch.int64):
            raise ValueError(f"labels must be int64 [{len(images)}], got {labels.dtype} {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.class_names = class_names if labels is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=generator)

    def _next_index(self, batch_size: int | None) -> torch.Tensor:
        size = batch_size or self.batch_size
        if self.position + size > len(self.images):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        index = self._order[self.position : self.position + size]
        self.position += size
        return index

    def next(self, batch_size: int | None = None) -> torch.Tensor:
        """The next batch (of batch_size, default the stream's own; Progressive GAN varies it per scale)."""
        return self.images[self._next_index(batch_size)]

    def next_labeled(self, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next batch and its labels (None when the stream has none); the same images as next()."""
        index = self._next_index(batch_size)
        return self.images[index], None if self.labels is None else self.labels[index]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


class ToyBatches:
    """Fresh points from the toy distribution, drawn with a generator whose state is saved. With
    labels (the mixtures only), each point's label is the index of the mode it was drawn from."""

    def __init__(self, source: str, batch_size: int, seed: int, with_labels: bool = True):
        self.source = source
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.class_names = toy_class_names(source) if with_labels else None

    def next(self, batch_size: int | None = None) -> torch.Tensor:
        return self.next_labeled(batch_size)[0]

    def next_labeled(self, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next points and their mode indices (None without labels); the same points as next()."""
        # The mode index is drawn whether or not it is wanted, so both calls consume the generator alike.
        points, modes = sample_toy_labeled(self.source, batch_size or self.batch_size, self.generator)
        return points, modes if self.class_names is not None else None

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
